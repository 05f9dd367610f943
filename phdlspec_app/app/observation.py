"""The observation as the live model sees it: continuum-normalized, on its own pixels.

No Panel import here. The model is a normalized flux; LAMOST files hold counts. The fitting
layer owns the real normalization (it must be the same one the fit uses): when it offers
``phdlspec_app.fitting.normalize_spectrum(spectrum) -> Spectrum`` the app uses it. Until then
files that are already normalized (the demo stars, model files) are shown as they are, and
other files get a *display-only* continuum (a running upper percentile of the good pixels),
which the app labels as such.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Observation", "prepare_observation", "interp_to"]


@dataclass
class Observation:
    """Normalized flux and 1-sigma errors (NaN where masked) of the spectrum shown."""

    wavelength: np.ndarray
    flux: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray
    normalization: str  # "file" (already normalized), "fitting", or "display"
    spectrum: object = None  # the normalized Spectrum (masked pixels scaled too), for plotting

    @property
    def note(self) -> str:
        if self.normalization == "display":
            return ("Flux divided by a display-only continuum (running 90th percentile); the fit's "
                    "own normalization may differ.")
        return ""


def _looks_normalized(spec) -> bool:
    good = spec.good & np.isfinite(spec.flux)
    if spec.meta.get("simulated") or spec.meta.get("normalized"):
        return True
    if not good.any():
        return True
    med = float(np.median(spec.flux[good]))
    hi = float(np.percentile(spec.flux[good], 95))
    return 0.6 < med < 1.2 and 0.8 < hi < 1.3


def _display_continuum(wl: np.ndarray, flux: np.ndarray, good: np.ndarray, window: int = 151) -> np.ndarray:
    """Running 90th percentile of the good pixels (windows of ``window`` pixels), interpolated."""
    idx = np.flatnonzero(good & np.isfinite(flux))
    if idx.size < 10:
        return np.ones_like(flux)
    f = flux[idx]
    half = window // 2
    step = max(1, half // 3)
    centers = np.arange(0, idx.size, step)
    cont = np.array([np.percentile(f[max(0, c - half):c + half + 1], 90) for c in centers])
    cont = np.interp(wl, wl[idx[centers]], cont)
    floor = 1e-3 * np.nanmax(np.abs(cont)) if np.isfinite(cont).any() else 1.0
    return np.where(np.abs(cont) > floor, cont, floor)


def prepare_observation(spec) -> Observation:
    """:class:`Observation` of ``spec`` (a :class:`phdlspec_app.io.Spectrum`)."""
    try:  # the fitting layer's normalization, when it exists
        from phdlspec_app.fitting import normalize_spectrum  # type: ignore[attr-defined]
    except ImportError:
        normalize_spectrum = None
    how = "file"
    if normalize_spectrum is not None and not spec.meta.get("simulated"):
        spec = normalize_spectrum(spec)
        how = "fitting"
    elif _looks_normalized(spec):
        pass
    else:
        cont = _display_continuum(spec.wavelength, spec.flux, spec.good)
        how = "display"
    if how == "display":
        from phdlspec_app.io import Spectrum

        meta = dict(spec.meta, normalization="display continuum (app)")
        spec = Spectrum(spec.wavelength, spec.flux / cont, spec.ivar * cont**2, spec.mask, meta, dict(spec.extra))
    flux = np.where(spec.good, spec.flux, np.nan)
    sigma = np.where(spec.good & np.isfinite(spec.sigma), spec.sigma, np.nan)
    return Observation(spec.wavelength, flux, sigma, spec.mask.copy(), how, spec)


def interp_to(wavelength: np.ndarray, model_wavelength: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """Model flux (..., W) on ``model_wavelength`` resampled to ``wavelength`` (NaN outside)."""
    if wavelength.shape == model_wavelength.shape and np.allclose(wavelength, model_wavelength, rtol=0, atol=1e-6):
        return flux
    one = np.ndim(flux) == 1
    out = np.stack([np.interp(wavelength, model_wavelength, row, left=np.nan, right=np.nan)
                    for row in np.atleast_2d(flux)])
    return out[0] if one else out
