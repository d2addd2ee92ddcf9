"""edgemaas.packaging.mobile"""
