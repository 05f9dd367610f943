"""Real stars: fit the B6212 LAMOST spectra that have LAMOST pipeline (LASP) labels and
compare Teff, log g and [Fe/H] with them.

    .venv/bin/python benchmarks/bench_lamost_real.py [--model PATH] [--plot docs/lamost_vs_lasp.png] [--limit N]
        [--rows rows.csv [--resume]] [--scope all|atmosphere]

Spectra: every star in ``$PHDLSPEC_DATA/spectra/lamost`` whose file name (or header
``obsid``) appears in ``catalogs/lamost_lasp_labels/*.csv`` (LAMOST DR1 LASP: ``teff``, ``logg``, ``feh``).
Reports the median offset (ours − LASP), robust scatter (1.4826 × MAD) and the number
of stars, per label; with ``--plot`` a three-panel comparison figure. Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--plot")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method", default="cmaes")
    ap.add_argument("--scope", default="all", choices=["all", "atmosphere"],
                    help="CMA-ES search scope (fit_spectrum's cmaes_scope; default all, with which the committed "
                         "docs/lamost_vs_lasp_rows.csv was made); rows record chi2 and seconds per star, so two runs "
                         "compare the scopes star by star")
    ap.add_argument("--rows", type=Path, help="CSV of the per-star rows, rewritten (atomically) after each star")
    ap.add_argument("--resume", action="store_true", help="with --rows: skip the stars already in it")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import pandas as pd

    from phdlspec_app.emulator import load_emulator
    from phdlspec_app.fitting import fit_spectrum
    from phdlspec_app.io import SpectrumFormatError, read_spectrum
    from phdlspec_app.paths import catalogs_dir, lamost_spectra_dir
    from phdlspec_app.preprocess import FitInputError

    cat = pd.concat([pd.read_csv(p) for p in sorted((catalogs_dir() / "lamost_lasp_labels").glob("*.csv"))])
    cat = cat.drop_duplicates("obsid")
    # the pilot-era (v2.6) files carry no OBSID keyword: match on the catalog's file name,
    # else on the header's obsid
    by_name = cat.set_index("filename")
    by_obsid = cat.set_index("obsid")
    emu = load_emulator(args.model, device="cpu")
    rows = []
    if args.resume and args.rows and args.rows.exists():
        rows = pd.read_csv(args.rows, keep_default_na=False).to_dict("records")
    done = {r["file"] for r in rows}
    files = sorted(p for p in Path(lamost_spectra_dir()).rglob("*.fits*"))
    for f in files:
        try:
            spec = read_spectrum(f)
        except SpectrumFormatError:
            continue
        name = f.name[:-3] if f.name.endswith(".gz") else f.name
        if f.name in done:
            continue
        if name in by_name.index:
            ref = by_name.loc[name]
        else:
            try:
                obsid = int(spec.meta.get("obsid"))
            except (TypeError, ValueError):
                continue
            if obsid not in by_obsid.index:
                continue
            ref = by_obsid.loc[obsid]
        obsid = int(ref["obsid"])
        t0 = time.perf_counter()
        try:
            r = fit_spectrum(spec, emu, method=args.method, seed=1, cmaes_scope=args.scope)
        except FitInputError as exc:
            print(f"skip {f.name}: {exc}", file=sys.stderr)
            continue
        rows.append({"file": f.name, "obsid": obsid, "snr": r.snr, "chi2_reduced": r.chi2_reduced, "chi2": r.chi2,
                     "seconds": round(time.perf_counter() - t0, 2), "cmaes_scope": args.scope,
                     "flags": ",".join(r.flags), **{k: r.labels[k] for k in ("teff", "logg", "fe_h")},
                     "lasp_teff": float(ref["teff"]), "lasp_logg": float(ref["logg"]), "lasp_fe_h": float(ref["feh"])})
        if args.rows:
            tmp = args.rows.with_name(f".{args.rows.name}.part")
            pd.DataFrame(rows).to_csv(tmp, index=False)
            tmp.replace(args.rows)
        print(f"{len(rows)}: {f.name} teff {r.labels['teff']:.0f} vs {ref['teff']:.0f}", file=sys.stderr, flush=True)
        if args.limit and len(rows) >= args.limit:
            break
    df = pd.DataFrame(rows)
    out = {"n": len(df), "model": str(args.model or "default")}
    for k in ("teff", "logg", "fe_h"):
        d = df[k] - df[f"lasp_{k}"]
        out[k] = {"median_offset": float(d.median()), "scatter_mad": float(1.4826 * (d - d.median()).abs().median())}
    if args.plot and len(df):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(12, 4))
        for ax, k, unit in zip(axes, ("teff", "logg", "fe_h"), ("K", "dex", "dex")):
            ax.scatter(df[f"lasp_{k}"], df[k], s=8, c=df["snr"], cmap="viridis")
            lo, hi = np.nanmin(df[[k, f"lasp_{k}"]].values), np.nanmax(df[[k, f"lasp_{k}"]].values)
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_xlabel(f"LASP {k} ({unit})")
            ax.set_ylabel(f"PhDLspec {k} ({unit})")
            ax.set_title(f"offset {out[k]['median_offset']:+.3g}, scatter {out[k]['scatter_mad']:.3g}")
        fig.suptitle(f"{len(df)} LAMOST B6212 stars: PhDLspec vs LAMOST pipeline")
        fig.tight_layout()
        tmp = Path(args.plot).with_suffix(".part.png")
        fig.savefig(tmp, dpi=110)
        tmp.replace(args.plot)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
