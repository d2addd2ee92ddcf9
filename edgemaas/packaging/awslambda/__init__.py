"""edgemaas.packaging.awslambda"""
