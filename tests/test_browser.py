"""The dashboard in a real Chromium (Playwright), served by Panel in a background thread.

Skipped when /usr/bin/chromium is missing, unless ``PHDLSPEC_REQUIRE_BROWSER=1`` (CI), where
a missing browser is a failure. Panel renders inside shadow DOM: Playwright's CSS locators
pierce it, ``document.querySelector`` does not; Bokeh models are found by name in page JS.
"""
from __future__ import annotations

import os
import socket
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

pn = pytest.importorskip("panel")
sync_api = pytest.importorskip("playwright.sync_api")

from phdlspec_app.app.observation import prepare_observation
from phdlspec_app.app.plot import MASKED_SOURCE_NAME, SPECTRUM_SOURCE_NAME
from phdlspec_app.app.server import serve
from phdlspec_app.io import read_spectrum

from test_app_double import EmulatorDouble

pytestmark = [pytest.mark.browser, pytest.mark.shared_data, pytest.mark.timeout(120)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "screenshots" / "first_view.png"

DR9_STAR = "cmost/spec-55859-F5902_sp01-001.fits.gz"
QSO = "cmost/spec-60591-LN042429N340750BM01_sp01-005.fits.gz"
OLD_STAR = "learninglamost/spec-55862-B6212_sp06-003.fits"

# JS returning the row counts of the two named data sources (null until the page has them).
SOURCE_LENGTHS_JS = f"""() => {{
  const doc = window.Bokeh && Bokeh.documents && Bokeh.documents[0];
  if (!doc) return null;
  const src = doc.get_model_by_name("{SPECTRUM_SOURCE_NAME}");
  const masked = doc.get_model_by_name("{MASKED_SOURCE_NAME}");
  if (!src || !masked) return null;
  return [src.get_length() ?? 0, masked.get_length() ?? 0];
}}"""


def wait_until(predicate, timeout=10.0, interval=0.05, message="condition", page=None):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds.

    Pass ``page`` when the predicate depends on page events (console messages): Playwright's
    sync API only delivers events while it runs, so we wait with ``page.wait_for_timeout``.
    """
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        if page is not None:
            page.wait_for_timeout(interval * 1000)
        else:
            time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {message} (last value: {last!r})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_browser(executable: Path, package: str) -> None:
    """Skip (or, with PHDLSPEC_REQUIRE_BROWSER=1 as in CI, fail) when ``executable`` is missing."""
    if not executable.exists():
        reason = f"{executable} is not installed (apt-get install {package})"
        if os.environ.get("PHDLSPEC_REQUIRE_BROWSER") == "1":
            pytest.fail(f"PHDLSPEC_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


def launch_browser():
    """Yield a headless Chromium (skip, or fail in CI, when it is not installed)."""
    require_browser(CHROMIUM, "chromium")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def serve_dashboard(**kwargs):
    """Serve the dashboard on a free port (``kwargs`` go to ``serve``); yield its URL, then
    stop every Panel server."""
    port = free_port()
    serve(port=port, address="127.0.0.1", show=False, threaded=True, liveness=True,
          websocket_origin=f"127.0.0.1:{port}", **kwargs)
    url = f"http://127.0.0.1:{port}"

    def alive():
        try:
            with urllib.request.urlopen(f"{url}/liveness", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_until(alive, timeout=20, message="the Panel server's /liveness")
    yield url + "/"
    pn.state.kill_all_servers()
    pn.state.clear_caches()


@pytest.fixture(scope="module")
def browser():
    yield from launch_browser()


@pytest.fixture
def server_url(shared_dir):
    """Serve the dashboard on a free port, starting empty (no demo star), with the emulator
    test double; stop every Panel server afterwards."""
    yield from serve_dashboard(data_dir=shared_dir, start_demo=False, emulator=EmulatorDouble())


@pytest.fixture
def page(browser, server_url):
    """An open dashboard page with its websocket connected; records off-host requests and errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.console_messages = []
    page.foreign_requests = []
    page.page_errors = []
    page.on("console", lambda msg: page.console_messages.append(msg.text))
    page.on("pageerror", lambda exc: page.page_errors.append(str(exc)))
    host = urlparse(server_url).netloc
    page.on("request", lambda req: page.foreign_requests.append(req.url)
            if urlparse(req.url).netloc not in ("", host) and not req.url.startswith("data:") else None)
    page.goto(server_url)
    wait_until(lambda: any("Websocket connection 0 is now open" in m for m in page.console_messages),
               timeout=15, message="the Bokeh websocket to open", page=page)
    wait_until(lambda: page.evaluate(SOURCE_LENGTHS_JS) is not None, message="the Bokeh document",
               page=page)
    yield page
    context.close()


def source_lengths(page):
    return page.evaluate(SOURCE_LENGTHS_JS)


def wait_for_points(page, spec, message):
    """Wait until the plot's sources hold ``spec``'s pixels and masked pixels, as the app shows
    them (through the fitting layer's preprocessing onto the emulator's grid)."""
    shown = prepare_observation(spec, EmulatorDouble().wavelength).spectrum
    expected = [shown.npix, int(shown.mask.sum())]
    wait_until(lambda: source_lengths(page) == expected, message=f"{message}: {expected}", page=page)


def choose(page, relpath):
    """Pick ``relpath`` in the data-directory picker (the select offering LAMOST files)."""
    page.locator("select").filter(has=page.locator("option", has_text="choose a spectrum")).select_option(relpath)


def test_page_loads_offline_with_title_and_picker(page):
    assert page.title() == "PhDLspec"
    select = page.locator("select").filter(has=page.locator("option", has_text="choose a spectrum"))
    sync_api.expect(select).to_be_enabled()
    assert select.locator("option").count() > 200
    sync_api.expect(page.get_by_text("LAMOST spectra in the data directory")).to_be_visible()
    sync_api.expect(page.get_by_text("at most 20 MB")).to_be_visible()
    assert source_lengths(page) == [0, 0]
    # Everything (JS, CSS, fonts) comes from the Panel server: the app works offline.
    assert page.foreign_requests == []
    assert page.page_errors == []


def test_choose_real_files_plots_them(page, shared_dir):
    lamost = shared_dir / "spectra" / "lamost"
    star = read_spectrum(lamost / DR9_STAR)
    choose(page, DR9_STAR)
    wait_for_points(page, star, f"{star.npix} points in the plot")
    sync_api.expect(page.get_by_text("LAMOST J220848.54-020324.3").first).to_be_visible()
    sync_api.expect(page.get_by_text("STAR / G7")).to_be_visible()

    qso = read_spectrum(lamost / QSO)
    choose(page, QSO)
    wait_for_points(page, qso, "the QSO")
    sync_api.expect(page.get_by_text("not STAR", exact=False)).to_be_visible()

    # The screenshot shows a spectrum with masked pixels (red markers in the legend too).
    old = read_spectrum(lamost / OLD_STAR)
    assert old.mask.sum() > 0
    choose(page, OLD_STAR)
    wait_for_points(page, old, "masked star")
    sync_api.expect(page.get_by_text("not STAR", exact=False)).to_be_hidden()
    page.wait_for_timeout(500)  # let the canvas repaint after the data change
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 20_000
    assert page.page_errors == []


def test_bad_upload_shows_error_then_good_file_works(page, shared_dir):
    upload = page.locator("input[type=file]")
    # A name with markup in it must be displayed literally (the viewer escapes it).
    bad_name = "garbage_<b>1</b>_*x*.fits"
    upload.set_input_files(files=[{"name": bad_name, "mimeType": "application/octet-stream",
                                   "buffer": b"\x00\x01 this is not a spectrum \xff" * 10}])
    error = page.locator(".alert-danger", has_text=bad_name)
    sync_api.expect(error).to_be_visible(timeout=10_000)
    assert "Traceback" not in error.inner_text()
    assert source_lengths(page) == [0, 0]

    # The session survived: picking a good file plots it and hides the error.
    star = read_spectrum(shared_dir / "spectra" / "lamost" / DR9_STAR)
    choose(page, DR9_STAR)
    wait_for_points(page, star, "good file")
    sync_api.expect(page.locator(".alert-danger", has_text=bad_name)).to_be_hidden()

    # And a good upload works too.
    data = (shared_dir / "spectra" / "lamost" / OLD_STAR).read_bytes()
    old = read_spectrum(data, name="uploaded.fits")
    upload.set_input_files(files=[{"name": "uploaded.fits", "mimeType": "application/fits",
                                   "buffer": data}])
    wait_for_points(page, old, "upload")
    sync_api.expect(page.get_by_text("Showing uploaded.fits", exact=False)).to_be_visible()

    # The upload reset the picker, so the file picked before can be picked again.
    choose(page, DR9_STAR)
    wait_for_points(page, star, "the same file picked again")
    assert page.page_errors == []
