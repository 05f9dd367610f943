"""The paper's ablation: the same transformer trained with and without the physical
prior (the gradient-matching term), on the first N_small and on all training spectra.

    .venv/bin/python benchmarks/ablation_prior.py --grid GRID [--sizes 1000 3000] [--epochs 300] [--out DIR]
        [--recovery N] [--reuse]

For each (size, prior on/off) it trains a model (``--out``/``ablation_<size>_<prior>``),
then reports on the held-out part of the grid: flux accuracy (median and 95th percentile
|Δflux|) and gradient fidelity (median cosine per element against the engine's
differential spectra), as in ``bench_emulator.py``. Abundance recovery through the
fitter is added by ``--recovery N``: it fits N held-out engine spectra with noise at S/N 50
and reports the robust scatter of every label and the number of [X/Fe] within 0.10 and
0.05 dex.

Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_emulator import accuracy, gradient_fidelity  # noqa: E402


def recovery(emu, held, n: int, snr: float = 50.0, seed: int = 1) -> dict:
    """Robust scatter (1.4826 × MAD) of fitted − true labels for ``n`` held-out engine
    spectra with Gaussian noise at S/N ``snr`` (the emulator trusted exactly: no model-error
    term, so that both arms of the ablation are fitted alike), and the number of [X/Fe]
    with scatter ≤ 0.10 and ≤ 0.05 dex."""
    from phdlspec_app.fitting import fit_spectrum
    from phdlspec_app.io import Spectrum

    rng = np.random.default_rng(seed)
    names = emu.label_names
    diffs = []
    for i in range(min(n, len(held.labels))):
        flux = held.flux[i] + rng.normal(0, 1 / snr, held.flux.shape[1])
        spec = Spectrum(held.wavelength, flux, np.full(flux.size, snr ** 2), np.zeros(flux.size, bool),
                        meta={"source": f"heldout[{i}] S/N {snr:g}"})
        res = fit_spectrum(spec, emu, method="cmaes", seed=seed + i, model_error=False)
        diffs.append([res.labels[k] - held.labels[i, j] for j, k in enumerate(names)])
    d = np.array(diffs)
    scatter = {k: float(1.4826 * np.median(np.abs(d[:, j] - np.median(d[:, j])))) for j, k in enumerate(names)}
    elements = [v for k, v in scatter.items() if k.endswith("_fe") and k != "fe_h"]
    return {"n": int(len(d)), "snr": snr, "robust_scatter": scatter,
            "elements_le_0.10": int(sum(v <= 0.10 for v in elements)),
            "elements_le_0.05": int(sum(v <= 0.05 for v in elements))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000])
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--out", default="ablation")
    ap.add_argument("--recovery", type=int, default=0, help="fit this many held-out spectra per model")
    ap.add_argument("--reuse", action="store_true", help="load a model OUT/ablation_SIZE_(no)prior.safetensors "
                                                          "that exists instead of training it again")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from phdlspec_app.emulator import load_emulator
    from phdlspec_app.emulator.train import TrainConfig, load_training_set, train

    data = load_training_set(args.grid)
    held = load_training_set(args.grid, heldout=True)
    out = Path(args.out)
    res = {"grid": args.grid, "n_available": int(len(data.labels)), "runs": []}
    for size in args.sizes:
        for weight in (1.0, 0.0):
            tag = f"ablation_{size}_{'prior' if weight else 'noprior'}"
            cfg = TrainConfig(epochs=args.epochs, grad_weight=weight, max_train=size)
            path = out / f"{tag}.safetensors"
            if args.reuse and path.exists():
                emu = load_emulator(path, device="cpu")
            else:
                emu = train(data, path, cfg)
            run = {"size": min(size, len(data.labels)), "prior": bool(weight),
                   "accuracy": accuracy(emu, held), "gradient_fidelity": gradient_fidelity(emu, held)}
            if args.recovery:
                run["recovery_scatter"] = recovery(emu, held, args.recovery)
            res["runs"].append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
