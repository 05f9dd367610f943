"""Where PhDLspec finds its data.

One place resolves the data directory (the layout of the project's ``shared/``
folder: ``physics/``, ``spectra/lamost/``, ``catalogs/``), in this order:

1. an explicit path given by the caller (the CLI's ``--data-dir``);
2. the environment variable ``PHDLSPEC_DATA``;
3. ``../shared`` next to the checkout (the folder beside the repository root),
   then ``../shared`` next to the current working directory.

Data are always read in place; nothing is ever copied into the repository.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["ENV_VAR", "DataNotFoundError", "data_dir", "require_data_dir", "set_data_dir",
           "physics_dir", "lamost_spectra_dir", "catalogs_dir", "repo_root", "assets_dir", "sha256_file"]

ENV_VAR = "PHDLSPEC_DATA"


class DataNotFoundError(FileNotFoundError):
    """The data directory (or a part of it) is not where PhDLspec looks for it."""


def repo_root() -> Path:
    """The checkout's root directory (the folder holding ``phdlspec_app/``)."""
    return Path(__file__).resolve().parent.parent


def assets_dir() -> Path:
    """The shipped artifacts (trained weights, demo stars): ``assets/`` of the checkout,
    or, in a non-editable install, the package data ``phdlspec_app/assets/`` it installs as."""
    installed = Path(__file__).resolve().parent / "assets"
    return installed if installed.is_dir() else repo_root() / "assets"


def _candidates(explicit: str | os.PathLike | None):
    if explicit:
        yield Path(explicit), "the path given"
    env = os.environ.get(ENV_VAR)
    if env:
        yield Path(env), f"${ENV_VAR}"
    yield repo_root().parent / "shared", "../shared beside the checkout"
    yield Path.cwd().parent / "shared", "../shared beside the working directory"


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The data directory, or None when none of the candidates exists.

    An explicit path or ``$PHDLSPEC_DATA`` that does not exist is an error
    (:class:`DataNotFoundError`): a user who names a folder wants that folder.
    """
    for path, why in _candidates(explicit):
        if path.is_dir():
            return path.resolve()
        if why in ("the path given", f"${ENV_VAR}"):
            raise DataNotFoundError(f"data directory {path} ({why}) does not exist")
    return None


def require_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Like :func:`data_dir` but raises :class:`DataNotFoundError` with a clear message."""
    path = data_dir(explicit)
    if path is None:
        raise DataNotFoundError(
            "no data directory found: set $PHDLSPEC_DATA or pass --data-dir to the folder "
            "holding physics/, spectra/ and catalogs/ (the project's shared/ folder)"
        )
    return path


def set_data_dir(path: str | os.PathLike) -> Path:
    """Make ``path`` the data directory for this process (what ``--data-dir`` does)."""
    resolved = Path(path).expanduser()
    if not resolved.is_dir():
        raise DataNotFoundError(f"data directory {resolved} (--data-dir) does not exist")
    os.environ[ENV_VAR] = str(resolved.resolve())
    return resolved.resolve()


def _sub(*parts: str, explicit=None) -> Path:
    path = require_data_dir(explicit).joinpath(*parts)
    if not path.exists():
        raise DataNotFoundError(f"{path} is missing from the data directory")
    return path


def physics_dir(explicit=None) -> Path:
    """``<data>/physics``: line lists, model atmospheres, atomic data."""
    return _sub("physics", explicit=explicit)


def lamost_spectra_dir(explicit=None) -> Path:
    """``<data>/spectra/lamost``: the real LAMOST spectra and their INVENTORY.csv."""
    return _sub("spectra", "lamost", explicit=explicit)


def catalogs_dir(explicit=None) -> Path:
    """``<data>/catalogs``: reference catalogs (benchmark stars, clusters, LASP labels)."""
    return _sub("catalogs", explicit=explicit)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (identifies data files in caches and manifests)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
