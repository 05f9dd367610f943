"""MCMC chain plots of the Fit tab: walker traces of one label and the autocorrelation time.

Both read what ``fitting.mcmc.run_emcee`` keeps in ``FitResult.mcmc``: ``trace`` (steps ×
walkers × free labels, thinned for the eye), ``trace_steps``, and the τ estimate after each
convergence check (``tau_steps``, ``tau_history``). The convergence rule is drawn with them:
the chain is long enough once its length exceeds ``n_tau`` τ (the dashed line N/n_tau must rise
above the τ curve, and τ must have settled).
"""
from __future__ import annotations

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource, Span
from bokeh.plotting import figure

from phdlspec_app import labels as L

from .live import display_name

__all__ = ["ChainPlots", "TRACE_SOURCE_NAME", "TAU_SOURCE_NAME"]

TRACE_SOURCE_NAME = "chain_trace_source"
TAU_SOURCE_NAME = "chain_tau_source"


class ChainPlots:
    """Trace and τ figures for one session; :meth:`show` a result, pick a label."""

    def __init__(self):
        self.result = None
        self.label = pn.widgets.Select(label="Trace of", options=[], width=200)
        self.trace_source = ColumnDataSource({"xs": [], "ys": []}, name=TRACE_SOURCE_NAME)
        self.tau_source = ColumnDataSource({"steps": [], "tau_max": [], "tau_label": [], "limit": []},
                                           name=TAU_SOURCE_NAME)
        self.note = pn.pane.Markdown("Run **CMA-ES + MCMC** to see the walkers' traces and the "
                                     "autocorrelation time.", sizing_mode="stretch_width")
        self.trace_figure = figure(height=230, sizing_mode="stretch_width", x_axis_label="step",
                                   y_axis_label="value", title="Walker traces",
                                   tools="pan,wheel_zoom,box_zoom,reset,save")
        self.trace_figure.multi_line("xs", "ys", source=self.trace_source, line_alpha=0.45, line_width=1,
                                     line_color="#1f77b4")
        self.median_span = Span(location=0, dimension="width", line_color="#d62728", line_dash="dashed",
                                visible=False)
        self.trace_figure.add_layout(self.median_span)
        self.tau_figure = figure(height=230, sizing_mode="stretch_width", x_axis_label="steps",
                                 y_axis_label="τ (steps)", title="Integrated autocorrelation time",
                                 tools="pan,wheel_zoom,box_zoom,reset,save")
        self.tau_figure.line("steps", "tau_max", source=self.tau_source, line_width=2, color="#1f4e79",
                             legend_label="max τ over labels")
        self.tau_figure.line("steps", "tau_label", source=self.tau_source, line_width=1.5, color="#ff7f0e",
                             legend_label="τ of the traced label")
        self.tau_figure.line("steps", "limit", source=self.tau_source, line_dash="dashed", color="#555555",
                             legend_label="N / n_tau (converged above the τ curve)")
        self.tau_figure.legend.location = "top_left"
        self.tau_figure.legend.label_text_font_size = "8pt"
        self.label.param.watch(lambda _e: self._draw(), "value")

    def show(self, result) -> None:
        """Fill the plots from a FitResult (cleared when it has no MCMC)."""
        self.result = result
        mc = getattr(result, "mcmc", None) or {}
        if "trace" not in mc:
            self.label.options = []
            self.trace_source.data = {"xs": [], "ys": []}
            self.tau_source.data = {"steps": [], "tau_max": [], "tau_label": [], "limit": []}
            self.median_span.visible = False
            self.note.object = ("No chain: this fit ran CMA-ES only. Run **CMA-ES + MCMC** to see the "
                                "walkers' traces and the autocorrelation time.")
            return
        opts = {display_name(L.get_label(n)): n for n in result.free_names}
        self.label.options = opts
        self.label.value = "teff" if "teff" in result.free_names else result.free_names[0]
        tau = np.asarray(mc["tau"], float)
        moves = {"hmc": "Hamiltonian Monte Carlo", "de": "differential evolution"}.get(mc.get("moves"), "emcee")
        self.note.object = (f"{moves}: {mc['steps']} steps × {mc['nwalkers']} walkers (traces: {mc['trace'].shape[1]} "
                            f"walkers) after {mc.get('warmup_steps', 0)} warm-up steps, acceptance "
                            f"{mc['acceptance']:.2f}, max τ {np.nanmax(tau):.1f} steps, "
                            f"burn-in {mc.get('burn', 0)}, thinning {mc.get('thin', 1)}; converged: "
                            f"{'yes' if mc['converged'] else 'no (step cap reached)'}.")
        self._draw()

    def _draw(self) -> None:
        r, name = self.result, self.label.value
        mc = getattr(r, "mcmc", None) or {}
        if r is None or not name or "trace" not in mc or name not in r.free_names:
            return
        j = r.free_names.index(name)
        steps = np.asarray(mc["trace_steps"], float)
        tr = np.asarray(mc["trace"], float)[:, :, j]
        self.trace_source.data = {"xs": [steps] * tr.shape[1], "ys": [tr[:, w] for w in range(tr.shape[1])]}
        lab = L.get_label(name)
        self.trace_figure.yaxis.axis_label = f"{display_name(lab)} ({lab.unit})" if lab.unit else display_name(lab)
        self.median_span.location = float(r.labels[name])
        self.median_span.visible = True
        ts = np.asarray(mc["tau_steps"], float)
        th = np.asarray(mc["tau_history"], float).reshape(ts.size, -1)
        self.tau_source.data = {"steps": ts, "tau_max": th.max(axis=1), "tau_label": th[:, j],
                                "limit": ts / float(mc.get("n_tau", 50.0))}

    def panel(self):
        return pn.Column(pn.pane.Markdown("#### Chains"), self.note, self.label,
                         pn.Row(self.trace_figure, self.tau_figure, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")
