"""Resolution matching between an observation and the model (a wavelength-dependent LSF).

The model has a Gaussian LSF of constant resolving power R_model (FWHM c/R_model in
velocity). The observation's LSF comes from its header (``meta['fwhm']`` in Å, or
``meta['resolution']``) or from the caller, and may vary with wavelength: a constant
FWHM of 2.5 Å is R ≈ 1500 at 3800 Å and R ≈ 2800 at 7000 Å. Gaussians add in quadrature,
so at each pixel the extra kernel has σ² = |σ_obs² − σ_model²| (velocity):

- where the observation is sharper (σ_obs < σ_model) the *observation* is degraded once,
  in preprocessing;
- where it is coarser the *model* is broadened in every likelihood evaluation.

Both are the same banded operator: a per-pixel Gaussian in pixels of the model grid
(uniform in ln λ), renormalised at the edges. Differences below 5 % of σ_model are
ignored (well inside the uncertainty of any quoted resolution). Observations coarser than
R = 1000 somewhere in their good range are refused: the model has lost the information
the emulator was trained to express.
"""
from __future__ import annotations

import numpy as np
import torch

from ..physics.constants import c_kms

__all__ = ["MIN_RESOLUTION", "ResolutionError", "observed_fwhm_kms", "BandedGaussian", "match_kernels"]

MIN_RESOLUTION = 1000.0
_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


class ResolutionError(ValueError):
    """The observation's resolution cannot be matched to the model's."""


def observed_fwhm_kms(wavelength: np.ndarray, meta: dict, resolution: float | None = None,
                      fwhm: float | None = None, default_resolution: float | None = None
                      ) -> tuple[np.ndarray, str]:
    """The observation's LSF FWHM (km/s) at each ``wavelength`` (Å) and where it came from.

    Precedence: the ``fwhm`` option (Å), the ``resolution`` option, the header's
    ``meta['fwhm']`` (Å), the header's ``meta['resolution']``, else ``default_resolution``
    (source ``"assumed"``). Raises :class:`ResolutionError` for non-positive values.
    """
    wl = np.asarray(wavelength, float)
    for value, kind, source in ((fwhm, "fwhm", "option"), (resolution, "R", "option"),
                                (meta.get("fwhm"), "fwhm", "header"), (meta.get("resolution"), "R", "header"),
                                (default_resolution, "R", "assumed")):
        if value is None:
            continue
        value = float(value)
        if not np.isfinite(value) or value <= 0:
            raise ResolutionError(f"{'FWHM' if kind == 'fwhm' else 'resolving power'} must be positive, got {value}")
        if kind == "fwhm":
            return c_kms * value / wl, f"{source}: FWHM {value:g} A"
        return np.full(wl.shape, c_kms / value), f"{source}: R {value:g}"
    raise ResolutionError("the spectrum's resolution is unknown: give resolution= or fwhm=")


class BandedGaussian:
    """A per-pixel Gaussian convolution on a grid uniform in ln λ: out_i = Σ_k w_ik f_{i+k}.

    ``sigma_pix`` (P,) is the kernel's σ in pixels at each output pixel (0 = identity).
    Weights are renormalised where the kernel runs off the grid. ``apply`` works on
    (..., P) numpy arrays or torch tensors (differentiable); ``apply_var`` propagates
    independent variances (Σ w² σ²).
    """

    def __init__(self, sigma_pix: np.ndarray):
        s = np.asarray(sigma_pix, float)
        self.P = s.size
        self.identity = bool(np.all(s <= 0))
        half = max(1, int(np.ceil(4.0 * s.max()))) if not self.identity else 0
        off = np.arange(-half, half + 1)
        idx = np.arange(self.P)[:, None] + off[None, :]
        inside = (idx >= 0) & (idx < self.P)
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(s[:, None] > 0, np.exp(-0.5 * (off[None, :] / np.maximum(s[:, None], 1e-12)) ** 2),
                         (off[None, :] == 0).astype(float))
        w = np.where(inside, w, 0.0)
        self.weights = w / w.sum(axis=1, keepdims=True)
        self.index = np.clip(idx, 0, self.P - 1)
        self._t: dict = {}

    def apply(self, f):
        if self.identity:
            return f
        if isinstance(f, torch.Tensor):
            key = (f.device, f.dtype)
            if key not in self._t:
                self._t[key] = (torch.as_tensor(self.index, device=f.device),
                                torch.as_tensor(self.weights, device=f.device, dtype=f.dtype))
            idx, w = self._t[key]
            return (f[..., idx] * w).sum(-1)
        return (np.asarray(f)[..., self.index] * self.weights).sum(-1)

    def apply_var(self, var: np.ndarray) -> np.ndarray:
        if self.identity:
            return var
        return (np.asarray(var)[..., self.index] * self.weights**2).sum(-1)

    def coverage(self, good: np.ndarray) -> np.ndarray:
        """Fraction of each output pixel's kernel weight that falls on good input pixels."""
        if self.identity:
            return good.astype(float)
        return (good[self.index] * self.weights).sum(-1)


def match_kernels(wavelength: np.ndarray, fwhm_obs_kms: np.ndarray, model_resolution: float,
                  good: np.ndarray | None = None, tolerance: float = 0.05
                  ) -> tuple[BandedGaussian, BandedGaussian, dict]:
    """Kernels that bring observation and model to a common LSF on the model grid.

    Returns (degrade_observation, broaden_model, info); ``info`` has the observed R range
    over the good pixels and the fractions of pixels where each side was changed.
    Raises :class:`ResolutionError` when R_obs < :data:`MIN_RESOLUTION` over good pixels.
    """
    wl = np.asarray(wavelength, float)
    good = np.ones(wl.shape, bool) if good is None else np.asarray(good, bool)
    r_obs = c_kms / np.asarray(fwhm_obs_kms, float)
    sel = good if good.any() else np.ones_like(good)
    r_min, r_max = float(r_obs[sel].min()), float(r_obs[sel].max())
    if r_min < MIN_RESOLUTION:
        at = float(wl[sel][np.argmin(r_obs[sel])])
        raise ResolutionError(f"resolving power R = {r_min:.0f} at {at:.0f} A is below {MIN_RESOLUTION:.0f}: "
                              f"too coarse to fit with a model at R = {model_resolution:.0f}")
    s_obs = fwhm_obs_kms * _FWHM_TO_SIGMA
    s_mod = c_kms / model_resolution * _FWHM_TO_SIGMA
    d2 = s_obs**2 - s_mod**2
    dlnlam = np.log(wl[-1] / wl[0]) / (wl.size - 1)
    pix = c_kms * dlnlam
    small = np.abs(d2) < (tolerance * s_mod) ** 2 * 2.0  # |σ_obs - σ_mod| ≲ 5 % of σ_mod
    extra = np.where(small, 0.0, np.sqrt(np.abs(d2)) / pix)
    degrade = BandedGaussian(np.where(d2 < 0, extra, 0.0))
    broaden = BandedGaussian(np.where(d2 > 0, extra, 0.0))
    info = {"r_obs_min": r_min, "r_obs_max": r_max,
            "frac_obs_degraded": float(np.mean((d2 < 0) & ~small)),
            "frac_model_broadened": float(np.mean((d2 > 0) & ~small))}
    return degrade, broaden, info
