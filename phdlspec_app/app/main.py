"""Entry point for ``panel serve phdlspec_app/app/main.py``.

Large uploads need ``--websocket-max-message-size 60000000`` (``phdlspec_app.app.serve``
sets this itself); the data directory comes from ``$PHDLSPEC_DATA`` or ``../shared``.
"""
import panel as pn

from phdlspec_app.app import create_app

# Only build the page when a server runs this file, so importing it (tests, tools) does nothing.
if pn.state.served or __name__.startswith("bokeh"):
    create_app(start_demo=True).servable()
