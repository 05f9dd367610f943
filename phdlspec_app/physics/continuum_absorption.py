"""Continuum absorption coefficient α_c(λ) per layer: the sum of every continuous process.

``continuum_absorption(wl, atm, eos) -> Tensor (..., L, W)`` in cm⁻¹ (absorption plus
scattering; LTE, scattering counted as absorption). ``continuum_components`` returns the same
split by process (for diagnostics and tests). The processes and their sources live in
:mod:`phdlspec_app.physics.continuum`:

==============  ==============================================================================
``Hminus_bf``   H⁻ photodetachment, McLaughlin et al. (2017); n(H⁻) by Saha (0.754 eV)
``Hminus_ff``   H⁻ free-free, Bell & Berrington (1987)
``H_bf``        H I photoionization, Nahar (2021) n ≤ 6 with Hummer & Mihalas (1988) dissolution;
                Kramers n = 7–40
``H_ff``        H I (H II + e⁻) free-free, van Hoof et al. (2014) Gaunt factors
``H2plus``      H₂⁺ bf + ff, Stancil (1994)
``Heminus_ff``  He⁻ free-free, John (1994)
``metal_bf``    He I, C I–II, N I–II, O I–II, Mg I–II, Al I–II, Si I–II, Ca I–II, Fe I–II bound-free:
                Opacity Project / Prieto (2003) level-summed tables of MARCS/Turbospectrum
``Rayleigh_H``  Colgan et al. (2016); ``Rayleigh_He`` Colgan et al. (2016);
``Rayleigh_H2`` Dalgarno & Williams (1962); ``Thomson`` σ_T n_e
==============  ==============================================================================

Inputs. ``wl``: vacuum wavelengths [Å], shape (W,) (tensor or array). ``atm``: ``T`` and ``ne``
(..., L). ``eos``: ``atoms`` (..., L, 93, 3) number densities of X I, X II, X III [cm⁻³],
``U`` (..., L, 93, 3) partition functions, ``molecules`` dict with ``"H2"`` (..., L);
optional ``n_Hminus`` (..., L) (computed by Saha when absent) and ``ne`` (when present it is
used in preference to ``atm.ne`` so that the opacity is consistent with the EOS populations).
Metal bound-free uses n(X)/U(X) of the whole ion stage (the tables carry the Boltzmann sum over
levels, see :mod:`.continuum.metals`).

Cost: every process is evaluated on the given grid, vectorized over (…, L, W); the continuum
is smooth, so callers may evaluate it on a coarse grid (e.g. every few Å) and interpolate.
"""
from __future__ import annotations

import torch

from .continuum import (METAL_BF_SPECIES, h2plus_bf_ff, heminus_ff, hminus_bf, hminus_ff,
                        hminus_number_density, hydrogen_bf, hydrogen_ff, metal_bf, metal_bf_cross_sections,
                        rayleigh_h, rayleigh_h2, rayleigh_he, thomson)
from .continuum._common import as_tensor

__all__ = ["continuum_absorption", "continuum_components", "continuum_tangents"]


def _inputs(wl, atm, eos):
    T = atm.T
    wl_t = as_tensor(wl, T)
    ne = getattr(eos, "ne", None)
    if ne is None:
        ne = atm.ne
    atoms, U = eos.atoms, eos.U
    nH2 = eos.molecules["H2"] if "H2" in eos.molecules else torch.zeros_like(T)
    nHm = getattr(eos, "n_Hminus", None)
    return wl_t, T, ne, atoms, U, nH2, nHm


def _layer_quantities(T, ne, atoms, U, nH2, nHm) -> dict[str, torch.Tensor]:
    """The (..., L) layer quantities the hydrogen/helium processes read (``nHm`` may be None)."""
    return {"T": T, "ne": ne, "nHI": atoms[..., 1, 0], "nHII": atoms[..., 1, 1], "nHeI": atoms[..., 2, 0],
            "U_HI": U[..., 1, 0], "U_HeI": U[..., 2, 0], "nHm": nHm, "nH2": nH2}


def _hhe_components(wl_t, q: dict) -> dict[str, torch.Tensor]:
    """Every process but metal bound-free, from the layer quantities ``q``."""
    T, ne, nHI, nHII, nHeI = q["T"], q["ne"], q["nHI"], q["nHII"], q["nHeI"]
    nHm = q["nHm"]
    if nHm is None:
        nHm = hminus_number_density(nHI, ne, T, q["U_HI"])
    return {
        "Hminus_bf": hminus_bf(wl_t, T, nHm),
        "Hminus_ff": hminus_ff(wl_t, T, nHI, ne, q["U_HI"]),
        "H_bf": hydrogen_bf(wl_t, T, nHI, nHeI, ne, q["U_HI"]),
        "H_ff": hydrogen_ff(wl_t, T, nHII, ne),
        "H2plus": h2plus_bf_ff(wl_t, T, nHI, nHII),
        "Heminus_ff": heminus_ff(wl_t, T, nHeI, ne, q["U_HeI"]),
        "Rayleigh_H": rayleigh_h(wl_t, nHI),
        "Rayleigh_He": rayleigh_he(wl_t, nHeI),
        "Rayleigh_H2": rayleigh_h2(wl_t, q["nH2"]),
        "Thomson": thomson(wl_t, ne),
    }


def continuum_components(wl, atm, eos) -> dict[str, torch.Tensor]:
    """Each continuum process separately: name → α [cm⁻¹] (..., L, W) (see module doc)."""
    wl_t, T, ne, atoms, U, nH2, nHm = _inputs(wl, atm, eos)
    comps = _hhe_components(wl_t, _layer_quantities(T, ne, atoms, U, nH2, nHm))
    order = list(comps)
    order.insert(order.index("Heminus_ff") + 1, "metal_bf")     # the order of the sum, as before
    comps["metal_bf"] = metal_bf(wl_t, T, atoms, U)
    return {k: comps[k] for k in order}


def continuum_absorption(wl, atm, eos) -> torch.Tensor:
    """Total continuum α_c [cm⁻¹], shape (..., L, W): the sum of :func:`continuum_components`."""
    total = None
    for v in continuum_components(wl, atm, eos).values():
        total = v if total is None else total + v
    return total


def continuum_tangents(wl, prim, tans) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuum α_c [cm⁻¹] (L, W) of one star and its K tangents (K, L, W).

    ``prim`` = (T, n_e, atoms, U, n(H₂), n(H⁻)): the layer inputs of one star, shapes (L,),
    (L,), (L, 93, 3), (L, 93, 3), (L,), (L,) (n(H⁻) may be None: Saha); ``tans`` the same
    with a leading K axis (the inputs' derivatives with respect to K labels).

    Every process acts layer by layer, so its Jacobian with respect to a layer quantity is
    diagonal in the layer: one forward-mode directional derivative with the tangent 1 in
    every layer gives all of them at once. That is done for the nine quantities of the H/He
    processes (T, n_e, n(H I), n(H II), n(He I), U(H I), U(He I), n(H⁻), n(H₂); T's includes
    the metals' cross sections and the stimulated-emission factor); metal bound-free is
    linear in n(X)/U(X), with the per-species cross sections as partials. The K tangents
    are these 9 + 17 partials contracted with the inputs' tangents: the primal opacity is
    not pushed through K-batched dual numbers (3× faster than a vmap over K jvps, same
    derivatives to round-off). α_c itself is :func:`continuum_absorption`, bit for bit.
    """
    from types import SimpleNamespace

    T, ne, atoms, U, nH2, nHm = prim
    dT, dne, datoms, dU, dnH2, dnHm = tans
    wl_t = as_tensor(wl, T)
    alpha = continuum_absorption(wl_t, SimpleNamespace(T=T, ne=ne),
                                 SimpleNamespace(atoms=atoms, U=U, molecules={"H2": nH2}, n_Hminus=nHm, ne=ne))
    zs, ions = zip(*METAL_BF_SPECIES.values())
    zs, ions = list(zs), list(ions)
    nU = atoms[..., zs, ions] / U[..., zs, ions]                                  # (L, S)
    dnU = datoms[..., zs, ions] / U[..., zs, ions] - nU * dU[..., zs, ions] / U[..., zs, ions]   # (K, L, S)
    q = _layer_quantities(T, ne, atoms, U, nH2, nHm)
    dq = _layer_quantities(dT, dne, datoms, dU, dnH2, dnHm)
    keys = [k for k in q if q[k] is not None]

    def hhe(*xs):
        out = None
        for v in _hhe_components(wl_t, {**q, **dict(zip(keys, xs))}).values():
            out = v if out is None else out + v
        return out

    xs = tuple(q[k] for k in keys)
    eye = torch.eye(len(keys), dtype=T.dtype, device=T.device)
    dirs = tuple(eye[:, j, None].expand(len(keys), T.shape[-1]) for j in range(len(keys)))
    J = torch.func.vmap(lambda *t: torch.func.jvp(hhe, xs, t)[1])(*dirs)          # (Q, L, W)
    sig, dsig = torch.func.jvp(lambda t: metal_bf_cross_sections(wl_t, t), (T,), (torch.ones_like(T),))
    J[keys.index("T")] += (dsig * nU.T.unsqueeze(-1)).sum(0)
    P = torch.cat([J, sig], 0)                                                  # (Q + S, L, W)
    D = torch.cat([torch.stack([dq[k] for k in keys], 1), dnU.transpose(1, 2)], 1)  # (K, Q + S, L)
    dalpha = torch.bmm(D.permute(2, 0, 1), P.permute(1, 0, 2))                  # (L, K, W)
    return alpha, dalpha.transpose(0, 1)
