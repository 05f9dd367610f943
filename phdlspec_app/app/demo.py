"""The embedded demo stars (``assets/demo/*.fits``, made by :mod:`phdlspec_app.app.make_demo`)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_DEMO", "demo_dir", "demo_stars"]

#: The star a new session opens on.
DEFAULT_DEMO = "solar_dwarf"

_TITLES = {"solar_dwarf": "Solar-type dwarf (simulated)", "k_giant": "K giant (simulated)",
           "metal_poor_turnoff": "Metal-poor turn-off (simulated)"}


def demo_dir() -> Path:
    from phdlspec_app.paths import assets_dir

    return assets_dir() / "demo"


def demo_stars() -> dict[str, Path]:
    """``{title: path}`` of the demo stars present, the default one first."""
    folder = demo_dir()
    paths = sorted(folder.glob("*.fits")) if folder.is_dir() else []
    paths.sort(key=lambda p: (p.stem != DEFAULT_DEMO, p.stem))
    return {_TITLES.get(p.stem, f"{p.stem} (simulated)"): p for p in paths}
