"""Start the dashboard's web server."""
from __future__ import annotations

import logging
import os
import threading

import panel as pn

from . import create_app
from .viewer import MAX_UPLOAD_BYTES, TITLE

__all__ = ["SPARE_DELAY_S", "WEBSOCKET_MAX_MESSAGE_BYTES", "SparePages", "app_factory", "serve"]

log = logging.getLogger(__name__)

#: Seconds after a page is handed out before the next spare is built: the new session's own
#: document is still being serialized and sent then, and the build would compete for the GIL.
SPARE_DELAY_S = 3.0

#: FileInput sends the whole file base64-encoded (4/3 of its size) in one websocket message;
#: Bokeh's default cap (20 MB) would drop the connection for files well under the 20 MB upload
#: limit instead of letting the app refuse them with a message. 3x the limit leaves room.
WEBSOCKET_MAX_MESSAGE_BYTES = 3 * MAX_UPLOAD_BYTES


class SparePages:
    """Hands out pages built ahead of time: each call returns the spare page when one is ready
    (else builds one), then builds the next spare in a background thread ``delay_s`` later.

    Building a session's page (32 label controls, the fit, teaching and calibration panels) is
    Python work of about a second on this machine, paid on every page load; with a spare it is
    paid between visits instead. A spare is a pristine page that no session has seen: it is
    handed out once, so sessions still never share state.
    """

    def __init__(self, build, delay_s: float = SPARE_DELAY_S, prime: bool = False):
        self._build, self.delay_s = build, delay_s
        self._lock = threading.Lock()
        self._spare = None
        self._pending = False
        if prime:  # the server's first visitor gets a ready page too
            self._schedule(0.0)

    def __call__(self):
        with self._lock:
            page, self._spare = self._spare, None
        log.debug("page for a new session: %s", "the spare" if page is not None else "built now")
        page = page if page is not None else self._build()
        self._schedule()
        return page

    def _schedule(self, delay_s: float | None = None) -> None:
        with self._lock:
            if self._pending or self._spare is not None:
                return
            self._pending = True
        timer = threading.Timer(self.delay_s if delay_s is None else delay_s, self._fill)
        timer.daemon = True
        timer.start()

    def _fill(self) -> None:
        try:
            page = self._build()
        except Exception:  # the next visitor builds its own page; the error shows there
            log.exception("building a spare page failed")
            page = None
        with self._lock:
            self._pending = False
            if self._spare is None:
                self._spare = page


def app_factory(data_dir: str | os.PathLike | None = None, emulator="auto", start_demo: bool = True, fit=None,
                spare: bool = True):
    """A callable that builds a fresh page (the viewer's template) for each browser session,
    opened on the default demo star; with ``spare`` the next page is built ahead of time
    (:class:`SparePages`)."""

    def factory():
        return create_app(data_dir, emulator=emulator, start_demo=start_demo, fit=fit).__panel__()

    # pn.serve only calls plain functions and methods per session (any other object is served
    # as one shared page), hence the bound method
    return SparePages(factory, prime=True).__call__ if spare else factory


def serve(port: int = 5006, address: str = "localhost", show: bool = True,
          data_dir: str | os.PathLike | None = None, threaded: bool = False, emulator="auto",
          start_demo: bool = True, fit=None, spare: bool = True, **kwargs):
    """Serve the dashboard at ``http://{address}:{port}/``.

    ``emulator`` is shared by every session (see :func:`phdlspec_app.app.create_app`); each
    session opens on the default demo star unless ``start_demo=False``; ``spare`` builds each
    next session's page ahead of time (:class:`SparePages`). Blocks until interrupted unless ``threaded=True`` (then returns the server thread; stop
    it with ``pn.state.kill_all_servers()``). Extra keyword arguments go to :func:`pn.serve`.
    """
    kwargs.setdefault("websocket_max_message_size", WEBSOCKET_MAX_MESSAGE_BYTES)
    print(f"PhDLspec dashboard: http://{address}:{port}/  (Ctrl-C to stop)", flush=True)
    return pn.serve(app_factory(data_dir, emulator=emulator, start_demo=start_demo, fit=fit, spare=spare), port=port, address=address, show=show,
                    title=TITLE, threaded=threaded, **kwargs)
