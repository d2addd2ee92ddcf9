"""edgemaas.packaging.common"""
