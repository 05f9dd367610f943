"""Tabs whose contents reach the browser the first time they are opened, and stay there."""
from __future__ import annotations

import panel as pn

__all__ = ["LazyTabs"]


class LazyTabs(pn.viewable.Viewer):
    """``pn.Tabs`` over ``panes`` (each titled by its ``name``) where only the first is rendered
    with the page; each other one is rendered when its tab is first opened and is kept.

    Panel's ``Tabs(dynamic=True)`` also defers the unopened tabs, but it drops a tab's models
    when another tab is opened and rebuilds them on return: coming back to the spectrum tab
    after the Fit tab left it blank for 1–5 s while both figures (3909-pixel sources) were
    re-sent. Here switching tabs is a browser-side switch once each has been opened.
    """

    def __init__(self, *panes, **tabs_params):
        super().__init__()
        self._panes = list(panes)
        self._slots = [pn.Column(pane, name=pane.name, sizing_mode="stretch_width", margin=0) if i == 0
                       else pn.Column(name=pane.name, sizing_mode="stretch_width", margin=0)
                       for i, pane in enumerate(panes)]
        self._opened = {0}
        self.tabs = pn.Tabs(*self._slots, dynamic=False, **tabs_params)
        self.tabs.param.watch(self._on_active, "active")

    def _on_active(self, event) -> None:
        self.open(event.new)

    def open(self, index: int) -> None:
        """Render tab ``index`` now (it is then kept); does not switch to it."""
        if index in self._opened or not 0 <= index < len(self._panes):
            return
        self._opened.add(index)
        self._slots[index].objects = [self._panes[index]]

    @property
    def panes(self) -> tuple:
        """The tabs' contents, rendered or not, in tab order."""
        return tuple(self._panes)

    @property
    def opened(self) -> frozenset[int]:
        """Indices of the tabs rendered so far."""
        return frozenset(self._opened)

    @property
    def active(self) -> int:
        return self.tabs.active

    @active.setter
    def active(self, index: int) -> None:
        self.tabs.active = index

    def __panel__(self):
        return self.tabs
