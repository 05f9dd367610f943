"""Train one emulator variant on a grid and score it on the held-out part — for side-by-side
comparisons of architecture and loss settings (BENCHMARKS.md, session 15).

    .venv/bin/python benchmarks/train_variant.py --grid assets/grid --name C --epochs 60 \\
        --network '{"head": "patch"}' [--config '{"grad_norm": "step", "grad_weight": 3}'] [--out DIR]

Trains with ``TrainConfig(epochs, network=..., **config)`` on one thread (the default settings
otherwise: seed 2604, batch 64, lr 2e-3), saves ``DIR/NAME.safetensors``, then prints one JSON
line: training time, parameters, held-out median / 95th percentile |Δflux|, the final losses,
and the median gradient cosine per label (as ``bench_emulator.py``). Appends the line to
``DIR/results.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_emulator import accuracy, gradient_fidelity  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--network", default="{}", help="JSON: SpectrumTransformer settings")
    ap.add_argument("--config", default="{}", help="JSON: other TrainConfig fields")
    ap.add_argument("--out", default="variants")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from phdlspec_app.emulator.train import TrainConfig, load_training_set, train

    net, extra = json.loads(args.network), json.loads(args.config)
    data = load_training_set(args.grid)
    held = load_training_set(args.grid, heldout=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(epochs=args.epochs, network=net, device="cpu", checkpoint_every=10 ** 6, **extra)
    t0 = time.perf_counter()
    emu = train(data, out / f"{args.name}.safetensors", cfg, progress=False)
    seconds = time.perf_counter() - t0
    acc, grad = accuracy(emu, held), gradient_fidelity(emu, held)
    cos = grad.get("median_cosine", {})
    elements = {k: v for k, v in cos.items() if k not in ("teff", "logg", "vmic", "fe_h")}
    res = {"name": args.name, "epochs": args.epochs, "network": net, "config": extra, "seconds": seconds,
           "threads": args.threads, "params": sum(p.numel() for p in emu.net.parameters()),
           "n_train": int(len(data.labels)), "n_heldout": int(len(held.labels)),
           "median_abs": acc["median_abs"], "p95_abs": acc["p95_abs"],
           "final_loss_flux": emu.card["training"]["final_loss_flux"],
           "final_loss_grad": emu.card["training"]["final_loss_grad"], "median_cosine": cos,
           "elements_ge_0.9": sum(v >= 0.9 for v in elements.values()), "n_elements": len(elements)}
    line = json.dumps(res)
    print(line)
    with open(out / "results.jsonl", "a") as fh:
        fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
