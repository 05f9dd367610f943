"""Validation 4: the Sun over the whole LAMOST range against SME, and equivalent widths.

Both codes get the atmosnet solar model, Asplund 2009, vmic = 1 km/s, the linemake
atomic and molecular lines (CH, CN, C2, MgH, TiO, NH, OH; ``--atoms-only`` drops them) and
the Balmer/Paschen lines (SME: same gf); both are convolved with our
R = 1800 LSF and compared on the LAMOST grid. Equivalent widths (mA) of Na D, Mg b,
Ca II 8544 and H-alpha are integrated over fixed windows of the R = 1800 spectra.

    HOME=/tmp/smehome python benchmarks/validate_sun.py [--chunk 500] [--no-level-dissolution] [--atoms-only]
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

# vacuum windows (Angstrom) for equivalent widths at R = 1800
EW_WINDOWS = {"Na D": (5882.0, 5906.0), "Mg b": (5160.0, 5195.0), "Ca II 8544": (8525.0, 8565.0),
              "H-alpha": (6540.0, 6590.0)}


def equivalent_widths(wl, flux):
    out = {}
    for name, (lo, hi) in EW_WINDOWS.items():
        k = (wl >= lo) & (wl <= hi)
        out[name] = float(np.trapezoid(1.0 - flux[k], wl[k]) * 1000.0)
    return out


def main():
    from sme_reference import sme_inputs, sme_normalized_spectrum

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunk", type=float, default=500.0, help="SME segment width (A)")
    ap.add_argument("--wl-min", type=float, default=3700.0)
    ap.add_argument("--wl-max", type=float, default=9100.0)
    ap.add_argument("--plot", help="PNG of both spectra and the difference")
    add_physics_options(ap)
    args = ap.parse_args()
    lab = torch.tensor(L.to_vector({"teff": 5777, "logg": 4.44, "fe_h": 0.0, "vmic": 1.0, "vbroad": 0.0}))
    ll = comparison_linelist(args)
    lo, hi = args.wl_min, args.wl_max
    syn = Synthesizer(linelist=ll, wl_range=(lo - 40, hi + 40))
    t0 = time.perf_counter()
    hr = syn.highres(lab)
    t_ours = time.perf_counter() - t0
    atm_np, A = sme_inputs(syn, lab)
    waves, fluxes = [], []
    t0 = time.perf_counter()
    edges = np.arange(lo - 40, hi + 40 + args.chunk, args.chunk)
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            for a, b in zip(edges[:-1], edges[1:]):
                w, f = sme_normalized_spectrum(atm_np, A, 1.0, ll, a, min(b, hi + 40))
                waves.append(w)
                fluxes.append(f)
        finally:
            os.chdir(cwd)
    t_sme = time.perf_counter() - t0
    w_sme = np.concatenate(waves)
    f_sme = np.concatenate(fluxes)
    order = np.argsort(w_sme)
    sme_on_ours = torch.as_tensor(np.interp(hr.wavelength, w_sme[order], f_sme[order]))
    wl_out = lamost_wavelength()
    wl_out = wl_out[(wl_out >= lo) & (wl_out <= hi)]
    a = degrade(hr.flux.detach(), hr.wavelength, 1800.0, 0.0, 0.0, wl_out).numpy()
    b = degrade(sme_on_ours, hr.wavelength, 1800.0, 0.0, 0.0, wl_out).numpy()
    d = a - b
    per_chunk = {}
    for c0 in np.arange(lo, hi, args.chunk):
        k = (wl_out >= c0) & (wl_out < c0 + args.chunk)
        if k.any():
            per_chunk[f"{c0:.0f}-{c0 + args.chunk:.0f}"] = round(float(np.sqrt(np.mean(d[k] ** 2))) * 100, 3)
    res = {"rms_percent": round(float(np.sqrt(np.mean(d**2))) * 100, 3),
           "max_abs_percent": round(float(np.abs(d).max()) * 100, 2),
           "rms_percent_per_chunk": per_chunk,
           "ew_mA_ours": {k: round(v, 1) for k, v in equivalent_widths(wl_out, a).items()},
           "ew_mA_sme": {k: round(v, 1) for k, v in equivalent_widths(wl_out, b).items()},
           "t_ours_s": round(t_ours, 1), "t_sme_s": round(t_sme, 1),
           "median_flux_ours": round(float(np.median(a)), 4), "median_flux_sme": round(float(np.median(b)), 4)}
    print(json.dumps(res, indent=1))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        fig = Figure(figsize=(14, 5))
        ax = fig.add_subplot(2, 1, 1)
        ax.plot(wl_out, a, lw=0.6, label="PhDLspec")
        ax.plot(wl_out, b, lw=0.6, label="SME", alpha=0.8)
        ax.legend()
        ax2 = fig.add_subplot(2, 1, 2, sharex=ax)
        ax2.plot(wl_out, d, lw=0.6, color="k")
        ax2.set_ylabel("PhDLspec - SME")
        ax2.set_xlabel("vacuum wavelength (A)")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main()
