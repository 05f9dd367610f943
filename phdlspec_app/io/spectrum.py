"""The :class:`Spectrum` container and the error every reader raises."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Spectrum", "SpectrumFormatError"]


class SpectrumFormatError(ValueError):
    """A file is not a spectrum PhDLspec can read. The message names the file and the problem."""

    def __init__(self, source: Any, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


@dataclass
class Spectrum:
    """One observed (or simulated) 1-D spectrum.

    Attributes
    ----------
    wavelength : (N,) float64, Angstrom, **vacuum**, strictly increasing
    flux : (N,) float64, in the file's flux units (LAMOST: relative counts)
    ivar : (N,) float64, inverse variance of ``flux`` (flux units^-2); 0 where unknown/bad
    mask : (N,) bool, True = bad pixel (pipeline mask bits, ivar <= 0, non-finite values)
    meta : dict of header information. Keys that readers fill when the file says:
        ``source`` (path), ``layout`` (e.g. ``lamost-dr9-coadd``), ``obsid``,
        ``designation``, ``ra``/``dec`` (deg), ``snr`` ({band: S/N}), ``class``,
        ``subclass``, ``data_release``, ``pipeline_version``, ``z``, ``objtype``,
        ``medium`` (the wavelength medium *of the file*: ``vacuum`` or ``air``),
        ``medium_assumed`` (True when the file did not say), ``resolution`` (R) or
        ``fwhm`` (Angstrom), ``ivar_estimated`` (True when the file had no errors).
    extra : named per-pixel arrays the file also held (``andmask``, ``ormask``,
        ``normalization``, ``subcontinuum``), same length as ``flux``.
    """

    wavelength: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    meta: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.wavelength = np.asarray(self.wavelength, dtype=np.float64)
        self.flux = np.asarray(self.flux, dtype=np.float64)
        self.ivar = np.asarray(self.ivar, dtype=np.float64)
        self.mask = np.asarray(self.mask, dtype=bool)
        n = self.wavelength.shape
        for name in ("flux", "ivar", "mask"):
            if getattr(self, name).shape != n:
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, wavelength {n}")

    @property
    def npix(self) -> int:
        """Number of pixels."""
        return int(self.wavelength.size)

    @property
    def good(self) -> np.ndarray:
        """Boolean array, True where the pixel is usable."""
        return ~self.mask

    @property
    def masked_fraction(self) -> float:
        """Fraction of pixels masked (0..1)."""
        return float(self.mask.mean()) if self.npix else 1.0

    @property
    def wavelength_range(self) -> tuple[float, float]:
        """(first, last) wavelength in Angstrom, vacuum."""
        return float(self.wavelength[0]), float(self.wavelength[-1])

    @property
    def sigma(self) -> np.ndarray:
        """1-sigma flux error (inf where ivar <= 0)."""
        with np.errstate(divide="ignore"):
            return np.where(self.ivar > 0, 1.0 / np.sqrt(np.where(self.ivar > 0, self.ivar, 1.0)), np.inf)

    def median_snr(self) -> float:
        """Median per-pixel S/N over unmasked pixels (flux * sqrt(ivar))."""
        good = self.good & (self.ivar > 0)
        if not good.any():
            return 0.0
        return float(np.median(np.abs(self.flux[good]) * np.sqrt(self.ivar[good])))

    def to_specutils(self):
        """This spectrum as a ``specutils.Spectrum`` (``Spectrum1D`` in older releases)."""
        from .specutils_bridge import to_specutils

        return to_specutils(self)

    def summary(self) -> dict:
        """What a person wants to know at a glance (used by ``phdlspec info`` and the app)."""
        m = self.meta
        lo, hi = self.wavelength_range
        return {
            "file": m.get("source"),
            "layout": m.get("layout"),
            "data_release": m.get("data_release"),
            "pipeline_version": m.get("pipeline_version"),
            "obsid": m.get("obsid"),
            "designation": m.get("designation"),
            "ra": m.get("ra"),
            "dec": m.get("dec"),
            "class": m.get("class"),
            "subclass": m.get("subclass"),
            "snr": m.get("snr") or {},
            # bands whose header S/N is a pipeline cap (a lower limit), shown as ">=" by viewers
            "snr_lower_limits": list(m.get("snr_lower_limits") or []),
            "median_pixel_snr": round(self.median_snr(), 2),
            "npix": self.npix,
            "wavelength_min": round(lo, 2),
            "wavelength_max": round(hi, 2),
            "medium_of_file": m.get("medium"),
            "masked_fraction": round(self.masked_fraction, 4),
            "ivar_estimated": bool(m.get("ivar_estimated", False)),
            "resolution": m.get("resolution"),
        }
