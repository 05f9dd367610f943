"""Fit speed on one CPU thread pair: CMA-ES (+ polish) and MCMC for the benchmark star (``benchmark_star.py``).

Usage: python benchmarks/bench_fit.py [--emulator module:factory|PATH] [--snr 50]
       python benchmarks/bench_fit.py --mcmc --moves hmc --skip-cmaes --seeds 1 2 3 4
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
from benchmark_star import benchmark_star  # benchmarks/ is on sys.path when run as a script

from phdlspec_app.fitting import fit_spectrum
from phdlspec_app.fitting.output import load_emulator_spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--emulator")
    ap.add_argument("--snr", type=float, default=50.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mcmc", action="store_true")
    ap.add_argument("--moves", nargs="+", default=["hmc", "de"], choices=["hmc", "de"],
                    help="MCMC moves to run side by side with --mcmc")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1],
                    help="MCMC seeds, run one after another (the first is compared across moves); "
                         "the JSON gives each run and the median seconds")
    ap.add_argument("--skip-cmaes", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="CMA-ES fits per scope (median reported)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    emu = load_emulator_spec(a.emulator, "cpu")
    _, s = benchmark_star(emu, a.snr)
    out = {}
    # CMA-ES over all free labels (the default) and the fast atmospheric mode, side by side
    for scope in () if a.skip_cmaes else ("atmosphere", "all"):
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
    res = {}
    for moves in a.moves if a.mcmc else ():
        runs = []
        for seed in a.seeds:
            t = time.perf_counter()
            r = fit_spectrum(s, emu, method="mcmc", seed=seed, mcmc_moves=moves)
            runs.append({
                "seed": seed, "seconds": round(time.perf_counter() - t, 2),
                "timings": {k: round(v, 2) for k, v in r.timings.items()},
                "emulator_evals": r.info["emulator_evals"], "gradient_evals": r.mcmc["gradient_evals"],
                "chi2_reduced": round(r.chi2_reduced, 3), "teff_error_vs_truth": round(r.labels["teff"] - 5200, 1),
                "tau_max": round(float(np.max(r.mcmc["tau"])), 2), "tau_median": round(float(np.median(r.mcmc["tau"])), 2),
                "steps": r.mcmc["steps"], "warmup_steps": r.mcmc["warmup_steps"], "nwalkers": r.mcmc["nwalkers"],
                "converged": bool(r.mcmc["converged"]), "acceptance": round(r.mcmc["acceptance"], 3)})
            res.setdefault(moves, r)
        out[f"mcmc_{moves}"] = runs[0] if len(runs) == 1 else {
            "seconds_median": round(float(np.median([x["seconds"] for x in runs])), 2),
            "seconds_max": round(float(np.max([x["seconds"] for x in runs])), 2), "runs": runs}
    if len(res) == 2:
        # do the two samplers agree on the posterior? medians in units of the DE width, and
        # the ratio of the 16-84 % widths, over the free labels
        h, d = res["hmc"], res["de"]
        dm, ratio = [], []
        for n in h.free_names:
            wd = 0.5 * (d.err_lo[n] + d.err_hi[n])
            wh = 0.5 * (h.err_lo[n] + h.err_hi[n])
            dm.append(abs(h.labels[n] - d.labels[n]) / wd)
            ratio.append(wh / wd)
        out["hmc_vs_de"] = {"labels": len(dm), "median_offset_in_sigma_max": round(float(np.max(dm)), 3),
                            "median_offset_in_sigma_median": round(float(np.median(dm)), 3),
                            "width_ratio_min": round(float(np.min(ratio)), 3),
                            "width_ratio_median": round(float(np.median(ratio)), 3),
                            "width_ratio_max": round(float(np.max(ratio)), 3)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
