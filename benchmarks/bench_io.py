"""Benchmark: read_spectrum on the real LAMOST files, per layout.

Prints one JSON object: median and p95 milliseconds per file for each layout,
files per second over the whole set, and the machine.

    python benchmarks/bench_io.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections import defaultdict

from phdlspec_app.io import read_spectrum
from phdlspec_app.paths import lamost_spectra_dir


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    files = sorted(p for p in lamost_spectra_dir().rglob("*") if p.name.endswith((".fits", ".fits.gz")))
    per_layout = defaultdict(list)
    total = []
    for _ in range(args.repeat):
        t_all = time.perf_counter()
        for f in files:
            t0 = time.perf_counter()
            spec = read_spectrum(f)
            per_layout[spec.meta["layout"] + (" (gz)" if f.name.endswith(".gz") else "")].append(
                1e3 * (time.perf_counter() - t0))
        total.append(time.perf_counter() - t_all)
    out = {
        "benchmark": "read_spectrum on real LAMOST files",
        "files": len(files),
        "repeat": args.repeat,
        "files_per_second_median": round(len(files) / statistics.median(total), 1),
        "ms_per_file": {k: {"n": len(v) // args.repeat, "median": round(statistics.median(v), 2),
                            "p95": round(sorted(v)[int(0.95 * (len(v) - 1))], 2)}
                        for k, v in sorted(per_layout.items())},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
