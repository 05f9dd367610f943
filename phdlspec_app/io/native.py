"""PhDLspec's own spectrum files: a documented FITS layout and ECSV, both lossless.

FITS layout ``phdlspec-v1``
    HDU 0: no data; ``PHDLFMT = 'PHDLSPEC'``, ``PHDLVER = 1``; the readable keywords
    OBSID, DESIG, RA, DEC, CLASS, SUBCLASS, DATA_V when known; ``PHDLMETA``: the
    whole ``meta`` dict as JSON (a long string, FITS CONTINUE convention).
    HDU 1 ``SPECTRUM``: binary table, one row per pixel, columns WAVELENGTH
    (float64, Angstrom, vacuum), FLUX (float64), IVAR (float64), MASK (bool,
    True = bad), and one float64 column per array of ``extra`` (name upper-cased,
    prefixed ``X_``).
ECSV
    An astropy ECSV table with columns wavelength, flux, ivar, mask and the extra
    arrays (``x_<name>``); ``meta`` in the table's YAML header under ``phdlspec``.

Both round-trip exactly (float64 written as float64). Writes go to a temporary
file in the same folder that is then renamed, so a crash never leaves half a file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .spectrum import Spectrum, SpectrumFormatError

__all__ = ["write_spectrum", "is_native_fits", "read_native_fits", "read_native_ecsv", "FORMAT_VERSION"]

FORMAT_VERSION = 1


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _atomic_write(path: Path, write) -> Path:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_spectrum(spectrum: Spectrum, path, format: str | None = None, overwrite: bool = True) -> Path:
    """Write ``spectrum`` to ``path`` as FITS (``.fits``, ``.fits.gz``) or ECSV (``.ecsv``).

    ``format`` ('fits' or 'ecsv') overrides the choice from the suffix. Returns the path.
    """
    path = Path(path)
    fmt = format or ("ecsv" if path.suffix.lower() == ".ecsv" else "fits")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (overwrite=False)")
    meta = _jsonable(spectrum.meta)
    if fmt == "fits":
        return _atomic_write(path, lambda tmp: _write_fits(spectrum, meta, tmp, path.name.endswith(".gz")))
    if fmt == "ecsv":
        return _atomic_write(path, lambda tmp: _table(spectrum, meta).write(tmp, format="ascii.ecsv", overwrite=True))
    raise ValueError(f"unknown format {fmt!r}: use 'fits' or 'ecsv'")


def _table(spectrum: Spectrum, meta: dict):
    from astropy.table import Table

    t = Table()
    t["wavelength"] = spectrum.wavelength
    t["wavelength"].unit = "Angstrom"
    t["flux"] = spectrum.flux
    t["ivar"] = spectrum.ivar
    t["mask"] = spectrum.mask
    for k, v in spectrum.extra.items():
        t[f"x_{k}"] = np.asarray(v, dtype=np.float64)
    t.meta["phdlspec"] = {"format": "phdlspec-ecsv", "version": FORMAT_VERSION, "meta": meta}
    return t


def _write_fits(spectrum: Spectrum, meta: dict, tmp: str, gz: bool):
    from astropy.io import fits

    primary = fits.PrimaryHDU()
    h = primary.header
    h["PHDLFMT"] = ("PHDLSPEC", "PhDLspec spectrum layout")
    h["PHDLVER"] = (FORMAT_VERSION, "layout version")
    for key, name in (("OBSID", "obsid"), ("DESIG", "designation"), ("RA", "ra"), ("DEC", "dec"),
                      ("CLASS", "class"), ("SUBCLASS", "subclass"), ("DATA_V", "data_release")):
        val = meta.get(name)
        if isinstance(val, (int, float, str)) and not isinstance(val, bool):
            h[key] = val
    h["VACUUM"] = (True, "wavelengths are in vacuum")
    h["PHDLMETA"] = json.dumps(meta, ensure_ascii=True, sort_keys=True)
    cols = [
        fits.Column("WAVELENGTH", "D", unit="Angstrom", array=spectrum.wavelength),
        fits.Column("FLUX", "D", array=spectrum.flux),
        fits.Column("IVAR", "D", array=spectrum.ivar),
        fits.Column("MASK", "L", array=spectrum.mask),
    ]
    for k, v in spectrum.extra.items():
        cols.append(fits.Column(f"X_{k.upper()}", "D", array=np.asarray(v, dtype=np.float64)))
    table = fits.BinTableHDU.from_columns(cols, name="SPECTRUM")
    hdul = fits.HDUList([primary, table])
    if gz:
        import gzip

        with gzip.open(tmp, "wb") as fh:
            hdul.writeto(fh)
    else:
        hdul.writeto(tmp, overwrite=True)


def is_native_fits(hdul) -> bool:
    return str(hdul[0].header.get("PHDLFMT", "")).strip() == "PHDLSPEC"


def _meta_from_json(text, source):
    try:
        meta = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise SpectrumFormatError(source, f"PHDLMETA is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise SpectrumFormatError(source, "PHDLMETA is not a JSON object")
    return meta


def _build(source, wl, flux, ivar, mask, meta, extra):
    from .validate import finalize

    meta = dict(meta)
    meta["source"] = str(source)
    # native files always hold vacuum wavelengths; meta['medium'] keeps the original file's medium
    spec = finalize(source, wl, flux, ivar, meta, bad=mask, extra=extra, medium="vacuum")
    # keep the stored mask exactly (finalize may only add to it, never remove)
    spec.mask = np.asarray(mask, bool) | spec.mask
    return spec


def read_native_fits(hdul, source) -> Spectrum:
    ver = hdul[0].header.get("PHDLVER")
    if ver != FORMAT_VERSION:
        raise SpectrumFormatError(source, f"PhDLspec layout version {ver!r} is not supported (expected {FORMAT_VERSION})")
    if "SPECTRUM" not in hdul:
        raise SpectrumFormatError(source, "PhDLspec file without its SPECTRUM table")
    d = hdul["SPECTRUM"].data
    meta = _meta_from_json(hdul[0].header.get("PHDLMETA", "{}"), source)
    extra = {n[2:].lower(): np.asarray(d[n], dtype=np.float64) for n in d.columns.names if n.startswith("X_")}
    return _build(source, d["WAVELENGTH"], d["FLUX"], d["IVAR"], np.asarray(d["MASK"], bool), meta, extra)


def read_native_ecsv(table, source) -> Spectrum:
    info = table.meta.get("phdlspec", {})
    meta = info.get("meta", {}) if isinstance(info, dict) else {}
    for col in ("wavelength", "flux", "ivar", "mask"):
        if col not in table.colnames:
            raise SpectrumFormatError(source, f"PhDLspec ECSV lacks column {col!r}")
    extra = {c[2:]: np.asarray(table[c], dtype=np.float64) for c in table.colnames if c.startswith("x_")}
    return _build(source, table["wavelength"], table["flux"], table["ivar"],
                  np.asarray(table["mask"], bool), meta, extra)


# ---- model spectra (no noise): phdlspec-model-v1 ----------------------------------------

def write_model(path, wavelength, flux, labels: dict, differential=None, wrt=None, meta: dict | None = None) -> Path:
    """Write a synthetic (noise-free) spectrum, and optionally its differential spectra.

    Layout ``phdlspec-model-v1``: HDU 0 header ``PHDLFMT = 'PHDLMODEL'``, ``PHDLVER = 1``,
    every label as ``L_<NAME>`` (schema units), ``PHDLMETA`` (JSON provenance); HDU 1
    ``MODEL`` table WAVELENGTH (Angstrom, vacuum), FLUX (normalized); HDU 2
    ``DIFFERENTIAL`` (when given): image (n_labels, W) of d flux / d label with the label
    names in ``DNAME<i>`` (per K for teff, per dex for logg and abundances, per km/s for
    vmic). Written to a temporary file and renamed.
    """
    from astropy.io import fits

    path = Path(path)
    primary = fits.PrimaryHDU()
    h = primary.header
    h["PHDLFMT"] = ("PHDLMODEL", "PhDLspec model spectrum")
    h["PHDLVER"] = (FORMAT_VERSION, "layout version")
    h["VACUUM"] = (True, "wavelengths are in vacuum")
    for k, v in labels.items():
        h[f"L_{k.upper()}"[:8]] = (float(v), k)
    h["PHDLMETA"] = json.dumps(_jsonable(meta or {}), ensure_ascii=True, sort_keys=True)
    hdus = [primary, fits.BinTableHDU.from_columns([
        fits.Column("WAVELENGTH", "D", unit="Angstrom", array=np.asarray(wavelength, np.float64)),
        fits.Column("FLUX", "D", array=np.asarray(flux, np.float64))], name="MODEL")]
    if differential is not None:
        img = fits.ImageHDU(np.asarray(differential, np.float64), name="DIFFERENTIAL")
        for i, n in enumerate(wrt or []):
            img.header[f"DNAME{i + 1}"] = n
        hdus.append(img)
    return _atomic_write(path, lambda tmp: fits.HDUList(hdus).writeto(tmp, overwrite=True))


def read_model(path) -> dict:
    """Read a ``phdlspec-model-v1`` file: wavelength, flux, labels, differential, wrt, meta."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        if str(hdul[0].header.get("PHDLFMT", "")).strip() != "PHDLMODEL":
            raise SpectrumFormatError(path, "not a PhDLspec model spectrum (PHDLFMT != 'PHDLMODEL')")
        h = hdul[0].header
        labels = {h.comments[k]: float(h[k]) for k in h if k.startswith("L_")}
        out = {"wavelength": np.array(hdul["MODEL"].data["WAVELENGTH"]), "flux": np.array(hdul["MODEL"].data["FLUX"]),
               "labels": labels, "meta": _meta_from_json(h.get("PHDLMETA", "{}"), path)}
        if "DIFFERENTIAL" in hdul:
            d = hdul["DIFFERENTIAL"]
            out["differential"] = np.array(d.data)
            out["wrt"] = [d.header[f"DNAME{i + 1}"] for i in range(d.data.shape[0]) if f"DNAME{i + 1}" in d.header]
        return out
