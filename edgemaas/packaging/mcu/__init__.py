"""edgemaas.packaging.mcu"""
