"""The HMC move samples the right distribution: a correlated Gaussian plus a flat label
bounded by the box, and a correlated Gaussian cut by a wall (reflecting walls, dense
metric). A wrong reflection, metric or leapfrog would bias the moments or the flat
label's uniformity."""
from __future__ import annotations

import emcee
import numpy as np
import pytest
from scipy import stats

from fitting_double import LineDouble, noisy_spectrum
from phdlspec_app import labels as L
from phdlspec_app.fitting.hmc import HamiltonianMove
from phdlspec_app.fitting.likelihood import Likelihood
from phdlspec_app.preprocess import prepare

S = np.array([[1.0, 1.8], [1.8, 4.0]])
SI = np.linalg.inv(S)
MU = np.array([1.0, -2.0])
LO, HI = np.array([-10.0, -10.0, 0.0]), np.array([10.0, 10.0, 1.0])


def _move(lo=LO, hi=HI, cls=HamiltonianMove, reflect=None):
    # a deliberately poor first metric (wrong scales, no correlation): warm-up must fix it
    return cls(chi2_and_grad, lo, hi, np.diag([0.5, 0.5, 0.01]), np.array([1.0, -2.0, 0.5]), seed=3, reflect=reflect)


def chi2_and_grad(th):
    z = th[:, :2] - MU
    return np.einsum("ni,ij,nj->n", z, SI, z), np.concatenate([2 * z @ SI, np.zeros((len(th), 1))], 1)


def _sample(move, nw=16, warm=(60, 80, 40), steps=1500):
    def log_prob(th):
        th = np.atleast_2d(th)
        out = -0.5 * chi2_and_grad(th)[0]
        out[~np.all((th >= move.lo) & (th <= move.hi), 1)] = -np.inf
        return out

    s = emcee.EnsembleSampler(nw, 3, log_prob, vectorize=True, moves=[move])
    p0 = np.clip(np.array([1.0, -2.0, 0.5]) + 0.01 * np.random.default_rng(0).standard_normal((nw, 3)),
                 move.lo, move.hi)
    st = s.run_mcmc(p0, warm[0])
    s.reset()
    st = s.run_mcmc(st, warm[1])
    move.set_metric(move.regularized_cov(move.to_u(s.get_chain(flat=True))))
    move.start_adaptation()
    st = s.run_mcmc(st, warm[2])
    move.finish_adaptation()
    s.reset()
    s.run_mcmc(st, steps)
    return s


@pytest.mark.parametrize("reflect", [True, False, [False, True, False]], ids=["reflect", "logit", "mixed"])
def test_hmc_move_samples_a_correlated_gaussian_and_a_bounded_flat_label(reflect):
    """Every label reflecting, every label through the logit, and a mix."""
    s = _sample(_move(reflect=reflect))
    c = s.get_chain(flat=True)
    tau = emcee.autocorr.integrated_time(s.get_chain(), quiet=True)
    assert np.all(tau < 5), tau
    assert 0.6 < s.acceptance_fraction.mean() < 0.97
    n_eff = len(c) / tau.max()
    assert np.all(np.abs(c[:, :2].mean(0) - MU) < 4 * np.sqrt(np.diag(S) / n_eff))
    cov = np.cov(c[:, :2], rowvar=False)
    assert np.allclose(np.diag(cov), np.diag(S), rtol=0.1), cov
    assert abs(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]) - 0.9) < 0.03
    # the flat label in [0, 1]: uniform, reaching both walls
    thinned = c[:: max(1, int(np.ceil(tau.max()))) * 4, 2]
    assert stats.kstest(thinned, "uniform").pvalue > 1e-3
    assert c[:, 2].min() < 0.01 and c[:, 2].max() > 0.99


@pytest.mark.parametrize("reflect", [True, [False, True, False]], ids=["reflect", "mixed"])
def test_hmc_move_samples_a_correlated_gaussian_cut_by_a_wall(reflect):
    """The Gaussian of the first test with a wall at x₁ = −1 (0.5 σ above its mean): the
    draws' moments are those of exact draws of the truncated density (rejection). The
    wall is on the second label, whose normal in the whitened coordinates (row 1 of the
    metric's Cholesky factor, ρ = 0.9) is not a coordinate axis: reflecting about the
    axis instead fails this test. "mixed": the wall's label reflects beside a logit one,
    as in the fits."""
    hi = HI.copy()
    hi[1] = -1.0
    s = _sample(_move(hi=hi, reflect=reflect), steps=2500)
    c = s.get_chain(flat=True)[:, :2]
    tau = emcee.autocorr.integrated_time(s.get_chain(), quiet=True)
    exact = np.random.default_rng(7).multivariate_normal(MU, S, 400_000)
    exact = exact[exact[:, 1] <= -1.0]
    assert c[:, 1].max() > -1.01     # the draws reach the wall
    n_eff = len(c) / tau.max()
    sd = exact.std(0)
    assert np.all(np.abs(c.mean(0) - exact.mean(0)) < 4 * sd / np.sqrt(n_eff)), (c.mean(0), exact.mean(0))
    assert np.allclose(c.std(0), sd, rtol=0.08), (c.std(0), sd)
    assert abs(np.corrcoef(c.T)[0, 1] - np.corrcoef(exact.T)[0, 1]) < 0.03


def test_reflecting_drift_is_reversible_and_volume_preserving():
    """The exactness of the walls, deterministically: in a small box with a correlated
    metric a drift bounces several times; reversing the momentum and drifting again
    returns to the start, and the map's Jacobian determinant (finite differences in
    (u, r)) is 1. A wrong normal, a projection or a sign error breaks one of the two. A
    walker that meets more walls than allowed is reported stuck."""
    rng = np.random.default_rng(4)
    D = 3
    a = rng.standard_normal((D, D))
    move = HamiltonianMove(lambda th: (np.zeros(len(th)), np.zeros_like(th)), np.zeros(D), np.ones(D),
                           np.eye(D), np.full(D, 0.5), reflect=True)
    move.set_metric(0.05 * (a @ a.T + 0.5 * np.eye(D)))
    u0 = rng.uniform(0.2, 0.8, (5, D))
    r0 = rng.standard_normal((5, D))
    eps = 2.0
    u1, r1, stuck = move.drift(u0, r0, eps)
    assert not stuck.any() and np.all((u1 >= 0) & (u1 <= 1))
    assert not np.allclose(r1, r0)                    # the walls were met
    u2, r2, _ = move.drift(u1, -r1, eps)
    np.testing.assert_allclose(u2, u0, atol=1e-10)
    np.testing.assert_allclose(-r2, r0, atol=1e-10)

    def phase_map(x):
        u, r, _ = move.drift(x[None, :D], x[None, D:], eps)
        return np.concatenate([u[0], r[0]])

    h = 1e-7
    for k in range(5):
        x = np.concatenate([u0[k], r0[k]])
        jac = np.array([(phase_map(x + h * e) - phase_map(x - h * e)) / (2 * h) for e in np.eye(2 * D)]).T
        assert abs(np.linalg.det(jac) - 1.0) < 1e-5, k
    _, _, stuck = move.drift(u0, r0, 50.0, max_reflections=4)
    assert stuck.all()


def test_hmc_move_that_clips_instead_of_reflecting_would_be_caught():
    """The same checks with walls that stop a path (θ clipped, momentum kept) instead of
    reflecting it must fail: the flat label then piles up at the walls."""
    class Clipping(HamiltonianMove):
        def drift(self, theta, r, eps, max_reflections=64):
            return np.clip(theta + eps * (r @ self.chol.T), self.lo, self.hi), r, np.zeros(len(theta), bool)

    c = _sample(_move(cls=Clipping, reflect=True), steps=600).get_chain(flat=True)
    assert stats.kstest(c[::8, 2], "uniform").pvalue < 1e-6


def test_hmc_move_without_the_logit_jacobian_would_be_caught():
    """With the logit labels' log-Jacobian dropped the flat label piles up at the walls
    (the sigmoid's density), so the first test can fail."""
    class NoJacobian(HamiltonianMove):
        def potential(self, u):
            U, g, chi2 = super().potential(u)
            s = 0.5 * (1 + np.tanh(0.5 * u))
            d = np.where(self.logit, self.w * s * (1 - s), 1.0)
            return U + np.sum(np.log(d), 1), g + np.where(self.logit, 1 - 2 * s, 0.0), chi2

    c = _sample(_move(cls=NoJacobian, reflect=False), steps=600).get_chain(flat=True)
    assert stats.kstest(c[::8, 2], "uniform").pvalue < 1e-6


def test_likelihood_gradient_matches_finite_differences():
    """Likelihood.objective_and_grad (one backward pass through emulator, LSF and
    pseudo-continuum, priors included) against central differences of objective."""
    emu = LineDouble()
    truth = {"teff": 5200.0, "logg": 3.9, "fe_h": -0.4, "rv": 37.0, "mg_fe": 0.2, "vbroad": 10.0}
    s = noisy_spectrum(emu, truth, 50, seed=4)
    names = ["teff", "logg", "vmic", "fe_h", "mg_fe", "rv", "vbroad"]
    free = np.array([L.get_label(n).index for n in names])
    base = L.to_vector(truth)
    lik = Likelihood(emu, prepare(s, emu.wavelength), free, base, priors={L.get_label("logg").index: (4.0, 0.1)})
    th = base[free][None] + np.array([[40.0, 0.05, 0.1, 0.03, -0.02, 1.5, 2.0]])
    th = np.vstack([th, base[free]])
    val, grad = lik.objective_and_grad(th)
    assert np.allclose(val, lik.objective(th), rtol=1e-9)
    steps = np.array([1.0, 1e-3, 1e-3, 1e-4, 1e-4, 0.01, 0.01])
    for j, h in enumerate(steps):
        e = np.zeros(len(names))
        e[j] = h
        fd = (lik.objective(th + e) - lik.objective(th - e)) / (2 * h)
        assert np.allclose(grad[:, j], fd, rtol=2e-3, atol=1e-3 * np.abs(fd).max() + 1e-6), (names[j], grad[:, j], fd)
