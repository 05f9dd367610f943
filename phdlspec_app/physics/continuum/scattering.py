"""Continuum scattering (treated as true absorption in LTE): Rayleigh and Thomson.

- H I and He I Rayleigh: Colgan et al. (2016, ApJ 817, 116) eqs. 6–7 (H from the fit to
  Lee 2005, valid redward of Lyman α):
  σ_H/σ_T = 20.24 x⁴ + 239.2 x⁶ + 2256 x⁸,  σ_He/σ_T = 1.913 x⁴ + 4.52 x⁶ + 7.90 x⁸,
  x = hν / (2 Ry).
- H₂ Rayleigh: Dalgarno & Williams (1962, ApJ 136, 690) eq. 3, λ in Å:
  σ = 8.14e-13 λ⁻⁴ + 1.28e-6 λ⁻⁶ + 1.61 λ⁻⁸ cm² (valid for λ ≳ 1300 Å).
- Thomson scattering: σ_T n_e (σ_T = 8π/3 r_e², CODATA 2018).
"""
from __future__ import annotations

import torch

from .. import constants as C
from ._common import RYDBERG_INF_EV, frequency, layer

__all__ = ["rayleigh_h", "rayleigh_he", "rayleigh_h2", "thomson"]


def _x2(wl):
    return (C.h * frequency(wl) / (2.0 * RYDBERG_INF_EV * C.eV)) ** 2


def rayleigh_h(wl, nHI):
    """H I Rayleigh scattering α [cm⁻¹], (..., L, W) (Colgan et al. 2016 eq. 6); ``nHI`` all H I."""
    x2 = _x2(wl)
    s = C.sigma_thomson * (20.24 * x2**2 + 239.2 * x2**3 + 2256.0 * x2**4)
    return layer(nHI) * s


def rayleigh_he(wl, nHeI):
    """He I Rayleigh scattering α [cm⁻¹], (..., L, W) (Colgan et al. 2016 eq. 7)."""
    x2 = _x2(wl)
    s = C.sigma_thomson * (1.913 * x2**2 + 4.52 * x2**3 + 7.90 * x2**4)
    return layer(nHeI) * s


def rayleigh_h2(wl, nH2):
    """H₂ Rayleigh scattering α [cm⁻¹], (..., L, W) (Dalgarno & Williams 1962 eq. 3, λ in Å)."""
    il2 = wl ** -2.0
    s = 8.14e-13 * il2**2 + 1.28e-6 * il2**3 + 1.61 * il2**4
    return layer(nH2) * s


def thomson(wl, ne):
    """Electron (Thomson) scattering α [cm⁻¹], (..., L, W): σ_T n_e, independent of λ."""
    return layer(ne * C.sigma_thomson) * torch.ones_like(wl)
