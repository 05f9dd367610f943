"""The dashboard's spectrum view: pick or upload a LAMOST spectrum, see it plotted with its header.

One :class:`SpectrumViewer` per browser session. Its param state (``spectrum``, ``error``,
``warning``, ``status``) is the single source of truth; the widgets and panes only display it,
so tests can drive :meth:`SpectrumViewer.load_path` / :meth:`SpectrumViewer.load_bytes`
without a browser.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import panel as pn
import param

from phdlspec_app.io import Spectrum, SpectrumFormatError, read_spectrum

from .calibrationpanel import CalibrationPanel
from .demo import demo_stars
from .files import SPECTRUM_SUFFIXES, find_lamost_files
from .fitpanel import FitPanel
from .lazytabs import LazyTabs
from .live import LiveModel
from .metadata import spectrum_warnings, summary_html
from .teaching import Teaching
from .plot import SpectrumFigure

__all__ = ["MAX_UPLOAD_BYTES", "TITLE", "SpectrumViewer"]

log = logging.getLogger(__name__)

TITLE = "PhDLspec"

#: Largest upload accepted, in bytes (20 MB, decimal). LAMOST low-resolution spectra are
#: 50-300 kB, so this only stops mistakes (a whole tarball, a data cube).
MAX_UPLOAD_BYTES = 20_000_000

_PLACEHOLDER = "— choose a spectrum —"
_DEMO_PLACEHOLDER = "— choose a demo star —"

_ACCEPT = ",".join(sorted({s.rsplit(".", 1)[-1] for s in SPECTRUM_SUFFIXES}))  # fits,fit,gz,...
_FORMATS_TEXT = ("FITS (.fits, .fits.gz, .fit) from LAMOST or any 1-D spectrum, "
                 "or a text table (.csv, .txt, .ecsv, .dat) with wavelength and flux columns")

_CSS = """
.phdlspec-meta-grid { display: flex; flex-wrap: wrap; gap: 0 2.5rem; }
.phdlspec-meta { border-collapse: collapse; font-size: 0.9rem; flex: 1 1 360px; align-self: flex-start; }
.phdlspec-meta th { text-align: left; font-weight: 600; padding: 3px 14px 3px 0;
                    white-space: nowrap; color: #444; vertical-align: top; }
.phdlspec-meta td { padding: 3px 0; font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
.phdlspec-meta tr { border-bottom: 1px solid #e5e5e5; }
"""


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~!])")


def md_escape(text: str) -> str:
    """Escape Markdown/HTML syntax so file names and header values display literally.

    File names (``spec_a_b.fits``), exception texts (``<class ...>``) and header strings come
    from files the user chose; they must never be rendered as markup.
    """
    return _MD_SPECIAL.sub(r"\\\1", text)


class SpectrumViewer(pn.viewable.Viewer):
    """Show one spectrum: a data-directory picker, an upload box, the plot and the header table."""

    spectrum = param.ClassSelector(class_=Spectrum, default=None, allow_None=True,
                                   doc="The spectrum shown, or None.")
    source_label = param.String(default="", doc="Name of the file shown (relative path or upload name).")
    error = param.String(default="", doc="Why the last load failed ('' after a success).")
    warning = param.String(default="", doc="Caveats about the spectrum shown (e.g. not a star).")
    status = param.String(default="", doc="One line saying what is shown.")

    def __init__(self, data_dir: str | os.PathLike | None = None, emulator="auto",
                 start_demo: bool = False, fit=None, **params):
        """``emulator``: an object with the emulator's API, ``"auto"`` (the default model,
        loaded once per process) or None (no live model). ``start_demo``: open the default
        demo star at once (what the server does, so a fresh machine shows something).
        ``fit``: replaces ``fitting.fit_spectrum`` for the Fit tab (tests)."""
        super().__init__(**params)
        self._syncing_picker = False
        self.root, files, why = find_lamost_files(data_dir)
        self.files = files
        self.plot = SpectrumFigure.create()
        self.plot.figure.yaxis.axis_label = "Normalized flux"
        self.live = LiveModel(self.plot, emulator=emulator)
        self.fitter = FitPanel(self.live, lambda: self.spectrum, fit=fit)
        self.teaching = Teaching(self.live)
        self.calibration = CalibrationPanel(lambda: self.fitter.result)
        self.fitter.on_result.append(self.calibration.refresh)
        self.demos = demo_stars()
        self.demo_picker = pn.widgets.Select(
            label="Demo stars (simulated by PhDLspec's engine)",
            options=[_DEMO_PLACEHOLDER, *self.demos], value=_DEMO_PLACEHOLDER,
            disabled=not self.demos, sizing_mode="stretch_width",
        )
        self.demo_picker.param.watch(self._on_demo, "value")

        self.picker = pn.widgets.Select(
            label="LAMOST spectra in the data directory",
            options=[_PLACEHOLDER, *files], value=_PLACEHOLDER,
            disabled=not files, sizing_mode="stretch_width",
        )
        self.picker_note = pn.pane.Markdown(
            why or f"{len(files)} files under `{self.root}`", sizing_mode="stretch_width",
            styles={"font-size": "0.85rem", "color": "#a33" if why else "#555"},
        )
        self.upload_note = pn.pane.Markdown(
            f"**Or upload a spectrum** (at most {MAX_UPLOAD_BYTES // 1_000_000} MB): "
            f"{_FORMATS_TEXT}.", sizing_mode="stretch_width", styles={"font-size": "0.85rem"},
        )
        self.upload = pn.widgets.FileInput(accept=_ACCEPT, multiple=False, sizing_mode="stretch_width")

        self.error_alert = pn.pane.Alert("", alert_type="danger", visible=False,
                                         sizing_mode="stretch_width")
        self.warning_alert = pn.pane.Alert("", alert_type="warning", visible=False,
                                           sizing_mode="stretch_width")
        self.status_text = pn.pane.Markdown("Choose a spectrum on the left, or upload one.",
                                            sizing_mode="stretch_width")
        self.meta_table = pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[_CSS])

        self.picker.param.watch(self._on_pick, "value")
        self.upload.param.watch(self._on_upload, "value")
        self._layout = self._build_layout()
        if start_demo and self.demos:
            self.load_demo(next(iter(self.demos)))

    # ------------------------------------------------------------------ loading
    def load_path(self, path: str | os.PathLike) -> Spectrum | None:
        """Read and show ``path`` (absolute, or relative to the LAMOST data folder).

        Returns the spectrum, or None when it could not be read (then ``error`` says why).
        """
        path = Path(path)
        if not path.is_absolute() and self.root is not None:
            path = self.root / path
        label = self._label_for(path)
        self._set_picker(label if label in self.files else _PLACEHOLDER)
        self._set_demo(_DEMO_PLACEHOLDER)
        return self._load(lambda: read_spectrum(path), label)

    def load_demo(self, title: str) -> Spectrum | None:
        """Open the embedded demo star ``title`` (a key of :attr:`demos`)."""
        path = self.demos[title]
        self._set_picker(_PLACEHOLDER)
        self._set_demo(title)
        return self._load(lambda: read_spectrum(path), f"demo/{path.name}")

    def load_bytes(self, data: bytes, filename: str) -> Spectrum | None:
        """Read and show an uploaded file's content; ``filename`` drives format detection.

        Files over :data:`MAX_UPLOAD_BYTES` are refused before parsing.
        """
        filename = filename or "uploaded file"
        # The picker must not name a data-directory file while an upload is shown; resetting it
        # also lets the user pick that file again afterwards (a Select fires only on change).
        self._set_picker(_PLACEHOLDER)
        self._set_demo(_DEMO_PLACEHOLDER)
        if len(data) > MAX_UPLOAD_BYTES:
            return self._fail(
                f"{filename}: the file is {len(data):,} bytes, over the upload limit of "
                f"{MAX_UPLOAD_BYTES // 1_000_000} MB ({MAX_UPLOAD_BYTES:,} bytes). "
                "A LAMOST spectrum is well under 1 MB: upload one spectrum at a time.")
        return self._load(lambda: read_spectrum(data, name=filename), filename)

    def _load(self, read, label: str) -> Spectrum | None:
        try:
            spec = read()
        except SpectrumFormatError as exc:
            message = str(exc)
        except Exception as exc:  # a UI callback must never die with a traceback
            # The readers should only raise SpectrumFormatError; anything else is a bug there,
            # so keep the traceback in the server log, and give the user a readable line.
            log.exception("unexpected error reading %s", label)
            message = f"could not be read ({type(exc).__name__}: {exc})"
        else:
            self._show(spec, label)
            return spec
        if label not in message:
            message = f"{label}: {message}"
        return self._fail(message)

    def _show(self, spec: Spectrum, label: str) -> None:
        summary = spec.summary()
        name = summary.get("designation") or Path(label).name
        obs = self.live.prepare(spec)
        self.plot.show(obs.spectrum, title=f"{name}  ({label})")
        self.meta_table.object = summary_html(summary)
        self.live.set_observation(obs)
        truth = spec.meta.get("true_labels") if spec.meta.get("simulated") else None
        self.live.true_labels = dict(truth) if isinstance(truth, dict) else None
        lo, hi = spec.wavelength_range
        self.param.update(
            spectrum=spec, source_label=label, error="",
            warning="\n\n".join(spectrum_warnings(spec)),
            status=(f"Showing **{md_escape(label)}**: {spec.npix} pixels, {lo:.0f}–{hi:.0f} Å (vacuum), "
                    f"{int(spec.mask.sum())} masked." + (f" {obs.note}" if obs.note else "")),
        )

    def _fail(self, message: str) -> None:
        """Show ``message`` as the error, with nothing plotted; returns None."""
        # Clear the plot so a stale spectrum is never mistaken for the file that failed.
        self.plot.clear()
        self.live.set_observation(None)
        self.live.true_labels = None
        self.meta_table.object = ""
        self.param.update(spectrum=None, source_label="", error=message, warning="",
                          status="No spectrum shown.")
        log.info("load failed: %s", message)

    def _label_for(self, path: Path) -> str:
        if self.root is not None:
            try:
                return path.resolve().relative_to(self.root.resolve()).as_posix()
            except ValueError:
                pass
        return path.name

    # ------------------------------------------------------------------ widget callbacks
    def _set_quietly(self, widget, value: str) -> None:
        """Show ``value`` in a picker without it triggering a load."""
        if widget.value == value:
            return
        self._syncing_picker = True
        try:
            widget.value = value
        finally:
            self._syncing_picker = False

    def _set_picker(self, value: str) -> None:
        self._set_quietly(self.picker, value)

    def _set_demo(self, value: str) -> None:
        self._set_quietly(self.demo_picker, value)

    def _on_demo(self, event) -> None:
        if self._syncing_picker or not event.new or event.new == _DEMO_PLACEHOLDER:
            return
        self.load_demo(event.new)

    def _on_pick(self, event) -> None:
        if self._syncing_picker or not event.new or event.new == _PLACEHOLDER:
            return
        self.load_path(event.new)

    def _on_upload(self, event) -> None:
        if event.new is not None:
            self.load_bytes(event.new, self.upload.filename)

    @param.depends("error", "warning", "status", watch=True, on_init=False)
    def _sync_messages(self) -> None:
        self.error_alert.param.update(object=md_escape(self.error), visible=bool(self.error))
        self.warning_alert.param.update(object=md_escape(self.warning), visible=bool(self.warning))
        self.status_text.object = self.status

    # ------------------------------------------------------------------ layout
    def _build_layout(self):
        template = pn.template.BootstrapTemplate(
            title=TITLE, header_background="#1f4e79", sidebar_width=380,
            # The template's default busy indicator is ONE LoadingSpinner shared by every
            # session (a class default); Panel updates it from whichever session is busy,
            # which writes into other sessions' documents without their lock (RuntimeError
            # "_pending_writes should be non-None") and couples sessions. No indicator.
            busy_indicator=None,
        )
        self._frozen_server_doc(template)
        # One root per template area: each root added to the document makes Bokeh re-walk
        # every model (document.models.recompute), so many small roots cost seconds per page.
        template.sidebar.append(pn.Column(
            pn.pane.Markdown("### Open a spectrum"),
            self.demo_picker,
            self.picker, self.picker_note,
            self.upload_note, self.upload,
            pn.layout.Divider(),
            pn.pane.Markdown("### Labels (live model)"),
            self.live.controls(),
            sizing_mode="stretch_width",
        ))
        spectrum_tab = pn.Column(
            self.live.zoom_bar(),
            pn.pane.Bokeh(self.plot.figure, sizing_mode="stretch_width"),
            pn.pane.Bokeh(self.live.layers.residual_figure, sizing_mode="stretch_width"),
            self.live.quality_pane,
            pn.pane.Markdown("#### Header"), self.meta_table,
            sizing_mode="stretch_width", name="Spectrum & model",
        )
        self.tabs = LazyTabs(spectrum_tab, self.fitter.panel(), self.teaching.panel(), self.calibration.panel(),
                             sizing_mode="stretch_width")
        template.main.append(pn.Column(
            self.error_alert, self.warning_alert, self.live.model_alert, self.live.domain_alert,
            self.status_text,
            self.tabs,
            sizing_mode="stretch_width",
        ))
        return template

    def __panel__(self):
        return self._layout

    @staticmethod
    def _frozen_server_doc(template):
        """Make ``template.server_doc`` build the page with the document's model graph frozen.

        Each model a widget adds to the document (a JS link, a callback) makes Bokeh re-walk every
        model of the document; with 32 Panel EditableFloatSliders that cost ~2 s per page load.
        Frozen, the walk happens once however the page is built.
        """
        plain = template.server_doc

        def server_doc(doc=None, title=None, location=True):
            from bokeh.io import curdoc

            doc = doc or curdoc()
            with doc.models.freeze():
                return plain(doc, title=title, location=location)

        template.server_doc = server_doc
        return template

    def servable(self, title: str | None = None, location=True, area="main", target=None):
        """Mark the page servable (``panel serve``); delegates to the template."""
        return self._layout.servable(title=title or TITLE, location=location, area=area, target=target)
