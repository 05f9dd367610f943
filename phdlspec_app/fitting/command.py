"""Subcommands of the fitting layer for the ``phdlspec`` entry point (see ``phdlspec_app.cli``):
``fit`` (a few spectra, in this process) and ``fit-batch`` (a survey, on Dask)."""
from __future__ import annotations

import argparse
import sys


def _common(p) -> None:
    p.add_argument("-o", "--output", required=True, help="result table: .ecsv, .fits, .json or .parquet")
    p.add_argument("--method", choices=("cmaes", "mcmc", "both"), default="cmaes",
                   help="cmaes: CMA-ES + polish, Cramer-Rao errors (default); mcmc/both: emcee posterior")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="random seed (fits are deterministic given it)")
    p.add_argument("--fix", action="append", metavar="LABEL=VALUE", help="hold a label fixed (repeatable)")
    p.add_argument("--prior", action="append", metavar="LABEL=MEAN,SIGMA", help="Gaussian prior (repeatable)")
    res = p.add_mutually_exclusive_group()
    res.add_argument("--resolution", type=float, help="the spectra's resolving power (overrides the header)")
    res.add_argument("--fwhm", type=float, help="the spectra's LSF FWHM in A (overrides the header)")
    p.add_argument("--air", dest="air", action="store_const", const=True, default=None,
                   help="the files' wavelengths are in air (overrides the header)")
    p.add_argument("--masks", default="all",
                   help="default masks to apply: all (default), none, or a comma list of telluric,interstellar,dib")
    p.add_argument("--cmaes-evals", type=int, default=3000, help="CMA-ES budget in model evaluations (default 3000)")
    p.add_argument("--cmaes-scope", choices=("all", "atmosphere"), default="atmosphere",
                   help="labels CMA-ES searches: atmosphere (default: Teff, logg, vmic, [Fe/H], vbroad, rv, with "
                        "the abundances solved by Levenberg-Marquardt in between; ~6x faster than all, with the same "
                        "accuracy on injected spectra) or all (every free label: a 32-D search, for a second opinion)")
    p.add_argument("--mcmc-moves", choices=("hmc", "de"), default="hmc",
                   help="MCMC sampler moves: hmc (default; Hamiltonian Monte Carlo with the emulator's autodiff "
                        "gradient, autocorrelation times of a few steps) or de (differential evolution, "
                        "gradient-free, ~100x longer autocorrelation times in 32 labels)")
    p.add_argument("--no-model-error", action="store_true",
                   help="trust the emulator exactly: do not add its error spectrum (stored in the model file, "
                        "measured on held-out engine spectra) to the noise variance")
    p.add_argument("--emulator", metavar="PATH", help="emulator model file (default: the model in assets/), "
                                                      "or module:factory")


def _options(args) -> dict:
    from .fit import parse_fix, parse_prior

    masks = args.masks if args.masks in ("all", "none") else [m.strip() for m in args.masks.split(",") if m.strip()]
    return {"method": args.method, "seed": args.seed, "fix": parse_fix(args.fix or []),
            "priors": parse_prior(args.prior or []), "resolution": args.resolution, "fwhm": args.fwhm,
            "air": args.air, "masks": masks, "cmaes_evals": args.cmaes_evals, "cmaes_scope": args.cmaes_scope,
            "mcmc_moves": args.mcmc_moves, "model_error": not args.no_model_error}


def _cmd_fit(args) -> int:
    from pathlib import Path

    from ..io import SpectrumFormatError
    from .fit import fit_spectrum
    from .output import load_emulator_spec, write_results
    from ..preprocess import FitInputError
    from .result import error_row

    try:
        opts = _options(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    emu = load_emulator_spec(args.emulator, args.device)
    rows, status = [], 0
    bar = None
    if len(args.files) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(args.files), unit="star", desc="fit", file=sys.stderr)
    plot_dir = Path(args.plot) if args.plot else None
    if plot_dir:
        plot_dir.mkdir(parents=True, exist_ok=True)
    for path in args.files:
        try:
            r = fit_spectrum(path, emu, **opts)
            rows.append({**r.to_row(), "file": str(path)})
            if plot_dir:
                from .plots import plot_corner, plot_fit

                stem = Path(path).name.split(".")[0]
                plot_fit(r, plot_dir / f"{stem}_fit.png")
                plot_corner(r, plot_dir / f"{stem}_corner.png")
        except (FitInputError, SpectrumFormatError, ValueError) as exc:
            msg = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            print(f"error: {msg}", file=sys.stderr)
            rows.append(error_row(str(path), msg))
            status = 2
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    try:
        write_results(rows, args.output)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {len(rows)} rows ({sum(1 for r in rows if not r.get('error'))} fitted)")
    return status


def _cmd_fit_batch(args) -> int:
    from .batch import list_inputs, run_batch
    from .output import FORMATS

    if not args.output.lower().endswith(FORMATS):
        print(f"error: {args.output}: output format must be one of {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    try:
        inputs = list_inputs(args.inputs)
        opts = _options(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.group is not None and args.group < 1:
        print(f"error: --group {args.group}: must be at least 1", file=sys.stderr)
        return 2
    # "auto" is resolved on each worker (cuda where it has one), the default group here
    rows = run_batch(inputs, args.output, args.emulator, scheduler=args.scheduler, workers=args.workers,
                     device=args.device, resume=args.resume, options=opts, group=args.group)
    bad = sum(1 for r in rows if r.get("error"))
    print(f"wrote {args.output}: {len(rows)} rows ({len(rows) - bad} fitted, {bad} refused)")
    return 0


def add_parsers(sub) -> None:
    """Register this layer's subcommands on the argparse sub-parsers object ``sub``."""
    p = sub.add_parser("fit", help="fit the 32 labels of one or more spectra",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Fit each spectrum with the emulator (CMA-ES, optionally emcee): one row per "
                                   "input with every label, its error (<label>_err; also <label>_err_lo and _err_hi "
                                   "for the [X/Fe], whose posterior is asymmetric, and for every label with "
                                   "MCMC), chi2_reduced, snr and flags; unconstrained elements are NaN.",
                       epilog="Example:\n  phdlspec fit spec-*.fits.gz -o results.ecsv --prior logg=4.4,0.1 --plot figs/")
    p.add_argument("files", nargs="+", metavar="SPECTRUM")
    _common(p)
    p.add_argument("--plot", metavar="DIR", help="write <name>_fit.png and <name>_corner.png per star")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("fit-batch", help="fit a survey's spectra on Dask (resumable)",
                       description="Fit every spectrum in a folder (or listed in a text file) on a dask.distributed "
                                   "cluster, streaming rows to the output; a star whose worker dies is retried.")
    p.add_argument("inputs", metavar="DIR_OR_LIST")
    _common(p)
    p.add_argument("--scheduler", metavar="tcp://host:port", help="join this scheduler instead of a LocalCluster")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    p.add_argument("--resume", action="store_true", help="skip inputs already in the output table")
    p.add_argument("--group", type=int, metavar="N",
                   help="fits run at once on each worker, sharing every emulator call (default: 16 when the device "
                        "is CUDA, or auto and this machine has CUDA, where a call of thousands of spectra costs about "
                        "what one of a few does; 1 on the CPU). The local cluster gets N threads per worker; with "
                        "--scheduler the workers keep their own thread count")
    p.set_defaults(func=_cmd_fit_batch)
