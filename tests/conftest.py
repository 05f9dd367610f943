"""Shared fixtures.

Tests that need the shared data directory use the ``shared_dir`` fixture: it skips
with a clear reason when the data are absent, unless ``PHDLSPEC_REQUIRE_DATA=1``
(CI sets it), in which case absence is a failure.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from phdlspec_app.paths import DataNotFoundError, data_dir


def _shared() -> Path | None:
    try:
        return data_dir()
    except DataNotFoundError:
        return None


SHARED = _shared()
LAMOST_DIR = SHARED / "spectra" / "lamost" if SHARED else None


def lamost_files() -> list[Path]:
    """Every real LAMOST spectrum in the shared data (empty when absent)."""
    if not LAMOST_DIR or not LAMOST_DIR.is_dir():
        return []
    return sorted(p for p in LAMOST_DIR.rglob("*") if p.name.endswith((".fits", ".fits.gz")))


def _missing(reason: str):
    if os.environ.get("PHDLSPEC_REQUIRE_DATA") == "1":
        pytest.fail(f"{reason} (PHDLSPEC_REQUIRE_DATA=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data directory; skips (or fails in CI) when it is absent."""
    if SHARED is None:
        _missing("shared data directory not found: set PHDLSPEC_DATA or place shared/ beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def lamost_dir(shared_dir) -> Path:
    path = shared_dir / "spectra" / "lamost"
    if not path.is_dir():
        _missing(f"{path} not found in the shared data directory")
    return path


@pytest.fixture(scope="session")
def double_stars(tmp_path_factory) -> list[Path]:
    """``fitting_double.TRUTHS`` as S/N 60 spectra from the test double, ``star<i>.ecsv``
    alone in one folder (fit-batch tests take the folder). Read-only for the tests."""
    from fitting_double import TRUTHS, LineDouble, noisy_spectrum

    from phdlspec_app.io import write_spectrum

    d = tmp_path_factory.mktemp("double_stars")
    emu = LineDouble()
    paths = []
    for i, t in enumerate(TRUTHS):
        p = d / f"star{i}.ecsv"
        write_spectrum(noisy_spectrum(emu, t, 60, seed=i, meta={"obsid": 1000 + i, "designation": f"J{i}"}), p)
        paths.append(p)
    return paths
