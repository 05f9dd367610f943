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
