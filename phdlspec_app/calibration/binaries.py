"""Wide-binary method: the two stars of a comoving pair share their birth abundances, so
any trend of their abundance difference with their Teff (log g) difference is the
method's, not the stars'.

For each abundance label, with f a polynomial shape without a constant (features
standardized per 1000 K and per dex),

    [X/Fe]_A - [X/Fe]_B = f(x_A) - f(x_B) + noise,

is fitted by least squares with iterative 4-sigma clipping; the correction is
``[X/Fe] - f(x)`` (it leaves the zero point alone: pairs cannot measure it). Errors
are from a bootstrap over pairs. The degree (0, no correction, up to ``order``) is chosen
by k-fold cross-validation over the pairs, so a shape is applied to new stars only where
it is significant: it must predict held-out pairs better than no correction does.
"""
from __future__ import annotations

import numpy as np

from . import diagnostics as D
from .correction import Correction, feature_matrix
from .models import Trend, cv_seed, fit_linear, robust_std, select_design
from .tables import (NO_ID, CalibrationInputError, abundance_names, find_id_column, float_column, id_strings,
                     measured_column)

__all__ = ["fit_wide_binaries", "find_pair_columns", "pair_indices"]

_PAIR_PATTERNS = (("_a", "_b"), ("_1", "_2"), ("1", "2"), ("a", "b"), ("_primary", "_secondary"))


def find_pair_columns(pairs, columns=None) -> tuple[str, str]:
    """The two identifier columns of a pairs table: given, else ``<x>_a``/``<x>_b``,
    ``<x>_1``/``<x>_2`` (… ``id_a``, ``obsid1``), else the first two columns."""
    src = pairs.meta.get("source_file", "pairs table")
    if columns is not None:
        if len(columns) != 2 or any(c not in pairs.colnames for c in columns):
            raise CalibrationInputError(f"{src}: pair columns {columns} not both in the table "
                                        f"(columns: {', '.join(pairs.colnames)})")
        return tuple(columns)
    lower = {c.lower(): c for c in pairs.colnames}
    for sa, sb in _PAIR_PATTERNS:
        for c in pairs.colnames:
            cl = c.lower()
            if cl.endswith(sa):
                other = cl[: len(cl) - len(sa)] + sb
                if other in lower and other != cl:
                    return c, lower[other]
    if len(pairs.colnames) >= 2:
        return pairs.colnames[0], pairs.colnames[1]
    raise CalibrationInputError(f"{src}: a pairs table needs two identifier columns, one per star")


def pair_indices(results, pairs, id_column=None, pair_columns=None) -> tuple[np.ndarray, np.ndarray, int]:
    """Row indices in ``results`` of the two stars of each pair found there, and the number
    of pairs with a star missing from the results."""
    idc = find_id_column(results, id_column)
    ca, cb = find_pair_columns(pairs, pair_columns)
    pos = {}
    for i, v in enumerate(id_strings(results[idc])):
        if v.lower() not in NO_ID:
            pos.setdefault(v, i)
    ia, ib, missing = [], [], 0
    for a, b in zip(id_strings(pairs[ca]), id_strings(pairs[cb])):
        if a in pos and b in pos and pos[a] != pos[b]:
            ia.append(pos[a])
            ib.append(pos[b])
        else:
            missing += 1
    if not ia:
        raise CalibrationInputError(
            f"{pairs.meta.get('source_file', 'pairs table')}: no pair has both stars in "
            f"{results.meta.get('source_file', 'the results')} (matched {ca!r}/{cb!r} against {idc!r})")
    return np.array(ia), np.array(ib), missing


def fit_wide_binaries(results, pairs, labels=None, id_column=None, pair_columns=None,
                      features=("teff",), order: int = 1, n_boot: int = 400, min_pairs: int = 8, rng=0,
                      select: str | None = "cv", k: int = 5):
    """Fit the wide-binary correction of each abundance label.

    Parameters
    ----------
    results : our results table (schema columns; ``teff`` K, ``logg`` dex, abundances dex)
    pairs : table with two identifier columns (see :func:`find_pair_columns`)
    labels : abundance labels to calibrate (default: ``fe_h`` and every ``x_fe`` present)
    features : trend variables, from ``teff``, ``logg``, ``fe_h``. Teff alone by default:
        along the main sequence Teff and log g of a pair are nearly collinear, and both
        together only inflate the errors
    order : polynomial degree of the shape (the highest one tried, with ``select="cv"``)
    n_boot : bootstrap resamples of the pairs for the coefficient covariance
    min_pairs : labels with fewer usable pairs are skipped (listed in the result's stats)
    select : ``"cv"`` (default): the degree, from 0 (no correction) to ``order``, is chosen by
        k-fold cross-validation over the pairs (:func:`~.models.select_design`), so a trend is
        applied only when it predicts held-out pairs; ``None``: always fit degree ``order``.
        A label whose chosen degree is 0 is kept, with an empty trend, for its internal
        precision (``stats["order"] == 0``)
    k : folds of the cross-validation

    Returns
    -------
    (list of :class:`Correction`, diagnostics blocks)
    """
    ia, ib, missing = pair_indices(results, pairs, id_column, pair_columns)
    idc = find_id_column(results, id_column)
    ids = id_strings(results[idc])
    labels = [l for l in (labels or abundance_names()) if l in results.colnames]
    if select not in ("cv", None):
        raise ValueError(f"select must be 'cv' or None, got {select!r}")
    seed = cv_seed(rng)  # the folds of each label are drawn from (seed, label)
    rng = np.random.default_rng(seed)
    xall = feature_matrix(results, features, "teff")
    xa, xb = xall[ia], xall[ib]
    corrections, blocks = [], []
    for label in labels:
        y = measured_column(results, label)
        dy = y[ia] - y[ib]
        ok = np.isfinite(dy) & np.all(np.isfinite(xa), 1) & np.all(np.isfinite(xb), 1)
        if ok.sum() < min_pairs:
            continue
        box = np.vstack([xa[ok], xb[ok]])
        trends = [Trend.new(features, o, False, box) for o in (range(order + 1) if select == "cv" else [order])]
        # a pair difference cancels the zero point: the design is the difference of the shapes
        designs = [np.where(ok[:, None], t.matrix(xa) - t.matrix(xb), np.nan) for t in trends]
        yd = np.where(ok, dy, np.nan)
        cv_scores = None
        pick = 0
        if select == "cv":
            # the zero-column design always scores, so a pick is always made
            pick, cv_scores = select_design(designs, yd, k=k, robust="clip", rng=(seed, label))
        trend, a = trends[pick], designs[pick]
        res = fit_linear(a, yd, robust="clip", n_boot=n_boot, rng=rng)
        trend.coef, trend.cov = res.coef, res.cov
        model = np.nan_to_num(a) @ res.coef
        after = dy - model
        stats = {"n_pairs": int(ok.sum()), "n_used": int(res.used.sum()), "n_pairs_missing": missing,
                 "order": trend.order, "scatter_before": robust_std(dy[ok]), "scatter_after": robust_std(after[ok]),
                 "internal_precision": robust_std(after[ok]) / np.sqrt(2), "n_boot": n_boot}
        if cv_scores is not None:
            stats.update(k_folds=k, cv_scores={f"order{t.order}": sc for t, sc in zip(trends, cv_scores)})
        corrections.append(Correction(label, "wide_binaries", trend, stats))
        ta, tb = ia[ok], ib[ok]
        teff, logg = float_column(results, "teff"), float_column(results, "logg")
        blocks.append(D.rows(
            "wide_binaries", label, [f"{ids[i]}-{ids[j]}" for i, j in zip(ta, tb)],
            teff[ta], logg[ta], float_column(results, "fe_h")[ta], dy[ok], after[ok], model[ok],
            dteff=teff[ta] - teff[tb], dlogg=logg[ta] - logg[tb]))
    return corrections, blocks
