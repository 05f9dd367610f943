"""Fitting: uncertainty calibration (pulls over noise realizations) and MCMC convergence,
on the TEST DOUBLE of ``tests/fitting_double.py``. Split from test_fitting_inference.py
to keep each file under a minute on the shared 2-core machine.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fitting_double import LineDouble, noisy_spectrum
from phdlspec_app import labels as L
from phdlspec_app.fitting.diagnostics import covariance
from phdlspec_app.fitting.fit import fit_spectrum
from phdlspec_app.fitting.likelihood import Likelihood
from phdlspec_app.fitting.mcmc import split_rhat
from phdlspec_app.fitting.optimize import levenberg_marquardt, search_box
from phdlspec_app.preprocess import prepare
from test_fitting_inference import QUICK_FIX, TRUTH

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def emu():
    return LineDouble()


def test_uncertainties_are_calibrated_over_noise_realizations(emu):
    """Pull (fit − truth)/σ_CR over 40 noise draws per label: std within 0.7–1.3 (the std of
    40 draws has a 1σ sampling error of 0.11; the issue's bar, 0.8–1.25, needs the benchmark)."""
    free_names = ["teff", "logg", "vmic", "rv", "fe_h", "mg_fe", "ca_fe"]
    tv = L.to_vector(TRUTH)
    free = np.array([L.get_label(n).index for n in free_names])
    lo, hi = search_box(emu)
    lo[4], hi[4] = -600, 600
    pulls = []
    for seed in range(40):
        s = noisy_spectrum(emu, TRUTH, 30, seed=100 + seed)
        lik = Likelihood(emu, prepare(s, emu.wavelength), free, tv)
        res = levenberg_marquardt(lik, tv[free], lo[free], hi[free])
        sig = np.sqrt(np.diag(covariance(res["fisher"])))
        pulls.append((res["theta"] - tv[free]) / sig)
    std = np.std(pulls, axis=0)
    assert np.all((std > 0.7) & (std < 1.3)), dict(zip(free_names, std.round(2)))
    assert np.all(np.abs(np.mean(pulls, axis=0)) < 0.5)


@pytest.mark.parametrize("moves", ["hmc", "de"])
def test_mcmc_converges_and_agrees_with_the_cramer_rao_errors(emu, moves):
    s = noisy_spectrum(emu, TRUTH, 50, seed=21)
    fix = {**QUICK_FIX, "vbroad": 10.0, "vmic": 1.3}
    r = fit_spectrum(s, emu, method="mcmc", fix=fix, seed=2, cmaes_evals=600, mcmc_max_steps=6000, nwalkers=12,
                     mcmc_moves=moves)
    m = r.mcmc
    assert m["moves"] == moves
    assert m["converged"] and m["steps"] >= 50 * np.max(m["tau"])
    if moves == "hmc":
        # dual averaging aims at a mean acceptance probability of 0.8; τ is a few steps
        assert 0.6 < m["acceptance"] < 0.97 and np.max(m["tau"]) < 10
        assert m["warmup_steps"] > 0 and m["gradient_evals"] > m["steps"] * m["nwalkers"]
        # converged by split-R̂ across the independent chains, not by a τ that drifts < 5 %
        assert np.all(m["rhat"] < 1.01) and r.to_row()["mcmc_rhat_max"] < 1.01
    else:
        assert 0.1 < m["acceptance"] < 0.8
    lik_free = r.free_names
    assert set(lik_free) == {"teff", "logg", "rv", "fe_h", "mg_fe"}
    r2 = fit_spectrum(s, emu, method="cmaes", fix=fix, seed=2, cmaes_evals=600)
    for name in lik_free:
        mc = 0.5 * (r.err_lo[name] + r.err_hi[name])
        assert 0.7 < mc / r2.err_lo[name] < 1.4, name
        assert abs(r.labels[name] - TRUTH[name]) < 4 * mc, name
    row = r.to_row()
    assert "teff_err_lo" in row and "teff_err_hi" in row and "teff_err" not in row
    assert row["mcmc_tau_max"] > 0
    # covariance of the chain: its diagonal is the square of the percentile half-widths
    cov = r.covariance
    assert cov.shape == (len(lik_free), len(lik_free))
    for j, name in enumerate(lik_free):
        half = 0.5 * (r.err_lo[name] + r.err_hi[name])
        assert 0.8 < np.sqrt(cov[j, j]) / half < 1.25, name
    # CMA-ES: the covariance is the inverse Fisher matrix behind the Cramér–Rao errors; a
    # well-measured [X/Fe] far from its window's edges gets the same from its line posterior
    sd = dict(zip(lik_free, np.sqrt(np.diag(r2.covariance))))
    for name in lik_free:
        if name == "mg_fe":
            assert r2.err_lo[name] == pytest.approx(sd[name], rel=0.03)
            assert r2.err_hi[name] == pytest.approx(sd[name], rel=0.03)
        else:
            assert r2.err_lo[name] == pytest.approx(sd[name], rel=1e-9)
    # walker traces and the τ history, for the app's trace and autocorrelation plots
    T, W, D = m["trace"].shape
    assert D == len(lik_free) and W == min(m["nwalkers"], 16) and 2 <= T <= 400
    assert m["trace_steps"][-1] <= m["steps"] and np.all(np.diff(m["trace_steps"]) > 0)
    assert m["tau_history"].shape == (m["tau_steps"].size, D)
    assert m["tau_steps"][-1] == m["steps"] and np.allclose(m["tau_history"][-1], m["tau"])
    # the walkers end near the posterior median
    j = lik_free.index("teff")
    assert abs(np.median(m["trace"][-1, :, j]) - r.labels["teff"]) < 3 * r.err_hi["teff"]


def test_split_rhat_tells_mixed_chains_from_stuck_and_drifting_ones():
    rng = np.random.default_rng(3)
    mixed = rng.standard_normal((2000, 8, 3))
    assert np.all(split_rhat(mixed) < 1.01)
    stuck = mixed + np.arange(8)[None, :, None] * 0.5  # the chains sit at different means
    assert np.all(split_rhat(stuck) > 1.1)
    drifting = mixed + np.linspace(0.0, 2.0, 2000)[:, None, None]  # one trend in every chain
    assert np.all(split_rhat(drifting) > 1.1)  # only the split into halves catches this
    assert np.all(np.isinf(split_rhat(mixed[:3])))  # too short to judge


def test_hmc_reflects_c_n_o_and_takes_the_other_labels_through_the_logit(emu, monkeypatch):
    """run_emcee builds its HMC move with reflecting walls for the free labels of
    mcmc.REFLECT (C, N, O) — except one whose optimum sits on a wall (here [C/Fe] made
    beyond its box) or outside the training domain (an [O/Fe] of 0.85, 0.15 dex inside its
    box but 0.68 above the Galactic trend), which keep the logit."""
    from phdlspec_app.fitting import hmc, mcmc

    seen = []
    init = hmc.HamiltonianMove.__init__

    def spy(self, *a, **kw):
        init(self, *a, **kw)
        seen.append(self.reflect.copy())

    monkeypatch.setattr(hmc.HamiltonianMove, "__init__", spy)
    fix = {k: v for k, v in QUICK_FIX.items() if k not in ("c_fe", "o_fe")}
    fix = {**fix, "vbroad": 10.0, "vmic": 1.3}
    _, hi = search_box(emu)
    assert mcmc.REFLECT == ("c_fe", "n_fe", "o_fe")
    cases = ((0.1, -0.1, ["c_fe", "o_fe"]), (hi[L.get_label("c_fe").index] + 0.4, -0.1, ["o_fe"]),
             (0.1, 0.85, ["c_fe"]))
    for c_fe, o_fe, reflected in cases:
        s = noisy_spectrum(emu, {**TRUTH, "c_fe": c_fe, "o_fe": o_fe}, 40, seed=5)
        r = fit_spectrum(s, emu, method="mcmc", fix=fix, seed=3, cmaes_evals=400, mcmc_max_steps=50, nwalkers=8)
        names = r.free_names
        assert [n for n, f in zip(names, seen[-1], strict=True) if f] == reflected, (c_fe, o_fe)
        if o_fe > 0.5:   # off the wall: left out for the domain, not the wall
            assert 0.05 < hi[L.get_label("o_fe").index] - r.labels["o_fe"]
            assert "o_fe" in r.info["domain_violations"]
