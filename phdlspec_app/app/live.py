"""The live model: 32 label sliders driving the emulator, drawn over the observation.

One :class:`LiveModel` per browser session. Its param state (``labels``, ``element``,
``domain_warning``, ``best_fit``) is the single source of truth; tests drive it directly
(:meth:`LiveModel.set_labels`, ``live.labels.teff = 5000``, ``live.element = "mg_fe"``).

The emulator is a parameter: any object with the API of ``phdlspec_app.emulator``
(``wavelength``, ``label_names``, ``__call__``, ``jacobian``, ``in_domain``,
``domain_violations``). By default the process-wide ``load_emulator()`` is loaded once, lazily;
when no model can be loaded the app says why and keeps working as a spectrum viewer.
"""
from __future__ import annotations

import logging
import threading

import numpy as np
import panel as pn
import param

from phdlspec_app import labels as L

from .labelslider import LabelSlider
from .lazytabs import LazyTabs
from .observation import Observation, interp_to, prepare_observation
from .plot import ModelLayers, SpectrumFigure

__all__ = ["ELEMENT_DELTA", "NAMED_WINDOWS", "SHADE_THRESHOLD", "LiveModel", "StellarLabels",
           "default_emulator", "display_name"]

log = logging.getLogger(__name__)

#: Quick-zoom windows (vacuum Angstrom).
NAMED_WINDOWS: dict[str, tuple[float, float]] = {
    "Ca H&K": (3910.0, 3995.0),
    "G band": (4270.0, 4340.0),
    "Mg b": (5150.0, 5200.0),
    "Na D": (5870.0, 5915.0),
    "Hα": (6530.0, 6600.0),
    "Ca triplet": (8480.0, 8690.0),
}

#: Panel batches a widget's browser events for 50 ms before handling them (``_debounce``, a
#: private class attribute) - half of the slider-to-model latency budget. The emulator answers in
#: milliseconds, so the label sliders use a shorter window; measured in
#: benchmarks/bench_app_latency.py (BENCHMARKS.md). None keeps Panel's default.
SLIDER_DEBOUNCE_MS: int | None = 10

#: The abundance step shown around the model when an element is selected (dex).
ELEMENT_DELTA = 0.2
#: A pixel is "sensitive" to an element when ELEMENT_DELTA dex moves its flux by more than this.
SHADE_THRESHOLD = 0.005
_NO_ELEMENT = ""

_ATM_NAMES = {"teff": "Teff", "logg": "log g", "vmic": "v_mic", "vbroad": "v_broad", "rv": "RV",
              "fe_h": "[Fe/H]"}


def display_name(lab: L.Label) -> str:
    """Plain-text name of a label for a widget (``Teff``, ``[Mg/Fe]``)."""
    return _ATM_NAMES.get(lab.name, lab.latex)


def _format(step: float) -> str:
    return "0" if step >= 1 else "0.0" if step >= 0.1 else "0.00"


def _make_labels_class():
    attrs = {lab.name: param.Number(default=lab.default, bounds=(lab.lo, lab.hi), step=lab.step,
                                    label=f"{display_name(lab)} ({lab.unit})", doc=lab.description)
             for lab in L.LABELS}
    attrs["__doc__"] = "The 32 stellar labels of the schema, each a bounded param.Number."
    return type("StellarLabels", (param.Parameterized,), attrs)


#: A param class with one bounded Number per label of the schema (defaults, ranges and steps
#: from :mod:`phdlspec_app.labels`).
StellarLabels = _make_labels_class()

# ---------------------------------------------------------------- the process-wide emulator
_EMU_LOCK = threading.Lock()
_EMU_CACHE: dict[str, tuple[object | None, str]] = {}


def default_emulator() -> tuple[object | None, str]:
    """``(emulator, "")`` from ``phdlspec_app.emulator.load_emulator()``, loaded once per process,
    or ``(None, why)`` when there is no usable model."""
    with _EMU_LOCK:
        if "default" not in _EMU_CACHE:
            try:
                from phdlspec_app.emulator import load_emulator  # type: ignore[attr-defined]
            except ImportError as exc:
                result = (None, f"No emulator is installed yet (phdlspec_app.emulator.load_emulator: {exc}).")
            else:
                try:
                    result = (load_emulator(), "")
                except Exception as exc:  # no weights, bad file...: the viewer still works
                    log.warning("no default emulator: %s: %s", type(exc).__name__, exc)
                    result = (None, f"The emulator could not be loaded ({type(exc).__name__}: {exc}).")
            _EMU_CACHE["default"] = result
        return _EMU_CACHE["default"]


def _resolve_emulator(emulator) -> tuple[object | None, str]:
    if isinstance(emulator, str) and emulator == "auto":
        return default_emulator()
    if emulator is None:
        return None, "No emulator was given to the app."
    return emulator, ""


class LiveModel(param.Parameterized):
    """Sliders for every label; the emulated model, residual and element layers, in place."""

    element = param.String(default=_NO_ELEMENT, doc="Selected abundance label ('' = none).")
    domain_warning = param.String(default="", doc="Why the labels are outside the emulator's domain.")
    emulator_message = param.String(default="", doc="Why there is no model ('' when there is one).")
    best_fit = param.Dict(default=None, allow_None=True, doc="Labels of the last fit, for 'Copy best fit'.")
    true_labels = param.Dict(default=None, allow_None=True, doc="True labels of a simulated star.")
    element_version = param.Integer(default=0, doc="Incremented whenever the element layers are recomputed.")
    chi2 = param.Number(default=None, allow_None=True, doc="Live chi^2 of the model against the observation.")
    chi2_pixels = param.Integer(default=0, doc="Pixels counted in the live chi^2.")

    def __init__(self, spectrum_figure: SpectrumFigure, emulator="auto", **params):
        super().__init__(**params)
        self.emulator, why = _resolve_emulator(emulator)
        #: True when the model is the process-wide default (a fit process can load it itself)
        self.emulator_is_default = isinstance(emulator, str) and self.emulator is not None
        self.emulator_message = why
        self.labels = StellarLabels()
        self.figure = spectrum_figure
        self.layers = ModelLayers.create(spectrum_figure)
        self.observation: Observation | None = None
        self._model_wl = None if self.emulator is None else np.asarray(self.emulator.wavelength, float)
        self._jac_row: np.ndarray | None = None  # d flux / d element on the display pixels
        self.n_updates = 0

        self.sliders = {lab.name: self._slider(lab) for lab in L.LABELS}
        self.reset_button = pn.widgets.Button(label="Reset labels", color="default")
        self.best_fit_button = pn.widgets.Button(label="Copy best fit", color="primary",
                                                 disabled=True, description="Set the sliders to the last fit")
        self.truth_button = pn.widgets.Button(label="True labels (simulated star)", visible=False)
        options = {"(none)": _NO_ELEMENT, **{lab.element.symbol: lab.name for lab in L.abundance_labels()}}
        self.element_select = pn.widgets.Select.from_param(self.param.element, options=options,
                                                           label="Show an element", width=150)
        self.zoom_buttons = [pn.widgets.Button(label=n, color="light", margin=(2, 2)) for n in NAMED_WINDOWS]
        self.full_button = pn.widgets.Button(label="Full range", color="light", margin=(2, 2))
        self.strongest_button = pn.widgets.Button(label="Strongest lines of the element", color="light",
                                                  margin=(2, 2), disabled=True)
        self.domain_alert = pn.pane.Alert("", alert_type="warning", visible=False, sizing_mode="stretch_width")
        self.model_alert = pn.pane.Alert(self.emulator_message, alert_type="info",
                                         visible=bool(self.emulator_message), sizing_mode="stretch_width")
        self.quality_pane = pn.pane.Markdown("", visible=False, sizing_mode="stretch_width", margin=(0, 10))

        self.reset_button.on_click(lambda _e: self.reset())
        self.best_fit_button.on_click(lambda _e: self.copy_best_fit())
        self.truth_button.on_click(lambda _e: self.set_labels(self.true_labels or {}))
        for button in self.zoom_buttons:
            button.on_click(lambda _e, name=button.label: self.zoom(*NAMED_WINDOWS[name]))
        self.full_button.on_click(lambda _e: self.zoom_full())
        self.strongest_button.on_click(lambda _e: self.zoom_strongest())
        self.labels.param.watch(self._on_labels, L.label_names())
        for slider in self.sliders.values():
            slider.on_release(lambda _e: self.refresh_element())
        if self.emulator is None:
            for slider in self.sliders.values():
                slider.disabled = True
        self._update_model(full=True)

    # ------------------------------------------------------------------ widgets
    def _slider(self, lab: L.Label) -> LabelSlider:
        return LabelSlider(self.labels, lab.name, step=lab.step, fmt=_format(lab.step),
                           debounce_ms=SLIDER_DEBOUNCE_MS, sizing_mode="stretch_width", margin=0)

    def slider_groups(self):
        """One tab per schema group, atmosphere first. A group's sliders are sent to the browser
        when its tab is first opened (:class:`LazyTabs`; 32 sliders up front cost ~1 s of page
        load on a busy 2-core machine)."""
        tabs = []
        for group in L.GROUPS:
            items = [self.sliders[lab.name] for lab in L.LABELS if lab.group == group]
            tabs.append(pn.Column(*items, name=f"{group} ({len(items)})", sizing_mode="stretch_width"))
        return LazyTabs(*tabs, sizing_mode="stretch_width", margin=(4, 0))

    def controls(self):
        return pn.Column(
            pn.Row(self.reset_button, self.best_fit_button, sizing_mode="stretch_width"),
            self.truth_button, self.slider_groups(), sizing_mode="stretch_width",
        )

    def zoom_bar(self):
        return pn.Row(pn.pane.Markdown("**Zoom:**", margin=(8, 4)), *self.zoom_buttons, self.full_button,
                      self.element_select, self.strongest_button, sizing_mode="stretch_width")

    # ------------------------------------------------------------------ label state
    def vector(self) -> np.ndarray:
        """The current labels in schema order, shape (32,)."""
        return np.array([getattr(self.labels, n) for n in L.label_names()], dtype=float)

    def label_dict(self) -> dict[str, float]:
        return {n: float(getattr(self.labels, n)) for n in L.label_names()}

    def set_labels(self, values) -> None:
        """Set many labels at once (dict of any aliases, or a (32,) vector), clipped to the
        schema's ranges; one model update."""
        if not isinstance(values, dict):
            values = L.to_dict(values)
        new = {}
        for key, value in values.items():
            try:
                lab = L.get_label(key)
            except L.LabelError:
                continue
            if value is None or not np.isfinite(value):
                continue
            new[lab.name] = float(np.clip(value, lab.lo, lab.hi))
        if new:
            self.labels.param.update(**new)
        self.refresh_element()

    def reset(self) -> None:
        self.set_labels(L.to_dict(L.defaults()))

    def copy_best_fit(self) -> None:
        if self.best_fit:
            self.set_labels(self.best_fit)

    @param.depends("best_fit", watch=True)
    def _sync_best_fit(self):
        self.best_fit_button.disabled = not self.best_fit

    @param.depends("true_labels", watch=True)
    def _sync_truth(self):
        self.truth_button.visible = bool(self.true_labels)

    @param.depends("domain_warning", watch=True)
    def _sync_domain(self):
        self.domain_alert.param.update(object=self.domain_warning, visible=bool(self.domain_warning))

    @param.depends("element", watch=True)
    def _on_element(self):
        self.strongest_button.disabled = not self.element or self.emulator is None
        if self.element:
            lab = L.get_label(self.element)
            self.strongest_button.label = f"Strongest {lab.element.symbol} lines"
        self.refresh_element()

    # ------------------------------------------------------------------ observation
    def prepare(self, spec) -> Observation:
        """``spec`` as this model compares with it (see :func:`prepare_observation`)."""
        if self.emulator is None:
            return prepare_observation(spec)
        from phdlspec_app.fitting.fit import model_error_terms
        from phdlspec_app.fitting.likelihood import Likelihood

        sigma, basis, local = model_error_terms(self.emulator)
        obs = prepare_observation(spec, self._model_wl, float(getattr(self.emulator, "resolution", 1800.0)),
                                  model_error=(sigma, basis, local) if sigma is not None else None)
        if obs.prepared is not None:
            # the live chi^2 is the fit's: the same likelihood, over all 32 labels
            obs.likelihood = Likelihood(self.emulator, obs.prepared, np.arange(len(L.LABELS)), self.vector())
        return obs

    def set_observation(self, obs: Observation | None) -> None:
        """Show the model on ``obs``'s pixels (None: on the emulator's own grid)."""
        self.observation = obs
        self._update_model(full=True)
        self.refresh_element()

    def _display_wavelength(self) -> np.ndarray | None:
        if self.observation is not None:
            return self.observation.wavelength
        return self._model_wl

    # ------------------------------------------------------------------ model updates
    def _on_labels(self, *_events) -> None:
        self._update_model(full=False)

    def _evaluate(self, rows: np.ndarray) -> np.ndarray:
        """Emulator flux for ``rows`` (K, 32) on the display pixels, (K, W)."""
        flux = np.atleast_2d(np.asarray(self.emulator(rows), dtype=float))
        flux = interp_to(self._display_wavelength(), self._model_wl, flux)
        obs = self.observation
        if obs is not None and obs.model_transform is not None:
            flux = np.asarray(obs.model_transform(flux), dtype=float)
        return flux

    def _update_model(self, full: bool) -> None:
        if self.emulator is None:
            self.layers.clear()
            return
        vec = self.vector()
        rows = [vec]
        idx = L.get_label(self.element).index if self.element else None
        if idx is not None:
            for sign in (+1, -1):
                row = vec.copy()
                row[idx] += sign * ELEMENT_DELTA
                rows.append(row)
        try:
            flux = self._evaluate(np.stack(rows))
            bad = self.emulator.domain_violations(vec[None, :])[0]
        except Exception as exc:  # the model must never take the session down
            log.exception("emulator evaluation failed")
            self.emulator_message = f"The emulator failed at these labels ({type(exc).__name__}: {exc})."
            self.model_alert.param.update(object=self.emulator_message, visible=True)
            return
        model = flux[0].astype(np.float32)
        obs = self.observation
        residual = (obs.flux - flux[0]).astype(np.float32) if obs is not None else np.full_like(model, np.nan)
        self._update_quality(obs, flux[0])
        if full or len(self.layers.source.data["wavelength"]) != model.size:
            self.layers.set_model(self._display_wavelength(), model, residual)
        else:
            self.layers.update_model(model, residual)
        if idx is not None and self._jac_row is not None and len(self._jac_row) == model.size:
            self.layers.element_source.data.update(plus=flux[1].astype(np.float32),
                                                   minus=flux[2].astype(np.float32))
        self.domain_warning = ("Outside the emulator's training domain: "
                               + ", ".join(display_name(L.get_label(n)) for n in bad)
                               + ". The model is an extrapolation there.") if bad else ""
        self.n_updates += 1

    def _update_quality(self, obs: Observation | None, model: np.ndarray) -> None:
        """The live chi^2 readout: the fit's own figure of merit for the slider labels."""
        if obs is None or obs.normalization != "fitting":
            # on the file's own pixels the model is not what the fit compares: no chi^2 shown
            self.param.update(chi2=None, chi2_pixels=0)
            self.quality_pane.param.update(object="", visible=False)
            return
        chi2, n = obs.chi2(model)
        self.param.update(chi2=chi2 if n else None, chi2_pixels=n)
        if not n:
            self.quality_pane.param.update(object="", visible=False)
            return
        if obs.prepared.ivar_y_obs is None:
            what = "data noise"
        elif obs.prepared.model_basis is not None:
            what = "data noise and the emulator's error spectrum, its correlated part included"
        else:
            what = "data noise and the emulator's error spectrum"
        self.quality_pane.param.update(
            object=f"**Live model:** χ² = {chi2:.0f} over {n} pixels, χ²/pixel = {chi2 / n:.2f} "
                   f"(variance: {what}, as the fit counts it)", visible=True)

    def refresh_element(self) -> None:
        """Recompute the selected element's sensitive pixels (jacobian) and +/-0.2 dex models;
        re-centre the correlated model error on the labels (as the fit does at its optimum)."""
        obs = self.observation
        if self.emulator is not None and obs is not None and getattr(obs.likelihood, "model_error_varies", False):
            try:
                vec = self.vector()
                obs.likelihood.linearize_model_error(vec)
                self._update_quality(obs, obs.likelihood.model(vec[None]).numpy()[0])
            except Exception:  # the readout must never take the session down
                log.exception("model error linearization failed")
        if self.emulator is None or not self.element:
            self._jac_row = None
            self.layers.clear_element()
            self.element_version += 1
            return
        lab = L.get_label(self.element)
        vec = self.vector()
        try:
            jac = np.asarray(self.emulator.jacobian(vec[None, :]), dtype=float)[0, lab.index]
            rows = np.stack([vec + ELEMENT_DELTA * np.eye(32)[lab.index], vec - ELEMENT_DELTA * np.eye(32)[lab.index]])
            flux = self._evaluate(rows)
        except Exception as exc:
            log.exception("element layers failed")
            self.emulator_message = f"The emulator failed for {lab.element.symbol} ({type(exc).__name__}: {exc})."
            return
        wl = self._display_wavelength()
        self._jac_row = interp_to(wl, self._model_wl, jac)
        sensitive = np.abs(self._jac_row) * ELEMENT_DELTA > SHADE_THRESHOLD
        self.layers.set_element(wl, flux[0].astype(np.float32), flux[1].astype(np.float32),
                                np.where(sensitive, -5.0, np.nan), np.where(sensitive, 5.0, np.nan))
        self.element_version += 1

    def sensitive_fraction(self) -> float:
        """Fraction of the display pixels shaded for the selected element (0 when none)."""
        if self._jac_row is None:
            return 0.0
        return float(np.mean(np.abs(self._jac_row) * ELEMENT_DELTA > SHADE_THRESHOLD))

    # ------------------------------------------------------------------ zoom
    def zoom(self, lo: float, hi: float) -> None:
        """Show ``lo``..``hi`` Angstrom in both panels, with the flux axis fitted to it."""
        x = self.figure.figure.x_range
        x.update(start=lo, end=hi)
        src = self.figure.source.data
        wl = np.asarray(src.get("wavelength", []), float)
        vals = []
        if wl.size:
            inside = (wl >= lo) & (wl <= hi)
            vals.append(np.asarray(src["flux_good"], float)[inside])
        mwl = np.asarray(self.layers.source.data.get("wavelength", []), float)
        if mwl.size:
            vals.append(np.asarray(self.layers.source.data["model"], float)[(mwl >= lo) & (mwl <= hi)])
        vals = np.concatenate(vals) if vals else np.array([])
        vals = vals[np.isfinite(vals)]
        if vals.size:
            top, bottom = float(vals.max()), float(vals.min())
            pad = 0.08 * max(top - bottom, 0.05)
            self.figure.figure.y_range.update(start=bottom - pad, end=top + pad)

    def zoom_full(self) -> None:
        wl = self._display_wavelength()
        if wl is None:
            return
        self.figure.figure.x_range.update(start=float(wl[0]), end=float(wl[-1]))
        yr = self.figure.figure.y_range
        if yr.reset_start is not None and yr.reset_end is not None and self.observation is not None:
            yr.update(start=yr.reset_start, end=yr.reset_end)
        else:
            yr.update(start=0.0, end=1.15)

    def element_derivative(self) -> np.ndarray | None:
        """d flux / d(selected label) on the display pixels (per dex; None without element)."""
        return self._jac_row

    def strongest_features(self, n: int = 8, min_separation: float = 10.0) -> list[float]:
        """Wavelengths (Angstrom) of the ``n`` largest |d flux / d element| peaks, at least
        ``min_separation`` apart, strongest first."""
        if self._jac_row is None:
            return []
        wl = self._display_wavelength()
        j = np.abs(np.nan_to_num(self._jac_row))
        picked: list[float] = []
        for i in np.argsort(j)[::-1]:
            if j[i] * ELEMENT_DELTA <= SHADE_THRESHOLD or len(picked) >= n:
                break
            if all(abs(wl[i] - w) >= min_separation for w in picked):
                picked.append(float(wl[i]))
        return picked

    def strongest_window(self, half_width: float = 30.0) -> tuple[float, float] | None:
        """A window around the selected element's most sensitive pixel."""
        if self._jac_row is None:
            return None
        wl = self._display_wavelength()
        j = np.abs(np.nan_to_num(self._jac_row))
        c = float(wl[int(np.argmax(j))])
        return c - half_width, c + half_width

    def zoom_strongest(self) -> None:
        win = self.strongest_window()
        if win is not None:
            self.zoom(*win)
