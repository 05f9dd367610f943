"""model_error: the emulator's own error spectrum, measured on held-out engine spectra.

An emulator is not the engine. Where it is off by more than the noise (the blue, strong
lines, the edges of the domain) a fit that trusts it blindly gets error bars several times
too small. The error spectrum sigma_model(lambda) is the rms, per pixel, of emulator - engine
over spectra the emulator was not trained on; the likelihood then weights each pixel by
1 / (sigma_obs^2 + sigma_model^2). Treating the model error as independent between pixels
is an approximation (it is correlated along a line), so the injection benchmark checks the
resulting error bars against the truth.
"""
from __future__ import annotations

import numpy as np

__all__ = ["estimate_model_error", "residuals", "leave_one_out"]


def residuals(emulator, labels: np.ndarray, flux: np.ndarray, batch: int = 128) -> np.ndarray:
    """(N, W) emulator - engine for engine spectra ``flux`` (N, W) at ``labels`` (N, 32),
    normalized flux (vbroad and rv as in the labels)."""
    labels = np.asarray(labels, float)
    out = np.concatenate([np.asarray(emulator(labels[i:i + batch]), float) for i in range(0, len(labels), batch)])
    return out - np.asarray(flux, float)


def estimate_model_error(emulator, labels: np.ndarray, flux: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """(W,) rms of emulator - engine per pixel over held-out spectra (normalized flux, at
    least ``floor``). Pixels where a residual is non-finite are skipped in that spectrum."""
    r = residuals(emulator, labels, flux)
    if len(r) < 10:
        raise ValueError(f"need at least 10 held-out spectra to estimate the model error, got {len(r)}")
    return np.maximum(np.sqrt(np.nanmean(r ** 2, axis=0)), floor)


def leave_one_out(r: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """(N, W): for each spectrum, the per-pixel rms of the OTHER spectra's residuals ``r``
    (N, W), so that a benchmark on held-out spectra never uses a star's own residual."""
    r2 = np.asarray(r, float) ** 2
    n = len(r2)
    return np.maximum(np.sqrt((r2.sum(0)[None] - r2) / (n - 1)), floor)
