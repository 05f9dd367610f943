"""PhDLspec: physical-prior embedded deep learning for stellar labels from low-resolution spectra.

Pipeline, one direction only::

    io -> physics -> emulator -> fitting -> calibration -> app

``labels`` (the one label schema) and ``paths`` (where the data live) are shared
by every layer.
"""
__version__ = "0.1.0"
