"""edgemaas.train"""
