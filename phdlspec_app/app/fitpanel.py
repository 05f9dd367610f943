"""The "Fit" tab: a background fit of the spectrum shown, its results, diagnostics and exports.

One :class:`FitPanel` per browser session. A fit runs as a :class:`~.fitjob.FitJob` in the
process-wide pool; this session polls it from its own event loop (a periodic callback while
the job runs, or :meth:`FitPanel.poll` in tests), so no Bokeh model is touched from a worker
thread. When the fit ends the sliders move to the result ("Copy best fit" brings them back
later), and the tables, per-element residuals, corner plot and correlation heatmap fill in.
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
from bokeh.models import ColumnDataSource, Range1d
from bokeh.plotting import figure

from phdlspec_app import labels as L

from .chains import ChainPlots
from .fitjob import FitJob
from .live import ELEMENT_DELTA, SHADE_THRESHOLD, LiveModel, display_name
from .polling import SessionPoller
from .tables import TABLE_CSS, format_value, render_png

__all__ = ["BUDGETS", "ELEMENT_RESIDUAL_SOURCE_NAME", "FitPanel", "parse_priors_text"]

log = logging.getLogger(__name__)

ELEMENT_RESIDUAL_SOURCE_NAME = "element_residual_source"

#: Fit budgets offered: keyword arguments of ``fit_spectrum``.
BUDGETS = {
    "quick (≈600 evaluations)": {"cmaes_evals": 600, "restarts": 0, "mcmc_max_steps": 2000, "n_tau": 20.0},
    "standard (≈3000 evaluations)": {"cmaes_evals": 3000, "restarts": 1},
    "thorough (≈8000 evaluations, 32-D search)": {"cmaes_evals": 8000, "restarts": 2, "cmaes_scope": "all"},
}
_METHODS = {"CMA-ES": "cmaes", "CMA-ES + MCMC": "both"}
_CORNER_DEFAULT = ("teff", "logg", "fe_h")


def parse_priors_text(text: str) -> dict[str, tuple[float, float]]:
    """``"logg=4.4±0.1; fe_h = -0.5, 0.2"`` → ``{"logg": (4.4, 0.1), "fe_h": (-0.5, 0.2)}``.

    Entries are separated by ``;`` or new lines; mean and sigma by ``±``, ``+-`` or ``,``.
    Raises ValueError naming the entry that cannot be read.
    """
    out = {}
    for raw in text.replace("\n", ";").split(";"):
        item = raw.strip()
        if not item:
            continue
        try:
            name, value = item.split("=", 1)
            value = value.replace("±", ",").replace("+-", ",").replace("+/-", ",")
            mean, sigma = (float(v) for v in value.split(","))
            key = L.canonical_name(name.strip())
        except ValueError:
            raise ValueError(f"cannot read prior {item!r}: write NAME=MEAN±SIGMA, e.g. logg=4.4±0.1") from None
        if not sigma > 0:
            raise ValueError(f"prior {item!r}: sigma must be positive")
        out[key] = (mean, sigma)
    return out


def results_html(result) -> str:
    """The fitted labels with errors and flags, as an HTML table (values escaped)."""
    unconstrained = set(result.unconstrained())
    fixed = set(result.fixed)
    rows = []
    for lab in L.LABELS:
        v, lo, hi = result.labels[lab.name], result.err_lo[lab.name], result.err_hi[lab.name]
        flag = "fixed" if lab.name in fixed else "unconstrained" if lab.name in unconstrained else ""
        if any(f == f"at_bound:{lab.name}" for f in result.flags):
            flag = (flag + " at bound").strip()
        err = format_value(lo, lab.step) if np.isclose(lo, hi) or not np.isfinite(hi) else \
            f"−{format_value(lo, lab.step)} / +{format_value(hi, lab.step)}"
        rows.append(f'<tr class="{flag.split(" ")[0] if flag else ""}"><td>{html.escape(display_name(lab))}</td>'
                    f"<td>{format_value(v, lab.step)}</td><td>{'' if lab.name in fixed else err}</td>"
                    f"<td>{html.escape(lab.unit)}</td><td>{html.escape(flag)}</td></tr>")
    head = "<tr><th>label</th><th>value</th><th>1σ error</th><th>unit</th><th>flag</th></tr>"
    return f'<table class="phdlspec-fit">{head}{"".join(rows)}</table>'


def elements_html(result) -> str:
    """Per-element diagnostics: sensitive pixels, their χ², Δχ² against the Galactic trend."""
    head = ("<tr><th>element</th><th>label</th><th>sensitive px</th><th>χ² (sensitive)</th>"
            "<th>Δχ² vs trend</th><th>CRB (dex)</th><th>constrained</th></tr>")
    rows = []
    for name, d in result.elements.items():
        lab = L.get_label(name)
        cls = "" if d.constrained else "unconstrained"
        rows.append(f'<tr class="{cls}"><td>{html.escape(lab.element.symbol)}</td><td>{html.escape(lab.latex)}</td>'
                    f"<td>{d.n_sensitive}</td><td>{d.chi2_sensitive:.1f}</td><td>{d.dchi2_trend:.1f}</td>"
                    f"<td>{format_value(d.crb, 0.001)}</td><td>{'yes' if d.constrained else 'no'}</td></tr>")
    return f'<table class="phdlspec-fit">{head}{"".join(rows)}</table>'


def correlation_png(result) -> bytes | None:
    """Heatmap of the posterior correlation matrix of all free labels (needs MCMC samples)."""
    if result.samples is None or len(result.samples) < 10:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    corr = np.corrcoef(np.asarray(result.samples, float), rowvar=False)
    names = [display_name(L.get_label(n)) for n in result.free_names]
    fig = Figure(figsize=(9, 8))
    ax = fig.subplots()
    im = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    fig.colorbar(im, ax=ax, label="correlation")
    ax.set_title("Posterior correlations (MCMC)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


class FitPanel(param.Parameterized):
    """Fit controls, progress and results for one session."""

    status = param.String(default="", doc="One line about the fit (running, done, failed...).")
    error = param.String(default="", doc="Why the last fit failed ('' otherwise).")

    def __init__(self, live: LiveModel, get_spectrum, fit=None, poll_ms: int = 250, in_process: bool = True,
                 **params):
        """``get_spectrum()`` returns the spectrum shown (or None); ``fit`` replaces
        ``fitting.fit_spectrum`` (tests; it then runs in a thread); ``in_process``: run real
        fits in their own process (see :class:`~.fitjob.FitJob`)."""
        super().__init__(**params)
        self.in_process = in_process
        self.live = live
        self.get_spectrum = get_spectrum
        self._fit = fit
        self.poller = SessionPoller(self.poll, poll_ms)
        self.job: FitJob | None = None
        self.result = None
        #: callables run (on the session's event loop) after a fit's result is shown
        self.on_result: list = []

        self.method = pn.widgets.RadioButtonGroup(options=list(_METHODS), value="CMA-ES", color="default")
        self.budget = pn.widgets.Select(label="Budget", options=list(BUDGETS), value=list(BUDGETS)[1], width=230)
        self.fix = pn.widgets.MultiChoice(
            label="Fix at the current slider values",
            options={display_name(lab): lab.name for lab in L.LABELS}, sizing_mode="stretch_width")
        self.priors = pn.widgets.TextInput(label="Gaussian priors", placeholder="logg=4.4±0.1; fe_h=-0.5±0.2",
                                           sizing_mode="stretch_width")
        self.seed = pn.widgets.IntInput(label="Seed", value=0, width=90)
        self.fit_button = pn.widgets.Button(label="Fit this spectrum", color="primary", width=170)
        self.cancel_button = pn.widgets.Button(label="Cancel", color="danger", width=100, disabled=True)
        self.progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width", visible=False)
        self.status_text = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.error_alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self.results_table = pn.pane.HTML("", stylesheets=[TABLE_CSS], sizing_mode="stretch_width")
        self.elements_table = pn.pane.HTML("", stylesheets=[TABLE_CSS], sizing_mode="stretch_width")
        self.corner_subset = pn.widgets.MultiChoice(
            label="Corner plot labels", value=list(_CORNER_DEFAULT),
            options={display_name(lab): lab.name for lab in L.LABELS}, sizing_mode="stretch_width")
        self.corner_png = pn.pane.PNG(None, width=560)
        self.corr_png = pn.pane.PNG(None, width=560)
        self.plots_note = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.element_choice = pn.widgets.Select(label="Element", options=[], width=160)
        self.element_source = ColumnDataSource({"wavelength": [], "resid": [], "resid_all": []},
                                               name=ELEMENT_RESIDUAL_SOURCE_NAME)
        self.element_figure = self._element_figure()
        self.chains = ChainPlots()
        self.downloads = self._downloads()

        self.fit_button.on_click(lambda _e: self.start())
        self.cancel_button.on_click(lambda _e: self.cancel())
        self.element_choice.param.watch(lambda _e: self._show_element(), "value")
        self.corner_subset.param.watch(lambda _e: self._draw_corner(), "value")

    # ------------------------------------------------------------------ control
    def start(self) -> FitJob | None:
        """Start a background fit of the spectrum shown; returns the job (None if refused)."""
        spec = self.get_spectrum()
        if self.job is not None and self.job.running:
            return None
        if spec is None:
            return self._fail("Open a spectrum first.")
        if self.live.emulator is None:
            return self._fail(f"No emulator, so nothing to fit with. {self.live.emulator_message}")
        try:
            priors = parse_priors_text(self.priors.value)
        except ValueError as exc:
            return self._fail(str(exc))
        fix = {name: float(getattr(self.live.labels, name)) for name in self.fix.value}
        method = _METHODS[self.method.value]
        kwargs = dict(BUDGETS[self.budget.value])
        if method == "cmaes":
            kwargs = {k: v for k, v in kwargs.items() if k not in ("mcmc_max_steps", "n_tau")}
        self.error = ""
        # A fit process loads the default model itself rather than receiving it pickled.
        for_process = None if self.live.emulator_is_default else self.live.emulator
        self.job = FitJob(spec, self.live.emulator, method=method, fix=fix, priors=priors,
                          seed=int(self.seed.value or 0), fit=self._fit, in_process=self.in_process,
                          emulator_for_process=for_process, **kwargs).submit()
        self.fit_button.disabled, self.cancel_button.disabled = True, False
        self.progress.param.update(value=0, visible=True)
        self.status = "Fit queued…"
        self.poller.start()
        return self.job

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.status = "Cancelling…"

    def _fail(self, message: str) -> None:
        self.error = message
        return None

    # ------------------------------------------------------------------ polling (event loop)
    def poll(self) -> None:
        """Show the job's progress; when it has ended, its result (or why not)."""
        job = self.job
        if job is None:
            return
        if job.running:
            chi2 = f", χ² {job.chi2:.1f}" if job.chi2 is not None else ""
            where = "waiting for a free fit worker" if job.state == "queued" else job.stage
            self.progress.value = int(100 * min(max(job.fraction, 0.0), 1.0))
            self.status = f"Fitting ({self.method.value}): {where} {100 * job.fraction:.0f} %{chi2} — {job.elapsed:.0f} s"
            return
        self.poller.stop()
        self.fit_button.disabled, self.cancel_button.disabled = False, True
        self.progress.visible = False
        if job.state == "done":
            self._show_result(job.result, job.elapsed)
        elif job.state == "cancelled":
            self.status = f"Fit cancelled after {job.elapsed:.1f} s; the sliders were left as they were."
        else:
            self.status = "Fit failed."
            self.error = job.error

    @param.depends("status", "error", watch=True)
    def _sync(self):
        self.status_text.object = self.status
        self.error_alert.param.update(object=self.error, visible=bool(self.error))

    # ------------------------------------------------------------------ results
    def _show_result(self, result, seconds: float) -> None:
        self.result = result
        self.live.best_fit = dict(result.labels)
        self.live.set_labels(result.labels)
        flags = ", ".join(result.flags) or "none"
        self.status = (f"Fit done in {seconds:.1f} s: χ²/dof = {result.chi2_reduced:.2f} over {result.n_pixels} "
                       f"pixels, S/N {result.snr:.0f}; flags: {flags}. The sliders show the result.")
        self.results_table.object = results_html(result)
        self.elements_table.object = elements_html(result)
        opts = {}
        for name, d in result.elements.items():
            lab = L.get_label(name)
            opts[f"{lab.element.symbol}{'' if d.constrained else ' (unconstrained)'}"] = name
        self.element_choice.options = opts
        if self.live.element in result.elements:
            self.element_choice.value = self.live.element
        self._show_element()
        subset = list(_CORNER_DEFAULT) + ([self.live.element] if self.live.element else [])
        self.corner_subset.value = [n for n in subset if n in result.free_names]
        self._draw_corner()
        self.chains.show(result)
        corr = correlation_png(result)
        self.corr_png.object = corr
        self.plots_note.object = ("" if result.samples is not None else
                                  "The corner plot shows draws from the Gaussian (Cramér–Rao) errors; run "
                                  "**CMA-ES + MCMC** for the posterior and the correlation heatmap.")
        for callback in self.on_result:
            try:
                callback()
            except Exception:  # another tab's trouble must not hide this fit
                log.exception("on_result callback failed")
        if result.mcmc:
            tau = np.asarray(result.mcmc.get("tau", []), float)
            self.plots_note.object += (f"\n\nMCMC ({result.mcmc.get('moves', 'de')}): {result.mcmc.get('steps')} steps × "
                                       f"{result.mcmc.get('nwalkers')} walkers after {result.mcmc.get('warmup_steps', 0)} "
                                       f"warm-up steps, acceptance {result.mcmc.get('acceptance', float('nan')):.2f}, "
                                       f"max autocorrelation time {np.nanmax(tau) if tau.size else float('nan'):.1f} "
                                       f"steps, converged: {result.mcmc.get('converged')}.")

    def _element_figure(self):
        fig = figure(height=220, sizing_mode="stretch_width", y_range=Range1d(-6, 6),
                     x_axis_label="Vacuum wavelength (Å)", y_axis_label="(data − model)/σ",
                     tools="pan,xwheel_zoom,box_zoom,reset,save", active_scroll="xwheel_zoom",
                     title="Residuals in the element's sensitive pixels")
        fig.line("wavelength", "resid_all", source=self.element_source, line_color="#cccccc", line_width=1)
        fig.scatter("wavelength", "resid", source=self.element_source, size=4, color="#d62728")
        return fig

    def _show_element(self) -> None:
        r, name = self.result, self.element_choice.value
        if r is None or not name or self.live.emulator is None:
            self.element_source.data = {"wavelength": [], "resid": [], "resid_all": []}
            return
        lab = L.get_label(name)
        best = L.to_vector(r.labels)
        jac = np.asarray(self.live.emulator.jacobian(best[None, :]), float)[0, lab.index]
        wl = np.asarray(r.wavelength, float)
        if jac.shape != wl.shape:
            jac = np.interp(wl, np.asarray(self.live.emulator.wavelength, float), jac)
        g = np.asarray(r.good, bool)
        resid = np.where(g, (r.observed - r.model) * np.sqrt(np.where(g, r.ivar, 0.0)), np.nan)
        sens = g & (np.abs(jac) * ELEMENT_DELTA > SHADE_THRESHOLD)
        self.element_source.data = {"wavelength": wl, "resid": np.where(sens, resid, np.nan), "resid_all": resid}
        d = r.elements[name]
        self.element_figure.title.text = (f"{lab.element.symbol}: {int(sens.sum())} sensitive pixels, "
                                          f"χ² {d.chi2_sensitive:.1f}, Δχ² vs trend {d.dchi2_trend:.1f}"
                                          f"{'' if d.constrained else ' — unconstrained'}")

    def _draw_corner(self) -> None:
        r = self.result
        if r is None:
            self.corner_png.object = None
            return
        names = [n for n in self.corner_subset.value if n in r.free_names] or \
            [n for n in _CORNER_DEFAULT if n in r.free_names]
        if len(names) < 2:
            self.corner_png.object = None
            return
        from phdlspec_app.fitting.plots import plot_corner

        try:
            self.corner_png.object = render_png(lambda path: plot_corner(r, path, names=names))
        except Exception as exc:  # a plot must not take the session down
            log.exception("corner plot failed")
            self.plots_note.object = f"The corner plot failed ({type(exc).__name__}: {exc})."

    # ------------------------------------------------------------------ exports
    def _result_table(self, suffix: str) -> io.BytesIO:
        from phdlspec_app.fitting.output import write_results

        row = {**self.result.to_row(), "file": str(self.result.meta.get("source", ""))}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"fit{suffix}"
            write_results([row], path)
            return io.BytesIO(path.read_bytes())

    def _model_fits(self) -> io.BytesIO:
        from phdlspec_app.io.native import write_model

        emu = self.live.emulator
        flux = np.asarray(emu(self.live.vector()), float)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.fits"
            write_model(path, np.asarray(emu.wavelength, float), flux, self.live.label_dict(),
                        meta={"origin": "PhDLspec dashboard: emulator model at the slider labels"})
            return io.BytesIO(path.read_bytes())

    def _chain_ecsv(self) -> io.BytesIO:
        from astropy.table import Table

        r = self.result
        draws = r.chain if r.chain is not None else r.samples
        t = Table(np.asarray(draws, float), names=list(r.free_names))
        buf = io.StringIO()
        t.write(buf, format="ascii.ecsv")
        return io.BytesIO(buf.getvalue().encode())

    def _fit_png(self) -> io.BytesIO:
        from phdlspec_app.fitting.plots import plot_fit

        return io.BytesIO(render_png(lambda path: plot_fit(self.result, path)))

    def _downloads(self):
        def guarded(make, need_result=True, need_samples=False):
            def callback():
                if need_result and self.result is None:
                    self.error = "Nothing to export yet: run a fit first."
                    return io.BytesIO(b"")
                if need_samples and (self.result.samples is None and self.result.chain is None):
                    self.error = "No chain: run CMA-ES + MCMC to export posterior draws."
                    return io.BytesIO(b"")
                try:
                    return make()
                except Exception as exc:
                    log.exception("export failed")
                    self.error = f"Export failed ({type(exc).__name__}: {exc})."
                    return io.BytesIO(b"")
            return callback

        def button(label, filename, make, **kw):
            return pn.widgets.FileDownload(callback=guarded(make, **kw), filename=filename, label=label,
                                           color="light", width=190, embed=False)

        return pn.FlexBox(
            button("Results (ECSV)", "phdlspec_fit.ecsv", lambda: self._result_table(".ecsv")),
            button("Results (JSON)", "phdlspec_fit.json", lambda: self._result_table(".json")),
            button("Results (FITS)", "phdlspec_fit.fits", lambda: self._result_table(".fits")),
            button("Model spectrum (FITS)", "phdlspec_model.fits", self._model_fits, need_result=False),
            button("Chain (ECSV)", "phdlspec_chain.ecsv", self._chain_ecsv, need_samples=True),
            button("Fit figure (PNG)", "phdlspec_fit.png", self._fit_png),
            button("Corner plot (PNG)", "phdlspec_corner.png",
                   lambda: io.BytesIO(self.corner_png.object or b"")),
            sizing_mode="stretch_width",
        )

    # ------------------------------------------------------------------ layout
    def panel(self):
        controls = pn.Column(
            pn.Row(self.method, self.budget, self.seed, sizing_mode="stretch_width"),
            self.fix, self.priors,
            pn.Row(self.fit_button, self.cancel_button),
            self.progress, self.status_text, self.error_alert,
            sizing_mode="stretch_width",
        )
        results = pn.Row(
            pn.Column(pn.pane.Markdown("#### Labels"), self.results_table, width=430),
            pn.Column(pn.pane.Markdown("#### Elements"), self.elements_table, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
        return pn.Column(
            controls, pn.layout.Divider(), results,
            pn.pane.Markdown("#### Per-element residuals"), self.element_choice, self.element_figure,
            pn.pane.Markdown("#### Posterior"), self.plots_note, self.corner_subset,
            pn.Row(self.corner_png, self.corr_png),
            self.chains.panel(),
            pn.pane.Markdown("#### Export"), self.downloads,
            sizing_mode="stretch_width", name="Fit",
        )
