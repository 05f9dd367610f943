"""model_error: the emulator's own error spectrum, measured on held-out engine spectra.

An emulator is not the engine. Where it is off by more than the noise (the blue, strong
lines, the edges of the domain) a fit that trusts it blindly gets error bars several times
too small. The error spectrum sigma_model(lambda) is the rms, per pixel, of emulator - engine
over spectra the emulator was not trained on; the likelihood then weights each pixel by
1 / (sigma_obs^2 + sigma_model^2).

The error is not independent between pixels: a spectrum that is off in Teff is off in every
line at once, and a likelihood that treats 3900 correlated errors as independent averages
them down and gives label errors a few times too small (measured: pull std 2-2.5 at S/N 50
with the diagonal error alone). :func:`error_basis` therefore splits the held-out residuals
into a correlated part, a low-rank covariance spanned by the residuals themselves, and an
uncorrelated remainder per pixel (what the other spectra's residuals cannot reproduce, by
leave-one-out projection), scaled so that the two add up to the measured variance per pixel.
The likelihood applies the low-rank part with the Woodbury identity.
"""
from __future__ import annotations

import numpy as np

__all__ = ["estimate_model_error", "residuals", "leave_one_out", "error_basis", "projection_remainder"]


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


def projection_remainder(r: np.ndarray) -> np.ndarray:
    """(N, W): each residual spectrum minus its least-squares projection onto the span of
    the OTHER residuals ``r`` (N, W): the part of a new spectrum's error a basis made of
    the others cannot represent."""
    r = np.nan_to_num(np.asarray(r, float))
    n = len(r)
    G = r @ r.T
    out = np.empty_like(r)
    for j in range(n):
        o = np.r_[0:j, j + 1:n]
        Go = G[np.ix_(o, o)]
        c = np.linalg.lstsq(Go + 1e-12 * np.trace(Go) / len(o) * np.eye(len(o)), G[o, j], rcond=None)[0]
        out[j] = r[j] - c @ r[o]
    return out


def error_basis(r: np.ndarray, floor: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """The model error of held-out residuals ``r`` (N, W) as (basis (N, W), rest (W,)):
    covariance ``basis.T @ basis + diag(rest**2)``, normalized flux.

    rest^2 is the per-pixel mean square of :func:`projection_remainder` (clipped to the
    total variance s^2 = mean r^2), the basis is r / sqrt(N) scaled per pixel by
    sqrt(1 - rest^2 / s^2), so that the covariance's diagonal is s^2: purely diagonal when
    the residuals are independent between pixels, the full sample covariance when they
    lie in a few shared shapes."""
    r = np.nan_to_num(np.asarray(r, float))
    n = len(r)
    if n < 10:
        raise ValueError(f"need at least 10 held-out spectra for the model error basis, got {n}")
    s2 = np.maximum((r**2).mean(0), floor**2)
    rest2 = np.clip((projection_remainder(r) ** 2).mean(0), floor**2, s2)
    scale = np.sqrt(np.clip(1.0 - rest2 / s2, 0.0, 1.0))
    return r / np.sqrt(n) * scale[None], np.sqrt(rest2)
