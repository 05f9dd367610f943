"""Preprocessing: an observed spectrum onto the emulator's grid, the same way for fitting
and for data-driven training.

May import ``physics``, ``io``, ``labels`` and ``paths``; never ``emulator`` or above.

Modules, one step each: ``resample`` (flux-conserving rebinning), ``resolution`` (LSF
matching, wavelength-dependent), ``masks`` (default telluric/ISM/DIB masks),
``continuum`` (the pseudo-continuum operator applied identically to data and model),
``prepare`` (the steps in order → :class:`Prepared`).
"""
from .prepare import NOT_A_STAR, FitInputError, Prepared, prepare

__all__ = ["prepare", "Prepared", "FitInputError", "NOT_A_STAR"]
