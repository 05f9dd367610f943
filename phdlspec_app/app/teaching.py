"""The "Teaching" tab: an element explorer and "physics vs emulator".

Element explorer: pick an element and see its differential spectrum d flux / d[X/Fe] (the
emulator's jacobian at the slider labels), the model change between -0.2 and +0.2 dex, and its
strongest features (click one to zoom every panel there). Physics vs emulator: the ab initio
engine (``physics.synthesize.Synthesizer``) synthesizes a 50-100 Angstrom window at the slider
labels in a background thread, and the emulator's spectrum is drawn beside it.
"""
from __future__ import annotations

import logging
import threading

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, Range1d
from bokeh.plotting import figure

from phdlspec_app import labels as L

from .fitjob import Job, physics_pool
from .live import ELEMENT_DELTA, NAMED_WINDOWS, LiveModel
from .polling import SessionPoller

__all__ = ["DIFFERENTIAL_SOURCE_NAME", "PHYSICS_SOURCE_NAME", "Teaching", "default_synthesizer"]

log = logging.getLogger(__name__)

DIFFERENTIAL_SOURCE_NAME = "differential_source"
PHYSICS_SOURCE_NAME = "physics_source"
_PICK_FEATURE = "— zoom to a feature —"
_ELEMENT_WINDOW = "around the element's strongest feature"
_MAX_WINDOW = 100.0  # Angstrom: the engine takes seconds per window

_SYN_LOCK = threading.Lock()
_SYNTHESIZERS: dict[tuple[float, float], object] = {}


def default_synthesizer(lo: float, hi: float):
    """A :class:`~phdlspec_app.physics.synthesize.Synthesizer` covering ``lo``..``hi`` Angstrom
    and the LSF margins, cached per window for the process (line lists load once)."""
    from phdlspec_app.physics.synthesize import Synthesizer

    key = (round(lo, 1), round(hi, 1))
    with _SYN_LOCK:
        if key not in _SYNTHESIZERS:
            _SYNTHESIZERS[key] = Synthesizer(wl_range=(lo * (1 - 3e-3) - 30.0, hi * (1 + 3e-3) + 30.0))
        return _SYNTHESIZERS[key]


class Teaching(param.Parameterized):
    """Element explorer and physics-vs-emulator for one session."""

    status = param.String(default="")

    def __init__(self, live: LiveModel, synthesizer=None, poll_ms: int = 300, **params):
        """``synthesizer(lo, hi)`` returns an object with the engine's ``spectrum(labels,
        resolution=, wl_out=)`` (default: :func:`default_synthesizer`)."""
        super().__init__(**params)
        self.live = live
        self.synthesizer = synthesizer or default_synthesizer
        self.poller = SessionPoller(self.poll, poll_ms)
        self.job: Job | None = None

        self.diff_source = ColumnDataSource({"wavelength": [], "dflux": [], "delta": []},
                                            name=DIFFERENTIAL_SOURCE_NAME)
        self.diff_figure = figure(
            height=260, sizing_mode="stretch_width", x_range=live.figure.figure.x_range,
            x_axis_label="Vacuum wavelength (Å)", y_axis_label="d flux / d[X/Fe] (per dex)",
            tools="pan,xwheel_zoom,box_zoom,reset,save", active_scroll="xwheel_zoom",
            title="Differential spectrum (emulator jacobian at the slider labels)")
        self.diff_figure.line("wavelength", "dflux", source=self.diff_source, line_color="#1f4e79",
                              legend_label="d flux / d[X/Fe]")
        self.diff_figure.line("wavelength", "delta", source=self.diff_source, line_color="#ff7f0e",
                              line_dash="dashed", legend_label=f"model(+{ELEMENT_DELTA}) − model(−{ELEMENT_DELTA})")
        self.diff_figure.legend.update(location="bottom_right", label_text_font_size="8pt")
        options = {"(none)": "", **{lab.element.symbol: lab.name for lab in L.abundance_labels()}}
        self.element_select = pn.widgets.Select.from_param(live.param.element, options=options,
                                                           label="Element", width=150)
        self.features = pn.widgets.Select(label="Strongest features (click to zoom)", options=[], width=260)
        self.features.param.watch(self._zoom_feature, "value")
        self.explainer = pn.pane.Markdown("", sizing_mode="stretch_width")
        live.param.watch(lambda _e: self.refresh_element(), "element_version")

        self.window = pn.widgets.Select(label="Window", options=[*NAMED_WINDOWS, _ELEMENT_WINDOW],
                                        value="Mg b", width=260)
        self.run_button = pn.widgets.Button(label="Run the ab initio engine", color="primary", width=220)
        self.run_button.on_click(lambda _e: self.run_physics())
        self.physics_status = pn.pane.Markdown(
            "Synthesizes the window at the slider labels with PhDLspec's 1D LTE engine (seconds; the "
            "first run in a server also compiles the line-profile kernels, up to a minute).",
            sizing_mode="stretch_width")
        self.physics_source = ColumnDataSource({"wavelength": [], "physics": [], "emulator": [], "diff": []},
                                               name=PHYSICS_SOURCE_NAME)
        self.physics_figure = figure(
            height=300, sizing_mode="stretch_width", x_axis_label="Vacuum wavelength (Å)",
            y_axis_label="Normalized flux", y_range=Range1d(0, 1.15),
            tools="pan,xwheel_zoom,box_zoom,reset,save", active_scroll="xwheel_zoom",
            title="Physics (ab initio engine) vs emulator, same labels, R = 1800")
        self.physics_figure.line("wavelength", "physics", source=self.physics_source, line_color="#000000",
                                 line_width=1.5, legend_label="ab initio engine")
        self.physics_figure.line("wavelength", "emulator", source=self.physics_source, line_color="#d62728",
                                 line_dash="dashed", line_width=1.5, legend_label="emulator")
        self.physics_figure.line("wavelength", "diff", source=self.physics_source, line_color="#2ca02c",
                                 legend_label="emulator − engine + 0.1")
        self.physics_figure.legend.update(location="bottom_right", label_text_font_size="8pt")
        self.refresh_element()

    # ------------------------------------------------------------------ element explorer
    def refresh_element(self) -> None:
        live = self.live
        jac = live.element_derivative()
        if jac is None or not live.element:
            self.diff_source.data = {"wavelength": [], "dflux": [], "delta": []}
            self.features.options = []
            self.explainer.object = ("Pick an element: its differential spectrum shows where and how "
                                     "strongly the spectrum reacts to its abundance.")
            return
        lab = L.get_label(live.element)
        esrc = live.layers.element_source.data
        wl = np.asarray(esrc["wavelength"], float)
        delta = np.asarray(esrc["plus"], float) - np.asarray(esrc["minus"], float)
        self.diff_source.data = {"wavelength": wl, "dflux": np.asarray(jac, float), "delta": delta}
        feats = live.strongest_features()
        # A placeholder first, so that refreshing the list (on every slider release) never zooms.
        self.features.options = {_PICK_FEATURE: None, **{f"{w:.1f} Å": w for w in feats}}
        self.features.value = None
        frac = 100 * live.sensitive_fraction()
        self.explainer.object = (
            f"**{lab.element.symbol}** ({html_safe(lab.latex)}): {frac:.1f} % of the pixels change by more than "
            f"0.5 % for ±{ELEMENT_DELTA} dex; strongest at "
            + (", ".join(f"{w:.0f}" for w in feats[:5]) + " Å." if feats else "no pixel (not measurable here)."))

    def _zoom_feature(self, event) -> None:
        if event.new is not None:
            self.live.zoom(float(event.new) - 15.0, float(event.new) + 15.0)

    # ------------------------------------------------------------------ physics vs emulator
    def window_range(self) -> tuple[float, float] | None:
        if self.window.value == _ELEMENT_WINDOW:
            feats = self.live.strongest_features(n=1)
            return (feats[0] - 40.0, feats[0] + 40.0) if feats else None
        lo, hi = NAMED_WINDOWS[self.window.value]
        return lo, min(hi, lo + _MAX_WINDOW)  # the Ca triplet: its two bluer lines

    def run_physics(self) -> Job | None:
        if self.job is not None and self.job.running:
            return None
        win = self.window_range()
        if win is None:
            self.physics_status.object = "Pick an element first (its strongest feature sets the window)."
            return None
        lo, hi = win
        live = self.live
        wl_model = live._model_wl
        if wl_model is None:
            from phdlspec_app.physics.lsf import lamost_wavelength

            wl_model = lamost_wavelength()
        inside = (wl_model >= lo) & (wl_model <= hi)
        wl = wl_model[inside]
        labels = live.vector()
        emulated = None if live.emulator is None else np.asarray(live.emulator(labels), float)[inside]
        make = self.synthesizer

        def work(job):
            import torch

            job.stage = "loading line list"
            syn = make(lo, hi)
            job.stage = "synthesizing"
            flux = syn.spectrum(torch.as_tensor(labels, dtype=torch.float64), resolution=1800.0, wl_out=wl)
            return np.asarray(flux.detach().cpu().numpy() if hasattr(flux, "detach") else flux, float)

        self.job = Job(work)
        self.job.window, self.job.wavelength, self.job.emulated = (lo, hi), wl, emulated
        self.job.submit(physics_pool())
        self.run_button.disabled = True
        self.physics_status.object = f"Running the engine for {lo:.0f}–{hi:.0f} Å…"
        self.poller.start()
        return self.job

    def poll(self) -> None:
        job = self.job
        if job is None:
            return
        lo, hi = job.window
        if job.running:
            self.physics_status.object = f"Engine {job.stage} ({lo:.0f}–{hi:.0f} Å), {job.elapsed:.0f} s…"
            return
        self.poller.stop()
        self.run_button.disabled = False
        if job.state != "done":
            self.physics_status.object = f"The engine failed: {job.error}"
            return
        phys = job.result
        emu = job.emulated if job.emulated is not None else np.full_like(phys, np.nan)
        self.physics_source.data = {"wavelength": job.wavelength, "physics": phys, "emulator": emu,
                                    "diff": emu - phys + 0.1}
        self.physics_figure.x_range.update(start=lo, end=hi)
        rms = float(np.sqrt(np.nanmean((emu - phys) ** 2))) if job.emulated is not None else float("nan")
        self.physics_status.object = (f"Engine: {lo:.0f}–{hi:.0f} Å in {job.elapsed:.1f} s. "
                                      + (f"Emulator − engine: rms {100 * rms:.2f} % of the continuum."
                                         if np.isfinite(rms) else "No emulator to compare with."))

    # ------------------------------------------------------------------ layout
    def panel(self):
        return pn.Column(
            pn.pane.Markdown("#### Element explorer"),
            pn.Row(self.element_select, self.features), self.explainer, self.diff_figure,
            pn.layout.Divider(),
            pn.pane.Markdown("#### Physics vs emulator"),
            pn.Row(self.window, self.run_button), self.physics_status, self.physics_figure,
            sizing_mode="stretch_width", name="Teaching",
        )


def html_safe(text: str) -> str:
    import html

    return html.escape(text)
