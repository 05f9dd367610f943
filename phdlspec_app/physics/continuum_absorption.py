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

from .continuum import (h2plus_bf_ff, heminus_ff, hminus_bf, hminus_ff, hminus_number_density,
                        hydrogen_bf, hydrogen_ff, metal_bf, rayleigh_h, rayleigh_h2, rayleigh_he,
                        thomson)
from .continuum._common import as_tensor

__all__ = ["continuum_absorption", "continuum_components"]


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


def continuum_components(wl, atm, eos) -> dict[str, torch.Tensor]:
    """Each continuum process separately: name → α [cm⁻¹] (..., L, W) (see module doc)."""
    wl_t, T, ne, atoms, U, nH2, nHm = _inputs(wl, atm, eos)
    nHI, nHII = atoms[..., 1, 0], atoms[..., 1, 1]
    nHeI = atoms[..., 2, 0]
    U_HI, U_HeI = U[..., 1, 0], U[..., 2, 0]
    if nHm is None:
        nHm = hminus_number_density(nHI, ne, T, U_HI)
    return {
        "Hminus_bf": hminus_bf(wl_t, T, nHm),
        "Hminus_ff": hminus_ff(wl_t, T, nHI, ne, U_HI),
        "H_bf": hydrogen_bf(wl_t, T, nHI, nHeI, ne, U_HI),
        "H_ff": hydrogen_ff(wl_t, T, nHII, ne),
        "H2plus": h2plus_bf_ff(wl_t, T, nHI, nHII),
        "Heminus_ff": heminus_ff(wl_t, T, nHeI, ne, U_HeI),
        "metal_bf": metal_bf(wl_t, T, atoms, U),
        "Rayleigh_H": rayleigh_h(wl_t, nHI),
        "Rayleigh_He": rayleigh_he(wl_t, nHeI),
        "Rayleigh_H2": rayleigh_h2(wl_t, nH2),
        "Thomson": thomson(wl_t, ne),
    }


def continuum_absorption(wl, atm, eos) -> torch.Tensor:
    """Total continuum α_c [cm⁻¹], shape (..., L, W): the sum of :func:`continuum_components`."""
    comps = continuum_components(wl, atm, eos)
    total = None
    for v in comps.values():
        total = v if total is None else total + v
    return total
