"""Conversion to and from ``specutils`` spectra (``Spectrum``; ``Spectrum1D`` before specutils 2.0)."""
from __future__ import annotations

import numpy as np

from .spectrum import Spectrum, SpectrumFormatError
from .validate import finalize

__all__ = ["specutils_class", "is_specutils", "to_specutils", "from_specutils"]


def specutils_class():
    """The specutils spectrum class of the installed release, or None."""
    try:
        import specutils
    except ImportError:
        return None
    return getattr(specutils, "Spectrum", None) or getattr(specutils, "Spectrum1D", None)


def is_specutils(obj) -> bool:
    cls = specutils_class()
    return cls is not None and isinstance(obj, cls)


def to_specutils(spec: Spectrum):
    """A specutils spectrum with spectral axis in Angstrom (vacuum), inverse-variance
    uncertainty and the mask (True = bad); ``meta`` carries the PhDLspec meta."""
    import astropy.units as u
    from astropy.nddata import InverseVariance

    cls = specutils_class()
    if cls is None:
        raise ImportError("specutils is not installed")
    unit = u.Unit(spec.meta.get("flux_unit", "")) if spec.meta.get("flux_unit") else u.dimensionless_unscaled
    return cls(flux=spec.flux * unit, spectral_axis=spec.wavelength * u.AA,
               uncertainty=InverseVariance(spec.ivar / unit**2), mask=spec.mask.copy(),
               meta={"phdlspec": dict(spec.meta)})


def from_specutils(obj, source=None, air=None) -> Spectrum:
    """A :class:`Spectrum` from a specutils spectrum (1-D only).

    The spectral axis is converted to Angstrom; it is taken to be in vacuum unless
    ``air=True`` (a spectrum made by :func:`to_specutils` is always vacuum).
    """
    import astropy.units as u
    from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty

    source = source or "<specutils spectrum>"
    flux = np.asarray(obj.flux.value, dtype=np.float64)
    if flux.ndim != 1:
        raise SpectrumFormatError(source, f"only 1-D spectra are supported, flux has shape {flux.shape}")
    try:
        wl = obj.spectral_axis.to_value(u.AA, equivalencies=u.spectral())
    except u.UnitConversionError as exc:
        raise SpectrumFormatError(source, f"spectral axis cannot be converted to Angstrom ({exc})") from None
    unc = obj.uncertainty
    meta = dict((obj.meta or {}).get("phdlspec", {}))
    if unc is None:
        from .noise import estimate_ivar

        ivar = estimate_ivar(flux, np.isfinite(flux))
        meta["ivar_estimated"] = True
    else:
        arr = np.asarray(unc.array, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            if isinstance(unc, InverseVariance):
                ivar = arr
            elif isinstance(unc, VarianceUncertainty):
                ivar = np.where(arr > 0, 1.0 / arr, 0.0)
            elif isinstance(unc, StdDevUncertainty):
                ivar = np.where(arr > 0, 1.0 / arr**2, 0.0)
            else:
                raise SpectrumFormatError(source, f"unsupported uncertainty type {type(unc).__name__}")
        meta["ivar_estimated"] = False
    if obj.unit is not None and obj.unit != u.dimensionless_unscaled:
        meta["flux_unit"] = obj.unit.to_string()
    meta.setdefault("source", str(source))
    meta.setdefault("layout", "specutils")
    medium = "air" if air else "vacuum"
    meta.setdefault("medium", medium)
    mask = None if obj.mask is None else np.asarray(obj.mask, bool)
    return finalize(source, wl, flux, ivar, meta, bad=mask, medium=medium)
