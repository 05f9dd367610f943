"""Which files the dashboard offers from the data directory (no Panel import here)."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["NOT_SPECTRA", "SPECTRUM_SUFFIXES", "find_lamost_files", "is_spectrum_name", "list_spectrum_files"]

#: File-name endings the readers understand. ``.fits.gz`` is listed before ``.fits`` only for
#: readability; matching is done on the whole lower-cased name.
SPECTRUM_SUFFIXES = (".fits.gz", ".fits", ".fit", ".csv", ".txt", ".ecsv", ".dat")

#: Files that carry a spectrum suffix but are not spectra: the data directory's inventory
#: table would otherwise be offered in the picker and fail to load.
NOT_SPECTRA = frozenset({"inventory.csv"})


def is_spectrum_name(name: str) -> bool:
    """True when ``name`` ends in one of :data:`SPECTRUM_SUFFIXES` (case-insensitive)."""
    lower = name.lower()
    return lower.endswith(SPECTRUM_SUFFIXES) and lower not in NOT_SPECTRA


def list_spectrum_files(root: str | os.PathLike) -> list[str]:
    """Spectrum files found recursively under ``root``, as sorted POSIX paths relative to it.

    Hidden files and folders (names starting with ``.``) are skipped.
    """
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and is_spectrum_name(name):
                found.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(found)


def find_lamost_files(data_dir: str | os.PathLike | None = None) -> tuple[Path | None, list[str], str]:
    """Locate ``<data>/spectra/lamost`` and list its spectra.

    Returns ``(root, files, message)``: ``root`` is None (and ``message`` says why) when there
    is no data directory; ``message`` is empty when files were found.
    """
    from phdlspec_app.paths import DataNotFoundError, lamost_spectra_dir

    try:
        root = lamost_spectra_dir(data_dir)
    except DataNotFoundError as exc:
        return None, [], f"No LAMOST data folder: {exc}"
    files = list_spectrum_files(root)
    if not files:
        return root, [], f"No spectrum files ({', '.join(SPECTRUM_SUFFIXES)}) under {root}"
    return root, files, ""
