"""Non-LAMOST FITS spectra: 1-D images with a wavelength WCS, and spectrum tables.

1-D images
    The flux is the first 1-D image (dimensions of length 1 are dropped). The
    wavelength of pixel p (1-based) is w = CRVAL1 + CDELT1 * (p - CRPIX1) (``CD1_1``
    if ``CDELT1`` is absent, ``CRPIX1`` = 1 if absent). ``DC-FLAG = 1`` (IRAF) or
    ``CTYPE1 = '...-LOG'`` with a CRVAL1 below 6 means w is log10(wavelength);
    ``CTYPE1 = 'WAVE-LOG'`` with a CRVAL1 in Angstrom follows FITS paper III
    (lambda = CRVAL1 * exp(CDELT1 * (p - CRPIX1) / CRVAL1)). ``CUNIT1`` gives the unit.
    Errors come from an image extension of the same length named ERR/ERROR/SIGMA/
    UNCERT/NOISE (1-sigma), IVAR/INVVAR (inverse variance) or VAR/VARIANCE.
    Without one, the inverse variance is estimated from the flux and
    ``meta['ivar_estimated']`` is set.
Tables
    A binary table with a wavelength column (WAVELENGTH, WAVE, LAMBDA, or LOGLAM in
    log10 Angstrom) and a FLUX column, either one row of arrays or one row per
    pixel; errors from IVAR/IVAR-like, ERROR/SIGMA or VARIANCE columns, a MASK or
    AND_MASK column.

Air or vacuum: ``CTYPE1 = 'AWAV'`` or ``VACUUM = F`` or ``AIRORVAC = 'air'`` mean
air; ``CTYPE1 = 'WAVE'``, ``VACUUM = T`` or ``AIRORVAC = 'vac'`` mean vacuum.
When the header is silent vacuum is assumed and ``meta['medium_assumed']`` set;
the caller's ``air=`` option overrides the header.
"""
from __future__ import annotations

import numpy as np

from .noise import estimate_ivar
from .spectrum import SpectrumFormatError
from .validate import WAVELENGTH_UNITS, finalize

__all__ = ["read_fits_image", "read_fits_table", "find_spectrum_hdu", "medium_from_header"]

_SIGMA = ("ERR", "ERROR", "ERRORS", "SIGMA", "UNCERT", "UNCERTAINTY", "NOISE", "STDDEV")
_IVAR = ("IVAR", "INVVAR", "INVERSE_VARIANCE", "INV_VAR", "WEIGHT")
_VAR = ("VAR", "VARIANCE")
_WAVE_COLS = ("WAVELENGTH", "WAVE", "LAMBDA", "WL", "WAVELENGTH_AIR", "WAVELENGTH_VAC")
_LOGWAVE_COLS = ("LOGLAM", "LOGLAMBDA", "LOGWAVE")


def medium_from_header(hdr, ctype: str = "") -> tuple[str, bool]:
    """(medium, assumed): the wavelength medium a FITS header declares."""
    ctype = ctype.upper()
    if ctype.startswith("AWAV"):
        return "air", False
    if ctype.startswith("WAVE"):
        return "vacuum", False
    if "VACUUM" in hdr:
        return ("vacuum" if bool(hdr["VACUUM"]) else "air"), False
    for key in ("AIRORVAC", "WAVTYPE", "WAVEMED", "MEDIUM"):
        val = str(hdr.get(key, "")).strip().lower()
        if val.startswith("air"):
            return "air", False
        if val.startswith("vac"):
            return "vacuum", False
    return "vacuum", True


def _squeeze_1d(data):
    if data is None:
        return None
    arr = np.asarray(data)
    arr = arr.reshape([d for d in arr.shape if d != 1]) if arr.ndim > 1 else arr
    return arr if arr.ndim == 1 and arr.size > 1 else None


def find_spectrum_hdu(hdul):
    """('image', index) or ('table', index) of the HDU holding a spectrum, or (None, None)."""
    for i, hdu in enumerate(hdul):
        if hdu.is_image and hdu.header.get("NAXIS", 0) >= 1:
            dims = [hdu.header.get(f"NAXIS{k}", 0) for k in range(1, hdu.header["NAXIS"] + 1)]
            if sum(d > 1 for d in dims) == 1:
                return "image", i
    for i, hdu in enumerate(hdul):
        cols = getattr(hdu, "columns", None)
        if cols is not None:
            names = {n.upper() for n in cols.names}
            if "FLUX" in names and names & set(_WAVE_COLS + _LOGWAVE_COLS):
                return "table", i
    return None, None


def _unit_of(text: str, source) -> str:
    u = str(text or "angstrom").strip().lower()
    if u in ("", "pixel"):
        return "angstrom"
    if u not in WAVELENGTH_UNITS:
        raise SpectrumFormatError(source, f"unknown wavelength unit CUNIT1={text!r}")
    return u


def _header_basics(hdr, source) -> dict:
    meta = {"source": str(source)}
    for key, name in (("OBJECT", "designation"), ("OBSID", "obsid"), ("RA", "ra"), ("DEC", "dec"),
                      ("CLASS", "class"), ("SUBCLASS", "subclass"), ("TELESCOP", "telescope"),
                      ("INSTRUME", "instrument")):
        if key in hdr and hdr[key] not in ("", None):
            meta[name] = hdr[key].strip() if isinstance(hdr[key], str) else hdr[key]
    for key in ("RA", "DEC"):
        if key.lower() in meta:
            try:
                meta[key.lower()] = float(meta[key.lower()])
            except (TypeError, ValueError):
                meta.pop(key.lower())
    if "SPEC_RES" in hdr or "RESOLUTN" in hdr or "R" in hdr:
        try:
            meta["resolution"] = float(hdr.get("SPEC_RES", hdr.get("RESOLUTN", hdr.get("R"))))
        except (TypeError, ValueError):
            pass
    if "FWHM" in hdr:
        try:
            meta["fwhm"] = float(hdr["FWHM"])
        except (TypeError, ValueError):
            pass
    return meta


def _error_extension(hdul, skip: int, n: int):
    """(kind, array) from an extension holding the flux errors, or (None, None)."""
    for i, hdu in enumerate(hdul):
        if i == skip or not hdu.is_image or hdu.data is None:
            continue
        name = (hdu.name or "").upper()
        kind = ("sigma" if name in _SIGMA else "ivar" if name in _IVAR
                else "var" if name in _VAR else None)
        arr = _squeeze_1d(hdu.data)
        if kind and arr is not None and arr.size == n:
            return kind, arr.astype(np.float64)
    return None, None


def _to_ivar(kind, arr):
    arr = np.asarray(arr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "ivar":
            return arr
        if kind == "var":
            return np.where(arr > 0, 1.0 / arr, 0.0)
        return np.where(arr > 0, 1.0 / arr**2, 0.0)


def read_fits_image(hdul, index: int, source, air=None, wavelength_unit=None):
    """A 1-D FITS image with a linear or log-linear wavelength WCS."""
    hdu = hdul[index]
    hdr = hdu.header
    flux = _squeeze_1d(hdu.data)
    if flux is None:
        raise SpectrumFormatError(source, f"HDU {index} holds no 1-D spectrum")
    n = flux.size
    axis = next(k for k in range(1, hdr["NAXIS"] + 1) if hdr.get(f"NAXIS{k}", 0) > 1)
    crval = hdr.get(f"CRVAL{axis}")
    cdelt = hdr.get(f"CDELT{axis}", hdr.get(f"CD{axis}_{axis}"))
    if crval is None or cdelt is None:
        raise SpectrumFormatError(
            source, f"1-D image without a wavelength solution (CRVAL{axis} and CDELT{axis} or "
                    f"CD{axis}_{axis} are required)")
    crpix = float(hdr.get(f"CRPIX{axis}", 1.0))
    ctype = str(hdr.get(f"CTYPE{axis}", "")).upper()
    pix = np.arange(1, n + 1, dtype=np.float64)
    w = float(crval) + float(cdelt) * (pix - crpix)
    if int(hdr.get("DC-FLAG", 0)) == 1 or (ctype.endswith("LOG") and float(crval) < 6):
        wl = 10.0 ** w
    elif ctype == "WAVE-LOG":
        wl = float(crval) * np.exp(float(cdelt) * (pix - crpix) / float(crval))
    else:
        wl = w
    unit = wavelength_unit or _unit_of(hdr.get(f"CUNIT{axis}"), source)
    meta = _header_basics(hdul[0].header, source)
    meta.update({k: v for k, v in _header_basics(hdr, source).items() if k != "source"})
    medium, assumed = medium_from_header(hdr, ctype)
    if assumed:
        medium, assumed = medium_from_header(hdul[0].header, ctype)
    if air is not None:
        medium, assumed = ("air" if air else "vacuum"), False
    meta.update(layout="fits-1d-wcs", medium=medium, medium_assumed=assumed)

    kind, err = _error_extension(hdul, index, n)
    if kind is None:
        ivar = estimate_ivar(flux, np.isfinite(flux))
        meta["ivar_estimated"] = True
    else:
        ivar = _to_ivar(kind, err)
        meta["ivar_estimated"] = False
    return finalize(source, wl, flux, ivar, meta, wavelength_unit=unit)


def _col(names, wanted):
    for w in wanted:
        if w in names:
            return names[w]
    return None


def read_fits_table(hdul, index: int, source, air=None, wavelength_unit=None):
    """A FITS binary table of wavelength, flux and (optionally) errors and a mask."""
    hdu = hdul[index]
    data = hdu.data
    if data is None or len(data) == 0:
        raise SpectrumFormatError(source, f"table HDU {index} has no rows")
    names = {n.upper(): n for n in hdu.columns.names}

    def column(key):
        arr = np.asarray(data[key])
        return arr[0].ravel() if len(data) == 1 and arr.ndim > 1 else arr.ravel()

    wcol = _col(names, _WAVE_COLS)
    if wcol is not None:
        wl = column(wcol).astype(np.float64)
    else:
        wl = 10.0 ** column(_col(names, _LOGWAVE_COLS)).astype(np.float64)
    flux = column(names["FLUX"]).astype(np.float64)
    meta = _header_basics(hdul[0].header, source)
    meta["layout"] = "fits-table"
    ivar = None
    for group, kind in ((_IVAR, "ivar"), (_SIGMA, "sigma"), (_VAR, "var")):
        c = _col(names, group)
        if c is not None:
            ivar = _to_ivar(kind, column(c))
            break
    if ivar is None:
        ivar = estimate_ivar(flux, np.isfinite(flux))
        meta["ivar_estimated"] = True
    else:
        meta["ivar_estimated"] = False
    mcol = _col(names, ("MASK", "AND_MASK", "ANDMASK", "BADPIX"))
    bad = column(mcol).astype(np.int64) != 0 if mcol else None
    medium, assumed = medium_from_header(hdu.header, "")
    if wcol and wcol.upper() == "WAVELENGTH_AIR":
        medium, assumed = "air", False
    if assumed:
        medium, assumed = medium_from_header(hdul[0].header, "")
    if air is not None:
        medium, assumed = ("air" if air else "vacuum"), False
    meta.update(medium=medium, medium_assumed=assumed)
    unit = wavelength_unit
    if unit is None:
        tunit = hdu.header.get(f"TUNIT{hdu.columns.names.index(wcol) + 1}") if wcol else None
        unit = _unit_of(tunit, source)
    return finalize(source, wl, flux, ivar, meta, bad=bad, wavelength_unit=unit)
