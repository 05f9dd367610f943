"""The :class:`LineList` container: one entry per line, numpy arrays, sorted by wavelength.

Units and conventions (docs/physics.md, "linelist.py"); every reader converts to these:

========================  =================================================================
``wavelength``            Å, **vacuum** (air lists converted with ``io.airvac.air_to_vacuum``)
``species``               "Fe I", "Ca II", "CH", "CN", "C2", "MgH", "TiO", "CO", "OH", ...
``Z``, ``charge``         atomic number (0 for molecules), 0 = neutral, 1 = singly ionized
``log_gf``                log10(g_lower f), **isotopic fraction folded in** (see species.py)
``E_lower``               eV, lower-level excitation energy
``gamma_rad``             s⁻¹, radiative damping (FWHM in angular frequency, the VALD/Kurucz γ);
                          NaN = use the classical value
``gamma_stark``           s⁻¹ per electron cm⁻³ at 10⁴ K (linear, not log); NaN = approximate
``vdw_log_gamma6``        log10 γ₆ (s⁻¹ cm³ per H atom, 10⁴ K), NaN when not given
``abo_sigma``             ABO cross-section σ (a₀², at v = 10⁴ m/s), NaN when not given
``abo_alpha``             ABO velocity exponent α, NaN when not given
``vdw_enhancement``       factor on the Unsöld γ₆ given by the list (Turbospectrum fdamp 2.5,
                          MOOG's factor on C₆ converted to γ: f^0.4); NaN = none given
``mass``                  amu of the absorber (an isotope's / isotopologue's mass when known)
``isotope_fraction``      the fraction folded into ``log_gf`` (1 = nothing folded)
``molecule_D0``           eV, dissociation energy for molecules when the list gives it, else NaN
``source``                short label of the list the line came from ("linemake", "GES", ...)
========================  =================================================================

Precedence for van der Waals broadening (for line_absorption): ABO (σ, α) when present,
else γ₆ when present, else Unsöld × (``vdw_enhancement`` or the caller's default).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["LineList", "FLOAT_FIELDS", "INT_FIELDS", "STR_FIELDS"]

FLOAT_FIELDS = ("wavelength", "log_gf", "E_lower", "gamma_rad", "gamma_stark", "vdw_log_gamma6",
                "abo_sigma", "abo_alpha", "vdw_enhancement", "mass", "isotope_fraction",
                "molecule_D0")
INT_FIELDS = ("Z", "charge")
STR_FIELDS = ("species", "source")
_ALL = FLOAT_FIELDS + INT_FIELDS + STR_FIELDS
_OPTIONAL_NAN = ("gamma_rad", "gamma_stark", "vdw_log_gamma6", "abo_sigma", "abo_alpha",
                 "vdw_enhancement", "molecule_D0")


@dataclass(eq=False)
class LineList:
    """Spectral lines as parallel numpy arrays (see module docstring for units)."""

    wavelength: np.ndarray
    species: np.ndarray
    Z: np.ndarray
    charge: np.ndarray
    log_gf: np.ndarray
    E_lower: np.ndarray
    mass: np.ndarray
    gamma_rad: np.ndarray = None
    gamma_stark: np.ndarray = None
    vdw_log_gamma6: np.ndarray = None
    abo_sigma: np.ndarray = None
    abo_alpha: np.ndarray = None
    vdw_enhancement: np.ndarray = None
    isotope_fraction: np.ndarray = None
    molecule_D0: np.ndarray = None
    source: np.ndarray = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.wavelength = np.asarray(self.wavelength, dtype=np.float64)
        n = self.wavelength.shape[0]
        for name in FLOAT_FIELDS:
            val = getattr(self, name)
            if val is None:
                val = np.full(n, 1.0 if name == "isotope_fraction" else np.nan)
            val = np.broadcast_to(np.asarray(val, dtype=np.float64), (n,)).copy()
            setattr(self, name, val)
        for name in INT_FIELDS:
            setattr(self, name, np.broadcast_to(np.asarray(getattr(self, name), np.int16), (n,)).copy())
        for name in STR_FIELDS:
            val = getattr(self, name)
            if val is None:
                val = ""
            val = np.asarray(val, dtype=str)
            setattr(self, name, np.broadcast_to(val, (n,)).copy())

    # ---------------------------------------------------------------- construction
    @classmethod
    def empty(cls) -> "LineList":
        return cls(wavelength=np.zeros(0), species=np.zeros(0, str), Z=np.zeros(0), charge=np.zeros(0),
                   log_gf=np.zeros(0), E_lower=np.zeros(0), mass=np.zeros(0))

    def arrays(self) -> dict[str, np.ndarray]:
        """All per-line columns by name."""
        return {name: getattr(self, name) for name in _ALL}

    def _subset(self, index) -> "LineList":
        return LineList(**{k: v[index] for k, v in self.arrays().items()}, meta=dict(self.meta))

    def sorted(self) -> "LineList":
        """Sorted by wavelength (stable, so equal wavelengths keep their input order)."""
        order = np.argsort(self.wavelength, kind="stable")
        return self._subset(order)

    @classmethod
    def concat(cls, lists) -> "LineList":
        """One sorted list from several (string columns widen as needed)."""
        lists = [ll for ll in lists if ll is not None]
        if not lists:
            return cls.empty()
        cols = {name: np.concatenate([getattr(ll, name) for ll in lists]) for name in _ALL}
        meta = {"sources": [ll.meta for ll in lists]}
        return cls(**cols, meta=meta).sorted()

    # ---------------------------------------------------------------- queries
    def __len__(self) -> int:
        return int(self.wavelength.shape[0])

    def __getitem__(self, index) -> "LineList":
        """A sub-list by slice, integer array or boolean mask."""
        if isinstance(index, (int, np.integer)):
            index = slice(index, index + 1 if index != -1 else None)
        return self._subset(index)

    def select(self, wl_min: float, wl_max: float) -> "LineList":
        """Lines with wl_min <= wavelength <= wl_max (Å, vacuum); uses the sort order."""
        i0 = np.searchsorted(self.wavelength, wl_min, side="left")
        i1 = np.searchsorted(self.wavelength, wl_max, side="right")
        return self._subset(slice(i0, i1))

    def species_mask(self, name: str | tuple | list) -> np.ndarray:
        """Boolean mask of the lines of one species ("Fe I", "CH") or of several."""
        names = [name] if isinstance(name, str) else list(name)
        return np.isin(self.species, names)

    def counts(self) -> dict[str, int]:
        """Number of lines per species, most numerous first."""
        names, n = np.unique(self.species, return_counts=True)
        return {str(k): int(v) for k, v in sorted(zip(names, n), key=lambda t: -t[1])}

    def equals(self, other: "LineList") -> bool:
        """Exact equality of every column (NaN == NaN)."""
        for name in _ALL:
            a, b = getattr(self, name), getattr(other, name)
            if a.shape != b.shape:
                return False
            if a.dtype.kind == "f":
                if not np.array_equal(a, b, equal_nan=True):
                    return False
            elif not np.array_equal(a, b):
                return False
        return True

    def __repr__(self) -> str:
        if not len(self):
            return "LineList(0 lines)"
        top = ", ".join(f"{k}: {v}" for k, v in list(self.counts().items())[:6])
        return (f"LineList({len(self)} lines, {self.wavelength[0]:.2f}–{self.wavelength[-1]:.2f} Å vac; "
                f"{top}{', …' if len(self.counts()) > 6 else ''})")

    # ---------------------------------------------------------------- npz cache
    def save(self, path, **extra) -> None:
        """Write to a compressed ``.npz`` (no pickle). String columns are stored as a
        table of unique values plus int32 indices (much smaller than per-line strings).
        ``extra`` (str -> str or array) are stored alongside, under ``x_<name>``."""
        out = {}
        for name in FLOAT_FIELDS + INT_FIELDS:
            out[name] = getattr(self, name)
        for name in STR_FIELDS:
            uniq, inv = np.unique(getattr(self, name), return_inverse=True)
            out[f"{name}__values"] = uniq.astype(str)
            out[f"{name}__index"] = inv.astype(np.int32)
        for k, v in extra.items():
            out[f"x_{k}"] = np.asarray(v)
        np.savez_compressed(path, **out)

    @classmethod
    def load(cls, path, with_extra: bool = False):
        """Read a list written by :meth:`save`; raises ValueError when a column is missing
        or inconsistent (zip CRC errors surface as zipfile.BadZipFile/OSError)."""
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        try:
            cols = {name: data[name] for name in FLOAT_FIELDS + INT_FIELDS}
            for name in STR_FIELDS:
                cols[name] = data[f"{name}__values"][data[f"{name}__index"]]
        except KeyError as exc:
            raise ValueError(f"{path}: not a LineList cache (missing {exc})") from None
        n = cols["wavelength"].shape[0]
        if any(v.shape != (n,) for v in cols.values()):
            raise ValueError(f"{path}: columns of different lengths")
        ll = cls(**cols)
        if with_extra:
            extra = {k[2:]: v for k, v in data.items() if k.startswith("x_")}
            return ll, extra
        return ll
