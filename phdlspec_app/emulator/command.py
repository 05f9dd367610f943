"""Subcommands of the emulator layer for the ``phdlspec`` entry point (see ``phdlspec_app.cli``)."""
from __future__ import annotations


def add_parsers(sub) -> None:
    """Register this layer's subcommands on the argparse sub-parsers object ``sub``."""
