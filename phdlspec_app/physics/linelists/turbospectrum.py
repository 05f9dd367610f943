"""Turbospectrum (v19/v20) line lists, e.g. the Gaia-ESO v6 list (Heiter et al. 2021).

Format (``shared/physics/linelists/ges_v6_turbospectrum/Readme-Linelist_format``): blocks
of lines, each opened by two header lines::

    '  26.000            '    1       2342      <- species code, ion stage (1 = neutral), count
    'Fe I    NLTE'                              <- name (and an NLTE flag we ignore)
      5269.537  0.859 -1.324  237.249    9.0  1.51E+07  0.000  's' 'p'  0.0  1.0 'Fe I ...'

Line fields: λ (Å, **air**), E_lower (eV), log gf, fdamp, g_upper, γ_rad (s⁻¹, linear),
[γ_Stark (optional)], then quoted level labels. Conversions:

* species code ``Z.AAA`` for atoms (26.000 = Fe, 63.151 = 151Eu); molecules
  ``ZZZZ.AAABBB`` (106.000012 = CH with 12C, 822.000048 = TiO with 48Ti): the isotope
  lines carry the unscaled gf (the 151Eu and 153Eu hfs components of Eu II 6645 each sum
  to the full gf), so the terrestrial isotopic fraction is folded into ``log_gf``;
* fdamp ≥ 20: ABO σ.α packed (σ = int part in a₀², α = fractional part) →
  ``abo_sigma``, ``abo_alpha``; fdamp < 0: log10 γ₆ per H atom at 10⁴ K →
  ``vdw_log_gamma6``; 0 < fdamp < 20: Unsöld enhancement factor (typically 2.5) →
  ``vdw_enhancement``. (Turbospectrum would also try a generic ABO recipe from the
  s/p/d labels for these; we don't.)
* γ_rad: 0 means "compute from gf" and 1.00E+05 is the placeholder the GES list uses
  for lines without data (28 278 lines, e.g. all rare-earth lines; a true γ_rad is
  ~10⁷–10⁹ s⁻¹): both → NaN (classical).
* γ_Stark: present only in some blocks and 0 in this list (→ NaN); a nonzero value is
  read, as in VALD which Turbospectrum lists are converted from, as log10 γ₄ per
  electron at 10⁴ K.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...io.airvac import air_to_vacuum
from .core import LineList
from .species import atom_name, isotope_fraction, isotope_mass, molecule_mass, molecule_name

__all__ = ["read_turbospectrum", "read_ges_turbospectrum", "GES_LINELIST", "parse_ts_code"]

GES_LINELIST = "linelists/ges_v6_turbospectrum/nlte_ges_linelist_jmg17feb2022_I_II"
_GAMMA_RAD_PLACEHOLDER = 1.0e5


def parse_ts_code(code: str, ion: int) -> dict:
    """Decode a Turbospectrum species code and ion stage (1 = neutral)."""
    ipart, _, frac = code.strip().partition(".")
    n = int(ipart)
    charge = ion - 1
    if n < 100:
        a = int(frac) if frac and int(frac) > 0 else None
        return dict(name=atom_name(n, charge), Z=n, charge=charge, mass=isotope_mass(n, a),
                    isotope_fraction=isotope_fraction(n, a), molecule=False)
    digits, zs = ipart.lstrip("0"), []
    while len(digits) > 2:
        zs.insert(0, int(digits[-2:]))
        digits = digits[:-2]
    zs.insert(0, int(digits))
    frac = frac.ljust(3 * len(zs), "0")
    isos = [int(frac[3 * i:3 * i + 3]) or None for i in range(len(zs))]
    f = float(np.prod([isotope_fraction(z, a) for z, a in zip(zs, isos)]))
    if len(zs) == 2 and zs[0] == zs[1] and all(isos) and isos[0] != isos[1]:
        f *= 2.0  # mixed isotopologue of a homonuclear molecule (see species.py)
    return dict(name=molecule_name(tuple(zs)), Z=0, charge=charge, mass=molecule_mass(zs, isos),
                isotope_fraction=f, molecule=True)


def read_turbospectrum(path, wl_range: tuple[float, float] | None = None, source: str = "turbospectrum",
                       drop_hydrogen: bool = True) -> LineList:
    """Read a Turbospectrum-format line list (air wavelengths → vacuum).

    wl_range: (min, max) Å vacuum, optional. Hydrogen lines are dropped by default."""
    path = Path(path)
    cols = {k: [] for k in ("wl", "elow", "loggf", "fdamp", "grad", "gstark")}
    block_info, block_len = [], []
    with open(path, "r", encoding="latin-1") as fh:
        text = fh.read().splitlines()
    i = 0
    while i < len(text):
        line = text[i]
        if not line.strip():
            i += 1
            continue
        if not line.startswith("'"):
            raise ValueError(f"{path}:{i + 1}: expected a species header, got {line[:40]!r}")
        code = line.split("'")[1]
        ion, count = (int(t) for t in line.split("'")[2].split()[:2])
        info = parse_ts_code(code, ion)
        i += 2  # skip the name line
        for line in text[i:i + count]:
            tok = line.split()
            cols["wl"].append(tok[0])
            cols["elow"].append(tok[1])
            cols["loggf"].append(tok[2])
            cols["fdamp"].append(tok[3])
            cols["grad"].append(tok[5])
            cols["gstark"].append(tok[6] if not tok[6].startswith("'") else "0")
        block_info.append(info)
        block_len.append(count)
        i += count
    arr = {k: np.array(v, dtype=np.float64) for k, v in cols.items()}

    def rep(key, dtype=float):  # a per-block value repeated for each line of the block
        return np.repeat(np.array([b[key] for b in block_info], dtype=dtype), block_len)

    Z, frac = rep("Z", np.int16), rep("isotope_fraction")
    fdamp, grad, gstark = arr["fdamp"], arr["grad"], arr["gstark"]
    abo = fdamp >= 20
    with np.errstate(divide="ignore"):
        log_gf = arr["loggf"] + np.log10(frac)
    ll_cols = dict(
        wavelength=air_to_vacuum(arr["wl"]), species=np.array([b["name"] for b in block_info])[
            np.repeat(np.arange(len(block_info)), block_len)],
        Z=Z, charge=rep("charge", np.int16), log_gf=log_gf, E_lower=arr["elow"], mass=rep("mass"),
        isotope_fraction=frac,
        gamma_rad=np.where((grad > 0) & (grad != _GAMMA_RAD_PLACEHOLDER), grad, np.nan),
        gamma_stark=np.where(gstark != 0, 10.0 ** gstark, np.nan),
        vdw_log_gamma6=np.where(fdamp < 0, fdamp, np.nan),
        abo_sigma=np.where(abo, np.floor(fdamp), np.nan),
        abo_alpha=np.where(abo, np.round(fdamp - np.floor(fdamp), 3), np.nan),
        vdw_enhancement=np.where((fdamp > 0) & (fdamp < 20), fdamp, np.nan),
    )
    keep = np.ones(len(arr["wl"]), bool)
    if drop_hydrogen:
        keep &= Z != 1
    keep &= frac > 0
    if wl_range is not None:
        keep &= (ll_cols["wavelength"] >= wl_range[0]) & (ll_cols["wavelength"] <= wl_range[1])
    ll = LineList(**{k: v[keep] for k, v in ll_cols.items()}, source=source,
                  meta={"file": str(path), "format": "Turbospectrum", "medium": "air"})
    return ll.sorted()


def read_ges_turbospectrum(path=None, wl_range: tuple[float, float] | None = None) -> LineList:
    """The Gaia-ESO v6 atomic list (``physics_dir()/`` + ``GES_LINELIST`` by default)."""
    if path is None:
        from ...paths import physics_dir
        path = physics_dir() / GES_LINELIST
    return read_turbospectrum(path, wl_range=wl_range, source="GES")
