"""Poll background work from a browser session's own event loop."""
from __future__ import annotations

import panel as pn

__all__ = ["SessionPoller"]


class SessionPoller:
    """Calls ``callback`` every ``period_ms`` on this session's event loop while started.

    Without a server session (unit tests) ``start`` does nothing: the test calls the
    callback itself. Widgets and Bokeh models may be changed in ``callback``; worker threads
    must only write plain attributes that the callback reads.
    """

    def __init__(self, callback, period_ms: int = 250):
        self.callback, self.period_ms = callback, period_ms
        self._cb = None

    def start(self) -> None:
        doc = pn.state.curdoc
        if doc is None or doc.session_context is None:
            return
        self.stop()
        self._cb = pn.state.add_periodic_callback(self.callback, period=self.period_ms)

    def stop(self) -> None:
        if self._cb is not None:
            self._cb.stop()
            self._cb = None
