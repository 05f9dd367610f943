"""Table input/output for calibration: read results and reference catalogs, map their
columns to the label schema, cross-match them, and write tables atomically.

Every table leaves :func:`read_table` with schema column names: the labels as in
``phdlspec_app.labels`` (``teff`` in K, ``logg`` in dex, ``fe_h`` and ``x_fe`` in dex),
their errors as ``<label>_err`` (or ``_err_lo``/``_err_hi``), and identifier and
position columns (``obsid``, ``id``, ``designation``, ``file``, ``ra``, ``dec`` in deg)
left as they were. Columns that are not labels are kept unchanged.
"""
from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np

from ..labels import LabelError, abundance_labels, canonical_name, label_names

__all__ = [
    "CalibrationInputError",
    "read_table",
    "normalize_columns",
    "find_id_column",
    "find_radec_columns",
    "crossmatch",
    "write_table",
    "float_column",
    "ID_COLUMNS",
]

#: Identifier columns tried, in this order, when none is named.
ID_COLUMNS = ("obsid", "id", "designation", "file")

# Catalog sentinels for "no measurement" (APOGEE -9999, some GALAH exports 9999).
_SENTINEL = 9000.0


class CalibrationInputError(ValueError):
    """A calibration input (results, pairs, cluster or reference table) that cannot be used.

    The message always starts with the file (or "table") and says what is wrong.
    """


_ERR_PATTERNS = (
    (re.compile(r"^(?:e_|err_|sig_|sigma_)(.+)$", re.I), ""),  # GALAH e_teff, e_fe_h
    (re.compile(r"^(.+?)_(?:err|error|sigma|sig|e)$", re.I), ""),  # APOGEE TEFF_ERR
    (re.compile(r"^(.+?)_err_lo$", re.I), "_lo"),
    (re.compile(r"^(.+?)_err_hi$", re.I), "_hi"),
)
_XH = re.compile(r"^_*\[?([a-z]{1,2})[_/]h\]?_*$", re.I)  # MG_H, [Mg/H], VizieR __Mg_H_


def _label_of(col: str) -> str | None:
    try:
        return canonical_name(col)
    except LabelError:
        return None


def _map_column(col: str) -> tuple[str | None, bool]:
    """Schema name for a column (value or error column) and whether the match is exact."""
    lab = _label_of(col)
    if lab is not None:
        # Exact spellings (FE_H -> fe_h) beat aliases (M_H -> fe_h) when both are present.
        return lab, col.strip().lower() == lab
    for pat, suffix in reversed(_ERR_PATTERNS):
        m = pat.match(col.strip())
        if m:
            base = _label_of(m.group(1))
            if base is not None:
                return f"{base}_err{suffix}", m.group(1).strip().lower() == base
    return None, False


def normalize_columns(table, mapping: Mapping[str, str] | None = None, source: str = "table"):
    """Rename a table's label and label-error columns to schema names, in place-free copy.

    Parameters
    ----------
    table : astropy Table
    mapping : optional explicit ``{column in file: schema name}`` (wins over detection;
        a schema name may be an alias such as ``[Mg/Fe]``)
    source : name used in error messages (the file)

    Sentinel values (|v| > 9000, APOGEE's -9999) and masked entries become NaN.
    ``[X/H]`` columns (``MG_H``, ``[Mg/H]``) give ``x_fe = x_h - fe_h`` when the table has
    no ``x_fe`` column for that element.
    """
    from astropy.table import Table

    out = Table(table, copy=True, masked=False)
    mapping = dict(mapping or {})
    for col in mapping:
        if col not in out.colnames:
            raise CalibrationInputError(
                f"{source}: column {col!r} named in the column mapping is not in the table "
                f"(columns: {', '.join(out.colnames[:40])})")
    chosen: dict[str, tuple[str, bool]] = {}
    for col in out.colnames:
        if col in mapping:
            tgt = mapping[col]
            try:
                tgt = canonical_name(tgt)
            except LabelError:
                pass  # an error column or an identifier: taken as written
            chosen[tgt] = (col, True)
            continue
        name, exact = _map_column(col)
        if name is None or name in mapping.values():
            continue
        if name in chosen:
            prev, prev_exact = chosen[name]
            if prev_exact == exact:
                raise CalibrationInputError(
                    f"{source}: columns {prev!r} and {col!r} both map to {name!r}; "
                    f"name the one to use with a column mapping")
            if prev_exact:
                continue
        chosen[name] = (col, exact)
    renames = {col: name for name, (col, _) in chosen.items() if col != name}
    # Free target names held by other (unmapped) columns before renaming.
    for col, name in renames.items():
        if name in out.colnames and name not in renames:
            out.rename_column(name, f"{name}_orig")
    tmp = {col: f"__tmp_{i}" for i, col in enumerate(renames)}
    for col, t in tmp.items():
        out.rename_column(col, t)
    for col, name in renames.items():
        out.rename_column(tmp[col], name)
    numeric = set(label_names()) | {f"{n}_err{s}" for n in label_names() for s in ("", "_lo", "_hi")}
    for name in chosen:
        if name not in numeric:
            continue  # an identifier or position named by the mapping: left as it is
        col = out[name]
        try:
            vals = np.ma.filled(np.ma.asarray(col).astype(float), np.nan)
        except (TypeError, ValueError):
            raise CalibrationInputError(f"{source}: column {chosen[name][0]!r} ({name}) is not numeric")
        vals[np.abs(vals) > _SENTINEL] = np.nan
        out[name] = vals
    # [X/H] -> [X/Fe] where only [X/H] is given.
    if "fe_h" in out.colnames:
        for col in list(out.colnames):
            m = _XH.match(col.strip())
            if not m or m.group(1).lower() == "fe":
                continue
            xfe = f"{m.group(1).lower()}_fe"
            if xfe in label_names() and xfe not in out.colnames:
                xh = np.array(out[col], dtype=float)
                xh[np.abs(xh) > _SENTINEL] = np.nan
                out[xfe] = xh - np.asarray(out["fe_h"], dtype=float)
    return out


def read_table(path, mapping: Mapping[str, str] | None = None, hdu: int | str | None = None):
    """Read a results or reference table (FITS, ECSV, CSV, Parquet) with schema column names.

    Parameters
    ----------
    path : file name; the format comes from the suffix (``.fits``/``.fit``/``.fits.gz``,
        ``.ecsv``, ``.csv``/``.txt``, ``.parquet``/``.pq``)
    mapping : optional ``{column in file: schema name}``
    hdu : FITS extension (default: the first table)

    Raises
    ------
    CalibrationInputError
        naming the file when it is missing, unreadable, empty, or of unknown format.
    """
    from astropy.table import Table

    path = Path(path)
    if not path.is_file():
        raise CalibrationInputError(f"{path}: no such file")
    name = path.name.lower()
    try:
        with warnings.catch_warnings():
            # Catalog units such as '[Sun]' or 'log(cm.s**-2)' are not FITS units; the
            # values are what matter here.
            warnings.simplefilter("ignore")
            if name.endswith((".fits", ".fit", ".fits.gz", ".fts")):
                table = Table.read(path, format="fits", **({"hdu": hdu} if hdu is not None else {}))
            elif name.endswith(".ecsv"):
                table = Table.read(path, format="ascii.ecsv")
            elif name.endswith((".csv", ".txt")):
                table = Table.read(path, format="ascii.csv", comment="#")
            elif name.endswith((".parquet", ".pq")):
                table = Table.read(path, format="parquet")
            else:
                raise CalibrationInputError(
                    f"{path}: unknown table format (use .fits, .ecsv, .csv or .parquet)")
    except CalibrationInputError:
        raise
    except Exception as exc:  # astropy raises many kinds; say which file and why
        raise CalibrationInputError(f"{path}: cannot read as a table: {type(exc).__name__}: {exc}") from exc
    if len(table) == 0:
        raise CalibrationInputError(f"{path}: the table has no rows")
    table = normalize_columns(table, mapping, source=str(path))
    table.meta["source_file"] = str(path)
    return table


def _source(table) -> str:
    return str(table.meta.get("source_file", "table"))


def find_id_column(table, column: str | None = None) -> str:
    """The identifier column: ``column`` if given, else the first of :data:`ID_COLUMNS` present
    (case-insensitive)."""
    lower = {c.lower(): c for c in table.colnames}
    if column is not None:
        if column in table.colnames:
            return column
        if column.lower() in lower:
            return lower[column.lower()]
        raise CalibrationInputError(f"{_source(table)}: no identifier column {column!r} "
                                    f"(columns: {', '.join(table.colnames[:40])})")
    for cand in ID_COLUMNS:
        # `phdlspec fit` writes obsid/designation as "" when the file has none: skip those.
        if cand in lower and any(v.lower() not in NO_ID for v in id_strings(table[lower[cand]])):
            return lower[cand]
    raise CalibrationInputError(
        f"{_source(table)}: no identifier column found (looked for {', '.join(ID_COLUMNS)}); "
        f"name one with --match-on or match by position with --match-radius")


_RA = ("ra", "raj2000", "_raj2000", "ra_j2000", "ra_deg", "radeg")
_DEC = ("dec", "dej2000", "_dej2000", "dec_j2000", "dec_deg", "dedeg", "decj2000")


def find_radec_columns(table) -> tuple[str, str]:
    """Names of the RA and Dec columns (deg) of a table."""
    lower = {c.lower(): c for c in table.colnames}
    ra = next((lower[c] for c in _RA if c in lower), None)
    dec = next((lower[c] for c in _DEC if c in lower), None)
    if ra is None or dec is None:
        raise CalibrationInputError(f"{_source(table)}: no RA/Dec columns (looked for {', '.join(_RA)} "
                                    f"and {', '.join(_DEC)})")
    return ra, dec


#: Identifier values that identify nothing (phdlspec fit writes "" when a file has no obsid).
NO_ID = {"", "nan", "none", "--", "null", "-1"}


def id_strings(column) -> np.ndarray:
    """Identifiers as stripped strings (ints and bytes alike), so 123 matches '123'."""
    out = []
    for v in np.asarray(column):
        if isinstance(v, bytes):
            v = v.decode(errors="replace")
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        out.append(str(v).strip())
    return np.array(out, dtype=object)


def crossmatch(ours, ref, on: str | None = None, ref_on: str | None = None,
               radius_arcsec: float | None = None, suffix: str = "_ref"):
    """Join our results to a reference table, one row per matched star.

    Parameters
    ----------
    ours, ref : tables with schema column names (from :func:`read_table`)
    on : identifier column of ``ours`` (auto-detected if None and no radius given)
    ref_on : identifier column of ``ref`` (default: the same name as ``on``)
    radius_arcsec : match by sky position instead, within this radius (arcsec); each of our
        stars takes its nearest reference star
    suffix : appended to the reference's columns in the joined table

    Returns
    -------
    astropy Table: every column of ``ours`` as is, and every column of ``ref`` with
    ``suffix`` (``teff_ref``, ``mg_fe_ref`` …), plus ``match_sep_arcsec`` for positional matches.
    """
    from astropy.table import Table, hstack

    if radius_arcsec is not None:
        if not radius_arcsec > 0:
            raise CalibrationInputError(f"match radius must be > 0 arcsec, got {radius_arcsec}")
        import astropy.units as u
        from astropy.coordinates import SkyCoord

        ra1, de1 = find_radec_columns(ours)
        ra2, de2 = find_radec_columns(ref)
        # Stars without a position (NaN) take part in no match.
        r1, d1 = np.asarray(ours[ra1], float), np.asarray(ours[de1], float)
        r2, d2 = np.asarray(ref[ra2], float), np.asarray(ref[de2], float)
        f1 = np.flatnonzero(np.isfinite(r1) & np.isfinite(d1))
        f2 = np.flatnonzero(np.isfinite(r2) & np.isfinite(d2))
        if f1.size and f2.size:
            c1 = SkyCoord(r1[f1] * u.deg, d1[f1] * u.deg)
            c2 = SkyCoord(r2[f2] * u.deg, d2[f2] * u.deg)
            idx, sep, _ = c1.match_to_catalog_sky(c2) if f2.size > 1 else (np.zeros(f1.size, int), c1.separation(c2[0]), None)
            sep = sep.to_value(u.arcsec)
        else:
            idx, sep = np.zeros(0, int), np.zeros(0)
        keep = sep <= radius_arcsec
        i_ours, i_ref = f1[keep], f2[idx[keep]]
        extra = {"match_sep_arcsec": sep[keep]}
    else:
        on = find_id_column(ours, on)
        ref_on = find_id_column(ref, ref_on or on)
        a, b = id_strings(ours[on]), id_strings(ref[ref_on])
        first = {}
        for j, v in enumerate(b):
            if v.lower() not in NO_ID:  # an empty identifier matches nothing
                first.setdefault(v, j)
        pairs = [(i, first[v]) for i, v in enumerate(a) if v in first]
        i_ours = np.array([p[0] for p in pairs], dtype=int)
        i_ref = np.array([p[1] for p in pairs], dtype=int)
        extra = {}
    if i_ours.size == 0:
        how = f"within {radius_arcsec} arcsec" if radius_arcsec is not None else f"on {on!r}/{ref_on!r}"
        raise CalibrationInputError(f"{_source(ours)} x {_source(ref)}: no star matched {how}")
    left = ours[i_ours]
    right = Table(ref[i_ref], copy=True)
    right.meta = {}
    right.rename_columns(right.colnames, [c + suffix for c in right.colnames])
    out = hstack([left, right], metadata_conflicts="silent")
    for k, v in extra.items():
        out[k] = v
    out.meta = dict(ours.meta)
    return out


def write_table(table, path, overwrite: bool = True) -> Path:
    """Write a table (format from the suffix: .ecsv, .fits, .csv, .parquet) to a temporary
    file beside ``path`` and rename it, so a reader never sees half a file."""
    path = Path(path)
    name = path.name.lower()
    fmt = ("ascii.ecsv" if name.endswith(".ecsv") else "fits" if name.endswith((".fits", ".fit"))
           else "ascii.csv" if name.endswith(".csv") else "parquet" if name.endswith((".parquet", ".pq"))
           else None)
    if fmt is None:
        raise CalibrationInputError(f"{path}: unknown output format (use .ecsv, .fits, .csv or .parquet)")
    if path.exists() and not overwrite:
        raise CalibrationInputError(f"{path}: exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table.write(tmp, format=fmt, overwrite=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def float_column(table, name: str) -> np.ndarray:
    """A column as floats, or all NaN when the table lacks it."""
    if name not in table.colnames:
        return np.full(len(table), np.nan)
    return np.asarray(table[name], float)


def measured_column(table, name: str) -> np.ndarray:
    """A label's column as floats, NaN where the fit says it is not a measurement: the row's
    ``flags`` (``;``-separated, as ``phdlspec fit`` writes them) hold ``at_bound:<name>``
    (the optimum sat on the search box's edge: the value is the bound, not the star's).
    ``unconstrained`` labels are NaN in the results already. A calibration fitted to bound
    values would learn the box, not the method."""
    y = float_column(table, name)
    if "flags" in table.colnames:
        tag = f"at_bound:{name}"
        bound = np.array([tag in str(f).split(";") for f in table["flags"]], bool)
        y = np.where(bound, np.nan, y)
    return y


def abundance_names() -> list[str]:
    """``fe_h`` and the ``x_fe`` labels."""
    return [lab.name for lab in abundance_labels()]
