"""Checks every reader applies before it hands out a :class:`Spectrum`."""
from __future__ import annotations

import numpy as np

from .airvac import air_to_vacuum
from .spectrum import Spectrum, SpectrumFormatError

__all__ = ["finalize", "WAVELENGTH_UNITS"]

#: Factors that take a wavelength unit to Angstrom.
WAVELENGTH_UNITS = {
    "angstrom": 1.0, "angstroms": 1.0, "a": 1.0, "aa": 1.0, "ang": 1.0, "0.1 nm": 1.0,
    "nm": 10.0, "nanometer": 10.0, "nanometers": 10.0,
    "um": 1e4, "micron": 1e4, "microns": 1e4, "micrometer": 1e4,
    "m": 1e10, "meter": 1e10,
    "cm": 1e8,
}

# A spectrum outside this window (Angstrom) is almost certainly in another unit.
_PLAUSIBLE = (900.0, 300_000.0)


def finalize(source, wavelength, flux, ivar, meta, *, bad=None, extra=None,
             wavelength_unit: str = "angstrom", medium: str | None = None) -> Spectrum:
    """Validate, clean and package arrays read from ``source`` into a :class:`Spectrum`.

    - wavelength converted to Angstrom (``wavelength_unit``) and, when the arrays'
      ``medium`` (default ``meta['medium']``) is ``'air'``, to vacuum;
    - a strictly decreasing wavelength array is reversed; anything else that is not
      strictly increasing is an error;
    - ``mask`` = ``bad`` | non-finite flux | non-finite or non-positive ivar;
      bad ivar values are set to 0;
    - a spectrum with no usable pixel is an error.
    """
    def fail(problem):
        raise SpectrumFormatError(source, problem)

    try:
        wl = np.asarray(wavelength, dtype=np.float64).ravel()
        fl = np.asarray(flux, dtype=np.float64).ravel()
        iv = np.asarray(ivar, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        fail(f"spectrum arrays are not numeric ({exc})")
    if wl.size == 0 or fl.size == 0:
        fail("empty spectrum: no pixels")
    if not (wl.size == fl.size == iv.size):
        fail(f"array lengths differ: wavelength {wl.size}, flux {fl.size}, ivar {iv.size}")
    if wl.size < 2:
        fail("spectrum has a single pixel")
    bad_arr = np.zeros(wl.size, bool) if bad is None else np.asarray(bad, bool).ravel()
    if bad_arr.size != wl.size:
        fail(f"mask length {bad_arr.size} differs from wavelength length {wl.size}")
    if not np.all(np.isfinite(wl)):
        fail(f"wavelength array has {int((~np.isfinite(wl)).sum())} non-finite values")

    unit = str(wavelength_unit).strip().lower()
    if unit not in WAVELENGTH_UNITS:
        fail(f"unknown wavelength unit {wavelength_unit!r}")
    wl = wl * WAVELENGTH_UNITS[unit]

    steps = np.diff(wl)
    if np.all(steps < 0):
        order = slice(None, None, -1)
        wl, fl, iv, bad_arr = wl[order], fl[order], iv[order], bad_arr[order]
        extra = {k: np.asarray(v)[order] for k, v in (extra or {}).items()}
        steps = np.diff(wl)
    if not np.all(steps > 0):
        i = int(np.flatnonzero(steps <= 0)[0])
        fail(f"wavelength array is not monotonic: pixel {i + 1} ({wl[i + 1]:.4f}) does not "
             f"exceed pixel {i} ({wl[i]:.4f})")
    if wl[0] < _PLAUSIBLE[0] or wl[-1] > _PLAUSIBLE[1]:
        fail(f"wavelengths {wl[0]:.6g}-{wl[-1]:.6g} do not look like Angstrom "
             f"(give the unit, e.g. wavelength_unit='nm')")

    meta = dict(meta)
    if (medium or meta.get("medium", "vacuum")) == "air":
        wl = air_to_vacuum(wl)
        meta["converted_to_vacuum"] = True

    good_iv = np.isfinite(iv) & (iv > 0)
    mask = bad_arr | ~np.isfinite(fl) | ~good_iv
    iv = np.where(good_iv, iv, 0.0)
    if mask.all():
        fail("no usable pixel: every pixel is masked, non-finite or has zero inverse variance")

    extra = {k: np.asarray(v) for k, v in (extra or {}).items()}
    for k, v in extra.items():
        if v.shape != wl.shape:
            fail(f"array {k!r} has length {v.size}, wavelength {wl.size}")
    return Spectrum(wavelength=wl, flux=fl, ivar=iv, mask=mask, meta=meta, extra=extra)
