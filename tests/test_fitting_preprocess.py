"""Fitting preprocessing: resampling, resolution matching, masks, pseudo-continuum, refusals.

Model spectra come from the TEST DOUBLE in ``tests/fitting_double.py`` (not the emulator).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fitting_double import LineDouble, noisy_spectrum
from phdlspec_app import labels as L
from phdlspec_app.preprocess.continuum import PseudoContinuum
from phdlspec_app.preprocess.masks import DEFAULT_MASKS, user_mask
from phdlspec_app.preprocess import FitInputError, prepare
from phdlspec_app.preprocess.resample import rebin
from phdlspec_app.io import Spectrum
from phdlspec_app.physics.constants import c_kms

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def emu():
    return LineDouble()


def _chi2_truth(prep, emu, labels):
    m = prep.model_observable(torch.as_tensor(emu(L.to_vector(labels))[None]))[0].numpy()
    return float(((prep.y - m) ** 2 * prep.ivar_y)[prep.good].sum())


def test_rebin_conserves_flux_on_a_coarser_irregular_grid():
    rng = np.random.default_rng(0)
    wl_in = np.cumsum(rng.uniform(0.5, 1.5, 3000)) + 4000.0
    flux = 1.0 + rng.normal(0, 0.3, wl_in.size) ** 2
    ivar = np.full(wl_in.size, 4.0)
    wl_out = np.linspace(wl_in[10], wl_in[-10], 700)
    f, iv, g = rebin(wl_in, flux, ivar, np.ones(wl_in.size, bool), wl_out)
    assert g[1:-1].all()
    # ∫ f dλ over the same interval (whole output bins) before and after
    e_out = 0.5 * (wl_out[1:] + wl_out[:-1])
    a, b = e_out[0], e_out[-1]
    e_in = np.concatenate([[wl_in[0] - 0.5 * (wl_in[1] - wl_in[0])], 0.5 * (wl_in[1:] + wl_in[:-1]),
                           [wl_in[-1] + 0.5 * (wl_in[-1] - wl_in[-2])]])
    ov = np.clip(np.minimum(e_in[1:], b) - np.maximum(e_in[:-1], a), 0, None)
    assert np.sum(f[1:-1] * np.diff(e_out)) == pytest.approx(np.sum(flux * ov), rel=1e-10)
    # averaging ~2.9 input pixels per output bin lowers the noise accordingly
    assert np.median(iv[1:-1]) == pytest.approx(4.0 * (wl_out[1] - wl_out[0]) / np.mean(np.diff(wl_in)), rel=0.1)


def test_rebin_masks_bad_and_uncovered_pixels():
    wl = np.linspace(5000, 5100, 101)
    good = np.ones(101, bool)
    good[50] = False
    f, iv, g = rebin(wl, np.ones(101), np.ones(101), good, np.linspace(4990, 5110, 121))
    assert not g[:10].any() and not g[-10:].any()       # outside the observed range
    assert not g[60] and g[58] and g[62]                  # the bad input pixel, and only it
    assert np.all(iv[~g] == 0)


def test_prepare_on_the_model_grid_is_exact_and_chi2_of_truth_is_n(emu):
    truth = {"teff": 5400, "logg": 4.2, "fe_h": -0.3, "rv": 20.0}
    s = noisy_spectrum(emu, truth, 80, seed=1, continuum=500 * (1 + 0.4 * np.sin(emu.wavelength / 900.0)))
    prep = prepare(s, emu.wavelength)
    assert prep.info["frac_obs_degraded"] == 0 and prep.broaden_model.identity
    chi2 = _chi2_truth(prep, emu, truth)
    n = prep.n_good
    assert abs(chi2 - n) < 5 * np.sqrt(2 * n)
    assert prep.snr == pytest.approx(80, rel=0.1)


def test_pseudo_continuum_cancels_a_smooth_response(emu):
    flux = emu(L.to_vector({"teff": 4800, "logg": 2.6}))
    good = np.ones(flux.size, bool)
    good[1000:1100] = False
    pc = PseudoContinuum(good.astype(float))
    resp = 300 * (1 + 0.5 * np.sin(emu.wavelength / 1500.0)) * (emu.wavelength / 5000.0) ** -2
    y1 = flux / pc(flux * good)
    y2 = flux * resp / pc(flux * resp * good)
    inner = good.copy()
    inner[:200] = inner[-200:] = False
    # below 1 % (S/N 100) for a response varying by a factor 4 over the range
    assert np.max(np.abs(y1 - y2)[inner]) < 1e-2
    # the operator is linear in the flux
    assert np.allclose(pc(2 * flux + 3 * resp), 2 * pc(flux) + 3 * pc(resp))


def test_noisy_pixels_do_not_drag_the_pseudo_continuum(emu):
    # S/N 100 everywhere but 60 pixels at S/N 0.5 (as at LAMOST's red end): weighted by the
    # inverse variance, the continuum of their neighbours stays put; with equal weights the
    # noisy pixels pull it by far more than the good pixels' noise
    truth = {"teff": 5600, "logg": 4.3}
    flux = emu(L.to_vector(truth))
    snr = np.full(flux.size, 100.0)
    snr[2000:2060] = 0.5
    noisy = flux + np.random.default_rng(4).normal(0.0, 1.0, flux.size) / snr
    s = Spectrum(emu.wavelength, noisy, snr**2, np.zeros(flux.size, bool), meta={"source": "noisy-stretch"})
    prep = prepare(s, emu.wavelength, masks="none")
    assert np.allclose(prep.continuum.w[snr == 100.0], 1.0)  # uniform noise: the mask's own weights
    near = np.zeros(flux.size, bool)
    near[1900:2000] = near[2060:2160] = True
    clean = prep.continuum(flux)
    err_weighted = np.max(np.abs(prep.continuum(noisy) / clean - 1.0)[near])
    flat = PseudoContinuum(prep.good.astype(float))
    err_flat = np.max(np.abs(flat(noisy) / flat(flux) - 1.0)[near])
    assert err_weighted < 3e-3 and err_flat > 0.02
    n = prep.n_good
    assert abs(_chi2_truth(prep, emu, truth) - n) < 5 * np.sqrt(2 * n)


def test_sharper_observation_is_degraded_to_the_model(emu):
    sharp = LineDouble()
    sharp.resolution = 4000.0
    truth = {"teff": 6000, "logg": 4.3, "fe_h": -0.5}
    s = noisy_spectrum(sharp, truth, 100, seed=2)
    s.meta["resolution"] = 4000.0
    prep = prepare(s, emu.wavelength)
    assert prep.info["frac_obs_degraded"] > 0.99 and prep.broaden_model.identity
    n = prep.n_good
    assert abs(_chi2_truth(prep, emu, truth) - n) < 6 * np.sqrt(2 * n)
    # without matching, the sharper lines misfit badly
    unmatched = prepare(s, emu.wavelength, resolution=1800.0)
    assert _chi2_truth(unmatched, emu, truth) > 3 * n


def test_constant_fwhm_in_angstrom_is_matched_both_ways(emu):
    """FWHM 2.9 Å: R ≈ 1300 at 3800 Å (model broadened), R ≈ 3100 at 9000 Å (observation
    degraded). The observation is made on its own grid, 3× finer than the model's (so
    that it is well sampled), and resampled by ``prepare``."""
    fwhm = 2.9
    truth = {"teff": 5000, "logg": 3.5, "fe_h": 0.0}
    wl = emu.wavelength
    step = np.log(wl[1] / wl[0]) / 3
    fine = wl[0] * np.exp((np.arange(3 * wl.size) - 1) * step)
    obs = LineDouble(wavelength=fine, fwhm_angstrom=fwhm)(L.to_vector(truth))
    rng = np.random.default_rng(3)
    snr = 100.0 / np.sqrt(3)          # per fine pixel: S/N 100 per model pixel
    s = Spectrum(fine, obs + rng.normal(0, 1 / snr, fine.size), np.full(fine.size, snr**2),
                 np.zeros(fine.size, bool), meta={"source": "fwhm-test", "fwhm": fwhm})
    prep = prepare(s, wl)
    assert 0.2 < prep.info["frac_obs_degraded"] < 0.8
    assert 0.2 < prep.info["frac_model_broadened"] < 0.8
    assert prep.info["r_obs_min"] == pytest.approx(wl[prep.good][0] / fwhm, rel=1e-3)
    n = prep.n_good
    assert prep.snr == pytest.approx(100, rel=0.1)
    assert abs(_chi2_truth(prep, emu, truth) - n) < 6 * np.sqrt(2 * n)
    # ignoring the resolution (taking the model's R) misfits
    assert _chi2_truth(prepare(s, wl, resolution=1800.0), emu, truth) > 2 * n


def test_too_coarse_resolution_is_refused_naming_the_file(emu):
    s = noisy_spectrum(emu, {}, 50, seed=4, meta={"source": "coarse.fits"})
    with pytest.raises(FitInputError, match=r"coarse\.fits: resolving power R = 9\d\d at 37\d\d A is below 1000"):
        prepare(s, emu.wavelength, fwhm=4.0)


def test_qso_is_refused(emu):
    s = noisy_spectrum(emu, {}, 50, seed=5, meta={"source": "q.fits", "class": "QSO", "subclass": "Non"})
    with pytest.raises(FitInputError, match="q.fits: LAMOST classifies this object as QSO"):
        prepare(s, emu.wavelength)


def test_missing_errors_are_estimated_and_flagged(emu):
    s = noisy_spectrum(emu, {}, 40, seed=6)
    s.ivar[:] = 0.0
    s.mask[:] = False
    prep = prepare(s, emu.wavelength)
    assert "noise_estimated" in prep.flags
    assert prep.snr == pytest.approx(40, rel=0.25)


def test_default_masks_are_vacuum_and_documented():
    wl = np.array([6870.0, 7600.0, 7667.0, 5891.6, 5782.1, 6563.0, 5000.0])
    m = user_mask(wl)
    assert m.tolist() == [True, True, True, True, True, False, False]
    assert not user_mask(wl, "none").any()
    assert user_mask(wl, ["dib"]).tolist() == [False, False, False, False, True, False, False]
    for name, (group, lo, hi, source) in DEFAULT_MASKS.items():
        assert lo < hi and source and group in ("telluric", "interstellar", "dib"), name


@pytest.mark.shared_data
def test_real_lamost_spectra_prepare(lamost_dir):
    from phdlspec_app.io import read_spectrum

    files = sorted(lamost_dir.rglob("spec-55859-F5902_sp01-001*.fits.gz"))
    assert files
    emu = LineDouble()
    for f in files:
        prep = prepare(read_spectrum(f), emu.wavelength)
        assert prep.n_good > 2500 and 5 < prep.snr < 100, f
        assert prep.info["resolution_source"].startswith("header")
    qso = next(lamost_dir.rglob("spec-60591-LN042429N340750BM01_sp01-005.fits.gz"))
    with pytest.raises(FitInputError, match="QSO"):
        prepare(read_spectrum(qso), emu.wavelength)
