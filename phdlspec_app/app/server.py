"""Start the dashboard's web server."""
from __future__ import annotations

import os

import panel as pn

from . import create_app
from .viewer import MAX_UPLOAD_BYTES, TITLE

__all__ = ["WEBSOCKET_MAX_MESSAGE_BYTES", "app_factory", "serve"]

#: FileInput sends the whole file base64-encoded (4/3 of its size) in one websocket message;
#: Bokeh's default cap (20 MB) would drop the connection for files well under the 20 MB upload
#: limit instead of letting the app refuse them with a message. 3x the limit leaves room.
WEBSOCKET_MAX_MESSAGE_BYTES = 3 * MAX_UPLOAD_BYTES


def app_factory(data_dir: str | os.PathLike | None = None, emulator="auto", start_demo: bool = True, fit=None):
    """A callable that builds a fresh page (the viewer's template) for each browser session,
    opened on the default demo star."""

    def factory():
        return create_app(data_dir, emulator=emulator, start_demo=start_demo, fit=fit).__panel__()

    return factory


def serve(port: int = 5006, address: str = "localhost", show: bool = True,
          data_dir: str | os.PathLike | None = None, threaded: bool = False, emulator="auto",
          start_demo: bool = True, fit=None, **kwargs):
    """Serve the dashboard at ``http://{address}:{port}/``.

    ``emulator`` is shared by every session (see :func:`phdlspec_app.app.create_app`); each
    session opens on the default demo star unless ``start_demo=False``. Blocks until interrupted unless ``threaded=True`` (then returns the server thread; stop
    it with ``pn.state.kill_all_servers()``). Extra keyword arguments go to :func:`pn.serve`.
    """
    kwargs.setdefault("websocket_max_message_size", WEBSOCKET_MAX_MESSAGE_BYTES)
    print(f"PhDLspec dashboard: http://{address}:{port}/  (Ctrl-C to stop)", flush=True)
    return pn.serve(app_factory(data_dir, emulator=emulator, start_demo=start_demo, fit=fit), port=port, address=address, show=show,
                    title=TITLE, threaded=threaded, **kwargs)
