"""The one label schema of PhDLspec.

Every layer (physics, emulator, fitting, calibration, app) takes its label names,
units, ranges, defaults and element mapping from here and nowhere else.

The 32 labels, in schema order::

    teff, logg, vmic, vbroad, rv, fe_h,
    c_fe, n_fe, o_fe, na_fe, mg_fe, al_fe, si_fe, k_fe, ca_fe, sc_fe, ti_fe,
    v_fe, cr_fe, mn_fe, co_fe, ni_fe, cu_fe, zn_fe, sr_fe, y_fe, zr_fe,
    ba_fe, la_fe, ce_fe, nd_fe, eu_fe

Units: ``teff`` in K; ``logg`` in dex (cgs, log10 of g in cm s^-2); ``vmic``,
``vbroad`` and ``rv`` in km/s; ``fe_h`` and every ``x_fe`` in dex
(``fe_h`` = [Fe/H], ``x_fe`` = [X/Fe], both relative to the solar scale chosen by
the physics layer).

``lo``/``hi`` is the physical range a label may take anywhere in PhDLspec (the
sliders span it); a trained emulator has its own, narrower training domain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "Element",
    "Label",
    "LABELS",
    "GROUPS",
    "label_names",
    "get_label",
    "abundance_labels",
    "xfe_labels",
    "canonical_name",
    "defaults",
    "to_vector",
    "to_dict",
    "to_array",
    "to_table",
    "from_table",
    "check_in_range",
    "LabelError",
]


class LabelError(ValueError):
    """A label name or value that the schema does not admit."""


@dataclass(frozen=True)
class Element:
    """A chemical element controlled by an abundance label."""

    symbol: str
    Z: int
    #: True for the alpha elements that follow [alpha/Fe] unless a label overrides them
    alpha: bool = False


@dataclass(frozen=True)
class Label:
    """One stellar label.

    Attributes
    ----------
    name : canonical name (``teff``, ``mg_fe`` ...)
    unit : unit string ("K", "dex", "km/s")
    lo, hi : physical range, in ``unit``
    default : default value (a solar-like star), in ``unit``
    step : slider step, in ``unit``
    group : display group (atmosphere, CNO, light/odd-Z, alpha, Fe-peak, neutron-capture)
    latex : a label for plots
    description : one line of plain text
    element : the element an abundance label controls, else None
    """

    name: str
    unit: str
    lo: float
    hi: float
    default: float
    step: float
    group: str
    latex: str
    description: str
    element: Element | None = None

    @property
    def is_abundance(self) -> bool:
        """True for ``fe_h`` and the ``x_fe`` labels."""
        return self.element is not None

    @property
    def index(self) -> int:
        """Position of this label in the schema order."""
        return _INDEX[self.name]


GROUPS: tuple[str, ...] = (
    "atmosphere",
    "CNO",
    "light/odd-Z",
    "alpha",
    "Fe-peak",
    "neutron-capture",
)

# (symbol, Z, alpha, group, lo, hi). Ranges of [X/Fe] are wide enough for the
# extremes seen in Galactic surveys (CEMP stars, r-process enhanced stars) while
# staying inside what a 1D LTE synthesis of FGK stars is meaningful for.
_ELEMENTS: tuple[tuple[str, int, bool, str, float, float], ...] = (
    ("C", 6, False, "CNO", -1.0, 2.0),
    ("N", 7, False, "CNO", -1.0, 2.0),
    ("O", 8, True, "CNO", -1.0, 1.5),
    ("Na", 11, False, "light/odd-Z", -1.0, 1.5),
    ("Mg", 12, True, "alpha", -1.0, 1.5),
    ("Al", 13, False, "light/odd-Z", -1.0, 1.5),
    ("Si", 14, True, "alpha", -1.0, 1.5),
    ("K", 19, False, "light/odd-Z", -1.0, 1.5),
    ("Ca", 20, True, "alpha", -1.0, 1.5),
    ("Sc", 21, False, "Fe-peak", -1.0, 1.5),
    ("Ti", 22, True, "alpha", -1.0, 1.5),
    ("V", 23, False, "Fe-peak", -1.0, 1.5),
    ("Cr", 24, False, "Fe-peak", -1.0, 1.5),
    ("Mn", 25, False, "Fe-peak", -1.0, 1.5),
    ("Co", 27, False, "Fe-peak", -1.0, 1.5),
    ("Ni", 28, False, "Fe-peak", -1.0, 1.5),
    ("Cu", 29, False, "Fe-peak", -1.0, 1.5),
    ("Zn", 30, False, "Fe-peak", -1.0, 1.5),
    ("Sr", 38, False, "neutron-capture", -1.5, 2.0),
    ("Y", 39, False, "neutron-capture", -1.5, 2.0),
    ("Zr", 40, False, "neutron-capture", -1.5, 2.0),
    ("Ba", 56, False, "neutron-capture", -1.5, 2.0),
    ("La", 57, False, "neutron-capture", -1.5, 2.0),
    ("Ce", 58, False, "neutron-capture", -1.5, 2.0),
    ("Nd", 60, False, "neutron-capture", -1.5, 2.0),
    ("Eu", 63, False, "neutron-capture", -1.5, 2.0),
)

IRON = Element("Fe", 26, False)


def _build() -> tuple[Label, ...]:
    atm = [
        Label("teff", "K", 3500.0, 8000.0, 5777.0, 10.0, "atmosphere", r"$T_\mathrm{eff}$",
              "effective temperature"),
        Label("logg", "dex", 0.0, 5.5, 4.44, 0.01, "atmosphere", r"$\log g$",
              "surface gravity, log10(g / cm s^-2)"),
        Label("vmic", "km/s", 0.0, 4.0, 1.0, 0.05, "atmosphere", r"$v_\mathrm{mic}$",
              "microturbulent velocity"),
        Label("vbroad", "km/s", 0.0, 200.0, 5.0, 0.5, "atmosphere", r"$v_\mathrm{broad}$",
              "macroturbulence and rotation combined: FWHM of one Gaussian in velocity"),
        Label("rv", "km/s", -600.0, 600.0, 0.0, 0.5, "atmosphere", r"$v_\mathrm{r}$",
              "heliocentric-frame radial velocity of the observed spectrum"),
        Label("fe_h", "dex", -4.0, 1.0, 0.0, 0.01, "atmosphere", r"[Fe/H]",
              "iron abundance relative to the Sun", IRON),
    ]
    abund = [
        Label(f"{sym.lower()}_fe", "dex", lo, hi, 0.0, 0.01, group, f"[{sym}/Fe]",
              f"{sym} abundance relative to iron, relative to the Sun", Element(sym, Z, alpha))
        for sym, Z, alpha, group, lo, hi in _ELEMENTS
    ]
    return tuple(atm + abund)


#: The 32 labels in schema order. Every array of labels in PhDLspec uses this order.
LABELS: tuple[Label, ...] = _build()
_INDEX = {lab.name: i for i, lab in enumerate(LABELS)}
_BY_NAME = {lab.name: lab for lab in LABELS}


def label_names() -> list[str]:
    """Canonical label names in schema order."""
    return [lab.name for lab in LABELS]


def get_label(name: str) -> Label:
    """The :class:`Label` for a name or any alias that :func:`canonical_name` accepts."""
    return _BY_NAME[canonical_name(name)]


def abundance_labels() -> list[Label]:
    """``fe_h`` and the 26 ``x_fe`` labels, each with its :class:`Element`."""
    return [lab for lab in LABELS if lab.element is not None]


def xfe_labels() -> list[Label]:
    """The 26 ``x_fe`` labels ([X/Fe], dex): the abundance labels other than ``fe_h``."""
    return [lab for lab in LABELS if lab.element is not None and lab.name != "fe_h"]


# Aliases used by catalogs and by people: APOGEE (TEFF, M_H, MG_FE), GALAH
# (teff, fe_h, mg_fe), bracket notation ([Mg/Fe]), and common spellings.
_ALIASES = {
    "t_eff": "teff", "temperature": "teff", "teff_k": "teff",
    "log_g": "logg", "grav": "logg", "gravity": "logg",
    "vmicro": "vmic", "vturb": "vmic", "vt": "vmic", "xi": "vmic", "vmic_kms": "vmic",
    "vsini": "vbroad", "vmacro": "vbroad", "vbroad_kms": "vbroad", "v_broad": "vbroad",
    "radial_velocity": "rv", "vrad": "rv", "vhelio": "rv", "rv_kms": "rv",
    "feh": "fe_h", "[fe/h]": "fe_h", "fe/h": "fe_h", "m_h": "fe_h", "metallicity": "fe_h",
}


def canonical_name(name: str) -> str:
    """Map a label name or a common alias to its canonical schema name.

    Accepts canonical names (``mg_fe``), catalog spellings (``MG_FE``, ``TEFF``,
    ``LOGG``, ``FE_H``, ``M_H``), bracket notation (``[Mg/Fe]``, ``[Fe/H]``) and a few
    common words (``vsini``, ``vturb``, ``feh``).

    Raises
    ------
    LabelError
        if the name is not a label of the schema.
    """
    key = str(name).strip().lower().replace(" ", "")
    if key in _BY_NAME:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    if key.startswith("[") and key.endswith("]") and "/" in key:
        num, den = key[1:-1].split("/", 1)
        key = f"{num}_{den}"
    key = key.replace("/", "_").replace("-", "_")
    if key in _BY_NAME:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    raise LabelError(
        f"unknown label {name!r}; the schema's labels are: {', '.join(label_names())}"
    )


def defaults() -> np.ndarray:
    """The default label vector (a solar-like dwarf), shape (32,)."""
    return np.array([lab.default for lab in LABELS], dtype=float)


def to_vector(values: Mapping[str, float], fill_defaults: bool = True) -> np.ndarray:
    """A dict of labels (any accepted alias) to a vector in schema order, shape (32,).

    Labels absent from ``values`` take their default when ``fill_defaults`` is true,
    else NaN.
    """
    vec = defaults() if fill_defaults else np.full(len(LABELS), np.nan)
    for key, val in values.items():
        vec[_INDEX[canonical_name(key)]] = float(val)
    return vec


def to_dict(vector: Sequence[float] | np.ndarray) -> dict[str, float]:
    """A vector in schema order (length 32) to ``{name: value}``."""
    arr = np.asarray(vector, dtype=float)
    if arr.shape != (len(LABELS),):
        raise LabelError(f"expected a label vector of shape ({len(LABELS)},), got {arr.shape}")
    return {lab.name: float(v) for lab, v in zip(LABELS, arr)}


def to_array(rows: Iterable[Mapping[str, float]], fill_defaults: bool = True) -> np.ndarray:
    """Many label dicts to an (N, 32) array in schema order."""
    return np.array([to_vector(r, fill_defaults) for r in rows], dtype=float).reshape(-1, len(LABELS))


def to_table(array: np.ndarray, **extra_columns):
    """An (N, 32) label array to an :class:`astropy.table.Table` with one column per
    label (canonical names, with units), plus any ``extra_columns`` given first
    (e.g. ``obsid=[...]``)."""
    from astropy.table import Table

    arr = np.atleast_2d(np.asarray(array, dtype=float))
    if arr.shape[1] != len(LABELS):
        raise LabelError(f"expected an array of shape (N, {len(LABELS)}), got {arr.shape}")
    table = Table()
    for key, col in extra_columns.items():
        table[key] = col
    for i, lab in enumerate(LABELS):
        table[lab.name] = arr[:, i]
        table[lab.name].unit = None if lab.unit == "dex" else lab.unit
        table[lab.name].description = lab.description
    return table


def from_table(table, fill_defaults: bool = True) -> np.ndarray:
    """Columns of a table (any accepted alias, any case) to an (N, 32) array.

    Columns that are not labels are ignored; labels without a column take their
    default (``fill_defaults``) or NaN.
    """
    n = len(table)
    arr = np.tile(defaults(), (n, 1)) if fill_defaults else np.full((n, len(LABELS)), np.nan)
    seen: dict[str, str] = {}
    for col in table.colnames:
        try:
            name = canonical_name(col)
        except LabelError:
            continue
        if name in seen:
            raise LabelError(f"columns {seen[name]!r} and {col!r} both map to label {name!r}")
        seen[name] = col
        arr[:, _INDEX[name]] = np.asarray(table[col], dtype=float)
    return arr


def check_in_range(values: np.ndarray) -> np.ndarray:
    """Boolean array, shape (..., 32): True where a label lies inside its physical range."""
    arr = np.asarray(values, dtype=float)
    lo = np.array([lab.lo for lab in LABELS])
    hi = np.array([lab.hi for lab in LABELS])
    return (arr >= lo) & (arr <= hi)
