"""The dashboard's spectrum view, driven through its param state (no browser).

Tests without the ``shared_data`` mark use synthetic spectra (the reader is replaced), so
they check the view's own logic; the ``shared_data`` ones read real LAMOST files through the
``shared_dir`` / ``lamost_dir`` fixtures of conftest.py.
"""
from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pn = pytest.importorskip("panel")

from phdlspec_app import paths
from phdlspec_app.app import create_app
from phdlspec_app.app import viewer as viewer_mod
from phdlspec_app.app.files import list_spectrum_files
from phdlspec_app.app.metadata import summary_rows
from phdlspec_app.app.plot import MASKED_SOURCE_NAME, SPECTRUM_SOURCE_NAME, robust_range
from phdlspec_app.io import Spectrum, SpectrumFormatError, read_spectrum

DR9_STAR = "cmost/spec-55859-F5902_sp01-001.fits.gz"
QSO = "cmost/spec-60591-LN042429N340750BM01_sp01-005.fits.gz"
OLD_STAR = "learninglamost/spec-55862-B6212_sp06-003.fits"  # DR1-era image layout, has masked pixels


# ---------------------------------------------------------------- helpers / fixtures
def synthetic_spectrum(n=500, masked=(10, 11, 12, 300), cls="STAR", ivar_zero=(50,)):
    """A flat spectrum at 4000..9000 Angstrom with a few masked and zero-ivar pixels."""
    wl = np.linspace(4000.0, 9000.0, n)
    flux = 1.0 + 0.1 * np.sin(wl / 50.0)
    ivar = np.full(n, 400.0)  # sigma = 0.05
    ivar[list(ivar_zero)] = 0.0
    mask = np.zeros(n, bool)
    mask[list(masked)] = True
    mask[list(ivar_zero)] = True
    meta = {"source": "synthetic.fits", "layout": "test", "class": cls, "subclass": "G2",
            "obsid": 42, "ra": 10.5, "dec": -3.25, "snr": {"g": 20.0, "r": 30.0}}
    return Spectrum(wl, flux, ivar, mask, meta)


@pytest.fixture(autouse=True)
def no_emulator(monkeypatch):
    """These tests are about the spectrum view: no live model, so spectra are shown on their
    own pixels (test_app_live.py covers the model, with the emulator test double)."""
    from phdlspec_app.app import live

    monkeypatch.setattr(live, "default_emulator", lambda: (None, "no emulator in these tests"))


@pytest.fixture
def fake_reader(monkeypatch):
    """Replace the viewer's reader; the test sets ``calls['result']`` (a Spectrum or an exception)."""
    calls = {"result": synthetic_spectrum(), "args": []}

    def read(src, name=None):
        calls["args"].append((src, name))
        if isinstance(calls["result"], BaseException):
            raise calls["result"]
        return calls["result"]

    monkeypatch.setattr(viewer_mod, "read_spectrum", read)
    return calls


@pytest.fixture
def app(shared_dir):
    return create_app(data_dir=shared_dir)


def masked_count(source):
    return len(source.data["wavelength"])


# ---------------------------------------------------------------- file listing
def test_list_spectrum_files_filters_and_recurses(tmp_path):
    for rel in ["a/spec-1.fits.gz", "a/b/spec-2.FITS", "c.fit", "d.csv", "e.txt", "f.ecsv",
                "g.dat", "INVENTORY.csv", "notes.md", "h.fits.bz2", ".hidden.fits", ".git/x.fits"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert list_spectrum_files(tmp_path) == [
        "a/b/spec-2.FITS", "a/spec-1.fits.gz", "c.fit", "d.csv", "e.txt", "f.ecsv", "g.dat"]


def test_no_data_directory_disables_picker(monkeypatch):
    monkeypatch.setattr(paths, "data_dir", lambda explicit=None: None)
    viewer = create_app()
    assert viewer.picker.disabled
    assert viewer.root is None and viewer.files == []
    assert "No LAMOST data folder" in viewer.picker_note.object
    assert "PHDLSPEC_DATA" in viewer.picker_note.object  # tells the user how to fix it
    # Uploads still work without a data directory.
    assert viewer.upload.disabled is False


def test_data_directory_without_lamost_folder(tmp_path):
    viewer = create_app(data_dir=tmp_path)
    assert viewer.picker.disabled
    assert "missing" in viewer.picker_note.object


# ---------------------------------------------------------------- viewer logic, synthetic spectra
def test_synthetic_spectrum_fills_sources_in_place(tmp_path, fake_reader):
    viewer = create_app(data_dir=tmp_path)
    fig, src, msrc = viewer.plot.figure, viewer.plot.source, viewer.plot.masked_source
    assert src.name == SPECTRUM_SOURCE_NAME and msrc.name == MASKED_SOURCE_NAME

    spec = viewer.load_path(tmp_path / "synthetic.fits")
    assert spec is fake_reader["result"] and viewer.spectrum is spec
    assert viewer.error == "" and viewer.warning == ""
    assert len(src.data["wavelength"]) == 500
    assert masked_count(msrc) == 5  # 4 flagged + 1 with ivar = 0
    # The line and the band break at masked pixels; the band is flux +- 1 sigma elsewhere.
    assert np.isnan(src.data["flux_good"][10]) and np.isnan(src.data["lower"][50])
    np.testing.assert_allclose(src.data["upper"][0] - src.data["lower"][0], 0.1)
    # Same figure and sources after a second load (updated in place, not rebuilt).
    viewer.load_path(tmp_path / "synthetic.fits")
    assert viewer.plot.figure is fig and viewer.plot.source is src and viewer.plot.masked_source is msrc
    assert fig.x_range.start < 4000 and fig.x_range.end > 9000
    assert fig.y_range.start < 0.85 and fig.y_range.end > 1.15
    assert "synthetic.fits" in viewer.status and "500 pixels" in viewer.status


def test_picking_a_file_reads_it_once(tmp_path, fake_reader):
    lamost = tmp_path / "spectra" / "lamost"
    (lamost / "sub").mkdir(parents=True)
    (lamost / "sub" / "a.fits").write_bytes(b"")
    viewer = create_app(data_dir=tmp_path)
    assert viewer.files == ["sub/a.fits"] and not viewer.picker.disabled
    viewer.picker.value = "sub/a.fits"
    assert [Path(src).name for src, _ in fake_reader["args"]] == ["a.fits"]
    assert viewer.source_label == "sub/a.fits"


def test_non_star_class_warns_but_plots(tmp_path, fake_reader):
    fake_reader["result"] = synthetic_spectrum(cls="QSO")
    viewer = create_app(data_dir=tmp_path)
    assert viewer.load_path(tmp_path / "q.fits") is not None
    assert "QSO" in viewer.warning and viewer.warning_alert.visible
    assert len(viewer.plot.source.data["wavelength"]) == 500


def test_format_error_is_shown_not_raised(tmp_path, fake_reader):
    viewer = create_app(data_dir=tmp_path)
    viewer.load_path(tmp_path / "good.fits")
    fake_reader["result"] = SpectrumFormatError("bad.fits", "no flux column")
    assert viewer.load_bytes(b"xx", "bad.fits") is None
    assert viewer.error == "bad.fits: no flux column"
    assert viewer.error_alert.visible and viewer.error_alert.object == viewer.error
    assert viewer.spectrum is None and len(viewer.plot.source.data["wavelength"]) == 0
    assert fake_reader["args"][-1] == (b"xx", "bad.fits")  # the name reaches the reader


def test_file_names_are_shown_literally_not_as_markup(tmp_path, fake_reader):
    fake_reader["result"] = SpectrumFormatError("my_<b>x</b>_*1*.fits", "no flux column")
    viewer = create_app(data_dir=tmp_path)
    viewer.load_bytes(b"xx", "my_<b>x</b>_*1*.fits")
    assert viewer.error == "my_<b>x</b>_*1*.fits: no flux column"  # the state keeps the raw text
    assert "<b>" not in viewer.error_alert.object and r"\_\<b\>x" in viewer.error_alert.object


def test_unexpected_reader_exception_is_contained(tmp_path, fake_reader):
    fake_reader["result"] = IndexError("index 3 is out of bounds")
    viewer = create_app(data_dir=tmp_path)
    assert viewer.load_bytes(b"xx", "odd.fits") is None
    assert viewer.error.startswith("odd.fits: ") and "IndexError" in viewer.error
    # A good file afterwards clears the error.
    fake_reader["result"] = synthetic_spectrum()
    assert viewer.load_bytes(b"xx", "ok.fits") is not None
    assert viewer.error == "" and not viewer.error_alert.visible


def test_upload_over_limit_is_refused_before_reading(tmp_path, fake_reader):
    viewer = create_app(data_dir=tmp_path)
    big = b"\0" * (viewer_mod.MAX_UPLOAD_BYTES + 1)
    assert viewer.load_bytes(big, "huge.fits") is None
    assert "huge.fits" in viewer.error and "20 MB" in viewer.error
    assert fake_reader["args"] == []  # never parsed


def test_upload_widget_triggers_load(tmp_path, fake_reader):
    viewer = create_app(data_dir=tmp_path)
    fake_reader["result"] = SpectrumFormatError("up.csv", "no wavelength column")
    # The browser sets filename and value together; param batches them the same way.
    viewer.upload.param.update(filename="up.csv", value=b"a,b\n1,2\n")
    assert fake_reader["args"][-1] == (b"a,b\n1,2\n", "up.csv")
    assert "up.csv" in viewer.error


def test_upload_message_states_limit_and_formats(tmp_path):
    viewer = create_app(data_dir=tmp_path)
    text = viewer.upload_note.object
    assert "20 MB" in text
    for suffix in (".fits", ".fits.gz", ".fit", ".csv", ".txt", ".ecsv", ".dat"):
        assert suffix in text
    # The note sits directly above the upload box in the sidebar.
    sidebar = list(viewer.__panel__().sidebar[0])  # one Column: one document root
    assert sidebar.index(viewer.upload_note) + 1 == sidebar.index(viewer.upload)


def test_summary_rows_format_units_and_missing_values():
    rows = dict(summary_rows(synthetic_spectrum().summary()))
    assert rows["RA, Dec (deg)"] == "10.50000, -3.25000"
    assert rows["S/N per band"] == "g 20.0 · r 30.0"
    assert rows["Class / subclass"] == "STAR / G2"
    assert rows["Designation"] == "—"
    assert rows["Wavelength range (Å, vacuum)"] == "4000.0 – 9000.0"


def test_robust_range_ignores_single_spikes():
    values = np.ones(1000)
    values[500] = 1e6
    lo, hi = robust_range(values)
    assert hi < 10 and lo < 1 < hi
    assert robust_range(np.array([np.nan])) is None


def test_layout_template_and_title(tmp_path):
    viewer = create_app(data_dir=tmp_path)
    template = viewer.__panel__()
    assert isinstance(template, pn.template.BootstrapTemplate)
    assert template.title == "PhDLspec"
    assert viewer.__panel__() is template  # one layout per viewer


def test_server_factory_builds_a_fresh_page_per_session(tmp_path):
    from phdlspec_app.app.server import app_factory

    factory = app_factory(tmp_path, spare=False)
    first, second = factory(), factory()
    assert isinstance(first, pn.template.BaseTemplate) and first is not second


def test_spare_pages_hand_each_page_out_once_and_build_the_next_ahead(tmp_path):
    from phdlspec_app.app.server import SparePages, app_factory

    built = []

    def build():
        built.append(object())
        return built[-1]

    pages = SparePages(build, delay_s=0.0)
    first = pages()  # nothing ready: built inline, a spare is scheduled
    deadline = time.monotonic() + 10
    while len(built) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(built) == 2
    second = pages()  # the spare, not a new build ...
    assert second is built[1] and second is not first
    while len(built) < 3 and time.monotonic() < deadline:  # ... and the next spare is on its way
        time.sleep(0.01)
    assert pages() is built[2] and len({id(p) for p in (first, second, built[2])}) == 3
    # primed, the very first visitor also gets a page built before it asked
    built.clear()
    primed = SparePages(build, delay_s=60.0, prime=True)
    while primed._spare is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert primed() is built[0] and len(built) == 1  # the next spare waits its 60 s delay
    # the dashboard's own factory: a method pn.serve calls per session, distinct real pages
    factory = app_factory(tmp_path)
    a, b = factory(), factory()
    assert isinstance(a, pn.template.BaseTemplate) and isinstance(b, pn.template.BaseTemplate) and a is not b


def test_main_module_import_has_no_side_effects(monkeypatch):
    import phdlspec_app.app as app_pkg

    def must_not_run(*args, **kwargs):
        raise AssertionError("importing main.py built the app")

    monkeypatch.setattr(app_pkg, "create_app", must_not_run)
    monkeypatch.delitem(sys.modules, "phdlspec_app.app.main", raising=False)
    importlib.import_module("phdlspec_app.app.main")


# ---------------------------------------------------------------- real LAMOST files
@pytest.mark.shared_data
def test_real_dr9_star(app, lamost_dir):
    expected = read_spectrum(lamost_dir / DR9_STAR)
    spec = app.load_path(DR9_STAR)
    assert app.error == "" and app.warning == ""
    assert spec.npix == expected.npix and 3900 <= spec.npix <= 3910
    assert len(app.plot.source.data["wavelength"]) == spec.npix
    assert masked_count(app.plot.masked_source) == int(expected.mask.sum())
    np.testing.assert_allclose(app.plot.source.data["wavelength"], expected.wavelength)
    assert 3600 < app.plot.figure.x_range.start < 3750 and 9000 < app.plot.figure.x_range.end < 9200
    table = app.meta_table.object
    for text in ("101001", "LAMOST J220848.54-020324.3", "LAMOST DR9", "STAR / G7",
                 "332.20227", "-2.05677", "g 12.2", "r 27.2", "spec-55859-F5902_sp01-001.fits.gz"):
        assert text in table, text
    assert app.source_label == DR9_STAR and viewer_mod.md_escape(DR9_STAR) in app.status


@pytest.mark.shared_data
def test_real_spectrum_with_masked_pixels(app, lamost_dir):
    spec = app.load_path(lamost_dir / OLD_STAR)  # absolute path works too
    assert spec is not None and app.error == ""
    n_masked = int(spec.mask.sum())
    assert n_masked > 0
    assert masked_count(app.plot.masked_source) == n_masked
    assert np.isnan(app.plot.source.data["flux_good"][spec.mask]).all()
    assert f"{n_masked} masked" in app.status
    assert app.source_label == OLD_STAR  # shown relative to the data folder
    frac = f"{100 * spec.masked_fraction:.2f} %"
    assert frac in app.meta_table.object


@pytest.mark.shared_data
def test_real_qso_gets_warning(app):
    spec = app.load_path(QSO)
    assert spec is not None and app.error == ""
    assert "QSO" in app.warning and "not STAR" in app.warning
    assert app.warning_alert.visible
    assert len(app.plot.source.data["wavelength"]) == spec.npix
    assert "QSO" in app.meta_table.object


@pytest.mark.shared_data
def test_picker_lists_real_files_and_loads_on_select(app):
    assert not app.picker.disabled
    assert len(app.files) >= 200 and DR9_STAR in app.files and OLD_STAR in app.files
    assert "INVENTORY.csv" not in app.files
    app.picker.value = QSO
    assert app.spectrum is not None and app.source_label == QSO
    # load_path keeps the picker in step (without loading twice) ...
    app.load_path(DR9_STAR)
    assert app.picker.value == DR9_STAR and app.source_label == DR9_STAR
    # ... and an upload clears it, so the same file can be picked again afterwards.
    app.load_bytes(b"junk", "junk.txt")
    assert app.picker.value not in app.files
    app.picker.value = DR9_STAR
    assert app.source_label == DR9_STAR and app.error == ""


@pytest.mark.shared_data
def test_upload_real_bytes_then_garbage_then_real_again(app, lamost_dir):
    data = (lamost_dir / DR9_STAR).read_bytes()
    spec = app.load_bytes(data, "spec-55859-F5902_sp01-001.fits.gz")
    assert spec is not None and app.error == ""
    assert len(app.plot.source.data["wavelength"]) == spec.npix

    assert app.load_bytes(b"this is not a spectrum\x00\x01", "garbage.fits") is None
    assert "garbage.fits" in app.error and app.error_alert.visible
    assert "Traceback" not in app.error
    assert app.spectrum is None and len(app.plot.source.data["wavelength"]) == 0

    assert app.load_bytes(data, "again.fits.gz") is not None
    assert app.error == "" and not app.error_alert.visible


@pytest.mark.shared_data
def test_truncated_fits_is_an_error(app, lamost_dir):
    data = (lamost_dir / OLD_STAR).read_bytes()[:5000]
    assert app.load_bytes(data, "cut.fits") is None
    assert "cut.fits" in app.error
    assert app.load_path(DR9_STAR) is not None  # the viewer is still usable


@pytest.mark.shared_data
def test_capped_pilot_snr_is_shown_as_a_lower_limit(lamost_dir):
    from phdlspec_app.app.metadata import summary_rows
    from phdlspec_app.io import read_spectrum

    spec = read_spectrum(lamost_dir / "learninglamost" / "spec-55862-B6212_sp06-003.fits")
    rows = dict(summary_rows(spec.summary()))
    assert rows["S/N per band"] == "u 14.0 · g 71.4 · r ≥99.0 · i ≥99.0 · z ≥99.0"


def test_lazy_tabs_render_a_tab_when_first_opened_and_keep_it():
    from phdlspec_app.app.lazytabs import LazyTabs

    panes = [pn.pane.Markdown(f"tab {i}", name=f"T{i}") for i in range(3)]
    lazy = LazyTabs(*panes)
    tabs = lazy.__panel__()
    assert isinstance(tabs, pn.Tabs) and not tabs.dynamic and list(tabs._names) == ["T0", "T1", "T2"]
    assert [list(slot.objects) for slot in tabs.objects] == [[panes[0]], [], []]
    lazy.active = 2  # the browser's tab click sets Tabs.active
    assert tabs.objects[2].objects == [panes[2]] and tabs.objects[1].objects == []
    lazy.active = 0
    assert tabs.objects[2].objects == [panes[2]] and lazy.opened == {0, 2}  # kept, not dropped
