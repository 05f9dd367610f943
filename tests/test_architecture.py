"""Dependencies point one way: io -> physics -> preprocess -> emulator -> fitting -> calibration -> app."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "phdlspec_app"
ORDER = ["io", "physics", "preprocess", "emulator", "fitting", "calibration", "app"]
BASE = {"labels", "paths", "__init__"}  # shared by every layer; import no stage


def _imported_stages(path: Path):
    tree = ast.parse(path.read_text())
    rel_parts = path.relative_to(PKG).with_suffix("").parts
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # resolve relative imports against the module's package
                base = list(rel_parts[:-1])[: len(rel_parts) - node.level] if node.level > 1 else list(rel_parts[:-1])
                mod = ".".join(["phdlspec_app", *base] + ([node.module] if node.module else []))
                names = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        for name in names:
            parts = name.split(".")
            if parts[0] == "phdlspec_app" and len(parts) > 1:
                yield parts[1], node.lineno


def _modules():
    return sorted(p for p in PKG.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_no_upward_imports(path):
    rel = path.relative_to(PKG)
    own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    if own == "cli":
        return  # the command line composes every layer
    for stage, line in _imported_stages(path):
        if stage not in ORDER:
            continue
        if own in BASE:
            pytest.fail(f"{rel}:{line} imports stage {stage!r}; labels/paths must not depend on any stage")
        assert ORDER.index(stage) <= ORDER.index(own), f"{rel}:{line}: {own} must not import {stage}"


def test_every_stage_is_a_package():
    for stage in ORDER:
        assert (PKG / stage / "__init__.py").is_file()


def test_checker_catches_an_upward_import(tmp_path, monkeypatch):
    bad = PKG / "io" / "_tmp_upward_probe.py"
    bad.write_text("from ..app import serve\n")
    try:
        stages = list(_imported_stages(bad))
        assert ("app", 1) in stages
    finally:
        bad.unlink()
