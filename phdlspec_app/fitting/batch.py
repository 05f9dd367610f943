"""Survey batches on ``dask.distributed``: one task per star, results streamed to the output.

- A ``LocalCluster`` of ``workers`` processes (one torch thread each) by default, or an
  existing scheduler (``tcp://host:port``).
- Each worker loads the emulator once (cached per process) from a spec string (a model
  path, ``module:factory``, or None for the default model) — the emulator object itself is
  never shipped.
- ``group`` fits run at once on each worker (its threads), sharing every emulator call
  (``shared_emulator.SharedEmulator``): on a GPU, where a call of thousands of spectra
  costs about what a call of one does, many fits then share each call. Default 16 when
  the device is CUDA, 1 on the CPU.
- A star whose worker dies is rescheduled by the scheduler on another worker (the
  ``distributed.scheduler.allowed-failures`` budget, 3 by default); a star that raises is
  retried ``retries`` times; a star that cannot be fitted (bad file, QSO, too coarse)
  gets a row with its ``error`` message.
- Results are written as they finish: the whole table is rewritten atomically (temporary
  file + rename) at most every ``flush_every`` seconds and at the end, so an interrupted
  batch leaves a valid table; ``resume`` skips inputs already in it.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

from .output import load_emulator_spec, read_results, write_results

__all__ = ["list_inputs", "fit_one", "run_batch", "default_group"]

_SPECTRUM_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fit.gz", ".ecsv", ".txt", ".csv", ".dat")
_EMULATORS: dict = {}
_LOAD_LOCK = threading.Lock()
#: fits at once per worker on a GPU when ``group`` is not given
GPU_GROUP = 16


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


def fit_one(path: str, emulator_spec: str | None = None, device: str = "cpu", options: dict | None = None,
            group: int = 1) -> dict:
    """Fit one file on a worker; returns its table row (an error row when it cannot be fitted).
    With ``group`` > 1 the worker's emulator is a :class:`SharedEmulator` and this fit's
    emulator calls merge with those of the other fits running at once in its threads."""
    import torch

    from ..io import SpectrumFormatError
    from ..preprocess import FitInputError
    from .fit import fit_spectrum
    from .result import error_row
    from .shared_emulator import SharedEmulator

    torch.set_num_threads(1)
    key = (emulator_spec, device, group > 1)
    with _LOAD_LOCK:   # the group's threads start together: load (and share) one emulator
        if key not in _EMULATORS:
            emu = load_emulator_spec(emulator_spec, device)
            _EMULATORS[key] = SharedEmulator(emu) if group > 1 else emu
    emu = _EMULATORS[key]
    try:
        with emu.session() if group > 1 else contextlib.nullcontext():
            row = fit_spectrum(path, emu, **(options or {})).to_row()
    except (FitInputError, SpectrumFormatError) as exc:
        row = error_row(path, str(exc))
    row["file"] = str(path)
    return row


def default_group(device: str) -> int:
    """Fits at once per worker: :data:`GPU_GROUP` when ``device`` is (or ``auto`` finds) CUDA, else 1."""
    import torch

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return GPU_GROUP if cuda else 1


def _key(path) -> str:
    return str(Path(path).resolve())


def run_batch(inputs, output, emulator_spec: str | None = None, *, scheduler: str | None = None, workers: int = 2,
              device: str = "cpu", resume: bool = False, options: dict | None = None, flush_every: float = 5.0,
              retries: int = 1, progress: bool = True, client=None, on_result=None,
              group: int | None = None) -> list[dict]:
    """Fit every input on Dask and write ``output`` (.parquet/.ecsv/.fits/.json) as results
    arrive. ``client``: an existing ``distributed.Client`` (tests); ``on_result(row, n_done)``
    is called after each result; ``group``: fits at once per worker sharing each emulator
    call (None: :func:`default_group`; the local cluster gets that many threads per worker,
    an existing cluster keeps its own). Returns all rows (previous ones first when resuming)."""
    from dask.distributed import Client, LocalCluster, as_completed

    inputs = list(inputs)
    rows = read_results(output) if resume else []
    done = {_key(r["file"]) for r in rows}
    todo = [p for p in inputs if _key(p) not in done]
    group = default_group(device) if group is None else int(group)
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    own_cluster = None
    if client is None:
        if scheduler:
            client = Client(scheduler)
        else:
            own_cluster = LocalCluster(n_workers=workers, threads_per_worker=group, processes=True,
                                       dashboard_address=None)
            client = Client(own_cluster)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(inputs), initial=len(inputs) - len(todo), unit="star", desc="fit-batch")
    try:
        futures = [client.submit(fit_one, p, emulator_spec, device, options, group,
                                 key=f"fit-{i}-{os.path.basename(p)}",
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
