"""Neutral-hydrogen bound-free and free-free absorption.

- H I bound-free, n = 1–6: cross sections of Nahar (2021, Atoms 9, 73), as distributed with
  Korg.jl (``atomic/korg/individual_H_cross-sections.h5``: ``E`` [eV], ``sigma`` [Mb], one row
  per principal quantum number n, the statistical weight already folded in: σ_n(1s) at
  threshold = 2 × 6.3 Mb). Levels n = 2–6 get the occupation-probability (level dissolution)
  treatment of Hummer & Mihalas (1988, ApJ 331, 794; eqs. 4.24, 4.71), as in Däppen, Anderson &
  Mihalas (1987, ApJ 319, 195) and the HBOP routine of Barklem & Eriksson used by SME and
  Turbospectrum: below the edge of level n a photon can still ionize when the upper level
  n_eff = (1/n² − hν/χ)^{-1/2} is dissolved, with probability 1 − w(n_eff)/w(n); there the
  cross section is continued with the hydrogenic (Kramers) ν⁻³ law from its edge value.
  The Lyman series is not dissolved (as in Korg.jl: dissolution of n=1 would inflate the
  optical opacity). Levels n = 7–40: hydrogenic Kramers cross sections with the Gaunt factor
  set to 1 (Kurucz 1970, SAO Spec. Rep. 309, eq. 5.5 with the n > 6 coefficients), weighted by
  their occupation probabilities w(n).
- H I free-free (hν + e⁻ + H II): Rybicki & Lightman (1979) eq. 5.18 with the thermally averaged
  non-relativistic Gaunt factors of van Hoof et al. (2014, MNRAS 444, 420)
  (``atomic/korg/vanHoof2014-nr-gauntff.dat``).
"""
from __future__ import annotations

import math
from functools import lru_cache

import h5py
import numpy as np
import torch

from ...paths import physics_dir
from .. import constants as C
from ._common import RYDBERG_INF_EV, as_tensor, frequency, interp1d, layer, stim_factor

__all__ = ["hummer_mihalas_w", "hydrogen_bf", "hydrogen_ff", "gaunt_ff_vanhoof"]

_CHI_H = C.RydbergH_eV        # eV, ionization energy of H I
_N_NAHAR = 6                  # levels taken from the Nahar (2021) table
_N_MAX = 40                   # highest level summed
# Kramers constant 64 π⁴ e¹⁰ m_e / (3√3 c h⁶) [cm² Hz³] (Kurucz 1970 eq. 5.5; Rybicki & Lightman eq. 10.54)
_KRAMERS = 64 * math.pi**4 * C.e_charge**10 * C.m_e / (3 * math.sqrt(3) * C.c * C.h**6)
# free-free constant (4 e⁶ / 3 m h c) (2π / 3 k m)^{1/2}, Rybicki & Lightman (1979) eq. 5.18a [cgs]
_FF_CONST = 4 * C.e_charge**6 / (3 * C.m_e * C.h * C.c) * math.sqrt(2 * math.pi / (3 * C.k_B * C.m_e))


def _hm_coefficients(n_eff):
    """(A, B, Cc) with w = exp(−4π/3 (n_H A + n_He B + n_e Cc)) — they depend on n_eff only."""
    a0 = C.a0
    r = torch.sqrt(2.5 * n_eff**4 + 0.5 * n_eff**2) * a0
    K = torch.where(n_eff > 3,
                    16.0 / 3.0 * (n_eff / (n_eff + 1)) ** 2 * (n_eff + 7.0 / 6.0) / (n_eff**2 + n_eff + 0.5),
                    torch.ones_like(n_eff))
    chi = _CHI_H / n_eff**2 * C.eV
    return (r + math.sqrt(3.0) * a0) ** 3, (r + 1.02 * a0) ** 3, 16.0 * (C.e_charge**2 / (chi * torch.sqrt(K))) ** 3


def hummer_mihalas_w(n_eff, nH, nHe, ne):
    """Occupation probability w of a hydrogen level of effective quantum number ``n_eff``.

    Hummer & Mihalas (1988) eq. 4.71 in the form of Barklem & Eriksson's WCALC (HBOP):
    neutral perturbers H I and He I (radii √3 a₀ and 1.02 a₀, level radius
    a₀ (5/2 n⁴ + 1/2 n²)^{1/2}) and singly charged ions with n_ion = n_e and the quantum-mechanical
    correction K(n) of their eq. 4.24 (K = 1 for n ≤ 3). Broadcasts all arguments.
    """
    A, B, Cc = _hm_coefficients(n_eff)
    return torch.exp(-4.0 * math.pi / 3.0 * (nH * A + nHe * B + ne * Cc))


@lru_cache(maxsize=1)
def _nahar_table():
    with h5py.File(physics_dir() / "atomic" / "korg" / "individual_H_cross-sections.h5", "r") as f:
        E = np.asarray(f["E"][()], dtype=np.float64)
        sigma = np.asarray(f["sigma"][()], dtype=np.float64)
        n = np.asarray(f["n"][()])
    assert list(n[:_N_NAHAR]) == list(range(1, _N_NAHAR + 1))
    return E[:_N_NAHAR], sigma[:_N_NAHAR] * 1e-18  # Mb → cm²


def hydrogen_bf(wl, T, nHI, nHe, ne, U_HI, level_dissolution: bool = True):
    """H I bound-free α [cm⁻¹], (..., L, W), stimulated emission included (see module doc).

    ``nHI``, ``nHe`` (He I), ``ne``, ``U_HI`` (partition function of H I): (..., L).
    ``level_dissolution=False`` drops the Hummer–Mihalas treatment (sharp series edges, every
    level fully populated), which is what ATLAS/SME's ``AHYD`` does — for comparisons only.
    """
    E_tab, s_tab = _nahar_table()
    nu = frequency(wl)                       # (W,)
    hnu = C.h * nu / C.eV                    # eV
    kT = C.k_B_eV * layer(T)                 # (..., L, 1)
    nH_, nHe_, ne_ = layer(nHI), layer(nHe), layer(ne)
    total = torch.zeros(torch.broadcast_shapes(kT.shape, nu.shape), dtype=torch.float64, device=wl.device)
    for i in range(_N_NAHAR):
        n = i + 1
        E_thr = _CHI_H / n**2
        Eg = as_tensor(E_tab[i], wl)
        sg = as_tensor(s_tab[i], wl)
        sig_above = interp1d(hnu, Eg, sg, right=0.0)
        sig_edge = float(np.interp(E_thr, E_tab[i], s_tab[i]))
        above = hnu >= E_thr
        n_t = torch.tensor(float(n), dtype=torch.float64, device=wl.device)
        w_low = hummer_mihalas_w(n_t, nH_, nHe_, ne_) if level_dissolution else torch.ones_like(kT)
        pop = w_low * torch.exp(-(_CHI_H - E_thr) / kT)            # n_n/(g_n n_HI/U), g in σ
        if n == 1 or not level_dissolution:
            sig = torch.where(above, sig_above, torch.zeros_like(sig_above))
            total = total + pop * sig
        else:
            sig_below = sig_edge * (E_thr / hnu) ** 3          # Kramers ν⁻³ continuation
            x = torch.clamp(1.0 / n**2 - hnu / _CHI_H, min=1e-12)
            n_eff = 1.0 / torch.sqrt(x)                          # (W,)
            A, B, Cc = _hm_coefficients(n_eff)                   # (W,) each
            # 1 − w_up/w_low; above the edge the upper level is in the continuum (fraction 1)
            frac = torch.where(above, 1.0, -torch.expm1(
                -4.0 * math.pi / 3.0 * (nH_ * A + nHe_ * B + ne_ * Cc) - torch.log(w_low)))
            sig = torch.where(above, sig_above, sig_below)
            total = total + (pop * frac) * sig
    # n = 7…40: no dissolution, so the sum factorizes into (levels × layers) @ (levels × λ)
    ns = torch.arange(_N_NAHAR + 1, _N_MAX + 1, dtype=torch.float64, device=wl.device)
    E_thr = _CHI_H / ns**2                                                # (N,)
    w_low = hummer_mihalas_w(ns, nH_, nHe_, ne_) if level_dissolution else torch.ones_like(kT * ns)
    pop = 2.0 * ns**2 * w_low * torch.exp(-(_CHI_H - E_thr) / kT)         # (..., L, N)
    sig = torch.where(hnu[None, :] >= E_thr[:, None], _KRAMERS / (ns[:, None] ** 5 * nu[None, :] ** 3),
                      torch.zeros((), dtype=torch.float64, device=wl.device))  # (N, W)
    total = total + pop @ sig
    return layer(nHI / U_HI) * total * stim_factor(wl, T)


@lru_cache(maxsize=1)
def _vanhoof_table():
    path = physics_dir() / "atomic" / "korg" / "vanHoof2014-nr-gauntff.dat"
    lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
    it = iter([ln for ln in lines if ln] )
    magic = int(next(it).split()[0])
    assert magic == 20140210, "unexpected van Hoof gaunt_ff file"
    n_g2, n_u = (int(v) for v in next(it).split()[:2])
    g2_0 = float(next(it).split()[0])
    u_0 = float(next(it).split()[0])
    step = float(next(it).split()[0])
    rows = [np.array(next(it).split(), dtype=np.float64) for _ in range(n_u)]
    table = np.vstack(rows)                                # (n_u, n_γ²)
    assert table.shape == (n_u, n_g2)
    return u_0 + step * np.arange(n_u), g2_0 + step * np.arange(n_g2), table


def gaunt_ff_vanhoof(log_u: torch.Tensor, log_g2: torch.Tensor) -> torch.Tensor:
    """Thermally averaged non-relativistic free-free Gaunt factor (van Hoof et al. 2014).

    ``log_u`` = log10(hν/kT) (..., L, W), ``log_g2`` = log10(Z² Ry/kT) (..., L); bilinear
    interpolation in the published table (clamped to its range).
    """
    u_grid, g2_grid, tab = _vanhoof_table()
    ug = as_tensor(u_grid, log_u)
    gg = as_tensor(g2_grid, log_u)
    tb = as_tensor(tab, log_u)                              # (Nu, Ng)
    # γ² first (one value per layer): (..., L, Nu)
    per_layer = interp1d(log_g2, gg, tb.transpose(0, 1))    # (..., L, Nu)
    lu = torch.clamp(log_u, float(u_grid[0]), float(u_grid[-1]))
    i = torch.searchsorted(ug, lu.detach().contiguous()).clamp(1, len(u_grid) - 1)
    w = (lu - ug[i - 1]) / (ug[i] - ug[i - 1])
    pl = per_layer.expand(*lu.shape[:-1], per_layer.shape[-1])
    g0 = torch.gather(pl, -1, i - 1)
    g1 = torch.gather(pl, -1, i)
    return g0 + w * (g1 - g0)


def hydrogen_ff(wl, T, nHII, ne):
    """H I free-free α [cm⁻¹], (..., L, W): hν + e⁻ + p → e⁻ + p.

    α = C_ff Z² T^{-1/2} ν⁻³ n_e n(H II) g_ff (1 − e^{−hν/kT}) with C_ff = (4e⁶/3mhc)(2π/3km)^{1/2}
    ≈ 3.69e8 cgs (Rybicki & Lightman 1979 eq. 5.18b) and g_ff from van Hoof et al. (2014).
    """
    nu = frequency(wl)
    Tl = layer(T)
    log_u = torch.log10(C.h * nu / (C.k_B * Tl))
    log_g2 = torch.log10(RYDBERG_INF_EV / (C.k_B_eV * T))
    g = gaunt_ff_vanhoof(log_u, log_g2)
    return _FF_CONST * g * Tl ** -0.5 / nu**3 * layer(ne * nHII) * stim_factor(wl, T)
