"""edgemaas.packaging.edge"""
