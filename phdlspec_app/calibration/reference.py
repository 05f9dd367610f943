"""Reference-catalog method: zero point, scale and low-order trends of (ours - reference)
for every label measured by both, from stars matched to a high-resolution catalog
(APOGEE, GALAH, Gaia benchmark stars).

Model, per label y::

    y_ours - y_ref = c0 + P(teff, logg, fe_h) + k (y_ref - c)

P is a polynomial of total degree 0..max_order in OUR standardized Teff, log g, [Fe/H]
(the variables available when the correction is applied); the scale term k uses the
REFERENCE value, because our value carries our noise and would bias k toward a spurious
positive scale (regression dilution); the correction inverts the model exactly. A
label is never its own trend variable (for ``fe_h`` the scale term plays that role).
Fits are Huber-robust with 4-sigma clipping; the degree and whether a scale term is used
are chosen by repeated k-fold cross-validation: the simplest model whose held-out absolute
residuals are within one standard error (paired) of the best model's.
"""
from __future__ import annotations

import numpy as np

from . import diagnostics as D
from .correction import Correction, feature_matrix
from .models import Trend, cv_seed, fit_linear, robust_std, select_design
from .tables import find_id_column, float_column, id_strings, measured_column

__all__ = ["fit_reference"]


def fit_reference(matched, labels=None, features=("teff", "logg", "fe_h"), max_order: int = 2,
                  scale: bool | None = None, k: int = 5, min_stars: int = 15, suffix: str = "_ref",
                  rng=0, id_column=None):
    """Fit the reference-catalog correction of each label present in both tables.

    Parameters
    ----------
    matched : output of :func:`~.tables.crossmatch` (``teff`` and ``teff_ref`` …)
    labels : labels to calibrate (default: every schema label with a ``<label><suffix>`` column)
    features : trend variables (our values)
    max_order : highest polynomial degree tried (0 = zero point only)
    scale : force the scale term on (True) or off (False); None lets cross-validation decide
    k : folds of the cross-validation
    min_stars : labels with fewer matched finite stars are skipped

    Returns
    -------
    (list of :class:`Correction`, diagnostics blocks)
    """
    from ..labels import label_names

    labels = [l for l in (labels or label_names()) if l in matched.colnames and l + suffix in matched.colnames]
    try:
        ids = id_strings(matched[find_id_column(matched, id_column)])
    except ValueError:
        ids = np.arange(len(matched)).astype(str)
    corrections, blocks = [], []
    seed = cv_seed(rng)  # the folds of each label are drawn from (seed, label)
    for label in labels:
        feats = tuple(f for f in features if f != label and f in matched.colnames)
        y = measured_column(matched, label)
        yref = np.asarray(matched[label + suffix], float)
        x = feature_matrix(matched, feats, label)
        ok = np.isfinite(y) & np.isfinite(yref) & np.all(np.isfinite(x), 1)
        if ok.sum() < min_stars:
            continue
        d = y - yref
        candidates = []  # simplest first: fewer coefficients, then no scale term
        for order in range(max_order + 1):
            for use_scale in ((False, True) if scale is None else (bool(scale),)):
                f = feats + (("self",) if use_scale else ())
                xf = np.column_stack([x, yref]) if use_scale else x
                trend = Trend.new(f, order, True, xf[ok])
                a = trend.matrix(xf)
                if ok.sum() <= 2 * a.shape[1]:
                    continue
                candidates.append((a.shape[1], order, use_scale, trend, a))
        candidates = sorted(candidates, key=lambda c: (c[0], c[2]))
        pick, scores = select_design([np.where(ok[:, None], c[4], np.nan) for c in candidates],
                                     np.where(ok, d, np.nan), k=k, rng=(seed, label))
        if pick is None:
            continue
        scored = [(c, sc) for c, sc in zip(candidates, scores) if np.isfinite(sc)]
        _, order, use_scale, trend, a = candidates[pick]
        score = scores[pick]
        res = fit_linear(np.where(ok[:, None], a, np.nan), np.where(ok, d, np.nan), robust="huber")
        trend.coef, trend.cov = res.coef, res.cov
        # Residuals after the correction exactly as apply() computes them (scale term inverted).
        corr = Correction(label, "reference", trend)
        corrected, _, _, _ = corr.apply(matched, outside="clip")
        after = corrected - yref
        corr.stats = {
            "n_stars": int(ok.sum()), "n_used": int(res.used.sum()), "order": order, "scale_term": use_scale,
            "cv_scatter": score, "cv_scores": {f"order{c[1]}{'+scale' if c[2] else ''}": sc for c, sc in scored},
            "zero_point": float(np.median(d[ok])), "scatter_before": robust_std(d[ok]),
            "scatter_after": robust_std(after[ok]), "k_folds": k}
        corrections.append(corr)
        blocks.append(D.rows("reference", label, ids[ok], float_column(matched, "teff")[ok], float_column(matched, "logg")[ok],
                             float_column(matched, "fe_h")[ok], d[ok], after[ok], (a @ res.coef)[ok]))
    return corrections, blocks
