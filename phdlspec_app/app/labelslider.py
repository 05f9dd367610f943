"""One label's control: a slider with an editable number beside it, both bound to one param.

Panel's ``EditableFloatSlider`` does the same job as a composite of five widgets with JS links;
built 32 times per browser session it cost ~0.5 s of every page load (≈15 ms each against ≈3 ms
for this pair, measured in BENCHMARKS.md). Here a plain ``FloatSlider`` and a ``FloatInput``
are each linked both ways to the label's ``param.Number``: dragging moves the number, typing
moves the slider, and code that sets the param moves both.
"""
from __future__ import annotations

import panel as pn
import param

__all__ = ["LabelSlider"]


class LabelSlider(pn.viewable.Viewer):
    """A slider plus an editable number for ``owner.param[name]`` (a bounded ``param.Number``).

    ``start``/``end`` are the physical range (fixed: neither widget goes beyond it); ``value``
    reads and writes the param; ``disabled`` greys out both widgets. ``debounce_ms`` shortens
    Panel's 50 ms batching of the slider's browser events (None keeps Panel's default).
    """

    def __init__(self, owner: param.Parameterized, name: str, step: float, fmt: str,
                 debounce_ms: int | None = None, **layout):
        super().__init__()
        p = owner.param[name]
        self.owner, self.param_name = owner, name
        self.label = p.label
        self.start, self.end = p.bounds
        self.step = step
        value = getattr(owner, name)
        self.slider = pn.widgets.FloatSlider(
            name=self.label, start=self.start, end=self.end, step=step, value=value, format=fmt,
            show_value=False, sizing_mode="stretch_width", margin=(2, 4, 2, 8))
        self.number = pn.widgets.FloatInput(
            value=value, start=self.start, end=self.end, step=step, format=fmt, width=92,
            margin=(14, 8, 2, 0))
        if debounce_ms is not None and hasattr(self.slider, "_debounce"):
            self.slider._debounce = debounce_ms  # a private class attribute of Panel's sliders
        for widget in (self.slider, self.number):
            widget.link(owner, value=name, bidirectional=True)
        self._layout = pn.Row(self.slider, self.number, **layout)

    def __panel__(self):
        return self._layout

    @property
    def value(self) -> float:
        return getattr(self.owner, self.param_name)

    @value.setter
    def value(self, v: float) -> None:
        setattr(self.owner, self.param_name, v)

    @property
    def disabled(self) -> bool:
        return self.slider.disabled

    @disabled.setter
    def disabled(self, flag: bool) -> None:
        self.slider.disabled = self.number.disabled = bool(flag)

    def on_release(self, callback) -> None:
        """Call ``callback(event)`` when a drag ends (the slider's ``value_throttled``)."""
        self.slider.param.watch(callback, "value_throttled")
