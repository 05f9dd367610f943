"""Validation 1 of the ab initio engine: our synthesis against SME with the same inputs.

For each star and window, both codes get the same atmosphere (atmosnet), abundances
(Asplund 2009 scaled by the labels), microturbulence and line list — atomic lines and
the molecular lines of CH, CN, C2, MgH, TiO, NH and OH, whose number densities each code
takes from its own molecular equilibrium (``--atoms-only`` leaves the molecules out of
both); both outputs are
put on the same fine ln-lambda grid and convolved with *our* LSF (R = 1800), then
compared on the LAMOST pixels inside the window (minus the LSF margins).
Prints one JSON object per window and a summary.

    python benchmarks/validate_sme.py [--windows 5150-5250,6400-6500] [--stars sun,giant,mp]
        [--atoms-only] [--no-hydrogen]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from phdlspec_app import labels as L  # noqa: E402
from sme_reference import add_physics_options, comparison_linelist  # noqa: E402
from phdlspec_app.physics.lsf import degrade, lamost_wavelength  # noqa: E402
from phdlspec_app.physics.synthesize import Synthesizer  # noqa: E402

STARS = {
    "sun": {"teff": 5777, "logg": 4.44, "fe_h": 0.0, "vmic": 1.0},
    "giant": {"teff": 4500, "logg": 2.0, "fe_h": -0.3, "vmic": 1.5},
    "mp": {"teff": 6200, "logg": 4.0, "fe_h": -1.5, "mg_fe": 0.3, "si_fe": 0.3, "ca_fe": 0.3, "ti_fe": 0.25,
           "o_fe": 0.4, "vmic": 1.3},
}
DEFAULT_WINDOWS = [(3850, 3950), (4280, 4380), (5150, 5250), (5850, 5950), (6500, 6620), (8480, 8680)]


def compare(star: str, window, linelist, hydrogen=True, resolution=300_000.0):
    from sme_reference import sme_inputs, sme_normalized_spectrum

    lab = torch.tensor(L.to_vector({**STARS[star], "vbroad": 0.0}), dtype=torch.float64)
    lo, hi = window
    margin = 15.0
    syn = Synthesizer(linelist=linelist, wl_range=(lo - margin, hi + margin), resolution=resolution,
                      hydrogen=hydrogen)
    t0 = time.perf_counter()
    hr = syn.highres(lab)
    t_ours = time.perf_counter() - t0
    atm_np, A = sme_inputs(syn, lab)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            wave_sme, flux_sme = sme_normalized_spectrum(atm_np, A, float(lab[2]), linelist, lo - margin, hi + margin,
                                                         teff=float(lab[0]), logg=float(lab[1]),
                                                         include_hydrogen=hydrogen)
        finally:
            os.chdir(cwd)
    t_sme = time.perf_counter() - t0
    ours_hr = hr.flux.detach()
    sme_on_ours = torch.as_tensor(np.interp(hr.wavelength, wave_sme, flux_sme))
    wl_out = lamost_wavelength()
    keep = (wl_out > lo) & (wl_out < hi)
    a = degrade(ours_hr, hr.wavelength, 1800.0, 0.0, 0.0, wl_out[keep]).numpy()
    b = degrade(sme_on_ours, hr.wavelength, 1800.0, 0.0, 0.0, wl_out[keep]).numpy()
    d = a - b
    return {"star": star, "window": f"{lo}-{hi}", "rms": float(np.sqrt(np.mean(d**2))),
            "max_abs": float(np.max(np.abs(d))), "mean_ours": float(a.mean()), "mean_sme": float(b.mean()),
            "t_ours_s": round(t_ours, 2), "t_sme_s": round(t_sme, 2), "hr_rms": float(np.sqrt(np.mean((ours_hr.numpy() - sme_on_ours.numpy())**2)))}, (wl_out[keep], a, b)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", default=",".join(f"{a}-{b}" for a, b in DEFAULT_WINDOWS))
    ap.add_argument("--stars", default="sun,giant,mp")
    ap.add_argument("--no-hydrogen", action="store_true")
    ap.add_argument("--plot", help="folder for PNG overlays")
    add_physics_options(ap)
    args = ap.parse_args()
    ll = comparison_linelist(args)
    windows = [tuple(float(x) for x in w.split("-")) for w in args.windows.split(",")]
    results = []
    for star in args.stars.split(","):
        for w in windows:
            res, arrays = compare(star, w, ll, hydrogen=not args.no_hydrogen)
            results.append(res)
            print(json.dumps(res), flush=True)
            if args.plot:
                import matplotlib
                matplotlib.use("Agg")
                import matplotlib.pyplot as plt
                Path(args.plot).mkdir(parents=True, exist_ok=True)
                fig, ax = plt.subplots(figsize=(8, 3))
                ax.plot(arrays[0], arrays[1], label="PhDLspec")
                ax.plot(arrays[0], arrays[2], label="SME", ls="--")
                ax.set_title(f"{star} {res['window']} rms {res['rms']:.4f}")
                ax.legend()
                fig.savefig(Path(args.plot) / f"{star}_{res['window']}.png", dpi=90)
                plt.close(fig)
    worst = max(results, key=lambda r: r["rms"])
    print(json.dumps({"summary": {"n": len(results), "worst": worst, "all_below_1pct": all(r["rms"] <= 0.01 for r in results)}}))


if __name__ == "__main__":
    main()
