"""The emulator's error spectrum: estimated on held-out spectra, stored in the model file,
added to the noise by the fitter (errors grow as they should), left out on request."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fitting_double import LineDouble, noisy_spectrum
from phdlspec_app.emulator import load_emulator
from phdlspec_app.emulator.model_error import leave_one_out, residuals, rms_error
from phdlspec_app.fitting.fit import fit_spectrum
from phdlspec_app.preprocess import prepare
from test_emulator import _tiny_emulator
from test_fitting_inference import QUICK_FIX, TRUTH

torch.set_num_threads(1)


def test_estimate_is_the_per_pixel_rms_and_leave_one_out_excludes_the_star():
    emu = _tiny_emulator()
    rng = np.random.default_rng(0)
    from phdlspec_app.physics.grid import GridSpec, sample_labels

    lab = sample_labels(GridSpec(n=32))
    noise = rng.normal(0, 1, (32, 200)) * np.linspace(0.001, 0.02, 200)
    flux = emu(lab) - noise                     # "engine" = emulator - noise: residual = noise
    sig = rms_error(residuals(emu, lab, flux))
    np.testing.assert_allclose(sig, np.sqrt(np.mean(noise ** 2, 0)), rtol=1e-5, atol=1e-7)
    loo = leave_one_out(noise)
    np.testing.assert_allclose(loo[7], np.sqrt(np.mean(np.delete(noise, 7, 0) ** 2, 0)), rtol=1e-10)
    with pytest.raises(ValueError, match="at least 10"):
        rms_error(residuals(emu, lab[:5], flux[:5]))


def test_model_error_round_trips_through_the_model_file(tmp_path):
    emu = _tiny_emulator()
    assert load_emulator(emu.save(tmp_path / "a.safetensors"), device="cpu").model_error is None
    emu.model_error = np.linspace(0.001, 0.01, 200)
    emu2 = load_emulator(emu.save(tmp_path / "b.safetensors"), device="cpu")
    np.testing.assert_array_equal(emu2.model_error, emu.model_error)
    assert emu2.model_error_basis is None
    rng = np.random.default_rng(2)
    emu.model_error_basis = rng.normal(0, 0.01, (12, 200)).astype(np.float32).astype(float)
    emu.model_error_rest = np.full(200, 0.002)
    emu3 = load_emulator(emu.save(tmp_path / "c.safetensors"), device="cpu")
    np.testing.assert_array_equal(emu3.model_error_basis, emu.model_error_basis)
    np.testing.assert_array_equal(emu3.model_error_rest, emu.model_error_rest)


def test_the_default_model_carries_a_correlated_model_error():
    emu = load_emulator(device="cpu")
    assert emu.model_error_basis is not None and emu.model_error_basis.shape[1] == emu.wavelength.size
    # the split keeps the measured variance per pixel
    np.testing.assert_allclose((emu.model_error_basis**2).sum(0) + emu.model_error_rest**2, emu.model_error**2,
                               rtol=2e-3, atol=1e-8)
    assert emu.card["model_error"]["correlated"]["rank"] == emu.model_error_basis.shape[0]
    # and the local error with its label shifts: cool giants' larger than warm dwarfs'
    loc = emu.model_error_local
    assert loc is not None and loc.shifts is not None and loc.residuals.shape[1] == emu.wavelength.size
    from phdlspec_app import labels as L

    cool = L.to_vector({"teff": 4200.0, "logg": 2.0, "fe_h": 0.0})
    warm = L.to_vector({"teff": 6200.0, "logg": 4.2, "fe_h": 0.0})
    size = [np.sqrt(((b**2).sum(0) + s**2).mean()) for s, b in (loc(cool), loc(warm))]
    assert size[0] > 1.5 * size[1]
    assert loc.label_covariance(cool)[0, 0] > loc.label_covariance(warm)[0, 0]


def test_prepared_adds_the_model_variance_once():
    emu = LineDouble()
    s = noisy_spectrum(emu, TRUTH, 50, seed=3)
    prep = prepare(s, emu.wavelength)
    sig = np.full(prep.ivar_y.size, 0.02)
    both = prep.with_model_error(sig)
    g = prep.good
    np.testing.assert_allclose(1 / both.ivar_y[g], 1 / prep.ivar_y[g] + 0.02 ** 2)
    np.testing.assert_array_equal(both.ivar_y_obs, prep.ivar_y)
    assert both.snr == prep.snr and prep.ivar_y_obs is None
    with pytest.raises(ValueError, match="already"):
        both.with_model_error(sig)
    with pytest.raises(ValueError, match="shape"):
        prep.with_model_error(sig[:10])


def test_fit_errors_grow_with_the_model_error_and_can_be_switched_off():
    """A model error equal to the noise doubles the variance: Cramér-Rao errors grow by ~sqrt 2."""
    emu = LineDouble()
    s = noisy_spectrum(emu, TRUTH, 50, seed=21)
    plain = fit_spectrum(s, emu, fix=QUICK_FIX, seed=2, cmaes_evals=600)
    emu.model_error = np.full(emu.wavelength.size, 1 / 50)
    try:
        with_err = fit_spectrum(s, emu, fix=QUICK_FIX, seed=2, cmaes_evals=600)
        off = fit_spectrum(s, emu, fix=QUICK_FIX, seed=2, cmaes_evals=600, model_error=False)
    finally:
        emu.model_error = None
    for name in ("teff", "logg", "fe_h", "mg_fe"):
        ratio = with_err.err_lo[name] / plain.err_lo[name]
        assert 1.3 < ratio < 1.5, (name, ratio)
        assert abs(with_err.labels[name] - plain.labels[name]) < plain.err_lo[name]
        assert off.err_lo[name] == pytest.approx(plain.err_lo[name], rel=1e-6)
    assert with_err.chi2_reduced == pytest.approx(plain.chi2_reduced / 2, rel=0.1)


# ---------------------------------------------------------------- correlated model error
def test_error_basis_keeps_the_variance_and_splits_shared_shapes_from_pixel_noise():
    from phdlspec_app.emulator.model_error import error_basis

    rng = np.random.default_rng(4)
    n, w = 60, 400
    # independent between pixels: nothing to share, the remainder is (about) all of it
    white = rng.normal(0, 0.01, (n, w))
    basis, rest = error_basis(white)
    s2 = (white**2).mean(0)
    np.testing.assert_allclose((basis**2).sum(0) + rest**2, s2, rtol=1e-10)
    assert np.median(rest**2 / s2) > 0.8
    # two shared shapes with random amplitudes (+ a little pixel noise): the basis carries them
    shapes = np.stack([np.sin(np.arange(w) / 7.0), np.exp(-((np.arange(w) - 200) / 15.0) ** 2)])
    shared = rng.normal(0, 0.01, (n, 2)) @ shapes + rng.normal(0, 1e-4, (n, w))
    basis, rest = error_basis(shared)
    s2 = np.maximum((shared**2).mean(0), 1e-8)
    np.testing.assert_allclose((basis**2).sum(0) + rest**2, s2, rtol=1e-10)
    assert np.median(rest**2 / s2) < 0.05
    with pytest.raises(ValueError, match="at least 10"):
        error_basis(shared[:5])


def _dense_check_setup():
    from phdlspec_app import labels as L
    from phdlspec_app.emulator.broadening import broaden_and_shift
    from phdlspec_app.fitting.likelihood import Likelihood

    emu = LineDouble()
    s = noisy_spectrum(emu, TRUTH, 40, seed=8)
    prep0 = prepare(s, emu.wavelength)
    rng = np.random.default_rng(1)
    P = emu.wavelength.size
    x = np.arange(P)
    basis = np.stack([0.01 * np.sin(x / (5.0 + 3 * k) + k) for k in range(4)]) * rng.uniform(0.5, 1.5, (4, 1))
    rest = np.full(P, 0.003)
    prep = prep0.with_model_error(rest, basis)
    truth = L.to_vector(TRUTH)
    free = np.arange(32)
    lik = Likelihood(emu, prep, free, truth)
    lik.linearize_model_error(truth)
    # the response of the observable to each basis vector, by finite differences, at the truth
    f0 = emu(truth)
    vb, rv = TRUTH["vbroad"], TRUTH["rv"]
    Ush = broaden_and_shift(torch.as_tensor(basis), torch.full((4,), vb, dtype=torch.float64),
                            torch.full((4,), rv, dtype=torch.float64)).numpy()
    eps = 1e-4
    m0 = prep.model_observable(torch.as_tensor(f0[None])).numpy()[0]
    V = np.stack([(prep.model_observable(torch.as_tensor((f0 + eps * u)[None])).numpy()[0] - m0) / eps for u in Ush])
    g = prep.good
    C = np.diag(1.0 / prep.ivar_y[g]) + V[:, g].T @ V[:, g]
    return emu, prep, lik, truth, g, C


def test_woodbury_chi2_and_fisher_equal_the_dense_covariance():
    emu, prep, lik, truth, g, C = _dense_check_setup()
    Ci = np.linalg.inv(C)
    other = truth.copy()
    other[0] += 60.0
    m = lik.model(other[None]).numpy()[0]
    r = prep.y[g] - m[g]
    assert lik.chi2_labels(other[None])[0] == pytest.approx(r @ Ci @ r, rel=1e-5)
    assert lik.data_chi2(m) == pytest.approx(r @ Ci @ r, rel=1e-5)
    _, jac, F = lik.fisher(truth)
    jf = jac[:, g]
    np.testing.assert_allclose(F, jf @ Ci @ jf.T, rtol=1e-5, atol=1e-8 * np.abs(F).max())
    # the diagonal alone would say the data constrain Teff better than they do
    plain = (jf * prep.ivar_y[g]) @ jf.T
    assert F[0, 0] < plain[0, 0]


def test_a_model_error_along_the_teff_derivative_adds_in_quadrature_to_the_teff_error():
    """If the emulator can be off by xi * 40 K worth of d flux / d Teff (xi ~ N(0, 1)), the Teff
    error must be sqrt(sigma_CR^2 + 40^2): the correlated error cannot be averaged down."""
    from phdlspec_app import labels as L

    emu = LineDouble()
    s = noisy_spectrum(emu, TRUTH, 50, seed=21)
    rest_frame = L.to_vector({**TRUTH, "rv": 0.0, "vbroad": 0.0})
    dteff = np.asarray(emu.jacobian(rest_frame[None]))[0, 0]      # d flux / d Teff at rest
    basis = 40.0 * dteff[None]
    tiny = np.full(emu.wavelength.size, 1e-6)
    plain = fit_spectrum(s, emu, fix=QUICK_FIX, seed=2, cmaes_evals=600, model_error=False)
    corr = fit_spectrum(s, emu, fix=QUICK_FIX, seed=2, cmaes_evals=600, model_error=(tiny, basis))
    expected = np.hypot(plain.err_lo["teff"], 40.0)
    assert corr.err_lo["teff"] == pytest.approx(expected, rel=0.1)
    # the same amount of error spread independently over the pixels barely moves the Teff error
    diag = fit_spectrum(s, emu, fix=QUICK_FIX, seed=2, cmaes_evals=600, model_error=np.abs(basis[0]) + 1e-6)
    assert diag.err_lo["teff"] < 0.7 * corr.err_lo["teff"]


def test_local_model_error_takes_the_form_and_size_of_the_nearest_residuals():
    """Cool held-out stars err along one shape, hot ones along another, ten times smaller:
    the error made at a cool star is the cool shape at the cool size, at a hot star the hot
    one; its diagonal is the weighted mean square residual."""
    from phdlspec_app import labels as L
    from phdlspec_app.emulator.model_error import LocalModelError
    from phdlspec_app.physics.grid import GridSpec, sample_labels

    lab = sample_labels(GridSpec(n=120))
    teff = lab[:, L.label_names().index("teff")]
    w = 300
    x = np.arange(w)
    cool_shape, hot_shape = np.sin(x / 9.0), np.exp(-((x - 150) / 20.0) ** 2)
    rng = np.random.default_rng(6)
    cool = teff < 5000
    r = np.where(cool[:, None], 0.01 * rng.normal(0, 1, (120, 1)) * cool_shape,
                 0.001 * rng.normal(0, 1, (120, 1)) * hot_shape) + rng.normal(0, 1e-5, (120, w))
    loc = LocalModelError(r, lab)
    star_cool, star_hot = lab[np.argmin(teff)], lab[np.argmax(teff)]
    rest_c, basis_c = loc(star_cool)
    rest_h, basis_h = loc(star_hot)
    var_c = (basis_c**2).sum(0) + rest_c**2
    var_h = (basis_h**2).sum(0) + rest_h**2
    assert np.sqrt(var_c.mean()) > 5 * np.sqrt(var_h.mean())
    # the cool star's covariance lies along the cool shape
    top_c = np.linalg.svd(basis_c, full_matrices=False)[2][0]
    top_h = np.linalg.svd(basis_h, full_matrices=False)[2][0]
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    assert abs(top_c @ unit(cool_shape)) > 0.95 and abs(top_h @ unit(hot_shape)) > 0.95
    wts = loc.weights(star_cool)
    keep = wts >= 1e-3
    np.testing.assert_allclose(var_c, np.maximum((wts[keep] / wts[keep].sum()) @ r[keep] ** 2, 1e-8), rtol=1e-8)
    assert 3 < loc.n_effective(star_cool) < 120
    with pytest.raises(ValueError, match="at least 20"):
        LocalModelError(r[:10], lab[:10])
    with pytest.raises(ValueError, match="do not match"):
        LocalModelError(r, lab[:50])


def test_local_model_error_round_trips_through_the_model_file(tmp_path):
    from phdlspec_app.emulator.model_error import LocalModelError
    from phdlspec_app.physics.grid import GridSpec, sample_labels

    emu = _tiny_emulator()
    assert load_emulator(emu.save(tmp_path / "a.safetensors"), device="cpu").model_error_local is None
    lab = sample_labels(GridSpec(n=24))
    r = np.random.default_rng(7).normal(0, 0.003, (24, emu.wavelength.size)).astype(np.float32).astype(float)
    rng = np.random.default_rng(8)
    A = rng.normal(0, 1, (24, 32, 32))
    shifts = (A @ A.transpose(0, 2, 1), rng.normal(0, 1, (24, 32)), np.full(32, 0.5))
    emu.model_error_local = LocalModelError(r, lab, shifts=shifts)
    emu.model_error_local.remainders = emu.model_error_local.remainders.astype(np.float32).astype(float)
    emu2 = load_emulator(emu.save(tmp_path / "b.safetensors"), device="cpu")
    np.testing.assert_array_equal(emu2.model_error_local.residuals, r)
    np.testing.assert_array_equal(emu2.model_error_local.labels, lab)
    for got, want in zip(emu2.model_error_local.shifts, shifts):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(emu2.model_error_local.label_covariance(lab[5]),
                               emu.model_error_local.label_covariance(lab[5]), rtol=1e-12)
    for got, want in zip(emu2.model_error_local(lab[3]), emu.model_error_local(lab[3])):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(ValueError, match="do not fit the wavelength grid"):
        type(emu)(emu.net, emu.flux_mean, emu.flux_std, emu.wavelength, emu.domain, device="cpu",
                  model_error_local=LocalModelError(r[:, :50], lab))


def test_a_local_model_error_is_the_dense_covariance_of_the_star_it_was_taken_at():
    """With a local error (sigma, basis)(labels), chi^2 uses diag(1/ivar_obs + sigma^2) +
    V V^T with both taken at the labels the likelihood was linearized about."""
    from phdlspec_app.fitting.likelihood import Likelihood

    emu, prep, lik, truth, g, C = _dense_check_setup()
    rest = np.full(prep.y.size, 0.003)
    basis = prep.model_basis

    def local(lab):
        s = 3.0 if lab[0] < 5000.0 else 1.5
        return s * rest, s * basis

    sized = Likelihood(emu, _without_model_error(prep).with_model_error(rest, basis, local), np.arange(32), truth)
    sized.linearize_model_error(truth)
    s = 3.0 if truth[0] < 5000.0 else 1.5
    V2 = C - np.diag(1.0 / prep.ivar_y[g])                      # V V^T of the unscaled basis
    Cs = np.diag(1.0 / prep.ivar_y_obs[g] + (s * rest[g]) ** 2) + s**2 * V2
    other = truth.copy()
    other[0] += 60.0
    m = sized.model(other[None]).numpy()[0]
    r = prep.y[g] - m[g]
    assert sized.chi2_labels(other[None])[0] == pytest.approx(r @ np.linalg.solve(Cs, r), rel=1e-5)
    assert sized.model_error_varies and sized.prep.info["model_error"]["local_rank"] == basis.shape[0]
    # re-linearized about a star on the other side of 5000 K, the error is that star's
    moved = truth.copy()
    moved[0] = 4500.0 if truth[0] >= 5000.0 else 6000.0
    sized.linearize_model_error(moved)
    s2 = 3.0 if moved[0] < 5000.0 else 1.5
    g2 = sized.prep.good
    np.testing.assert_allclose(sized.prep.ivar_y[g2], 1.0 / (1.0 / prep.ivar_y_obs[g2] + (s2 * rest[g2]) ** 2))
    with pytest.raises(ValueError, match="local=...\\) first"):
        _without_model_error(prep).with_model_error(rest).at_star(truth)
    with pytest.raises(ValueError, match="pixels"):
        _without_model_error(prep).with_model_error(rest, None, lambda lab: (rest[:5], basis)).at_star(truth)


def test_a_restricted_likelihood_shares_the_linearization_and_relinearizes_alone():
    """``Likelihood.restrict`` (the staged fit's CMA-ES over the atmosphere) uses the parent's
    model error as last linearized, without recomputing it; linearizing the part about
    another star changes the part only; linearizing at the same labels again is a no-op."""
    from phdlspec_app.fitting.likelihood import Likelihood

    emu, prep, _, truth, _, _ = _dense_check_setup()
    rest, basis = np.full(prep.y.size, 0.003), prep.model_basis
    calls = []

    def local(lab):
        calls.append(lab[0])
        s = 3.0 if lab[0] < 5000.0 else 1.5
        return s * rest, s * basis

    parent = Likelihood(emu, _without_model_error(prep).with_model_error(rest, basis, local), np.arange(32), truth)
    n0 = len(calls)
    parent.linearize_model_error(truth)  # where __init__ already linearized it: no-op
    assert len(calls) == n0
    other = truth.copy()
    other[0] += 60.0
    part = parent.restrict(np.arange(6), truth)
    assert len(calls) == n0
    assert part.chi2_labels(other[None])[0] == pytest.approx(parent.chi2_labels(other[None])[0], rel=1e-12)
    before = parent.chi2_labels(other[None])[0]
    moved = truth.copy()
    moved[0] = 4500.0 if truth[0] >= 5000.0 else 6000.0
    part.linearize_model_error(moved)
    assert len(calls) == n0 + 1
    assert parent.chi2_labels(other[None])[0] == before  # the parent is untouched
    fresh = Likelihood(emu, parent.prep, np.arange(6), truth)
    fresh.linearize_model_error(moved)
    assert part.chi2_labels(other[None])[0] == pytest.approx(fresh.chi2_labels(other[None])[0], rel=1e-10)
    assert part.chi2_labels(other[None])[0] != pytest.approx(parent.chi2_labels(other[None])[0], rel=1e-3)
    assert parent._lin_at[0] == truth[0]


def test_a_failed_linearization_is_retried_at_the_same_labels():
    """The memo of ``linearize_model_error`` is set only when it succeeded."""
    from phdlspec_app.fitting.likelihood import Likelihood

    emu, prep, _, truth, _, _ = _dense_check_setup()
    rest, basis = np.full(prep.y.size, 0.003), prep.model_basis
    fail = [True]

    def local(lab):
        if fail[0]:
            raise ValueError("local model error unavailable")
        return rest, basis

    lik = Likelihood(emu, _without_model_error(prep).with_model_error(rest, basis, local), np.arange(32), truth,
                     linearize=False)
    with pytest.raises(ValueError, match="unavailable"):
        lik.linearize_model_error(truth)
    fail[0] = False
    lik.linearize_model_error(truth)
    assert lik._A is not None and np.array_equal(lik._lin_at, truth)


def _without_model_error(prep):
    from dataclasses import replace

    return replace(prep, ivar_y=prep.ivar_y_obs, ivar_y_obs=None, model_basis=None, model_local=None)


def test_a_local_model_error_twice_as_large_doubles_its_share_of_the_teff_error():
    """A Teff-derivative basis worth 10 K, made 20 K at the star by the local error, is the
    same as one worth 20 K: the Teff error becomes sqrt(sigma_CR^2 + 20^2)."""
    from phdlspec_app import labels as L

    emu = LineDouble()
    s = noisy_spectrum(emu, TRUTH, 50, seed=21)
    rest_frame = L.to_vector({**TRUTH, "rv": 0.0, "vbroad": 0.0})
    basis = 10.0 * np.asarray(emu.jacobian(rest_frame[None]))[0, 0][None]
    tiny = np.full(emu.wavelength.size, 1e-6)
    plain = fit_spectrum(s, emu, fix=QUICK_FIX, seed=2, cmaes_evals=600, model_error=False)
    local = fit_spectrum(s, emu, fix=QUICK_FIX, seed=2, cmaes_evals=600,
                         model_error=(tiny, basis, lambda lab: (2 * tiny, 2 * basis)))
    direct = fit_spectrum(s, emu, fix=QUICK_FIX, seed=2, cmaes_evals=600, model_error=(2 * tiny, 2 * basis))
    assert local.err_lo["teff"] == pytest.approx(direct.err_lo["teff"], rel=1e-3)
    assert local.err_lo["teff"] == pytest.approx(np.hypot(plain.err_lo["teff"], 20.0), rel=0.1)
    assert local.info["model_error"]["local_rank"] == 1


def test_attach_model_error_makes_a_local_error_when_there_are_enough_heldout_spectra():
    from types import SimpleNamespace

    from phdlspec_app import labels as L
    from phdlspec_app.emulator.train import attach_model_error
    from phdlspec_app.physics.grid import GridSpec, sample_labels

    emu = _tiny_emulator()
    lab = sample_labels(GridSpec(n=40))
    teff = lab[:, L.label_names().index("teff")]
    noise = np.random.default_rng(4).normal(0, 1, (40, emu.wavelength.size)) * (0.002 * (5500 / teff) ** 3)[:, None]
    held = SimpleNamespace(labels=lab, flux=emu(lab) - noise, source={"grid": "test"})
    attach_model_error(emu, held)
    card = emu.card["model_error"]["local"]
    assert card["bandwidth"] == {"teff": 500.0, "logg": 1.0, "fe_h": 0.75} and card["median_effective_neighbours"] > 1
    np.testing.assert_allclose(emu.model_error, np.sqrt((noise**2).mean(0)), rtol=1e-4)
    cool, hot = lab[np.argmin(teff)], lab[np.argmax(teff)]
    size = [np.sqrt(((b**2).sum(0) + s**2).mean()) for s, b in (emu.model_error_local(cool), emu.model_error_local(hot))]
    assert size[0] > 2 * size[1]                                 # larger for the cooler star
    F, g, box = emu.model_error_local.shifts
    assert F.shape == (40, 32, 32) and g.shape == lab.shape and "teff" in card["label_shift_rms_snr50"]
    few = SimpleNamespace(labels=lab[:12], flux=held.flux[:12], source={})
    attach_model_error(emu, few)                                 # too few to make it star by star
    assert emu.model_error_local is None and emu.card["model_error"]["local"] is None


def test_label_shifts_recover_the_labels_an_emulator_error_stands_for():
    """An 'engine' spectrum that is the model at Teff + 25 K and [Mg/Fe] + 0.04: the shift
    the emulator's error causes is (+25 K, +0.04) to first order, the rest ≈ 0."""
    from phdlspec_app import labels as L
    from phdlspec_app.emulator.model_error import label_shifts

    emu = LineDouble()
    names = L.label_names()
    lab = np.stack([L.to_vector({**TRUTH, "rv": 0.0, "vbroad": 0.0}), L.to_vector({**TRUTH, "teff": 4700.0,
                                                                                   "rv": 0.0, "vbroad": 0.0})])
    moved = lab.copy()
    moved[:, names.index("teff")] += 25.0
    moved[:, names.index("mg_fe")] += 0.04
    b = label_shifts(emu, lab, emu(moved))
    np.testing.assert_allclose(b[:, names.index("teff")], 25.0, rtol=0.1)
    np.testing.assert_allclose(b[:, names.index("mg_fe")], 0.04, rtol=0.15)
    assert np.all(np.abs(b[:, names.index("logg")]) < 0.01) and np.all(b[:, names.index("vbroad")] == 0.0)
    np.testing.assert_allclose(label_shifts(emu, lab, emu(lab)), 0.0, atol=1e-6)


def test_label_covariance_is_the_local_second_moment_of_the_shifts():
    """Shift equations whose solution is 40 K in Teff for cool spectra and 10 K for hot ones:
    the covariance near a cool star is about 40², near a hot one about 10²; fixing Teff
    removes it; a tight prior shrinks it; too few neighbours lean on all the spectra."""
    from phdlspec_app import labels as L
    from phdlspec_app.emulator.model_error import LocalModelError, solve_shifts
    from phdlspec_app.physics.grid import GridSpec, sample_labels

    lab = sample_labels(GridSpec(n=30))
    teff = lab[:, L.label_names().index("teff")]
    F = np.tile(np.eye(32) * 1e-2, (30, 1, 1))                 # unit noise: σ_Teff = 1/(0.1 × 50) = 0.2 K at S/N 50
    want = np.where(teff < 5000, 40.0, 10.0) * np.sign(np.sin(np.arange(30) + 0.5))
    g = np.zeros((30, 32))
    g[:, 0] = want * 1e-2
    box = np.full(32, 1e-12)
    np.testing.assert_allclose(solve_shifts(F, g, box)[:, 0], want, rtol=1e-6)
    loc = LocalModelError(np.random.default_rng(1).normal(0, 1e-3, (30, 50)), lab, shifts=(F, g, box))
    cool, hot = loc.label_covariance(lab[np.argmin(teff)]), loc.label_covariance(lab[np.argmax(teff)])
    assert cool.shape == (32, 32) and np.sqrt(cool[0, 0]) > 30.0 and np.sqrt(hot[0, 0]) < 20.0
    assert loc.label_covariance(lab[0], free=np.arange(1, 32))[0, 0] == 0.0      # Teff fixed: no floor on it
    prior = np.zeros(32)
    prior[0] = 1.0 / 5.0**2                                      # a 5 K prior on Teff (precision 0.04 vs 25 from the data)
    shrunk = loc.label_covariance(lab[np.argmin(teff)], prior_precision=prior)
    assert shrunk[0, 0] < cool[0, 0] and shrunk[0, 0] == pytest.approx(cool[0, 0] * (25 / 25.04) ** 2, rel=1e-3)
    assert LocalModelError(loc.residuals, lab).label_covariance(lab[0]) is None
    with pytest.raises(ValueError, match="shift equations"):
        LocalModelError(loc.residuals, lab, shifts=(F, g[:, :5], box))
    with pytest.raises(ValueError, match="finite"):
        loc.weights(np.full(32, np.nan))
    far = lab[0].copy()
    far[0], far[1], far[5] = 20000.0, 9.0, 3.0                   # nobody near: the moment over all spectra
    a = loc.n_effective(far) / loc.MIN_NEIGHBOURS
    w = loc.weights(far)
    expect = a * (w @ want**2) / w.sum() + (1 - a) * (want**2).mean()
    assert a < 0.2 and loc.label_covariance(far)[0, 0] == pytest.approx(expect, rel=1e-3)


class _Floor:
    """A local model error with no pixel part (``tiny``) whose label shifts are given
    variances {index: variance}; remembers the S/N and free set it was asked for."""

    def __init__(self, tiny, variances):
        self.tiny, self.variances = tiny, variances

    def __call__(self, lab):
        return self.tiny, np.zeros((1, self.tiny.size))

    def label_covariance(self, lab, snr=50.0, free=None, prior_precision=None):
        self.seen = (snr, None if free is None else list(free))
        c = np.zeros((32, 32))
        for k, v in self.variances.items():
            c[k, k] = v
        return c


def test_the_emulator_floor_adds_to_the_noise_error():
    """A local model error whose label shifts are 30 K in Teff and 0.05 dex in [Mg/Fe]: those
    errors are the noise's bound (the fit without model error) and the floor in quadrature,
    and the fit says so."""
    from phdlspec_app import labels as L

    emu = LineDouble()
    s = noisy_spectrum(emu, TRUTH, 50, seed=21)
    tiny = np.full(emu.wavelength.size, 1e-6)
    MG = L.label_names().index("mg_fe")
    floor = _Floor(tiny, {0: 30.0**2, MG: 0.05**2})
    plain = fit_spectrum(s, emu, fix=QUICK_FIX, seed=2, cmaes_evals=600, model_error=False)
    floored = fit_spectrum(s, emu, fix=QUICK_FIX, seed=2, cmaes_evals=600, model_error=(tiny, None, floor))
    assert floored.err_lo["teff"] == pytest.approx(np.hypot(plain.err_lo["teff"], 30.0), rel=0.02)
    # [Mg/Fe] is reported from its line posterior (fitting.posterior), which may only widen the
    # Gaussian of the noise bound and the floor (tested in test_fitting_inference): within a few
    # per cent of it here
    for side in (floored.err_lo, floored.err_hi):
        assert side["mg_fe"] == pytest.approx(np.hypot(plain.err_lo["mg_fe"], 0.05), rel=0.04)
    assert floored.err_lo["logg"] == pytest.approx(plain.err_lo["logg"], rel=0.02)
    assert floored.info["emulator_floor"]["teff"] == pytest.approx(30.0)
    assert floored.info["emulator_floor"]["mg_fe"] == pytest.approx(0.05)
    # the floor is asked for at the observation's S/N and the fit's free labels
    assert floor.seen[0] == pytest.approx(floored.snr) and MG in floor.seen[1] and L.label_names().index("c_fe") not in floor.seen[1]


def test_mcmc_errors_get_the_floor_beyond_the_pixel_covariance_once():
    """With a negligible pixel model error, the MCMC percentiles get the whole 30 K floor in
    quadrature (the chain knows nothing of it); the covariance gets it on its diagonal."""
    emu = LineDouble()
    s = noisy_spectrum(emu, TRUTH, 50, seed=21)
    tiny = np.full(emu.wavelength.size, 1e-6)

    kw = dict(fix=QUICK_FIX, seed=3, cmaes_evals=600, method="both", nwalkers=32, mcmc_max_steps=60)
    plain = fit_spectrum(s, emu, model_error=(tiny, None), **kw)
    floored = fit_spectrum(s, emu, model_error=(tiny, None, _Floor(tiny, {0: 30.0**2})), **kw)
    assert floored.labels["teff"] == pytest.approx(plain.labels["teff"], abs=1e-9)   # same chain
    for side in ("err_lo", "err_hi"):
        assert getattr(floored, side)["teff"] == pytest.approx(np.hypot(getattr(plain, side)["teff"], 30.0), rel=1e-6)
        assert getattr(floored, side)["logg"] == pytest.approx(getattr(plain, side)["logg"], rel=1e-6)
    i = floored.free_names.index("teff")
    assert floored.covariance[i, i] == pytest.approx(plain.covariance[i, i] + 900.0, rel=1e-6)
