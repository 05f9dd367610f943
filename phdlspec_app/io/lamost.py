"""LAMOST low-resolution spectra, in every FITS layout the survey has used.

Layouts (the names go into ``meta['layout']``):

``lamost-v2.6-image``
    pilot/DR1-era pipeline v2.6.4: primary image 5 x N with rows flux, inverse
    variance, **sub-continuum**, andmask, ormask (``EXTEN0 = 'Flux Inverse
    Subcontinuum Andmask Ormask'``). The third row is *not* wavelength: the
    wavelength is 10**(COEFF0 + i * COEFF1), vacuum.
``lamost-image``
    pipeline 2.7.x to DR8 (v2.9.x): primary image 5 x N with rows flux, ivar,
    wavelength, andmask, ormask.
``lamost-coadd-table``
    DR9 and later: binary-table HDU ``COADD`` holding one row of arrays FLUX,
    IVAR, WAVELENGTH, ANDMASK, ORMASK, NORMALIZATION.

Masks: LAMOST sets andmask bits where a pixel is bad in every exposure and ormask
bits where it is bad in any exposure (BADCCD, BADPROFILE, NOSKY, BRIGHTSKY,
BADCENTER, NODATA). ``mask_bits='both'`` (default) masks a pixel if either mask
is set, ``'and'`` only on andmask, ``'none'`` ignores both; ivar = 0 and
non-finite values are always masked. The raw masks stay in ``extra``.
"""
from __future__ import annotations

import numpy as np

from .spectrum import SpectrumFormatError
from .validate import finalize

__all__ = ["is_lamost", "read_lamost", "LAMOST_RESOLUTION"]

#: Nominal resolving power of the LAMOST low-resolution spectrographs (at 5500 Angstrom).
LAMOST_RESOLUTION = 1800.0

_BANDS = "ugriz"


def is_lamost(hdul) -> bool:
    """True if an open HDU list looks like a LAMOST low-resolution spectrum file."""
    hdr = hdul[0].header
    tel = str(hdr.get("TELESCOP", "")) + str(hdr.get("ORIGIN", ""))
    return "LAMOST" in tel.upper() or "EXTEN0" in hdr or any(h.name == "COADD" for h in hdul)


def _header_meta(hdr) -> dict:
    def get(*keys):
        for k in keys:
            if k in hdr and hdr[k] not in ("", None):
                val = hdr[k]
                return val.strip() if isinstance(val, str) else val
        return None

    snr = {}
    for b in _BANDS:
        v = get(f"SNR{b.upper()}", f"SN_{b.upper()}")
        if v is not None:
            try:
                snr[b] = float(v)
            except (TypeError, ValueError):
                pass
    pipe = get("VERSPIPE")
    # Pilot-era (v2.6) headers write S/N >= 99 as exactly 99.00: a lower limit, not a measurement.
    capped = sorted(b for b, v in snr.items() if v == 99.0 and str(pipe).lstrip("v").startswith("2.6"))
    release = get("DATA_V")
    if release is None and pipe:
        era = {"v2.6": "pilot/DR1 era", "2.6": "pilot/DR1 era", "v2.7": "DR2-DR3 era",
               "2.7": "DR2-DR3 era"}
        for prefix, name in era.items():
            if str(pipe).startswith(prefix):
                release = f"{name} (no DATA_V keyword; from pipeline {pipe})"
                break
    obsid = get("OBSID")
    vacuum = hdr.get("VACUUM", True)
    meta = {
        "obsid": int(obsid) if isinstance(obsid, (int, np.integer)) else obsid,
        "designation": get("DESIG", "DESIGNATION"),
        "ra": _float(get("RA")),
        "dec": _float(get("DEC")),
        "snr": snr,
        "snr_lower_limits": capped or None,
        "class": get("CLASS"),
        "subclass": get("SUBCLASS"),
        "data_release": release,
        "pipeline_version": pipe,
        "z": _float(get("Z")),
        "objtype": get("OBJTYPE"),
        "planid": get("PLANID"),
        "lmjd": get("LMJD"),
        "spid": get("SPID"),
        "fiberid": get("FIBERID"),
        "filename": get("FILENAME"),
        "medium": "vacuum" if bool(vacuum) else "air",
        "medium_assumed": "VACUUM" not in hdr,
        "resolution": LAMOST_RESOLUTION,
        "resolution_note": "nominal LAMOST LRS resolving power",
    }
    return {k: v for k, v in meta.items() if v is not None}


def _float(v):
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _bad_from_masks(andmask, ormask, mask_bits: str):
    if mask_bits == "both":
        return (andmask != 0) | (ormask != 0)
    if mask_bits == "and":
        return andmask != 0
    if mask_bits == "none":
        return np.zeros(andmask.shape, bool)
    raise ValueError(f"mask_bits must be 'both', 'and' or 'none', not {mask_bits!r}")


def _looks_like_wavelength(row) -> bool:
    row = np.asarray(row, dtype=np.float64)
    return bool(np.all(np.isfinite(row)) and np.all(np.diff(row) > 0)
                and 2500 < row[0] < 12000 and 2500 < row[-1] < 12000)


def read_lamost(hdul, source, mask_bits: str = "both"):
    """Read an open LAMOST HDU list (any layout) into a :class:`Spectrum`."""
    hdr = hdul[0].header
    meta = _header_meta(hdr)
    meta["source"] = str(source)

    coadd = next((h for h in hdul if h.name == "COADD"), None)
    if coadd is not None:
        cols = {c.upper() for c in getattr(coadd, "columns", []).names} if hasattr(coadd, "columns") else set()
        need = {"FLUX", "IVAR", "WAVELENGTH"}
        if not need <= cols:
            raise SpectrumFormatError(source, f"COADD table lacks columns {sorted(need - cols)}")
        if coadd.data is None or len(coadd.data) < 1:
            raise SpectrumFormatError(source, "COADD table has no rows")
        row = coadd.data[0]
        wl, flux, ivar = row["WAVELENGTH"], row["FLUX"], row["IVAR"]
        n = np.size(flux)
        andm = np.asarray(row["ANDMASK"]) if "ANDMASK" in cols else np.zeros(n)
        orm = np.asarray(row["ORMASK"]) if "ORMASK" in cols else np.zeros(n)
        extra = {"andmask": andm, "ormask": orm}
        if "NORMALIZATION" in cols:
            extra["normalization"] = np.asarray(row["NORMALIZATION"], dtype=np.float64)
        meta["layout"] = "lamost-coadd-table"
        return finalize(source, wl, flux, ivar, meta, bad=_bad_from_masks(andm, orm, mask_bits),
                        extra=extra)

    data = hdul[0].data
    if data is None or np.ndim(data) != 2 or data.shape[0] < 3:
        shape = None if data is None else np.shape(data)
        raise SpectrumFormatError(
            source, f"LAMOST header but no 5 x N spectrum image or COADD table (primary data {shape})")
    data = np.asarray(data, dtype=np.float64)
    n = data.shape[1]
    rows = [r.strip().lower() for r in str(hdr.get("EXTEN0", "")).replace(",", " ").split()]
    third = rows[2] if len(rows) > 2 else ""
    andm = data[3] if data.shape[0] > 3 else np.zeros(n)
    orm = data[4] if data.shape[0] > 4 else np.zeros(n)
    if third.startswith("wave") or (not third and _looks_like_wavelength(data[2])):
        wl = data[2]
        extra = {"andmask": andm, "ormask": orm}
        meta["layout"] = "lamost-image"
    else:
        # pipeline v2.6: third row is the sub-continuum; wavelength from the log-linear WCS
        c0, c1 = hdr.get("COEFF0"), hdr.get("COEFF1")
        if c0 is None or c1 is None:
            raise SpectrumFormatError(
                source, "LAMOST v2.6 image without COEFF0/COEFF1: cannot build the wavelength grid")
        wl = 10.0 ** (float(c0) + float(c1) * np.arange(n))
        extra = {"subcontinuum": data[2], "andmask": andm, "ormask": orm}
        meta["layout"] = "lamost-v2.6-image"
    return finalize(source, wl, data[0], data[1], meta, bad=_bad_from_masks(andm, orm, mask_bits),
                    extra=extra)
