"""The fitter's units of work, side by side for several emulator files in ONE process
(interleaved repeats, so the shared machine's load hits every model alike):

- ``objective_N``: one batched χ² of N label vectors through emulator, LSF, pseudo-continuum
  and the correlated model error (CMA-ES calls it with a population of ~10–20);
- ``grad_8``: χ² and its gradient for 8 label vectors (one leapfrog step of the MCMC's
  8 HMC walkers);
- ``network_N``: the network alone (no correction, broadening or likelihood).

The star is ``benchmark_star.py``'s (5200 K, log g 3.9, [Fe/H] −0.4, rv 37 km/s, S/N 50,
made by the first model), with the fit's own preprocessing and model error.

    .venv/bin/python benchmarks/bench_likelihood.py [MODEL ...] [--threads 2] [--repeats 7]

Without MODEL the default model is timed. Prints one JSON object: per model, the median
over repeats of the milliseconds per call.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from benchmark_star import benchmark_star  # benchmarks/ is on sys.path when run as a script

from phdlspec_app.fitting.fit import model_error_terms
from phdlspec_app.fitting.likelihood import Likelihood
from phdlspec_app.fitting.output import load_emulator_spec
from phdlspec_app.preprocess import prepare


def _ms_per_call(fn, calls: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return 1e3 * (time.perf_counter() - t) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help="emulator files (default: the shipped model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=30, help="calls per repeat")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    work = {}
    obs = None
    for path in a.models or [None]:
        emu = load_emulator_spec(path, "cpu")
        if obs is None:
            truth, obs = benchmark_star(emu, 50.0, rng)
        prep = prepare(obs, emu.wavelength, float(getattr(emu, "resolution", 1800.0)))
        sigma, basis, local = model_error_terms(emu, True)
        if sigma is not None:
            prep = prep.with_model_error(sigma, basis, local)
        work[str(path or "default")] = (emu, Likelihood(emu, prep, np.arange(32), truth))
    th8 = np.repeat(truth[None], 8, 0)
    th8[:, 0] += rng.normal(0, 20, 8)
    th16 = np.repeat(truth[None], 16, 0)
    th16[:, 0] += rng.normal(0, 20, 16)
    scaled = {name: emu.scale(torch.as_tensor(th16, dtype=torch.float32)) for name, (emu, _) in work.items()
              if hasattr(emu, "scale")}
    times: dict[str, dict[str, list[float]]] = {k: {} for k in work}
    for _ in range(a.repeats):
        for name, (emu, lik) in work.items():
            units = {"objective_1": lambda lik=lik: lik.objective(truth[None]),
                     "objective_16": lambda lik=lik: lik.objective(th16),
                     "grad_8": lambda lik=lik: lik.objective_and_grad(th8)}
            if hasattr(emu, "net"):
                def net16(emu=emu, x16=scaled[name]):
                    with torch.inference_mode():
                        emu.net(x16)
                units["network_16"] = net16
            for unit, fn in units.items():
                times[name].setdefault(unit, []).append(_ms_per_call(fn, a.calls))
    out = {"threads": a.threads, "repeats": a.repeats, "calls_per_repeat": a.calls, "torch": torch.__version__,
           "ms_per_call": {k: {u: round(statistics.median(v), 3) for u, v in t.items()} for k, t in times.items()}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
