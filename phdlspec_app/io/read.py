"""``read_spectrum``: one entry point that detects the layout of a spectrum file."""
from __future__ import annotations

import io
import os
import warnings
import zlib
from pathlib import Path

from .spectrum import Spectrum, SpectrumFormatError

__all__ = ["read_spectrum", "MAX_FILE_BYTES"]

#: Largest file (after decompression) read_spectrum accepts, in bytes. A LAMOST
#: spectrum is ~80-200 kB; anything near this limit is not a 1-D spectrum.
MAX_FILE_BYTES = 256 * 1024 * 1024


def _load_bytes(source, name) -> tuple[bytes, str]:
    """Raw (decompressed) content and a display name."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw, label = bytes(source), name or "<bytes>"
    elif hasattr(source, "read"):
        raw = source.read(MAX_FILE_BYTES + 1)
        label = name or getattr(source, "name", "<stream>")
    else:
        path = Path(os.fspath(source)).expanduser()
        label = name or str(path)
        if not path.exists():
            raise SpectrumFormatError(label, "no such file")
        if path.is_dir():
            raise SpectrumFormatError(label, "is a directory, not a spectrum file")
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise SpectrumFormatError(label, f"cannot be read ({exc.strerror or exc})") from None
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "replace")
    if len(raw) > MAX_FILE_BYTES:
        raise SpectrumFormatError(label, f"file larger than {MAX_FILE_BYTES // 2**20} MB: not a 1-D spectrum")
    if raw[:2] == b"\x1f\x8b":
        raw = _gunzip(raw, label)
    return raw, label


def _gunzip(raw: bytes, label: str) -> bytes:
    out = []
    size = 0
    data = raw
    # a gzip file may hold several members; decompress them all, bounded in size
    while data:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = d.decompress(data, MAX_FILE_BYTES + 1 - size)
        except zlib.error as exc:
            raise SpectrumFormatError(label, f"corrupt gzip data ({exc})") from None
        size += len(chunk)
        out.append(chunk)
        if size > MAX_FILE_BYTES:
            raise SpectrumFormatError(label, f"decompresses to more than {MAX_FILE_BYTES // 2**20} MB")
        if not d.eof:
            raise SpectrumFormatError(label, "gzip stream is truncated")
        data = d.unused_data
        if data[:2] != b"\x1f\x8b":
            break
    return b"".join(out)


def read_spectrum(source, *, name: str | None = None, air: bool | None = None,
                  mask_bits: str = "both", third_column: str | None = None,
                  wavelength_unit: str | None = None) -> Spectrum:
    """Read a spectrum, detecting its layout.

    Parameters
    ----------
    source : path, bytes, binary file object, or a specutils spectrum
    name : file name to report (and to use in messages) when ``source`` is bytes or a stream
    air : force the file's wavelengths to be taken as air (True) or vacuum (False);
        default: what the file says (LAMOST: vacuum)
    mask_bits : LAMOST masks: ``'both'`` (andmask or ormask set -> bad), ``'and'``, ``'none'``
    third_column : meaning of a text file's third column without a header:
        ``'sigma'`` (default), ``'ivar'`` or ``'var'``
    wavelength_unit : override the unit of the wavelengths (``'angstrom'``, ``'nm'``, ``'um'``)

    Returns
    -------
    Spectrum
        wavelength in Angstrom (vacuum, increasing), flux, ivar, mask, meta.

    Raises
    ------
    SpectrumFormatError
        for anything that is not a readable spectrum; the message names the file
        and the problem. No other exception escapes.
    """
    from .specutils_bridge import from_specutils, is_specutils

    if is_specutils(source):
        try:
            return from_specutils(source, name, air=air)
        except SpectrumFormatError:
            raise
        except Exception as exc:  # noqa: BLE001 -- any failure is a format error for the caller
            raise SpectrumFormatError(name or "<specutils spectrum>", f"cannot convert ({type(exc).__name__}: {exc})") from None

    raw, label = _load_bytes(source, name)
    try:
        if raw[:9] == b"SIMPLE  =":
            return _read_fits(raw, label, air=air, mask_bits=mask_bits, wavelength_unit=wavelength_unit)
        if not raw.strip():
            raise SpectrumFormatError(label, "empty file")
        return _read_text_like(raw, label, air=air, third_column=third_column, wavelength_unit=wavelength_unit)
    except SpectrumFormatError:
        raise
    except MemoryError:
        raise SpectrumFormatError(label, "too large to read") from None
    except RecursionError:
        raise SpectrumFormatError(label, "malformed structure") from None
    except Exception as exc:  # noqa: BLE001 -- parsers raise many types; all mean "not readable"
        raise SpectrumFormatError(label, f"not a readable spectrum ({type(exc).__name__}: {exc})") from None


# FITS caps these at 999 (FITS 4.0 standard, sect. 4.4.1 and 7.3.1); astropy loops over
# them, so a corrupt header claiming billions of axes or fields would hang the reader.
_BOUNDED_CARDS = (b"NAXIS   ", b"TFIELDS ")


def _check_header_cards(raw: bytes, label: str):
    # bytes.find runs in C: only the (few) occurrences of the keywords are inspected
    for key in _BOUNDED_CARDS:
        start = raw.find(key + b"= ")
        while start >= 0:
            if start % 80 == 0:
                value = raw[start + 10:start + 80].split(b"/", 1)[0].strip()
                try:
                    n = int(value)
                except ValueError:
                    raise SpectrumFormatError(label, f"FITS card {key.decode().strip()} is not an integer") from None
                if not 0 <= n <= 999:
                    raise SpectrumFormatError(label, f"FITS card {key.decode().strip()} = {n} is outside 0..999")
            start = raw.find(key + b"= ", start + 1)


def _read_fits(raw: bytes, label: str, air, mask_bits, wavelength_unit) -> Spectrum:
    from astropy.io import fits

    _check_header_cards(raw, label)

    from .fits_generic import find_spectrum_hdu, read_fits_image, read_fits_table
    from .lamost import is_lamost, read_lamost
    from .native import is_native_fits, read_native_fits

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False,
                             ignore_missing_end=False, output_verify="ignore")
        except OSError as exc:
            raise SpectrumFormatError(label, f"not a valid FITS file ({exc})") from None
        truncated = any("truncated" in str(w.message).lower() for w in caught)
    if truncated:
        raise SpectrumFormatError(label, "FITS file is truncated (data shorter than its header declares)")
    with hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(hdul) == 0:
            raise SpectrumFormatError(label, "FITS file has no HDU")
        if is_native_fits(hdul):
            return read_native_fits(hdul, label)
        if is_lamost(hdul):
            spec = read_lamost(hdul, label, mask_bits=mask_bits)
            if air is not None:
                raise SpectrumFormatError(label, "air= cannot be used with LAMOST files (their VACUUM keyword says)")
            return spec
        kind, index = find_spectrum_hdu(hdul)
        if kind == "image":
            return read_fits_image(hdul, index, label, air=air, wavelength_unit=wavelength_unit)
        if kind == "table":
            return read_fits_table(hdul, index, label, air=air, wavelength_unit=wavelength_unit)
        shapes = ", ".join(
            f"HDU {i} {h.name or ''} {h.header.get('XTENSION', 'IMAGE').strip()}"
            f"{tuple(h.header.get(f'NAXIS{k}', 0) for k in range(1, h.header.get('NAXIS', 0) + 1))}"
            for i, h in enumerate(hdul))
        raise SpectrumFormatError(
            label, f"FITS file holds no spectrum layout PhDLspec knows (no LAMOST layout, no 1-D image "
                   f"with a wavelength WCS, no table with wavelength and flux columns): {shapes}")


def _read_text_like(raw: bytes, label: str, air, third_column, wavelength_unit) -> Spectrum:
    from .native import read_native_ecsv
    from .text import read_text

    if b"\x00" in raw[:4096]:
        raise SpectrumFormatError(label, "unknown binary format (not FITS, not text)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if text.lstrip().startswith("# %ECSV"):
        from astropy.table import Table

        try:
            table = Table.read(text, format="ascii.ecsv")
        except Exception as exc:  # noqa: BLE001
            raise SpectrumFormatError(label, f"invalid ECSV ({type(exc).__name__}: {exc})") from None
        if "phdlspec" in table.meta:
            return read_native_ecsv(table, label)
        cols = [c for c in table.colnames]
        buf = "\n".join([",".join(cols)] + [",".join(str(v) for v in row) for row in table.iterrows()])
        return read_text(buf, label, air=air, third_column=third_column, wavelength_unit=wavelength_unit)
    return read_text(text, label, air=air, third_column=third_column, wavelength_unit=wavelength_unit)
