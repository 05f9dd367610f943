"""Hydrogen line opacity (Balmer and Paschen series), in cm⁻¹.

Profiles
--------
Stark broadening (with thermal Doppler broadening already folded in) from the tables of
Stehlé & Hutcheson (1999, A&AS 140, 93), as distributed with Korg.jl
(``physics_dir()/atomic/korg/Stehle-Hutchson-hydrogen-profiles.h5``). Each group
``"<lower>_<upper>"`` holds ``temps`` (10 values, 2500 K – 1.26e6 K),
``electron_number_densities`` (n_e grid, 10¹⁰ cm⁻³ upward, shorter for high upper levels),
``delta_nu_over_F0`` (x = |Δν|/F₀ with the Holtsmark normal field F₀ = 1.25e−9 n_e^(2/3)
in cgs; x₀ = 0) and ``profile`` [x, n_e, T]: the profile P(|Δν|) per **Hz**, normalised
so that ∫ P dν = 1 over both wings; attributes ``lower``, ``upper``, ``log_gf``.
We interpolate ln P linearly in (ln T, ln n_e, ln x) (Korg.jl: linear in T and n_e),
keep P flat inside the first tabulated x (the Doppler core), and continue beyond the last
x with the Holtsmark asymptote P ∝ x^(−5/2). Layers outside the table's (T, n_e) range get
no opacity from that transition (as in Korg.jl: high-n lines are dissolved there anyway).

For Hα, Hβ, Hγ the self-broadening of Barklem, Piskunov & O'Mara (2000, A&A 363, 1091;
ABO cross-sections σ = 1180, 2320, 4208 a₀², α = 0.677, 0.455, 0.380) is added as a Voigt
profile (thermal + microturbulent Doppler width) with the same line strength: the
"convolution by summation" of Korg.jl (inexact in the core, right in the wings).

Line strength
-------------
α(ν) = (π e²/(m_e c)) · gf · n(H I)/U(H I) · w_upper · (e^(−E_lo/kT) − e^(−E_up/kT)) · P(Δν)
(stimulated emission included; P is per Hz, so no dλ/dν Jacobian is needed for α per cm).
log gf from the table attributes; they equal Wiese & Fuhr (2009, JPCRD 38, 565) values
(Hα 0.710, Hβ −0.020, Hγ −0.447, Paα 1.181). E_n = R_H(1 − 1/n²) with the reduced-mass
Rydberg of hydrogen (13.598 eV); vacuum wavelengths from the Rydberg formula with
R_H = R_∞/(1 + m_e/m_p) = 109677.58 cm⁻¹ (Hα 6564.70 Å). w_upper is the occupation
probability of the upper level (Hummer & Mihalas 1988, ApJ 331, 794, eq. 4.71, with
neutral H and He perturbers and singly charged ions; as Korg.jl's ``hummer_mihalas_w``);
it dissolves the high series members (use_mhd=False to switch it off).

Series included: every transition in the table with lower level 2 (Balmer, upper 3…30)
and 3 (Paschen, upper 4…30), within ``window`` Å (default 150 Å, Korg.jl's
``hydrogen_line_window_size``) of the wavelength grid.
"""
from __future__ import annotations

import math
from functools import lru_cache

import h5py
import numpy as np
import torch

from . import constants as C
from .autodiff import call_compiled
from phdlspec_app.paths import physics_dir
from .voigt import voigt_hjerting

__all__ = ["hydrogen_line_absorption", "hydrogen_line_partials", "stark_profile", "hydrogen_transitions",
           "has_hydrogen_lines",
           "hummer_mihalas_w", "RYDBERG_H_CM", "PARTIAL_VARS"]

RYDBERG_H_CM = 109737.31568160 / (1 + C.m_e / 1.67262192369e-24)   # cm⁻¹, R_∞/(1+m_e/m_p)
_SERIES = {"balmer": 2, "paschen": 3}
_ABO = {(2, 3): (1180.0, 0.677), (2, 4): (2320.0, 0.455), (2, 5): (4208.0, 0.380)}
_M_H = 1.00794 * C.amu


def vacuum_wavelength(lower: int, upper: int) -> float:
    """Vacuum wavelength (Å) of the H I transition lower → upper (Rydberg formula)."""
    return 1e8 / (RYDBERG_H_CM * (1.0 / lower**2 - 1.0 / upper**2))


@lru_cache(maxsize=1)
def hydrogen_transitions() -> tuple[dict, ...]:
    """Every tabulated transition as a dict of numpy arrays: lower, upper, log_gf,
    lnT (nT,), lnne (nne,), lnx (nx−1,) for x > 0, lnP (nT, nne, nx−1) (ln of the profile
    per Hz; −700 where the table holds 0)."""
    path = physics_dir() / "atomic" / "korg" / "Stehle-Hutchson-hydrogen-profiles.h5"
    out = []
    with h5py.File(path, "r") as f:
        for key in f:
            g = f[key]
            x = g["delta_nu_over_F0"][:]
            P = np.transpose(g["profile"][:], (2, 1, 0))       # → [T, n_e, x]
            with np.errstate(divide="ignore"):
                lnP = np.where(P > 0, np.log(np.where(P > 0, P, 1.0)), -700.0)
            # x₀ = 0 carries the core value; from x₁ on the grid is logarithmic
            out.append(dict(lower=int(g.attrs["lower"]), upper=int(g.attrs["upper"]),
                            log_gf=float(g.attrs["log_gf"]),
                            lnT=np.log(g["temps"][:]),
                            lnne=np.log(g["electron_number_densities"][:]),
                            lnx=np.log(x[1:]), lnP=lnP[:, :, 1:].copy()))
    out.sort(key=lambda d: (d["lower"], d["upper"]))
    return tuple(out)


def _interp_index(grid: torch.Tensor, q: torch.Tensor):
    """Lower index and weight for linear interpolation of q on grid (clamped)."""
    n = grid.numel()
    i = torch.searchsorted(grid, q.detach().contiguous()).clamp(1, n - 1) - 1
    g0, g1 = grid[i], grid[i + 1]
    w = ((q - g0) / (g1 - g0)).clamp(0.0, 1.0)
    return i, w


def _layer_table(tr, lnT, lnne, dev):
    """ln P of ``tr`` interpolated bilinearly in (ln T, ln n_e) to each layer: (N, nx)."""
    tab = torch.as_tensor(tr["lnP"], device=dev)
    iT, wT = _interp_index(torch.as_tensor(tr["lnT"], device=dev), lnT)
    ie, we = _interp_index(torch.as_tensor(tr["lnne"], device=dev), lnne)
    res = 0.0
    for dT, fT in ((0, 1 - wT), (1, wT)):
        for de, fe in ((0, 1 - we), (1, we)):
            res = res + (fT * fe)[:, None] * tab[iT + dT, ie + de]
    return res


def _ln_profile(tr, lnT, lnne, lnx, dev, table=None):
    """ln P interpolated linearly in (ln T, ln n_e, ln x); lnT, lnne (N,), lnx (N, K).
    Trilinear interpolation = linear interpolation in ln x of the per-layer table
    (:func:`_layer_table`, or ``table`` when given), so the (N, K) part gathers only twice."""
    if table is None:
        table = _layer_table(tr, lnT, lnne, dev)
    lnx_g = torch.as_tensor(tr["lnx"], device=dev)
    lnx_c = torch.clamp(lnx, max=float(tr["lnx"][-1]))
    ix, wx = _interp_index(lnx_g, lnx_c)                     # below x₁: flat (w clamps at 0)
    lo = torch.gather(table, 1, ix)
    hi = torch.gather(table, 1, ix + 1)
    res = lo + wx * (hi - lo)
    # beyond the last tabulated x: Holtsmark asymptote P ∝ x^(−5/2)
    return res - 2.5 * torch.clamp(lnx - lnx_c, min=0.0)


def _inside(tr, lnT, lnne):
    """Layers inside the table's (T, n_e) range."""
    return ((lnT >= float(tr["lnT"][0])) & (lnT <= float(tr["lnT"][-1]))
            & (lnne >= float(tr["lnne"][0])) & (lnne <= float(tr["lnne"][-1])))


def _area_nodes(tr, dev) -> torch.Tensor:
    """The ln x nodes of the missing-area quadrature (801, uniform over the table's x grid)."""
    return torch.linspace(float(tr["lnx"][0]), float(tr["lnx"][-1]), 801, dtype=torch.float64, device=dev)


def _area_integral(Pq, u):
    """∫P dx/F₀ over x = e^u (last axis) from P at the nodes ``u``: trapezoids in ln x, the
    flat core below x₁ and the x^(−5/2) tail beyond the last x."""
    xq = torch.exp(u)
    return torch.trapezoid(Pq * xq, u, dim=-1) + Pq[..., 0] * xq[0] + Pq[..., -1] * xq[-1] / 1.5


def _missing_area(tr, lnT, lnne, F0, dev, table=None):
    """1 − ∫P dν per layer (clamped at 0): quadrature over the table's x grid with the flat
    core and the x^(−5/2) tail (see :func:`stark_profile`)."""
    u = _area_nodes(tr, dev)
    Pq = torch.exp(_ln_profile(tr, lnT, lnne, u.expand(lnT.shape[0], -1), dev, table))
    area = 2 * F0 * _area_integral(Pq, u)
    return torch.clamp(1.0 - area, min=0.0)


def _doppler_sigma_nu(tr, T):
    """Thermal Doppler width of H in Hz: σ_ν = ν₀/c √(kT/m_H), ν₀ from the table's line."""
    nu0 = C.c * RYDBERG_H_CM * (1.0 / tr["lower"]**2 - 1.0 / tr["upper"]**2)
    return nu0 / C.c * torch.sqrt(C.k_B * T / _M_H)


def stark_profile(tr: dict, T: torch.Tensor, ne: torch.Tensor, dnu: torch.Tensor,
                  normalize: bool = True, cache: dict | None = None):
    """Stehlé & Hutcheson profile P (per Hz) of transition ``tr`` at |Δν| (Hz).

    T, ne: (N,) per layer; dnu: (N, K) or (K,) → (N, K). Returns (P, inside) where
    ``inside`` (N,) marks layers inside the table's (T, n_e) range (P = 0 elsewhere).
    Differentiable in T, n_e (and Δν) through the interpolation weights.

    ``normalize``: the tabulated Doppler cores are under-resolved at low n_e (the tables
    integrate to 0.71–0.99 with this interpolation, 0.99 at n_e ≳ 10¹⁶), so the missing
    area 1 − ∫P dν (computed per layer by quadrature over the table's x grid, with the
    flat core and the x^(−5/2) tail) is restored as a thermal Doppler Gaussian of H at
    the line centre — where it was lost — which keeps gf exact without touching the wings.

    ``cache``: a dict kept by the caller for one star (the same T, n_e) across calls (e.g.
    wavelength chunks): the per-layer quantities of ``tr`` (interpolated table, missing
    area) are computed once and reused.
    """
    dev = T.device
    key = (tr["lower"], tr["upper"], bool(normalize))
    lay = cache.get(key) if cache is not None else None
    if lay is None:
        lnT, lnne = torch.log(T), torch.log(ne)
        inside = _inside(tr, lnT, lnne)
        F0 = 1.25e-9 * ne ** (2.0 / 3.0)
        table = _layer_table(tr, lnT, lnne, dev)
        lay = dict(lnT=lnT, lnne=lnne, inside=inside, F0=F0, table=table)
        if normalize:
            lay.update(missing=_missing_area(tr, lnT, lnne, F0, dev, table), s_nu=_doppler_sigma_nu(tr, T))
        if cache is not None:
            cache[key] = lay
    if dnu.dim() == 1:
        dnu = dnu.expand(T.shape[0], -1)
    lnx = torch.log(torch.clamp(dnu / lay["F0"][:, None], min=1e-300))
    P = torch.exp(_ln_profile(tr, lay["lnT"], lay["lnne"], lnx, dev, lay["table"]))
    if normalize:
        s_nu = lay["s_nu"]
        gauss = torch.exp(-0.5 * (dnu / s_nu[:, None]) ** 2) / (math.sqrt(2 * math.pi)
                                                                * s_nu[:, None])
        P = P + lay["missing"][:, None] * gauss
    return P * lay["inside"][:, None], lay["inside"]


def _interp_slope(grid: torch.Tensor, q: torch.Tensor):
    """(i, w, ∂w/∂q) of :func:`_interp_index`: the weight's slope is 1/(g₁ − g₀) inside
    the grid and 0 where the weight is clamped (as autograd has it)."""
    i, w = _interp_index(grid, q)
    g0, g1 = grid[i], grid[i + 1]
    raw = (q - g0) / (g1 - g0)
    return i, w, torch.where((raw >= 0) & (raw <= 1), 1.0 / (g1 - g0), torch.zeros_like(raw))


def _layer_table_partials(tr, lnT, lnne, dev):
    """:func:`_layer_table` (N, nx) and its partials w.r.t. ln T and ln n_e (2, N, nx):
    bilinear, so each is the table's finite difference across the cell times the weight's
    slope."""
    tab = torch.as_tensor(tr["lnP"], device=dev)
    iT, wT, sT = _interp_slope(torch.as_tensor(tr["lnT"], device=dev), lnT)
    ie, we, se = _interp_slope(torch.as_tensor(tr["lnne"], device=dev), lnne)
    c00, c01 = tab[iT, ie], tab[iT, ie + 1]
    c10, c11 = tab[iT + 1, ie], tab[iT + 1, ie + 1]
    res = 0.0
    for dT, fT in ((0, 1 - wT), (1, wT)):
        for de, fe in ((0, 1 - we), (1, we)):
            res = res + (fT * fe)[:, None] * tab[iT + dT, ie + de]
    d_lnT = sT[:, None] * ((1 - we)[:, None] * (c10 - c00) + we[:, None] * (c11 - c01))
    d_lnne = se[:, None] * ((1 - wT)[:, None] * (c01 - c00) + wT[:, None] * (c11 - c10))
    return res, torch.stack([d_lnT, d_lnne])


def _stark_layer_partials(tr, T, ne, dev):
    """Per-layer quantities of :func:`stark_profile` for ``tr`` with their partial
    derivatives w.r.t. each layer's own T and n_e, analytic (done once per star and
    transition): the (ln T, ln n_e) table is bilinear (:func:`_layer_table_partials`), and
    the missing area 1 − 2F₀ ∫P x d ln x is a fixed quadrature of exp(table) interpolated
    at fixed ln x nodes, with F₀ ∝ n_e^(2/3)."""
    lnT, lnne = torch.log(T), torch.log(ne)
    inside = _inside(tr, lnT, lnne)
    F0 = 1.25e-9 * ne ** (2.0 / 3.0)
    table, d_ln = _layer_table_partials(tr, lnT, lnne, dev)
    d_table = torch.stack([d_ln[0] / T[:, None], d_ln[1] / ne[:, None]])          # (2, N, nx)
    # the missing area, as _missing_area, with the partials of its quadrature
    u = _area_nodes(tr, dev)
    lnx_g = torch.as_tensor(tr["lnx"], device=dev)
    ix, wx = _interp_index(lnx_g, u)
    Pq = torch.exp(table[:, ix] + wx * (table[:, ix + 1] - table[:, ix]))           # (N, 801)
    I = _area_integral(Pq, u)
    area = 2 * F0 * I
    missing = torch.clamp(1.0 - area, min=0.0)
    dPq = Pq * (d_table[:, :, ix] + wx * (d_table[:, :, ix + 1] - d_table[:, :, ix]))   # (2, N, 801)
    d_area = 2 * F0 * _area_integral(dPq, u)
    d_area[1] += 2 * (2.0 / 3.0) * F0 / ne * I
    d_missing = torch.where(1.0 - area >= 0, -d_area, torch.zeros_like(d_area))
    return dict(lnT=lnT, lnne=lnne, inside=inside.to(torch.float64), F0=F0,
                lnx_g=lnx_g, ne=ne, T=T, table=table, d_table=d_table, missing=missing, d_missing=d_missing,
                s_nu=_doppler_sigma_nu(tr, T))


def stark_profile_partials(tr: dict, T: torch.Tensor, ne: torch.Tensor, dnu: torch.Tensor,
                           cache: dict | None = None):
    """:func:`stark_profile` (normalized) and its partial derivatives w.r.t. each layer's T
    (per K) and n_e (per cm⁻³): (P, ∂P/∂T, ∂P/∂n_e), each (N, K), P per Hz; T, ne (N,),
    dnu (K,) Hz. Analytic on the per-layer table and missing area (whose own partials are
    computed once per star and transition, kept in ``cache``): the interpolation in ln x is
    linear, so ∂ ln P/∂q = the interpolated ∂ table/∂q, plus the slope in ln x times
    ∂ ln x/∂ ln n_e = −2/3 (flat below x₁, −5/2 beyond the table)."""
    dev = T.device
    key = ("partials", tr["lower"], tr["upper"])
    lay = cache.get(key) if cache is not None else None
    if lay is None:
        lay = _stark_layer_partials(tr, T, ne, dev)
        if cache is not None:
            cache[key] = lay
    return call_compiled(_stark_partials_kernel, dnu, lay["lnx_g"], lay["F0"], lay["table"], lay["d_table"],
                         lay["ne"], lay["T"], lay["s_nu"], lay["missing"], lay["d_missing"], lay["inside"])


def _stark_partials_kernel(dnu, lnx_g, F0, tab, dtab, ne, T, s_nu, missing, d_missing, inside):
    """The per-point part of :func:`stark_profile_partials` (one fused kernel when compiled)."""
    last = lnx_g[-1]
    lnx = torch.log(torch.clamp(dnu[None, :] / F0[:, None], min=1e-300))     # (N, K)
    lnx_c = torch.clamp(lnx, max=last)
    ix, wx = _interp_index(lnx_g, lnx_c)
    lo, hi = torch.gather(tab, 1, ix), torch.gather(tab, 1, ix + 1)
    lnP = lo + wx * (hi - lo) - 2.5 * torch.clamp(lnx - lnx_c, min=0.0)
    # slope of ln P in ln x: inside the table the interpolation's, beyond it −5/2, below x₁ 0
    q = (lnx_c - lnx_g[ix]) / (lnx_g[ix + 1] - lnx_g[ix])
    inner = (q > 0) & (q < 1)
    slope = torch.where(inner, (hi - lo) / (lnx_g[ix + 1] - lnx_g[ix]), torch.zeros_like(lo))
    slope = torch.where(lnx > last, torch.full_like(lo, -2.5), slope)
    dlnP = []
    for v in range(2):
        dlo, dhi = torch.gather(dtab[v], 1, ix), torch.gather(dtab[v], 1, ix + 1)
        dlnP.append(dlo + wx * (dhi - dlo))
    dlnP[1] = dlnP[1] + slope * (-2.0 / 3.0 / ne[:, None])
    Ps = torch.exp(lnP)
    s_nu = s_nu[:, None]
    r2 = (dnu[None, :] / s_nu) ** 2
    gauss = torch.exp(-0.5 * r2) / (math.sqrt(2 * math.pi) * s_nu)
    m = missing[:, None]
    inside = inside[:, None]
    P = (Ps + m * gauss) * inside
    dP_T = (Ps * dlnP[0] + d_missing[0][:, None] * gauss
            + m * gauss * (r2 - 1.0) / s_nu * (s_nu / (2.0 * T[:, None]))) * inside
    dP_ne = (Ps * dlnP[1] + d_missing[1][:, None] * gauss) * inside
    return P, dP_T, dP_ne


def hummer_mihalas_w(n: int, nH: torch.Tensor, nHe: torch.Tensor, ne: torch.Tensor):
    """Occupation probability of H level n (Hummer & Mihalas 1988 eq. 4.71): neutral H and
    He perturbers (sizes √(5/2 n⁴ + n²/2) a₀ + √3 a₀, + 1.02 a₀) and singly charged ions
    (n_ion = n_e) with the quantum correction K_n (their eq. 4.24)."""
    a0 = C.a0
    r = math.sqrt(2.5 * n**4 + 0.5 * n**2) * a0
    neutral = nH * (r + math.sqrt(3.0) * a0) ** 3 + nHe * (r + 1.02 * a0) ** 3
    K = 1.0 if n <= 3 else 16 / 3 * (n / (n + 1)) ** 2 * ((n + 7 / 6) / (n**2 + n + 0.5))
    chi = C.RydbergH_eV / n**2 * C.eV
    charged = 16.0 * (C.e_charge**2 / (chi * math.sqrt(K))) ** 3 * ne
    return torch.exp(-4 * math.pi / 3 * (neutral + charged))


def _strength(lo_n, up_n, log_gf, T, ne, nH, nHe, UH, use_mhd):
    """(π e²/m_e c) gf n(H I)/U(H I) w_upper (e^(−E_lo/kT) − e^(−E_up/kT)) per layer (cm⁻¹ Hz)."""
    beta = 1.0 / (C.k_B_eV * T)
    E_lo = C.RydbergH_eV * (1 - 1 / lo_n**2)
    E_up = C.RydbergH_eV * (1 - 1 / up_n**2)
    levels = torch.exp(-beta * E_lo) - torch.exp(-beta * E_up)
    if use_mhd:
        levels = levels * hummer_mihalas_w(up_n, nH, nHe, ne)
    return C.pi_e2_over_mc * 10 ** log_gf * nH / UH * levels


def _abo_widths(lo_n, up_n, lam0, T, nH, xi):
    """Per layer: the ABO self-broadening HWHM γ (cm), u = kT/m_H + ξ²/2 (cm² s⁻²), the
    Doppler width d = √2 σ (cm), and the line's ABO velocity exponent α."""
    sig_abo, a_abo = _ABO[(lo_n, up_n)]
    vbar = torch.sqrt(8 * C.k_B * T / math.pi * (2.0 / _M_H))
    Gam = (2 * (4 / math.pi) ** (a_abo / 2) * math.gamma((4 - a_abo) / 2) * 1e6
           * sig_abo * C.a0**2 * (vbar / 1e6) ** (1 - a_abo)) * nH          # s⁻¹ FWHM
    lam0_cm = lam0 * 1e-8
    gam = Gam * lam0_cm**2 / (4 * math.pi * C.c)                            # cm HWHM
    u = C.k_B * T / _M_H + 0.5 * xi * xi
    return gam, u, math.sqrt(2.0) * lam0_cm / C.c * torch.sqrt(u), a_abo


def _abo_shape(lo_n, up_n, lam0, lam, T, nH, xi):
    """ABO self-broadening Voigt profile per Hz-normalised strength: (λ₀²/c) φ_λ (N, K)."""
    gam, _, d, _ = _abo_widths(lo_n, up_n, lam0, T, nH, xi)
    lam0_cm = lam0 * 1e-8
    H = voigt_hjerting((gam / d)[:, None], ((lam - lam0) * 1e-8)[None, :] / d[:, None])
    # same line strength per unit wavelength: (λ₀²/c) converts ∫dν to ∫dλ
    return (lam0_cm**2 / C.c / (math.sqrt(math.pi) * d))[:, None] * H


def _abo_shape_partials(lo_n, up_n, lam0, lam, T, nH, xi):
    """:func:`_abo_shape` (N, K) and its partials (3, N, K) w.r.t. each layer's T (per K),
    n(H I) (per cm⁻³) and ξ (per cm/s), analytic: with d = √2 σ, a = γ/d, v = Δλ/d,
    A = (λ₀²/c)/(√π d) H(a, v), ∂H/∂v = −2(vH − aK), ∂H/∂a = 2(vK + aH) − 2/√π (K = Im w);
    γ ∝ n_H T^((1−α)/2) (ABO), d² ∝ kT/m_H + ξ²/2."""
    from .voigt import faddeeva_xy

    gam, u, d, a_abo = _abo_widths(lo_n, up_n, lam0, T, nH, xi)
    lam0_cm = lam0 * 1e-8
    a = (gam / d)[:, None]
    v = ((lam - lam0) * 1e-8)[None, :] / d[:, None]
    a, v = torch.broadcast_tensors(a, v)
    H, Kim = faddeeva_xy(v, a)
    pref = (lam0_cm**2 / C.c / (math.sqrt(math.pi) * d))[:, None]
    A = pref * H
    H_v = -2.0 * (v * H - a * Kim)
    H_a = 2.0 * (v * Kim + a * H) - 2.0 / math.sqrt(math.pi)
    dlnd = {0: (C.k_B / _M_H) / (2 * u), 2: xi / (2 * u)}            # ∂ ln d/∂T, ∂ ln d/∂ξ
    inv_nH = torch.where(nH > 0, 1.0 / torch.where(nH > 0, nH, torch.ones_like(nH)), torch.zeros_like(nH))
    dlng = {0: (1 - a_abo) / (2 * T), 1: inv_nH}                    # ∂ ln γ/∂T, ∂ ln γ/∂n_H
    out = []
    for q in range(3):
        ld = dlnd[q][:, None] if q in dlnd else 0.0
        lg = dlng[q][:, None] if q in dlng else 0.0
        out.append(-A * ld + pref * (H_a * a * (lg - ld) - H_v * v * ld))
    return A, torch.stack(out)


def _transitions_in(wl_np, series, window, n_upper_max, n_upper_min=1):
    lowers = {_SERIES[s.lower()] for s in series}
    for tr in hydrogen_transitions():
        lo_n, up_n = tr["lower"], tr["upper"]
        if lo_n not in lowers or not n_upper_min <= up_n <= n_upper_max:
            continue
        lam0 = vacuum_wavelength(lo_n, up_n)
        i0 = int(np.searchsorted(wl_np, lam0 - window, side="left"))
        i1 = int(np.searchsorted(wl_np, lam0 + window, side="right"))
        if i1 > i0:
            yield tr, lam0, i0, i1


def has_hydrogen_lines(wl_min: float, wl_max: float, *, series=("balmer", "paschen"), window=150.0,
                       n_upper_max=30, n_upper_min=1) -> bool:
    """Whether any transition of :func:`hydrogen_line_absorption` (same keywords) reaches
    [wl_min, wl_max] (Å, vacuum): where none does, its opacity is exactly zero."""
    return any(True for _ in _transitions_in(np.array([wl_min, wl_max], dtype=np.float64), series, window,
                                             n_upper_max, n_upper_min))


def _layer_inputs(wl, atm, eos, vmic_kms):
    T = atm.T.to(torch.float64)
    batch = T.shape
    N = T.numel()
    dev = T.device
    wl_t = torch.as_tensor(wl, dtype=torch.float64, device=dev)
    wl_np = wl.detach().cpu().numpy() if torch.is_tensor(wl) else np.asarray(wl, dtype=np.float64)
    xi = torch.as_tensor(vmic_kms, dtype=torch.float64, device=dev) * 1e5
    if xi.dim() > 0 and xi.shape != batch:
        xi = xi[..., None]
    xi = xi.expand(batch).reshape(N)
    return (batch, N, wl_t, wl_np, T.reshape(N), atm.ne.to(torch.float64).reshape(N),
            eos.atoms[..., 1, 0].reshape(N), eos.atoms[..., 2, 0].reshape(N),
            eos.U[..., 1, 0].reshape(N), xi)


def hydrogen_line_absorption(wl, atm, eos, *, series=("balmer", "paschen"), vmic_kms=1.0,
                             window=150.0, use_mhd=True, n_upper_max=30, n_upper_min=1, cache=None):
    """Opacity (cm⁻¹) of the H I Balmer/Paschen lines on ``wl`` (Å, vacuum, sorted):
    shape (…, L, W). ``atm``: ``T``, ``ne`` (…, L); ``eos``: ``atoms``/``U`` (…, L, 93, 3)
    (H I = [..., 1, 0], He I = [..., 2, 0]). ``vmic_kms`` only enters the Doppler width of
    the Hα–Hγ self-broadening component (the Stark tables already include thermal
    Doppler broadening). ``window``: half width (Å) around each line centre.
    ``cache``: a dict the caller keeps for one star (same ``atm``, ``eos``) across calls on
    different wavelength chunks; per-layer quantities are then computed once per transition.
    ``n_upper_min``/``n_upper_max``: only the transitions whose upper level is in this range."""
    batch, N, wl_t, wl_np, Tf, ne, nH, nHe, UH, xi = _layer_inputs(wl, atm, eos, vmic_kms)
    W = wl_np.size
    dev = Tf.device
    out = torch.zeros(N, W, dtype=torch.float64, device=dev)
    for tr, lam0, i0, i1 in _transitions_in(wl_np, series, window, n_upper_max, n_upper_min):
        lo_n, up_n = tr["lower"], tr["upper"]
        lam = wl_t[i0:i1]
        skey = ("strength", lo_n, up_n, use_mhd)
        strength = cache.get(skey) if cache is not None else None
        if strength is None:
            strength = _strength(lo_n, up_n, tr["log_gf"], Tf, ne, nH, nHe, UH, use_mhd)   # (N,)
            if cache is not None:
                cache[skey] = strength
        nu0 = C.c / (lam0 * 1e-8)
        dnu = (C.c / (lam * 1e-8) - nu0).abs()
        P, _ = stark_profile(tr, Tf, ne, dnu, cache=cache)
        if (lo_n, up_n) in _ABO:
            P = P + _abo_shape(lo_n, up_n, lam0, lam, Tf, nH, xi)
        out = out.index_add(1, torch.arange(i0, i1, device=dev), strength[:, None] * P)
    return out.reshape(batch + (W,))


#: Order of the layer quantities in :func:`hydrogen_line_partials`.
PARTIAL_VARS = ("T", "ne", "nH", "nHe", "UH", "xi")


def _diag_partials(f, prim, which):
    """Partial derivatives of f (per-layer function of per-layer inputs ``prim``) w.r.t. the
    inputs listed in ``which``, each layer w.r.t. its own value: one all-ones tangent per
    input, vectorised (torch.func). Returns (len(which), *out.shape)."""
    n = len(prim)
    tans = []
    for i in range(n):
        rows = [torch.ones_like(prim[i]) if j == i else torch.zeros_like(prim[i]) for j in which]
        tans.append(torch.stack(rows))
    return torch.func.vmap(lambda *t: torch.func.jvp(f, prim, t)[1])(*tans)


def hydrogen_line_partials(wl, T, ne, nH, nHe, UH, vmic_kms, *, series=("balmer", "paschen"),
                           window=150.0, use_mhd=True, n_upper_max=30, n_upper_min=1, cache=None):
    """α_H (L, W) as :func:`hydrogen_line_absorption` for one star (layer quantities (L,)
    tensors: T, n_e, n(H I), n(He I), U(H I), ξ in km/s) and its partial derivatives
    (6, L, W) w.r.t. each layer's own quantities in the order of :data:`PARTIAL_VARS` (α_H
    of a layer depends only on that layer's quantities, so these are the whole Jacobian).

    Structured for speed: α = s(T, n_e, n_H, n_He, U) · [P(T, n_e) + A(T, n_H, ξ)]; the
    expensive Stark profile P is differentiated w.r.t. T and n_e only, the strength s
    (per layer) w.r.t. its five inputs, the ABO part A (Hα–Hγ) w.r.t. its three, all by
    forward-mode AD; then combined by the product rule."""
    T, ne, nH, nHe, UH = (torch.as_tensor(x, dtype=torch.float64).contiguous() for x in (T, ne, nH, nHe, UH))
    dev = T.device
    N = T.numel()
    xi = (torch.as_tensor(vmic_kms, dtype=torch.float64, device=dev) * 1e5).expand(N).contiguous()
    wl_np = wl.detach().cpu().numpy() if torch.is_tensor(wl) else np.asarray(wl, dtype=np.float64)
    wl_t = torch.as_tensor(wl_np, dtype=torch.float64, device=dev)
    W = wl_np.size
    out = torch.zeros(N, W, dtype=torch.float64, device=dev)
    dout = torch.zeros(6, N, W, dtype=torch.float64, device=dev)
    for tr, lam0, i0, i1 in _transitions_in(wl_np, series, window, n_upper_max, n_upper_min):
        lo_n, up_n = tr["lower"], tr["upper"]
        lam = wl_t[i0:i1]
        nu0 = C.c / (lam0 * 1e-8)
        dnu = (C.c / (lam * 1e-8) - nu0).abs()

        def f_s(T_, ne_, nH_, nHe_, UH_):
            return _strength(lo_n, up_n, tr["log_gf"], T_, ne_, nH_, nHe_, UH_, use_mhd)

        skey = ("strength_partials", lo_n, up_n, use_mhd)
        if cache is not None and skey in cache:
            s, ds = cache[skey]
        else:
            with torch.no_grad():
                s = f_s(T, ne, nH, nHe, UH)
            ds = _diag_partials(f_s, (T, ne, nH, nHe, UH), range(5))        # (5, N)
            if cache is not None:
                cache[skey] = (s, ds)
        P, dP_T, dP_ne = stark_profile_partials(tr, T, ne, dnu, cache)      # (N, K) each
        dP = (dP_T, dP_ne)
        shape_ = P
        d_shape = {0: dP[0], 1: dP[1]}
        if (lo_n, up_n) in _ABO:
            A, dA = call_compiled(_abo_shape_partials, lo_n, up_n, lam0, lam, T, nH, xi)     # (N, K), (3, N, K)
            shape_ = P + A
            d_shape = {0: dP[0] + dA[0], 1: dP[1], 2: dA[1], 5: dA[2] * 1e5}
        out[:, i0:i1] += s[:, None] * shape_
        for v in range(6):
            term = ds[v][:, None] * shape_ if v < 5 else 0.0
            if v in d_shape:
                term = term + s[:, None] * d_shape[v]
            if torch.is_tensor(term):
                dout[v, :, i0:i1] += term
    return out, dout
