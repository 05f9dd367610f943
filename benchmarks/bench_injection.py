"""Injection–recovery: fit ab initio spectra (not emulator spectra) with noise.

The injected spectra are the held-out part of the training grid (every 11th spectrum of
``phdlspec grid``, never trained on): engine spectra at R = 1800 on the LAMOST grid.
Each gets a random ``rv`` (±100 km/s, applied with the emulator's exact Fourier shift)
and ``vbroad`` (0–20 km/s), then Gaussian noise at S/N 20, 50 and 100 (per pixel, of the
normalized flux; with ``--noise lamost`` the S/N is LAMOST's g-band ``snrg`` and each pixel's
follows the median shape of the real LAMOST spectra in the data directory,
``information_limit.lamost_snr_profile``: about 0.2 of it below 4000 Å, 2 in the red).
They are fitted with ``fit_spectrum`` (CMA-ES + polish, or ``--method both``).

    .venv/bin/python benchmarks/bench_injection.py --grid assets/grid [--model PATH] [--n 200] [--snr 20 50 100]
        [--cmaes-evals 3000] [--scope all|atmosphere] [--rows rows.csv] [--model-error loo-local|loo-corr|loo|none] [--crb]
        [--noise flat|lamost] [--data-dir SHARED]

``--model-error loo-local`` (default): the likelihood adds the emulator's error, correlated
part and uncorrelated remainder, made at each star from the held-out residuals nearest it
in Teff, log g, [Fe/H] (``emulator.model_error.LocalModelError``), with the label shifts
those neighbours' errors cause added to the errors as a floor; each star's model error is
measured on the OTHER held-out spectra (leave one out), so that a star's own residual
never sets its weights or its floor; ``loo-corr``: the same split from all the other held-out spectra alike (before
2026-12-06); ``loo``: the per-pixel error spectrum only, treated as independent between
pixels; ``none``: the emulator is trusted exactly (as before 2026-12-03).

Reports, per S/N and label: bias (median of fit − truth), scatter (robust: 1.4826 × MAD
and plain std), and the calibration of the errors: std of (fit − truth)/error (the error on the side facing
the truth when the two differ), over all
fits and over the fits that do not flag the label unconstrained; the count
of elements with scatter ≤ 0.05 and ≤ 0.10 dex; the median fit time; with ``--crb`` the
median Cramér–Rao bound per label (noise only, exact emulator, all labels free) and the
count of elements whose bound is ≤ 0.05 / 0.10 dex, i.e. what any fitter could reach on
these spectra. Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", help="the grid folder whose held-out spectra are injected (required unless --summarize)")
    ap.add_argument("--model")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--snr", type=float, nargs="+", default=[20.0, 50.0, 100.0])
    ap.add_argument("--method", default="cmaes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--cmaes-evals", type=int, default=3000, help="CMA-ES budget per fit (fit_spectrum's default 3000)")
    ap.add_argument("--scope", default="all", choices=["all", "atmosphere"], help="fit_spectrum's cmaes_scope")
    ap.add_argument("--model-error", choices=["loo-local", "loo-corr", "loo", "none"], default="loo-local")
    ap.add_argument("--crb", action="store_true",
                    help="also the Cramer-Rao bound at the truth with the noise alone (all labels free, the fit's "
                         "masks and pseudo-continuum): how close the fits come to what the spectrum holds")
    ap.add_argument("--noise", choices=["flat", "lamost"], default="flat",
                    help="flat: the same S/N in every pixel; lamost: S/N is the g band's, shaped like real LAMOST spectra")
    ap.add_argument("--data-dir", help="the shared data directory (for --noise lamost)")
    ap.add_argument("--clean", choices=["engine", "emulator"], default="engine",
                    help="engine: the held-out ab initio spectra (the benchmark); emulator: the emulator's own "
                         "spectra at the same labels, a diagnostic of what the fitter loses when the model is exact")
    ap.add_argument("--rows", help="write every fit (truth, fit, error, flags, time) to this CSV as it goes")
    ap.add_argument("--part", metavar="K/M", help="fit only stars i with i %% M == K (0 <= K < M), e.g. two processes "
                    "0/2 and 1/2 with --rows each; the noise is drawn for every star, so the parts together are the "
                    "whole run, star by star; summarize them with --summarize")
    ap.add_argument("--summarize", nargs="+", metavar="ROWS", help="print the summary of --rows files (parts of one "
                    "run) and exit: per label bias, robust scatter, pull std; element counts; no fitting")
    args = ap.parse_args(argv)
    if args.summarize:
        print(json.dumps(summarize_rows(args.summarize), indent=1))
        return 0
    if not args.grid:
        ap.error("--grid is required")
    part = (0, 1)
    if args.part:
        try:
            part = tuple(int(v) for v in args.part.split("/"))
            assert len(part) == 2 and 0 <= part[0] < part[1]
        except (ValueError, AssertionError):
            ap.error(f"--part {args.part}: expected K/M with 0 <= K < M")
    torch.set_num_threads(args.threads)
    # benchmarks/ is on sys.path when run as a script
    from information_limit import bound, injected, lamost_snr_profile

    from phdlspec_app import labels as L
    from phdlspec_app.emulator import load_emulator
    from phdlspec_app.emulator.train import load_training_set
    from phdlspec_app.fitting import fit_spectrum
    from phdlspec_app.io import Spectrum

    names = L.label_names()
    emu = load_emulator(args.model, device="cpu")
    held = load_training_set(args.grid, heldout=True)
    n = min(args.n, len(held.labels))
    rng = np.random.default_rng(args.seed)
    truth, clean = injected(held, n, rng)  # the same stars information_limit.py bounds
    if args.clean == "emulator":
        clean = np.asarray(emu(truth), float)
    sigma = None
    if args.model_error == "loo":
        from phdlspec_app.emulator.model_error import leave_one_out, residuals

        sigma = leave_one_out(residuals(emu, held.labels, held.flux))
    elif args.model_error in ("loo-corr", "loo-local"):
        from phdlspec_app.emulator.model_error import (LocalModelError, error_basis, projection_remainder,
                                                       residuals, shift_equations)

        res = residuals(emu, held.labels, held.flux)
        eqs = shift_equations(emu, held.labels, held.flux) if args.model_error == "loo-local" else None

        class _LeaveOneOut:  # the model error from every held-out residual but star i's, made when asked
            def __getitem__(self, i):
                r = np.delete(res, i, axis=0)
                q = projection_remainder(r)
                basis, rest = error_basis(r, remainder=q)
                if args.model_error == "loo-corr":
                    return rest, basis
                return rest, basis, LocalModelError(r, np.delete(held.labels, i, axis=0), remainders=q,
                                                    shifts=(np.delete(eqs[0], i, axis=0),
                                                            np.delete(eqs[1], i, axis=0), eqs[2]))

        sigma = _LeaveOneOut()
    out = {"grid": args.grid, "clean": args.clean, "model_error": args.model_error, "model": str(args.model or "default"), "n": n,
           "method": args.method, "noise": args.noise, "part": args.part, "by_snr": {}}
    shape = 1.0
    if args.noise == "lamost":
        shape, n_spec = lamost_snr_profile(emu, args.data_dir)
        out["lamost_profile_spectra"] = n_spec
    for snr_g in args.snr:
        snr = snr_g * shape  # per pixel
        fits, errs_lo, errs_hi, times, unconstrained, done = [], [], [], [], [], []
        for i in range(n):
            flux = clean[i] + rng.normal(0, 1.0, clean.shape[1]) * (1.0 / snr)  # = normal(0, 1/snr)
            if i % part[1] != part[0]:
                continue   # another part's star: its noise is drawn all the same, so the parts stay paired
            spec = Spectrum(held.wavelength, flux, np.broadcast_to(snr ** 2, flux.shape).copy(),
                            np.zeros(flux.size, bool), meta={"source": f"heldout[{i}] S/N {snr_g:g}"})
            t0 = time.perf_counter()
            r = fit_spectrum(spec, emu, method=args.method, seed=args.seed + i, cmaes_evals=args.cmaes_evals,
                             cmaes_scope=args.scope, model_error=False if sigma is None else sigma[i])
            times.append(time.perf_counter() - t0)
            done.append(i)
            fits.append([r.labels[k] for k in names])
            errs_lo.append([r.err_lo[k] for k in names])
            errs_hi.append([r.err_hi[k] for k in names])
            unconstrained.append(set(r.unconstrained()))
            if args.rows:
                _append_row(args.rows, names, snr_g, i, truth[i], fits[-1], errs_lo[-1], errs_hi[-1], r, times[-1])
            print(f"S/N {snr_g:g}: {i + 1}/{n}", file=sys.stderr, flush=True)
        fits = np.array(fits)
        d = fits - truth[done]
        # asymmetric errors: the side that faces the truth (fit above the truth → the lower error)
        errs = np.where(d > 0, np.array(errs_lo), np.array(errs_hi))
        per = {}
        for j, k in enumerate(names):
            dj = d[:, j]
            ok = np.isfinite(dj)
            pulls = dj[ok] / np.where(errs[ok, j] > 0, errs[ok, j], np.nan)
            per[k] = {"bias": float(np.median(dj[ok])), "scatter_mad": float(1.4826 * np.median(
                np.abs(dj[ok] - np.median(dj[ok])))), "std": float(np.std(dj[ok])),
                "pull_std": float(np.nanstd(pulls)) if np.isfinite(pulls).any() else None}
            # over the fits that call the label a measurement (the rest are reported as NaN)
            called = ok & np.array([k not in u for u in unconstrained])
            pc = dj[called] / np.where(errs[called, j] > 0, errs[called, j], np.nan)
            per[k].update({"n_constrained": int(called.sum()),
                           "pull_std_constrained": float(np.nanstd(pc)) if np.isfinite(pc).any() else None})
        xfe = [lab.name for lab in L.xfe_labels()]
        out["by_snr"][f"{snr_g:g}"] = {
            "labels": per, "median_fit_s": statistics.median(times),
            "elements_le_0.05": sum(per[k]["scatter_mad"] <= 0.05 for k in xfe),
            "elements_le_0.10": sum(per[k]["scatter_mad"] <= 0.10 for k in xfe)}
        if args.crb:
            crb = np.array([bound(emu, held.wavelength, clean[i], snr, truth[i]) for i in done])
            med = np.nanmedian(crb, axis=0)
            for j, k in enumerate(names):
                per[k]["crb_median"] = float(med[j]) if np.isfinite(med[j]) else None   # JSON has no NaN
                per[k]["scatter_over_crb"] = (per[k]["scatter_mad"] / float(med[j])
                                              if np.isfinite(med[j]) and med[j] > 0 else None)
            out["by_snr"][f"{snr_g:g}"].update({
                "crb_elements_le_0.05": int(sum(med[names.index(k)] <= 0.05 for k in xfe)),
                "crb_elements_le_0.10": int(sum(med[names.index(k)] <= 0.10 for k in xfe))})
    print(json.dumps(out, indent=1))
    return 0


def summarize_rows(paths) -> dict:
    """Per S/N: bias, robust scatter (1.4826 MAD), std and pull std (the error on the side
    facing the truth) per label, and the element counts, from ``--rows`` files."""
    import csv

    from phdlspec_app import labels as L

    rows = [r for p in paths for r in csv.DictReader(open(p, newline=""))]
    xfe = [lab.name for lab in L.xfe_labels()]
    out = {"rows": list(map(str, paths)), "by_snr": {}}
    for snr in sorted({r["snr"] for r in rows}, key=float):
        sel = sorted((r for r in rows if r["snr"] == snr), key=lambda r: int(r["index"]))
        if len({r["index"] for r in sel}) != len(sel):
            raise SystemExit(f"{paths}: star(s) repeated at S/N {snr}: parts of different runs?")
        per = {}
        for k in L.label_names():
            if f"true_{k}" not in sel[0]:
                continue
            d = np.array([float(r[k]) - float(r[f"true_{k}"]) for r in sel])
            e = np.array([float(r[f"{k}_err_lo"] if di > 0 else r[f"{k}_err_hi"]) for r, di in zip(sel, d)])
            ok = np.isfinite(d)
            pulls = d[ok] / np.where(e[ok] > 0, e[ok], np.nan)
            per[k] = {"bias": float(np.median(d[ok])),
                      "scatter_mad": float(1.4826 * np.median(np.abs(d[ok] - np.median(d[ok])))),
                      "std": float(np.std(d[ok])),
                      "pull_std": float(np.nanstd(pulls)) if np.isfinite(pulls).any() else None}
        out["by_snr"][f"{float(snr):g}"] = {"n": len(sel), "labels": per,
                              "median_fit_s": float(np.median([float(r["seconds"]) for r in sel])),
                              "elements_le_0.05": sum(per[k]["scatter_mad"] <= 0.05 for k in xfe if k in per),
                              "elements_le_0.10": sum(per[k]["scatter_mad"] <= 0.10 for k in xfe if k in per)}
    return out


def _append_row(path, names, snr, i, truth, fit, err_lo, err_hi, result, seconds):
    import csv
    from pathlib import Path

    new = not Path(path).exists()
    with open(path, "a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(["snr", "index", "seconds", "chi2_reduced", "flags"] + [f"true_{k}" for k in names]
                       + names + [f"{k}_err_lo" for k in names] + [f"{k}_err_hi" for k in names])
        w.writerow([snr, i, f"{seconds:.3f}", f"{result.chi2_reduced:.4f}", ";".join(result.flags)]
                   + [f"{v:.6g}" for v in truth] + [f"{v:.6g}" for v in fit] + [f"{v:.6g}" for v in err_lo]
                   + [f"{v:.6g}" for v in err_hi])


if __name__ == "__main__":
    sys.exit(main())
