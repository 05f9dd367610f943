"""Line absorption coefficient of atomic and molecular lines (LTE), in cm⁻¹.

For each line i and layer, the wavelength-integrated absorption coefficient is

    A_i = (π e²/(m_e c)) · gf · (λ²/c) · (n_s/U_s) · exp(−E_low/kT) · (1 − exp(−hc/λkT))

(cm⁻¹ · cm: the classical cross-section πe²/(m_e c) [cm² s⁻¹] integrated over frequency,
converted to wavelength with |dν/dλ| = c/λ²; n_s/U_s · g_low exp(−E_low/kT) is the
Boltzmann population of the lower level, the g_low being inside gf; the last factor is
stimulated emission). The opacity is α(λ) = A_i φ(λ − λ_i) with φ an area-normalised
Voigt profile in wavelength (cm⁻¹):

- Gaussian σ = (λ/c) √(kT/m + ξ²/2) (thermal, with the absorber mass from the line list,
  plus microturbulence ξ), i.e. Doppler width Δλ_D = √2 σ;
- Lorentzian HWHM γ_λ = Γ λ²/(4π c), Γ (angular FWHM, s⁻¹) = Γ_rad + Γ_Stark + Γ_vdW:
  * Γ_rad from the line list, else the classical value 0.2223/λ²[cm] = 2.223e15/λ²[Å] s⁻¹
    (Gray 2005, *The Observation and Analysis of Stellar Photospheres*, eq. 11.19; what
    SME uses for gamrad = 0);
  * Γ_Stark = γ₄ n_e (T/10⁴ K)^(1/6), γ₄ from the line list (per electron at 10⁴ K),
    else Cowley (1971, Observatory 91, 139) eq. 5/6 at 10⁴ K with n*⁴ of the upper level
    as Korg.jl does (``approximate_gammas``): γ₄ = 2.259e−7 n*⁴ (neutrals),
    5.422e−7 n*⁴/(Z+1)² (ions, Z = ionisation stage); none for molecules;
  * Γ_vdW: ABO theory (Anstee & O'Mara 1995, MNRAS 276, 859; Barklem, Piskunov &
    O'Mara 2000, A&AS 142, 467) when ``abo_sigma`` is given:
    Γ = 2 (4/π)^(α/2) Γ((4−α)/2) v₀ σ (v̄/v₀)^(1−α) n_H, v₀ = 10⁴ m/s,
    v̄ = √(8kT/π · (1/m_H + 1/m)); else 10^(log γ₆) (T/10⁴)^0.3 n_H from the line list;
    else the Unsöld (1955) approximation in the form of Rutten's notes/Gray (2005)
    eq. 11.29–30 as in Korg.jl: log γ₆ = 6.33 + 0.4 log Δr̄² + 0.3 log 10⁴ + log k,
    Δr̄² = 5/2 R² Z² [(χ − E_up)⁻² − (χ − E_low)⁻²] (a₀², energies in eV), multiplied by
    ``vdw_enhancement`` (default 1: SME's and Korg's default; classical practice uses
    ~1.5–2.5 for Fe I). Autoionising lines (E_up > χ) get no approximate Stark/vdW.
    Molecules: ``molecule_log_gamma6`` (default −7.5, a typical Unsöld value; there is
    no general theory, and it only matters for saturated molecular lines).

Speed (the hot path of a full-spectrum synthesis)
-------------------------------------------------
0. *Screening*: an upper bound of peak/continuum per line from per-(species, E_low bin)
   tables (O(lines), numpy) discards lines that cannot pass the selection below — for a
   solar model most of the 1.6 M TiO lines of the default list — before anything of size
   lines × layers is formed. The bound is exact (never drops a line the selection keeps).
1. *Selection*: a line is kept if its Doppler peak A/(√(2π)σ) reaches ``threshold``
   (default 1e−4) × the continuum opacity at its centre in at least one layer of one
   star. The continuum comes from ``alpha_cont`` (…,L,W) when given, else from a coarse
   lower-bound estimate (H⁻ bound-free with σ = 3e−17 cm², Thomson, and the H I n = 3
   continuum), which keeps more lines, never fewer.
2. *Windows* (Korg.jl style): the profile is evaluated out to where the Doppler core or
   the Lorentz wing drops below ``cutoff`` (default 3e−4) × continuum, combined in
   quadrature, maximised over layers, at least two Doppler widths, at most
   ``max_window`` Å.
3. *Segments and chunks*: each window is split into its core (|Δλ| < 6 Doppler widths of
   the broadest layer, where the full Weideman evaluation is needed) and two wings (where
   |v| ≥ 6 in every layer and the cheap continued fraction is exact to 1e−5). Segments
   are sorted by length (grid points) and processed in chunks whose
   (segments × points × stars·layers) stays below ``chunk_elements``; each chunk gathers
   its wavelengths with an index tensor and scatters with ``index_put_(accumulate=True)``
   into an (W, N) accumulator (N = stars × layers): memory is bounded and no Python loop
   runs over individual lines.
4. *Kernel*: a chunk is one custom autograd function that adds its profiles in place
   and differentiates analytically w.r.t. (A, σ, γ), in reverse mode (``backward``) and
   forward mode (``jvp``, for ``torch.autograd.forward_ad``); it keeps only the
   per-(line, layer) parameters and (start, length) per segment.
5. *Many tangents at once*: :func:`contract_line_tangents` evaluates Σ_layers G·dα for K
   tangents of the layer quantities with one evaluation of the profiles and their
   partials (used by ``Synthesizer.differential_spectra``). The elementwise
   kernels are fused with ``torch.compile`` when a C++ compiler is available (≈10–70×
   faster than eager on CPU; first compilation ~30 s, then cached on disk by inductor);
   set ``PHDLSPEC_COMPILE=0`` or ``compile=False`` to stay eager.

Measured (``benchmarks/bench_line_opacity.py --ges``, 2 CPU threads, Gaia-ESO v6 list,
104 296 lines 4200–9200 Å, 80 layers, crude solar-like stratification): 63 402 lines
kept; 5·10⁵ points: forward 3.7 s, backward 8.7 s, peak RSS 2.35 GB; 10⁵ points:
1.3 s / 2.1 s / 1.8 GB.

Hydrogen lines are computed by ``hydrogen_lines.py``; H I lines in a LineList are
ignored here.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from . import constants as C
from .autodiff import carries_derivative, compiled, run_compiled, want_compile
from .voigt import R_SWITCH, faddeeva_cf, faddeeva_xy

__all__ = ["line_absorption", "classical_gamma_rad", "approximate_gammas", "prepare_lines",
           "prepared_window", "contract_line_tangents", "molecule_names",
           "coarse_continuum", "LineStats"]

_SQRT2 = math.sqrt(2.0)
_SQRT_PI = math.sqrt(math.pi)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_HC_EV_A = C.h * C.c / C.eV * 1e8          # hc in eV Å (12398.42)
_AMU_H = 1.00794 * C.amu                    # mass of the H perturber for ABO (g)
_LN_TINY = -700.0                           # "log of zero" that stays finite


@dataclass
class LineStats:
    """What :func:`line_absorption` did (``return_stats=True``)."""
    n_input: int
    n_supported: int
    n_selected: int
    n_chunks: int
    n_points: int          # line × wavelength evaluations (per layer)
    compiled: bool
    n_screened: int = -1   # lines passing the cheap screening bound (−1: not run)


# ---------------------------------------------------------------------------------------
# broadening approximations (numpy, per line)
# ---------------------------------------------------------------------------------------
def classical_gamma_rad(wl_A) -> np.ndarray:
    """Classical radiative damping Γ = 8π²e²/(3 m_e c λ²) = 2.223e15/λ²[Å] s⁻¹ (Gray 2005)."""
    return 8 * math.pi**2 * C.e_charge**2 / (3 * C.m_e * C.c) / (np.asarray(wl_A) * 1e-8)**2


def approximate_gammas(wl_A, Z, charge, E_lower, chi=None):
    """Cowley (1971) Stark γ₄ (s⁻¹ per electron at 10⁴ K) and Unsöld log10 γ₆ (s⁻¹ per H
    atom at 10⁴ K) for atomic lines, as in Korg.jl's ``approximate_gammas``.

    ``chi``: ionisation energy (eV) of each line's species; default from
    ``atomic_data.ionization_energies()``. Returns (γ₄, log γ₆); γ₄ = 0 and
    log γ₆ = −inf for autoionising lines (E_up ≥ χ) and stages above III.
    """
    wl_A = np.asarray(wl_A, float)
    Z = np.asarray(Z, int)
    charge = np.asarray(charge, int)
    E_lower = np.asarray(E_lower, float)
    if chi is None:
        from .atomic_data import ionization_energies
        table = ionization_energies()
        ok = (Z >= 1) & (Z < table.shape[0]) & (charge >= 0) & (charge <= 2)
        chi = np.full(wl_A.shape, np.nan)
        chi[ok] = table[Z[ok], charge[ok]]
    chi = np.asarray(chi, float)
    stage = charge + 1.0
    E_up = E_lower + _HC_EV_A / wl_A
    bound = np.isfinite(chi) & (chi > E_up)
    with np.errstate(divide="ignore", invalid="ignore"):
        nstar4 = (stage**2 * C.RydbergH_eV / (chi - E_up))**2
        g4 = np.where(stage == 1, 2.25910152e-7 * nstar4, 5.42184365e-7 * nstar4 / (stage + 1)**2)
        dr2 = 2.5 * C.RydbergH_eV**2 * stage**2 * (1 / (chi - E_up)**2 - 1 / (chi - E_lower)**2)
        lg6 = 6.33 + 0.4 * np.log10(dr2) + 0.3 * 4.0 + np.log10(C.k_B)
    return np.where(bound, g4, 0.0), np.where(bound & (dr2 > 0), lg6, -np.inf)


# ---------------------------------------------------------------------------------------
# static per-line data
# ---------------------------------------------------------------------------------------
@dataclass
class _Static:
    idx: np.ndarray         # index into the input line list
    wl: np.ndarray          # Å
    gf: np.ndarray
    E_low: np.ndarray       # eV
    mass: np.ndarray        # g
    gamma_rad: np.ndarray   # s⁻¹
    ln_g4: np.ndarray       # ln γ₄ at 10⁴ K (−700 when none)
    ln_c6: np.ndarray       # Γ₆/n_H = exp(ln_c6 + p6 ln T)
    p6: np.ndarray
    sidx: np.ndarray        # column of the species in the n/U table

    def take(self, sel):
        return _Static(*(getattr(self, f)[sel] for f in self.__dataclass_fields__))


def _prepare(linelist, mol_names, vdw_enhancement, molecule_log_gamma6):
    wl = np.asarray(linelist.wavelength, float)
    n_in = wl.size
    Z = np.asarray(linelist.Z, int)
    charge = np.asarray(linelist.charge, int)
    species = np.asarray(linelist.species).astype(str)
    is_mol = Z == 0
    mol_col = {name: 279 + i for i, name in enumerate(mol_names)}
    sidx = np.full(n_in, -1)
    atom_ok = (~is_mol) & (Z >= 2) & (Z <= 92) & (charge >= 0) & (charge <= 2)
    sidx[atom_ok] = Z[atom_ok] * 3 + charge[atom_ok]
    for name, col in mol_col.items():
        sidx[is_mol & (species == name)] = col
    n_missing_mol = int((is_mol & (sidx < 0)).sum())
    if n_missing_mol:
        names = sorted(set(species[is_mol & (sidx < 0)]))
        warnings.warn(f"line_absorption: {n_missing_mol} molecular lines of {names} ignored "
                      "(no number density from the EOS)", stacklevel=3)
    keep = np.nonzero(sidx >= 0)[0]

    wl_k = wl[keep]
    E_low = np.asarray(linelist.E_lower, float)[keep]
    Zk, ck, molk = Z[keep], charge[keep], is_mol[keep]
    g_rad = np.asarray(linelist.gamma_rad, float)[keep]
    g_rad = np.where(np.isnan(g_rad), classical_gamma_rad(wl_k), g_rad)

    g4 = np.asarray(linelist.gamma_stark, float)[keep]
    lg6 = np.asarray(linelist.vdw_log_gamma6, float)[keep]
    sig = np.asarray(linelist.abo_sigma, float)[keep]
    alp = np.asarray(linelist.abo_alpha, float)[keep]
    mass = np.asarray(linelist.mass, float)[keep] * C.amu

    # NaN = missing (use an approximation); an explicit 0 (γ) or −inf (log γ₆) = none
    need = (~molk) & (np.isnan(g4) | (np.isnan(lg6) & np.isnan(sig)))
    if need.any():
        g4_app, lg6_app = approximate_gammas(wl_k[need], Zk[need], ck[need], E_low[need])
        g4_fill = np.zeros_like(g4)
        g4_fill[need] = g4_app
        g4 = np.where(np.isnan(g4), g4_fill, g4)
        lg6_unsold = np.full_like(lg6, -np.inf)
        lg6_unsold[need] = (lg6_app + math.log10(vdw_enhancement) if vdw_enhancement > 0
                            else -np.inf)
        lg6 = np.where(np.isnan(lg6) & np.isnan(sig), lg6_unsold, lg6)
    g4 = np.where(molk | np.isnan(g4), 0.0, g4)
    if molecule_log_gamma6 is None:
        lg6 = np.where(molk & np.isnan(lg6), -np.inf, lg6)
    else:
        lg6 = np.where(molk & np.isnan(lg6), molecule_log_gamma6, lg6)

    with np.errstate(divide="ignore"):
        ln_g4 = np.where(g4 > 0, np.log(np.where(g4 > 0, g4, 1.0)) - math.log(1e4) / 6, _LN_TINY)
    # van der Waals, Γ₆/n_H = exp(ln_c6 + p6 ln T)
    abo = np.isfinite(sig) & np.isfinite(alp)
    alp_s = np.where(abo, alp, 0.0)
    v0 = 1e6
    inv_mu = 1.0 / _AMU_H + 1.0 / mass
    from scipy.special import gammaln
    ln_c_abo = (math.log(2.0) + 0.5 * alp_s * math.log(4 / math.pi) + gammaln((4 - alp_s) / 2)
                + math.log(v0) + np.log(np.where(abo, sig, 1.0) * C.a0**2)
                + (1 - alp_s) * (0.5 * np.log(8 * C.k_B / math.pi * inv_mu) - math.log(v0)))
    ln_c_lg = np.where(np.isfinite(lg6), lg6, 0.0) * math.log(10) - 0.3 * math.log(1e4)
    ln_c6 = np.where(abo, ln_c_abo, np.where(np.isfinite(lg6), ln_c_lg, _LN_TINY))
    p6 = np.where(abo, 0.5 * (1 - alp_s), 0.3)

    st = _Static(keep, wl_k, 10.0 ** np.asarray(linelist.log_gf, float)[keep], E_low, mass,
                 g_rad, ln_g4, ln_c6, p6, sidx[keep])
    return st, n_in


# ---------------------------------------------------------------------------------------
# per-(line, layer) parameters (torch, differentiable)
# ---------------------------------------------------------------------------------------
def _param_expr(wl, gf, E_low, mass, gamma_rad, ln_g4, ln_c6, p6, nU, T, lnT, beta, ne, nH, xi2):
    """amp (cm⁻¹·cm), σ (Å), γ (Å, HWHM) from per-line columns (M, 1), the n/U of each
    line's species per layer nU (M, N) and the layer rows (1, N). Plain elementwise
    arithmetic: shared by :func:`_params` (differentiable) and the compiled selection."""
    dE = _HC_EV_A / wl
    boltz = torch.exp(-beta * E_low) * (-torch.expm1(-beta * dE))
    amp = (C.pi_e2_over_mc * gf * (wl * 1e-8) ** 2 / C.c) * nU * boltz
    sigma = wl / C.c * torch.sqrt(C.k_B * T / mass + 0.5 * xi2)
    Gam = (gamma_rad
           + ne * torch.exp(ln_g4 + lnT / 6.0)
           + nH * torch.exp(ln_c6 + p6 * lnT))
    gamma = Gam * (wl * wl * 1e-8) / (4 * math.pi * C.c)
    return amp, sigma, gamma


_STATIC_COLS = ("wl", "gf", "E_low", "mass", "gamma_rad", "ln_g4", "ln_c6", "p6")


def _param_kernel(wl, gf, E_low, mass, gamma_rad, ln_g4, ln_c6, p6, sidx, nU, T, lnT, beta,
                  ne, nH, xi2):
    """:func:`_param_expr` with the n/U gather fused in (the compiled no-derivative path)."""
    return _param_expr(wl, gf, E_low, mass, gamma_rad, ln_g4, ln_c6, p6, nU[:, sidx].T, T, lnT,
                       beta, ne, nH, xi2)


def _params(st: _Static, lay: dict, dev, use_compile: bool = False):
    """amp (cm⁻¹·cm), σ (Å), γ (Å, HWHM) as (M, N) tensors for the lines of ``st``.
    ``use_compile``: when no layer quantity carries a derivative, evaluate them in one
    fused compiled kernel (the eager expression makes ~20 passes over (M, N) float64
    arrays: ~20 % of a cool star's synthesis, where TiO selects ~10⁵ lines a chunk)."""
    t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=dev)[:, None]  # noqa: E731
    if use_compile and not carries_derivative(*lay.values()):
        with torch.no_grad():
            return _run("par", True, *(t(getattr(st, f)) for f in _STATIC_COLS),
                        torch.as_tensor(st.sidx, device=dev), lay["nU"], lay["T"], lay["lnT"],
                        lay["beta"], lay["ne"], lay["nH"], lay["xi2"])
    nU = lay["nU"][:, torch.as_tensor(st.sidx, device=dev)].T          # (M, N)
    return _param_expr(*(t(getattr(st, f)) for f in _STATIC_COLS), nU, lay["T"], lay["lnT"],
                       lay["beta"], lay["ne"], lay["nH"], lay["xi2"])


def _select_kernel(wl, gf, E_low, mass, gamma_rad, ln_g4, ln_c6, p6, sidx, j, nU, ac, T, lnT,
                   beta, ne, nH, xi2, threshold: float, cutoff: float, max_window: float):
    """Selection and half windows of M lines (see :func:`_make_plan`), fused: per-line
    columns (M, 1), ``sidx``/``j`` (M,) species column and grid index of the line centre,
    nU (N, S), ac (N, W) continuum, layer rows (1, N). Returns (ok (M,) bool,
    half window (M,) Å, max σ (M,) Å); nothing of size (M, N) is kept."""
    amp, sigma, gamma = _param_expr(wl, gf, E_low, mass, gamma_rad, ln_g4, ln_c6, p6,
                                    nU[:, sidx].T, T, lnT, beta, ne, nH, xi2)
    a_c = ac[:, j].T                                         # (M, N)
    amp_a = amp * 1e8                                        # per Å of profile
    peak = amp_a / (_SQRT_2PI * sigma)
    ok = (peak >= threshold * a_c).any(dim=1)
    rho = cutoff * a_c / torch.clamp(amp_a, min=1e-300)      # critical profile value (Å⁻¹)
    x = _SQRT_2PI * sigma * rho
    dop = torch.where(x < 1, sigma * torch.sqrt(-2 * torch.log(torch.clamp(x, max=1.0))),
                      torch.zeros_like(x))
    y = math.pi * gamma * rho
    lor = torch.where(y < 1, torch.sqrt(torch.clamp(gamma / (math.pi * rho) - gamma**2, min=0.0)),
                      torch.zeros_like(y))
    smax = sigma.amax(dim=1)
    w = torch.sqrt(dop**2 + lor**2).amax(dim=1)
    w = torch.maximum(w, 2 * _SQRT2 * smax)
    w = torch.where(ok, torch.clamp(w, max=max_window), torch.zeros_like(w))
    return ok, w, smax


def coarse_continuum(T, ne, nH) -> torch.Tensor:
    """A crude lower bound of the continuum opacity (cm⁻¹), used only to select lines
    when no ``alpha_cont`` is given: H⁻ bound-free (Saha with χ = 0.754 eV and a
    3e−17 cm² cross-section, below its 4e−17 maximum), Thomson scattering, and H I
    n = 3 photoionisation with 1e−17 cm² (Paschen continuum)."""
    kT = C.k_B * T
    lam3 = (C.h**2 / (2 * math.pi * C.m_e * kT)) ** 1.5
    n_hminus = 0.25 * nH * ne * lam3 * torch.exp(0.754 * C.eV / kT)
    n3 = nH * 9.0 * torch.exp(-C.RydbergH_eV * (1 - 1 / 9) * C.eV / kT)
    return 3e-17 * n_hminus + C.sigma_thomson * ne + 1e-17 * n3


# ---------------------------------------------------------------------------------------
# chunk kernels
# ---------------------------------------------------------------------------------------
_C0 = 1e8 / _SQRT_PI        # profile per Å → per cm, with the 1/√π of H(a, v)


def _fwd_kernel(dl, mask, amp, sigma, gamma, wing: bool, f32: bool = False):
    """dl, mask: (B, K, 1) Å; amp, σ, γ: (B, 1, N) → α (B, K, N) in cm⁻¹.
    ``wing``: every point has |v| ≥ 6, so the continued fraction alone is exact enough.
    ``f32``: the Faddeeva function of (v, a) in float32 (v, a formed and the result scaled
    in float64): ≈2× faster; each profile value within 2e−6 of the line's peak (Weideman's
    real part cancels where H ≪ 1 near |z| = 6) and within 1e−3 relative wherever it
    exceeds 1e−4 of the peak (tests/test_line_absorption.py)."""
    inv_d = 1.0 / (_SQRT2 * sigma)
    v, a = dl * inv_d, gamma * inv_d
    if f32:
        v, a = v.to(torch.float32), a.to(torch.float32)
    wr, _ = (faddeeva_cf if wing else faddeeva_xy)(v, a)
    return wr.to(amp.dtype) * (amp * inv_d * _C0) * mask


def _partials(dl, mask, amp, sigma, gamma, wing: bool):
    """∂α/∂amp, ∂α/∂σ, ∂α/∂γ (B, K, N) from w′(z) = −2zw + 2i/√π."""
    inv_d = 1.0 / (_SQRT2 * sigma)
    v = dl * inv_d
    a = gamma * inv_d
    wr, wi = (faddeeva_cf if wing else faddeeva_xy)(v, a)
    h_v = -2.0 * (v * wr - a * wi)
    h_a = 2.0 * (v * wi + a * wr) - 2.0 / _SQRT_PI
    s = mask * (_C0 * inv_d)
    c = s * amp * inv_d
    return s * wr, -(c * _SQRT2) * (wr + v * h_v + a * h_a), c * h_a


def _bwd_kernel(g, dl, mask, amp, sigma, gamma, wing: bool):
    p_amp, p_sig, p_gam = _partials(dl, mask, amp, sigma, gamma, wing)
    return ((g * p_amp).sum(1, keepdim=True), (g * p_sig).sum(1, keepdim=True),
            (g * p_gam).sum(1, keepdim=True))


def _jvp_kernel(dl, mask, amp, sigma, gamma, d_amp, d_sigma, d_gamma, wing: bool):
    """Tangent of α (B, K, N) for tangents of amp, σ, γ (B, 1, N) (plain tensors)."""
    p_amp, p_sig, p_gam = _partials(dl, mask, amp, sigma, gamma, wing)
    return p_amp * d_amp + p_sig * d_sigma + p_gam * d_gamma


def _contract_kernel(G, idx, dl, mask, amp, sigma, gamma, Q, wing: bool):
    """g · α and g · Σ_c (∂α/∂c)(∂c/∂v) for v = T, n_e, n_H of :data:`_LAYER_VARS`, each
    (B, K, N), and the ξ² term (B, K) summed over the layers — the caller's ξ² tangent is
    the same in every layer (one microturbulence per star), and writing it per layer was a
    fifth of the kernel's output traffic. Q (B, 1, 6, N): the partials of c = (amp, σ, γ)
    w.r.t. the layer quantities that can be non-zero, in the order of :data:`_Q_ORDER` (the
    amplitude depends on T alone, σ on T and ξ², γ on T, n_e and n_H; the zeros are
    asserted in tests/test_line_absorption.py). g = G[idx] (the gather is fused into the
    kernel). Separate outputs rather than one stacked tensor: a stack makes the compiler
    store the Faddeeva intermediates (14 % slower)."""
    g = G[idx]
    p_amp, p_sig, p_gam = _partials(dl, mask, amp, sigma, gamma, wing)
    return (g * (p_amp * amp), g * (p_amp * Q[:, :, 0] + p_sig * Q[:, :, 1] + p_gam * Q[:, :, 2]),
            g * (p_gam * Q[:, :, 3]), g * (p_gam * Q[:, :, 4]), (g * (p_sig * Q[:, :, 5])).sum(-1))


#: the (c, v) partials ∂c/∂v of the line parameters c = (amp, σ, γ) with respect to the
#: layer quantities v of :data:`_LAYER_VARS` = (T, n_e, n_H, ξ²) that can be non-zero, in
#: the order :func:`_contract_kernel` takes them
_Q_ORDER = ((0, 0), (1, 0), (2, 0), (2, 1), (2, 2), (1, 3))
_Q_NONZERO = set(_Q_ORDER)


_EAGER = {"fwd": _fwd_kernel, "bwd": _bwd_kernel, "jvp": _jvp_kernel, "con": _contract_kernel,
          "sel": _select_kernel, "par": _param_kernel}


def _kernel(name: str, use_compile: bool):
    """The kernel ``name``, compiled (``autodiff.compiled``: once per process, dynamic
    shapes) when ``use_compile`` and compilation is not switched off."""
    return compiled(_EAGER[name]) if use_compile else _EAGER[name]


def _run(name: str, use_compile: bool, *args):
    """Kernel ``name`` on ``args`` (``autodiff.run_compiled``)."""
    return run_compiled(_EAGER[name], use_compile, *args)


class _VoigtChunkAdd(torch.autograd.Function):
    """acc[idx] += profile(amp, σ, γ) in place; saves only per-(line, layer) parameters
    and per-segment (start, length) — the chunk-sized offsets, masks and indices are
    rebuilt in ``backward`` (reverse mode) and ``jvp`` (forward mode)."""

    @staticmethod
    def forward(acc, amp, sigma, gamma, wl, wl0, lo, cnt, kmax, use_compile, wing, f32=False):
        idx, dl, mask = _segment_geometry(wl, wl0, lo, cnt, kmax)
        vals = _run("fwd", use_compile, dl, mask, amp, sigma, gamma, wing, f32)
        acc.index_add_(0, idx.reshape(-1), vals.reshape(-1, acc.shape[1]))
        return acc

    @staticmethod
    def setup_context(ctx, inputs, output):
        acc, amp, sigma, gamma, wl, wl0, lo, cnt, kmax, use_compile, wing = inputs[:11]
        ctx.mark_dirty(acc)
        ctx.save_for_backward(amp, sigma, gamma, wl, wl0, lo, cnt)
        ctx.save_for_forward(amp, sigma, gamma, wl, wl0, lo, cnt)
        ctx.kmax, ctx.use_compile, ctx.wing = kmax, use_compile, wing
        ctx.acc_shape = acc.shape

    @staticmethod
    def backward(ctx, g_acc):
        amp, sigma, gamma, wl, wl0, lo, cnt = ctx.saved_tensors
        idx, dl, mask = _segment_geometry(wl, wl0, lo, cnt, ctx.kmax)
        g = g_acc[idx]                                                  # (B, K, N)
        g_amp, g_sigma, g_gamma = _run("bwd", ctx.use_compile, g, dl, mask, amp, sigma, gamma,
                                       ctx.wing)
        return g_acc, g_amp, g_sigma, g_gamma, None, None, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, d_acc, d_amp, d_sigma, d_gamma, *_):
        amp, sigma, gamma, wl, wl0, lo, cnt = ctx.saved_tensors
        if d_acc is None:
            d_acc = torch.zeros(ctx.acc_shape, dtype=amp.dtype, device=amp.device)
        if d_amp is None and d_sigma is None and d_gamma is None:
            return d_acc
        z = torch.zeros_like(amp)
        idx, dl, mask = _segment_geometry(wl, wl0, lo, cnt, ctx.kmax)
        vals = _run("jvp", ctx.use_compile, dl, mask, amp, sigma, gamma,
                    z if d_amp is None else d_amp, z if d_sigma is None else d_sigma,
                    z if d_gamma is None else d_gamma, ctx.wing)
        d_acc.index_put_((idx.reshape(-1),), vals.reshape(-1, d_acc.shape[1]), accumulate=True)
        return d_acc


def _segment_geometry(wl, wl0, lo, cnt, kmax):
    """Indices (B, K) into the grid, offsets dl (B, K, 1) in Å and mask (B, K, 1)."""
    W = wl.numel()
    ar = torch.arange(kmax, device=wl.device)
    mask = ar[None, :] < cnt[:, None]
    idx = (lo[:, None] + ar[None, :]).clamp_(0, W - 1)
    dl = (wl[idx] - wl0[:, None])[..., None]
    return idx, dl, mask.to(wl.dtype)[..., None]


# ---------------------------------------------------------------------------------------
# per-star layer quantities, line selection and the evaluation plan
# ---------------------------------------------------------------------------------------
def _layers(atm, eos, vmic_kms, mol_names):
    T = atm.T
    batch = T.shape
    N = T.numel()
    dev = T.device
    Tf = T.reshape(1, N).to(torch.float64)
    ne = atm.ne.reshape(1, N).to(torch.float64)
    atoms = eos.atoms.reshape(N, -1)
    U = eos.U.reshape(N, -1)
    nH = atoms[:, 3].reshape(1, N)            # atoms[..., 1, 0]: H I
    cols = [atoms / U]
    for name in mol_names:
        cols.append((eos.molecules[name] / eos.mol_U[name]).reshape(N, 1))
    nU = torch.cat(cols, dim=1)               # (N, 279 + n_mol)
    v = torch.as_tensor(vmic_kms, dtype=torch.float64, device=dev)
    if v.dim() > 0 and v.shape != T.shape:    # one value per star: broadcast over layers
        v = v[..., None]
    xi = (v * 1e5).expand(batch).reshape(1, N)
    return dict(T=Tf, lnT=torch.log(Tf), beta=1.0 / (C.k_B_eV * Tf), ne=ne, nH=nH, nU=nU,
                xi2=xi * xi), batch, N


def molecule_names(eos) -> list[str]:
    """Molecules of ``eos`` with both a density and a partition function (the order
    defines the species columns of the line-opacity tables)."""
    names = sorted(getattr(eos, "molecules", {}) or {})
    return [m for m in names if m in (getattr(eos, "mol_U", {}) or {})]


def prepare_lines(linelist, mol_names, vdw_enhancement=1.0, molecule_log_gamma6=-7.5):
    """Per-line static data (numpy) of ``linelist`` for :func:`line_absorption`'s
    ``prepared=`` argument: prepare a long list once, then slice it per wavelength chunk
    with :func:`prepared_window`. Returns an opaque object."""
    st, n_in = _prepare(linelist, list(mol_names), vdw_enhancement, molecule_log_gamma6)
    return st


def prepared_window(st: _Static, wl_min: float, wl_max: float) -> _Static:
    """The lines of a prepared list with wl_min ≤ λ ≤ wl_max (the list is sorted)."""
    i0 = np.searchsorted(st.wl, wl_min, side="left")
    i1 = np.searchsorted(st.wl, wl_max, side="right")
    return st.take(slice(i0, i1))


_E_STEP = 0.1     # eV, energy bins of the screening bound
_N_E = 320        # bins: 0 … 32 eV


def _bound_keep(st: _Static, lay0: dict, ac_min: torch.Tensor, threshold: float) -> np.ndarray:
    """Cheap screening: an upper bound of max over layers of peak/continuum for every line,
    from per-(species, E_low bin) tables (exact bound: the stimulated-emission factor ≤ 1,
    the Doppler width is bounded below with the heaviest mass of the species, the
    continuum by its minimum over the chunk, exp(−E/kT) by its value at the bin's lower
    edge). Lines below ``threshold`` can never be selected; skipping them keeps the
    1.6 M TiO lines (and most weak molecular lines) of the default list off the (lines ×
    layers) selection for warm stars."""
    if st.wl.size == 0:
        return np.zeros(0, bool)
    if not threshold > 0:
        return np.ones(st.wl.size, bool)
    dev = ac_min.device
    cols, inv = np.unique(st.sidx, return_inverse=True)
    m_max = np.zeros(cols.size)
    np.maximum.at(m_max, inv, st.mass)
    T = lay0["T"][0]
    su = torch.sqrt(C.k_B * T[None, :] / torch.as_tensor(m_max, device=dev)[:, None]
                    + 0.5 * lay0["xi2"][0][None, :]) / C.c                        # (S, N) σ/λ
    nU = lay0["nU"][:, torch.as_tensor(cols, device=dev)].T                       # (S, N)
    base = torch.log(torch.clamp(nU, min=1e-300)) - torch.log(su) - torch.log(ac_min)[None, :]
    k = np.clip(np.floor(np.nan_to_num(st.E_low, nan=0.0) / _E_STEP).astype(np.int64), 0, _N_E - 1)
    # the table only at the (species, E bin) pairs that occur
    pairs, p_inv = np.unique(inv * _N_E + k, return_inverse=True)
    p_s = torch.as_tensor(pairs // _N_E, device=dev)
    p_e = torch.as_tensor((pairs % _N_E) * _E_STEP, dtype=torch.float64, device=dev)
    tab = (base[p_s] - p_e[:, None] * lay0["beta"][0][None, :]).amax(-1).cpu().numpy()   # ln
    const = C.pi_e2_over_mc * 1e-8 / (C.c * _SQRT_2PI)
    with np.errstate(divide="ignore"):
        ln_bound = np.log(const * st.gf * st.wl) + tab[p_inv.reshape(-1)]
    return ln_bound >= math.log(threshold) - 1e-6


_PIECE = 16       # longest run of grid points one kernel row evaluates (see _make_plan)


@dataclass
class _Plan:
    st: _Static                 # selected lines
    wl0: torch.Tensor           # (M,) Å
    chunks: list                # (rows, lo, cnt, kmax, wing) per kernel call; each chunk's rows
    #                             sorted by species (contract_line_tangents relies on it)
    n_points: int
    n_screened: int = -1


def _make_plan(st, wl_t, wl_np, lay, N, alpha_cont, threshold, cutoff, max_window,
               chunk_elements, use_compile=None) -> _Plan | None:
    """Selection, windows and the kernel chunks (everything here is detached)."""
    dev = wl_t.device
    W = wl_np.size
    if alpha_cont is not None:
        ac = alpha_cont.detach().reshape(N, W)
    else:
        ac = coarse_continuum(lay["T"], lay["ne"], lay["nH"]).detach().reshape(N, 1)
    lay0 = {k: v.detach() for k, v in lay.items()}
    ac = torch.clamp(ac, min=1e-300)
    # ---- screening bound, then the exact selection on the survivors ----------------------
    st = st.take(np.nonzero(_bound_keep(st, lay0, ac.amin(dim=1), threshold))[0])
    n = st.wl.size
    win = np.zeros(n)
    smax = np.zeros(n)
    if n:
        if use_compile is None:
            use_compile = want_compile("auto")
        with torch.no_grad():
            t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=dev)[:, None]  # noqa: E731
            if ac.shape[1] == W:
                ac_sel = ac
                j = np.clip(np.searchsorted(wl_np, st.wl), 0, W - 1)
            else:
                ac_sel, j = ac[:, :1], np.zeros(n, np.int64)
            lay_rows = tuple(lay0[k] for k in ("T", "lnT", "beta", "ne", "nH", "xi2"))
            block = n if use_compile else max(1, (1 << 22) // max(N, 1))
            for s in range(0, n, block):
                sl = slice(s, s + block)
                ok, w, sm = _run("sel", use_compile,
                                 *(t(getattr(st, f)[sl]) for f in _STATIC_COLS),
                                 torch.as_tensor(st.sidx[sl], device=dev),
                                 torch.as_tensor(j[sl], device=dev), lay0["nU"], ac_sel, *lay_rows,
                                 float(threshold), float(cutoff), float(max_window))
                win[sl] = w.cpu().numpy()
                smax[sl] = sm.cpu().numpy()
    lo = np.searchsorted(wl_np, st.wl - win, side="left")
    hi = np.searchsorted(wl_np, st.wl + win, side="right")
    K = np.where(win > 0, hi - lo, 0)
    sel = np.nonzero(K > 0)[0]
    if sel.size == 0:
        return None
    st_sel = st.take(sel)
    M = sel.size
    lo, hi = lo[sel], hi[sel]

    # ---- segments: the core (|v| < 6 in some layer) and the two wings (|v| ≥ 6 in all) ---
    core = R_SWITCH * _SQRT2 * smax[sel] * (1 + 1e-9)
    lo_c = np.clip(np.searchsorted(wl_np, st_sel.wl - core, side="left"), lo, hi)
    hi_c = np.clip(np.searchsorted(wl_np, st_sel.wl + core, side="right"), lo_c, hi)
    rows_all = np.arange(M)
    seg_row = np.concatenate([rows_all, rows_all, rows_all])
    seg_lo = np.concatenate([lo_c, lo, hi_c])
    seg_k = np.concatenate([hi_c - lo_c, lo_c - lo, hi - hi_c])
    seg_wing = np.concatenate([np.zeros(M, bool), np.ones(2 * M, bool)])
    # ---- pieces of at most _PIECE points: the kernels evaluate (rows × longest row)
    # blocks, and whole segments of very different lengths padded them to 1.75× the points
    # needed (the Sun's 55 chunks); pieces of ≤ 16 points: 1.19×, with fewer kernel calls
    n_pc = -(-seg_k // _PIECE)
    pc = np.repeat(np.arange(seg_k.size), n_pc)
    j = np.arange(pc.size) - np.repeat(np.cumsum(n_pc) - n_pc, n_pc)    # piece number in its segment
    seg_row, seg_lo, seg_wing = seg_row[pc], seg_lo[pc] + j * _PIECE, seg_wing[pc]
    seg_k = np.minimum(_PIECE, seg_k[pc] - j * _PIECE)

    chunks = []
    for wing in (False, True):
        keep = np.nonzero((seg_k > 0) & (seg_wing == wing))[0]
        keep = keep[np.argsort(seg_k[keep], kind="stable")]     # similar lengths together
        r_np, lo_np, k_np = seg_row[keep], seg_lo[keep], seg_k[keep]
        s = 0
        while s < keep.size:
            cap = max(1, chunk_elements // (N * max(int(k_np[s]), 2)))
            e = min(keep.size, s + cap)
            while e - s > 1 and (e - s) * max(int(k_np[e - 1]), 2) * N > chunk_elements:
                e = s + max(1, (e - s) // 2)
            sl = np.arange(s, e)
            # the rows of one species together: contract_line_tangents then takes one matrix
            # product per species over a contiguous block (no gather or scatter copies)
            sl = sl[np.argsort(st_sel.sidx[r_np[sl]], kind="stable")]
            cnt = k_np[sl]
            if e - s == 1:                  # ≥ 2 rows and columns: one compiled graph
                sl = np.concatenate([sl, sl])
                cnt = np.concatenate([cnt, np.zeros_like(cnt)])
            kmax = max(int(k_np[e - 1]), 2)
            chunks.append((torch.as_tensor(r_np[sl], device=dev), torch.as_tensor(lo_np[sl], device=dev),
                           torch.as_tensor(cnt, device=dev), kmax, wing))
            s = e
    return _Plan(st_sel, torch.as_tensor(st_sel.wl, dtype=torch.float64, device=dev), chunks,
                 int(seg_k.sum()), n)


def _apply_plan(plan: _Plan, acc, lay, wl_t, use_compile, f32=False, cols=None):
    """acc (W, N) += the plan's line opacity; ``cols``: only these of the N (star, layer)
    columns (acc then has len(cols) columns)."""
    amp, sigma, gamma = _params(plan.st, lay, wl_t.device, use_compile)  # (M, N)
    if cols is not None:
        amp, sigma, gamma = amp[:, cols], sigma[:, cols], gamma[:, cols]
    for rows, lo, cnt, kmax, wing in plan.chunks:
        acc = _VoigtChunkAdd.apply(acc, amp[rows][:, None, :], sigma[rows][:, None, :],
                                   gamma[rows][:, None, :], wl_t, plan.wl0[rows], lo, cnt,
                                   kmax, use_compile, wing, f32)
    return acc


_LAYER_VARS = ("T", "ne", "nH", "xi2")     # layer quantities of (amp, σ, γ) besides n/U


def _partials_kernel(wl, gf, E_low, mass, gamma_rad, ln_g4, ln_c6, p6, sidx, nU, T, lnT,
                     beta, ne, nH, xi2):
    """(amp, σ, γ) (M, N) and Q (M, 3, V, N): their analytic partial derivatives w.r.t.
    each layer's own T, n_e, n_H and ξ² (:data:`_LAYER_VARS`), for :func:`_param_partials`.
    Same arithmetic as :func:`_param_expr`, differentiated by hand (tests compare with
    forward-mode AD); the structural zeros (amp and σ do not depend on n_e, n_H; amp and γ
    not on ξ²) are stored as zeros."""
    nUl = nU[:, sidx].T
    dE = _HC_EV_A / wl
    x = beta * dE
    e_lo = torch.exp(-beta * E_low)
    amp = (C.pi_e2_over_mc * gf * (wl * 1e-8) ** 2 / C.c) * nUl * e_lo * (-torch.expm1(-x))
    u2 = (wl / C.c) ** 2
    sigma = torch.sqrt(u2 * (C.k_B * T / mass + 0.5 * xi2))
    stark = ne * torch.exp(ln_g4 + lnT / 6.0)
    vdw = nH * torch.exp(ln_c6 + p6 * lnT)
    fw = (wl * wl * 1e-8) / (4 * math.pi * C.c)
    gamma = (gamma_rad + stark + vdw) * fw
    inv_T = 1.0 / T
    # d ln amp/dβ = −E_low + ΔE/(e^{βΔE} − 1); dβ/dT = −β/T
    a_T = amp * (beta * inv_T) * (E_low - dE / torch.expm1(x))
    s_T = u2 * C.k_B / (2.0 * mass * sigma)
    s_xi = u2 / (4.0 * sigma)
    g_T = fw * (stark / 6.0 + vdw * p6) * inv_T
    g_ne = fw * torch.exp(ln_g4 + lnT / 6.0)
    g_nH = fw * torch.exp(ln_c6 + p6 * lnT)
    z = torch.zeros_like(amp)
    Q = torch.stack([torch.stack([a_T, z, z, z], 1),
                     torch.stack([s_T, z, z, s_xi], 1),
                     torch.stack([g_T, g_ne, g_nH, z], 1)], 1)
    return amp, sigma, gamma, Q


_EAGER["ppar"] = _partials_kernel


def _param_partials(st: _Static, lay: dict, use_compile: bool = False):
    """(amp, σ, γ) (M, N) and their partial derivatives Q (M, 3, V, N) w.r.t. each layer's
    own T, n_e, n_H (perturbers) and ξ² (:data:`_LAYER_VARS`; T moves lnT and β with it).
    A line's parameters in a layer depend only on that layer's quantities, so these
    diagonal partials are the whole dependence on the layer quantities but one: amp ∝ n/U
    of the species, handled by the caller. Analytic (:func:`_partials_kernel`, one
    compiled kernel when ``use_compile``)."""
    dev = lay["T"].device
    t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=dev)[:, None]  # noqa: E731
    with torch.no_grad():
        return _run("ppar", use_compile, *(t(getattr(st, f)) for f in _STATIC_COLS),
                    torch.as_tensor(st.sidx, device=dev), *(lay[k].detach() for k in
                                                            ("nU", "T", "lnT", "beta", "ne", "nH", "xi2")))


def _param_partials_ad(st: _Static, lay: dict):
    """:func:`_param_partials` by forward-mode AD (vmap over one all-ones tangent per layer
    quantity): the reference the analytic partials are tested against."""
    dev = lay["T"].device
    keys = ("T", "lnT", "beta", "ne", "nH", "xi2")
    nU = lay["nU"]

    def f(*vals):
        return _params(st, {**dict(zip(keys, vals)), "nU": nU}, dev)

    prim = tuple(lay[k] for k in keys)
    T = lay["T"]
    one, zero = torch.ones_like(T), torch.zeros_like(T)
    basis = {  # tangents of (T, lnT, β, n_e, n_H, ξ²) per layer quantity
        "T": (one, 1.0 / T, -lay["beta"] / T, zero, zero, zero),
        "ne": (zero, zero, zero, one, zero, zero),
        "nH": (zero, zero, zero, zero, one, zero),
        "xi2": (zero, zero, zero, zero, zero, one),
    }
    tans = [torch.stack([basis[v][i] for v in _LAYER_VARS]) for i in range(len(keys))]
    d_amp, d_sig, d_gam = torch.func.vmap(lambda *t: torch.func.jvp(f, prim, t)[1])(*tans)
    with torch.no_grad():
        amp, sigma, gamma = f(*prim)
    Q = torch.stack([d_amp, d_sig, d_gam], dim=0).permute(2, 0, 1, 3).contiguous()   # (M, 3, V, N)
    return amp, sigma, gamma, Q


def contract_line_tangents(plan: _Plan, lay: dict, lay_tan: dict, G: torch.Tensor, wl_t,
                           use_compile: bool, layers: tuple[int, int] | None = None) -> torch.Tensor:
    """Σ_layers G · dα_line for K tangents at once: G (W, N) are weights per wavelength and
    layer (e.g. ∂F(λ)/∂α(λ, layer) of the radiative transfer), ``lay_tan`` the K tangents
    of the layer quantities (keys of ``lay`` with a leading K axis). Returns (W, K).
    ``layers``: (first, stop) — only these layers are summed (the caller knows where
    G · α is negligible); default all.

    dα = Σ_s α_s d ln(n/U)_s + Σ_v X_v dv: the first sum runs over the species s (α_s
    their opacity), the second over the layer quantities v = T, n_e, n_H, ξ² with
    X_v = Σ_lines Σ_{c = amp, σ, γ} (∂α/∂c)(∂c/∂v). The Voigt function and its derivatives
    are evaluated once per point and layer (compiled kernel) and weighted by G. The
    species term is contracted over the layers with the (N, K) tangents of the line's
    species by one matrix product per species and kernel chunk; the X_v term does not
    depend on the species, so G · X_v is summed over the lines into a (W, V·N)
    accumulator and contracted with the tangents of the layer quantities once at the end
    (for ξ², whose tangent is one number per star, already summed over the layers in the
    kernel: the tangents of ξ² must be the same in every layer, else ValueError).
    Nothing of size K × N × (points) is formed."""
    dev = wl_t.device
    K = lay_tan["T"].shape[0]
    W = wl_t.numel()
    N = G.shape[1]
    n0, n1 = (0, N) if layers is None else (int(layers[0]), int(layers[1]))
    ls = slice(n0, n1)
    Nl = n1 - n0
    amp, sigma, gamma, Q = _param_partials(plan.st, lay, use_compile)
    amp, sigma, gamma = amp[:, ls], sigma[:, ls], gamma[:, ls]
    Q = torch.stack([Q[:, c, v, ls] for c, v in _Q_ORDER], dim=1)          # (M, 6, Nl)
    G = G[:, ls].contiguous()
    cols, s_idx = np.unique(plan.st.sidx, return_inverse=True)
    cols_t = torch.as_tensor(cols, device=dev)
    nU = lay["nU"][ls][:, cols_t]                                           # (Nl, S)
    dnU = lay_tan["nU"][:, ls][:, :, cols_t]                                # (K, Nl, S)
    u = torch.where(nU > 0, dnU / torch.where(nU > 0, nU, torch.ones_like(nU)), torch.zeros_like(dnU))
    Us = u.permute(2, 1, 0).contiguous()                                    # (S, Nl, K)
    Lz = lay["T"].numel()                       # all layers (G may stop above the deepest)
    D = torch.stack([lay_tan[v].reshape(K, Lz)[:, ls] for v in _LAYER_VARS], dim=1)   # (K, V, Nl)
    d_xi2 = D[:, 3, 0]                                                      # (K,)
    if not bool((D[:, 3] == d_xi2[:, None]).all()):
        raise ValueError("contract_line_tangents: the tangents of ξ² must be the same in every "
                         "layer (one microturbulence per star)")
    Dm = D[:, :3].permute(1, 2, 0).reshape(3 * Nl, K)                     # rows (v, layer)
    s_t = torch.as_tensor(s_idx, device=dev)
    out = torch.zeros(W, K, dtype=torch.float64, device=dev)
    acc = torch.zeros(3, W, Nl, dtype=torch.float64, device=dev)    # T, n_e, n_H
    acc_xi = torch.zeros(W, dtype=torch.float64, device=dev)
    for rows, lo, cnt, kmax, wing in plan.chunks:
        idx, dl, mask = _segment_geometry(wl_t, plan.wl0[rows], lo, cnt, kmax)
        B, Kp = idx.shape
        ys, *yv, yxi = _run("con", use_compile, G, idx, dl, mask, amp[rows][:, None, :],
                            sigma[rows][:, None, :], gamma[rows][:, None, :], Q[rows][:, None], wing)
        flat = idx.reshape(-1)
        for a_v, y_v in zip(acc, yv):
            a_v.index_add_(0, flat, y_v.reshape(B * Kp, Nl))
        acc_xi.index_add_(0, flat, yxi.reshape(-1))
        # one matrix product per species present in this kernel chunk (the plan keeps each
        # species' rows contiguous, so every operand is a view)
        uniq, counts = torch.unique_consecutive(s_t[rows], return_counts=True)
        contrib = torch.empty(B * Kp, K, dtype=torch.float64, device=dev)
        ys = ys.reshape(B * Kp, Nl)
        b0 = 0
        with torch.no_grad():  # mm(out=) takes no autograd inputs; nothing here needs a graph
            for s_, n_ in zip(uniq.tolist(), counts.tolist()):
                torch.mm(ys[b0 * Kp:(b0 + n_) * Kp], Us[s_], out=contrib[b0 * Kp:(b0 + n_) * Kp])
                b0 += n_
        out.index_add_(0, flat, contrib)
    return out + acc.permute(1, 0, 2).reshape(W, 3 * Nl) @ Dm + acc_xi[:, None] * d_xi2[None, :]


def line_absorption(linelist, wl, atm, eos, vmic_kms, *, alpha_cont=None, threshold=1e-4,
                    cutoff=3e-4, max_window=150.0, vdw_enhancement=1.0,
                    molecule_log_gamma6=-7.5, chunk_elements=1 << 22, compile="auto",
                    return_stats=False, prepared=None, return_plan=False, profile_dtype="float64",
                    n_layers=None):
    """Line opacity (cm⁻¹) of every line of ``linelist`` on ``wl``: shape (…, L, W).

    Parameters
    ----------
    linelist : LineList (see docs/physics.md); H I lines are ignored.
    wl : (W,) vacuum wavelengths in Å, sorted ascending.
    atm : object with ``T`` (K), ``ne`` (cm⁻³), (…, L).
    eos : EOSResult: ``atoms``/``U`` (…, L, 93, 3), ``molecules``/``mol_U`` dicts of (…, L).
    vmic_kms : microturbulence in km/s: a scalar, one value per star (shape ``…``), or
        one per layer (shape ``…, L``, same as ``atm.T``); differentiable.
    alpha_cont : optional (…, L, W) continuum opacity (cm⁻¹) for line selection and
        windows (recommended; otherwise :func:`coarse_continuum`).
    threshold : keep a line if peak/continuum ≥ threshold somewhere.
    cutoff : profile window edge, in units of the continuum (Korg.jl's cutoff_threshold).
    max_window : largest half window in Å.
    vdw_enhancement : factor on the Unsöld γ₆ (only where no ABO/γ₆ is given).
    molecule_log_gamma6 : log γ₆ at 10⁴ K for molecular lines without one (None: no vdW).
    chunk_elements : lines × points × (stars·layers) evaluated at once (memory bound:
        ≈ 10 × 8 bytes × chunk_elements transient).
    compile : "auto" or True (use torch.compile unless $PHDLSPEC_COMPILE=0 switches it off
        for the process), or False.
    return_stats : also return a :class:`LineStats`.
    prepared : output of :func:`prepare_lines` (or a :func:`prepared_window` of it) to use
        instead of ``linelist`` (which may then be None); vdw_enhancement and
        molecule_log_gamma6 are those it was prepared with.
    return_plan : also return the evaluation plan (selected lines and segments; internal,
        for :func:`contract_line_tangents`).
    profile_dtype : "float64" (default) or "float32": precision of the Faddeeva function
        in the forward profile kernel (parameters, offsets and the accumulation stay
        float64; derivatives are always float64). "float32" is ≈2× faster; each profile
        value stays within 2e−6 of the line's peak and 1e−3 relative wherever it exceeds
        1e−4 of the peak (used by ``Synthesizer``; see tests/test_line_absorption.py).
    n_layers : evaluate the opacity in the uppermost ``n_layers`` layers of each star only
        (output (…, n_layers, W)); the selection of lines and their windows still uses all
        layers, so the opacity there is the same as without it. For callers that know the
        deeper layers cannot reach the emergent flux (``Synthesizer``: τ_c ≥ 50).

    Differentiable in reverse mode (``backward``) and forward mode (``torch.autograd.forward_ad``).
    """
    if profile_dtype not in ("float64", "float32"):
        raise ValueError(f"profile_dtype must be 'float64' or 'float32', not {profile_dtype!r}")
    dev = atm.T.device
    wl_t = torch.as_tensor(wl, dtype=torch.float64, device=dev)
    wl_np = wl_t.detach().cpu().numpy()
    W = wl_np.size
    mol_names = molecule_names(eos)
    lay, batch, N = _layers(atm, eos, vmic_kms, mol_names)
    if prepared is None:
        st, n_in = _prepare(linelist, mol_names, vdw_enhancement, molecule_log_gamma6)
    else:
        st, n_in = prepared, prepared.wl.size
    n_supported = st.wl.size
    use_compile = want_compile(compile)
    is_compiled = _kernel("fwd", use_compile) is not _fwd_kernel

    cols = None                                 # the (star, layer) columns evaluated
    if n_layers is not None and int(n_layers) < batch[-1]:
        if int(n_layers) < 1:
            raise ValueError(f"n_layers must be at least 1, got {n_layers}")
        cols = torch.arange(N, device=dev).reshape(-1, batch[-1])[:, :int(n_layers)].reshape(-1)
        batch = batch[:-1] + (int(n_layers),)
    acc = torch.zeros(W, N if cols is None else cols.numel(), dtype=torch.float64, device=dev)

    def finish(stats, plan=None):
        out = acc.T.reshape(batch + (W,))
        res = (out,)
        if return_stats:
            res = res + (stats,)
        if return_plan:
            res = res + (plan,)
        return res if len(res) > 1 else out

    if n_supported == 0 or W == 0:
        return finish(LineStats(n_in, n_supported, 0, 0, 0, is_compiled))
    plan = _make_plan(st, wl_t, wl_np, lay, N, alpha_cont, threshold, cutoff, max_window,
                      chunk_elements, use_compile)
    if plan is None:
        return finish(LineStats(n_in, n_supported, 0, 0, 0, is_compiled))
    acc = _apply_plan(plan, acc, lay, wl_t, use_compile, profile_dtype == "float32", cols)
    return finish(LineStats(n_in, n_supported, plan.st.wl.size, len(plan.chunks), plan.n_points,
                            is_compiled, plan.n_screened), plan)
