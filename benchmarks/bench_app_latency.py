"""Dashboard latency measured in a real browser (Playwright driving Debian's Chromium).

* slider -> model: a key press on the Teff slider handle (keydown time in the page) until the
  browser's ``model_source`` data change (BokehJS signal), for ``--moves`` presses alternating
  right and left; p50/p95/max in ms;
* first page load: ``page.goto`` until the demo star's 3909 pixels and the model are in the
  browser's data sources (s), for ``--loads`` fresh browser contexts opened ``--gap`` seconds
  apart (visitors a few seconds apart get a page the server built ahead of time; with
  ``--gap 0`` every other load builds its own);
* ``--with-fit``: the same slider measurement while a second browser session runs a real
  background fit (``fitting.fit_spectrum``, standard budget) of the demo star.

Usage::

    python benchmarks/bench_app_latency.py [--moves 60] [--loads 7] [--gap 6] [--emulator auto|double|real] [--with-fit] [--out FILE.json]

``--emulator auto`` uses ``phdlspec_app.emulator.load_emulator()`` when it loads, else the test
double (the JSON says which). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the emulator test double lives with the tests

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]

SETUP_JS = """() => {
  const doc = Bokeh.documents[0];
  const src = doc.get_model_by_name("model_source");
  window._lat = []; window._t0 = null;
  document.addEventListener("keydown", () => { window._t0 = performance.now(); }, true);
  src.properties.data.change.connect(() => {
    if (window._t0 !== null) { window._lat.push(performance.now() - window._t0); window._t0 = null; }
  });
  return true;
}"""

READY_JS = """() => {
  const doc = window.Bokeh && Bokeh.documents && Bokeh.documents[0];
  if (!doc) return false;
  const s = doc.get_model_by_name("spectrum_source"), m = doc.get_model_by_name("model_source");
  return !!(s && m && s.get_length() === 3909 && m.get_length() === 3909);
}"""


def _emulator(kind: str):
    if kind in ("auto", "real"):
        from phdlspec_app.app.live import default_emulator

        emu, why = default_emulator()
        if emu is not None:
            return emu, f"phdlspec_app.emulator.load_emulator() ({type(emu).__name__})"
        if kind == "real":
            raise SystemExit(f"no emulator: {why}")
    from test_app_double import EmulatorDouble

    return EmulatorDouble(), "tests/test_app_double.EmulatorDouble (no trained emulator available)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(pred, timeout, page=None, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        if page is not None:
            page.wait_for_timeout(step * 1000)
        else:
            time.sleep(step)
    raise TimeoutError


def pct(values, q):
    return float(np.percentile(np.asarray(values), q)) if values else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moves", type=int, default=60)
    ap.add_argument("--emulator", choices=["auto", "double", "real"], default="auto")
    ap.add_argument("--loads", type=int, default=3, help="page loads timed")
    ap.add_argument("--gap", type=float, default=0.0, help="seconds between page loads")
    ap.add_argument("--with-fit", action="store_true", help="measure while another session fits")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import panel as pn
    from playwright.sync_api import sync_playwright

    from phdlspec_app.app.server import serve

    emu, emu_desc = _emulator(args.emulator)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    serve(port=port, address="127.0.0.1", show=False, threaded=True, emulator=emu, liveness=True,
          websocket_origin=f"127.0.0.1:{port}")

    def alive():
        try:
            with urllib.request.urlopen(url + "liveness", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    _wait(alive, 30)
    result = {"emulator": emu_desc, "with_fit_running": args.with_fit, "host": platform.node(), "cpus": os.cpu_count(),
              "load_average_at_start": os.getloadavg()}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        loads = []
        for i in range(args.loads + 1):  # the first load also warms the server (imports, caches)
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            t0 = time.perf_counter()
            page.goto(url)
            _wait(lambda: page.evaluate(READY_JS), 60, page=page, step=0.01)
            if i:
                loads.append(time.perf_counter() - t0)
            if i < args.loads:
                ctx.close()
                time.sleep(args.gap)
        fit_state = None
        if args.with_fit:
            other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            other.goto(url)
            _wait(lambda: other.evaluate(READY_JS), 60, page=other, step=0.05)
            other.locator(".bk-tab", has_text="Fit").first.click()
            other.get_by_role("button", name="Fit this spectrum").click()
            other.get_by_text("Fitting (", exact=False).wait_for(timeout=60_000)
            fit_state = lambda: other.get_by_text("Fit done", exact=False).count() == 0  # noqa: E731
        page.evaluate(SETUP_JS)
        handle = page.locator(".noUi-handle").first
        handle.focus()
        lat, missed = [], 0
        for k in range(args.moves):
            n = len(lat)
            handle.press("ArrowRight" if (k // 5) % 2 == 0 else "ArrowLeft")
            try:
                _wait(lambda: page.evaluate("() => window._lat.length") > n, 5, page=page, step=0.005)
            except TimeoutError:
                missed += 1
            lat = page.evaluate("() => window._lat")
            page.wait_for_timeout(30)
        if fit_state is not None:
            result["fit_still_running_after_moves"] = bool(fit_state())
        browser.close()
    pn.state.kill_all_servers()
    result.update({
        "slider_to_model_ms": {"n": len(lat), "missed": missed, "p50": pct(lat, 50), "p95": pct(lat, 95),
                               "max": max(lat) if lat else None, "mean": statistics.fmean(lat) if lat else None},
        "first_page_load_s": {"n": len(loads), "median": pct(loads, 50), "max": max(loads) if loads else None,
                              "gap_s": args.gap, "all": [round(v, 3) for v in loads]},
        "load_average_at_end": os.getloadavg(),
    })
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
