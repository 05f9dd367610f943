"""One label's correction: a fitted :class:`~.models.Trend` of (ours - truth), and how it
is applied to new stars with its uncertainty and its valid domain."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .models import Trend
from .tables import CalibrationInputError

__all__ = ["Correction", "feature_matrix"]


def feature_matrix(table, features, label: str, self_values=None) -> np.ndarray:
    """(N, n_features) feature values from a table with schema columns; ``self`` is the
    label's own column unless ``self_values`` is given."""
    cols = []
    for f in features:
        if f == "self":
            cols.append(np.asarray(table[label] if self_values is None else self_values, float))
            continue
        if f not in table.colnames:
            raise CalibrationInputError(
                f"{table.meta.get('source_file', 'table')}: column {f!r} is needed to apply the "
                f"{label} correction but is not in the table")
        cols.append(np.asarray(table[f], float))
    return np.column_stack(cols) if cols else np.zeros((len(table), 0))


@dataclass
class Correction:
    """``ours - truth = trend(x)`` for one label, from one method.

    Applying it gives ``truth = ours - trend(x)``; when the trend has a ``self`` (scale)
    term ``k (truth - c)``, it is inverted exactly: ``truth = (ours - O(x) + k c) / (1 + k)``.

    Attributes
    ----------
    label : schema name
    method : ``wide_binaries``, ``cluster`` or ``reference``
    trend : the fitted model, in the label's unit (dex, K)
    stats : numbers about the fit (n, scatter before/after, cross-validation scores …)
    """

    label: str
    method: str
    trend: Trend
    stats: dict = field(default_factory=dict)

    def _self_k(self) -> tuple[float, float, int | None]:
        t = self.trend
        if "self" not in t.features:
            return 0.0, 0.0, None
        j = t.features.index("self")
        return float(t.coef[-1]), float(t.center[j]), j

    def apply(self, table, outside: str = "clip"):
        """Corrected values, the correction's 1-sigma uncertainty, the factor that scales the
        raw errors (1 / (1 + k)), and a boolean (N,) marking stars outside the valid domain.

        ``outside``: ``"clip"`` evaluates the trend at the nearest edge of the domain
        (never extrapolates a polynomial); ``"nan"`` returns NaN there.
        """
        t = self.trend
        y = np.asarray(table[self.label], float)
        k, c, j = self._self_k()
        x = feature_matrix(table, t.features, self.label, self_values=y)
        # a trend with no feature terms (a zero point, or no correction at all) is the same
        # everywhere: nothing is extrapolated, so nothing is outside its domain
        out = t.outside(x) if t.terms else np.zeros(len(y), bool)
        xc = t.clip(x)
        if j is None:
            a = t.matrix(xc)
            corrected = y - a @ t.coef
        else:
            a = t.matrix(xc)
            a_off = a.copy()
            a_off[:, -1] = 0.0
            # The self feature is the truth we solve for; y is only its first guess.
            truth = (y - a_off @ t.coef + k * c) / (1.0 + k)
            xc[:, j] = truth
            out |= t.outside(xc)
            xc = t.clip(xc)
            a = t.matrix(xc)
            truth = (y - a_off @ t.coef + k * c) / (1.0 + k)
            a[:, -1] = truth - c
            corrected = truth
        var = np.einsum("ij,jk,ik->i", a, t.cov, a) / (1.0 + k) ** 2
        sigma = np.sqrt(np.clip(var, 0, None))
        if outside == "nan":
            corrected = np.where(out, np.nan, corrected)
        elif outside != "clip":
            raise ValueError(f"outside must be 'clip' or 'nan', got {outside!r}")
        return corrected, sigma, 1.0 / (1.0 + k), out

    def to_dict(self) -> dict:
        return {"label": self.label, "method": self.method, "trend": self.trend.to_dict(),
                "stats": {k: _plain(v) for k, v in self.stats.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Correction":
        return cls(d["label"], d["method"], Trend.from_dict(d["trend"]), dict(d.get("stats", {})))


def _plain(v):
    """JSON/YAML-safe scalars and lists."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.str_):
        return str(v)
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else float(v)
    return v
