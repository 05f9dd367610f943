"""Open-cluster method: the members of one cluster share one composition, so any trend of
an abundance with Teff or log g along the cluster sequence is the method's.

For each abundance label, ``[X/Fe] = c0 + f(x) + noise`` is fitted robustly (Huber, then
4-sigma clipping) over the members; f is a polynomial in standardized Teff, log g
(centered on the members' medians). The correction removes f and, when the cluster's
reference mean ``m +- e`` is given (e.g. APOGEE's M67 means), also the offset
``c0 - m`` (its error includes e). Without a reference the zero point is left alone.
Which trend terms are used (none; Teff; log g; both; up to ``order``) is chosen by k-fold
cross-validation over the members, so a shape is applied only when it predicts held-out
members better than the cluster's mean alone does.

A cluster's sequence ties Teff to log g (giants are cool, dwarfs hot), so its Teff "trend"
can be a giant/dwarf contrast that is wrong for field dwarfs. When wide-binary pairs are at
hand (``pair_check``), a candidate shape is vetoed if, applied to both stars of each pair,
it makes the pairs' abundance differences worse: mean |Delta| after minus before larger
than its paired standard error. The pairs share one composition, so a correct shape can
only shrink their differences. The mean alone is never vetoed (it cancels in a difference).
"""
from __future__ import annotations

import itertools

import numpy as np

from . import diagnostics as D
from .correction import Correction, feature_matrix
from .models import Trend, cv_seed, fit_linear, robust_std, select_design
from .tables import abundance_names, find_id_column, float_column, id_strings, measured_column

__all__ = ["fit_cluster"]


def fit_cluster(members, reference: dict | None = None, labels=None, features=("teff", "logg"),
                order: int = 1, min_members: int = 8, name: str = "cluster", id_column=None,
                select: str | None = "cv", k: int = 5, rng=0, pair_check=None):
    """Fit the open-cluster correction of each abundance label.

    Parameters
    ----------
    members : our results for the cluster's members (schema columns)
    reference : ``{label: (mean, error)}`` in dex, the cluster's reference abundances
        (:func:`~.catalogs.occam_cluster_means`); labels without one keep their zero point
    features : trend variables (``teff``, ``logg``); order : polynomial degree
    min_members : labels with fewer finite members are skipped
    select : ``"cv"`` (default): the trend terms (the mean alone; then each non-empty subset
        of ``features`` at each degree up to ``order``, fewest coefficients first) are chosen by
        k-fold cross-validation (:func:`~.models.select_design`); ``None``: always all of
        ``features`` at degree ``order``
    k, rng : folds and seed of the cross-validation
    pair_check : ``(table, ia, ib)``: a results table (schema columns) and the row indices of
        the two stars of each wide-binary pair in it (:func:`~.binaries.pair_indices`); with
        ``select="cv"``, trend shapes that widen the pairs' abundance differences are vetoed
        (module docstring). None: no veto.

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
    if select not in ("cv", None):
        raise ValueError(f"select must be 'cv' or None, got {select!r}")
    x = feature_matrix(members, features, "teff")
    seed = cv_seed(rng)  # the folds of each label are drawn from (seed, label)
    corrections, blocks = [], []
    for label in labels:
        y = measured_column(members, label)
        ok = np.isfinite(y) & np.all(np.isfinite(x), 1)
        if ok.sum() < max(min_members, len(features) * order + 2):
            continue
        pairs = _pair_deltas(pair_check, features, label)
        trend, a, cv_scores, vetoed = _choose_trend(features, order, x, y, ok, select, k, (seed, label), pairs)
        res = fit_linear(np.where(ok[:, None], a, np.nan), np.where(ok, y, np.nan), robust="huber")
        c0, var0 = float(res.coef[0]), float(res.cov[0, 0])
        shape = a[:, 1:] @ res.coef[1:]
        stats = {"n_members": int(ok.sum()), "n_used": int(res.used.sum()), "cluster": name,
                 "cluster_mean_fitted": c0, "cluster_mean_fitted_err": np.sqrt(var0)}
        if cv_scores is not None:
            stats.update(k_folds=k, cv_scores=cv_scores)
        if pairs is not None and select == "cv":
            stats.update(pair_vetoed=vetoed, n_pairs_checked=int(len(pairs[2])))
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
        stats["terms"] = trend.term_names
        before = y - truth
        model = (a @ trend.coef) if trend.intercept else shape
        after = before - model
        stats.update(scatter_before=robust_std(before[ok]), scatter_after=robust_std(after[ok]),
                     offset_before=float(np.median(before[ok])), offset_after=float(np.median(after[ok])))
        corrections.append(Correction(label, "cluster", trend, stats))
        blocks.append(D.rows("cluster", label, ids[ok], float_column(members, "teff")[ok], float_column(members, "logg")[ok],
                             float_column(members, "fe_h")[ok], before[ok], after[ok], model[ok]))
    return corrections, blocks


def _pair_deltas(pair_check, features, label, min_pairs: int = 8):
    """(features of star a, of star b, [X/Fe]_a - [X/Fe]_b) over the pairs where all are
    finite, or None when there is no check or fewer than ``min_pairs`` such pairs."""
    if pair_check is None:
        return None
    table, ia, ib = pair_check
    if label not in table.colnames:
        return None
    x = feature_matrix(table, features, "teff")
    y = measured_column(table, label)
    xa, xb, d = x[ia], x[ib], y[ia] - y[ib]
    ok = np.isfinite(d) & np.all(np.isfinite(xa), 1) & np.all(np.isfinite(xb), 1)
    if ok.sum() < min_pairs:
        return None
    return xa[ok], xb[ok], d[ok]


def _widens_pairs(trend, xs_cols, a, y, ok, pairs) -> bool:
    """Whether the shape fitted on the members makes the pairs' |Delta| larger by more than
    one paired standard error."""
    res = fit_linear(np.where(ok[:, None], a, np.nan), np.where(ok, y, np.nan), robust="huber")
    xa, xb, d = pairs
    # the intercept cancels in a difference
    shift = (trend.matrix(xa[:, xs_cols]) - trend.matrix(xb[:, xs_cols])) @ res.coef
    u = np.abs(d - shift) - np.abs(d)
    return bool(u.mean() > u.std(ddof=1) / np.sqrt(len(u)))


def _choose_trend(features, order, x, y, ok, select, k, rng, pairs=None):
    """(trend, design matrix over all rows, {candidate: robust CV error} or None, [vetoed candidate
    names]): the cluster's trend terms, chosen by cross-validation when ``select == "cv"``
    among the candidates the pairs do not veto."""
    if select is None:
        trend = Trend.new(features, order, True, x[ok])
        return trend, trend.matrix(x), None, []
    cols = {f: j for j, f in enumerate(features)}
    cands = [(0, ())]
    for o in range(1, order + 1):
        for n in range(1, len(features) + 1):
            cands += [(o, sub) for sub in itertools.combinations(features, n)]
    trends, designs, vetoed = [], [], []
    for o, sub in cands:
        idx = [cols[f] for f in sub]
        xs = x[:, idx] if sub else np.zeros((len(x), 0))
        t = Trend.new(sub, o, True, xs[ok])
        a = t.matrix(xs)
        if sub and pairs is not None and _widens_pairs(t, idx, a, y, ok, pairs):
            vetoed.append("+".join(t.term_names[1:]))
            continue
        trends.append((t, xs))
        designs.append(np.where(ok[:, None], a, np.nan))
    # fewest coefficients first, so the rule prefers the simpler of equally good models
    order_idx = sorted(range(len(trends)), key=lambda i: designs[i].shape[1])
    designs = [designs[i] for i in order_idx]
    trends = [trends[i] for i in order_idx]
    pick, scores = select_design(designs, np.where(ok, y, np.nan), k=k, robust="huber", rng=rng)
    pick = 0 if pick is None else pick
    names = {"+".join(t.term_names[1:]) or "mean": sc for (t, _), sc in zip(trends, scores)}
    trend, xs = trends[pick]
    return trend, trend.matrix(xs), names, vetoed
