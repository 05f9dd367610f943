"""Shared presentation helpers for the dashboard's result panes: table style, number format, PNG capture."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

__all__ = ["TABLE_CSS", "format_value", "render_png"]

#: Stylesheet for every ``<table class="phdlspec-fit">`` the panes emit.
TABLE_CSS = """
table.phdlspec-fit { border-collapse: collapse; font-size: 0.85rem; }
table.phdlspec-fit th { text-align: left; padding: 2px 10px 2px 0; border-bottom: 1px solid #ccc; }
table.phdlspec-fit td { padding: 2px 10px 2px 0; font-family: ui-monospace, monospace; }
table.phdlspec-fit tr.unconstrained td { color: #999; }
table.phdlspec-fit tr.fixed td { color: #1f4e79; }
"""


def format_value(value: float | None, step: float) -> str:
    """``value`` with one digit more than the label's slider ``step`` resolves; — for missing, ∞ for infinite."""
    if value is None or not np.isfinite(value):
        return "—" if value is None or np.isnan(value) else "∞"
    digits = 0 if step >= 1 else 1 if step >= 0.1 else 2 if step >= 0.01 else 3
    return f"{value:.{digits + 1}f}" if step < 1 else f"{value:.0f}"


def render_png(draw) -> bytes:
    """Run ``draw(path)`` (a plotting function that writes a file) and return the PNG bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "figure.png"
        draw(path)
        return path.read_bytes()
