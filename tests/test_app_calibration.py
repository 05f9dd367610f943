"""The Calibration tab: load a calibration file (ECSV/JSON, upload or path), show its
provenance, summary and trend plots, apply it to the session's fit (raw and calibrated side
by side, errors propagated), and turn bad files into messages."""
from __future__ import annotations

import numpy as np
import pytest

pn = pytest.importorskip("panel")

from phdlspec_app.app import create_app
from phdlspec_app.calibration import Calibration

from test_app_double import EmulatorDouble, fake_fit
from test_calibration import full_calibration


@pytest.fixture(scope="module")
def emu():
    return EmulatorDouble()


@pytest.fixture(scope="module")
def calibration_files(tmp_path_factory):
    """One calibration (wide binaries + cluster on [Mg/Fe] and [Ca/Fe], known injected trends),
    saved in both formats."""
    d = tmp_path_factory.mktemp("cal")
    _, cal = full_calibration()
    return cal, cal.save(d / "cal.ecsv"), cal.save(d / "cal.json")


def fitted_viewer(emu, tmp_path):
    viewer = create_app(data_dir=tmp_path, emulator=emu, start_demo=True, fit=fake_fit(0.1))
    viewer.fitter.start()
    assert viewer.fitter.job.wait(60)
    viewer.fitter.poll()
    assert viewer.fitter.result is not None
    return viewer


@pytest.mark.parametrize("which", [1, 2])
def test_upload_shows_provenance_summary_and_trends(emu, tmp_path, calibration_files, which):
    cal, *paths = calibration_files
    viewer = create_app(data_dir=tmp_path, emulator=emu, start_demo=True, fit=fake_fit(0.1))
    tab = viewer.calibration
    path = paths[which - 1]
    got = tab.load_bytes(path.read_bytes(), path.name)
    assert isinstance(got, Calibration) and tab.error == ""
    assert path.name in tab.status and "wide binaries" in tab.status and "cluster" in tab.status
    assert cal.provenance["id"] in tab.provenance.object
    # the summary's scatter columns are the calibration's own numbers
    s = cal.summary()
    for r in s:
        assert f"{float(r['scatter_before']):.4f}" in tab.summary.object
    assert tab.summary.object.count("<tr") == 1 + len(s)
    assert set(tab.label.options.values()) == set(cal.labels)
    assert tab.figure.object[:4] == b"\x89PNG"
    first = tab.figure.object
    tab.label.value = [n for n in cal.labels if n != tab.label.value][0]
    assert tab.figure.object[:4] == b"\x89PNG" and tab.figure.object != first
    # no fit yet: applying says why
    assert tab.apply() is None and "Run a fit first" in tab.error


def test_apply_to_the_fit_keeps_raw_and_calibrated_side_by_side(emu, tmp_path, calibration_files):
    cal, ecsv, _ = calibration_files
    viewer = fitted_viewer(emu, tmp_path)
    tab = viewer.calibration
    tab.load_path(ecsv)            # a fit exists: applied at once
    row = tab.calibrated
    expected = cal.apply(viewer.fitter.result.to_row())
    # labels whose every method kept no term (the CV gate) are left as they are
    corrected = {c.label for c in cal.corrections if c.trend.coef.size}
    assert corrected and "mg_fe" in corrected
    for name in cal.labels:
        assert row[f"{name}_raw"] == pytest.approx(viewer.fitter.result.labels[name])
        assert row[name] == pytest.approx(expected[name])
        if name in corrected:
            assert row[name] != pytest.approx(row[f"{name}_raw"], abs=1e-6)   # a real correction
        else:
            assert row[name] == pytest.approx(row[f"{name}_raw"])
        assert row[f"{name}_err"] >= row[f"{name}_err_raw"]                # its error is added
        assert f"{row[name] - row[f'{name}_raw']:.3f}" in tab.applied.object
    assert tab.applied.object.count("<tr") == 1 + len(cal.labels)
    data = tab._calibrated_ecsv().getvalue().decode()
    assert "mg_fe_raw" in data and "calib_flags" in data
    # a new fit re-applies the loaded calibration by itself
    tab.applied.object = ""
    viewer.fitter.start()
    assert viewer.fitter.job.wait(60)
    viewer.fitter.poll()
    assert tab.applied.object.count("<tr") == 1 + len(cal.labels)


@pytest.mark.parametrize("name, data, expect", [
    ("cal.txt", b"anything", "ends in .ecsv or .json"),
    ("cal.json", b"{not json", "cannot read a calibration"),
    ("cal.json", b'{"format": "something-else"}', "not a PhDLspec calibration"),
    ("cal.ecsv", b"# %ECSV 1.0\n# ---\n# datatype: []\n", "cal.ecsv"),
    ("cal.json", b"x" * 20_000_001, "over the limit"),
])
def test_bad_files_are_messages_naming_the_file(emu, tmp_path, calibration_files, name, data, expect):
    viewer = create_app(data_dir=tmp_path, emulator=emu, start_demo=True, fit=fake_fit(0.1))
    tab = viewer.calibration
    assert tab.load_bytes(data, name) is None
    assert expect in tab.error and name in tab.error
    assert tab.calibration is None and tab.apply_button.disabled
    assert "/tmp" not in tab.error           # the user's file name, not our temporary path
    # a good file afterwards clears the message
    tab.load_path(calibration_files[1])
    assert tab.error == "" and tab.calibration is not None


def test_sessions_have_their_own_calibration(emu, tmp_path, calibration_files):
    a = create_app(data_dir=tmp_path, emulator=emu, start_demo=True, fit=fake_fit(0.1))
    b = create_app(data_dir=tmp_path, emulator=emu, start_demo=True, fit=fake_fit(0.1))
    a.calibration.load_path(calibration_files[1])
    assert a.calibration.calibration is not None and b.calibration.calibration is None
    assert "No calibration loaded" in b.calibration.status_text.object
