"""The Teaching tab: element explorer and physics vs emulator (engine replaced by a fake,
except in the shared-data test that runs the real ab initio engine on a 50 Angstrom window)."""
from __future__ import annotations

import time

import numpy as np
import pytest

pn = pytest.importorskip("panel")

from phdlspec_app import labels as L
from phdlspec_app.app import create_app
from phdlspec_app.app.plot import SpectrumFigure
from phdlspec_app.app.live import LiveModel
from phdlspec_app.app.teaching import DIFFERENTIAL_SOURCE_NAME, PHYSICS_SOURCE_NAME, Teaching

from test_app_double import EmulatorDouble


@pytest.fixture(scope="module")
def emu():
    return EmulatorDouble()


class FakeEngine:
    """Stands in for the Synthesizer: the double's flux minus 0.01 (so a difference shows)."""

    def __init__(self, emu, delay=0.2, fail=False):
        self.emu, self.delay, self.fail, self.windows = emu, delay, fail, []

    def __call__(self, lo, hi):
        self.windows.append((lo, hi))
        return self

    def spectrum(self, labels, resolution=1800.0, wl_out=None):
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("no line list")
        import torch

        flux = np.interp(wl_out, self.emu.wavelength, self.emu(np.asarray(labels)))
        return torch.as_tensor(flux - 0.01)


def run(teaching, timeout=60):
    job = teaching.run_physics()
    assert job is not None
    assert job.wait(timeout)
    teaching.poll()
    return job


def test_element_explorer_shows_differential_spectrum_and_features(emu):
    live = LiveModel(SpectrumFigure.create(), emulator=emu)
    t = Teaching(live)
    assert t.diff_source.name == DIFFERENTIAL_SOURCE_NAME and len(t.diff_source.data["wavelength"]) == 0
    t.element_select.value = "ba_fe"  # the teaching select drives the shared element
    assert live.element == "ba_fe"
    d = t.diff_source.data
    jac = emu.jacobian(live.vector())[0, L.get_label("ba_fe").index]
    np.testing.assert_allclose(d["dflux"], jac, atol=1e-9)
    assert np.nanmax(np.abs(d["delta"])) > 0
    feats = list(t.features.options.values())[1:]  # after the placeholder
    assert t.features.value is None
    assert feats and abs(jac[np.argmin(np.abs(emu.wavelength - feats[0]))]) == pytest.approx(np.abs(jac).max())
    assert "Ba" in t.explainer.object and "strongest at" in t.explainer.object
    t.features.value = feats[1]
    assert live.figure.figure.x_range.start == pytest.approx(feats[1] - 15)
    live.labels.teff = 5000.0
    live.refresh_element()  # what a slider release does
    assert not np.allclose(t.diff_source.data["dflux"], d["dflux"])
    live.element = ""
    assert len(t.diff_source.data["wavelength"]) == 0


def test_physics_vs_emulator_runs_off_the_event_loop(emu):
    live = LiveModel(SpectrumFigure.create(), emulator=emu)
    engine = FakeEngine(emu, delay=0.5)
    t = Teaching(live, synthesizer=engine)
    assert t.physics_source.name == PHYSICS_SOURCE_NAME
    t.window.value = "Na D"
    t0 = time.monotonic()
    job = t.run_physics()
    assert time.monotonic() - t0 < 0.4  # returned before the engine finished
    assert t.run_button.disabled and t.run_physics() is None  # one run at a time
    assert job.wait(30)
    t.poll()
    assert engine.windows == [(5870.0, 5915.0)] and not t.run_button.disabled
    data = t.physics_source.data
    assert len(data["wavelength"]) > 20 and min(data["wavelength"]) >= 5870
    np.testing.assert_allclose(np.asarray(data["emulator"]) - np.asarray(data["physics"]), 0.01, atol=1e-9)
    assert "rms 1.00 %" in t.physics_status.object


def test_physics_windows_are_short_and_failures_are_messages(emu):
    live = LiveModel(SpectrumFigure.create(), emulator=emu)
    t = Teaching(live, synthesizer=FakeEngine(emu, delay=0.0, fail=True))
    t.window.value = "Ca triplet"
    lo, hi = t.window_range()
    assert hi - lo <= 100
    t.window.value = "around the element's strongest feature"
    assert t.run_physics() is None and "Pick an element" in t.physics_status.object
    live.element = "mg_fe"
    lo, hi = t.window_range()
    assert hi - lo == pytest.approx(80)
    run(t)
    assert "failed" in t.physics_status.object and "no line list" in t.physics_status.object
    assert not t.run_button.disabled


def test_teaching_tab_is_in_the_app(emu, tmp_path):
    viewer = create_app(data_dir=tmp_path, emulator=emu, start_demo=True)
    assert viewer.teaching.live is viewer.live
    viewer.live.element = "ca_fe"
    assert len(viewer.teaching.diff_source.data["wavelength"]) == viewer.spectrum.npix


@pytest.mark.shared_data
@pytest.mark.timeout(600)
def test_real_engine_window_next_to_the_emulator(emu, shared_dir):
    live = LiveModel(SpectrumFigure.create(), emulator=emu)
    t = Teaching(live)
    t.window.value = "Mg b"
    job = run(t, timeout=580)
    assert job.state == "done", job.error
    phys = np.asarray(t.physics_source.data["physics"], float)
    assert phys.size > 20 and np.all(np.isfinite(phys)) and 0.2 < phys.min() < 0.95 and phys.max() <= 1.05
