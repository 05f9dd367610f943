"""The dashboard in a real Firefox (Debian's firefox-esr, driven over Marionette with
Mozilla's ``marionette_driver``; Playwright only drives its own Firefox builds, which cannot
be downloaded here). Opens on the demo star offline, a slider moves the model, the Fit tab
runs a fit. Skipped without /usr/bin/firefox-esr unless ``PHDLSPEC_REQUIRE_BROWSER=1``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

pn = pytest.importorskip("panel")
marionette_driver = pytest.importorskip("marionette_driver")

from phdlspec_app.app.plot import MODEL_SOURCE_NAME, SPECTRUM_SOURCE_NAME
from test_app_double import EmulatorDouble, fake_fit
from test_browser import free_port, require_browser, serve_dashboard, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

FIREFOX = Path("/usr/bin/firefox-esr")

# Marionette runs scripts in a sandbox by default; ``sandbox=None`` sees the page's own
# globals (window.Bokeh).
STATE_JS = f"""
  const doc = window.Bokeh && Bokeh.documents && Bokeh.documents[0];
  if (!doc) return null;
  const spec = doc.get_model_by_name("{SPECTRUM_SOURCE_NAME}");
  const model = doc.get_model_by_name("{MODEL_SOURCE_NAME}");
  if (!spec || !model) return null;
  let s = 0; for (const v of model.data.model ?? []) s += v;
  return [spec.get_length() ?? 0, s];
"""
# Bokeh renders its widgets inside shadow roots, which Marionette's finders do not enter:
# walk them in the page and act on the real DOM elements (click, keydown on the handle).
DEEP_JS = """
  const [selector, text, action] = arguments;
  function* walk(root) {
    for (const el of root.querySelectorAll("*")) {
      yield el;
      if (el.shadowRoot) yield* walk(el.shadowRoot);
    }
  }
  for (const el of walk(document)) {
    if (!el.matches(selector)) continue;
    if (text && !(el.textContent || "").includes(text)) continue;
    if (action === "click") el.click();
    if (action === "right") {
      el.focus();
      for (let i = 0; i < 3; i++)
        el.dispatchEvent(new KeyboardEvent("keydown", {key: "ArrowRight", keyCode: 39, which: 39, bubbles: true}));
    }
    return true;
  }
  return false;
"""
RESOURCES_JS = """
  return performance.getEntriesByType("resource").map(e => e.name)
    .filter(u => !u.startsWith("http://127.0.0.1") && !u.startsWith("data:") && !u.startsWith("blob:"));
"""


@pytest.fixture(scope="module")
def firefox():
    """A headless Firefox with Marionette on a free port, and a client connected to it."""
    require_browser(FIREFOX, "firefox-esr")
    from marionette_driver.marionette import Marionette

    profile = tempfile.mkdtemp(prefix="phdlspec-ff-")
    port = free_port()
    # A closed network: no updates, telemetry, captive-portal or safe-browsing requests.
    Path(profile, "user.js").write_text("\n".join(f'user_pref("{k}", {v});' for k, v in {
        "marionette.port": port, "app.update.enabled": "false", "browser.shell.checkDefaultBrowser": "false",
        "datareporting.policy.dataSubmissionEnabled": "false", "toolkit.telemetry.enabled": "false",
        "network.captive-portal-service.enabled": "false", "browser.safebrowsing.malware.enabled": "false",
        "browser.safebrowsing.phishing.enabled": "false", "extensions.update.enabled": "false",
        "browser.startup.homepage_override.mstone": '"ignore"', "network.connectivity-service.enabled": "false",
    }.items()) + "\n")
    proc = subprocess.Popen([str(FIREFOX), "--headless", "--marionette", "--no-remote", "--profile", profile],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MOZ_HEADLESS": "1"})
    client = Marionette(host="127.0.0.1", port=port)
    try:
        client.start_session(timeout=60)
        client.set_window_rect(width=1400, height=1000)
        yield client
    finally:
        try:
            client.delete_session()
        except Exception:
            pass
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    yield from serve_dashboard(data_dir=tmp_path_factory.mktemp("nodata"), emulator=EmulatorDouble(),
                               fit=fake_fit(0.5))


def test_dashboard_in_firefox(firefox, server_url):
    from marionette_driver import By

    ff = firefox
    ff.navigate(server_url)
    n, before = wait_until(lambda: (ff.execute_script(STATE_JS, sandbox=None) or [0])[0] == 3909 and ff.execute_script(STATE_JS, sandbox=None),
                           timeout=30, message="the demo star in the plot")
    assert before > 3000
    assert "SIMULATED" in ff.find_element(By.TAG_NAME, "body").text or \
        "simulated" in ff.find_element(By.TAG_NAME, "body").text
    # a slider moves the model: the Teff handle (the first one) takes three right-arrow presses
    assert ff.execute_script(DEEP_JS, script_args=[".noUi-handle", "", "right"], sandbox=None)
    wait_until(lambda: abs(ff.execute_script(STATE_JS, sandbox=None)[1] - before) > 1e-3,
               timeout=30, message="the model to change")
    # the Fit tab: a (fake, quick) fit runs to completion in the background
    assert ff.execute_script(DEEP_JS, script_args=[".bk-tab", "Fit", "click"], sandbox=None)
    wait_until(lambda: ff.execute_script(DEEP_JS, script_args=["button", "Fit this spectrum", "click"], sandbox=None),
               timeout=30, message="the fit button")
    wait_until(lambda: ff.execute_script(DEEP_JS, script_args=["div", "Fit done", ""], sandbox=None),
               timeout=60, message="Fit done")
    after_fit = ff.execute_script(STATE_JS, sandbox=None)[1]
    assert abs(after_fit - before) > 1e-3     # the sliders (and the model) moved to the result
    # everything came from the server: no CDN, no web fonts
    assert ff.execute_script(RESOURCES_JS, sandbox=None) == []
