"""Posterior sampling with ``emcee`` (Foreman-Mackey et al. 2013), vectorized.

All walkers' spectra are one batched emulator call per step (``vectorize=True``).
Walkers start in a Gaussian ball drawn from the Laplace (Cramér–Rao) covariance around
the optimum, shrunk by half, so little burn-in is needed.

Moves (``moves=``):

- ``"hmc"`` (default): Hamiltonian Monte Carlo (``hmc.HamiltonianMove``) with the
  likelihood's batched autodiff gradient — each walker an independent HMC chain, the
  ensemble batching the emulator calls. A warm-up of three windows (step size by dual
  averaging; then the dense metric re-estimated from the draws; then the step size again)
  precedes sampling and is discarded. τ is a few steps instead of ~100.
- ``"de"``: differential evolution (80 %) and its snooker variant (20 %) (ter Braak &
  Vrugt 2008), gradient-free, which mix far better than the stretch move in ~30
  dimensions; for emulators without a differentiable torch path.

The run continues in blocks until the chain is
longer than ``n_tau`` (50) times the largest integrated autocorrelation time τ (taken as
at least one step: HMC's anti-correlated draws can estimate τ < 1 from a first short block)
(Goodman & Weare 2010; ``emcee.autocorr``) and a second test passes, or until ``max_steps``:

- HMC: the split-R̂ of every label below ``rhat_max`` (1.01; Gelman et al. 2013 §11.4,
  the threshold of Vehtari et al. 2021). The walkers are independent chains, so comparing
  them is the direct test of mixing. With τ of 1–3 steps the τ estimate from a few
  hundred steps is too noisy to stay within 5 % between blocks. Measured: that test held
  a τ_max = 2.3 run for 750 steps where 50 τ is 115 (BENCHMARKS.md, 2026-12-03).
- DE: τ changed by < 5 % over the last block (emcee's guidance). The walkers of an
  ensemble move are not independent chains, so R̂ does not apply.

 Summaries use the chain after discarding 2 τ and thinning by
τ/2: medians and 16/84 percentiles.
"""
from __future__ import annotations

import numpy as np

from .. import labels as L
from .likelihood import FitCancelled, Likelihood, check_cancel

__all__ = ["REFLECT", "run_emcee", "split_rhat"]

#: labels the HMC bounds by reflecting walls (the others go through the logit transform):
#: C, N and O, which molecular equilibrium (CO, CN, CH, OH, C₂) ties together, and which a
#: LAMOST spectrum often leaves nearly flat down to a wall — a straight valley in θ that the
#: logit would bend. Only where the optimum is off the walls and inside the training domain
#: (:func:`_reflecting`). BENCHMARKS.md, session 26: the benchmark star 16 against 32 thousand
#: gradients to convergence (median of eight seeds; the slowest 18 against 66), eleven real
#: B6212 stars 157 against 160 thousand in all.
REFLECT = ("c_fe", "n_fe", "o_fe")
#: "on a wall" for :data:`REFLECT`: the optimum within this fraction of the box's width
WALL_MARGIN = 0.02


def split_rhat(chain: np.ndarray) -> np.ndarray:
    """Split-R̂ per parameter of ``chain`` (steps, chains, ndim): each chain is cut in two
    halves, and R̂ = sqrt(var⁺ / W) compares the within-half variance W with the pooled
    estimate var⁺ = (n−1)/n W + B/n (Gelman et al. 2013, *Bayesian Data Analysis* §11.4).
    Values near 1 mean the chains sample one distribution. Needs ≥ 4 steps."""
    chain = np.asarray(chain, float)
    n = chain.shape[0] // 2
    if n < 2:
        return np.full(chain.shape[-1], np.inf)
    halves = np.concatenate([chain[:n], chain[n:2 * n]], axis=1)  # (n, 2 chains, ndim)
    w = np.mean(np.var(halves, axis=0, ddof=1), axis=0)
    b = n * np.var(np.mean(halves, axis=0), axis=0, ddof=1)
    var_plus = (n - 1) / n * w + b / n
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w > 0, np.sqrt(var_plus / w), np.inf)


def _reflecting(lik: Likelihood, theta0: np.ndarray, lo: np.ndarray, hi: np.ndarray, names) -> np.ndarray:
    """(ndim,) bool: the free labels of ``names`` the HMC bounds by reflection. Not one
    whose optimum sits on a wall, nor one outside the emulator's training domain there:
    the data press such a posterior against the wall (a steep slope that reflection
    handles badly; the logit turns it into a smooth tail)."""
    on_wall = (theta0 - lo < WALL_MARGIN * (hi - lo)) | (hi - theta0 < WALL_MARGIN * (hi - lo))
    outside: set[str] = set()
    if hasattr(lik.emu, "domain_violations"):
        outside = set(lik.emu.domain_violations(lik.full(theta0[None]))[0])
    chosen = [L.get_label(n).index for n in names if n not in outside]
    return np.isin(lik.free, chosen) & ~on_wall


def run_emcee(lik: Likelihood, theta0: np.ndarray, cov: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              seed: int = 1, nwalkers: int | None = None, n_tau: float = 50.0, max_steps: int = 20000,
              check_every: int | None = None, keep_chain: bool = False, progress=None,
              trace_points: int = 400, trace_walkers: int = 16, moves: str = "hmc",
              warmup: tuple[int, int, int] = (20, 40, 20), rhat_max: float = 1.01,
              reflect: tuple[str, ...] = REFLECT) -> dict:
    """Sample the posterior of the free labels (flat priors inside [lo, hi], Gaussian priors
    from ``lik``). Returns {'median', 'p16', 'p84' (ndim,), 'tau' (ndim,), 'acceptance',
    'steps', 'converged', 'covariance' (ndim, ndim) of the thinned chain, 'burn', 'thin',
    'trace' (T, W, ndim) walker paths at 'trace_steps' (T,), 'tau_history' (C, ndim) — the
    τ estimate after 'tau_steps' (C,) steps —, 'n_tau', 'chain' (n, ndim) flattened
    thinned chain if ``keep_chain``, 'samples' (≤ 4000 thinned draws), 'moves',
    'warmup_steps', 'gradient_evals' (HMC), 'step_size' (HMC, whitened units), 'rhat'
    (ndim,) split-R̂ of the chain at the end (HMC; NaN for DE, whose walkers are not
    independent chains)}.
    With ``moves="hmc"`` the default is 8 walkers (independent chains: their number
    sets the sample size, not the mixing) and ``check_every`` 25 steps (DE: 200); the
    warm-up steps are not part of 'steps' or of the chain. The HMC warm-up (20, 40, 20
    steps; was 30, 60, 30) and the checks every 25 steps (was 50) were chosen on the
    benchmark star, 4 seeds each: gradient evaluations to convergence 16–42 thousand
    (median 23) against 27–33 thousand (median 31) (BENCHMARKS.md, 2026-12-06, session 21).
    ``reflect``: the labels (names) the HMC may bound by reflecting walls instead of the
    logit transform (:data:`REFLECT`), each where its optimum ``theta0`` is off the walls
    and inside the emulator's training domain.
    ``progress(stage, fraction, chi2=...)`` gets the best walker's χ² at each check."""
    import emcee

    if moves not in ("hmc", "de"):
        raise ValueError(f"moves must be 'hmc' or 'de', got {moves!r}")
    ndim = lik.ndim
    hmc = moves == "hmc"
    nw = nwalkers or (8 if hmc else max(2 * ndim + 2, 32))
    nw += nw % 2
    check_every = check_every or (25 if hmc else 200)
    rng = np.random.default_rng(seed)
    cov = 0.5 * (np.asarray(cov, float) + np.asarray(cov, float).T)
    evals, evecs = np.linalg.eigh(cov)
    evals = np.clip(evals, 1e-12, None)
    # never start wider than a tenth of the box in any label
    scale = np.minimum(np.sqrt(np.clip(np.diag(cov), 1e-24, None)), 0.1 * (hi - lo))
    z = rng.standard_normal((nw, ndim)) @ (evecs * np.sqrt(evals)).T * 0.5
    ratio = np.where(np.sqrt(np.diag(cov)) > scale, scale / np.sqrt(np.diag(cov)), 1.0)
    p0 = np.clip(theta0 + z * ratio, lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))

    def log_prob(th):
        th = np.atleast_2d(th)
        inside = np.all((th >= lo) & (th <= hi), axis=1)
        out = np.full(th.shape[0], -np.inf)
        if inside.any():
            out[inside] = -0.5 * lik.objective(th[inside])
        return out

    def advance(state, n):
        # fewer HMC walkers than labels is fine (each is its own chain); emcee's check
        # that the walkers span the space is for its ensemble moves
        for state in sampler.sample(state, iterations=n, progress=False, skip_initial_state_check=hmc):
            if lik.cancel is not None and lik.cancel.is_set():
                raise FitCancelled("fit cancelled")
        return state

    move = None
    if hmc:
        from .hmc import HamiltonianMove

        move = HamiltonianMove(lik.objective_and_grad, lo, hi, cov, theta0, seed=seed,
                               reflect=_reflecting(lik, theta0, lo, hi, reflect))
        sampler = emcee.EnsembleSampler(nw, ndim, log_prob, vectorize=True, moves=[move])
    else:
        de = [(emcee.moves.DEMove(), 0.8), (emcee.moves.DESnookerMove(), 0.2)]
        sampler = emcee.EnsembleSampler(nw, ndim, log_prob, vectorize=True, moves=de)
    sampler.random_state = np.random.RandomState(seed % (2**32)).get_state()
    state = p0
    n_warm = 0
    if hmc:
        # warm-up (discarded): step size on the Laplace metric; the metric from the
        # second window's draws; the step size again on that metric; then frozen
        w1, w2, w3 = warmup
        state = advance(state, w1)
        sampler.reset()
        state = advance(state, w2)
        move.set_metric(move.regularized_cov(move.to_u(sampler.get_chain(flat=True))))
        move.start_adaptation()
        state = advance(state, w3)
        move.finish_adaptation()
        sampler.reset()
        n_warm = w1 + w2 + w3
        if progress:
            progress("mcmc", 0.0, chi2=float(-2.0 * np.max(state.log_prob)))
    steps, tau_old, converged = 0, np.inf, False
    tau = np.full(ndim, np.nan)
    tau_history = []
    while steps < max_steps:
        n = min(check_every, max_steps - steps)
        state = advance(state, n)
        steps += n
        tau = emcee.autocorr.integrated_time(sampler.get_chain(), tol=0, quiet=True)
        tmax = float(np.max(tau))
        tau_history.append((steps, tau.copy()))
        if progress:
            # the best chi2 among the walkers now: -2 ln p (flat priors inside the box)
            chi2_now = float(-2.0 * np.max(sampler.get_last_sample().log_prob))
            progress("mcmc", min(1.0, steps / (n_tau * max(tmax, 1.0)), steps / max_steps), chi2=chi2_now)
        # τ below 1 (HMC's anti-correlated draws) would let a chain of 25 steps, judged by a τ
        # estimated from those 25, stop at its first check: at least n_tau steps in any case
        if steps >= n_tau * max(tmax, 1.0):
            stable = (np.all(split_rhat(sampler.get_chain()) < rhat_max) if hmc
                      else np.all(np.abs(tau_old - tau) / tau < 0.05))
            if stable:
                converged = True
                break
        tau_old = tau
    check_cancel(lik.cancel)
    tmax = float(np.nanmax(tau)) if np.all(np.isfinite(tau)) else steps / 10
    burn = min(int(2 * tmax), steps // 2)
    thin = max(1, int(tmax / 2))
    flat = sampler.get_chain(discard=burn, thin=thin, flat=True)
    p16, med, p84 = np.percentile(flat, [16, 50, 84], axis=0)
    samples = flat[rng.choice(len(flat), size=min(len(flat), 4000), replace=False)]
    # Traces for the eye (walker paths, not for statistics): every k-th step of at most
    # ``trace_walkers`` walkers, ≤ ``trace_points`` steps — a few MB however long the run.
    k = max(1, int(np.ceil(steps / trace_points)))
    walkers = np.linspace(0, nw - 1, min(nw, trace_walkers)).round().astype(int)
    trace = sampler.get_chain(thin=k)[:, walkers, :]
    return {"median": med, "p16": p16, "p84": p84, "tau": tau, "acceptance": float(np.mean(sampler.acceptance_fraction)),
            "steps": steps, "nwalkers": nw, "converged": converged, "samples": samples,
            "covariance": np.cov(flat, rowvar=False).reshape(ndim, ndim), "burn": burn, "thin": thin,
            "trace": trace, "trace_steps": (np.arange(trace.shape[0]) + 1) * k,
            "tau_steps": np.array([t[0] for t in tau_history], int),
            "tau_history": np.array([t[1] for t in tau_history], float).reshape(-1, ndim),
            "n_tau": float(n_tau), "chain": flat if keep_chain else None, "moves": moves,
            "warmup_steps": n_warm, "gradient_evals": int(move.n_grad) if move else 0,
            "rhat": split_rhat(sampler.get_chain()) if hmc else np.full(ndim, np.nan),
            "step_size": float(move.step_size) if move else float("nan")}
