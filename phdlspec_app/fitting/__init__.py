"""Label inference: preprocessing, CMA-ES, MCMC, per-element diagnostics, batches.

May import ``emulator``, ``physics``, ``io``, ``labels`` and ``paths``.

``fit_spectrum(spectrum, emulator, ...) -> FitResult`` (``fitting.fit``) is the API used by
the CLI (``phdlspec fit``, ``phdlspec fit-batch``) and the app; it accepts any object with the
emulator API. Names are imported lazily so that ``phdlspec --help`` stays fast.
"""
from __future__ import annotations

__all__ = ["fit_spectrum", "FitResult", "FitCancelled", "FitInputError", "prepare"]


def __getattr__(name):
    if name in ("fit_spectrum", "FitCancelled", "FitInputError"):
        from . import fit

        return getattr(fit, name)
    if name == "FitResult":
        from .result import FitResult

        return FitResult
    if name == "prepare":
        from ..preprocess import prepare

        return prepare
    raise AttributeError(name)
