"""The emulator's error spectrum: estimated on held-out spectra, stored in the model file,
added to the noise by the fitter (errors grow as they should), left out on request."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fitting_double import LineDouble, noisy_spectrum
from phdlspec_app.emulator import load_emulator
from phdlspec_app.emulator.model_error import estimate_model_error, leave_one_out
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
    sig = estimate_model_error(emu, lab, flux)
    np.testing.assert_allclose(sig, np.sqrt(np.mean(noise ** 2, 0)), rtol=1e-5, atol=1e-7)
    loo = leave_one_out(noise)
    np.testing.assert_allclose(loo[7], np.sqrt(np.mean(np.delete(noise, 7, 0) ** 2, 0)), rtol=1e-10)
    with pytest.raises(ValueError, match="at least 10"):
        estimate_model_error(emu, lab[:5], flux[:5])


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
