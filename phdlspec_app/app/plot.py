"""The spectrum figure: one long-lived Bokeh figure whose data sources are updated in place.

Pure Bokeh (no Panel), so the column logic can be tested without a server.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from bokeh.models import ColumnDataSource, HoverTool, Range1d
from bokeh.plotting import figure

__all__ = [
    "ELEMENT_SOURCE_NAME",
    "MASKED_SOURCE_NAME",
    "MODEL_SOURCE_NAME",
    "ModelLayers",
    "SPECTRUM_SOURCE_NAME",
    "SpectrumFigure",
    "masked_columns",
    "robust_range",
    "spectrum_columns",
]

#: Names of the data sources, so browser tests can find them with
#: ``Bokeh.documents[0].get_model_by_name(...)``.
SPECTRUM_SOURCE_NAME = "spectrum_source"
MASKED_SOURCE_NAME = "masked_source"
SPECTRUM_FIGURE_NAME = "spectrum_figure"  # found by name in the browser tests
#: The live model (columns ``wavelength``, ``model``, ``residual``) and the selected element's
#: layers (``wavelength``, ``plus``, ``minus``: the model at +/-0.2 dex; ``shade``: NaN except
#: where the element's differential spectrum is significant).
MODEL_SOURCE_NAME = "model_source"
ELEMENT_SOURCE_NAME = "element_source"
MODEL_KEYS = ("wavelength", "model", "residual")
ELEMENT_KEYS = ("wavelength", "plus", "minus", "shade_lo", "shade_hi")

_SPECTRUM_KEYS = ("wavelength", "flux", "flux_good", "sigma", "lower", "upper")
_MASKED_KEYS = ("wavelength", "flux")


def spectrum_columns(spec) -> dict[str, np.ndarray]:
    """Columns for every pixel of ``spec`` (a :class:`~phdlspec_app.io.Spectrum`).

    ``wavelength`` is vacuum Angstrom; ``flux`` and ``sigma`` are in the file's flux units.
    ``flux_good``/``lower``/``upper`` are NaN at masked pixels (and ``lower``/``upper``
    also where ivar <= 0), which makes Bokeh break the line and the error band there
    instead of drawing across bad pixels.
    """
    good = ~spec.mask
    sigma = spec.sigma  # inf where ivar <= 0
    known = good & np.isfinite(sigma)
    flux_good = np.where(good, spec.flux, np.nan)
    return {
        "wavelength": spec.wavelength,
        "flux": spec.flux,
        "flux_good": flux_good,
        "sigma": np.where(np.isfinite(sigma), sigma, np.nan),
        "lower": np.where(known, spec.flux - sigma, np.nan),
        "upper": np.where(known, spec.flux + sigma, np.nan),
    }


def masked_columns(spec) -> dict[str, np.ndarray]:
    """Wavelength (vacuum Angstrom) and flux of the masked pixels only."""
    return {"wavelength": spec.wavelength[spec.mask], "flux": spec.flux[spec.mask]}


def robust_range(values: np.ndarray, lo_pct: float = 0.2, hi_pct: float = 99.8,
                 pad: float = 0.08) -> tuple[float, float] | None:
    """(start, end) spanning the ``lo_pct``..``hi_pct`` percentiles of the finite values, padded.

    Percentiles rather than min/max so a single cosmic ray or a bad end pixel does not
    squash the whole spectrum into a flat line. None when there is no finite value.
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    lo, hi = np.percentile(values, [lo_pct, hi_pct])
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    return float(lo - pad * span), float(hi + pad * span)


def _empty(keys) -> dict[str, np.ndarray]:
    return {k: np.array([], dtype=float) for k in keys}


@dataclass
class SpectrumFigure:
    """The figure and its two data sources (the pixels, and the masked pixels)."""

    figure: figure
    source: ColumnDataSource
    masked_source: ColumnDataSource

    @classmethod
    def create(cls, height: int = 430) -> SpectrumFigure:
        """Build the (empty) figure once per session."""
        source = ColumnDataSource(_empty(_SPECTRUM_KEYS), name=SPECTRUM_SOURCE_NAME)
        masked = ColumnDataSource(_empty(_MASKED_KEYS), name=MASKED_SOURCE_NAME)
        # Explicit Range1d (not auto DataRange1d): ranges are set from robust percentiles on
        # each load, so a new file is always shown whole even after the user zoomed.
        fig = figure(
            height=height, sizing_mode="stretch_width", title="No spectrum loaded", name=SPECTRUM_FIGURE_NAME,
            x_range=Range1d(3700, 9100), y_range=Range1d(0, 1),
            x_axis_label="Vacuum wavelength (Å)", y_axis_label="Flux (file units)",
            tools="pan,xwheel_zoom,box_zoom,reset,save", active_scroll="xwheel_zoom",
        )
        fig.varea("wavelength", "lower", "upper", source=source, fill_color="#1f77b4",
                  fill_alpha=0.25, legend_label="±1σ (from ivar)")
        line = fig.line("wavelength", "flux_good", source=source, line_color="#1f4e79",
                        line_width=1, legend_label="flux")
        fig.scatter("wavelength", "flux", source=masked, marker="x", size=6,
                    line_color="#d62728", line_width=1.5, legend_label="masked pixel")
        fig.add_tools(HoverTool(renderers=[line], mode="vline", tooltips=[
            ("λ (Å, vacuum)", "@wavelength{0.00}"), ("flux", "@flux{0.000}"),
            ("σ", "@sigma{0.000}")]))
        fig.legend.location = "top_right"
        fig.legend.click_policy = "hide"  # lets the user hide the band or the masked markers
        fig.legend.background_fill_alpha = 0.7
        return cls(fig, source, masked)

    def show(self, spec, title: str) -> None:
        """Replace the plotted data with ``spec`` (in place: same figure, same sources)."""
        cols = spectrum_columns(spec)
        self.source.data = cols
        self.masked_source.data = masked_columns(spec)
        self.figure.title.text = title
        self._set_range(self.figure.x_range, robust_range(spec.wavelength, 0, 100, pad=0.01))
        band = np.concatenate([cols["flux_good"], cols["lower"], cols["upper"]])
        self._set_range(self.figure.y_range, robust_range(band))

    def clear(self, title: str = "No spectrum loaded") -> None:
        """Empty the plot (after a failed load, so it never shows a stale spectrum)."""
        self.source.data = _empty(_SPECTRUM_KEYS)
        self.masked_source.data = _empty(_MASKED_KEYS)
        self.figure.title.text = title

    @staticmethod
    def _set_range(rng: Range1d, span: tuple[float, float] | None) -> None:
        if span is None:
            return
        # reset_start/reset_end make the Reset tool return to this file's view.
        rng.update(start=span[0], end=span[1], reset_start=span[0], reset_end=span[1])


@dataclass
class ModelLayers:
    """The live model drawn over a :class:`SpectrumFigure`, and the residual figure beneath it.

    Two data sources whose columns are replaced in place on every slider move: ``source``
    (model and residual) and ``element_source`` (the selected element's +/-0.2 dex models and
    the shading of its sensitive pixels). The residual figure shares the spectrum's x range,
    so zooming or panning one moves both.
    """

    source: ColumnDataSource
    element_source: ColumnDataSource
    residual_figure: figure

    @classmethod
    def create(cls, spectrum: SpectrumFigure, height: int = 190) -> ModelLayers:
        source = ColumnDataSource(_empty(MODEL_KEYS), name=MODEL_SOURCE_NAME)
        element = ColumnDataSource(_empty(ELEMENT_KEYS), name=ELEMENT_SOURCE_NAME)
        fig = spectrum.figure
        # Shading below everything else, so the data stay readable.
        fig.varea("wavelength", "shade_lo", "shade_hi", source=element, fill_color="#ffb000",
                  fill_alpha=0.25, legend_label="element-sensitive pixels")
        fig.line("wavelength", "plus", source=element, line_color="#2ca02c", line_width=1,
                 line_dash="dashed", legend_label="model +0.2 dex")
        fig.line("wavelength", "minus", source=element, line_color="#9467bd", line_width=1,
                 line_dash="dashed", legend_label="model −0.2 dex")
        fig.line("wavelength", "model", source=source, line_color="#d62728", line_width=1.3,
                 legend_label="emulator model")
        fig.legend.update(label_text_font_size="8pt", spacing=0, padding=4, glyph_height=12)
        res = figure(
            height=height, sizing_mode="stretch_width", x_range=fig.x_range, y_range=Range1d(-0.2, 0.2),
            x_axis_label="Vacuum wavelength (Å)", y_axis_label="data − model",
            tools="pan,xwheel_zoom,box_zoom,reset,save", active_scroll="xwheel_zoom",
        )
        res.line("wavelength", "residual", source=source, line_color="#333333", line_width=1)
        res.line(x=[0, 20000], y=[0, 0], line_color="#d62728", line_width=1, line_dash="dotted")
        return cls(source, element, res)

    def set_model(self, wavelength, model, residual) -> None:
        """Replace the model columns (one change event for the browser)."""
        self.source.data = {"wavelength": wavelength, "model": model, "residual": residual}

    def update_model(self, model, residual) -> None:
        """Update model and residual in place (same length as before): the fast path."""
        self.source.data.update(model=model, residual=residual)

    def set_element(self, wavelength, plus, minus, shade_lo, shade_hi) -> None:
        self.element_source.data = {"wavelength": wavelength, "plus": plus, "minus": minus,
                                    "shade_lo": shade_lo, "shade_hi": shade_hi}

    def clear_element(self) -> None:
        self.element_source.data = _empty(ELEMENT_KEYS)

    def clear(self) -> None:
        self.source.data = _empty(MODEL_KEYS)
        self.clear_element()
