"""Species names, codes, masses and isotopic fractions shared by the line-list readers.

Naming: atoms as ``"<Symbol> <roman charge + 1>"`` ("Fe I", "Ca II"); molecules by their
usual formula ("CH", "CN", "C2", "MgH", "TiO", "CO", "OH", "H2O"), the names the EOS
(``eos.solve_eos``) uses for molecular number densities.

Isotopes: an isotope-specific line (MOOG ``606.01213`` = 12C13C, GES block ``63.151`` =
151Eu, Kurucz ISO 13 = 13CH) carries, in those formats, the gf of the transition itself,
*not* scaled by the isotope's abundance; each code scales by the isotopic fraction at
synthesis time. Our readers fold the terrestrial (solar-system) fraction into ``log_gf``
and record it in ``isotope_fraction`` so that every consumer sees the right line strength
with the element's total abundance; to use another ratio (e.g. 12C/13C in a giant),
``log_gf - log10(isotope_fraction) + log10(new_fraction)``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ._elements import ATOMIC_WEIGHT, ISOTOPES, SYMBOLS

__all__ = ["SYMBOLS", "ATOMIC_WEIGHT", "ISOTOPES", "ROMAN", "atom_name", "molecule_name",
           "element_z", "isotope_mass", "isotope_fraction", "molecule_mass", "parse_moog_code"]

ROMAN = ("I", "II", "III", "IV", "V", "VI")
_Z_OF = {s: z for z, s in enumerate(SYMBOLS) if s}

# Names for molecules whose conventional formula is not simply the element order of the
# code (MOOG writes CH as 106 = H + C, TiO as 822 = O + Ti).
_MOLECULE_NAMES = {
    (1, 1): "H2", (1, 6): "CH", (1, 7): "NH", (1, 8): "OH", (1, 9): "HF", (1, 12): "MgH",
    (1, 14): "SiH", (1, 17): "HCl", (1, 20): "CaH", (1, 26): "FeH", (6, 6): "C2",
    (6, 7): "CN", (6, 8): "CO", (7, 8): "NO", (8, 8): "O2", (8, 14): "SiO", (8, 22): "TiO",
    (8, 23): "VO", (8, 40): "ZrO", (1, 1, 8): "H2O",
}


def element_z(symbol: str) -> int:
    """Atomic number of an element symbol ("Fe" -> 26); KeyError when unknown."""
    return _Z_OF[symbol.strip().capitalize()]


def atom_name(z: int, charge: int) -> str:
    """Spectroscopic name, e.g. (26, 1) -> "Fe II"."""
    return f"{SYMBOLS[z]} {ROMAN[charge]}"


def molecule_name(zs: tuple[int, ...]) -> str:
    """Conventional formula of a molecule from its atomic numbers (any order)."""
    key = tuple(sorted(zs))
    if key in _MOLECULE_NAMES:
        return _MOLECULE_NAMES[key]
    # generic: heavier atoms first, hydrogen last, counts as subscripts
    counts: dict[int, int] = {}
    for z in sorted(zs, key=lambda z: (z == 1, -z)):
        counts[z] = counts.get(z, 0) + 1
    return "".join(SYMBOLS[z] + (str(n) if n > 1 else "") for z, n in counts.items())


def isotope_mass(z: int, a: int | None) -> float:
    """Mass (amu) of isotope A of element Z; the standard atomic weight when A is None/0
    or not a stable isotope in the table."""
    if a and a in ISOTOPES.get(z, {}):
        return ISOTOPES[z][a][0]
    if a:  # a radioactive or unlisted isotope: the mass number is within 0.1 amu
        return float(a)
    return float(ATOMIC_WEIGHT[z])


def isotope_fraction(z: int, a: int | None) -> float:
    """Terrestrial atom fraction of isotope A of element Z (1 when A is None/0).

    An isotope absent from the table (radioactive) gets 0: a line of it has no
    absorbers in a normal star."""
    if not a:
        return 1.0
    return ISOTOPES.get(z, {}).get(a, (0.0, 0.0))[1]


def molecule_mass(zs, isotopes=None) -> float:
    """Mass (amu) of a molecule from atomic numbers and optional mass numbers."""
    isotopes = isotopes or [None] * len(zs)
    return float(sum(isotope_mass(z, a) for z, a in zip(zs, isotopes)))


@lru_cache(maxsize=4096)
def parse_moog_code(code: str) -> dict:
    """Decode a MOOG species code (string as written in the line list).

    Atoms: ``Z.c[AAA]``: 26.0 = Fe I, 26.1 = Fe II, 3.0007 = 7Li I, 56.1135 = 135Ba II
    (first decimal = charge, further digits = mass number).
    Molecules: the integer part lists the atoms' Z (the first one or two digits, then two
    digits each: 606 = C C, 822 = O Ti, 10108 = H H O); decimals: charge digit then two
    digits per atom for the mass numbers in the same order (606.01213 = 12C 13C,
    822.01648 = 16O 48Ti, 108.00116 = 1H 16O); 108.0 = OH without isotopes.

    Returns dict(name, Z, charge, zs, isotopes, mass, isotope_fraction, molecule).
    """
    code = code.strip()
    ipart, _, frac = code.partition(".")
    n = int(ipart)
    charge = int(frac[0]) if frac else 0
    iso_digits = frac[1:].rstrip() if frac else ""
    if n < 100:  # atom
        a = int(iso_digits) if iso_digits and int(iso_digits) > 0 else None
        return dict(name=atom_name(n, charge), Z=n, charge=charge, zs=(n,), isotopes=(a,),
                    mass=isotope_mass(n, a), isotope_fraction=isotope_fraction(n, a),
                    molecule=False)
    digits = ipart
    zs = []
    while len(digits) > 2:
        zs.insert(0, int(digits[-2:]))
        digits = digits[:-2]
    zs.insert(0, int(digits))
    zs = tuple(zs)
    isotopes: tuple = (None,) * len(zs)
    if iso_digits and int(iso_digits) > 0:
        # two digits per atom, right-aligned (leading zeros may have been dropped)
        iso_digits = iso_digits.zfill(2 * len(zs))
        isotopes = tuple(int(iso_digits[2 * i:2 * i + 2]) or None for i in range(len(zs)))
    frac_iso = float(np.prod([isotope_fraction(z, a) for z, a in zip(zs, isotopes)]))
    if len(zs) == 2 and zs[0] == zs[1] and isotopes[0] and isotopes[1] and isotopes[0] != isotopes[1]:
        # a mixed isotopologue of a homonuclear molecule (12C13C) is formed two ways: its
        # share of the molecules is 2 f12 f13 (f12^2 + 2 f12 f13 + f13^2 = 1)
        frac_iso *= 2.0
    return dict(name=molecule_name(zs), Z=0, charge=charge, zs=zs, isotopes=isotopes,
                mass=molecule_mass(zs, isotopes), isotope_fraction=frac_iso, molecule=True)
