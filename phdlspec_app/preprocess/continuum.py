"""The pseudo-continuum operator, applied identically to the observation and the model.

Following DD-Payne (Ting et al. 2017; Xiang et al. 2019, ApJS 245, 34), neither the
observation nor the model is "normalized" on its own: both are divided by their own
pseudo-continuum, a weighted running smooth

    C[f] = K(w f) / K(w)   (the local-linear version below),

where w is the observation's pixel weights (its inverse variance on the good pixels, 0 on
masked ones: ``prepare.continuum_weights``; the *same* w for data and model) and K is
a near-Gaussian running filter in pixels of the model grid (three passes of a running
mean, whose variance 3(b² − 1)/12 sets the width: default σ ≈ 43 px ≈ 50 Å at 5000 Å,
the DD-Payne choice). The likelihood compares f_obs / C[f_obs] with f_model / C[f_model];
any smooth instrumental response or flux-calibration error in f_obs cancels, to the
degree that it is smooth on the kernel scale. The operator is linear in f given w, costs
O(P) per spectrum (cumulative sums), and is differentiable in torch.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["PseudoContinuum"]


def _box(x: torch.Tensor, b: int) -> torch.Tensor:
    """Running sum of odd width b along the last axis, zero outside the array."""
    h = b // 2
    c = torch.cumsum(torch.nn.functional.pad(x, (h + 1, h)), -1)
    return c[..., b:] - c[..., : c.shape[-1] - b]


class PseudoContinuum:
    """C[f] = K(w f) / K(w) for spectra (..., P) on the model grid (see the module doc).

    Parameters
    ----------
    weights : (P,) float/bool — each pixel's weight: 0 for masked pixels; 1 for good ones, or
        their relative inverse variance (``prepare.continuum_weights``)
    sigma_pix : the filter's σ in pixels (default 43 ≈ 50 Å at 5000 Å on the LAMOST grid)
    """

    def __init__(self, weights: np.ndarray, sigma_pix: float = 43.0):
        self.sigma_pix = float(sigma_pix)
        # three passes of a running mean of odd width b: variance 3 (b^2 - 1) / 12
        b = int(round(np.sqrt(4.0 * self.sigma_pix**2 + 1.0)))
        self.box = b + 1 - b % 2
        self.w = np.asarray(weights, float)
        self._cache: dict = {}

    def _moments(self, device, dtype):
        key = (device, dtype)
        if key not in self._cache:
            w = torch.as_tensor(self.w, device=device, dtype=dtype)
            # centred, scaled pixel coordinate keeps the moments well conditioned
            x = (torch.arange(w.numel(), device=device, dtype=dtype) - 0.5 * w.numel()) / self.sigma_pix
            s0, s1, s2 = self._smooth(w), self._smooth(w * x), self._smooth(w * x * x)
            # local fit about each pixel: S1' = S1 - x S0, S2' = S2 - 2 x S1 + x^2 S0
            s1c = s1 - x * s0
            s2c = s2 - 2 * x * s1 + x * x * s0
            det = (s0 * s2c - s1c**2).clamp_min(1e-12 * (s0 * s2c).abs().max())
            self._cache[key] = (w, x, s1c, s2c, det)
        return self._cache[key]

    def _smooth(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(3):
            x = _box(x, self.box)
        return x

    def __call__(self, f):
        """The pseudo-continuum of (..., P) spectra: numpy in → numpy out, torch → torch."""
        is_np = not isinstance(f, torch.Tensor)
        t = torch.as_tensor(f, dtype=torch.float64) if is_np else f
        w, x, s1c, s2c, det = self._moments(t.device, t.dtype)
        # both moments in one pass of the filter (half the kernel launches: the filter is
        # cheap arithmetic, and on the fit's small batches the per-op overhead dominates)
        t0, t1 = self._smooth(torch.stack((t * w, t * (w * x))))
        t1 = t1 - x * t0
        c = (t0 * s2c - t1 * s1c) / det
        return c.numpy() if is_np else c
