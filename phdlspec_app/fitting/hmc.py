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

- **Bounds** by the logit transform θ = lo + (hi − lo)·σ(u), with the log-Jacobian
  Σ log[(hi − lo) σ(u)(1 − σ(u))] added to the log density (as Stan does): a flat,
  unconstrained label becomes a smooth logistic density in u, which HMC crosses in a few
  steps instead of bouncing off walls.
- **Metric** (mass matrix): a dense covariance in u, first from the Laplace (Cramér–Rao)
  covariance at the optimum, then re-estimated from the warm-up draws, regularized
  towards the diagonal as Stan does; leapfrog runs in the whitened coordinates.
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
        the C–O valley of cool stars bends away from any metric, and a path of 1.5 σ
        crawled along it (τ of [O/Fe] 5.6 steps, 650 steps to converge on the benchmark
        star); with 3 it is 1.9 and 150 steps, for 1.5 × the gradients per step
        (BENCHMARKS.md, 2026-12-06, session 21)
    max_leapfrog : cap on leapfrog steps per transition (bounds the cost of one step)
    seed : for the momenta, jitter and acceptance draws
    """

    def __init__(self, objective_and_grad, lo, hi, cov, center, step_size: float = 0.5,
                 path_length: float = 3.0, max_leapfrog: int = 24, seed: int = 1, target_accept: float = 0.8):
        self.f = objective_and_grad
        self.lo = np.asarray(lo, float)
        self.w = np.asarray(hi, float) - self.lo
        self.path_length = float(path_length)
        self.max_leapfrog = int(max_leapfrog)
        self.rng = np.random.default_rng(seed)
        self.target = float(target_accept)
        self.set_metric(self.laplace_metric(cov, center))
        self.step_size = float(step_size)
        self.start_adaptation()
        self.adapting = True
        self.n_grad = 0
        self._cache = None   # (θ, U, ∇U) of the walkers as last returned

    # --- coordinates -----------------------------------------------------------------
    def to_u(self, theta: np.ndarray) -> np.ndarray:
        s = np.clip((np.asarray(theta, float) - self.lo) / self.w, _EPS, 1.0 - _EPS)
        return np.log(s) - np.log1p(-s)

    def to_theta(self, u: np.ndarray) -> np.ndarray:
        return self.lo + self.w * _sigmoid(u)

    def laplace_metric(self, cov: np.ndarray, center: np.ndarray) -> np.ndarray:
        """The θ covariance mapped to u at ``center`` (dθ/du = w σ(1−σ)), each σ_u capped
        at that of the logistic density (π/√3): a label the data leave flat spans the box."""
        cov = 0.5 * (np.asarray(cov, float) + np.asarray(cov, float).T)
        s = _sigmoid(self.to_u(center))
        d = self.w * s * (1.0 - s)
        cu = cov / np.outer(d, d)
        sd = np.sqrt(np.clip(np.diag(cu), 1e-18, None))
        corr = cu / np.outer(sd, sd)
        sd = np.minimum(sd, np.pi / np.sqrt(3.0))
        return corr * np.outer(sd, sd)

    def set_metric(self, cov_u: np.ndarray) -> None:
        """Use ``cov_u`` (D, D), the covariance of u, as the inverse mass matrix."""
        cov_u = 0.5 * (cov_u + cov_u.T)
        evals, evecs = np.linalg.eigh(cov_u)
        floor = 1e-10 * max(float(evals.max()), 1e-300)
        self.chol = np.linalg.cholesky((evecs * np.clip(evals, floor, None)) @ evecs.T)
        self._cache = None

    @staticmethod
    def regularized_cov(samples_u: np.ndarray) -> np.ndarray:
        """Stan's regularized sample covariance: (n Σ + 5·10⁻³ I)/(n + 5)."""
        n = samples_u.shape[0]
        c = np.cov(samples_u, rowvar=False).reshape(samples_u.shape[1], -1)
        return (n / (n + 5.0)) * c + 1e-3 * (5.0 / (n + 5.0)) * np.eye(c.shape[0])

    # --- potential -------------------------------------------------------------------
    def potential(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """U(u) = χ²/2 − log-Jacobian, ∇_u U, and χ² (so the walkers' log p = −χ²/2)."""
        s = _sigmoid(u)
        theta = self.lo + self.w * s
        chi2, g = self.f(theta)
        self.n_grad += u.shape[0]
        d = self.w * s * (1.0 - s)
        logjac = np.sum(np.log(np.clip(d, 1e-300, None)), axis=1)
        U = 0.5 * chi2 - logjac
        grad = 0.5 * g * d - (1.0 - 2.0 * s)
        bad = ~np.isfinite(U)
        U = np.where(bad, np.inf, U)
        grad[bad] = 0.0
        return U, grad, chi2

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
        u, g = u0.copy(), g0
        r = r0 - 0.5 * eps * (g @ L)
        U = U0
        chi2 = None
        for k in range(n):
            u = u + eps * (r @ L.T)
            U, g, chi2 = self.potential(u)
            if k < n - 1:
                r = r - eps * (g @ L)
        r = r - 0.5 * eps * (g @ L)
        dH = (U + 0.5 * np.sum(r * r, 1)) - (U0 + 0.5 * np.sum(r0 * r0, 1))
        dH = np.where(np.isfinite(dH), dH, np.inf)
        accept_prob = np.exp(np.minimum(0.0, -dH))
        accepted = np.log(self.rng.uniform(size=nw)) < -dH
        if self.adapting:
            self._adapt(float(np.mean(accept_prob)))
        theta1 = self.to_theta(u)
        new = emcee.State(theta1, log_prob=-0.5 * chi2)
        state = self.update(state, new, accepted)
        Uc = np.where(accepted, U, U0)
        gc = np.where(accepted[:, None], g, g0)
        self._cache = (np.array(state.coords, float), Uc, gc)
        return state, accepted
