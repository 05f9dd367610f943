"""Metal photoionization (bound-free) from the Uppsala/MARCS continuous-opacity table.

Data: ``atomic/turbospectrum/jonabs_vac_v19.2.dat`` — the absorber table of the Uppsala opacity
package (Gustafsson 1973, Uppsala Astr. Obs. Ann. 5 No. 6) as updated for MARCS (Gustafsson et
al. 2008, A&A 486, 951) and shipped with Turbospectrum (Plez 2012, ascl:1205.004), wavelengths
in vacuum Å. The metal bound-free blocks are Opacity Project / TOPbase cross sections
(Seaton et al. 1992, Cunto et al. 1993) summed over levels with LTE Boltzmann weights by
D. Kiselman and B. Edvardsson (block headers), or from Prieto (2003 RAP calculations with
observed energies; Mg I, Si I):

    C I (OP, 220 levels, unsmoothed)   C II (OP)   N I, N II, O I, O II (OP)
    Mg I (Prieto 2003)   Mg II (OP)    Al I, Al II (OP, smoothed)
    Si I (Prieto 2003)   Si II (OP)    Ca I (TOPbase, smoothed)   Ca II (OP)
    Fe I (OP)            Fe II (OP)    He I (OP)

Meaning of the tabulated quantity (from Turbospectrum's DETABS, which multiplies each block by
n(X)/(U(X) ρ) and finally by the stimulated-emission factor): the table value is
Σ_levels g_i exp(−E_i/kT) σ_i(λ) [cm²], so that

    α_X(λ) = table(λ, T) · n(X) / U(X) · (1 − e^{−hν/kT})

with n(X) the total number density of the ion stage and U(X) its partition function (taken from
the EOS). Interpolation follows the table flags (ILOGL = 0: linear in λ, with steps where two
λ points are < 2 Å apart; zero outside the tabulated λ range; ILOGT = 1: interpolation of
ln(table) in T) except that T interpolation is linear rather than quadratic and T is clamped
to the tabulated range (1000–29 000 K).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ...paths import physics_dir
from ._common import as_tensor, interp1d, interp_layers, layer, stim_factor

__all__ = ["METAL_BF_SPECIES", "metal_bf", "metal_bf_cross_sections", "metal_bf_species", "read_jonabs_block"]

#: jonabs block name → (Z, ion stage index: 0 = neutral, 1 = singly ionized)
METAL_BF_SPECIES = {
    "HeI": (2, 0), "C_I": (6, 0), "C_II": (6, 1), "N_I": (7, 0), "N_II": (7, 1),
    "O_I": (8, 0), "O_II": (8, 1), "MgI": (12, 0), "MgII": (12, 1), "AlI": (13, 0),
    "AlII": (13, 1), "SiI": (14, 0), "SiII": (14, 1), "CaI": (20, 0), "CaII": (20, 1),
    "FeI": (26, 0), "FeII": (26, 1),
}


@dataclass(frozen=True)
class JonabsBlock:
    name: str
    source: str
    ilogl: int
    wavelength: np.ndarray     # Å vacuum
    ilogt: int
    iteta: int
    tgrid: np.ndarray          # T [K] (or θ when iteta)
    table: np.ndarray          # (n_T, n_λ)


def _fields(line: str) -> list[float]:
    """Fortran fixed format: six fields of 10 characters (anything after column 60 is a label)."""
    out = []
    for k in range(6):
        s = line[10 * k:10 * (k + 1)].replace(" ", "")  # Fortran BN: blanks inside a field ignored
        if s:
            mant = s.split("E")[0].split("e")[0]
            out.append(float(s) if mant.strip(".+-") else 0.0)
    return out


def _read_values(lines, pos, n):
    vals: list[float] = []
    while len(vals) < n:
        vals.extend(_fields(lines[pos]))
        pos += 1
    return np.array(vals[:n]), pos


def _flags(line: str) -> dict[str, int]:
    out = {}
    for tok in line.replace("= ", "=").split():
        if "=" in tok:
            k, v = tok.split("=")
            out[k] = int(v)
    return out


@lru_cache(maxsize=1)
def _jonabs_blocks() -> dict[str, JonabsBlock]:
    lines = (physics_dir() / "atomic" / "turbospectrum" / "jonabs_vac_v19.2.dat").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if "KOMP=" in ln)
    nkomp = _flags(lines[start])["KOMP"]
    pos = start + 1
    blocks = {}
    for _ in range(nkomp):
        head = lines[pos]
        name, _, source = head[:60].partition(" ")
        fl = _flags(lines[pos + 1])
        wl, pos = _read_values(lines, pos + 2, fl["NLATB"])
        ft = _flags(lines[pos])
        pos += 1
        nt = ft["NTETB"]
        if nt > 1:
            tg, pos = _read_values(lines, pos, nt)
        else:
            tg = np.array([0.0])
        rows = []
        for _k in range(max(nt, 1)):
            r, pos = _read_values(lines, pos, fl["NLATB"])
            rows.append(r)
        blocks[name] = JonabsBlock(name, source.strip(), fl["ILOGL"], wl, ft["ILOGT"], ft["ITETA"],
                                   tg, np.vstack(rows))
    return blocks


def read_jonabs_block(name: str) -> JonabsBlock:
    """One absorber block of the jonabs table (e.g. ``"FeI"``, ``"MgI"``), parsed and cached."""
    return _jonabs_blocks()[name]


def _metal_sigma(wl: torch.Tensor, T: torch.Tensor, blk: JonabsBlock) -> torch.Tensor:
    """Level-summed g σ table [cm²] at (wl (W,), T (..., L)) → (..., L, W)."""
    wg = as_tensor(blk.wavelength, wl)
    tab = as_tensor(blk.table, wl)                     # (nT, nλ)
    tw = interp1d(wl, wg, tab.transpose(0, 1))         # (W, nT), linear in λ
    inside = ((wl >= wg[0]) & (wl <= wg[-1])).to(tw.dtype)
    if blk.ilogt:
        tw = torch.log(tw.clamp_min(1e-37))
    q = 5040.0 / T if blk.iteta else T
    out = interp_layers(q, as_tensor(blk.tgrid, wl), tw)
    if blk.ilogt:
        out = torch.exp(out)
    return out * inside


def metal_bf_species(wl, T, n_stage, U_stage, name: str, stim: torch.Tensor | None = None):
    """Bound-free α [cm⁻¹] (..., L, W) of one jonabs species; ``n_stage``, ``U_stage`` (..., L)."""
    sig = _metal_sigma(wl, T, read_jonabs_block(name))
    return sig * layer(n_stage / U_stage) * (stim_factor(wl, T) if stim is None else stim)


def metal_bf(wl, T, atoms, U, species=None):
    """Sum of metal bound-free α [cm⁻¹] (..., L, W) over ``species`` (default: all of
    :data:`METAL_BF_SPECIES`); ``atoms``/``U`` (..., L, 93, 3) number densities/partition functions."""
    names = list(METAL_BF_SPECIES) if species is None else list(species)
    total = None
    for nm in names:
        Z, ion = METAL_BF_SPECIES[nm]
        a = _metal_sigma(wl, T, read_jonabs_block(nm)) * layer(atoms[..., Z, ion] / U[..., Z, ion])
        total = a if total is None else total + a
    return total * stim_factor(wl, T)


def metal_bf_cross_sections(wl, T, species=None) -> torch.Tensor:
    """Per-species σ_X(λ, T) (1 − e^{−hν/kT}) [cm²], stacked (S, ..., L, W) over ``species``
    (default: all of :data:`METAL_BF_SPECIES`, in its order): ``metal_bf`` is
    Σ_X this · n(X)/U(X), so these are its partial derivatives with respect to n(X)/U(X)."""
    names = list(METAL_BF_SPECIES) if species is None else list(species)
    stim = stim_factor(wl, T)
    return torch.stack([_metal_sigma(wl, T, read_jonabs_block(nm)) * stim for nm in names])
