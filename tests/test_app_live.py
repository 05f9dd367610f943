"""The live model, driven through its param state with the emulator test double (no browser)."""
from __future__ import annotations

import numpy as np
import pytest

pn = pytest.importorskip("panel")

from phdlspec_app import labels as L
from phdlspec_app.app import create_app
from phdlspec_app.app.demo import demo_stars
from phdlspec_app.app.live import NAMED_WINDOWS, LiveModel
from phdlspec_app.app.observation import fit_preprocessing, prepare_observation
from phdlspec_app.app.plot import ELEMENT_SOURCE_NAME, MODEL_SOURCE_NAME, SpectrumFigure
from phdlspec_app.io import Spectrum, read_spectrum

from test_app_double import EmulatorDouble


@pytest.fixture(scope="module")
def emu():
    return EmulatorDouble()


@pytest.fixture
def live(emu):
    return LiveModel(SpectrumFigure.create(), emulator=emu)


def demo_spectrum(emu, **labels):
    """A noisy spectrum made by the double itself, marked simulated with its true labels."""
    vec = L.to_vector(labels)
    wl = emu.wavelength
    rng = np.random.default_rng(0)
    flux = emu(vec) + rng.normal(0, 0.02, wl.size)
    meta = {"simulated": True, "true_labels": L.to_dict(vec), "class": "STAR"}
    return Spectrum(wl, flux, np.full(wl.size, 2500.0), np.zeros(wl.size, bool), meta)


def test_one_slider_per_label_with_schema_ranges_units_and_groups(live):
    assert list(live.sliders) == L.label_names()
    for lab in L.LABELS:
        s = live.sliders[lab.name]
        assert (s.start, s.end) == (lab.lo, lab.hi)
        # both widgets stop at the physical range: the number cannot be typed beyond it
        assert (s.slider.start, s.slider.end, s.number.start, s.number.end) == (lab.lo, lab.hi, lab.lo, lab.hi)
        assert s.value == lab.default and s.step == lab.step == s.slider.step
        assert f"({lab.unit})" in s.label
    groups = live.slider_groups().panes
    assert [c.name.split(" (")[0] for c in groups] == list(L.GROUPS)
    assert sum(len(c.objects) for c in groups) == 32
    assert live.sliders["mg_fe"].label == "[Mg/Fe] (dex)" and live.sliders["teff"].label == "Teff (K)"


def test_model_source_is_updated_in_place_on_label_change(live, emu):
    src = live.layers.source
    assert src.name == MODEL_SOURCE_NAME
    before = np.array(src.data["model"], copy=True)
    assert before.shape == emu.wavelength.shape
    live.labels.teff = 5000.0
    after = np.asarray(src.data["model"])
    assert live.layers.source is src  # same object: patched, not replaced
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(after, emu(live.vector()), atol=1e-6)


def test_slider_widget_drives_labels_and_back(live):
    live.sliders["fe_h"].slider.value = -1.0  # a drag
    assert live.labels.fe_h == -1.0 and live.sliders["fe_h"].number.value == -1.0
    live.sliders["fe_h"].number.value = -0.7  # a typed number
    assert live.labels.fe_h == -0.7 and live.sliders["fe_h"].slider.value == -0.7
    live.set_labels({"[Mg/Fe]": 0.4, "TEFF": 6000, "not_a_label": 3})
    assert live.sliders["mg_fe"].value == 0.4 and live.sliders["teff"].slider.value == 6000
    assert live.sliders["teff"].number.value == 6000
    live.set_labels({"teff": 1e6})  # clipped to the schema's range
    assert live.labels.teff == L.get_label("teff").hi
    live.reset()
    np.testing.assert_array_equal(live.vector(), L.defaults())


def test_residual_is_what_the_fit_compares(live, emu):
    prepare = fit_preprocessing()
    spec = demo_spectrum(emu, teff=5500, fe_h=-0.5)
    assert prepare_observation(spec).normalization == "file"  # no model: shown as it is
    obs = live.prepare(spec)
    assert obs.normalization == "fitting" and "pseudo-continuum" in obs.note
    live.set_observation(obs)
    live.set_labels(spec.meta["true_labels"])
    data = live.layers.source.data
    prep = prepare(spec, emu.wavelength)
    expected_model = prep.model_observable(emu(live.vector()))
    np.testing.assert_allclose(np.asarray(data["model"], float), expected_model, atol=1e-5)
    good = prep.good
    np.testing.assert_allclose(np.asarray(data["residual"], float)[good], (prep.y - expected_model)[good], atol=1e-5)
    assert np.isnan(np.asarray(data["residual"], float)[~good]).all()
    assert np.nanstd(data["residual"]) == pytest.approx(0.02, rel=0.2)


def test_live_chi2_is_the_fits_data_chi2_with_the_emulator_error(emu):
    """The readout under the residual is the fit's own chi^2 (Likelihood.data_chi2 on the
    Prepared spectrum with the model error added), while the error bars stay the data's."""
    from phdlspec_app.fitting.likelihood import Likelihood

    with_error = EmulatorDouble()
    with_error.model_error = np.full(emu.wavelength.size, 0.02)  # as large as the noise
    live = LiveModel(SpectrumFigure.create(), emulator=with_error)
    spec = demo_spectrum(emu, teff=5400, fe_h=-0.3)
    live.set_observation(live.prepare(spec))
    live.set_labels({"teff": 5600, "fe_h": -0.1})  # not the truth: the chi2 is well above 1
    prep = fit_preprocessing()(spec, emu.wavelength)
    lik = Likelihood(with_error, prep.with_model_error(with_error.model_error), free=[0], base=live.vector())
    expected = lik.data_chi2(prep.model_observable(with_error(live.vector())))
    assert live.chi2 == pytest.approx(expected, rel=1e-4)
    assert live.chi2_pixels == prep.n_good
    assert live.quality_pane.visible and "emulator's error spectrum" in live.quality_pane.object
    np.testing.assert_allclose(live.observation.sigma[prep.good], 1 / np.sqrt(prep.ivar_y[prep.good]), rtol=1e-6)

    # without the error term the same labels give about twice the chi2 (noise = model error)
    plain = LiveModel(SpectrumFigure.create(), emulator=emu)
    plain.set_observation(plain.prepare(spec))
    plain.set_labels({"teff": 5600, "fe_h": -0.1})
    assert plain.chi2 / live.chi2 == pytest.approx(2.0, rel=0.05)
    assert "emulator" not in plain.quality_pane.object

    plain.set_observation(None)  # nothing to compare with: no readout
    assert plain.chi2 is None and not plain.quality_pane.visible


def test_live_chi2_includes_the_correlated_model_error_as_the_fit_does(emu):
    from phdlspec_app.fitting.likelihood import Likelihood

    corr = EmulatorDouble()
    P = emu.wavelength.size
    corr.model_error = np.full(P, 0.02)
    corr.model_error_rest = np.full(P, 0.01)
    # the observation carries an error of the model's along one basis vector: chi2 must fall a lot
    pattern = 0.05 * np.sin(np.arange(P) / 2.0)
    corr.model_error_basis = np.stack([pattern, *[0.015 * np.sin(np.arange(P) / (4.0 + k)) for k in range(2)]])
    live = LiveModel(SpectrumFigure.create(), emulator=corr)
    spec = demo_spectrum(emu, teff=5400, fe_h=-0.3)
    spec.flux[:] = spec.flux + pattern
    live.set_observation(live.prepare(spec))
    live.set_labels({"teff": 5600, "fe_h": -0.1})   # set_labels re-centres the model error here
    prep = fit_preprocessing()(spec, emu.wavelength).with_model_error(corr.model_error_rest, corr.model_error_basis)
    lik = Likelihood(corr, prep, np.arange(32), live.vector())
    assert lik.model_error_varies and lik._A is not None
    expected = lik.data_chi2(prep.model_observable(corr(live.vector())))
    assert live.chi2 == pytest.approx(expected, rel=1e-4)
    assert "correlated part" in live.quality_pane.object
    diag_only = Likelihood(corr, fit_preprocessing()(spec, emu.wavelength).with_model_error(corr.model_error_rest),
                           np.arange(32), live.vector())
    assert live.chi2 < 0.5 * diag_only.data_chi2(prep.model_observable(corr(live.vector())))


def test_spectrum_the_fitter_refuses_is_still_shown(live, emu):
    spec = demo_spectrum(emu)
    spec.meta.update(simulated=False, **{"class": "QSO"})
    obs = live.prepare(spec)
    assert obs.normalization == "file" and "QSO" in obs.note
    live.set_observation(obs)
    assert len(live.layers.source.data["model"]) == spec.npix


def test_element_selection_shades_sensitive_pixels_and_overlays_plus_minus(live, emu):
    src = live.layers.element_source
    assert src.name == ELEMENT_SOURCE_NAME and len(src.data["wavelength"]) == 0
    live.element = "mg_fe"
    shade = np.asarray(src.data["shade_hi"], float)
    frac = np.isfinite(shade).mean()
    assert 0 < frac < 0.3 and frac == pytest.approx(live.sensitive_fraction())
    plus, minus = np.asarray(src.data["plus"]), np.asarray(src.data["minus"])
    model = np.asarray(live.layers.source.data["model"])
    sens = np.isfinite(shade)
    # more Mg = deeper Mg lines: the +0.2 dex model is below the model in the sensitive pixels
    assert np.mean(plus[sens] - model[sens]) < 0 < np.mean(minus[sens] - model[sens])
    # moving a slider moves the +/-0.2 dex overlays too
    live.labels.teff = 5200.0
    assert not np.allclose(np.asarray(src.data["plus"]), plus)
    win = live.strongest_window()
    assert win is not None and win[1] - win[0] == pytest.approx(60.0)
    live.zoom_strongest()
    assert live.figure.figure.x_range.start == pytest.approx(win[0])
    live.element = ""
    assert len(src.data["wavelength"]) == 0 and live.strongest_button.disabled


def test_out_of_domain_warning(live):
    assert live.domain_warning == "" and not live.domain_alert.visible
    live.labels.teff = 7800.0
    assert "Teff" in live.domain_warning and live.domain_alert.visible
    live.labels.teff = 6000.0
    assert live.domain_warning == "" and not live.domain_alert.visible


def test_quick_zoom_sets_shared_x_range(live):
    fig, res = live.figure.figure, live.layers.residual_figure
    assert res.x_range is fig.x_range  # linked panels
    for name, (lo, hi) in NAMED_WINDOWS.items():
        live.zoom(lo, hi)
        assert (fig.x_range.start, fig.x_range.end) == (lo, hi), name
        assert fig.y_range.start < fig.y_range.end
    live.zoom_full()
    assert fig.x_range.end - fig.x_range.start > 5000


def test_best_fit_and_true_label_buttons(live):
    assert live.best_fit_button.disabled and not live.truth_button.visible
    live.best_fit = {"teff": 4800.0, "logg": 2.5}
    assert not live.best_fit_button.disabled
    live.copy_best_fit()
    assert (live.labels.teff, live.labels.logg) == (4800.0, 2.5)
    live.true_labels = {"teff": 6100.0}
    assert live.truth_button.visible


def test_no_emulator_gives_a_message_and_disabled_sliders():
    live = LiveModel(SpectrumFigure.create(), emulator=None)
    assert live.emulator_message and live.model_alert.visible
    assert all(s.disabled for s in live.sliders.values())
    live.labels.teff = 5000.0  # nothing to evaluate, nothing breaks
    assert len(live.layers.source.data["model"]) == 0


def test_emulator_failure_is_contained(emu):
    class Broken(EmulatorDouble):
        def __call__(self, labels):
            raise RuntimeError("boom")

    live = LiveModel(SpectrumFigure.create(), emulator=Broken())
    assert "boom" in live.emulator_message and live.model_alert.visible


def test_display_continuum_for_unnormalized_counts(emu):
    spec = demo_spectrum(emu)
    counts = Spectrum(spec.wavelength, spec.flux * 3000 * (1 + spec.wavelength / 1e4), spec.ivar / 3000**2,
                      spec.mask, {"class": "STAR"})
    obs = prepare_observation(counts)
    assert obs.normalization == "display" and "display-only" in obs.note
    assert 0.9 < np.nanmedian(obs.flux) < 1.05


def test_demo_stars_are_committed_simulated_and_labelled():
    demos = demo_stars()
    assert demos, "assets/demo/*.fits missing: run python -m phdlspec_app.app.make_demo"
    for title, path in demos.items():
        assert "simulated" in title and path.stat().st_size < 1_000_000
        spec = read_spectrum(path)
        assert spec.npix == 3909 and spec.meta["simulated"] is True
        assert set(spec.meta["true_labels"]) == set(L.label_names())
        assert "SIMULATED" in spec.meta["designation"]
        from astropy.io import fits

        assert fits.getheader(path)["SIMULATE"] is True


def test_app_opens_on_a_demo_star_with_the_model_on_its_pixels(tmp_path, emu):
    viewer = create_app(data_dir=tmp_path, emulator=emu, start_demo=True)
    assert viewer.spectrum is not None and viewer.spectrum.meta["simulated"]
    assert viewer.source_label.startswith("demo/")
    assert viewer.live.true_labels and viewer.live.truth_button.visible
    model = viewer.live.layers.source.data
    assert len(model["model"]) == viewer.spectrum.npix
    viewer.live.truth_button.clicks += 1
    assert viewer.live.labels.teff == viewer.spectrum.meta["true_labels"]["teff"]
    # a failed load clears the observation but the model stays on the emulator grid
    viewer.load_bytes(b"junk", "junk.fits")
    assert viewer.error and not viewer.live.truth_button.visible
    assert np.isnan(np.asarray(viewer.live.layers.source.data["residual"], float)).all()
