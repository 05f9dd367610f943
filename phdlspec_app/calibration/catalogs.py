"""Loaders for the real reference catalogs of the shared data (``<data>/catalogs``),
read in place, returned with schema column names.

* :func:`occam_cluster_means` — APOGEE DR14 OCCAM cluster means (Donor et al. 2018):
  [Fe/H] and 10 [X/Fe] (O, Mg, Si, Ca, V, Cr, Mn, Co, Ni; S is not a schema label and is
  dropped) with their errors, for e.g. NGC 2682 = M67.
* :func:`occam_members` — OCCAM membership (``MEMBER_FLAG``: ``GM`` are the members the
  cluster means were computed from — 35 for M67, equal to ``NUM_STARS`` —, ``DM`` and
  ``NM`` the less likely and non-members). Positions come from the 2MASS-style APOGEE_ID.
  Its FE_H column is unreliable (shared data README): use the flags only.
* :func:`galah_m67_field` — GALAH DR3 stars in the M67 field (Teff, log g, [Fe/H]).
* :func:`gaia_benchmark_stars` — Gaia FGK benchmark stars: v3 (Soubiran et al. 2023;
  Teff, log g, [Fe/H]) or v2.1 (Jofré et al. 2018; also [X/H] of Mg, Si, Ca, Ti, Sc, V,
  Cr, Mn, Co, Ni, converted to [X/Fe]).
"""
from __future__ import annotations

import re

import numpy as np

from ..paths import catalogs_dir
from .tables import CalibrationInputError, read_table

__all__ = ["occam_cluster_means", "occam_members", "galah_m67_field", "gaia_benchmark_stars",
           "twomass_radec", "cluster_key"]

_CLUSTER_ALIASES = {"m67": "ngc2682", "m 67": "ngc2682", "messier67": "ngc2682"}


def cluster_key(name: str) -> str:
    """A spelling-free key: ``NGC 2682``, ``NGC_2682``, ``ngc2682`` and ``M67`` are one cluster."""
    key = re.sub(r"[\s_]+", "", str(name).strip().lower())
    return _CLUSTER_ALIASES.get(key, key)


def _occam(kind: str, data_dir=None):
    return read_table(catalogs_dir(data_dir) / "clusters" / f"occam_{kind}-DR14.fits")


def occam_cluster_means(name: str = "NGC 2682", data_dir=None) -> dict:
    """``{label: (mean, error)}`` in dex for one OCCAM cluster (default M67 = NGC 2682)."""
    table = _occam("cluster", data_dir)
    keys = [cluster_key(n) for n in table["NAME"]]
    if cluster_key(name) not in keys:
        raise CalibrationInputError(f"cluster {name!r} is not in the OCCAM DR14 means "
                                    f"({', '.join(str(n) for n in table['NAME'])})")
    row = table[keys.index(cluster_key(name))]
    out = {}
    for col in table.colnames:
        if col.endswith("_err") or col + "_err" not in table.colnames:
            continue
        v, e = float(row[col]), float(row[col + "_err"])
        if np.isfinite(v):
            out[col] = (v, e)
    return {k: v for k, v in out.items() if k == "fe_h" or k.endswith("_fe")}


def twomass_radec(ids) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec (deg) from 2MASS designations (``2M08465424+1147146`` or ``08465424+1147146``:
    hhmmss.ss ±ddmmss.s); NaN where an id does not parse."""
    ra, dec = [], []
    pat = re.compile(r"(\d{2})(\d{2})(\d{4})([+-])(\d{2})(\d{2})(\d{3})")
    for s in ids:
        s = s.decode() if isinstance(s, bytes) else str(s)
        m = pat.search(s)
        if not m:
            ra.append(np.nan)
            dec.append(np.nan)
            continue
        h, mi, ss, sg, d, dm, ds = m.groups()
        ra.append(15.0 * (int(h) + int(mi) / 60 + int(ss) / 100 / 3600))
        sign = -1.0 if sg == "-" else 1.0
        dec.append(sign * (int(d) + int(dm) / 60 + int(ds) / 10 / 3600))
    return np.array(ra), np.array(dec)


def occam_members(name: str = "NGC 2682", flags=("GM",), data_dir=None):
    """OCCAM members of one cluster: ``apogee_id``, ``ra``, ``dec`` (deg, from the id),
    ``member_flag`` and the RV/[Fe/H]/PM membership probabilities; only rows whose flag is
    in ``flags`` (all rows with ``flags=None``)."""
    from astropy.table import Table

    table = _occam("member", data_dir)
    flag = np.char.strip(np.asarray(table["MEMBER_FLAG"]).astype(str))
    sel = np.array([cluster_key(c) == cluster_key(name) for c in np.asarray(table["CLUSTER"]).astype(str)])
    if not sel.any():
        raise CalibrationInputError(f"cluster {name!r} has no rows in the OCCAM DR14 member table")
    if flags is not None:
        sel &= np.isin(flag, list(flags))
    t = table[sel]
    ra, dec = twomass_radec(t["APOGEE_ID"])
    out = Table({"apogee_id": np.char.strip(np.asarray(t["APOGEE_ID"]).astype(str)), "ra": ra, "dec": dec,
                 "member_flag": flag[sel]})
    for col in ("RV_PROB", "FEH_PROB", "PM_PROB"):
        out[col.lower()] = np.asarray(t[col], float)
    out.meta["source_file"] = t.meta.get("source_file", "occam_member-DR14.fits")
    return out


def galah_m67_field(data_dir=None):
    """GALAH DR3 stars in the M67 field, with ``ra``/``dec`` (deg) from their 2MASS id."""
    t = read_table(catalogs_dir(data_dir) / "clusters" / "galah_dr3_allstar_m67_lite.csv")
    t["ra"], t["dec"] = twomass_radec(t["tmass_id"])
    return t


def gaia_benchmark_stars(version: str = "v3", data_dir=None):
    """Gaia FGK benchmark stars with schema columns (``teff`` K, ``logg``, ``fe_h`` dex; v2.1
    also ``x_fe``), ``ra``/``dec`` (deg) and a ``name`` (HIP/HD for v3, the star's name for v2.1)."""
    base = catalogs_dir(data_dir) / "benchmark_stars"
    if version == "v3":
        t = read_table(base / "gbs_v3_tmass_gaiadr3_hip_allwise_all_lite.fits")
        t["name"] = [f"{str(h).strip()} {str(d).strip()}".strip() for h, d in zip(t["hip"], t["hd"])]
        return t
    if version == "v2.1":
        t = read_table(base / "GALAH_DR3repo_GBS2.1.fits",
                       mapping={"__Fe_H_": "fe_h", "e__Fe_H_": "fe_h_err", "RAJ2000": "ra", "DEJ2000": "dec"})
        t["name"] = np.char.strip(np.asarray(t["StarID1"]).astype(str))
        return t
    raise CalibrationInputError(f"unknown Gaia benchmark version {version!r} (v3 or v2.1)")
