"""Survey batches on ``dask.distributed``: one task per star, results streamed to the output.

- A ``LocalCluster`` of ``workers`` processes (one torch thread each) by default, or an
  existing scheduler (``tcp://host:port``).
- Each worker loads the emulator once (cached per process) from a spec string (a model
  path, ``module:factory``, or None for the default model) — the emulator object itself is
  never shipped.
- A star whose worker dies is rescheduled by the scheduler on another worker (the
  ``distributed.scheduler.allowed-failures`` budget, 3 by default); a star that raises is
  retried ``retries`` times; a star that cannot be fitted (bad file, QSO, too coarse)
  gets a row with its ``error`` message.
- Results are written as they finish: the whole table is rewritten atomically (temporary
  file + rename) at most every ``flush_every`` seconds and at the end, so an interrupted
  batch leaves a valid table; ``resume`` skips inputs already in it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .output import load_emulator_spec, read_results, write_results

__all__ = ["list_inputs", "fit_one", "run_batch"]

_SPECTRUM_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fit.gz", ".ecsv", ".txt", ".csv", ".dat")
_EMULATORS: dict = {}


def list_inputs(source) -> list[str]:
    """A folder (every spectrum file below it, sorted) or a text file listing one path per
    line (``#`` comments allowed; relative paths are relative to the list's folder)."""
    p = Path(source)
    if p.is_dir():
        return sorted(str(f) for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(_SPECTRUM_SUFFIXES)
                      and not f.name.startswith("."))
    if p.is_file():
        out = []
        for line in p.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                q = Path(line)
                out.append(str(q if q.is_absolute() else p.parent / q))
        return out
    raise FileNotFoundError(f"{source}: neither a folder nor a list of files")


def fit_one(path: str, emulator_spec: str | None = None, device: str = "cpu", options: dict | None = None) -> dict:
    """Fit one file on a worker; returns its table row (an error row when it cannot be fitted)."""
    import torch

    from ..io import SpectrumFormatError
    from .fit import fit_spectrum
    from ..preprocess import FitInputError
    from .result import error_row

    torch.set_num_threads(1)
    key = (emulator_spec, device)
    if key not in _EMULATORS:
        _EMULATORS[key] = load_emulator_spec(emulator_spec, device)
    try:
        row = fit_spectrum(path, _EMULATORS[key], **(options or {})).to_row()
    except (FitInputError, SpectrumFormatError) as exc:
        row = error_row(path, str(exc))
    row["file"] = str(path)
    return row


def _key(path) -> str:
    return str(Path(path).resolve())


def run_batch(inputs, output, emulator_spec: str | None = None, *, scheduler: str | None = None, workers: int = 2,
              device: str = "cpu", resume: bool = False, options: dict | None = None, flush_every: float = 5.0,
              retries: int = 1, progress: bool = True, client=None, on_result=None) -> list[dict]:
    """Fit every input on Dask and write ``output`` (.parquet/.ecsv/.fits/.json) as results
    arrive. ``client``: an existing ``distributed.Client`` (tests); ``on_result(row, n_done)``
    is called after each result. Returns all rows (previous ones first when resuming)."""
    from dask.distributed import Client, LocalCluster, as_completed

    inputs = list(inputs)
    rows = read_results(output) if resume else []
    done = {_key(r["file"]) for r in rows}
    todo = [p for p in inputs if _key(p) not in done]
    own_cluster = None
    if client is None:
        if scheduler:
            client = Client(scheduler)
        else:
            own_cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
            client = Client(own_cluster)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(inputs), initial=len(inputs) - len(todo), unit="star", desc="fit-batch")
    try:
        futures = [client.submit(fit_one, p, emulator_spec, device, options, key=f"fit-{i}-{os.path.basename(p)}",
                                 retries=retries, pure=False) for i, p in enumerate(todo)]
        last = time.monotonic()
        for n, fut in enumerate(as_completed(futures), 1):
            row = fut.result()
            rows.append(row)
            if bar:
                bar.update(1)
            if on_result:
                on_result(row, n)
            if time.monotonic() - last > flush_every:
                write_results(rows, output)
                last = time.monotonic()
        write_results(rows, output)
    finally:
        if bar:
            bar.close()
        if own_cluster is not None:
            client.close()
            own_cluster.close()
        elif scheduler:
            client.close()
    return rows
