"""Fitting inference: injection–recovery, uncertainty calibration, MCMC convergence, fixed
labels and priors, determinism, cancellation. Spectra come from the TEST DOUBLE in
``tests/fitting_double.py`` plus Gaussian noise (not the emulator, not the physics engine).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from fitting_double import LineDouble, noisy_spectrum
from phdlspec_app import labels as L
from phdlspec_app.fitting.fit import FitCancelled, fit_spectrum

torch.set_num_threads(1)
TRUTH = {"teff": 5200.0, "logg": 3.9, "fe_h": -0.4, "rv": 37.0, "mg_fe": 0.2, "ca_fe": 0.1, "vmic": 1.3,
         "vbroad": 10.0}
# abundances held fixed in the quicker tests (at their true, default values)
QUICK_FIX = {lab.name: 0.0 for lab in L.abundance_labels() if lab.name not in ("fe_h", "mg_fe")}


@pytest.fixture(scope="module")
def emu():
    return LineDouble()


@pytest.fixture(scope="module")
def full_fit(emu):
    wl = emu.wavelength
    s = noisy_spectrum(emu, TRUTH, 50, seed=11, continuum=800 * (1 + 0.3 * np.sin(wl / 800.0)),
                       meta={"obsid": 123, "designation": "J000000.00+000000.0"})
    return fit_spectrum(s, emu, method="cmaes", seed=1, cmaes_evals=1500)


def test_all_32_labels_recovered_within_errors(full_fit):
    r = full_fit
    tv = L.to_vector(TRUTH)
    pulls = []
    for name in L.label_names():
        if name in r.unconstrained() or name == "vbroad":
            continue
        pulls.append((r.labels[name] - tv[L.get_label(name).index]) / r.err_lo[name])
    pulls = np.array(pulls)
    assert np.all(np.abs(pulls) < 4.5), pulls
    assert 0.5 < np.std(pulls) < 1.6
    assert abs(r.labels["teff"] - 5200) < 60 and abs(r.labels["rv"] - 37) < 2
    assert r.chi2_reduced == pytest.approx(1.0, abs=0.1)
    assert r.snr == pytest.approx(50, rel=0.1)
    assert "out_of_domain" not in r.flags


def test_element_without_lines_is_flagged_not_reported(full_fit):
    r = full_fit
    d = r.elements["cu_fe"]
    assert not d.constrained and d.n_sensitive == 0 and not np.isfinite(d.crb)
    assert any(f.startswith("unconstrained:") and "cu_fe" in f for f in r.flags)
    row = r.to_row()
    assert np.isnan(row["cu_fe"]) and np.isnan(row["cu_fe_err"])
    mg = r.elements["mg_fe"]
    assert mg.constrained and mg.n_sensitive > 5 and mg.crb < 0.03
    assert mg.dchi2_trend > 0 and row["mg_fe_crb"] == pytest.approx(mg.crb)
    assert row["obsid"] == "123" and row["designation"].startswith("J0000")
    assert {"chi2_reduced", "snr", "flags", "teff_err", "method"} <= set(row)


def test_fixed_labels_and_priors(emu):
    s = noisy_spectrum(emu, TRUTH, 50, seed=31)
    r = fit_spectrum(s, emu, fix={**QUICK_FIX, "teff": 5200.0}, priors={"logg": (4.0, 0.01)}, seed=3,
                     cmaes_evals=500)
    assert r.labels["teff"] == 5200.0 and r.err_lo["teff"] == 0.0 and "teff" not in r.free_names
    # the data alone give log g = 3.9 ± ~0.03: the posterior sits near the tight prior, pulled
    # a little towards the data
    assert 3.96 < r.labels["logg"] < 4.0 and r.err_lo["logg"] < 0.01
    with pytest.raises(ValueError, match="sigma must be positive"):
        fit_spectrum(s, emu, priors={"logg": (4.3, 0.0)})


def test_domain_flags_say_whether_the_atmosphere_is_outside(emu):
    """An [X/Fe] held outside its training window flags the fit out_of_domain with that label
    in info['domain_violations']; only a Teff/logg/[Fe/H]/vmic outside adds the atmosphere flag."""
    s = noisy_spectrum(emu, TRUTH, 50, seed=32)
    xfe = fit_spectrum(s, emu, fix={**QUICK_FIX, "ni_fe": 0.9}, seed=3, cmaes_evals=300, polish=False)
    assert "out_of_domain" in xfe.flags and "ni_fe" in xfe.info["domain_violations"]
    assert not any(f.startswith("out_of_domain_atmosphere") for f in xfe.flags)
    hot = fit_spectrum(s, emu, fix={**QUICK_FIX, "teff": 7500.0}, seed=3, cmaes_evals=300, polish=False)
    assert "out_of_domain" in hot.flags and "out_of_domain_atmosphere:teff" in hot.flags
    ok = fit_spectrum(s, emu, fix=QUICK_FIX, seed=3, cmaes_evals=300, polish=False)
    assert ok.info["domain_violations"] == [] and "out_of_domain" not in ok.flags


def test_deterministic_given_a_seed(emu):
    s = noisy_spectrum(emu, TRUTH, 40, seed=41)
    a = fit_spectrum(s, emu, fix=QUICK_FIX, seed=7, cmaes_evals=400, polish=False)
    b = fit_spectrum(s, emu, fix=QUICK_FIX, seed=7, cmaes_evals=400, polish=False)
    c = fit_spectrum(s, emu, fix=QUICK_FIX, seed=8, cmaes_evals=400, polish=False)
    assert a.labels == b.labels
    assert a.labels != c.labels


def test_cancellation_stops_promptly(emu):
    s = noisy_spectrum(emu, TRUTH, 50, seed=51)
    cancel = threading.Event()
    stages = []
    timer = threading.Timer(1.0, cancel.set)
    timer.start()
    t0 = time.perf_counter()
    with pytest.raises(FitCancelled):
        fit_spectrum(s, emu, method="mcmc", seed=1, cancel=cancel, cmaes_evals=10**6, mcmc_max_steps=10**6,
                     progress=lambda st, f: stages.append(st))
    assert time.perf_counter() - t0 < 2.5     # set at 1.0 s; one generation or step later it stops
    assert "cmaes" in stages


@pytest.mark.parametrize("scope", ["atmosphere", "all"])
def test_progress_reports_the_current_chi2(emu, scope):
    """A callback taking ``chi2`` gets the best χ² so far: in the order reported, CMA-ES and
    the Levenberg–Marquardt stages (once after the 32-D search; after each round of the
    staged one) never raise it, and the fit ends at (or below) the last value; a
    (stage, fraction) callback works too."""
    s = noisy_spectrum(emu, TRUTH, 50, seed=52)
    seen = []
    r = fit_spectrum(s, emu, fix=QUICK_FIX, seed=3, cmaes_evals=400, cmaes_scope=scope,
                     progress=lambda stage, fraction, chi2=None: seen.append((stage, chi2)))
    chi2 = np.array([c for st, c in seen if st in ("cmaes", "polish")], float)
    assert sum(st == "cmaes" for st, _ in seen) > 5 and np.all(np.isfinite(chi2))
    assert any(st == "polish" for st, _ in seen)
    assert np.all(np.diff(chi2) <= 1e-6 * chi2[:-1])
    assert r.chi2 <= chi2[-1] * (1 + 1e-6)
    plain = []
    fit_spectrum(s, emu, fix=QUICK_FIX, seed=3, cmaes_evals=200, progress=lambda st, f: plain.append(st))
    assert "cmaes" in plain and plain[-1] == "done"


def test_atmospheric_cmaes_reaches_the_full_search_optimum(emu, full_fit):
    """The fast search (CMA-ES over the 6 atmospheric labels, LM over all 32, twice) must
    end as low in χ² as the default CMA-ES over all 32 labels on a spectrum its model
    describes, at the same labels (its speed, ~4x, is a benchmark: benchmarks/bench_fit.py)."""
    wl = emu.wavelength
    s = noisy_spectrum(emu, TRUTH, 50, seed=11, continuum=800 * (1 + 0.3 * np.sin(wl / 800.0)),
                       meta={"obsid": 123, "designation": "J000000.00+000000.0"})
    fast = fit_spectrum(s, emu, method="cmaes", seed=1, cmaes_evals=1500, cmaes_scope="atmosphere")
    assert fast.chi2 <= full_fit.chi2 + 1.0
    assert fast.info["polish_iterations"] > 0
    for name in ("teff", "logg", "fe_h", "mg_fe"):
        assert abs(fast.labels[name] - full_fit.labels[name]) < 0.5 * full_fit.err_lo[name]
    with pytest.raises(ValueError, match="cmaes_scope"):
        fit_spectrum(s, emu, cmaes_scope="abundances")


def test_masked_stretches_do_not_poison_the_chi2(emu):
    """Real low-S/N LAMOST files mask long stretches, where the model observable is
    undefined (NaN); the χ², Fisher matrix and polish must use the good pixels only."""
    s = noisy_spectrum(emu, TRUTH, 50, seed=5)
    bad = (s.wavelength > 5000) & (s.wavelength < 6500)
    s.mask[bad] = True
    s.ivar[bad] = 0.0
    r = fit_spectrum(s, emu, fix=QUICK_FIX, seed=3, cmaes_evals=400)
    assert np.isfinite(r.chi2) and np.isfinite(r.chi2_reduced)
    assert abs(r.labels["teff"] - 5200) < 150
    assert all(np.isfinite(r.err_lo[n]) for n in ("teff", "logg", "fe_h"))
