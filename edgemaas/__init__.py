"""edgemaas: from a trained model to cheap inference on Lambda, edge devices, phones and microcontrollers.

This package stays import-light: TensorFlow and the other heavy libraries are imported inside the functions that
need them, so `edgemaas --help` and the shipped runtime start fast.
"""

__version__ = "0.1.0"
