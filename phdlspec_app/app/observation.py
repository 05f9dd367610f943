"""The observation as the live model sees it.

No Panel import here. With an emulator, the observation goes through the fitting layer's own
preprocessing (``phdlspec_app.preprocess.prepare``, formerly ``fitting.prepare``: rebinned onto the model grid, LSF matched,
masks, divided by its pseudo-continuum), and the model shown is ``Prepared.model_observable``
of the emulator's flux: the residual on screen is exactly the one the fit minimizes.

Without an emulator, or for spectra the fitter refuses (a QSO, too few pixels), the spectrum
is shown on its own pixels: as it is when it is already normalized (the demo stars), else
divided by a *display-only* continuum (a running upper percentile), which the app says.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Observation", "fit_preprocessing", "interp_to", "prepare_observation"]


@dataclass
class Observation:
    """Normalized flux and 1-sigma errors (NaN where masked) of the spectrum shown."""

    wavelength: np.ndarray
    flux: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray
    normalization: str  # "file" (already normalized), "fitting", or "display"
    spectrum: object = None  # the normalized Spectrum (masked pixels scaled too), for plotting
    #: model flux (..., W) on the same pixels -> what is compared with ``flux`` (fitting's
    #: LSF matching and pseudo-continuum); None: compare the model as it is
    model_transform: object = None
    fit_refusal: str = ""  # why the fitting layer refused the spectrum ('' when it did not)
    #: the fitting layer's Prepared spectrum, the emulator's error included when it was given
    #: (None off the model grid)
    prepared: object = None
    #: a fitting Likelihood on ``prepared`` (set by the live model), for :meth:`chi2`
    likelihood: object = None

    def chi2(self, model) -> tuple[float, int]:
        """(chi^2, number of pixels) of the model observable ``model`` (W,): the fit's own
        (``Likelihood.data_chi2``, the model error included); (nan, 0) without a likelihood."""
        if self.likelihood is None:
            return float("nan"), 0
        return float(self.likelihood.data_chi2(np.asarray(model, float))), int(self.likelihood.good.sum())

    @property
    def note(self) -> str:
        if self.normalization == "fitting":
            return ("Observation and model as the fit compares them: on the model grid, each divided "
                    "by its pseudo-continuum.")
        refused = f" The fitter refuses this spectrum: {self.fit_refusal}." if self.fit_refusal else ""
        if self.normalization == "display":
            return ("Flux divided by a display-only continuum (running 90th percentile); the fit's "
                    "own normalization may differ." + refused)
        return refused.strip()


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


def fit_preprocessing():
    """The fitting's ``prepare(spectrum, model_wavelength, model_resolution)``, or None."""
    try:
        from phdlspec_app.preprocess import prepare
    except ImportError:
        try:
            from phdlspec_app.fitting import prepare
        except ImportError:
            return None
    return prepare


def prepare_observation(spec, model_wavelength=None, model_resolution: float = 1800.0,
                        model_error=None) -> Observation:
    """:class:`Observation` of ``spec`` (a :class:`phdlspec_app.io.Spectrum`); with
    ``model_wavelength`` (an emulator's grid) through the fitting layer's preprocessing.

    ``model_error``: the emulator's error spectrum ((P,) on ``model_wavelength``, normalized
    flux), or (sigma, basis[, local]) with its correlated part and its form at a star
    (``fitting.fit.model_error_terms``),
    kept in ``Observation.prepared`` so that the live chi^2 is the fit's.
    The error bars shown stay the data's own."""
    refusal = ""
    if model_wavelength is not None:
        prepare = fit_preprocessing()
        if prepare is not None:
            try:
                prep = prepare(spec, np.asarray(model_wavelength, float), model_resolution)
            except ValueError as exc:  # FitInputError (a QSO, too few pixels...) is a ValueError
                refusal = str(exc)
            else:
                from phdlspec_app.io import Spectrum

                good = np.asarray(prep.good, bool)
                y = np.asarray(prep.y, float)
                ivar = np.where(good, np.asarray(prep.ivar_y, float), 0.0)
                shown = Spectrum(prep.wavelength, y, ivar, ~good, dict(spec.meta))
                sigma, basis, local = (*model_error, None)[:3] if isinstance(model_error, tuple) \
                    else (model_error, None, None)
                if sigma is not None:
                    prep = prep.with_model_error(sigma, basis, local)
                return Observation(shown.wavelength, np.where(good, y, np.nan),
                                   np.where(good & (ivar > 0), 1 / np.sqrt(np.where(ivar > 0, ivar, 1)), np.nan),
                                   ~good, "fitting", shown, prep.model_observable, prepared=prep)
    if _looks_normalized(spec):
        how = "file"
    else:
        cont = _display_continuum(spec.wavelength, spec.flux, spec.good)
        how = "display"
        from phdlspec_app.io import Spectrum

        meta = dict(spec.meta, normalization="display continuum (app)")
        spec = Spectrum(spec.wavelength, spec.flux / cont, spec.ivar * cont**2, spec.mask, meta, dict(spec.extra))
    flux = np.where(spec.good, spec.flux, np.nan)
    sigma = np.where(spec.good & np.isfinite(spec.sigma), spec.sigma, np.nan)
    return Observation(spec.wavelength, flux, sigma, spec.mask.copy(), how, spec, fit_refusal=refusal)


def interp_to(wavelength: np.ndarray, model_wavelength: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """Model flux (..., W) on ``model_wavelength`` resampled to ``wavelength`` (NaN outside)."""
    if wavelength.shape == model_wavelength.shape and np.allclose(wavelength, model_wavelength, rtol=0, atol=1e-6):
        return flux
    one = np.ndim(flux) == 1
    out = np.stack([np.interp(wavelength, model_wavelength, row, left=np.nan, right=np.nan)
                    for row in np.atleast_2d(flux)])
    return out[0] if one else out
