"""Kurucz ASCII molecular line lists (as read by SYNTHE's ``rmolecasc``), e.g. BasicATLAS'
``chmasseron_corrected.asc.gz`` (CH, Masseron et al. 2014) and ``mgh_exomol.asc.gz``
(MgH, ExoMol, Owens et al. 2022).

Fixed format, one line per transition (Fortran
``F10.4,F7.3,F5.1,F10.3,F5.1,F11.3,I4,A1,I2,A1,I1,3X,A1,I2,A1,I1,3X,I2``)::

    cols  1-10  λ (nm)       11-17 log gf     18-22 J        23-32 E  (cm⁻¹)
         33-37  J'           38-48 E' (cm⁻¹)  49-52 molecule code (106 = CH, 112 = MgH, ...)
         53-68  level labels                  69-70 isotope (mass number of the heavy atom)

Medium: Kurucz lists give **air** wavelengths above 200 nm (vacuum below), the
convention of all his line lists; checked here: 1e7/|E' − E| (the vacuum wavenumber)
equals the listed λ × n_air to 1e-4. Converted to vacuum Å with ``io.airvac``.
E_lower = min(|E|, |E'|) (negative energies mark predicted levels) in eV.
The molecule code is the Z of the atoms (2 digits each after the first); the isotope
(12/13 for CH, 24/25/26 for MgH) belongs to the heaviest atom, the other atoms are the
most abundant isotope (¹H). log gf is per isotopologue (SYNTHE adds the log isotopic
fraction): we fold the terrestrial fraction in, as for the other formats.
Damping is not in this format (SYNTHE assigns defaults): NaN columns.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...io.airvac import air_to_vacuum
from .core import LineList
from .species import ISOTOPES, isotope_fraction, molecule_mass, molecule_name
from ._text import column_float, column_str, fixed_width_block, read_lines

__all__ = ["read_kurucz_molecules", "BASICATLAS_CH", "BASICATLAS_MGH"]

BASICATLAS_CH = "linelists/basicatlas_molecules/chmasseron_corrected.asc.gz"
BASICATLAS_MGH = "linelists/basicatlas_molecules/mgh_exomol.asc.gz"
_CM1_PER_EV = 8065.543937


def _code_atoms(code: int) -> tuple[int, ...]:
    digits, zs = str(code), []
    while len(digits) > 2:
        zs.insert(0, int(digits[-2:]))
        digits = digits[:-2]
    zs.insert(0, int(digits))
    return tuple(zs)


def read_kurucz_molecules(path, wl_range: tuple[float, float] | None = None,
                          source: str | None = None) -> LineList:
    """Read a Kurucz ASCII molecular list (plain or .gz); wl_range in Å vacuum."""
    path = Path(path)
    lines = [ln for ln in read_lines(path) if ln.strip()]
    block = fixed_width_block(lines, 74)
    wl_air = column_float(block, 0, 10) * 10.0  # nm -> Å
    keep = np.isfinite(wl_air)
    if wl_range is not None:
        keep &= (wl_air >= wl_range[0] * 0.999) & (wl_air <= wl_range[1] * 1.0001)
    block, wl_air = block[keep], wl_air[keep]
    log_gf = column_float(block, 10, 17)
    e1 = np.abs(column_float(block, 22, 32))
    e2 = np.abs(column_float(block, 37, 48))
    codes = column_str(block, 48, 52).astype(int)
    isos = column_float(block, 68, 70, blank=0).astype(int)
    names = np.empty(len(codes), dtype=object)
    mass = np.empty(len(codes))
    frac = np.ones(len(codes))
    for code, iso in set(zip(codes.tolist(), isos.tolist())):
        zs = _code_atoms(code)
        heavy = max(range(len(zs)), key=lambda i: zs[i])
        isotopes = [min(ISOTOPES.get(z, {1: 0}), key=lambda a: -ISOTOPES[z][a][1]) if z in ISOTOPES else None
                    for z in zs]  # most abundant isotope of each atom ...
        if iso:
            isotopes[heavy] = iso  # ... except the one the list names
        sel = (codes == code) & (isos == iso)
        names[sel] = molecule_name(zs)
        mass[sel] = molecule_mass(zs, isotopes)
        frac[sel] = isotope_fraction(zs[heavy], iso) if iso else 1.0
    wl = air_to_vacuum(wl_air)
    with np.errstate(divide="ignore"):
        log_gf = log_gf + np.log10(frac)
    sel = frac > 0
    if wl_range is not None:
        sel &= (wl >= wl_range[0]) & (wl <= wl_range[1])
    ll = LineList(wavelength=wl[sel], species=names[sel].astype(str), Z=0, charge=0,
                  log_gf=log_gf[sel], E_lower=np.minimum(e1, e2)[sel] / _CM1_PER_EV, mass=mass[sel],
                  isotope_fraction=frac[sel], source=source or f"kurucz:{path.name.split('.')[0]}",
                  meta={"file": str(path), "format": "Kurucz molecular ASCII", "medium": "air"})
    return ll.sorted()
