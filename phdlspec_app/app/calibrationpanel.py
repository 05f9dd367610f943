"""The "Calibration" tab: load a calibration file, look at its trends, apply it to the fit.

A calibration file is what ``phdlspec calibrate`` writes (``calibration.Calibration``, ECSV
or JSON). The tab shows its provenance and summary (scatter before/after per method and
label, internal precision from wide binaries), the diagnostics figure of a chosen label
(residual vs Teff, log g, [Fe/H] — or ΔTeff, Δlog g for pairs — before and after, with the
fitted trend), and, once a fit has run, the fit's labels raw and calibrated side by side
with the propagated errors and a flag where a correction was used outside its valid domain.
Everything here is per session; a bad file is a message, never an exception.
"""
from __future__ import annotations

import html
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import panel as pn
import param

from phdlspec_app import labels as L
from phdlspec_app.calibration import Calibration, CalibrationInputError

from .live import display_name
from .tables import TABLE_CSS, format_value, render_png

__all__ = ["CalibrationPanel", "MAX_CALIBRATION_BYTES"]

log = logging.getLogger(__name__)

#: Largest calibration file accepted (a calibration of ~10⁴ stars × 30 labels is ~10 MB).
MAX_CALIBRATION_BYTES = 20_000_000
_SUFFIXES = (".ecsv", ".json")


def summary_html(cal: Calibration) -> str:
    """Per method and label: number of stars (or pairs), robust scatter before and after, and
    the internal precision of one star from wide binaries (escaped HTML table)."""
    s = cal.summary()
    head = ("<tr><th>method</th><th>label</th><th>n</th><th>scatter before</th><th>scatter after</th>"
            "<th>internal precision</th></tr>")
    rows = []
    for r in s:
        lab = L.get_label(str(r["label"]))
        rows.append(f"<tr><td>{html.escape(str(r['method']).replace('_', ' '))}</td>"
                    f"<td>{html.escape(display_name(lab))}</td><td>{int(r['n'])}</td>"
                    f"<td>{format_value(float(r['scatter_before']), 0.001)}</td><td>{format_value(float(r['scatter_after']), 0.001)}</td>"
                    f"<td>{'' if not np.isfinite(r['internal_precision']) else format_value(float(r['internal_precision']), 0.001)}</td></tr>")
    return f'<table class="phdlspec-fit">{head}{"".join(rows)}</table>'


def applied_html(calibrated: dict, labels) -> str:
    """Raw and calibrated values of ``labels`` from one calibrated row (escaped HTML table)."""
    flagged = set(str(calibrated.get("calib_flags", "")).split(",")) - {""}
    head = ("<tr><th>label</th><th>raw</th><th>raw 1σ</th><th>calibrated</th><th>calibrated 1σ</th>"
            "<th>correction</th><th>note</th></tr>")

    def err(row, name, raw):
        suf = "_raw" if raw else ""
        if f"{name}_err{suf}" in row:
            return float(row[f"{name}_err{suf}"])
        if f"{name}_err_lo{suf}" in row:
            return 0.5 * (float(row[f"{name}_err_lo{suf}"]) + float(row[f"{name}_err_hi{suf}"]))
        return float(row.get(f"{name}_calib_err", np.nan)) if not raw else np.nan

    rows = []
    for name in labels:
        if f"{name}_raw" not in calibrated:
            continue
        lab = L.get_label(name)
        raw, cal = float(calibrated[f"{name}_raw"]), float(calibrated[name])
        note = "outside the correction's valid domain (edge value used)" if name in flagged else ""
        if not np.isfinite(raw):
            note = "unconstrained by this spectrum"
        rows.append(f"<tr><td>{html.escape(display_name(lab))}</td><td>{format_value(raw, lab.step)}</td>"
                    f"<td>{format_value(err(calibrated, name, True), lab.step)}</td><td>{format_value(cal, lab.step)}</td>"
                    f"<td>{format_value(err(calibrated, name, False), lab.step)}</td><td>{format_value(cal - raw, lab.step)}</td>"
                    f"<td>{html.escape(note)}</td></tr>")
    return f'<table class="phdlspec-fit">{head}{"".join(rows)}</table>'


class CalibrationPanel(param.Parameterized):
    """Calibration file, diagnostics and application to the current fit, for one session."""

    status = param.String(default="", doc="What is loaded.")
    error = param.String(default="", doc="Why the last action failed ('' otherwise).")

    def __init__(self, get_result, **params):
        """``get_result()`` returns the session's current FitResult (or None)."""
        super().__init__(**params)
        self.get_result = get_result
        self.calibration: Calibration | None = None
        self.calibrated: dict | None = None
        self.note = pn.pane.Markdown(
            f"**Load a calibration file** (`.ecsv` or `.json`, at most {MAX_CALIBRATION_BYTES // 1_000_000} MB), "
            "as written by `phdlspec calibrate RESULTS --pairs … --cluster … --reference … -o calibration.ecsv`.",
            sizing_mode="stretch_width")
        self.upload = pn.widgets.FileInput(accept=",".join(_SUFFIXES), multiple=False, width=320)
        self.status_text = pn.pane.Markdown("No calibration loaded.", sizing_mode="stretch_width")
        self.error_alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self.provenance = pn.pane.HTML("", stylesheets=[TABLE_CSS], sizing_mode="stretch_width")
        self.summary = pn.pane.HTML("", stylesheets=[TABLE_CSS], sizing_mode="stretch_width")
        self.label = pn.widgets.Select(label="Diagnostics of", options=[], width=220)
        self.figure = pn.pane.PNG(None, sizing_mode="stretch_width")
        self.apply_button = pn.widgets.Button(label="Apply to the current fit", color="primary", width=220,
                                              disabled=True)
        self.applied = pn.pane.HTML("", stylesheets=[TABLE_CSS], sizing_mode="stretch_width")
        self.download = pn.widgets.FileDownload(callback=self._calibrated_ecsv, filename="phdlspec_fit_calibrated.ecsv",
                                                label="Calibrated fit (ECSV)", width=220, embed=False)
        self.upload.param.watch(self._on_upload, "value")
        self.label.param.watch(lambda _e: self._draw(), "value")
        self.apply_button.on_click(lambda _e: self.apply())

    # ------------------------------------------------------------------ loading
    def load_bytes(self, data: bytes, filename: str) -> Calibration | None:
        """Load an uploaded calibration file's content (format from the file name)."""
        filename = filename or "uploaded file"
        suffix = Path(filename).suffix.lower()
        if suffix not in _SUFFIXES:
            return self._fail(f"{filename}: a calibration file ends in .ecsv or .json "
                              "(what `phdlspec calibrate -o` writes)")
        if len(data) > MAX_CALIBRATION_BYTES:
            return self._fail(f"{filename}: {len(data):,} bytes, over the limit of "
                              f"{MAX_CALIBRATION_BYTES // 1_000_000} MB for a calibration file")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"calibration{suffix}"
            path.write_bytes(data)
            return self._load(path, filename)

    def load_path(self, path) -> Calibration | None:
        """Load a calibration file from disk."""
        return self._load(Path(path), str(path))

    def _load(self, path: Path, name: str) -> Calibration | None:
        try:
            cal = Calibration.load(path)
            if not cal.corrections:
                raise CalibrationInputError(f"{path}: the file holds no correction")
        except CalibrationInputError as exc:
            return self._fail(str(exc).replace(str(path), name))
        except Exception as exc:  # anything else in a file is still the file's problem
            log.exception("calibration file failed to load")
            return self._fail(f"{name}: cannot read a calibration: {type(exc).__name__}: {exc}")
        self.calibration, self.calibrated, self.error = cal, None, ""
        prov = cal.provenance
        methods = sorted({c.method.replace("_", " ") for c in cal.corrections})
        self.status = (f"Loaded **{html.escape(Path(name).name)}**: {len(cal.corrections)} corrections of "
                       f"{len(cal.labels)} labels by {', '.join(methods)}.")
        inputs = prov.get("inputs", {}) or {}
        rows = [("id", prov.get("id", "")), ("created (UTC)", prov.get("created_utc", "")),
                ("software", prov.get("software", "")), ("results fitted", prov.get("n_results", ""))]
        rows += [(f"input: {role}", f"{Path(str(v.get('path', ''))).name} (sha256 {str(v.get('sha256', ''))[:12]}…)")
                 for role, v in inputs.items() if isinstance(v, dict)]
        self.provenance.object = '<table class="phdlspec-fit">' + "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows) + "</table>"
        self.summary.object = summary_html(cal)
        self.label.options = {display_name(L.get_label(n)): n for n in cal.labels}
        self.label.value = cal.labels[0] if cal.labels else None
        self._draw()
        self.apply_button.disabled = False
        self.applied.object = ""
        if self.get_result() is not None:
            self.apply()
        return cal

    def _on_upload(self, event) -> None:
        if event.new:
            self.load_bytes(event.new, self.upload.filename)

    def _fail(self, message: str) -> None:
        self.error = message
        return None

    # ------------------------------------------------------------------ views
    def _draw(self) -> None:
        cal, name = self.calibration, self.label.value
        if cal is None or not name:
            self.figure.object = None
            return
        from phdlspec_app.calibration import diagnostics as D

        try:
            png = render_png(lambda path: D.plot_label(cal.diagnostics, name, path))
        except FileNotFoundError:  # the label has no diagnostics rows: nothing drawn
            png = None
        except Exception as exc:  # a plot must not take the session down
            log.exception("calibration plot failed")
            self.error = f"The diagnostics plot failed ({type(exc).__name__}: {exc})."
            png = None
        self.figure.object = png

    def apply(self) -> dict | None:
        """Calibrate the session's current fit; returns the calibrated row (None if refused)."""
        if self.calibration is None:
            return self._fail("Load a calibration file first.")
        result = self.get_result()
        if result is None:
            return self._fail("Run a fit first (Fit tab): the calibration applies to its labels.")
        try:
            self.calibrated = self.calibration.apply(result.to_row())
        except Exception as exc:  # e.g. the fit lacks a label a correction needs
            log.exception("applying the calibration failed")
            return self._fail(f"Cannot apply this calibration to the fit: {type(exc).__name__}: {exc}")
        self.error = ""
        self.applied.object = applied_html(self.calibrated, self.calibration.labels)
        return self.calibrated

    def refresh(self) -> None:
        """A new fit has ended: re-apply the loaded calibration to it."""
        if self.calibration is not None and self.get_result() is not None:
            self.apply()

    def _calibrated_ecsv(self):
        if self.calibrated is None:
            self.error = "Nothing to export: load a calibration and run a fit first."
            return io.BytesIO(b"")
        from astropy.table import Table

        row = {k: v for k, v in self.calibrated.items()}
        buf = io.StringIO()
        Table({k: [v] for k, v in row.items()}).write(buf, format="ascii.ecsv")
        return io.BytesIO(buf.getvalue().encode())

    @param.depends("status", "error", watch=True)
    def _sync(self):
        self.status_text.object = self.status
        self.error_alert.param.update(object=self.error, visible=bool(self.error))

    def panel(self):
        return pn.Column(
            self.note, self.upload, self.status_text, self.error_alert,
            pn.Row(pn.Column(pn.pane.Markdown("#### Provenance"), self.provenance, width=460),
                   pn.Column(pn.pane.Markdown("#### Scatter before and after"), self.summary,
                             sizing_mode="stretch_width"), sizing_mode="stretch_width"),
            pn.pane.Markdown("#### Trends"), self.label, self.figure,
            pn.pane.Markdown("#### The current fit, raw and calibrated"),
            pn.Row(self.apply_button, self.download), self.applied,
            sizing_mode="stretch_width", name="Calibration",
        )
