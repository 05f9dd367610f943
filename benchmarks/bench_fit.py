"""Fit speed on one CPU thread pair: CMA-ES (+ polish) and MCMC for one synthetic star.

Usage: python benchmarks/bench_fit.py [--emulator module:factory|PATH] [--snr 50]
Prints JSON. With the test double (PYTHONPATH=tests, --emulator fitting_double:make_double)
it measures the fitter's own overhead; with the trained emulator it measures the bar of
issue 5 (CMA-ES <= 5 s, MCMC to convergence <= 60 s on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from phdlspec_app import labels as L
from phdlspec_app.fitting import fit_spectrum
from phdlspec_app.fitting.output import load_emulator_spec
from phdlspec_app.io import Spectrum


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--emulator")
    ap.add_argument("--snr", type=float, default=50.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mcmc", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="CMA-ES fits per scope (median reported)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    emu = load_emulator_spec(a.emulator, "cpu")
    truth = L.to_vector({"teff": 5200, "logg": 3.9, "fe_h": -0.4, "rv": 37.0, "mg_fe": 0.2})
    rng = np.random.default_rng(0)
    f = np.asarray(emu(truth))
    obs = f + rng.normal(0, 1 / a.snr, f.size)
    s = Spectrum(emu.wavelength, obs, np.full(f.size, a.snr**2), np.zeros(f.size, bool), meta={"source": "bench"})
    out = {}
    # CMA-ES over all free labels (the default) and the fast atmospheric mode, side by side
    for scope in ("atmosphere", "all"):
        runs = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            r = fit_spectrum(s, emu, method="cmaes", seed=1, cmaes_scope=scope)
            runs.append((time.perf_counter() - t, r))
        secs = [x[0] for x in runs]
        r = runs[-1][1]
        out[f"cmaes_scope_{scope}"] = {
            "seconds_median": round(float(np.median(secs)), 2), "seconds": [round(x, 2) for x in secs],
            "cmaes_seconds_median": round(float(np.median([x[1].timings["cmaes"] for x in runs])), 2),
            "polish_seconds_median": round(float(np.median([x[1].timings["polish"] for x in runs])), 2),
            "emulator_evals": r.info["emulator_evals"], "chi2": round(r.chi2, 2), "chi2_reduced": round(r.chi2_reduced, 3),
            "teff_error_vs_truth": round(r.labels["teff"] - 5200, 1)}
    if a.mcmc:
        t = time.perf_counter()
        r = fit_spectrum(s, emu, method="mcmc", seed=1)
        out["mcmc"] = {"seconds": round(time.perf_counter() - t, 2), "timings": {k: round(v, 2) for k, v in r.timings.items()},
                       "emulator_evals": r.info["emulator_evals"], "chi2_reduced": round(r.chi2_reduced, 3),
                       "teff_error_vs_truth": round(r.labels["teff"] - 5200, 1),
                       "tau_max": float(np.max(r.mcmc["tau"])), "steps": r.mcmc["steps"],
                       "acceptance": r.mcmc["acceptance"]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
