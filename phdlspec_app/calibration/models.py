"""Low-order polynomial trend models and the robust and bootstrap fits behind every
calibration method.

A :class:`Trend` is a polynomial in a few features (``teff`` in K, ``logg`` in dex,
``fe_h`` in dex, and ``self``: the label's own value, for a scale term). Features are
standardized (``(x - center) / scale``, scale = 1000 K for Teff, 1 dex otherwise) so the
coefficients are readable (dex per 1000 K, dex per dex) and the normal equations well
conditioned. A trend with ``intercept=False`` is a pure shape (what wide binaries measure:
differences cancel the zero point).
"""
from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Trend", "FitResult", "design", "fit_linear", "robust_std", "FEATURE_SCALE", "kfold_residuals", "choose_simplest",
           "select_design", "cv_seed"]

#: Standardization unit of each feature: coefficients are per 1000 K or per dex.
FEATURE_SCALE = {"teff": 1000.0, "logg": 1.0, "fe_h": 1.0, "self": 1.0}


def robust_std(x) -> float:
    """1.4826 x median absolute deviation (a Gaussian's sigma; ignores NaN and outliers)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def _terms(features: tuple[str, ...], order: int) -> list[tuple[int, ...]]:
    """Exponent tuples of the monomials of total degree 1..order (no constant).

    ``self`` (the label's own value) only ever enters linearly and last, so a fitted
    ``ours - ref = O(x) + k (ref - c)`` can be inverted for ``ref`` exactly.
    """
    poly = [j for j, f in enumerate(features) if f != "self"]
    out = []
    for deg in range(1, order + 1):
        for combo in itertools.combinations_with_replacement(poly, deg):
            exps = [0] * len(features)
            for i in combo:
                exps[i] += 1
            out.append(tuple(exps))
    if "self" in features:
        exps = [0] * len(features)
        exps[features.index("self")] = 1
        out.append(tuple(exps))
    return out


def design(z: np.ndarray, terms: list[tuple[int, ...]], intercept: bool) -> np.ndarray:
    """Design matrix, shape (N, n_terms [+1]), from standardized features z (N, n_features)."""
    cols = [np.ones(len(z))] if intercept else []
    for exps in terms:
        col = np.ones(len(z))
        for j, e in enumerate(exps):
            if e:
                col = col * z[:, j] ** e
        cols.append(col)
    return np.column_stack(cols) if cols else np.zeros((len(z), 0))


@dataclass
class Trend:
    """``f(x) = c0 + sum_k c_k prod_j z_j^e_jk``, z_j = (x_j - center_j) / scale_j.

    Attributes
    ----------
    features : names, from ``teff``, ``logg``, ``fe_h``, ``self``
    order : total polynomial degree (0 = a constant)
    intercept : whether c0 is fitted (False for wide-binary shapes)
    center, scale : standardization, in the features' units
    coef : coefficients in dex (or the label's unit) per standardized unit; c0 first
    cov : their covariance matrix
    domain : ``{feature: [lo, hi]}``, the range of the data the trend was fitted on
    """

    features: tuple[str, ...]
    order: int
    intercept: bool
    center: np.ndarray
    scale: np.ndarray
    coef: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    domain: dict = field(default_factory=dict)

    @classmethod
    def new(cls, features, order, intercept, x):
        """A trend standardized on the data ``x`` (N, n_features): centered on the median."""
        features = tuple(features)
        x = np.asarray(x, float).reshape(len(x), len(features))
        center = np.array([np.nanmedian(x[:, j]) if len(x) else 0.0 for j in range(len(features))])
        scale = np.array([FEATURE_SCALE[f] for f in features])
        dom = {f: [float(np.nanmin(x[:, j])), float(np.nanmax(x[:, j]))] for j, f in enumerate(features)} \
            if len(x) else {}
        return cls(features, int(order), bool(intercept), center, scale, domain=dom)

    @property
    def terms(self) -> list[tuple[int, ...]]:
        return _terms(self.features, self.order)

    @property
    def term_names(self) -> list[str]:
        names = ["1"] if self.intercept else []
        for exps in self.terms:
            names.append("*".join(f"{f}^{e}" if e > 1 else f for f, e in zip(self.features, exps) if e))
        return names

    def _rows(self, x) -> np.ndarray:
        """x as (N, n_features); a 1-D x is N values of a one-feature trend, else one point."""
        x = np.atleast_1d(np.asarray(x, float))
        if x.ndim == 1:
            x = x[:, None] if len(self.features) == 1 else x[None, :]
        return x.reshape(len(x), len(self.features))

    def z(self, x) -> np.ndarray:
        x = self._rows(x)
        return (x - self.center) / self.scale

    def matrix(self, x) -> np.ndarray:
        """Design matrix at feature values ``x`` (N, n_features), in the features' units."""
        return design(self.z(x), self.terms, self.intercept)

    def predict(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Trend value and its 1-sigma uncertainty (from ``cov``) at ``x`` (N, n_features)."""
        a = self.matrix(x)
        val = a @ self.coef
        var = np.einsum("ij,jk,ik->i", a, self.cov, a)
        return val, np.sqrt(np.clip(var, 0, None))

    def outside(self, x) -> np.ndarray:
        """Boolean (N,): True where any feature is outside the fitted domain."""
        x = self._rows(x)
        out = np.zeros(len(x), bool)
        for j, f in enumerate(self.features):
            lo, hi = self.domain.get(f, [-np.inf, np.inf])
            out |= (x[:, j] < lo) | (x[:, j] > hi)
        return out

    def clip(self, x) -> np.ndarray:
        """Feature values moved to the nearest edge of the domain (no extrapolation)."""
        x = self._rows(x).copy()
        for j, f in enumerate(self.features):
            lo, hi = self.domain.get(f, [-np.inf, np.inf])
            x[:, j] = np.clip(x[:, j], lo, hi)
        return x

    def to_dict(self) -> dict:
        return {"features": list(self.features), "order": self.order, "intercept": self.intercept,
                "center": [float(v) for v in self.center], "scale": [float(v) for v in self.scale],
                "terms": self.term_names, "coef": [float(v) for v in self.coef],
                "cov": [[float(v) for v in row] for row in np.atleast_2d(self.cov)] if self.coef.size else [],
                "domain": {k: [float(v[0]), float(v[1])] for k, v in self.domain.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Trend":
        coef = np.asarray(d["coef"], float)
        cov = np.asarray(d["cov"], float).reshape(coef.size, coef.size)
        t = cls(tuple(d["features"]), int(d["order"]), bool(d["intercept"]), np.asarray(d["center"], float),
                np.asarray(d["scale"], float), coef, cov, {k: list(v) for k, v in d["domain"].items()})
        if len(t.term_names) != coef.size:
            raise ValueError(f"trend has {coef.size} coefficients for {len(t.term_names)} terms")
        return t


@dataclass
class FitResult:
    """Outcome of :func:`fit_linear`: coefficients, covariance, the points kept, residual scatter."""

    coef: np.ndarray
    cov: np.ndarray
    used: np.ndarray  # bool (N,): finite and not clipped
    scatter: float  # robust std of the residuals of the kept points
    n_boot: int = 0


def _huber_weights(r: np.ndarray, s: float, k: float = 1.345) -> np.ndarray:
    a = np.abs(r) / max(s, 1e-12)
    return np.where(a <= k, 1.0, k / np.maximum(a, 1e-12))


def _solve(a: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(a * sw[:, None], y * sw, rcond=None)
    return coef


def fit_linear(a: np.ndarray, y: np.ndarray, robust: str = "huber", clip_sigma: float = 4.0,
               n_boot: int = 0, rng=None) -> FitResult:
    """Fit ``y = a @ coef`` robustly.

    Parameters
    ----------
    a : design matrix (N, p); y : data (N,) in dex (or the label's unit)
    robust : ``"huber"`` (iteratively reweighted least squares, k = 1.345 MAD-sigma) then
        clipping at ``clip_sigma``; ``"clip"`` (iterative sigma clipping only); ``"none"``
    n_boot : if > 0, the covariance is the scatter of ``n_boot`` bootstrap refits (rows
        resampled with replacement, OLS on the kept points, batched); else the sandwich-free
        analytic ``s^2 (A^T W A)^-1`` with s the robust residual scatter

    Per-point errors are not used as weights: calibration samples are dominated by
    star-to-star scatter, and the robust weights are safer than quoted errors.
    """
    rng = np.random.default_rng(rng)
    a = np.asarray(a, float)
    y = np.asarray(y, float)
    ok = np.isfinite(y) & np.all(np.isfinite(a), axis=1)
    p = a.shape[1]
    if p == 0:
        # the "no correction" model: nothing to fit, the residuals are the data
        return FitResult(np.zeros(0), np.zeros((0, 0)), ok, robust_std(y[ok]), n_boot)
    if ok.sum() <= p:
        raise ValueError(f"{ok.sum()} usable points for {p} coefficients")
    used = ok.copy()
    w = np.ones(len(y))
    coef = _solve(a[used], y[used], w[used])
    if robust != "none":
        for _ in range(30):
            r = y - a @ coef
            s = robust_std(r[used])
            if not np.isfinite(s) or s == 0:
                break
            new_used = ok & (np.abs(r) <= clip_sigma * s)
            if new_used.sum() <= p:
                break
            w = _huber_weights(r, s) if robust == "huber" else np.ones(len(y))
            new = _solve(a[new_used], y[new_used], w[new_used])
            done = np.array_equal(new_used, used) and np.allclose(new, coef, atol=1e-10, rtol=1e-8)
            coef, used = new, new_used
            if done:
                break
    r = y - a @ coef
    n, = np.flatnonzero(used).shape
    # Residual scale of the kept points: the plain rms is unbiased for Gaussian residuals
    # (dof-corrected); the clip already removed the outliers that would inflate it.
    s = float(np.sqrt(np.sum(r[used] ** 2) / max(n - p, 1)))
    if n_boot > 0:
        idx = np.flatnonzero(used)
        draws = rng.integers(0, idx.size, size=(n_boot, idx.size))
        ab = a[idx][draws]  # (B, n, p)
        yb = y[idx][draws]
        ata = np.einsum("bni,bnj->bij", ab, ab)
        aty = np.einsum("bni,bn->bi", ab, yb)
        # A tiny ridge keeps degenerate resamples (all pairs with the same sign) solvable.
        ata += 1e-12 * np.eye(p)
        boots = np.linalg.solve(ata, aty[..., None])[..., 0]
        # n/(n-p): the bootstrap resamples residuals that the fit has already shrunk (as HC1 does).
        cov = np.atleast_2d(np.cov(boots, rowvar=False)) * idx.size / max(idx.size - p, 1)
    else:
        aw = a[used] * np.sqrt(w[used])[:, None]
        cov = s ** 2 * np.linalg.pinv(aw.T @ aw)
    return FitResult(coef, cov.reshape(p, p), used, robust_std(r[used]), n_boot)


def kfold_residuals(a: np.ndarray, y: np.ndarray, k: int = 5, robust: str = "huber", rng=None) -> np.ndarray:
    """Held-out residuals of a k-fold cross-validation (NaN where a point is unusable), in y's unit.

    The folds depend only on ``rng`` and which points are usable, so models compared with the
    same ``rng`` see the same folds (a paired comparison).
    """
    rng = np.random.default_rng(rng)
    ok = np.flatnonzero(np.isfinite(y) & np.all(np.isfinite(a), axis=1))
    out = np.full(len(y), np.nan)
    if a.shape[1] == 0:
        out[ok] = y[ok]
        return out
    for f in np.array_split(rng.permutation(ok), k):
        train = np.setdiff1d(ok, f)
        if train.size <= a.shape[1] or f.size == 0:
            return np.full(len(y), np.nan)
        res = fit_linear(a[train], y[train], robust=robust)
        out[f] = y[f] - a[f] @ res.coef
    return out


def choose_simplest(residuals: list[np.ndarray], clip_sigma: float = 5.0) -> tuple[int, list[float]]:
    """Index of the simplest adequate model, given the held-out residuals of candidate models
    listed from simplest to most complex (same folds); each entry is (N,) or, for repeated
    cross-validation, (R, N) with the same R fold assignments for every model.

    One-standard-error rule on paired absolute residuals: a model is adequate when its mean
    |residual| exceeds the best model's by less than one standard error of the paired
    difference. Repeats are averaged per point first (the points, not the repeats, are the
    independent samples). Points beyond ``clip_sigma`` robust sigma in either model are left
    out, so one outlier cannot decide. Returns the index and each model's robust CV error,
    1.4826 median |residual| about ZERO: a model without a constant term (the wide binaries')
    must be charged for the offset it leaves, which a scatter about the median would forgive.
    """
    residuals = [np.atleast_2d(r) for r in residuals]
    scores = [_robust_rms0(r) for r in residuals]
    best = int(np.nanargmin(scores))
    rb = residuals[best]
    for i, r in enumerate(residuals):
        keep = np.all(np.isfinite(r) & np.isfinite(rb), axis=0)
        keep &= np.all(np.abs(r) < clip_sigma * scores[i], axis=0) & np.all(np.abs(rb) < clip_sigma * scores[best], axis=0)
        d = np.abs(r[:, keep]).mean(axis=0) - np.abs(rb[:, keep]).mean(axis=0)
        if d.size < 3:
            continue
        if d.mean() <= d.std(ddof=1) / np.sqrt(d.size):
            return i, scores
    return best, scores


def _robust_rms0(r: np.ndarray) -> float:
    """1.4826 median |r| over the finite values (NaN when none): a robust rms about zero."""
    r = np.abs(np.asarray(r, float).ravel())
    r = r[np.isfinite(r)]
    return float(1.4826 * np.median(r)) if r.size else float("nan")


def cv_seed(rng) -> int:
    """An integer seed for cross-validation folds: ``rng`` itself when an int; a seed drawn
    from it when a Generator (or fresh entropy when None); for ``(rng, key)`` a seed mixed from
    both, so each label gets its own folds whatever the other labels are."""
    if isinstance(rng, tuple):
        base, key = rng
        return int(np.random.SeedSequence([cv_seed(base), zlib.crc32(str(key).encode())]).generate_state(1)[0])
    if isinstance(rng, (int, np.integer)):
        return int(rng)
    return int(np.random.default_rng(rng).integers(2**63))


def select_design(designs: list[np.ndarray], y: np.ndarray, k: int = 5, robust: str = "huber",
                  rng=0, repeats: int = 5) -> tuple[int | None, list[float]]:
    """Cross-validated choice among candidate design matrices listed simplest first (a matrix
    with no columns is the "no correction" model): the index chosen by :func:`choose_simplest`
    on held-out residuals of ``repeats`` repeated k-fold splits (the same splits for every
    candidate), and each candidate's robust CV error about zero (NaN where a candidate has too few points for
    its folds). ``(None, scores)`` when no candidate could be scored. ``rng``: see :func:`cv_seed`.

    This is the significance gate of every method: a trend term is kept only when it
    predicts held-out stars better, so noise-level trends are not applied to new stars.
    Repeating the split keeps the verdict from hanging on one random fold assignment.
    """
    seed = cv_seed(rng)
    res = [np.array([kfold_residuals(a, y, k=k, robust=robust, rng=seed + r) for r in range(repeats)])
           for a in designs]
    usable = [i for i, r in enumerate(res) if np.isfinite(r).any()]
    scores = [float("nan")] * len(designs)
    if not usable:
        return None, scores
    pick, sub = choose_simplest([res[i] for i in usable])
    for i, sc in zip(usable, sub):
        scores[i] = sc
    return usable[pick], scores
