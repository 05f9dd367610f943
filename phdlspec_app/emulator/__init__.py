"""The transformer emulator with differential spectra embedded as physical priors.

May import ``physics``, ``io``, ``labels`` and ``paths``; never ``fitting``,
``calibration`` or ``app``.
"""
