"""Calibration: recovery of injected trends, error coverage, and speed.

Run: ``.venv/bin/python benchmarks/bench_calibration.py [--seeds 500]``

Prints, on synthetic tables with KNOWN trends (the generators of tests/test_calibration.py):
* wide binaries (120 pairs, 0.03 dex noise, d[Mg/Fe]/dTeff = 0.1 dex/1000 K): slope, bootstrap
  error, and the 1-/2-sigma coverage of the bootstrap over many independent data sets;
* the open cluster (80 members): Teff and log g slopes, anchor, coverage;
* the reference catalog (300 stars): the chosen model, scatter before/after;
* speed: fitting all three, and applying a calibration to 100 000 stars.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_calibration import SLOPE, binaries_table, cluster_table, read_like, reference_tables  # noqa: E402

from phdlspec_app.calibration import Calibration, build_calibration, crossmatch  # noqa: E402
from phdlspec_app.calibration.binaries import fit_wide_binaries  # noqa: E402
from phdlspec_app.calibration.cluster import fit_cluster  # noqa: E402
from phdlspec_app.calibration.reference import fit_reference  # noqa: E402


def coverage(z):
    z = np.abs(np.asarray(z))
    return f"|z|<1: {np.mean(z < 1):.3f} (0.683)  |z|<2: {np.mean(z < 2):.3f} (0.954)  n={z.size}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=500, help="independent data sets for the coverage")
    args = ap.parse_args(argv)

    t, pairs = binaries_table()
    t0 = time.perf_counter()
    c = fit_wide_binaries(t, pairs, labels=["mg_fe"], n_boot=400)[0][0]
    dt = time.perf_counter() - t0
    print(f"wide binaries: slope {c.trend.coef[0]:.4f} +- {np.sqrt(c.trend.cov[0, 0]):.4f} dex/1000K "
          f"(injected {SLOPE}); scatter {c.stats['scatter_before']:.4f} -> {c.stats['scatter_after']:.4f}; "
          f"internal precision {c.stats['internal_precision']:.4f} (injected 0.03); {dt * 1e3:.0f} ms")
    z = []
    for s in range(args.seeds):
        tt, pp = binaries_table(n_pairs=40, seed=10_000 + s, noise=0.04)
        cc = fit_wide_binaries(tt, pp, labels=["mg_fe"], n_boot=200, rng=s)[0][0]
        z.append((cc.trend.coef[0] - SLOPE) / np.sqrt(cc.trend.cov[0, 0]))
    print(f"  bootstrap coverage (40 pairs): {coverage(z)}")

    m = cluster_table()
    c = fit_cluster(m, {"mg_fe": (0.01, 0.02)}, labels=["mg_fe"])[0][0]
    e = np.sqrt(np.diag(c.trend.cov))
    print(f"cluster: offset {c.trend.coef[0]:+.4f}+-{e[0]:.4f} (injected +0.08), Teff {c.trend.coef[1]:+.4f}+-{e[1]:.4f} "
          f"(-0.06), logg {c.trend.coef[2]:+.4f}+-{e[2]:.4f} (+0.04); scatter {c.stats['scatter_before']:.4f} -> "
          f"{c.stats['scatter_after']:.4f}")
    z = []
    for s in range(args.seeds):
        cc = fit_cluster(cluster_table(n=40, seed=20_000 + s), {"mg_fe": (0.01, 0.0)}, labels=["mg_fe"])[0][0]
        z.append((cc.trend.coef[1] + 0.06) / np.sqrt(cc.trend.cov[1, 1]))
    print(f"  Teff-slope coverage (40 members): {coverage(z)}")

    ours, ref, ref_mg = reference_tables()
    t0 = time.perf_counter()
    c = fit_reference(crossmatch(ours, read_like(ref)), labels=["mg_fe"])[0][0]
    dt = time.perf_counter() - t0
    print(f"reference: chose order {c.stats['order']} scale={c.stats['scale_term']}; CV scatter "
          f"{ {k: round(v, 4) for k, v in c.stats['cv_scores'].items()} }; scatter {c.stats['scatter_before']:.4f} "
          f"-> {c.stats['scatter_after']:.4f}; {dt * 1e3:.0f} ms")

    t, pairs = binaries_table()
    t0 = time.perf_counter()
    cal = build_calibration(t, pairs=pairs, cluster_members=np.arange(60), cluster_reference={"mg_fe": (0.0, 0.02)})
    print(f"build (binaries + cluster): {(time.perf_counter() - t0) * 1e3:.0f} ms")
    big = t[np.random.default_rng(0).integers(0, len(t), 100_000)]
    t0 = time.perf_counter()
    Calibration(cal.corrections).apply(big)
    print(f"apply to 100000 stars: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
