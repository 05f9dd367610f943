"""Plain-text spectra: two or three columns (wavelength, flux[, error]).

- Comment lines start with ``#``, ``%`` or ``!``; blank lines are skipped.
- The delimiter (comma, semicolon, tab or whitespace) is detected.
- A first line that is not numeric is a header. Header names choose the columns:
  wavelength (``wave``, ``wavelength``, ``lambda``, ``wl``; ``_nm``/``(nm)`` or
  ``_um`` in the name give the unit), ``flux``, and the third column's meaning
  (``ivar``/``invvar`` = inverse variance, ``var``/``variance``, anything with
  ``err``/``sig``/``unc``/``noise`` = 1-sigma error); ``air`` or ``vac`` in the
  wavelength name give the medium.
- Without a header the columns are taken in order; the third is a 1-sigma error
  unless ``third_column='ivar'`` or ``'var'`` is given. Without a third column
  the inverse variance is estimated from the data (``meta['ivar_estimated']``).
- The medium is vacuum unless the header or ``air=True`` says air.
"""
from __future__ import annotations

import re

import numpy as np

from .noise import estimate_ivar
from .spectrum import SpectrumFormatError
from .validate import finalize

__all__ = ["read_text"]

_COMMENT = ("#", "%", "!")
_MAX_COLUMNS = 64


def _split(line: str, delim):
    return [t.strip() for t in (line.split(delim) if delim else line.split())]


def _is_number(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False


def _third_kind(name: str) -> str:
    n = name.lower()
    if "ivar" in n or "invvar" in n or "inverse" in n or "weight" in n:
        return "ivar"
    if re.search(r"(^|[^a-z])var", n):
        return "var"
    return "sigma"


def read_text(text: str, source, air=None, third_column: str | None = None, wavelength_unit=None):
    """Parse a text spectrum (already decoded) into a :class:`Spectrum`."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(_COMMENT)]
    if not lines:
        raise SpectrumFormatError(source, "empty text file: no data lines")
    first = lines[0]
    delim = next((d for d in (",", ";", "\t") if d in first), None)
    header = None
    if not all(_is_number(t) for t in _split(first, delim) if t):
        header = [t.strip().strip('"\'') for t in _split(first, delim)]
        lines = lines[1:]
        if not lines:
            raise SpectrumFormatError(source, "text file has a header line but no data")
    rows = []
    ncol = None
    for i, ln in enumerate(lines):
        toks = [t for t in _split(ln, delim) if t != ""]
        if ncol is None:
            ncol = len(toks)
            if ncol < 2 or ncol > _MAX_COLUMNS:
                raise SpectrumFormatError(source, f"expected 2 or 3 columns (wavelength, flux[, error]), found {ncol}")
        if len(toks) != ncol:
            raise SpectrumFormatError(source, f"data line {i + 1} has {len(toks)} columns, the first had {ncol}")
        try:
            rows.append([float(t) for t in toks])
        except ValueError:
            raise SpectrumFormatError(source, f"data line {i + 1} is not numeric: {ln[:60]!r}") from None
    data = np.array(rows, dtype=np.float64)

    meta = {"source": str(source), "layout": "text-columns"}
    iw, ifl, ierr, kind = 0, 1, (2 if ncol >= 3 else None), third_column or "sigma"
    unit = wavelength_unit or "angstrom"
    medium = None
    if header is not None:
        low = [h.lower() for h in header]
        iw = next((i for i, h in enumerate(low) if re.match(r"(wave|wavelength|lambda|lam|wl|loglam)", h)), 0)
        ifl = next((i for i, h in enumerate(low) if h.startswith("flux") or h in ("f", "fnu", "flam")),
                   1 if iw != 1 else 0)
        rest = [i for i in range(len(low)) if i not in (iw, ifl)]
        ierr = next((i for i in rest if re.search(r"(err|sig|unc|noise|ivar|invvar|var|weight)", low[i])), None)
        if ierr is not None and third_column is None:
            kind = _third_kind(low[ierr])
        wname = low[iw]
        if wavelength_unit is None:
            if re.search(r"(_|\()nm\)?$|\bnm\b", wname):
                unit = "nm"
            elif re.search(r"(_|\()(um|micron)\)?$", wname):
                unit = "um"
        if "air" in wname:
            medium = "air"
        elif "vac" in wname:
            medium = "vacuum"
        if wname.startswith("loglam"):
            data[:, iw] = 10.0 ** data[:, iw]
        if len(header) != ncol:
            raise SpectrumFormatError(source, f"header names {len(header)} columns, data have {ncol}")
    elif ncol > 3:
        raise SpectrumFormatError(source, f"expected 2 or 3 columns (wavelength, flux[, error]), found {ncol}")

    if air is not None:
        medium = "air" if air else "vacuum"
    meta["medium"] = medium or "vacuum"
    meta["medium_assumed"] = medium is None
    flux = data[:, ifl]
    if ierr is None:
        ivar = estimate_ivar(flux, np.isfinite(flux))
        meta["ivar_estimated"] = True
    else:
        col = data[:, ierr]
        with np.errstate(divide="ignore", invalid="ignore"):
            ivar = col if kind == "ivar" else np.where(col > 0, 1.0 / (col if kind == "var" else col**2), 0.0)
        meta["ivar_estimated"] = False
    return finalize(source, data[:, iw], flux, ivar, meta, wavelength_unit=unit)
