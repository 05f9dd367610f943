"""Noise estimate for spectra that come without errors."""
from __future__ import annotations

import numpy as np

__all__ = ["estimate_ivar"]


def estimate_ivar(flux: np.ndarray, good: np.ndarray, window: int = 101) -> np.ndarray:
    """Inverse variance estimated from the flux itself, pixel by pixel.

    Uses the DER_SNR estimator (Stoehr et al. 2008, ASPC 394, 505):
    sigma = 1.482602 / sqrt(6) * median(|2 f_i - f_{i-2} - f_{i+2}|), which is
    insensitive to lines and continuum slopes wider than a few pixels. It is
    evaluated in running windows of ``window`` good pixels, so the noise may vary
    with wavelength. The estimate is floored at 1e-4 of the median |flux| (S/N
    10^4), so that noise-free (simulated) spectra stay usable. Pixels where no
    estimate is possible get ivar = 0.
    """
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.zeros_like(flux)
    idx = np.flatnonzero(good & np.isfinite(flux))
    if idx.size < 5:
        return ivar
    f = flux[idx]
    d = np.abs(2.0 * f[2:-2] - f[:-4] - f[4:])
    half = window // 2
    m = d.size
    if m <= window:
        sig = np.full(idx.size, 1.482602 / np.sqrt(6.0) * np.median(d))
    else:
        from numpy.lib.stride_tricks import sliding_window_view

        med = np.median(sliding_window_view(d, window), axis=1)
        med = np.concatenate([np.full(half, med[0]), med, np.full(m - med.size - half, med[-1])])
        med = np.concatenate([np.full(2, med[0]), med, np.full(2, med[-1])])
        sig = 1.482602 / np.sqrt(6.0) * med
    sig = np.maximum(sig, 1e-4 * np.median(np.abs(f)))
    sig = np.maximum(sig, 1e-4 * np.median(np.abs(f)))
    with np.errstate(divide="ignore"):
        ivar[idx] = np.where(sig > 0, 1.0 / sig**2, 0.0)
    return ivar
