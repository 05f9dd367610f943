"""``phdlspec train``: train the emulator on a grid from ``phdlspec grid``."""
from __future__ import annotations

import json
import sys

_DESCRIPTION = """\
Train the PhDLspec transformer on ab initio spectra from `phdlspec grid`, with the
engine's differential spectra as a gradient-matching prior (see docs/emulator.md).
Every 11th spectrum and reference point of the grid is held out, never trained on.
Checkpoints go to OUTPUT.train/ every --checkpoint-every epochs; --resume continues.

Data-driven mode (--observed TABLE): fine-tune a trained emulator (--init, default the
shipped one) on observed spectra with reference labels (a table with a `file` column and
label columns, schema names or catalog aliases). Every spectrum is prepared exactly as the
fitter prepares it; labels the table lacks are held at their Galactic trend, and the
physics gradient term on the grid's reference points (--grid) keeps them physical.
"""
_EPILOG = """\
Examples:
  phdlspec train --grid grid/ -o assets/emulator/phdlspec_default.safetensors
  phdlspec train --grid grid/ -o noprior.safetensors --grad-weight 0 --max-train 1000
  phdlspec train --grid grid/ -o model.safetensors --resume
  phdlspec train --grid assets/grid assets/grid_cool -o M.safetensors   # with the cool-star supplement
  phdlspec train --grid grid/ --init model.safetensors -o tuned.safetensors --epochs 60 --lr 5e-4
  phdlspec train --observed apogee_xmatch.ecsv --grid grid/ -o tuned.safetensors --epochs 30
"""


def add_parsers(sub) -> None:
    """Register ``train`` and ``model-error``."""
    import argparse

    p = sub.add_parser("train", help="train the emulator on a grid (physics-prior gradient matching)",
                       description=_DESCRIPTION, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", nargs="+", action="extend", metavar="DIR",
                   help="grid folder written by `phdlspec grid` (required unless --observed); further folders "
                        "are supplements inside its domain trained on with it, e.g. extra cool stars "
                        "(`phdlspec grid --teff-max 5000 --seed 2700`)")
    p.add_argument("--observed", metavar="TABLE", help="data-driven mode: fine-tune on these observed spectra")
    p.add_argument("--init", metavar="MODEL", help="model to start from: with --grid alone, continue training its network on the grid "
                        "(fine-tuning, a new learning-rate cycle; its architecture options are used); "
                        "with --observed, the model to fine-tune (default: the shipped one)")
    p.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--grad-weight", type=float, default=1.0,
                   help="weight λ of the gradient-matching term (0: no physical prior)")
    p.add_argument("--max-train", type=int, help="train on the first N training spectra only")
    p.add_argument("--grad-norm", choices=["point", "label", "step"], default="point",
                   help="point: each label's derivative matched relative to its own size at each reference "
                        "point (default); label: relative to its average size; "
                        "step: as the flux change of a typical label step, so weak elements hardly count")
    p.add_argument("--cool-weight", type=float, default=1.0,
                   help="spectra cooler than --cool-teff count this many times in the flux term (default 1)")
    p.add_argument("--cool-teff", type=float, default=4800.0, help="Teff (K) below which --cool-weight applies")
    p.add_argument("--d-model", type=int, default=64, help="transformer width")
    p.add_argument("--n-decoder", type=int, default=2, help="decoder blocks (wavelength patches → labels)")
    p.add_argument("--head", choices=["patch", "shared"], default="patch",
                   help="output map token → pixels: one per wavelength patch (default) or one shared by all")
    p.add_argument("--seed", type=int, default=2604)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT.train/checkpoint.pt")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("model-error", help="measure an emulator's error spectrum on held-out grid spectra",
                       description="Store in the model file the per-pixel rms of emulator - engine over the grid's "
                                   "held-out spectra (never trained on), and its split into a correlated part "
                                   "(a low-rank covariance made of the residuals) and an uncorrelated remainder; "
                                   "with 20 or more, the residuals themselves, so that the split is made at each "
                                   "star from its neighbours in Teff, log g and [Fe/H], and the label shifts each "
                                   "residual causes. `phdlspec fit` adds the split to the noise covariance and the "
                                   "neighbours' label shifts to the label errors, so that the error bars include "
                                   "the emulator's own error. "
                                   "`phdlspec train` does this by itself when the grid has held-out spectra. "
                                   "With --correct it first (re)builds the residual correction: the mean error "
                                   "of the network on its own training spectra near each star in Teff, log g "
                                   "and [Fe/H], which the emulator then subtracts (docs/emulator.md); "
                                   "`phdlspec train` builds it too.",
                       epilog="Examples:\n  phdlspec model-error assets/emulator/phdlspec_default.safetensors --grid assets/grid\n"
                              "  phdlspec model-error M.safetensors --grid assets/grid --correct -o M_corrected.safetensors",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="emulator model file (.safetensors)")
    p.add_argument("--grid", required=True, nargs="+", action="extend", metavar="DIR",
                   help="grid folder(s) with held-out spectra (`phdlspec grid`): the ones the model was trained on")
    p.add_argument("-o", "--output", help="write the model here (default: update MODEL in place, atomically)")
    p.add_argument("--correct", action="store_true",
                   help="first (re)build the residual correction from the grid's training spectra (the ones "
                        "not held out; only right for a model trained on them)")
    p.set_defaults(func=_cmd_model_error)


def _cmd_model_error(args) -> int:
    from .model import EmulatorFileError, load_emulator
    from .train import attach_model_error, attach_residual_correction, load_training_set

    try:
        emu = load_emulator(args.model, device="cpu")
        held = load_training_set(args.grid, heldout=True)
        trained = load_training_set(args.grid) if args.correct else None
    except (EmulatorFileError, FileNotFoundError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(held.labels) < 10:
        print(f"error: {held.source['grid']}: only {len(held.labels)} held-out spectra (need 10)", file=sys.stderr)
        return 2
    if trained is not None:
        if len(trained.labels) < 20:
            print(f"error: {trained.source['grid']}: only {len(trained.labels)} training spectra (need 20 for a correction)",
                  file=sys.stderr)
            return 2
        attach_residual_correction(emu, trained.labels, trained.flux)
    attach_model_error(emu, held)
    emu.save(args.output or args.model)
    out = {"model": str(args.output or args.model), **emu.card["model_error"]}
    if trained is not None:
        out["residual_correction"] = emu.card["residual_correction"]
    print(json.dumps(out))
    return 0


def _cmd_train(args) -> int:
    from .train import TrainConfig, load_training_set, train

    if not args.grid and not args.observed:
        print("error: give --grid (ab initio training) and/or --observed (data-driven fine-tuning)", file=sys.stderr)
        return 2
    data = None
    if args.grid:
        try:
            data = load_training_set(args.grid)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            print(f"error: {' + '.join(args.grid)}: cannot read the grid ({exc})", file=sys.stderr)
            return 2
    cfg = TrainConfig(epochs=args.epochs, batch=args.batch, lr=args.lr, grad_weight=args.grad_weight,
                      seed=args.seed, device=args.device, checkpoint_every=args.checkpoint_every,
                      max_train=args.max_train, grad_norm=args.grad_norm,
                      cool_weight=args.cool_weight, cool_teff=args.cool_teff,
                      network={"d_model": args.d_model, "n_decoder": args.n_decoder, "head": args.head})
    init = None
    if args.init or args.observed:  # --observed fine-tunes the shipped model unless told otherwise
        from .model import EmulatorFileError, load_emulator

        try:
            init = load_emulator(args.init, device=args.device)
        except EmulatorFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.observed:
        from .observed import finetune, load_observed

        try:
            obs = load_observed(args.observed, init.wavelength, init.resolution, progress=True)
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        emu = finetune(init, obs, args.output, grid=data, config=cfg)
        print(json.dumps({"model": args.output, "n_observed": len(obs.files),
                          "chi2_per_pixel": emu.card["finetune"]["history_last"]["chi2_per_pixel"]}))
        return 0
    try:
        held = load_training_set(args.grid, heldout=True)
    except (FileNotFoundError, ValueError, KeyError):
        held = None
    try:
        emu = train(data, args.output, cfg, resume=args.resume, heldout=held, init=init)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    src = {k: v for k, v in emu.card["training"]["source"].items() if k not in ("files_sha256", "spec", "supplements")}
    print(json.dumps({"model": args.output, **src,
                      "n_train_spectra": emu.card["training"]["n_train_spectra"],
                      "final_loss_flux": emu.card["training"]["final_loss_flux"]}))
    return 0
