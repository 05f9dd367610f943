"""broadening: ``vbroad`` and ``rv`` applied analytically to emulated spectra.

The network is trained on spectra at R = 1800 with vbroad = 0 and rv = 0. Because the
LAMOST grid is uniform in ln λ (step Δ = 1e-4 · ln 10, 69.03 km/s per pixel), both
operations are shift-invariant convolutions in pixel space and are applied exactly in
Fourier space:

- ``vbroad`` (km/s): a Gaussian of FWHM = vbroad in velocity (the schema's definition:
  macroturbulence and rotation combined). Gaussians compose, so the result is the same
  spectrum at an LSF of FWHM √((c/R)² + vbroad²). Multiplying the spectrum's Fourier
  transform by exp(−2π²σ²f²) is exact even for σ far below a pixel, where a sampled
  kernel would not be.
- ``rv`` (km/s): λ_obs = λ_rest (1 + rv/c), i.e. a shift by s = ln(1 + rv/c)/Δ pixels,
  applied as the phase ramp exp(−2πi f s) — exact for a band-limited spectrum (at
  R = 1800 the LSF's transfer function at the Nyquist frequency is < 1 %).

The spectrum is padded by reflection at both ends (``pad`` pixels, enough for |rv| up
to 600 km/s plus the kernel; the right end a little more, to a fast FFT length), so a
flat spectrum stays flat. Both operations are
differentiable in the flux, vbroad and rv.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from ..physics.constants import c_kms
from ..physics.lsf import LAMOST_LOG10_STEP

__all__ = ["DLNLAM", "broaden_and_shift"]

#: ln-λ step of the LAMOST grid
DLNLAM = LAMOST_LOG10_STEP * math.log(10.0)
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def broaden_and_shift(flux: torch.Tensor, vbroad: torch.Tensor, rv: torch.Tensor,
                      dlnlam: float = DLNLAM, pad: int = 64) -> torch.Tensor:
    """Apply a Gaussian of FWHM ``vbroad`` (km/s) and a Doppler shift ``rv`` (km/s) to
    (B, W) spectra sampled uniformly in ln λ with step ``dlnlam``; ``vbroad`` and ``rv``
    have shape (B,). Returns (B, W)."""
    B, W = flux.shape
    pad = min(pad, W - 1)
    # the right pad is lengthened to a 5-smooth transform length: 3909 + 2·64 = 4037 =
    # 11 · 367 takes the FFT 6× longer than 4050 = 2 · 3⁴ · 5²
    n = _smooth_length(W + 2 * pad)
    right = min(n - W - pad, W - 1)
    n = W + pad + right
    x = torch.cat([flux[:, 1:pad + 1].flip(-1), flux, flux[:, W - right - 1:W - 1].flip(-1)], dim=-1)
    f = torch.fft.rfftfreq(n, device=flux.device, dtype=flux.dtype)          # cycles / pixel
    sigma = vbroad.to(flux.dtype)[:, None] * (_FWHM_TO_SIGMA / (c_kms * dlnlam))
    shift = torch.log1p(rv.to(flux.dtype) / c_kms)[:, None] / dlnlam
    gain = torch.exp(-2.0 * math.pi ** 2 * (sigma * f) ** 2)
    phase = -2.0 * math.pi * f * shift
    spec = torch.fft.rfft(x, dim=-1)
    spec = spec * torch.complex(gain * torch.cos(phase), gain * torch.sin(phase))
    out = torch.fft.irfft(spec, n=n, dim=-1)
    return out[:, pad:pad + W]


@lru_cache(maxsize=None)   # called on every slider move with the same n
def _smooth_length(n: int) -> int:
    """The smallest m ≥ n whose only prime factors are 2, 3 and 5 (a fast FFT length)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1
