"""Optimisation: search box, radial-velocity first guess, CMA-ES with restarts, and a
Levenberg–Marquardt polish with the emulator's Jacobian.

- The search box is the schema's physical range intersected with the emulator's
  training domain (a neural emulator extrapolates badly, so CMA-ES never leaves it);
  ``rv`` is searched within ±``rv_halfwidth`` of the cross-correlation guess.
- RV first guess: χ² of a few template stars (dwarf, giant, metal-poor turn-off, cool
  dwarf; [X/Fe] on the Galactic trend) over a velocity grid, all in batched emulator
  calls, then a finer grid and a parabola through the minimum. Minimising χ² with the
  pseudo-continuum operator is the cross-correlation that respects masks and noise.
- CMA-ES (``cma``, Hansen 2016, arXiv:1604.00772) in coordinates scaled to the box
  ([0, 1] per label), each generation one batched call; IPOP restarts (population
  doubled, Auger & Hansen 2005) with a new seed, keeping the best.
- Levenberg–Marquardt on the Gauss–Newton system Jᵀ C⁻¹ J δ = Jᵀ C⁻¹ r from the
  emulator's exact Jacobian (torch autograd inside the emulator), converging the nearly
  linear abundance directions in a few steps; its final Fisher matrix gives the
  Cramér–Rao (Laplace) covariance.
"""
from __future__ import annotations

import numpy as np

from .. import labels as L
from ..emulator.domain import label_bounds
from ..physics import grid as _grid
from .likelihood import Likelihood, check_cancel

__all__ = ["search_box", "rv_first_guess", "run_cmaes", "run_staged", "levenberg_marquardt", "TEMPLATES"]

_IDX = {n: i for i, n in enumerate(L.label_names())}

#: template stars for the RV first guess (and CMA-ES's starting point): teff, logg, fe_h
TEMPLATES = ((5800.0, 4.4, 0.0), (4700.0, 2.5, -0.3), (6300.0, 4.1, -1.5), (4400.0, 4.6, 0.0))


def search_box(emulator=None, vbroad_max: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi), each (32,): ``emulator.domain.label_bounds`` (schema range ∩ the
    emulator's training box), with ``vbroad`` capped at ``vbroad_max`` km/s (above it
    R = 1800 spectra of FGK stars carry little more information and the search would
    waste evaluations)."""
    return label_bounds(emulator, {"vbroad": (0.0, vbroad_max)})


def template_labels() -> np.ndarray:
    """(T, 32) template label vectors with [X/Fe] on the Galactic trend."""
    out = np.tile(L.defaults(), (len(TEMPLATES), 1))
    for k, (t, g, z) in enumerate(TEMPLATES):
        out[k, _IDX["teff"]], out[k, _IDX["logg"]], out[k, _IDX["fe_h"]] = t, g, z
        for name, v in _grid.galactic_trend(np.array([z])).items():
            out[k, _IDX[name]] = v[0]
    return out


def rv_first_guess(lik: Likelihood, rv_range=(-600.0, 600.0), coarse_step: float = 15.0,
                   fine_step: float = 1.5, fixed: dict | None = None) -> dict:
    """Best template and RV (km/s) by a χ² scan; returns {'rv', 'labels' (32,), 'chi2',
    'template'}. ``fixed`` {schema index: value} overrides the templates' labels. Costs
    T × (coarse + fine) emulator evaluations in batched calls."""
    tmpl = template_labels()
    for i, v in (fixed or {}).items():
        tmpl[:, i] = v
    j = _IDX["rv"]
    grid = np.arange(rv_range[0], rv_range[1] + 1e-9, coarse_step)
    lab = np.repeat(tmpl, grid.size, axis=0)
    lab[:, j] = np.tile(grid, len(tmpl))
    chi = lik.chi2_labels(lab).reshape(len(tmpl), grid.size)
    k, i = np.unravel_index(np.argmin(chi), chi.shape)
    fine = np.arange(grid[i] - 1.5 * coarse_step, grid[i] + 1.5 * coarse_step + 1e-9, fine_step)
    fine = fine[(fine >= rv_range[0]) & (fine <= rv_range[1])]
    lab = np.repeat(tmpl[k:k + 1], fine.size, axis=0)
    lab[:, j] = fine
    cf = lik.chi2_labels(lab)
    m = int(np.argmin(cf))
    rv = float(fine[m])
    if 0 < m < fine.size - 1:  # parabola through the minimum
        a, b, c = cf[m - 1], cf[m], cf[m + 1]
        den = a - 2 * b + c
        if den > 0:
            rv += 0.5 * fine_step * (a - c) / den
    best = tmpl[k].copy()
    best[j] = rv
    return {"rv": rv, "labels": best, "chi2": float(cf[m]), "template": TEMPLATES[k]}


def run_cmaes(lik: Likelihood, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, seed: int = 1,
              sigma0: float = 0.15, popsize: int | None = None, restarts: int = 2,
              max_evals: int = 20000, tolfun: float = 0.5, progress=None) -> dict:
    """Minimise ``lik.objective`` over the free labels in [lo, hi] (free-label arrays).

    Coordinates are scaled to [0, 1] per label; ``sigma0`` is the initial step in those
    units. IPOP: after the first run, up to ``restarts`` more with the population doubled
    each time and seed + k, stopping early when a restart does not improve the best χ² by
    more than 1. ``tolfun`` (χ² units) ends a run whose best values stop changing.
    Returns {'theta', 'fun', 'evals', 'runs'}.
    """
    import cma

    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    span = np.where(hi > lo, hi - lo, 1.0)
    u0 = np.clip((np.asarray(x0, float) - lo) / span, 1e-3, 1 - 1e-3)
    best_u, best_f, evals, runs = u0, float(lik.objective(lo + u0 * span)[0]), 1, []
    pop = popsize or 4 + int(3 * np.log(max(lik.ndim, 1)))
    for k in range(restarts + 1):
        budget = max_evals - evals
        if budget < 10 * pop:
            break
        opts = {"seed": int(seed) * 1000 + k + 1, "popsize": pop, "verbose": -9,
                "maxfevals": budget, "tolfun": tolfun, "tolfunhist": tolfun, "tolx": 1e-5}
        es = cma.CMAEvolutionStrategy(best_u if k else u0, sigma0 if k == 0 else 2 * sigma0, opts)
        while not es.stop():
            check_cancel(lik.cancel)
            X = np.array(es.ask())
            # the objective is extended outside the box by mirroring (cheaper than cma's
            # BoundTransform, ~40 % of a generation's time at 32 dimensions)
            f = lik.objective(lo + _mirror(X) * span)
            es.tell(list(X), list(f))
            evals += len(X)
            if progress:
                progress("cmaes", min(1.0, evals / max_evals), chi2=float(min(best_f, es.result.fbest)))
        f_run = float(es.result.fbest)
        runs.append({"popsize": pop, "fbest": f_run, "evals": int(es.result.evaluations),
                     "stop": {kk: str(v) for kk, v in es.stop().items()}})
        improved = f_run < best_f - 1.0
        if f_run < best_f:
            best_f, best_u = f_run, _mirror(np.asarray(es.result.xbest))
        if k > 0 and not improved:
            break
        pop *= 2
    return {"theta": lo + best_u * span, "fun": best_f, "evals": evals, "runs": runs}


def run_staged(lik: Likelihood, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, sub: np.ndarray, seed: int = 1,
               max_evals: int = 3000, restarts: int = 1, rounds: int = 2, progress=None) -> dict:
    """CMA-ES over the free-label positions ``sub`` (the atmospheric labels) with the other
    free labels held, then Levenberg–Marquardt over all free labels; ``rounds`` times, each
    CMA-ES starting from (and holding the abundances at) the previous LM optimum, the
    later ones narrower (σ0 0.05 instead of 0.15, no restarts, a third of the budget).

    Why: the abundances enter a low-resolution spectrum almost linearly, each through few
    pixels, so Gauss–Newton converges them in a few Jacobian steps; a global search is only
    needed over Teff, log g, vmic, [Fe/H], vbroad and rv (their degeneracies), where a
    6-dimensional CMA-ES needs far fewer evaluations than a 32-dimensional one. The second
    round lets the atmospheric labels move again once the abundances are right.
    Measured (BENCHMARKS.md): with the interim emulator it stopped 8-48 higher in χ² than
    the 32-D search on 3 of 4 real LAMOST stars; with the retrained emulator and the
    correlated likelihood it ends equal or lower on 15 of 20 real stars and matches the
    32-D search's label scatter on injected ab initio spectra, 6× faster: it is
    ``fit_spectrum``'s default since 2026-12-05.
    The χ² passed to ``progress`` is the best so far over all rounds (round 2's CMA-ES works
    on a likelihood re-linearized at its start, whose χ² need not continue the LM's).
    Returns {'theta', 'fun', 'evals', 'runs', 'cmaes_seconds', 'lm_seconds', 'lm_iterations',
    'lm' (the best round's :func:`levenberg_marquardt` result: Fisher matrix, model, Jacobian)}.
    """
    import time

    sub = np.asarray(sub, int)
    theta = np.clip(np.asarray(x0, float), lo, hi)
    held = set(lik.free[sub].tolist())
    priors = {k: v for k, v in lik.priors.items() if k in held}
    runs, evals, t_cm, t_lm, iters, fun, best = [], 0, 0.0, 0.0, 0, np.inf, None
    if progress:
        seen = [np.inf]
        report = progress

        def progress(stage, fraction, chi2=None):
            if chi2 is not None:
                seen[0] = chi2 = min(seen[0], chi2)
            report(stage, fraction, chi2=chi2)
    for k in range(rounds):
        t = time.perf_counter()
        # each round's CMA-ES sees the model error linearized about its start (round 0 starts
        # where ``lik`` already is: shared, not recomputed); the LM rounds all use ``lik``'s,
        # so that their χ² stay comparable
        part = lik.restrict(lik.free[sub], lik.full(theta)[0], priors)
        part.linearize_model_error(part.base)
        budget = max_evals if k == 0 else max(max_evals // 3, 100)
        cm = run_cmaes(part, theta[sub], lo[sub], hi[sub], seed=seed + 7919 * k, max_evals=budget,
                       restarts=restarts if k == 0 else 0, sigma0=0.15 if k == 0 else 0.05,
                       progress=progress)
        lik.n_evals += part.n_evals
        evals += cm["evals"]
        runs += [{**r, "round": k} for r in cm["runs"]]
        trial = theta.copy()
        trial[sub] = cm["theta"]
        t_cm += time.perf_counter() - t
        t = time.perf_counter()
        lm = levenberg_marquardt(lik, trial, lo, hi, progress=progress)
        t_lm += time.perf_counter() - t
        iters += lm["iterations"]
        if lm["fun"] < fun:
            theta, fun, best = lm["theta"], lm["fun"], lm
    return {"theta": theta, "fun": fun, "evals": evals, "runs": runs, "cmaes_seconds": t_cm,
            "lm_seconds": t_lm, "lm_iterations": iters, "lm": best}


def _mirror(u: np.ndarray) -> np.ndarray:
    """Reflect coordinates into [0, 1] (period 2: 1.2 → 0.8, -0.1 → 0.1)."""
    r = np.mod(u, 2.0)
    return np.where(r > 1.0, 2.0 - r, r)


def levenberg_marquardt(lik: Likelihood, theta0: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                        max_iter: int = 40, rtol: float = 1e-4, progress=None) -> dict:
    """Polish free labels by Levenberg–Marquardt within [lo, hi] (free-label arrays).

    Returns {'theta', 'fun', 'fisher' (at theta), 'model' (P,), 'jacobian' (32, P), 'iterations'}.
    """
    theta = np.clip(np.asarray(theta0, float), lo, hi)
    good = lik.good
    y = lik.prep.y[good]
    m, jac, F = lik.fisher(lik.full(theta)[0])
    fun = lik.data_chi2(m) + float(lik.prior_chi2(theta)[0])
    lam, it = 1e-3, 0
    for it in range(1, max_iter + 1):
        check_cancel(lik.cancel)
        jf = jac[lik.free][:, good]
        g = jf @ lik.cinv(y - m[good])
        for j, mu, sig in lik._prior_free:
            g[j] -= (theta[j] - mu) / sig**2
        improved = False
        for _ in range(8):
            A = F + lam * np.diag(np.maximum(np.diag(F), 1e-12))
            try:
                step = np.linalg.solve(A, g)
            except np.linalg.LinAlgError:
                step = np.linalg.lstsq(A, g, rcond=None)[0]
            trial = np.clip(theta + step, lo, hi)
            f_trial = float(lik.objective(trial[None])[0])
            if np.isfinite(f_trial) and f_trial < fun:
                improved = True
                break
            lam *= 4.0
        if not improved:
            break
        gain = fun - f_trial
        theta, fun, lam = trial, f_trial, max(lam / 3.0, 1e-7)
        m, jac, F = lik.fisher(lik.full(theta)[0])
        if progress:
            progress("polish", it / max_iter, chi2=fun)
        if gain < rtol * max(fun, 1.0):
            break
    return {"theta": theta, "fun": fun, "fisher": F, "model": m, "jacobian": jac, "iterations": it}
