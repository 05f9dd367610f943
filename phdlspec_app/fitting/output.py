"""Result tables: rows (dicts from ``FitResult.to_row`` or ``result.error_row``) → ECSV,
FITS, JSON or Parquet by extension, always written to a temporary file in the same folder
and renamed, so that a reader never sees a half-written table."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from .. import labels as L

__all__ = ["FORMATS", "write_results", "read_results", "load_emulator_spec"]

FORMATS = (".ecsv", ".fits", ".json", ".parquet")
_TEXT = ("file", "obsid", "designation", "method", "flags", "error")


def _frame(rows):
    import pandas as pd

    df = pd.DataFrame(list(rows))
    for col in _TEXT:
        if col not in df:
            df[col] = ""
        df[col] = df[col].fillna("").astype(str)
    for name in L.label_names():
        if name not in df:
            df[name] = np.nan
    first = ["file", "obsid", "designation", "method"]
    return df[first + [c for c in df.columns if c not in first]]


def write_results(rows, path) -> Path:
    """Write rows to ``path`` (format from the extension: .ecsv, .fits, .json, .parquet)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise ValueError(f"{path}: output format must be one of {', '.join(FORMATS)}")
    df = _frame(rows)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=ext, dir=path.parent or ".")
    os.close(fd)
    try:
        if ext == ".parquet":
            df.to_parquet(tmp, index=False)
        elif ext == ".json":
            recs = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                    for r in json.loads(df.to_json(orient="records"))]
            Path(tmp).write_text(json.dumps(recs, indent=1))
        else:
            from astropy.table import Table

            t = Table.from_pandas(df)
            for name in L.label_names():
                unit = L.get_label(name).unit
                if unit != "dex":
                    t[name].unit = unit
            t.write(tmp, format="ascii.ecsv" if ext == ".ecsv" else "fits", overwrite=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_results(path) -> list[dict]:
    """Rows of a table written by :func:`write_results` (empty if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    ext = path.suffix.lower()
    if ext == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    if ext == ".json":
        return json.loads(path.read_text())
    from astropy.table import Table

    df = Table.read(path, format="ascii.ecsv" if ext == ".ecsv" else "fits").to_pandas()
    for col in _TEXT:   # empty strings come back masked
        if col in df:
            df[col] = df[col].fillna("").astype(str)
    return df.to_dict("records")


def load_emulator_spec(spec: str | None, device: str = "auto"):
    """An emulator from a command-line spec: None → the default model; ``module:function`` →
    that factory called with ``device=``; anything else → a model file for ``load_emulator``."""
    if spec and ":" in spec and not os.path.exists(spec):
        import importlib

        mod, func = spec.split(":", 1)
        return getattr(importlib.import_module(mod), func)(device=device)
    from ..emulator import load_emulator

    return load_emulator(path=spec, device=device)
