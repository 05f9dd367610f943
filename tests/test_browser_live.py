"""The live model in a real Chromium: demo star on start, sliders, element layers, sessions.

Needs no shared data: the server opens on an embedded demo star and uses the emulator test
double (``tests/test_app_double.py``). Skipped without /usr/bin/chromium unless
``PHDLSPEC_REQUIRE_BROWSER=1``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

pn = pytest.importorskip("panel")
sync_api = pytest.importorskip("playwright.sync_api")

from phdlspec_app.app.plot import ELEMENT_SOURCE_NAME, MODEL_SOURCE_NAME, SPECTRUM_SOURCE_NAME
from test_app_double import EmulatorDouble, fake_fit
from test_browser import launch_browser, serve_dashboard, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "screenshots" / "live_model.png"

# [rows of the spectrum, sum of the model column, number of shaded pixels] seen by the browser
STATE_JS = f"""() => {{
  const doc = window.Bokeh && Bokeh.documents && Bokeh.documents[0];
  if (!doc) return null;
  const spec = doc.get_model_by_name("{SPECTRUM_SOURCE_NAME}");
  const model = doc.get_model_by_name("{MODEL_SOURCE_NAME}");
  const elem = doc.get_model_by_name("{ELEMENT_SOURCE_NAME}");
  if (!spec || !model || !elem) return null;
  let s = 0; for (const v of model.data.model ?? []) s += v;
  let n = 0; for (const v of elem.data.shade_hi ?? []) if (Number.isFinite(v)) n += 1;
  return [spec.get_length() ?? 0, s, n];
}}"""


@pytest.fixture(scope="module")
def browser():
    yield from launch_browser()


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    """The dashboard with the emulator double and an empty data directory (a fresh machine)."""
    yield from serve_dashboard(data_dir=tmp_path_factory.mktemp("nodata"), emulator=EmulatorDouble(),
                               fit=fake_fit(None, steps=100))


def open_page(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.console_messages, page.page_errors, page.foreign = [], [], []
    page.on("console", lambda msg: page.console_messages.append(msg.text))
    page.on("pageerror", lambda exc: page.page_errors.append(str(exc)))
    page.on("request", lambda req: page.foreign.append(req.url)
            if not req.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
    page.goto(url)
    wait_until(lambda: any("Websocket connection 0 is now open" in m for m in page.console_messages),
               timeout=20, message="the Bokeh websocket to open", page=page)
    wait_until(lambda: (page.evaluate(STATE_JS) or [0])[0] == 3909, timeout=20,
               message="the demo star in the plot", page=page)
    return page


@pytest.fixture
def page(browser, server_url):
    page = open_page(browser, server_url)
    yield page
    page.context.close()


def state(page):
    return page.evaluate(STATE_JS)


# Height on screen of the spectrum figure's view (0 in a hidden tab or with no view).
SPECTRUM_SHOWN_JS = """() => {
  const fig = Bokeh.documents[0].get_model_by_name("spectrum_figure");
  const view = fig && Bokeh.index.find_one(fig);
  const shown = view && view.el.isConnected && view.el.checkVisibility({visibilityProperty: true});
  return shown ? view.el.getBoundingClientRect().height : 0;
}"""


def nudge_teff(page, presses=3):
    """Focus the first slider handle (Teff) and press the right arrow key."""
    handle = page.locator(".noUi-handle").first
    handle.focus()
    for _ in range(presses):
        handle.press("ArrowRight")


def test_fresh_machine_opens_on_demo_star_offline(page):
    n, model_sum, shaded = state(page)
    assert n == 3909 and model_sum > 3000 and shaded == 0
    sync_api.expect(page.get_by_text("SIMULATED Solar-type dwarf").first).to_be_visible()
    sync_api.expect(page.get_by_text("Teff (K)")).to_be_visible()
    assert page.foreign == [] and page.page_errors == []


def test_slider_updates_model_data_in_browser(page):
    _, before, _ = state(page)
    nudge_teff(page)
    wait_until(lambda: abs(state(page)[1] - before) > 1e-3, message="the model to change", page=page)
    assert page.page_errors == []


def test_element_selection_shades_pixels_and_zoom(page):
    element = page.locator("select").filter(has=page.locator("option", has_text="(none)"))
    element.select_option(label="Mg")
    wait_until(lambda: state(page)[2] > 10, message="shaded Mg pixels", page=page)
    page.get_by_role("button", name="Mg b").click()
    page.get_by_role("button", name="Strongest Mg lines").click()
    page.wait_for_timeout(600)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 20_000
    assert page.page_errors == []


def test_bad_upload_shows_error_and_session_survives(page):
    page.locator("input[type=file]").set_input_files(files=[{
        "name": "broken.fits", "mimeType": "application/octet-stream", "buffer": b"SIMPLE  = junk" * 50}])
    sync_api.expect(page.locator(".alert-danger", has_text="broken.fits")).to_be_visible(timeout=10_000)
    wait_until(lambda: state(page)[0] == 0, message="the plot to clear", page=page)
    _, before, _ = state(page)
    nudge_teff(page)  # the model still follows the sliders on the emulator's grid
    wait_until(lambda: abs(state(page)[1] - before) > 1e-3, message="the model to change", page=page)
    demo = page.locator("select").filter(has=page.locator("option", has_text="choose a demo star"))
    demo.select_option(label="K giant (simulated)")
    wait_until(lambda: state(page)[0] == 3909, message="the K giant", page=page)
    sync_api.expect(page.locator(".alert-danger", has_text="broken.fits")).to_be_hidden()


def test_two_sessions_are_isolated(browser, server_url):
    a, b = open_page(browser, server_url), open_page(browser, server_url)
    try:
        sa, sb = state(a)[1], state(b)[1]
        nudge_teff(a, presses=5)
        wait_until(lambda: abs(state(a)[1] - sa) > 1e-3, message="session A's model to change", page=a)
        b.wait_for_timeout(500)
        assert state(b)[1] == sb  # B did not move
        element = b.locator("select").filter(has=b.locator("option", has_text="(none)"))
        element.select_option(label="Ba")
        wait_until(lambda: state(b)[2] > 0, message="B's Ba shading", page=b)
        assert state(a)[2] == 0
    finally:
        a.context.close()
        b.context.close()


def open_fit_tab(page):
    page.locator(".bk-tab", has_text="Fit").first.click()
    sync_api.expect(page.get_by_role("button", name="Fit this spectrum")).to_be_visible()


def test_short_fit_runs_to_completion_and_moves_the_model(page):
    open_fit_tab(page)
    page.locator("select").filter(has=page.locator("option", has_text="quick")).select_option(index=0)
    _, before, _ = state(page)
    page.get_by_role("button", name="Fit this spectrum").click()
    sync_api.expect(page.get_by_text("Fit done", exact=False)).to_be_visible(timeout=30_000)
    sync_api.expect(page.get_by_text("unconstrained").first).to_be_visible()
    sync_api.expect(page.get_by_role("button", name="Fit this spectrum")).to_be_enabled()
    page.wait_for_timeout(300)
    page.screenshot(path=str(SCREENSHOT.with_name("fit_tab.png")), full_page=True)
    assert page.evaluate(SPECTRUM_SHOWN_JS) == 0  # the spectrum figure is hidden ...
    # ... and back on the spectrum tab they show at once (a tab opened once is kept: Panel's
    # dynamic tabs rebuilt it, blank for 1-5 s), with the model at the fit result.
    page.locator(".bk-tab", has_text="Spectrum & model").first.click()
    wait_until(lambda: page.evaluate(SPECTRUM_SHOWN_JS) > 300, timeout=0.8, interval=0.02,
               message="the spectrum figure on screen", page=page)
    wait_until(lambda: (state(page) or [0, before])[1] != before and abs(state(page)[1] - before) > 1e-3,
               message="the model at the fit result", page=page)
    assert page.page_errors == []


def test_cancel_stops_a_running_fit(page):
    open_fit_tab(page)
    page.locator("select").filter(has=page.locator("option", has_text="thorough")).select_option(index=2)
    page.get_by_role("button", name="Fit this spectrum").click()
    sync_api.expect(page.get_by_text("Fitting (CMA-ES)", exact=False)).to_be_visible(timeout=15_000)
    page.get_by_role("button", name="Cancel").click()
    sync_api.expect(page.get_by_text("Fit cancelled", exact=False)).to_be_visible(timeout=10_000)
    sync_api.expect(page.get_by_role("button", name="Fit this spectrum")).to_be_enabled()
    assert page.page_errors == []


DIFF_LEN_JS = """() => {
  const m = Bokeh.documents[0].get_model_by_name("differential_source");
  return m ? (m.get_length() ?? 0) : null;
}"""


def test_teaching_tab_element_explorer(page):
    page.locator(".bk-tab", has_text="Teaching").first.click()
    sync_api.expect(page.get_by_text("Element explorer")).to_be_visible()
    select = page.locator("select").filter(has=page.locator("option", has_text="(none)")).last
    select.select_option(label="Ca")
    wait_until(lambda: page.evaluate(DIFF_LEN_JS) == 3909, message="the Ca differential spectrum", page=page)
    sync_api.expect(page.get_by_text("strongest at", exact=False)).to_be_visible()
    sync_api.expect(page.get_by_role("button", name="Run the ab initio engine")).to_be_enabled()
    page.wait_for_timeout(300)
    page.screenshot(path=str(SCREENSHOT.with_name("teaching_tab.png")), full_page=True)
    assert page.page_errors == []


TRACE_LEN_JS = """() => {
  const m = Bokeh.documents[0].get_model_by_name("chain_trace_source");
  return m ? (m.data.ys ?? []).length : null;
}"""


def test_mcmc_chains_and_calibration_tab(page, tmp_path):
    """A CMA-ES + MCMC fit fills the walker traces; a calibration file uploaded on the
    Calibration tab shows its summary and trends and calibrates that fit."""
    from test_calibration import full_calibration

    _, cal = full_calibration()
    path = cal.save(tmp_path / "calibration.ecsv")
    open_fit_tab(page)
    page.get_by_role("button", name="CMA-ES + MCMC").click()
    page.locator("select").filter(has=page.locator("option", has_text="quick")).select_option(index=0)
    page.get_by_role("button", name="Fit this spectrum").click()
    sync_api.expect(page.get_by_text("Fit done", exact=False)).to_be_visible(timeout=30_000)
    wait_until(lambda: page.evaluate(TRACE_LEN_JS) == 16, message="16 walker traces", page=page)
    sync_api.expect(page.get_by_text("converged: yes", exact=False)).to_be_visible()
    page.locator(".bk-tab", has_text="Calibration").first.click()
    sync_api.expect(page.get_by_text("Load a calibration file", exact=False)).to_be_visible()
    page.locator("input[type=file]").last.set_input_files(str(path))
    sync_api.expect(page.get_by_text("Loaded calibration.ecsv", exact=False)).to_be_visible(timeout=15_000)
    sync_api.expect(page.get_by_text("Scatter before and after")).to_be_visible()
    sync_api.expect(page.locator("th", has_text="calibrated 1σ")).to_be_visible(timeout=10_000)
    sync_api.expect(page.locator("img").last).to_be_visible()
    page.wait_for_timeout(300)
    page.screenshot(path=str(SCREENSHOT.with_name("calibration_tab.png")), full_page=True)
    assert page.page_errors == []
