"""Hamiltonian Monte Carlo as an ``emcee`` move, for the 30-odd-dimensional label posterior.

Why: emcee's ensemble moves (stretch, differential evolution) need of order the dimension
in autocorrelation times — τ ≈ 120–150 steps for 32 labels on our fits, 250 s to
converge on 2 cores. HMC (Duane et al. 1987; Neal 2011, *Handbook of MCMC* ch. 5) uses
the gradient of the log posterior, which the emulator gives cheaply by reverse-mode
autodiff for all walkers in one batched backward pass, and moves far along the
posterior in one step: τ of a few steps.

The move treats every walker as an independent HMC chain (the ensemble only batches the
emulator calls); emcee keeps the chain, the acceptance bookkeeping and the
autocorrelation estimate. Details:

- **Bounds**, two ways, chosen per label (``reflect``):
  - the logit transform θ = lo + (hi − lo)·σ(u), with the log-Jacobian
    Σ log[(hi − lo) σ(u)(1 − σ(u))] added to the log density (as Stan does): a flat,
    unconstrained label becomes a smooth logistic density in u, which HMC crosses in a few
    steps instead of bouncing off walls;
  - reflection (Neal 2011, §5.5.1.5; Afshar & Domke 2015): u is θ itself, and a path that
    reaches a wall bounces off it — the momentum's component along the wall's normal (in
    the whitened coordinates) is reversed. The map stays reversible and volume-preserving,
    so the Metropolis test is exact, and a label keeps its correlations linear up to the
    wall. The logit would bend them: [C/Fe] against an [O/Fe] the spectrum leaves nearly
    flat down to its wall is a straight valley in θ but a curve in u that no metric
    follows (step size 0.21 instead of 0.3–0.4, and up to twice the gradients, on the
    benchmark star). Reflection serves flat labels worse (reflecting every label raised τ of
    Eu, La, K to 2.5–3.9 steps) and a label the data press against a wall much worse (a
    steep slope at the wall: with its N on the wall, the step size fell to 0.1 on a real
    giant), where the logit makes a smooth tail; so ``run_emcee`` reflects C, N and O only,
    and only when their optimum is off the walls and inside the emulator's training domain
    (``mcmc.REFLECT``; BENCHMARKS.md, session 26).
- **Metric** (mass matrix): a dense covariance of u, first the Laplace (Cramér–Rao)
  covariance at the optimum mapped to u, each σ capped at that of a flat label (logistic
  or uniform over the box), then re-estimated from the warm-up draws, regularized towards
  the diagonal as Stan does; leapfrog runs in the whitened coordinates z = L⁻¹u.
- **Step size** by dual averaging during warm-up to a mean acceptance probability of
  0.8 (Hoffman & Gelman 2014, §3.2), then frozen; each iteration jitters it by ±10 % and
  draws the number of leapfrog steps so that the path length is 0.5–1.5 × ``path_length``
  (in posterior standard deviations), which avoids periodic orbits.
- **Exactness**: every proposal is accepted with the Metropolis probability
  min(1, exp(−ΔH)); draws made while the step size or the metric adapt are warm-up and
  must be discarded (``run_emcee`` resets the sampler after warm-up).
"""
from __future__ import annotations

import emcee
import numpy as np

__all__ = ["HamiltonianMove"]

_EPS = 1e-12


def _sigmoid(u):
    return 0.5 * (1.0 + np.tanh(0.5 * u))


class HamiltonianMove(emcee.moves.Move):
    """An emcee move (``propose(model, state)``) doing one HMC transition per walker.

    Parameters
    ----------
    objective_and_grad : callable (N, D) θ → ((N,) χ², (N, D) dχ²/dθ); log p = −χ²/2
    lo, hi : (D,) bounds of θ (the flat prior's box)
    cov : (D, D) a first guess of the posterior covariance of θ (e.g. the inverse Fisher
        matrix) at ``center``
    center : (D,) where ``cov`` holds (the optimum)
    step_size : first leapfrog step, in whitened units
    path_length : leapfrog path length, in whitened units (≈ posterior σ). 3 (was 1.5):
        with every label through the logit, the C–O valley of cool stars bent away from
        the metric, and a path of 1.5 σ crawled along it (τ of [O/Fe] 5.6 steps, 650 steps
        to converge on the benchmark star); with 3 it was 1.9 and 150 steps, for 1.5 × the
        gradients per step (BENCHMARKS.md, 2026-12-06, session 21)
    max_leapfrog : cap on leapfrog steps per transition (bounds the cost of one step)
    seed : for the momenta, jitter and acceptance draws
    reflect : bool or (D,) bools — labels bounded by reflecting walls; the others through
        the logit transform (default: none reflect)
    """

    def __init__(self, objective_and_grad, lo, hi, cov, center, step_size: float = 0.5,
                 path_length: float = 3.0, max_leapfrog: int = 24, seed: int = 1, target_accept: float = 0.8,
                 reflect=None):
        self.f = objective_and_grad
        self.lo = np.asarray(lo, float)
        self.hi = np.asarray(hi, float)
        self.w = self.hi - self.lo
        self.reflect = np.broadcast_to(np.asarray(False if reflect is None else reflect, bool),
                                       self.lo.shape).copy()
        self.logit = ~self.reflect
        # the walls in u: a logit label's u is unbounded
        self.ulo = np.where(self.reflect, self.lo, -np.inf)
        self.uhi = np.where(self.reflect, self.hi, np.inf)
        self.path_length = float(path_length)
        self.max_leapfrog = int(max_leapfrog)
        self.rng = np.random.default_rng(seed)
        self.target = float(target_accept)
        self.set_metric(self.laplace_metric(cov, np.asarray(center, float)))
        self.step_size = float(step_size)
        self.start_adaptation()
        self.adapting = True
        self.n_grad = 0
        self._cache = None   # (θ, U, ∇U) of the walkers as last returned

    # --- coordinates -----------------------------------------------------------------
    def to_u(self, theta: np.ndarray) -> np.ndarray:
        """θ → u: θ itself for reflecting labels, logit((θ − lo)/w) for the others."""
        u = np.array(theta, float)
        s = np.clip((u[..., self.logit] - self.lo[self.logit]) / self.w[self.logit], _EPS, 1.0 - _EPS)
        u[..., self.logit] = np.log(s) - np.log1p(-s)
        return np.clip(u, self.ulo, self.uhi)

    def to_theta(self, u: np.ndarray) -> np.ndarray:
        th = np.array(u, float)
        th[..., self.logit] = self.lo[self.logit] + self.w[self.logit] * _sigmoid(th[..., self.logit])
        return np.clip(th, self.lo, self.hi)

    def _dtheta_du(self, u: np.ndarray) -> np.ndarray:
        s = _sigmoid(u)
        return np.where(self.logit, self.w * s * (1.0 - s), 1.0)

    # --- metric ----------------------------------------------------------------------
    def laplace_metric(self, cov: np.ndarray, center: np.ndarray) -> np.ndarray:
        """The θ covariance ``cov`` mapped to u at ``center``, each σ capped at that of the
        density a flat label has there — uniform over the box (w/√12) for a reflecting
        label, logistic (π/√3) for a logit one — so a label the data leave flat spans the
        box; correlations kept."""
        cov = 0.5 * (np.asarray(cov, float) + np.asarray(cov, float).T)
        d = self._dtheta_du(self.to_u(center))
        cu = cov / np.outer(d, d)
        sd = np.sqrt(np.clip(np.diag(cu), 1e-300, None))
        corr = cu / np.outer(sd, sd)
        sd = np.minimum(sd, np.where(self.reflect, self.w / np.sqrt(12.0), np.pi / np.sqrt(3.0)))
        return corr * np.outer(sd, sd)

    def set_metric(self, cov: np.ndarray) -> None:
        """Use ``cov`` (D, D), a covariance of u, as the inverse mass matrix."""
        cov = 0.5 * (cov + cov.T)
        evals, evecs = np.linalg.eigh(cov)
        floor = 1e-10 * max(float(evals.max()), 1e-300)
        self.chol = np.linalg.cholesky((evecs * np.clip(evals, floor, None)) @ evecs.T)
        self._cache = None

    def regularized_cov(self, samples_u: np.ndarray) -> np.ndarray:
        """The warm-up draws' covariance of u regularized as Stan does, (n Σ + 5·10⁻³ S²)/(n + 5),
        where S is 1 for a logit label (u of order one) and the box's width w for a
        reflecting one (whose u is θ, with units). In θ terms that shrinks a reflecting
        label 16× more than a logit one at the box's centre (dθ/du = w/4 there): a few per
        cent of a 0.03 dex posterior's variance after 320 draws; the figures in
        BENCHMARKS.md (session 26) were measured with it."""
        n = samples_u.shape[0]
        c = np.cov(samples_u, rowvar=False).reshape(samples_u.shape[1], -1)
        scale = np.where(self.reflect, self.w, 1.0)
        return (n / (n + 5.0)) * c + 1e-3 * (5.0 / (n + 5.0)) * np.diag(scale**2)

    # --- potential and path ----------------------------------------------------------
    def potential(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """U(u) = χ²/2 − log-Jacobian of the logit labels, ∇_u U, and χ² (so the walkers'
        log p = −χ²/2); non-finite → +inf."""
        theta = self.to_theta(u)
        chi2, g = self.f(theta)
        self.n_grad += u.shape[0]
        s = _sigmoid(u)
        d = self._dtheta_du(u)
        logjac = np.sum(np.log(np.clip(d, 1e-300, None)), axis=1)
        U = 0.5 * np.asarray(chi2, float) - logjac
        grad = 0.5 * np.asarray(g, float) * d - np.where(self.logit, 1.0 - 2.0 * s, 0.0)
        bad = ~np.isfinite(U)
        grad[bad] = 0.0
        return np.where(bad, np.inf, U), grad, chi2

    def drift(self, u: np.ndarray, r: np.ndarray, eps: float, max_reflections: int = 64):
        """Move u (N, D) for a time ``eps`` at velocity L r, reflecting off the walls of
        the reflecting labels: at a wall u_j = lo_j or hi_j the component of r along the
        wall's normal in the whitened coordinates (row j of L) is reversed, which keeps |r|
        and makes the map reversible and volume-preserving. Returns (u, r, stuck): a walker
        still bouncing after ``max_reflections`` walls (a corner) is to be rejected."""
        L = self.chol
        u, r = u.copy(), r.copy()
        left = np.full(u.shape[0], float(eps))
        rows = np.arange(u.shape[0])
        for _ in range(max_reflections):
            v = r @ L.T
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(v > 0, (self.uhi - u) / v, np.where(v < 0, (self.ulo - u) / v, np.inf))
            t = np.clip(t, 0.0, None)
            j = np.argmin(t, axis=1)
            t_hit = t[rows, j]
            hit = t_hit < left
            step = np.where(hit, t_hit, left)
            u += step[:, None] * v
            left -= step
            if not hit.any():
                return u, r, np.zeros(u.shape[0], bool)
            h, jh = rows[hit], j[hit]
            n = L[jh]
            r[h] -= (2.0 * np.sum(r[h] * n, 1) / np.sum(n * n, 1))[:, None] * n
            # put it on the wall exactly: float rounding in u + t·v could leave it a hair
            # outside, where the next pass would see a negative time to every wall
            u[h, jh] = np.where(v[h, jh] > 0, self.uhi[jh], self.ulo[jh])
        return np.clip(u, self.ulo, self.uhi), r, left > 0

    # --- step-size adaptation (Hoffman & Gelman 2014, eq. 6) ---------------------------
    def start_adaptation(self) -> None:
        self._mu = np.log(10.0 * self.step_size)
        self._hbar, self._logeps_bar, self._t = 0.0, 0.0, 0

    def _adapt(self, accept_prob: float) -> None:
        gamma, t0, kappa = 0.05, 10.0, 0.75
        self._t += 1
        t = self._t
        self._hbar = (1 - 1 / (t + t0)) * self._hbar + (self.target - accept_prob) / (t + t0)
        logeps = self._mu - np.sqrt(t) / gamma * self._hbar
        eta = t ** (-kappa)
        self._logeps_bar = eta * logeps + (1 - eta) * self._logeps_bar
        self.step_size = float(np.exp(logeps))

    def finish_adaptation(self) -> None:
        """Freeze the step size at its dual-averaged value; draws from now on are exact."""
        if self._t > 0:
            self.step_size = float(np.exp(self._logeps_bar))
        self.adapting = False

    # --- the emcee move ----------------------------------------------------------------
    def propose(self, model, state):
        theta0 = np.array(state.coords, float)
        nw, D = theta0.shape
        u0 = self.to_u(theta0)
        if self._cache is not None and np.array_equal(self._cache[0], theta0):
            U0, g0 = self._cache[1], self._cache[2]
        else:
            U0, g0, _ = self.potential(u0)
        eps = self.step_size * float(np.exp(self.rng.uniform(-0.1, 0.1)))
        n = int(np.clip(np.ceil(self.path_length * self.rng.uniform(0.5, 1.5) / eps), 1, self.max_leapfrog))
        L = self.chol
        r0 = self.rng.standard_normal((nw, D))
        # leapfrog in whitened coordinates z = L⁻¹u: dz/dt = r, dr/dt = −Lᵀ ∇_u U
        u, g = u0, g0
        r = r0 - 0.5 * eps * (g @ L)
        stuck = np.zeros(nw, bool)
        chi2 = None
        for k in range(n):
            u, r, s = self.drift(u, r, eps)
            stuck |= s
            U, g, chi2 = self.potential(u)
            if k < n - 1:
                r = r - eps * (g @ L)
        r = r - 0.5 * eps * (g @ L)
        dH = (U + 0.5 * np.sum(r * r, 1)) - (U0 + 0.5 * np.sum(r0 * r0, 1))
        dH = np.where(np.isfinite(dH) & ~stuck, dH, np.inf)
        accept_prob = np.exp(np.minimum(0.0, -dH))
        accepted = np.log(self.rng.uniform(size=nw)) < -dH
        if self.adapting:
            self._adapt(float(np.mean(accept_prob)))
        new = emcee.State(self.to_theta(u), log_prob=-0.5 * chi2)
        state = self.update(state, new, accepted)
        Uc = np.where(accepted, U, U0)
        gc = np.where(accepted[:, None], g, g0)
        self._cache = (np.array(state.coords, float), Uc, gc)
        return state, accepted
