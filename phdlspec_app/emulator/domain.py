"""domain: where the emulator was trained, and how far a label vector is outside it.

The training domain is the one ``physics.grid.sample_labels`` draws from (stored in the
model file with the grid's specification): Teff and [Fe/H] and vmic boxes, log g between
the HR-diagram envelope of the grid, each [X/Fe] within ±``xfe_halfwidth`` of the
Galactic-trend prior at the star's [Fe/H]. ``vbroad`` and ``rv`` are applied analytically
and are valid over the schema's whole range. A small tolerance (``tol``, in units of each
label's full training width) absorbs float round-off at the edges.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .. import labels as L
from ..physics.grid import GridSpec, logg_envelope, galactic_trend

__all__ = ["TrainingDomain", "label_bounds"]

_IDX = {n: i for i, n in enumerate(L.label_names())}


@dataclass
class TrainingDomain:
    """The training domain (units: K, dex, km/s)."""

    teff: tuple[float, float] = (4000.0, 7000.0)
    fe_h: tuple[float, float] = (-2.5, 0.5)
    vmic: tuple[float, float] = (0.5, 2.5)
    xfe_halfwidth: float = 0.5
    tol: float = 0.01

    @classmethod
    def from_grid_spec(cls, spec: dict | GridSpec) -> "TrainingDomain":
        d = asdict(spec) if isinstance(spec, GridSpec) else dict(spec)
        return cls(teff=tuple(d["teff"]), fe_h=tuple(d["fe_h"]), vmic=tuple(d["vmic"]),
                   xfe_halfwidth=float(d["xfe_halfwidth"]))

    def to_dict(self) -> dict:
        return asdict(self)

    def box(self) -> dict[str, tuple[float, float]]:
        """The domain's bounding box {label: (lo, hi)}: Teff, [Fe/H], vmic; log g over the HR
        envelope; each [X/Fe] over its trend ± the half-width (for optimizers' bounds)."""
        t = np.linspace(*self.teff, 301)
        glo, ghi = logg_envelope(t)
        box = {"teff": tuple(self.teff), "fe_h": tuple(self.fe_h), "vmic": tuple(self.vmic),
               "logg": (float(np.min(glo)), float(np.max(ghi)))}
        for name, c in galactic_trend(np.linspace(*self.fe_h, 301)).items():
            box[name] = (float(c.min()) - self.xfe_halfwidth, float(c.max()) + self.xfe_halfwidth)
        return box

    def violations(self, labels) -> list[list[str]]:
        """For each row of (N, 32) labels, the names of the labels outside the domain."""
        x = np.atleast_2d(np.asarray(labels, dtype=float))
        bad = self._mask(x)
        names = L.label_names()
        return [[names[j] for j in np.nonzero(row)[0]] for row in bad]

    def covers(self, other: "TrainingDomain") -> str | None:
        """None when the domain ``other`` lies inside this one, else why not (how a grid
        supplement is checked before it is trained on with the grid)."""
        for key in ("teff", "fe_h", "vmic"):
            a, b = getattr(self, key), getattr(other, key)
            if b[0] < a[0] or b[1] > a[1]:
                return f"its {key} range {list(b)} leaves the grid's {list(a)}"
        if other.xfe_halfwidth > self.xfe_halfwidth:
            return f"its [X/Fe] half-width {other.xfe_halfwidth} exceeds the grid's {self.xfe_halfwidth}"
        return None

    def contains(self, labels) -> np.ndarray:
        """(N,) bool: every label of the row inside the domain."""
        x = np.atleast_2d(np.asarray(labels, dtype=float))
        return ~self._mask(x).any(axis=1)

    def _mask(self, x: np.ndarray) -> np.ndarray:
        if x.shape[-1] != len(L.LABELS):
            raise ValueError(f"expected label vectors of length {len(L.LABELS)}, got shape {x.shape}")
        bad = ~np.isfinite(x)

        def box(name, lo, hi):
            j = _IDX[name]
            t = self.tol * (hi - lo)
            bad[:, j] |= (x[:, j] < lo - t) | (x[:, j] > hi + t)

        box("teff", *self.teff)
        box("fe_h", *self.fe_h)
        box("vmic", *self.vmic)
        for name in ("vbroad", "rv"):
            lab = L.get_label(name)
            box(name, lab.lo, lab.hi)
        lo, hi = logg_envelope(np.clip(x[:, _IDX["teff"]], *self.teff))
        j = _IDX["logg"]
        t = self.tol * 4.0
        bad[:, j] |= (x[:, j] < lo - t) | (x[:, j] > hi + t)
        trend = galactic_trend(np.clip(x[:, _IDX["fe_h"]], *self.fe_h))
        t = self.tol * 2 * self.xfe_halfwidth
        for name, centre in trend.items():
            j = _IDX[name]
            bad[:, j] |= np.abs(x[:, j] - centre) > self.xfe_halfwidth + t
        return bad


def label_bounds(emulator=None, defaults: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi), each (32,) in schema order and units: the schema's range intersected with
    the emulator's training box (``emulator.domain_box``, a {name: (lo, hi)} dict, when it
    has one, else the default :class:`TrainingDomain`'s). ``defaults`` {name: (lo, hi)}
    bound labels the box leaves open (e.g. the fitter's cap on ``vbroad``). The one place
    both the fitter's search box and the model-error shifts' domain prior come from."""
    lo = np.array([lab.lo for lab in L.LABELS], dtype=float)
    hi = np.array([lab.hi for lab in L.LABELS], dtype=float)
    box = getattr(emulator, "domain_box", None)
    box = dict(box) if box else TrainingDomain().box()
    for name, bounds in (defaults or {}).items():
        box.setdefault(name, bounds)
    for name, (a, b) in box.items():
        j = _IDX[L.canonical_name(name)]
        lo[j], hi[j] = max(lo[j], a), min(hi[j], b)
    return lo, hi
