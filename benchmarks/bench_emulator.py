"""Benchmark of an emulator against the ab initio grid it was trained on: accuracy on
the held-out spectra, gradient fidelity at the held-out reference points, and speed.

    .venv/bin/python benchmarks/bench_emulator.py --grid GRID [--model PATH] [--engine-repeats 1]

- accuracy: |emulator − engine| over all held-out spectra and pixels (median, 95th
  percentile), and the median by Teff / log g / [Fe/H] region and by 500 Å chunk;
- gradient fidelity: per label, the cosine similarity between the emulator's
  d flux / d label (forward-mode AD) and the engine's differential spectrum at each
  held-out reference point; the median over points, for labels whose engine derivative
  peaks above 0.1 % per dex (abundances) somewhere; others are listed as weak;
- speed (torch threads as set by ``--threads``): one spectrum (median of 200 calls),
  batched throughput (``--batch`` spectra per call), and the ab initio engine on the
  same label vector in the same run (warm; ``--engine-repeats``), giving the speedup.

Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch


def accuracy(emu, data) -> dict:
    pred = np.concatenate([emu(data.labels[i:i + 256]) for i in range(0, len(data.labels), 256)])
    err = np.abs(pred - data.flux)
    names = emu.label_names
    teff = data.labels[:, names.index("teff")]
    logg = data.labels[:, names.index("logg")]
    feh = data.labels[:, names.index("fe_h")]
    per_star = np.median(err, axis=1)
    regions = {
        "giants (logg<3.5)": logg < 3.5, "dwarfs (logg>=3.5)": logg >= 3.5,
        "Teff<5000": teff < 5000, "5000<=Teff<6000": (teff >= 5000) & (teff < 6000), "Teff>=6000": teff >= 6000,
        "[Fe/H]<-1": feh < -1, "-1<=[Fe/H]<-0.3": (feh >= -1) & (feh < -0.3), "[Fe/H]>=-0.3": feh >= -0.3,
    }
    wl = data.wavelength
    edges = np.arange(3700, 9101, 500)
    return {
        "n_heldout": int(len(data.labels)),
        "median_abs": float(np.median(err)), "p95_abs": float(np.percentile(err, 95)),
        "max_abs": float(err.max()),
        "by_region_median": {k: (float(np.median(err[m])) if m.any() else None) for k, m in regions.items()},
        "by_region_n": {k: int(m.sum()) for k, m in regions.items()},
        "by_wavelength_median": {f"{lo}-{min(lo + 500, 9100)}": float(np.median(err[:, (wl >= lo) & (wl < lo + 500)]))
                                 for lo in edges[:-1]},
        "worst_star_median": float(per_star.max()),
    }


def gradient_fidelity(emu, data) -> dict:
    from phdlspec_app.emulator.model import INPUT_LABELS

    if not len(data.ref_labels):
        return {"n_reference": 0}
    jac = emu.jacobian(data.ref_labels)           # (M, 32, W)
    out, weak = {}, []
    for k, name in enumerate(INPUT_LABELS):
        t = data.jacobian[:, k].astype(float)
        e = jac[:, emu.label_names.index(name)]
        peak = np.abs(t).max(axis=1)
        unit = 1.0 if name not in ("teff",) else 100.0   # teff: per 100 K
        if name in ("teff", "logg", "vmic") or np.median(peak) * unit > 1e-3:
            cos = (e * t).sum(1) / np.sqrt((e * e).sum(1) * (t * t).sum(1) + 1e-300)
            out[name] = float(np.median(cos))
        else:
            weak.append(name)
    elements = {k: v for k, v in out.items() if k not in ("teff", "logg", "vmic")}
    return {"n_reference": int(len(data.ref_labels)), "median_cosine": out,
            "weak_labels (peak < 0.1 %/dex)": weak,
            "elements_below_0.9": sorted(k for k, v in elements.items() if v < 0.9),
            "elements_below_0.95": sorted(k for k, v in elements.items() if v < 0.95)}


def _median_s(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def speed(emu, labels, batch: int, engine_repeats: int) -> dict:
    one = labels[:1]
    for _ in range(5):
        emu(one)
    t_one = _median_s(lambda: emu(one), 200)
    big = np.repeat(labels, int(np.ceil(batch / len(labels))), axis=0)[:batch]
    emu(big)
    t_big = _median_s(lambda: emu(big), 5)
    out = {"one_spectrum_ms": 1e3 * t_one, "batch": batch, "batched_spectra_per_s": batch / t_big}
    if engine_repeats > 0:
        from phdlspec_app.physics.synthesize import Synthesizer

        syn = Synthesizer()
        row = torch.as_tensor(labels[0], dtype=torch.float64)
        syn.spectrum(row, wl_out=emu.wavelength)                 # compile / warm up
        out["engine_one_spectrum_s"] = _median_s(lambda: syn.spectrum(row, wl_out=emu.wavelength), engine_repeats)
        out["speedup_one_spectrum"] = out["engine_one_spectrum_s"] / (out["one_spectrum_ms"] / 1e3)
        out["speedup_batched"] = out["engine_one_spectrum_s"] * out["batched_spectra_per_s"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", required=True)
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--engine-repeats", type=int, default=1, help="0 skips the engine timing")
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from phdlspec_app.emulator import load_emulator
    from phdlspec_app.emulator.train import load_training_set

    t0 = time.perf_counter()
    emu = load_emulator(args.model, device="cpu")
    load_s = time.perf_counter() - t0
    held = load_training_set(args.grid, heldout=True)
    res = {"model": str(args.model or "default"), "grid": args.grid, "load_s": load_s,
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "accuracy": accuracy(emu, held), "gradient_fidelity": gradient_fidelity(emu, held)}
    if not args.no_speed:
        res["speed"] = speed(emu, held.labels, args.batch, args.engine_repeats)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
