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
from phdlspec_app.fitting.posterior import box_posterior, line_posterior
from phdlspec_app.fitting.fit import FitCancelled, fit_spectrum
from phdlspec_app.fitting.optimize import search_box

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
    # CMA-ES rows: one error for the Gaussian atmosphere, both sides for the [X/Fe]
    assert "teff_err_lo" not in row
    assert row["mg_fe_err_lo"] == pytest.approx(r.err_lo["mg_fe"])
    assert row["mg_fe_err_hi"] == pytest.approx(r.err_hi["mg_fe"])
    assert row["mg_fe_err"] == pytest.approx(0.5 * (r.err_lo["mg_fe"] + r.err_hi["mg_fe"]))
    # no information: the posterior is the box itself, so the (unreported) value is its
    # middle and the errors its 16/84 percentiles, not infinite
    lo, hi = search_box(emu)
    j = L.get_label("cu_fe").index
    assert r.labels["cu_fe"] == pytest.approx(0.5 * (lo[j] + hi[j]))
    assert r.err_lo["cu_fe"] == pytest.approx(0.34 * (hi[j] - lo[j]))


def test_box_posterior_is_the_truncated_laplace_posterior():
    from scipy.stats import truncnorm

    theta = np.array([0.0, 0.45, 0.5, 6990.0, 0.1, -0.2])
    sigma = np.array([0.05, 0.2, 0.3, 300.0, 5.0, np.inf])
    lo = np.array([-0.5, -0.5, -0.5, 4000.0, 0.0, -0.5])
    hi = np.array([0.5, 0.5, 0.5, 7000.0, 100.0, 0.9])
    med, elo, ehi = box_posterior(theta, sigma, lo, hi)
    for i in range(5):
        a, b = (lo[i] - theta[i]) / sigma[i], (hi[i] - theta[i]) / sigma[i]
        q16, q50, q84 = truncnorm.ppf([0.16, 0.5, 0.84], a, b, loc=theta[i], scale=sigma[i])
        assert med[i] == pytest.approx(q50, rel=1e-6, abs=1e-9)
        assert elo[i] == pytest.approx(q50 - q16, rel=1e-6) and ehi[i] == pytest.approx(q84 - q50, rel=1e-6)
    # far from the edges it is θ ± σ; on an edge the median moves inside and the errors shrink
    assert med[0] == pytest.approx(0.0, abs=1e-9) and elo[0] == pytest.approx(0.05 * 0.9945, rel=1e-3)
    assert med[2] < 0.5 and elo[2] < 0.3 and ehi[2] < elo[2]
    assert 6500 < med[3] < 6990 and ehi[3] < 300
    assert med[5] == pytest.approx(0.2) and elo[5] == pytest.approx(0.34 * 1.4)


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


def _quantiles_on_fine_grid(chi2, a, b, n=200001):
    x = np.linspace(a, b, n)
    p = np.exp(-0.5 * (chi2(x) - chi2(x).min()))
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return np.interp([0.16, 0.5, 0.84], cdf, x)


def test_line_posterior_gaussian_limit_weak_line_and_floor():
    # a correlated Gaussian: the profile line is exact, and the answer the truncated Laplace one
    C = np.array([[0.04, 0.03], [0.03, 0.09]])
    Fm = np.linalg.inv(C)
    th = np.array([0.35, -0.1])

    def quad(x):
        r = np.atleast_2d(x) - th
        return np.einsum("ni,ij,nj->n", r, Fm, r)

    lo, hi = np.array([-0.5, -0.5]), np.array([0.5, 0.5])
    sig = np.sqrt(np.diag(C))
    med, elo, ehi = line_posterior(quad, th, C, sig, lo, hi, [0, 1], n_grid=201)
    bm, bl, bh = box_posterior(th, sig, lo, hi)
    assert med == pytest.approx(bm, abs=2e-3) and elo == pytest.approx(bl, abs=2e-3) and ehi == pytest.approx(bh, abs=2e-3)
    # the emulator floor widens the reported errors: a Gaussian far from the box's edges,
    # σ_lik 0.02, reported σ 0.04 → the errors are 0.04
    Cs = C * 0.01
    Fs = np.linalg.inv(Cs)
    med, elo, ehi = line_posterior(lambda x: np.einsum("ni,ij,nj->n", x, Fs, x), np.zeros(2), Cs,
                                   2 * np.sqrt(np.diag(Cs)), lo, hi, [0], n_grid=201)
    assert med[0] == pytest.approx(0.0, abs=1e-3)
    assert elo[0] == pytest.approx(0.04, rel=0.02) and ehi[0] == pytest.approx(0.04, rel=0.02)
    # a weak line: depth ∝ 10^x, measured at x0 = 0.3 with noise that makes the Fisher σ
    # at the optimum 0.1 dex; the lower side is far broader than that
    x0 = 0.3
    A = 1.0 / (0.1 * np.log(10) * 10**x0)

    def weak(x):
        return ((10 ** np.atleast_2d(x)[:, 0] - 10**x0) * A) ** 2

    s_lik = 0.1
    med, elo, ehi = line_posterior(weak, np.array([x0]), np.array([[s_lik**2]]), np.array([s_lik]),
                                   np.array([-0.5]), np.array([0.5]), [0], n_grid=97, span=10.0)
    q16, q50, q84 = _quantiles_on_fine_grid(lambda x: ((10**x - 10**x0) * A) ** 2, -0.5, 0.5)
    assert med[0] == pytest.approx(q50, abs=0.01)
    assert elo[0] == pytest.approx(q50 - q16, abs=0.01)  # the broad lower side, from the line
    assert elo[0] > 1.2 * s_lik
    # the upper side: never narrower than the Gaussian at the optimum cut by the box
    assert ehi[0] >= box_posterior([x0], [s_lik], [-0.5], [0.5])[2][0]
    assert ehi[0] == pytest.approx(max(q84 - q50, box_posterior([x0], [s_lik], [-0.5], [0.5])[2][0]), abs=0.01)


def test_line_posterior_never_narrower_than_the_cramer_rao_gaussian():
    # a χ² that rises faster than its curvature at the optimum says (a quartic term): the
    # line alone would give ~0.06 dex; the reported error stays the Gaussian's 0.1
    def steep(x):
        x = np.atleast_2d(x)[:, 0]
        return (x / 0.1) ** 2 + (x / 0.05) ** 4

    med, elo, ehi = line_posterior(steep, np.array([0.0]), np.array([[0.01]]), np.array([0.1]),
                                   np.array([-0.5]), np.array([0.5]), [0], n_grid=97)
    q16, q50, q84 = _quantiles_on_fine_grid(lambda x: (x / 0.1) ** 2 + (x / 0.05) ** 4, -0.5, 0.5)
    assert q84 - q50 < 0.07 and med[0] == pytest.approx(0.0, abs=1e-3)
    assert elo[0] == pytest.approx(0.1 * 0.9945, rel=1e-3) and ehi[0] == pytest.approx(0.1 * 0.9945, rel=1e-3)


def test_line_posterior_follows_a_bent_profile_valley_when_refined():
    # χ² = (h(x0)/0.3)² + ((x1 − 2 x0²)/0.05)²: the other label's conditional optimum bends
    # away from the straight profile line (x1 = 0 at the optimum's curvature), so the line
    # alone sees a steep quartic wall; the profile is (h(x0)/0.3)², wider above (h = ln(1 + x0)).
    # ``refine`` moves x1 to its conditional optimum as ``Likelihood.profile_step`` does.
    def h(x):
        return np.log1p(x)

    def chi2(x):
        x = np.atleast_2d(x)
        return (h(x[:, 0]) / 0.3) ** 2 + ((x[:, 1] - 2.0 * x[:, 0] ** 2) / 0.05) ** 2

    def refine(X, held):
        Y = np.array(X, float)
        Y[held == 0, 1] = 2.0 * Y[held == 0, 0] ** 2
        return chi2(X), Y

    th, cov, lo, hi = np.zeros(2), np.diag([0.09, 0.0025]), np.array([-0.9, -1.0]), np.array([1.5, 5.0])
    args = (chi2, th, cov, np.sqrt(np.diag(cov)), lo, hi, [0])
    q16, q50, q84 = _quantiles_on_fine_grid(lambda x: (h(x) / 0.3) ** 2, -0.9, 1.5)
    med, elo, ehi = line_posterior(*args, n_grid=97, span=8.0, refine=refine)
    assert med[0] == pytest.approx(q50, abs=0.01)
    # below, h is steeper than x: the profile is narrower there, so the Gaussian floor rules
    floor_lo = box_posterior([0.0], [0.3], [-0.9], [1.5])[1][0]
    assert q50 - q16 < floor_lo and elo[0] == pytest.approx(floor_lo, rel=1e-6)
    assert ehi[0] == pytest.approx(q84 - q50, abs=0.01)
    assert ehi[0] > 1.15 * 0.3  # wider above than the Cramér–Rao 0.3
    # the straight line: the quartic wall, so only the Gaussian floor's 0.3 remains
    _, _, ehi_line = line_posterior(*args, n_grid=97, span=8.0)
    assert ehi_line[0] < 0.31 and ehi[0] > ehi_line[0] + 0.04


def test_line_posterior_default_grid_is_accurate_for_a_weak_line():
    # the default 25 points per line (χ² interpolated by PCHIP, the density integrated on a
    # finer grid) give the weak line's quantiles to 0.5 % of its width; the trapezoid on
    # the 25 points themselves (the old way, which needed 49) misses by several per cent
    x0 = 0.3
    A = 1.0 / (0.1 * np.log(10) * 10**x0)

    def weak(x):
        return ((10 ** np.atleast_2d(x)[:, 0] - 10**x0) * A) ** 2

    q16, q50, q84 = _quantiles_on_fine_grid(lambda x: ((10**x - 10**x0) * A) ** 2, -0.5, 0.5, n=200001)
    med, elo, _ = line_posterior(weak, np.array([x0]), np.array([[0.01]]), np.array([0.1]),
                                 np.array([-0.5]), np.array([0.5]), [0], span=10.0)
    assert med[0] == pytest.approx(q50, abs=0.005 * (q84 - q16))
    assert elo[0] == pytest.approx(q50 - q16, rel=0.01)  # the broad lower side (the floor is 0.1)
    assert elo[0] > 0.12
    t = np.linspace(-0.5 - x0, 0.5 - x0, 25)  # the same 25 points, trapezoid on the coarse grid
    p = np.exp(-0.5 * (weak(x0 + t[:, None]) - weak(x0 + t[:, None]).min()))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(t))])
    c16, c50, c84 = x0 + np.interp(np.array([0.16, 0.5, 0.84]) * cdf[-1], cdf, t)
    assert abs((c50 - c16) / (q50 - q16) - 1) > 0.02 or abs((c84 - c50) / (q84 - q50) - 1) > 0.02


def test_line_quantiles_with_points_where_chi2_is_not_finite():
    # a Gaussian line (σ = 0.2) on 25 points over ±1.2: non-finite χ² at the ends (the box
    # or the domain's edge) costs nothing; every other point missing widens it only by the
    # linear taper to zero at those points (the old trapezoid's 4 %), not by zeroing
    # whole stretches of the line
    from phdlspec_app.fitting.posterior import _quantiles

    t = np.linspace(-1.2, 1.2, 25)
    c = (t / 0.2) ** 2
    ok = np.ones(25, bool)
    q = _quantiles(t, c, ok, 1.0)
    assert q == pytest.approx([-0.2 * 0.9945, 0.0, 0.2 * 0.9945], abs=0.002)
    ends = ok.copy()
    ends[[0, 1, 23, 24]] = False
    assert _quantiles(t, np.where(ends, c, np.nan), ends, 1.0) == pytest.approx(q, abs=0.002)
    alt = ok.copy()
    alt[1::2] = False
    qa = _quantiles(t, np.where(alt, c, np.inf), alt, 1.0)
    assert abs(qa[1]) < 0.01 and 0.95 < (qa[2] - qa[0]) / (q[2] - q[0]) < 1.1
    one = ok.copy()
    one[12] = False  # a hole at the middle: zero density there, as on the coarse grid
    qo = _quantiles(t, np.where(one, c, np.nan), one, 1.0)
    assert np.all(np.isfinite(qo)) and qo[0] < qo[1] < qo[2]
    assert _quantiles(t, c, np.zeros(25, bool), 1.0) is None
