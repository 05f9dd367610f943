"""Survey throughput on this machine: the same real LAMOST stars fitted one after another in
one process (``phdlspec fit``'s path) and by ``fit-batch`` on a local Dask cluster, with
and without grouped fits sharing each emulator call (``--group``).

    PHDLSPEC_DATA=../shared .venv/bin/python benchmarks/bench_batch.py [--n 16] [--threads 2]
        [--modes sequential batch:2x1 batch:2x4] [--device cpu]

A mode ``batch:WxG`` is ``run_batch`` with W worker processes and G fits at once per worker
(one torch thread per worker); ``sequential`` is ``fit_spectrum`` in a loop with
``--threads`` torch threads. The stars are the first N B6212 spectra in
``$PHDLSPEC_DATA/spectra/lamost`` (sorted by name; the plate of the LASP benchmark), fitted
with the default CMA-ES settings. Prints JSON: per mode the wall time (cluster start
included), seconds per star, stars per hour, and how far each mode's Teff/log g/[Fe/H]
differ from the sequential fits (grouped calls round differently).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=16, help="stars (default 16)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the sequential mode")
    ap.add_argument("--modes", nargs="+", default=["sequential", "batch:2x1", "batch:2x4"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-dir", help="shared data directory (default: $PHDLSPEC_DATA or ../shared)")
    a = ap.parse_args(argv)

    from phdlspec_app.fitting import fit_spectrum
    from phdlspec_app.fitting.batch import run_batch
    from phdlspec_app.fitting.output import load_emulator_spec
    from phdlspec_app.fitting.result import error_row
    from phdlspec_app.io import SpectrumFormatError
    from phdlspec_app.paths import lamost_spectra_dir
    from phdlspec_app.preprocess import FitInputError

    files = sorted(str(p) for p in lamost_spectra_dir(a.data_dir).rglob("spec-55862-B6212*.fits*"))[: a.n]
    if len(files) < a.n:
        ap.error(f"found {len(files)} B6212 spectra, asked for {a.n}")
    out: dict = {"stars": len(files), "device": a.device, "torch": torch.__version__, "modes": {}}
    fits: dict[str, dict] = {}
    for mode in a.modes:
        t = time.perf_counter()
        if mode == "sequential":
            torch.set_num_threads(a.threads)
            emu = load_emulator_spec(None, a.device)
            rows = []
            for f in files:
                try:
                    rows.append({**fit_spectrum(f, emu).to_row(), "file": f})
                except (FitInputError, SpectrumFormatError) as exc:   # as fit-batch: an error row
                    rows.append({**error_row(f, str(exc)), "file": f})
            label = f"sequential ({a.threads} threads)"
        elif mode.startswith("batch:"):
            w, g = (int(v) for v in mode.split(":", 1)[1].split("x"))
            with tempfile.TemporaryDirectory() as tmp:
                rows = run_batch(files, Path(tmp) / "rows.ecsv", None, workers=w, group=g, device=a.device,
                                 progress=False)
            label = f"fit-batch, {w} workers x {g} fits at once"
        else:
            ap.error(f"unknown mode {mode!r}")
        wall = time.perf_counter() - t
        fits[mode] = {Path(r["file"]).name: r for r in rows}
        out["modes"][mode] = {"what": label, "wall_s": round(wall, 1), "s_per_star": round(wall / len(files), 2),
                              "stars_per_hour": round(3600 * len(files) / wall), "errors": sum(bool(r.get("error"))
                                                                                             for r in rows)}
    ref = fits.get("sequential")
    if ref:
        for mode, rows in fits.items():
            if mode == "sequential":
                continue
            d = {lab: [abs(rows[k][lab] - ref[k][lab]) / ref[k][f"{lab}_err"] for k in ref
                       if not ref[k].get("error") and not rows[k].get("error") and np.isfinite(ref[k][lab])
                       and ref[k][f"{lab}_err"] > 0]
                 for lab in ("teff", "logg", "fe_h")}
            out["modes"][mode]["vs_sequential_median_abs_diff_in_sigma"] = {
                lab: round(float(np.median(v)), 4) for lab, v in d.items() if v}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
