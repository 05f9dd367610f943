"""Open-cluster method: the members of one cluster share one composition, so any trend of
an abundance with Teff or log g along the cluster sequence is the method's.

For each abundance label, ``[X/Fe] = c0 + f(x) + noise`` is fitted robustly (Huber, then
4-sigma clipping) over the members; f is a polynomial in standardized Teff, log g
(centered on the members' medians). The correction removes f and, when the cluster's
reference mean ``m +- e`` is given (e.g. APOGEE's M67 means), also the offset
``c0 - m`` (its error includes e). Without a reference the zero point is left alone.
"""
from __future__ import annotations

import numpy as np

from . import diagnostics as D
from .correction import Correction, feature_matrix
from .models import Trend, fit_linear, robust_std
from .tables import abundance_names, find_id_column, float_column, id_strings

__all__ = ["fit_cluster"]


def fit_cluster(members, reference: dict | None = None, labels=None, features=("teff", "logg"),
                order: int = 1, min_members: int = 8, name: str = "cluster", id_column=None):
    """Fit the open-cluster correction of each abundance label.

    Parameters
    ----------
    members : our results for the cluster's members (schema columns)
    reference : ``{label: (mean, error)}`` in dex, the cluster's reference abundances
        (:func:`~.catalogs.occam_cluster_means`); labels without one keep their zero point
    features : trend variables (``teff``, ``logg``); order : polynomial degree
    min_members : labels with fewer finite members are skipped

    Returns
    -------
    (list of :class:`Correction`, diagnostics blocks)
    """
    reference = dict(reference or {})
    labels = [l for l in (labels or abundance_names()) if l in members.colnames]
    try:
        ids = id_strings(members[find_id_column(members, id_column)])
    except ValueError:
        ids = np.arange(len(members)).astype(str)
    x = feature_matrix(members, features, "teff")
    corrections, blocks = [], []
    for label in labels:
        y = np.asarray(members[label], float)
        ok = np.isfinite(y) & np.all(np.isfinite(x), 1)
        if ok.sum() < max(min_members, len(features) * order + 2):
            continue
        trend = Trend.new(features, order, True, x[ok])
        a = trend.matrix(x)
        res = fit_linear(np.where(ok[:, None], a, np.nan), np.where(ok, y, np.nan), robust="huber")
        c0, var0 = float(res.coef[0]), float(res.cov[0, 0])
        shape = a[:, 1:] @ res.coef[1:]
        stats = {"n_members": int(ok.sum()), "n_used": int(res.used.sum()), "cluster": name,
                 "cluster_mean_fitted": c0, "cluster_mean_fitted_err": np.sqrt(var0)}
        if label in reference and np.isfinite(reference[label][0]):
            m, e = reference[label]
            e = float(e) if e is not None and np.isfinite(e) else 0.0
            trend.coef = res.coef.copy()
            trend.coef[0] = c0 - m
            trend.cov = res.cov.copy()
            trend.cov[0, 0] += e ** 2
            truth = float(m)
            stats.update(reference_mean=float(m), reference_err=e)
        else:
            # No anchor: keep only the shape, so the members' median-Teff level is unchanged.
            trend.intercept = False
            trend.coef, trend.cov = res.coef[1:].copy(), res.cov[1:, 1:].copy()
            truth = c0
        before = y - truth
        model = (a @ trend.coef) if trend.intercept else shape
        after = before - model
        stats.update(scatter_before=robust_std(before[ok]), scatter_after=robust_std(after[ok]),
                     offset_before=float(np.median(before[ok])), offset_after=float(np.median(after[ok])))
        corrections.append(Correction(label, "cluster", trend, stats))
        blocks.append(D.rows("cluster", label, ids[ok], float_column(members, "teff")[ok], float_column(members, "logg")[ok],
                             float_column(members, "fe_h")[ok], before[ok], after[ok], model[ok]))
    return corrections, blocks
