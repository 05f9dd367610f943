"""PhDLspec's web dashboard (Panel).

Importing this package has no side effects and does not import Panel; Panel is imported
when :func:`create_app` or :func:`serve` is called.

    >>> from phdlspec_app.app import create_app, serve
    >>> viewer = create_app()          # a pn.viewable.Viewer; viewer.load_path("cmost/spec-...fits.gz")
    >>> serve(port=5006)               # blocks; one viewer per browser session

or ``panel serve phdlspec_app/app/main.py``.
"""
from __future__ import annotations

import os

__all__ = ["create_app", "serve"]


def create_app(data_dir: str | os.PathLike | None = None, emulator="auto", start_demo: bool = False, fit=None):
    """A new :class:`~phdlspec_app.app.viewer.SpectrumViewer` (one per browser session).

    ``data_dir`` is the data directory (the folder holding ``spectra/lamost``); None uses
    :func:`phdlspec_app.paths.data_dir`'s search order. ``emulator``: an object with the
    emulator's API, ``"auto"`` (``phdlspec_app.emulator.load_emulator()``, loaded once per
    process) or None. ``start_demo`` opens the default embedded demo star. ``fit`` replaces
    ``phdlspec_app.fitting.fit_spectrum`` (tests).
    """
    from .viewer import SpectrumViewer

    return SpectrumViewer(data_dir=data_dir, emulator=emulator, start_demo=start_demo, fit=fit)


def serve(port: int = 5006, address: str = "localhost", show: bool = True,
          data_dir: str | os.PathLike | None = None, emulator="auto", **kwargs):
    """Serve the dashboard and block; see :func:`phdlspec_app.app.server.serve`."""
    from .server import serve as _serve

    return _serve(port=port, address=address, show=show, data_dir=data_dir, emulator=emulator, **kwargs)
