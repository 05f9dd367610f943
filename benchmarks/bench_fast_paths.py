"""Side-by-side timing of the engine's no-derivative fast paths against the paths they
replace, in ONE process (so the shared machine's load hits both alike):

- ``lsf``: ``lsf.degrade`` of full-range R = 300 000 spectra to the LAMOST grid — sampled at
  the output pixels (plain tensors) vs the full convolution (taken when the input carries a
  derivative: forced here with ``requires_grad``); per-row vbroad/rv included;
- ``spectrum``: ``Synthesizer.spectrum`` of one star with the per-(line, layer) parameters
  in one compiled kernel vs the eager differentiable expressions (forced by patching
  ``line_absorption.carries_derivative``), alternating, ``--repeats`` each after a warm-up.

Both report the largest difference of the outputs (they must agree to round-off).

    .venv/bin/python benchmarks/bench_fast_paths.py [--teff 4200 --logg 1.8 --fe-h -0.3] [--threads 1]

Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teff", type=float, default=4200.0)
    ap.add_argument("--logg", type=float, default=1.8)
    ap.add_argument("--fe-h", type=float, default=-0.3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-spectrum", action="store_true", help="only the LSF comparison")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from phdlspec_app.labels import to_vector
    from phdlspec_app.physics import line_absorption as la
    from phdlspec_app.physics import lsf
    from phdlspec_app.physics.synthesize import Synthesizer

    out = {"threads": a.threads, "torch": torch.__version__}
    wl = lsf.log_lambda_grid(3650, 9150, 300_000.0)
    flux = 1 - 0.3 * torch.rand(2, wl.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cases = {"vbroad 0, rv 0": (0.0, 0.0), "per-row vbroad 10/250, rv -300/37": (
        torch.tensor([10.0, 250.0]), torch.tensor([-300.0, 37.0]))}
    out["lsf"] = {}
    for name, (vb, rv) in cases.items():
        t = time.perf_counter()
        fast = lsf.degrade(flux, wl, 1800.0, vb, rv)
        t_fast = time.perf_counter() - t
        t = time.perf_counter()
        full = lsf.degrade(flux.clone().requires_grad_(True), wl, 1800.0, vb, rv).detach()
        t_full = time.perf_counter() - t
        out["lsf"][name] = {"sampled_s": round(t_fast, 3), "full_convolution_s": round(t_full, 3),
                            "max_abs_diff": float((fast - full).abs().max())}
    if not a.no_spectrum:
        syn = Synthesizer()
        lab = torch.tensor(to_vector({"teff": a.teff, "logg": a.logg, "fe_h": a.fe_h}))
        real = la.carries_derivative
        modes = {"compiled": real, "eager": lambda *t, **k: True}
        times, res = {m: [] for m in modes}, {}
        for m, fn in modes.items():      # warm-up (compiles) of both
            la.carries_derivative = fn
            syn.spectrum(lab)
        for _ in range(a.repeats):
            for m, fn in modes.items():
                la.carries_derivative = fn
                t = time.perf_counter()
                res[m] = syn.spectrum(lab).numpy()
                times[m].append(time.perf_counter() - t)
        la.carries_derivative = real
        out["spectrum"] = {"labels": {"teff": a.teff, "logg": a.logg, "fe_h": a.fe_h},
                           "compiled_params_s": round(statistics.median(times["compiled"]), 2),
                           "eager_params_s": round(statistics.median(times["eager"]), 2),
                           "max_abs_diff": float(np.abs(res["compiled"] - res["eager"]).max())}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
