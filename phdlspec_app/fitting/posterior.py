"""The posterior of weakly constrained labels, summarized from the optimum.

A Gaussian about the optimum (the Laplace approximation, Cramér–Rao covariance) describes
a well-measured label. It fails for a weak abundance in two ways, both measured on
injected engine spectra (BENCHMARKS.md, 2026-12-06, session 18):

- the search box ([X/Fe] within ±0.5 dex of the Galactic trend, the emulator's window)
  cuts the Gaussian, so θ ± σ overstates the error and θ is not the posterior's middle;
- a weak line's strength grows as 10^[X/Fe]: at an optimum that noise pushed upward the
  line looks strong and the Fisher σ is several times too small on the lower side (an
  F star's Ce: σ = 0.12 dex at the optimum, 0.5 dex at the truth).

:func:`line_posterior` evaluates the posterior of each such label along its profile line —
the label moved by t while the others follow their conditional means, θ + t Σ[:, k]/Σ[k, k]
— with real χ² evaluations (one batched emulator call for all labels), inside the box;
given ``refine``, each point also takes a step of the other labels towards their
conditional optimum and keeps the lower χ² (a second batched call), so that the line
follows a valley that bends (in a cool star, C and O trade through CO: the straight line
climbed a wall and gave an [O/Fe] error of 0.20 dex where the re-optimized profile gives
0.32, held-out star 139 at S/N 50). It reports the median and 16/84 percentiles, each
error no smaller than the truncated Gaussian's (:func:`box_posterior`) so that the line's
shape can widen an error, never narrow it below the Cramér–Rao bound plus the floor. When the reported errors carry the
emulator floor, the line's log-likelihood is scaled by (σ_lik/σ_rep)², which turns a
Gaussian of width σ_lik into one of exactly the reported σ_rep (noise plus floor). For a
Gaussian χ² it reduces to :func:`box_posterior`, the truncated Laplace posterior. This is
what emcee reports on the same flat prior, at a fraction of the cost, without the other
labels' full marginalization.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import norm

__all__ = ["box_posterior", "line_posterior"]


def box_posterior(theta, sigma, lo, hi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and 1σ lower/upper errors of each label's Laplace posterior, N(θ, σ²),
    truncated to its box [lo, hi].

    Far from the box's edges (σ ≪ the distance) this is θ ± σ; σ = inf (no information)
    gives the box's uniform distribution. All arrays share units (K, dex, km/s); returns
    (median, err_lo, err_hi), each like ``theta``.
    """
    theta, sigma, lo, hi = (np.asarray(v, float) for v in (theta, sigma, lo, hi))
    med, elo, ehi = theta.copy(), sigma.copy(), sigma.copy()
    ok = np.isfinite(theta) & (hi > lo) & ~np.isnan(sigma) & (sigma > 0)
    if not ok.any():
        return med, elo, ehi
    t, s, a, b = theta[ok], sigma[ok], lo[ok], hi[ok]
    t = np.clip(t, a, b)
    flat = ~np.isfinite(s)
    s = np.where(flat, 1.0, s)
    # quantiles through the survival function on the far side keep precision in the tails
    za, zb = (a - t) / s, (b - t) / s
    pa, pb = norm.cdf(za), norm.cdf(zb)
    qa, qb = norm.sf(za), norm.sf(zb)
    upper = t > 0.5 * (a + b)  # mass near the top edge: measure from the top
    q = {}
    for p in (0.16, 0.5, 0.84):
        x_low = t + s * norm.ppf(pa + p * (pb - pa))
        x_up = t + s * norm.isf(qb + (1 - p) * (qa - qb))
        x = np.where(upper, x_up, x_low)
        x = np.where(flat, a + p * (b - a), x)
        q[p] = np.clip(np.where(np.isfinite(x), x, t), a, b)
    med[ok] = q[0.5]
    elo[ok] = q[0.5] - q[0.16]
    ehi[ok] = q[0.84] - q[0.5]
    return med, elo, ehi


def line_posterior(objective, theta, cov, sigma, lo, hi, which, n_grid: int = 25, span: float = 8.0,
                   refine=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and 1σ lower/upper errors of the labels ``which`` from the posterior along
    each one's profile line (see the module doc).

    objective : callable (N, n) free-label vectors → (N,) χ² (+ prior terms), e.g.
        ``Likelihood.objective``; non-finite values count as zero probability
    theta : (n,) the optimum; cov : (n, n) the likelihood's covariance there (inverse Fisher)
    sigma : (n,) the errors to report for a Gaussian (the noise bound plus the emulator floor)
    lo, hi : (n,) the box; which : indices into the n free labels
    n_grid, span : points per line, over θ_k ± span·max(σ_lik, σ) ∩ the box
    refine : None, or a callable (X (N, n), held (N,)) → (χ²(X) (N,), X') that moves each
        row's labels other than ``held`` towards their conditional optimum (e.g.
        ``Likelihood.profile_step``): each point's χ² is then the smaller of χ²(X) and
        χ²(X') (two batched calls), the profile where the valley bends away from the line

    Labels with no finite σ_lik get :func:`box_posterior`'s answer. Returns (median,
    err_lo, err_hi), each (len(which),), in the labels' units.
    """
    theta, sigma, lo, hi = (np.asarray(v, float) for v in (theta, sigma, lo, hi))
    cov = np.asarray(cov, float)
    which = np.asarray(which, int)
    med, elo, ehi = box_posterior(theta[which], sigma[which], lo[which], hi[which])
    s_lik = np.sqrt(np.diag(cov))
    rows, lines = [], []
    for m, k in enumerate(which):
        if not (np.isfinite(s_lik[k]) and s_lik[k] > 0 and hi[k] > lo[k]):
            continue
        d = np.where(np.isfinite(cov[:, k]), cov[:, k], 0.0) / cov[k, k]
        d[k] = 1.0
        w = span * max(s_lik[k], sigma[k] if np.isfinite(sigma[k]) else 0.0)
        t = np.linspace(max(lo[k] - theta[k], -w), min(hi[k] - theta[k], w), n_grid)
        rows.append(m)
        lines.append((k, t, np.clip(theta[None, :] + t[:, None] * d[None, :], lo, hi)))
    if not rows:
        return med, elo, ehi
    X = np.concatenate([x for _, _, x in lines])
    if refine is None:
        chi2 = np.asarray(objective(X), float)
    else:
        held = np.repeat([k for k, _, _ in lines], n_grid)
        c0, X1 = refine(X, held)
        X1 = np.clip(np.asarray(X1, float), lo, hi)
        X1[np.arange(len(X)), held] = X[np.arange(len(X)), held]  # each label stays on its grid
        c1 = np.asarray(objective(X1), float)
        chi2 = np.fmin(np.where(np.isfinite(c0), c0, np.inf), np.where(np.isfinite(c1), c1, np.inf))
    chi2 = chi2.reshape(len(rows), n_grid)
    for m, (k, t, _), c in zip(rows, lines, chi2):
        ok = np.isfinite(c)
        if ok.sum() < 3:
            continue
        # scaled so that a Gaussian line gives exactly the reported σ (noise + floor)
        temper = (s_lik[k] / sigma[k]) ** 2 if np.isfinite(sigma[k]) and sigma[k] > 0 else 1.0
        q = _quantiles(t, c, ok, temper)
        if q is None:
            continue
        q16, q50, q84 = theta[k] + q
        # never narrower than the Gaussian of the reported σ cut by the box: along one line
        # through the 32-label χ² the curvature can exceed the Fisher matrix's (the C–O valley),
        # and errors below the Cramér–Rao bound plus the floor were overconfident (measured:
        # std of pulls of [C/Fe] 1.37 on 200 injected spectra at S/N 50 without this, 1.09 on
        # the first 52 with the Gaussian alone)
        med[m], elo[m], ehi[m] = q50, max(q50 - q16, elo[m]), max(q84 - q50, ehi[m])
    return med, elo, ehi


def _quantiles(t: np.ndarray, chi2: np.ndarray, ok: np.ndarray, temper: float, fine: int = 20) -> np.ndarray | None:
    """16/50/84 % points (offsets t) of the density ∝ exp(−temper χ²(t)/2) sampled at the
    grid ``t`` (increasing), χ² valid at the ``ok`` points: each interval of the grid is
    cut in ``fine`` and the density integrated by the trapezoid rule on that finer grid,
    with χ² there from a monotone cubic (PCHIP) through the valid points — it follows a
    near-parabolic χ² closely and never overshoots between points. An interval next to
    a point whose χ² is not finite takes the density linearly between its ends, zero at
    that point (as integrating on ``t`` itself would).
    Why: integrating the density on the coarse grid itself needs ~50 points per line for
    1 % quantiles (its exponential is far less smooth than χ²); this gets them from ~25,
    which halves the cost of :func:`line_posterior` (two batched emulator calls of 26
    lines × ``n_grid``). None when fewer than 3 points are valid or the density is zero."""
    from scipy.interpolate import PchipInterpolator

    t, chi2, ok = np.asarray(t, float), np.asarray(chi2, float), np.asarray(ok, bool)
    if ok.sum() < 3 or not np.all(np.diff(t) > 0):
        return None
    cmin = chi2[ok].min()
    p_node = np.where(ok, np.exp(-0.5 * temper * (np.where(ok, chi2, cmin) - cmin)), 0.0)
    # the fine grid, interval by interval: each fine point's interval and place in it are
    # known by construction (the last point closes the last interval)
    n = t.size
    left = np.append(np.repeat(np.arange(n - 1), fine), n - 2)
    frac = np.append(np.tile(np.arange(fine) / fine, n - 1), 1.0)
    tf = t[left] + np.diff(t)[left] * frac
    both = ok[left] & ok[left + 1]
    p = p_node[left] + (p_node[left + 1] - p_node[left]) * frac
    if both.any():
        cf = PchipInterpolator(t[ok], chi2[ok])(tf[both])
        p[both] = np.exp(-0.5 * temper * (cf - cmin))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(tf))])
    if not cdf[-1] > 0:
        return None
    return np.interp(np.array([0.16, 0.5, 0.84]) * cdf[-1], cdf, tf)
