"""Screenshots of the dashboard fitting a REAL LAMOST star with the trained default emulator.

Starts the dashboard (``phdlspec_app.app.server.serve``, default emulator, the data directory of
``phdlspec_app.paths``), opens it in Debian's Chromium (Playwright), picks a LAMOST file from the
data-directory picker, runs "CMA-ES + MCMC" with the standard budget through the Fit tab's own
button (the fit runs in the app's background worker, exactly as for a user), then saves:

* ``real_star_fit.png``      the Fit tab: label table, per-element table and residuals, corner plot;
* ``real_star_spectrum.png`` the Spectrum tab with the fitted model over the observation;
* ``real_star_mg.png``       the same zoomed on Mg b with [Mg/Fe] shaded and the ±0.2 dex models.

Usage::

    python benchmarks/screenshots_real_star.py [--file spec-55862-B6212_sp06-003.fits] [--out docs/screenshots]
        [--method "CMA-ES + MCMC"] [--timeout 900]

Needs the shared data (``PHDLSPEC_DATA``) and /usr/bin/chromium. Prints one JSON object: the file,
the wall time of the fit as the browser saw it, and the status line the app showed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_app_latency import ARGS, CHROMIUM, READY_JS, _free_port, _wait  # noqa: E402

FIGURE_SHOWN_JS = """() => {
  const fig = Bokeh.documents[0].get_model_by_name("spectrum_figure");
  const view = fig && Bokeh.index.find_one(fig);
  return !!(view && view.el.isConnected && view.el.checkVisibility({visibilityProperty: true}));
}"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", default="spec-55862-B6212_sp06-003.fits",
                    help="a file name (or the end of a path) among the picker's LAMOST files")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--method", default="CMA-ES + MCMC", choices=["CMA-ES", "CMA-ES + MCMC"])
    ap.add_argument("--budget", default="standard", help="start of a budget name of the Fit tab")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds the fit may take")
    args = ap.parse_args(argv)

    import panel as pn
    from playwright.sync_api import expect, sync_playwright

    from phdlspec_app.app.server import serve

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    serve(port=port, address="127.0.0.1", show=False, threaded=True, websocket_origin=f"127.0.0.1:{port}")
    time.sleep(2)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"file": args.file, "method": args.method, "budget": args.budget}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
        page.goto(url)
        _wait(lambda: page.evaluate(READY_JS), 120, page=page, step=0.05)

        picker = page.locator("select").filter(has=page.locator("option", has_text="choose a spectrum"))
        labels = picker.locator("option").all_inner_texts()
        match = [s for s in labels if s.endswith(args.file)]
        if not match:
            raise SystemExit(f"{args.file} is not among the picker's {len(labels) - 1} files")
        picker.select_option(label=match[0])
        expect(page.get_by_text(f"Showing {match[0]}", exact=False).first).to_be_visible(timeout=60_000)
        result["picked"] = match[0]

        page.locator(".bk-tab", has_text="Fit").first.click()
        page.get_by_role("button", name=args.method, exact=True).click()
        budget = page.locator("select").filter(has=page.locator("option", has_text="evaluations"))
        names = budget.locator("option").all_inner_texts()
        budget.select_option(label=next(n for n in names if n.startswith(args.budget)))
        t0 = time.perf_counter()
        page.get_by_role("button", name="Fit this spectrum").click()
        done = page.get_by_text("Fit done", exact=False).first
        expect(done).to_be_visible(timeout=args.timeout * 1000)
        result["fit_wall_s"] = round(time.perf_counter() - t0, 1)
        result["status"] = done.inner_text()
        page.wait_for_timeout(1500)  # figures (corner plot, residual panel) arrive after the status
        page.screenshot(path=str(args.out / "real_star_fit.png"), full_page=True)

        page.locator(".bk-tab", has_text="Spectrum & model").first.click()
        _wait(lambda: page.evaluate(FIGURE_SHOWN_JS), 30, page=page, step=0.05)
        page.wait_for_timeout(500)
        page.screenshot(path=str(args.out / "real_star_spectrum.png"), full_page=True)

        element = page.locator("select").filter(has=page.locator("option", has_text="(none)"))
        element.select_option(label="Mg")
        page.get_by_role("button", name="Mg b", exact=True).click()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(args.out / "real_star_mg.png"), full_page=True)
        browser.close()
    pn.state.kill_all_servers()
    result["screenshots"] = [str((args.out / n).relative_to(ROOT)) if (args.out / n).is_relative_to(ROOT) else str(args.out / n)
                             for n in ("real_star_fit.png", "real_star_spectrum.png", "real_star_mg.png")]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
