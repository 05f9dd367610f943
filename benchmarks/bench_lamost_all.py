"""Every real LAMOST file through `phdlspec fit`: which fit, which are refused and why.

    .venv/bin/python benchmarks/bench_lamost_all.py -o results.ecsv [--files LIST.txt] [--skip-fitted ROWS.csv]

Runs the command line itself (``phdlspec fit FILES... -o results.ecsv``) on the files of
``$PHDLSPEC_DATA/spectra/lamost/INVENTORY.csv`` (or the paths listed one per line in
``--files``). ``--skip-fitted`` leaves out the files named in the ``file`` column of an
earlier table, e.g. the 131 LASP stars of ``bench_lamost_real.py``. Then it reads the table back
and prints JSON: how many files were fitted, and how many were refused, with each reason
next to the LAMOST class from the inventory. It also gives the flags, the χ²/dof and S/N
quartiles, and the wall time per file.
"""
from __future__ import annotations

import argparse
import collections
import csv
import json
import re
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", required=True, help="the fit table (.ecsv, .fits, .json, .parquet)")
    ap.add_argument("--files", type=Path, help="paths to fit, one per line (default: the whole inventory)")
    ap.add_argument("--skip-fitted", type=Path, help="a CSV whose 'file' column names files already fitted")
    args = ap.parse_args(argv)

    from phdlspec_app.cli import main as phdlspec
    from phdlspec_app.fitting.output import read_results
    from phdlspec_app.paths import lamost_spectra_dir

    root = Path(lamost_spectra_dir())
    inventory = {}
    with open(root / "INVENTORY.csv") as fh:
        for row in csv.DictReader(fh):
            inventory[Path(row["file"]).name] = row
    if args.files:
        files = [line.strip() for line in args.files.read_text().splitlines() if line.strip()]
    else:
        files = [str(root.parent.parent / r["file"]) for r in inventory.values()]
    if args.skip_fitted:
        with open(args.skip_fitted) as fh:
            done = {r["file"] for r in csv.DictReader(fh)}
        files = [f for f in files if Path(f).name not in done]
    t0 = time.perf_counter()
    rc = phdlspec(["fit", *files, "-o", args.output])
    wall = time.perf_counter() - t0
    rows = read_results(args.output)
    fitted = [r for r in rows if not r.get("error")]
    refused = [r for r in rows if r.get("error")]
    flags = collections.Counter(f.split(":")[0] for r in fitted for f in re.split(r"[;,]", str(r.get("flags") or "")) if f)
    chi2 = np.array([float(r["chi2_reduced"]) for r in fitted])
    snr = np.array([float(r["snr"]) for r in fitted])
    out = {"files": len(files), "rows": len(rows), "exit_code": rc, "fitted": len(fitted),
           "refused": [{"file": Path(r["file"]).name, "class": inventory.get(Path(r["file"]).name, {}).get("cls"),
                        "reason": r["error"]} for r in refused],
           "classes_fitted": dict(collections.Counter(inventory.get(Path(r["file"]).name, {}).get("cls", "?")
                                                      for r in fitted)),
           "flags": dict(flags), "chi2_reduced_quartiles": np.percentile(chi2, [25, 50, 75]).round(3).tolist(),
           "snr_quartiles": np.percentile(snr, [25, 50, 75]).round(1).tolist(),
           "seconds_per_file": round(wall / max(1, len(files)), 2)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
