"""The HMC move samples the right distribution: a correlated Gaussian plus a flat label
bounded by the box (through the logit transform and its Jacobian). A wrong Jacobian,
metric or leapfrog would bias the moments or the flat label's uniformity."""
from __future__ import annotations

import emcee
import numpy as np
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


def chi2_and_grad(th):
    z = th[:, :2] - MU
    return np.einsum("ni,ij,nj->n", z, SI, z), np.concatenate([2 * z @ SI, np.zeros((len(th), 1))], 1)


def log_prob(th):
    th = np.atleast_2d(th)
    out = -0.5 * chi2_and_grad(th)[0]
    out[~np.all((th >= LO) & (th <= HI), 1)] = -np.inf
    return out


def _sample(move, nw=16, warm=(60, 80, 40), steps=1500):
    s = emcee.EnsembleSampler(nw, 3, log_prob, vectorize=True, moves=[move])
    p0 = np.array([1.0, -2.0, 0.5]) + 0.01 * np.random.default_rng(0).standard_normal((nw, 3))
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


def test_hmc_move_samples_a_correlated_gaussian_and_a_bounded_flat_label():
    # a deliberately poor first metric (wrong scales, no correlation): warm-up must fix it
    move = HamiltonianMove(chi2_and_grad, LO, HI, np.diag([0.5, 0.5, 0.01]), np.array([1.0, -2.0, 0.5]), seed=3)
    s = _sample(move)
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


def test_hmc_move_without_the_jacobian_would_be_caught():
    """The same check with the log-Jacobian dropped must fail: the flat label then piles
    up at the walls (the sigmoid's density), so the test above can fail."""
    class NoJacobian(HamiltonianMove):
        def potential(self, u):
            U, g, chi2 = super().potential(u)
            s = 0.5 * (1 + np.tanh(0.5 * u))
            d = self.w * s * (1 - s)
            return U + np.sum(np.log(np.clip(d, 1e-300, None)), 1), g + (1 - 2 * s), chi2

    move = NoJacobian(chi2_and_grad, LO, HI, np.diag([0.5, 0.5, 0.01]), np.array([1.0, -2.0, 0.5]), seed=3)
    c = _sample(move, steps=600).get_chain(flat=True)
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
