"""edgemaas.compress"""
