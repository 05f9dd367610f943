"""H⁻ bound-free and free-free absorption.

- bound-free: cross sections of McLaughlin, Stancil, Sadeghpour & Forrey (2017, J. Phys. B 50,
  114001), as distributed with Korg.jl (``atomic/korg/McLaughlin2017Hminusbf.h5``: ``nu`` [Hz],
  ``sigma`` [cm²]); n(H⁻) from the Saha equation (Kurucz 1970, SAO Spec. Rep. 309, eq. 5.10).
- free-free: Bell & Berrington (1987, J. Phys. B 20, 801), Table 1 (typed below).
"""
from __future__ import annotations

from functools import lru_cache

import h5py
import numpy as np
import torch

from ...paths import physics_dir
from .. import constants as C
from ._common import HMINUS_ION_EV, as_tensor, frequency, layer, stim_factor, table2d

__all__ = ["hminus_number_density", "hminus_bf_cross_section", "hminus_bf", "hminus_ff",
           "BELL_BERRINGTON_1987_LAMBDA", "BELL_BERRINGTON_1987_THETA", "BELL_BERRINGTON_1987_K"]

# (h² / (2π m_e k))^{3/2} in cm³ K^{3/2}: the Saha-equation thermal de Broglie factor
_SAHA_DB = (C.h**2 / (2.0 * np.pi * C.m_e * C.k_B)) ** 1.5


def hminus_number_density(nHI: torch.Tensor, ne: torch.Tensor, T: torch.Tensor,
                          U_HI: torch.Tensor | float = 2.0) -> torch.Tensor:
    """n(H⁻) [cm⁻³] from the Saha equation with H⁻ as the 'neutral' and H I (n=1) as the 'ion'.

    n(H⁻) = n(H I, n=1) n_e · U(H⁻)/(2 g(H I,1s)) · (h²/2πm_e kT)^{3/2} · exp(χ/kT),
    with U(H⁻) = 1, g(H I, 1s) = 2, χ = 0.754204 eV (McLaughlin et al. 2017), and
    n(H I, n=1) = 2 n(H I)/U(H I) (U(H I) = 2 by default: the brief's convention, and within
    0.1 % of the true value below 8000 K). Kurucz (1970) eq. 5.10. Shapes (..., L).
    """
    n_gs = 2.0 * nHI / U_HI
    return 0.25 * n_gs * ne * _SAHA_DB * T ** -1.5 * torch.exp(HMINUS_ION_EV / (C.k_B_eV * T))


@lru_cache(maxsize=1)
def _mclaughlin_table():
    with h5py.File(physics_dir() / "atomic" / "korg" / "McLaughlin2017Hminusbf.h5", "r") as f:
        nu = np.asarray(f["nu"][()], dtype=np.float64)
        sigma = np.asarray(f["sigma"][()], dtype=np.float64)
    order = np.argsort(nu)
    return nu[order], sigma[order]


def hminus_bf_cross_section(wl: torch.Tensor) -> torch.Tensor:
    """H⁻ photodetachment cross section [cm²] (no stimulated emission) at wl [Å], shape of wl.

    McLaughlin et al. (2017) tabulated values, linearly interpolated in ν. Between the
    threshold (0.754204 eV, 16 439 Å) and the first tabulated point (ν_min) the threshold law
    σ ∝ (E − E₀)^{3/2} is used, as McLaughlin et al. do for E < 0.7678 eV, normalised to the
    first table point. Zero below threshold.
    """
    nu_t, sig_t = _mclaughlin_table()
    nu_g = as_tensor(nu_t, wl)
    sg = as_tensor(sig_t, wl)
    nu = frequency(wl)
    nu0 = HMINUS_ION_EV * C.eV / C.h
    tab = torch.searchsorted(nu_g, nu.contiguous()).clamp(1, len(nu_t) - 1)
    x0, x1 = nu_g[tab - 1], nu_g[tab]
    w = ((nu - x0) / (x1 - x0)).clamp(0, 1)
    s_tab = sg[tab - 1] + w * (sg[tab] - sg[tab - 1])
    coef = sig_t[0] / (nu_t[0] - nu0) ** 1.5
    s_low = coef * torch.clamp(nu - nu0, min=0.0) ** 1.5
    return torch.where(nu < nu_t[0], s_low, s_tab)


def hminus_bf(wl: torch.Tensor, T: torch.Tensor, n_hminus: torch.Tensor) -> torch.Tensor:
    """H⁻ bound-free α [cm⁻¹], (..., L, W): n(H⁻) σ_bf(ν) (1 − e^{−hν/kT}) (McLaughlin et al. 2017)."""
    return layer(n_hminus) * hminus_bf_cross_section(wl) * stim_factor(wl, T)


# Bell & Berrington (1987), J. Phys. B 20, 801, Table 1: the H⁻ free-free absorption
# coefficient K(λ, θ) in units of 1e-26 cm⁴ dyn⁻¹ per H atom (1s) and unit electron pressure,
# stimulated emission included. Rows: λ [Å]; columns: θ = 5040/T.
BELL_BERRINGTON_1987_THETA = np.array([0.5, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.8, 3.6])
BELL_BERRINGTON_1987_LAMBDA = np.array([
    1823, 2278, 2604, 3038, 3645, 4557, 5063, 5696, 6510, 7595, 9113, 10126, 11392, 13019,
    15189, 18227, 22784, 30378, 45567, 91134, 113918, 151890], dtype=np.float64)
BELL_BERRINGTON_1987_K = np.array([
    [.0178, .0222, .0308, .0402, .0498, .0596, .0695, .0795, .0896, .131, .172],
    [.0228, .0280, .0388, .0499, .0614, .0732, .0851, .0972, .110, .160, .211],
    [.0277, .0342, .0476, .0615, .0760, .0908, .105, .121, .136, .199, .262],
    [.0364, .0447, .0616, .0789, .0966, .114, .132, .150, .169, .243, .318],
    [.0520, .0633, .0859, .108, .131, .154, .178, .201, .225, .321, .418],
    [.0791, .0959, .129, .161, .194, .227, .260, .293, .327, .463, .602],
    [.0965, .117, .157, .195, .234, .272, .311, .351, .390, .549, .711],
    [.121, .146, .195, .241, .288, .334, .381, .428, .475, .667, .861],
    [.154, .188, .249, .309, .367, .424, .482, .539, .597, .830, 1.07],
    [.208, .250, .332, .409, .484, .557, .630, .702, .774, 1.06, 1.36],
    [.293, .354, .468, .576, .677, .777, .874, .969, 1.06, 1.45, 1.83],
    [.358, .432, .572, .702, .825, .943, 1.06, 1.17, 1.28, 1.73, 2.17],
    [.448, .539, .711, .871, 1.02, 1.16, 1.29, 1.43, 1.57, 2.09, 2.60],
    [.579, .699, .924, 1.13, 1.33, 1.51, 1.69, 1.86, 2.02, 2.67, 3.31],
    [.781, .940, 1.24, 1.52, 1.78, 2.02, 2.26, 2.48, 2.69, 3.52, 4.31],
    [1.11, 1.34, 1.77, 2.17, 2.53, 2.87, 3.20, 3.51, 3.80, 4.92, 5.97],
    [1.73, 2.08, 2.74, 3.37, 3.90, 4.50, 5.01, 5.50, 5.95, 7.59, 9.06],
    [3.04, 3.65, 4.80, 5.86, 6.86, 7.79, 8.67, 9.50, 10.3, 13.2, 15.6],
    [6.79, 8.16, 10.7, 13.1, 15.3, 17.4, 19.4, 21.2, 23.0, 29.5, 35.0],
    [27.0, 32.4, 42.6, 51.9, 60.7, 68.9, 76.8, 84.2, 91.4, 117., 140.],
    [42.3, 50.6, 66.4, 80.8, 94.5, 107., 120., 131., 142., 183., 219.],
    [75.1, 90.0, 118., 144., 168., 191., 212., 234., 253., 325., 388.],
])


def hminus_ff(wl: torch.Tensor, T: torch.Tensor, nHI: torch.Tensor, ne: torch.Tensor,
              U_HI: torch.Tensor | float = 2.0) -> torch.Tensor:
    """H⁻ free-free α [cm⁻¹], (..., L, W) (reaction hν + e⁻ + H I → e⁻ + H I).

    α = K(λ, θ) · P_e · n(H I, 1s), K from Bell & Berrington (1987) Table 1 (stimulated
    emission included), P_e = n_e k T, n(H I, 1s) = 2 n(H I)/U(H I). Bilinear interpolation in
    (λ, θ); θ is clamped to the table (1400–10080 K) and λ held at the table ends (1823 Å,
    151 890 Å) — outside the LAMOST range.
    """
    theta = 5040.0 / T
    K = 1e-26 * table2d(wl, theta, BELL_BERRINGTON_1987_LAMBDA, BELL_BERRINGTON_1987_THETA,
                        BELL_BERRINGTON_1987_K)
    pe = ne * C.k_B * T
    return K * layer(pe * 2.0 * nHI / U_HI)
