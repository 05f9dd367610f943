"""Equation of state: ionization and molecular equilibrium in LTE, layer by layer.

``solve_eos(atm, eps)`` takes a model atmosphere's temperature T (K) and gas pressure P
(dyn cm⁻²) and the abundances ε_X = N_X/N_H, and returns the number densities of every
element's first three ionization stages, of H⁻ and of a set of neutral molecules, the
electron density and the mass density. The model's own n_e only seeds the iteration.

Physics
-------
- Saha (ionization): n(X II) n_e / n(X I) = 2 U_II/U_I (2π m_e kT/h²)^{3/2} e^{−χ_I/kT},
  likewise II → III; H⁻ from H I with the electron affinity 0.754 eV and U(H⁻) = 1.
- Molecules (neutral, from neutral atoms; Barklem & Collet 2016 constants, see
  ``atomic_data``): n(A) n(B)…/n(AB…) = K_p(T)/(kT)^{n_atoms−1}.
- Conservation, per layer:
    nuclei of X (atoms of all stages + in molecules [+ in H⁻]) = ε_X n_H  (92 equations),
    charge:   n_e = Σ_X [n(X II) + 2 n(X III)] − n(H⁻),
    pressure: P/kT = n_e + Σ atoms/ions + Σ molecules + n(H⁻).
  Molecular ions, X IV and higher stages are neglected (all below 10⁻⁶ of their element
  in 2500–20000 K photospheres). Partition functions are not pressure-truncated.

Solver
------
Unknowns per layer: y = [ln f_k (elements that form a molecule, H always), ln n_e,
ln n_H], where f_k = n(X_k I)/(ε_k n_H). An element in no molecule has the closed form
n(X I) = ε n_H/(1 + S₁/n_e + S₁S₂/n_e²), so the Newton system has only K + 2 unknowns
(K = 21 for the 40 default molecules) instead of 94; the residuals are the conservation
equations divided by their natural scale (ε_k n_H, n_e, P/kT), and the Jacobian is
analytic. Start: the model's n_e, n_H from P/kT without molecules, f = 1/(1+…) (no
molecules); damped Newton (steps limited to 2 in ln) until max|residual| < 1e-13:
5 iterations for the solar model from its own n_e, ≤ 27 over 1661 Kurucz 1993 grid
models ([M/H] = −5, −2, 0, +0.5; Teff 3500–50000 K; layers 2100–150000 K), up to ~40 for
2000–2500 K layers started without n_e (a warning is issued if ``max_iter`` is reached). Cost ≈ 1 ms per iteration for 80 layers on one
CPU core (8–17 ms per star).

Derivatives (implicit function theorem)
---------------------------------------
The iterations run under ``torch.no_grad()``. From the converged y* one more Newton step
is taken with autograd on and the Jacobian J detached:
    y = y* − J⁻¹ r(y*; ε, T, P).
In value r(y*) = 0, so y = y*; in derivative dy/dθ = −J⁻¹ ∂r/∂θ, which is exactly the
implicit-function-theorem derivative of the solution (the derivative of J⁻¹ multiplies
r = 0). So gradients w.r.t. ε, T and P are exact and cost one linear solve; they do not
depend on the model's n_e (only the starting point).

Not included: H₂O and other polyatomics (no atomization energies in the shared data;
below ~3000 K H₂O would take part of O that OH takes here), molecular ions, pressure
truncation of partition functions.

Sources: Saha/Boltzmann (e.g. Gray, *The Observation and Analysis of Stellar
Photospheres*, ch. 1 & 8); equilibrium constants and molecular partition functions from
Barklem & Collet 2016 (A&A 588, A96), atomic partition functions from Korg.jl (Wheeler
et al. 2023) — see ``atomic_data``. The scheme mirrors Korg.jl's chemical equilibrium
(neutral-atom densities as unknowns, Saha for the ions) but, unlike Korg, solves for n_e
and n_H too, so charge and particle conservation hold exactly.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from . import atomic_data as ad
from .constants import amu, h, k_B, k_B_eV, m_e

__all__ = ["DEFAULT_MOLECULES", "EOSResult", "solve_eos", "saha_factors"]

#: Neutral molecules solved by default: the ones that consume C, N, O, H, Mg, Si, Ti … in
#: FGKM photospheres, and those with LAMOST-range bands (CH, CN, C₂, MgH, TiO, CaH, FeH …).
DEFAULT_MOLECULES: tuple[str, ...] = (
    "H2", "CH", "NH", "OH", "C2", "CN", "CO", "N2", "NO", "O2",
    "MgH", "MgO", "AlH", "AlO", "SiH", "SiO", "SiS", "SiN", "SiC", "CS", "SO", "NS", "HS",
    "CaH", "CaO", "TiO", "TiH", "TiN", "VO", "CrH", "FeH", "FeO", "ScO", "YO", "ZrO", "LaO",
    "HF", "HCl", "NaH", "KH",
)

_LN_TRANS = 1.5 * math.log(2 * math.pi * m_e * k_B / h**2)  # ln[(2π m_e k/h²)^{3/2}] (T¹·⁵ apart)


@dataclass
class EOSResult:
    """Result of :func:`solve_eos`. All densities in cm⁻³, shapes (..., L[, ...]).

    ``ne`` electrons; ``atoms`` (..., L, 93, 3) X I, X II, X III indexed by Z (row 0 is
    zero); ``U`` (..., L, 93, 3) their partition functions; ``molecules`` name → (..., L);
    ``mol_U`` name → (..., L) molecular partition functions (no nuclear-spin factor);
    ``n_Hminus`` H⁻; ``n_H`` total H nuclei (all forms); ``rho`` mass density g cm⁻³
    (nuclei only; electrons add 3·10⁻⁸ of it); ``n_heavy`` = P/kT − n_e, all particles but
    electrons; ``max_residual`` the largest relative conservation residual left by the
    iteration (detached, for diagnostics)."""
    ne: torch.Tensor
    atoms: torch.Tensor
    U: torch.Tensor
    molecules: dict[str, torch.Tensor]
    mol_U: dict[str, torch.Tensor]
    n_Hminus: torch.Tensor
    n_H: torch.Tensor
    rho: torch.Tensor
    n_heavy: torch.Tensor
    max_residual: torch.Tensor = field(repr=False)
    n_iter: int = 0

    def density(self, species: str) -> torch.Tensor:
        """Number density (..., L) of 'Fe I', 'Ca II', 'H-', 'CO', 'e-'."""
        s = species.strip()
        if s in ("e", "e-", "electron"):
            return self.ne
        if s in ("H-", "H minus", "Hminus"):
            return self.n_Hminus
        if s in self.molecules:
            return self.molecules[s]
        Z, q = ad.parse_species(s)
        return self.atoms[..., Z, q]


def saha_factors(T: torch.Tensor, U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ln S₁, ln S₂ (..., 93) with n(X II)/n(X I) = S₁/n_e and n(X III)/n(X II) = S₂/n_e.

    ``T`` (...,) K, ``U`` (..., 93, 3). S = 2 (U_{q+1}/U_q)(2π m_e kT/h²)^{3/2} e^{−χ/kT}
    in cm⁻³. Missing stages (H III, Z = 0) get S = 0."""
    chi = torch.tensor(ad.ionization_energies(), dtype=T.dtype, device=T.device)
    lnU = torch.log(U)
    kT = (k_B_eV * T).unsqueeze(-1)
    base = math.log(2.0) + _LN_TRANS + 1.5 * torch.log(T).unsqueeze(-1)
    # a missing stage gets χ = 10⁴ eV: S underflows to exactly 0 and, unlike χ = ∞, its
    # derivative stays finite (0), so no NaN reaches the backward pass
    chi = torch.nan_to_num(chi, nan=1e4)
    lnS1 = base + lnU[..., 1] - lnU[..., 0] - chi[:, 0] / kT
    lnS2 = base + lnU[..., 2] - lnU[..., 1] - chi[:, 1] / kT
    return lnS1, lnS2


@dataclass
class _Setup:
    """Quantities fixed during the iteration (depend on T, P, ε only)."""
    S1: torch.Tensor        # (B, 93)
    S2: torch.Tensor        # (B, 93)   S₁S₂ is used as S1*S2
    eps: torch.Tensor       # (B, 93)
    eps_free: torch.Tensor  # (B, 93) ε of elements solved in closed form, 0 elsewhere
    eps_k: torch.Tensor     # (B, K)   ε of molecule-forming elements (floored > 0)
    lnnK: torch.Tensor      # (B, M)   ln[n(A)n(B)/n(AB)] (cm⁻³)^(n−1)
    C_Hm: torch.Tensor      # (B,)     n(H⁻) = n(H I) n_e C_Hm
    nP: torch.Tensor        # (B,)     P/kT
    nu: torch.Tensor        # (M, K)   atoms of element k in molecule m
    A: torch.Tensor         # (M,)     atoms per molecule
    kz: torch.Tensor        # (K,)     Z of the molecule-forming elements (kz[0] = 1, H)


def _state(y: torch.Tensor, s: _Setup):
    """Densities for unknowns y (B, K+2)."""
    K = s.kz.shape[0]
    lnf, lnne, lnnH = y[:, :K], y[:, K], y[:, K + 1]
    ne, nH = torch.exp(lnne), torch.exp(lnnH)
    x1 = s.S1 / ne.unsqueeze(-1)                      # n(II)/n(I)
    x2 = x1 * s.S2 / ne.unsqueeze(-1)                 # n(III)/n(I)
    g = 1.0 + x1 + x2                                 # (all stages)/n(I)
    hq = x1 + 2.0 * x2                                # charge/n(I)
    gk, hk = g[:, s.kz], hq[:, s.kz]
    ln_nIk = lnf + torch.log(s.eps_k) + lnnH.unsqueeze(-1)      # ln n(X_k I)
    nIk = torch.exp(ln_nIk)
    n_mol = torch.exp(ln_nIk @ s.nu.T - s.lnnK)                 # (B, M)
    n_Hm = nIk[:, 0] * ne * s.C_Hm
    return dict(lnf=lnf, ne=ne, nH=nH, x1=x1, x2=x2, g=g, hq=hq, gk=gk, hk=hk, nIk=nIk,
                n_mol=n_mol, n_Hm=n_Hm)


def _residual(y: torch.Tensor, s: _Setup, want_jac: bool):
    st = _state(y, s)
    ne, nH, nIk, n_mol, n_Hm = st["ne"], st["nH"], st["nIk"], st["n_mol"], st["n_Hm"]
    gk, hk = st["gk"], st["hk"]
    K = s.kz.shape[0]
    isH = torch.zeros(K, dtype=y.dtype, device=y.device)
    isH[0] = 1.0
    scale_k = s.eps_k * nH.unsqueeze(-1)                          # ε_k n_H
    mol_nuclei = n_mol @ s.nu                                     # (B, K) nuclei in molecules
    # element conservation: (all forms of X_k)/(ε_k n_H) − 1
    r_k = (nIk * gk + mol_nuclei + isH * n_Hm.unsqueeze(-1)) / scale_k - 1.0
    # free elements: closed form; their charge and particle sums
    g, hq = st["g"], st["hq"]
    q_free = nH * (s.eps_free * hq / g).sum(-1)
    p_free = nH * s.eps_free.sum(-1)
    Q = q_free + (nIk * hk).sum(-1) - n_Hm
    r_e = Q / ne - 1.0
    Ntot = p_free + (nIk * gk).sum(-1) + n_mol.sum(-1) + n_Hm + ne
    r_N = Ntot / s.nP - 1.0
    r = torch.cat([r_k, r_e.unsqueeze(-1), r_N.unsqueeze(-1)], dim=-1)
    if not want_jac:
        return r, st
    B = y.shape[0]
    J = y.new_zeros(B, K + 2, K + 2)
    x1, x2 = st["x1"], st["x2"]
    dg = -(x1 + 2 * x2)             # d g/d ln n_e
    dh = -(x1 + 4 * x2)             # d hq/d ln n_e
    dgk, dhk = dg[:, s.kz], dh[:, s.kz]
    # element rows
    # Σ_m ν_mk ν_mj n_m as a batched (K, M) @ (M, K) product (einsum was 10× slower)
    Jkk = ((s.nu.T * n_mol.unsqueeze(1)) @ s.nu) / scale_k.unsqueeze(-1)
    Jkk.diagonal(dim1=-2, dim2=-1).add_(nIk * gk / scale_k)
    Jkk[:, 0, 0] += n_Hm / nH       # H⁻ ∝ f_H (ε_H n_H f_H n_e C)/(ε_H n_H)
    J[:, :K, :K] = Jkk
    J[:, :K, K] = nIk * dgk / scale_k
    J[:, 0, K] += n_Hm / scale_k[:, 0]
    J[:, :K, K + 1] = (n_mol * (s.A - 1.0)) @ s.nu / scale_k
    # charge row
    J[:, K, :K] = (nIk * hk - isH * n_Hm.unsqueeze(-1)) / ne.unsqueeze(-1)
    dq_free = nH * (s.eps_free * (dh * g - hq * dg) / g**2).sum(-1)
    J[:, K, K] = (dq_free + (nIk * dhk).sum(-1) - n_Hm - Q) / ne
    J[:, K, K + 1] = Q / ne
    # particle row
    J[:, K + 1, :K] = (nIk * gk + mol_nuclei + isH * n_Hm.unsqueeze(-1)) / s.nP.unsqueeze(-1)
    J[:, K + 1, K] = ((nIk * dgk).sum(-1) + n_Hm + ne) / s.nP
    J[:, K + 1, K + 1] = (p_free + (nIk * gk).sum(-1) + (n_mol * s.A).sum(-1) + n_Hm) / s.nP
    return r, st, J


def _setup(T, P, eps, molecules):
    """Flattened (B = batch × L) quantities for the solver."""
    mols, Kspl, Uspl = ad.molecular_tables(tuple(molecules))
    dtype, device = T.dtype, T.device
    lnT = torch.log(T)
    U = ad.atomic_partition_table(T)                            # (B, 93, 3)
    lnS1, lnS2 = saha_factors(T, U)
    mol_U = Uspl(lnT)                                           # (B, M)
    # elements in the Newton system: H first, then those of the molecules
    zs = sorted({z for m in mols for z in m.atoms} | {1})
    kz = torch.tensor(zs, device=device)
    index = {z: i for i, z in enumerate(zs)}
    nu = torch.zeros(len(mols), len(zs), dtype=dtype, device=device)
    for i, m in enumerate(mols):
        for z in m.atoms:
            nu[i, index[z]] += 1.0
    A = nu.sum(-1)
    ln10 = math.log(10.0)
    lnkT = math.log(k_B) + lnT
    lnnK = Kspl(lnT) * ln10 - (A - 1.0) * lnkT.unsqueeze(-1)   # K_p/(kT)^(n−1)
    free = torch.ones(ad.N_Z, dtype=dtype, device=device)
    free[kz] = 0.0
    free[0] = 0.0
    eps_free = eps * free
    # a molecule-forming element of zero abundance: floor ε at 1e-30 (1e-13 cm⁻³ at most)
    # so that ln ε stays finite; its outputs are zeroed afterwards.
    eps_k = eps[:, kz].clamp_min(1e-30)
    chi_Hm = ad.H_MINUS_BINDING_EV
    # n(H⁻) = n(H I) n_e U(H⁻)/(2 U(H I)) (h²/2π m_e kT)^{3/2} e^{χ/kT}
    C_Hm = torch.exp(-math.log(2.0) - torch.log(U[:, 1, 0]) - _LN_TRANS - 1.5 * lnT
                     + chi_Hm / (k_B_eV * T))
    nP = P / (k_B * T)
    s = _Setup(S1=torch.exp(lnS1), S2=torch.exp(lnS2), eps=eps, eps_free=eps_free,
               eps_k=eps_k, lnnK=lnnK, C_Hm=C_Hm, nP=nP, nu=nu, A=A, kz=kz)
    return s, U, mols, mol_U


def _initial_guess(s: _Setup, ne0: torch.Tensor) -> torch.Tensor:
    """No molecules: n_H = (P/kT − n_e)/Σε, f_k = 1/(1 + S₁/n_e + S₁S₂/n_e²)."""
    ne0 = ne0.clamp(min=1e-10 * s.nP, max=0.5 * s.nP)
    nH = (s.nP - ne0) / s.eps.sum(-1)
    x1 = s.S1[:, s.kz] / ne0.unsqueeze(-1)
    g = 1.0 + x1 + x1 * s.S2[:, s.kz] / ne0.unsqueeze(-1)
    return torch.cat([-torch.log(g), torch.log(ne0).unsqueeze(-1),
                      torch.log(nH).unsqueeze(-1)], dim=-1)


def _newton(s: _Setup, y: torch.Tensor, tol: float, max_iter: int, max_step: float):
    """Damped Newton on the detached system; returns (y, J at y, iterations, max|r|)."""
    it = 0
    while True:
        r, _, J = _residual(y, s, want_jac=True)
        err = r.abs().amax(-1)
        if bool((err < tol).all()) or it >= max_iter:
            return y, J, it, err
        dy = torch.linalg.solve(J, -r)
        big = dy.abs().amax(-1, keepdim=True)
        dy = dy * (max_step / big).clamp(max=1.0)
        y = y + dy
        it += 1


def solve_eos(atm, eps: torch.Tensor, molecules=DEFAULT_MOLECULES, *, tol: float = 1e-13,
              max_iter: int = 200) -> EOSResult:
    """Chemical and ionization equilibrium of every layer of ``atm``.

    Parameters
    ----------
    atm : object with ``T`` (K), ``P`` (gas pressure, dyn cm⁻²) and ``ne`` (cm⁻³, only the
        starting guess; may be None) tensors of shape (..., L) — a ``ModelAtmosphere``.
    eps : (..., 93) ε_X = N_X/N_H (ε_H = 1, index 0 ignored); broadcast against the
        atmosphere's leading dims.
    molecules : names of neutral molecules to include (``atomic_data.available_molecules()``
        lists all 247 with data); at least the ones you need densities for.
    tol : convergence on the largest relative conservation residual.

    Returns an :class:`EOSResult`; differentiable w.r.t. ``eps``, ``atm.T`` and ``atm.P``
    (implicit-function derivative, see module docstring)."""
    # float64 throughout: the conservation sums span 12 orders of magnitude, float32
    # cannot reach the tolerance (inputs of another dtype are promoted)
    T = torch.as_tensor(atm.T).to(torch.float64)
    P = torch.as_tensor(atm.P).to(dtype=torch.float64, device=T.device)
    eps = torch.as_tensor(eps).to(dtype=torch.float64, device=T.device)
    batch = torch.broadcast_shapes(T.shape[:-1], eps.shape[:-1], P.shape[:-1])
    L = T.shape[-1]
    T = T.expand(*batch, L).reshape(-1)
    P = P.expand(*batch, L).reshape(-1)
    eps_b = eps[..., None, :].expand(*batch, L, ad.N_Z).reshape(-1, ad.N_Z)
    ne_model = getattr(atm, "ne", None)
    molecules = tuple(molecules)

    s, U, mols, mol_U = _setup(T, P, eps_b, molecules)
    with torch.no_grad():
        s0 = _Setup(**{k: (v.detach() if torch.is_tensor(v) else v)
                       for k, v in s.__dict__.items()})
        if ne_model is None:
            ne0 = 1e-4 * s0.nP
        else:
            ne0 = torch.as_tensor(ne_model, dtype=T.dtype, device=T.device)
            ne0 = ne0.expand(*batch, L).reshape(-1).detach()
        y0 = _initial_guess(s0, ne0)
        y0, J0, n_iter, err = _newton(s0, y0, tol, max_iter, max_step=2.0)
    if not bool(torch.isfinite(y0).all()):
        raise FloatingPointError("EOS: Newton iteration produced non-finite values")
    if not bool((err < tol).all()):
        warnings.warn(f"EOS not converged after {n_iter} Newton iterations: largest relative "
                      f"residual {float(err.max()):.2e} (tolerance {tol:.0e})", RuntimeWarning,
                      stacklevel=2)
    # one differentiable Newton step from the converged, detached point (IFT derivative)
    r, _ = _residual(y0, s, want_jac=False)
    y = y0 - torch.linalg.solve(J0, r.unsqueeze(-1)).squeeze(-1)
    st = _state(y, s)

    ne, nH = st["ne"], st["nH"]
    # neutral densities of all elements: closed form for the free ones
    nI = s.eps_free * nH.unsqueeze(-1) / st["g"]
    nI = nI.index_put((torch.arange(nI.shape[0], device=nI.device)[:, None], s.kz[None, :]),
                      st["nIk"])
    present = (eps_b > 0).to(T.dtype)
    present[:, 0] = 0.0
    nI = nI * present
    atoms = torch.stack([nI, nI * st["x1"], nI * st["x2"]], dim=-1)
    masses = torch.tensor(ad.atomic_masses(), dtype=T.dtype, device=T.device)
    rho = nH * (eps_b * present * masses).sum(-1) * amu
    n_heavy = s.nP - ne

    shape = (*batch, L)
    n_mol = st["n_mol"]
    # a molecule containing an absent element is absent
    mol_present = torch.stack([present[:, list(m.atoms)].prod(-1) for m in mols], dim=-1)
    n_mol = n_mol * mol_present
    return EOSResult(
        ne=ne.reshape(shape),
        atoms=atoms.reshape(*shape, ad.N_Z, 3),
        U=U.reshape(*shape, ad.N_Z, 3),
        molecules={m.name: n_mol[:, i].reshape(shape) for i, m in enumerate(mols)},
        mol_U={m.name: mol_U[:, i].reshape(shape) for i, m in enumerate(mols)},
        n_Hminus=st["n_Hm"].reshape(shape),
        n_H=nH.reshape(shape),
        rho=rho.reshape(shape),
        n_heavy=n_heavy.reshape(shape),
        max_residual=err.reshape(shape),
        n_iter=n_iter,
    )
