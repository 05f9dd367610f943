"""The Fit tab: background fits (pool, progress, cancel), results, diagnostics, exports.

Driven through the FitPanel's state without a browser. Most tests use ``fake_fit`` (the
fitting API's signature and result type, fast); one runs the real ``fit_spectrum`` on the
emulator test double with the quick budget, and one cancels a real fit.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

pn = pytest.importorskip("panel")

from phdlspec_app import labels as L
from phdlspec_app.app import create_app
from phdlspec_app.app.fitjob import FitJob
from phdlspec_app.app.fitpanel import BUDGETS, parse_priors_text

from test_app_double import EmulatorDouble, fake_fit

QUICK = list(BUDGETS)[0]


@pytest.fixture(scope="module")
def emu():
    return EmulatorDouble()


def app_with(emu, tmp_path, fit=None):
    viewer = create_app(data_dir=tmp_path, emulator=emu, start_demo=True, fit=fit)
    assert viewer.spectrum is not None
    return viewer


def finish(panel, timeout=120.0):
    assert panel.job.wait(timeout), f"fit still {panel.job.state} after {timeout} s"
    panel.poll()


def test_parse_priors_text():
    assert parse_priors_text("logg=4.4±0.1; [Fe/H] = -0.5, 0.2\nTEFF=5000+-100") == {
        "logg": (4.4, 0.1), "fe_h": (-0.5, 0.2), "teff": (5000.0, 100.0)}
    assert parse_priors_text("  ") == {}
    with pytest.raises(ValueError, match="NAME=MEAN±SIGMA"):
        parse_priors_text("logg 4.4")
    with pytest.raises(ValueError, match="positive"):
        parse_priors_text("logg=4.4±0")


def test_fit_moves_sliders_and_fills_results(emu, tmp_path):
    viewer = app_with(emu, tmp_path, fit=fake_fit(0.3))
    fp, live = viewer.fitter, viewer.live
    truth = viewer.spectrum.meta["true_labels"]
    live.set_labels({"teff": 5000.0})
    fp.method.value = "CMA-ES + MCMC"
    fp.fix.value = ["vmic"]
    fp.priors.value = "logg=4.4±0.1"
    job = fp.start()
    assert job is not None and fp.fit_button.disabled and not fp.cancel_button.disabled
    assert fp.start() is None  # one fit at a time per session
    finish(fp)
    assert job.state == "done" and job.fix == {"vmic": 1.0} and job.priors == {"logg": (4.4, 0.1)}
    assert job.method == "both" and not fp.fit_button.disabled and fp.cancel_button.disabled
    assert live.labels.teff == truth["teff"] and live.best_fit["teff"] == truth["teff"]
    assert not live.best_fit_button.disabled
    assert "Fit done" in fp.status and "χ²/dof" in fp.status
    assert "[Mg/Fe]" in fp.results_table.object and "unconstrained" in fp.results_table.object
    assert "fixed" in fp.results_table.object
    assert fp.elements_table.object.count("<tr") == 1 + 26
    assert "Cu (unconstrained)" in fp.element_choice.options
    fp.element_choice.value = "mg_fe"
    data = fp.element_source.data
    n_sens = np.isfinite(np.asarray(data["resid"], float)).sum()
    assert 0 < n_sens < len(data["wavelength"])
    assert fp.corner_png.object[:4] == b"\x89PNG" and fp.corr_png.object[:4] == b"\x89PNG"
    # chains: walker traces of the chosen label and the τ history with the N/50 line
    ch = fp.chains
    assert ch.label.value == "teff" and len(ch.trace_source.data["ys"]) == 16
    j = job.result.free_names.index("teff")
    np.testing.assert_allclose(ch.trace_source.data["ys"][3], job.result.mcmc["trace"][:, 3, j])
    assert ch.median_span.visible and ch.median_span.location == truth["teff"]
    np.testing.assert_allclose(ch.tau_source.data["limit"], np.arange(200, 2001, 200) / 50.0)
    ch.label.value = "mg_fe"
    k = job.result.free_names.index("mg_fe")
    np.testing.assert_allclose(ch.trace_source.data["ys"][0], job.result.mcmc["trace"][:, 0, k])
    assert "[Mg/Fe]" in ch.trace_figure.yaxis.axis_label and "converged: yes" in ch.note.object
    # moving the sliders away and copying the best fit back
    live.set_labels({"teff": 6500.0})
    live.copy_best_fit()
    assert live.labels.teff == truth["teff"]


def test_exports_produce_files(emu, tmp_path):
    from astropy.table import Table

    viewer = app_with(emu, tmp_path, fit=fake_fit(0.1))
    fp = viewer.fitter
    buttons = {b.filename: b for b in fp.downloads}
    assert buttons["phdlspec_model.fits"].callback().getvalue()[:6] == b"SIMPLE"  # no fit needed
    assert buttons["phdlspec_fit.ecsv"].callback().getvalue() == b"" and "run a fit" in fp.error
    fp.method.value = "CMA-ES + MCMC"
    fp.start()
    finish(fp)
    fp.error = ""
    ecsv = buttons["phdlspec_fit.ecsv"].callback().getvalue().decode()
    assert "teff" in ecsv and "mg_fe_err" in ecsv.replace("mg_fe_err_lo", "mg_fe_err")
    assert buttons["phdlspec_fit.json"].callback().getvalue().startswith(b"[")
    assert buttons["phdlspec_fit.fits"].callback().getvalue()[:6] == b"SIMPLE"
    chain = Table.read(buttons["phdlspec_chain.ecsv"].callback().getvalue().decode(), format="ascii.ecsv")
    assert len(chain) == 500 and "teff" in chain.colnames
    for name in ("phdlspec_fit.png", "phdlspec_corner.png"):
        assert buttons[name].callback().getvalue()[:4] == b"\x89PNG", name
    assert fp.error == ""


def test_cancel_stops_a_fake_fit_and_leaves_sliders(emu, tmp_path):
    viewer = app_with(emu, tmp_path, fit=fake_fit(30.0, steps=300))
    fp = viewer.fitter
    before = viewer.live.vector()
    job = fp.start()
    deadline = time.monotonic() + 20
    while job.state != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    fp.poll()
    assert "Fitting" in fp.status
    t0 = time.monotonic()
    fp.cancel()
    finish(fp, timeout=10)
    assert job.state == "cancelled" and time.monotonic() - t0 < 5
    assert "cancelled" in fp.status and fp.error == ""
    np.testing.assert_array_equal(viewer.live.vector(), before)


def test_refusals_and_failures_are_messages(emu, tmp_path):
    viewer = app_with(emu, tmp_path, fit=fake_fit(0.05))
    fp = viewer.fitter
    fp.priors.value = "garbage"
    assert fp.start() is None and "cannot read prior" in fp.error and fp.error_alert.visible
    fp.priors.value = ""

    def broken(*args, **kwargs):
        raise RuntimeError("the fitter exploded")

    fp._fit = broken
    fp.start()
    finish(fp)
    assert fp.job.state == "failed" and "exploded" in fp.error and not fp.fit_button.disabled
    viewer.load_bytes(b"junk", "junk.fits")
    assert fp.start() is None and "Open a spectrum" in fp.error
    nomodel = create_app(data_dir=tmp_path, emulator=None, start_demo=True)
    assert nomodel.fitter.start() is None and "No emulator" in nomodel.fitter.error


def test_jobs_queue_in_a_pool_of_one(emu, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    spec = create_app(data_dir=tmp_path, emulator=emu, start_demo=True).spectrum
    pool = ThreadPoolExecutor(max_workers=1)
    a = FitJob(spec, emu, fit=fake_fit(1.0)).submit(pool)
    b = FitJob(spec, emu, fit=fake_fit(0.1)).submit(pool)
    time.sleep(0.3)
    assert a.state == "running" and b.state == "queued"
    b.cancel()  # cancelled while queued: never runs
    assert a.wait(20) and b.wait(20)
    assert a.state == "done" and b.state == "cancelled" and b.started is None
    pool.shutdown()


def test_real_fit_on_the_double_completes(emu, tmp_path):
    """The real fitting.fit_spectrum, quick budget, in the pool; sliders move to its result."""
    viewer = app_with(emu, tmp_path)  # no fake: phdlspec_app.fitting.fit_spectrum
    fp = viewer.fitter
    fp.budget.value = QUICK
    job = fp.start()
    assert job.in_process  # the real fitter runs in its own process, off the server's GIL
    live_chi2 = []
    deadline = time.monotonic() + 280
    while job.running and time.monotonic() < deadline:
        fp.poll()
        if job.stage in ("cmaes", "polish") and job.chi2 is not None:
            live_chi2.append((job.chi2, fp.status))
        time.sleep(0.2)
    finish(fp, timeout=30)
    assert job.state == "done", job.error
    # the process relays the fitter's current chi2, and the status line shows it
    assert live_chi2 and all(np.isfinite(c) for c, _ in live_chi2)
    assert any("χ²" in status for _, status in live_chi2)
    assert live_chi2[-1][0] >= job.result.chi2 - 1e-6
    assert "No chain" in fp.chains.note.object and fp.chains.trace_source.data["ys"] == []
    r = fp.result
    assert set(r.labels) == set(L.label_names()) and np.isfinite(r.chi2)
    np.testing.assert_allclose(viewer.live.vector(), np.clip(L.to_vector(r.labels),
                                                             [lab.lo for lab in L.LABELS], [lab.hi for lab in L.LABELS]))


def test_cancel_stops_a_real_fit_promptly(emu, tmp_path):
    viewer = app_with(emu, tmp_path)
    fp = viewer.fitter
    job = fp.start()
    deadline = time.monotonic() + 60
    while job.stage in ("queued", "prepare") and time.monotonic() < deadline:
        time.sleep(0.1)
    t0 = time.monotonic()
    fp.cancel()
    finish(fp, timeout=60)
    assert job.state == "cancelled", (job.state, job.error)
    assert time.monotonic() - t0 < 15
