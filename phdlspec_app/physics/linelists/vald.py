"""VALD3 extract files, "long" and "short" formats (Ryabchikova et al. 2015, Phys. Scr. 90,
054005; format description: VALD3 manual, "Extract" output).

Each line record starts with the quoted species (``'Fe 1',`` = Fe I, ``'CN 1',``) followed
by comma-separated numbers; the header names the columns and units:

* long (4 text lines per line): λ, log gf, E_low, J_lo, E_up, J_up, Landé lower/upper/mean,
  Rad., Stark, Waals[, central depth]; then two level-label lines and a reference line;
* short "extract all/element": λ, E_low, log gf, Rad., Stark, Waals, Landé, 'references';
* short "extract stellar": λ, E_low, Vmic, log gf, Rad., Stark, Waals, Landé, depth, 'refs'.

Header keys used: ``WL_air(A)`` / ``WL_vac(A)`` (medium; air converted to vacuum here),
``E_low(eV)`` / ``E_low(cm^-1)`` / ``Excit(eV)`` (energy unit).

Damping (VALD conventions): Rad. = log10 γ_rad (s⁻¹), Stark = log10 γ₄ per electron cm⁻³ at
10⁴ K, both 0 when missing (→ NaN); Waals < 0: log10 γ₆ per H atom cm⁻³ at 10⁴ K;
Waals > 0: ABO σ.α (int part σ in a₀², fractional part α); 0: missing.
log gf* already includes the solar isotopic fraction for isotope-resolved lines.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...io.airvac import air_to_vacuum
from .core import LineList
from .species import ATOMIC_WEIGHT, atom_name, element_z, molecule_mass, molecule_name

__all__ = ["read_vald"]

_RECORD = re.compile(r"^'([A-Za-z][A-Za-z0-9]*)\s+(\d+)',\s*([-+0-9.eE,\s]+?)\s*(?:,\s*'.*)?$")
_CM1_PER_EV = 8065.543937  # CODATA 2018
_FORMULA = re.compile(r"([A-Z][a-z]?)(\d*)")


def _species(token: str, ion: int):
    """(name, Z, charge, mass) of a VALD species token ("Fe", "CN", "TiO", "C2")."""
    charge = ion - 1
    try:
        z = element_z(token)
        if token[0].isupper() and (len(token) == 1 or token[1:].islower()):
            return atom_name(z, charge), z, charge, float(ATOMIC_WEIGHT[z])
    except KeyError:
        pass
    zs = []
    for sym, count in _FORMULA.findall(token):
        zs += [element_z(sym)] * (int(count) if count else 1)
    name = molecule_name(tuple(zs)) + ("" if charge == 0 else "+" * charge)
    return name, 0, charge, molecule_mass(zs)


def read_vald(path, wl_range: tuple[float, float] | None = None, drop_hydrogen: bool = True) -> LineList:
    """Read a VALD3 long- or short-format extract (stellar, all or element)."""
    path = Path(path)
    text = path.read_text(encoding="latin-1").splitlines()
    header = "\n".join(text[:4])
    m = re.search(r"WL_(air|vac)\((A|nm)\)", header)
    if not m:
        raise ValueError(f"{path}: no WL_air(...)/WL_vac(...) in the header: not a VALD extract")
    medium, wl_unit = m.groups()
    energy_cm = bool(re.search(r"(E_low|Excit)\(cm\^-1\)", header))
    first = next(ln for ln in text[:4] if ln.strip().split()[:1] in (["Lande"], ["Damping"]))
    long_format = first.split()[0] == "Lande"
    stellar = "Vmic" in header or "depth" in header
    if long_format:
        idx = dict(wl=0, loggf=1, elow=2, rad=9, stark=10, waals=11)
    elif "Vmic" in header:
        idx = dict(wl=0, elow=1, loggf=3, rad=4, stark=5, waals=6)
    else:
        idx = dict(wl=0, elow=1, loggf=2, rad=3, stark=4, waals=5)
    rows, spec = [], []
    for line in text:
        rec = _RECORD.match(line)
        if not rec:
            continue
        nums = [float(t) for t in rec.group(3).replace(",", " ").split()]
        if len(nums) <= max(idx.values()):
            continue  # a label or reference line that happens to look numeric
        rows.append([nums[idx[k]] for k in ("wl", "loggf", "elow", "rad", "stark", "waals")])
        spec.append((rec.group(1), int(rec.group(2))))
    if not rows:
        raise ValueError(f"{path}: no VALD line records found")
    a = np.array(rows)
    wl = a[:, 0] * (10.0 if wl_unit == "nm" else 1.0)
    if medium == "air":
        wl = air_to_vacuum(wl)
    elow = a[:, 2] / (_CM1_PER_EV if energy_cm else 1.0)
    rad, stark, waals = a[:, 3], a[:, 4], a[:, 5]
    uniq = sorted(set(spec))
    table = {s: _species(*s) for s in uniq}
    name = np.array([table[s][0] for s in spec])
    Z = np.array([table[s][1] for s in spec], np.int16)
    charge = np.array([table[s][2] for s in spec], np.int16)
    mass = np.array([table[s][3] for s in spec])
    abo = waals > 0
    sigma = np.floor(waals)
    cols = dict(
        wavelength=wl, species=name, Z=Z, charge=charge, log_gf=a[:, 1], E_lower=elow, mass=mass,
        gamma_rad=np.where(rad != 0, 10.0 ** rad, np.nan),
        gamma_stark=np.where(stark != 0, 10.0 ** stark, np.nan),
        vdw_log_gamma6=np.where(waals < 0, waals, np.nan),
        abo_sigma=np.where(abo, sigma, np.nan),
        abo_alpha=np.where(abo, np.round(waals - sigma, 3), np.nan),
    )
    keep = np.ones(wl.shape, bool)
    if drop_hydrogen:
        keep &= Z != 1
    if wl_range is not None:
        keep &= (wl >= wl_range[0]) & (wl <= wl_range[1])
    fmt = ("long" if long_format else "short") + (" stellar" if stellar else "")
    ll = LineList(**{k: v[keep] for k, v in cols.items()}, source="VALD",
                  meta={"file": str(path), "format": f"VALD3 {fmt}", "medium": medium})
    return ll.sorted()
