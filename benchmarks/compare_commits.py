"""Side-by-side timing of the ab initio engine at two commits (issue 3).

On a shared machine, runs of the same code minutes apart differ by 10 % or more, so a
speed-up is only believable when the two versions are timed alternately in one session.
This script checks out each commit into a temporary git worktree and runs, alternately
(A, B, A, B, …), one fresh process per run that imports that worktree's ``phdlspec_app``,
makes one cold call and then times one warm call of

- ``differential`` (default): ``Synthesizer().differential_spectra(labels)`` — the
  spectrum and its 30 derivatives, full range;
- ``spectrum``: ``Synthesizer().spectrum(labels)``.

    .venv/bin/python benchmarks/compare_commits.py f84b887 HEAD [--what spectrum]
        [--rounds 2] [--threads 2] [--teff 5777 --logg 4.44 --fe-h 0]

Prints one JSON object: per commit the warm wall and CPU seconds of every round and
their medians, and the ratio of the medians (B / A). Shared data is found as usual
(``$PHDLSPEC_DATA`` or ``../shared`` beside the repository).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[2]))
import phdlspec_app
from phdlspec_app import labels as L
from phdlspec_app.physics.synthesize import Synthesizer
assert phdlspec_app.__file__.startswith(sys.argv[1]), phdlspec_app.__file__
lab = L.to_vector(dict(teff=float(sys.argv[4]), logg=float(sys.argv[5]), fe_h=float(sys.argv[6])))
s = Synthesizer()
call = (lambda: s.differential_spectra(lab)) if sys.argv[3] == "differential" else (lambda: s.spectrum(lab))
call()
t, c = time.perf_counter(), time.process_time()
call()
print(json.dumps(dict(wall=time.perf_counter() - t, cpu=time.process_time() - c)))
"""


def _data_dir() -> str:
    env = os.environ.get("PHDLSPEC_DATA")
    return env if env else str(ROOT.parent / "shared")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", help="first commit (e.g. the previous landing)")
    ap.add_argument("b", help="second commit (e.g. HEAD)")
    ap.add_argument("--what", choices=("differential", "spectrum"), default="differential")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teff", type=float, default=5777.0)
    ap.add_argument("--logg", type=float, default=4.44)
    ap.add_argument("--fe-h", type=float, default=0.0)
    args = ap.parse_args(argv)

    env = dict(os.environ, PHDLSPEC_DATA=_data_dir())
    runs = {args.a: [], args.b: []}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for i, ref in enumerate((args.a, args.b)):
            path = Path(tmp) / f"tree{i}"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), ref], check=True)
            trees[ref] = str(path)
        try:
            for r in range(args.rounds):
                for ref in (args.a, args.b):
                    out = subprocess.run([sys.executable, "-c", _CHILD, trees[ref], str(args.threads), args.what,
                                          str(args.teff), str(args.logg), str(args.fe_h)],
                                         cwd=tmp, env=env, capture_output=True, text=True, check=True)
                    res = json.loads(out.stdout.strip().splitlines()[-1])
                    runs[ref].append(res)
                    print(f"[compare] round {r + 1} {ref}: {res['wall']:.1f} s wall, {res['cpu']:.1f} s CPU",
                          file=sys.stderr, flush=True)
        finally:
            for path in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", path], check=False)
    summary = {"what": args.what, "threads": args.threads,
               "labels": dict(teff=args.teff, logg=args.logg, fe_h=args.fe_h)}
    for ref, rs in runs.items():
        summary[ref] = dict(wall_s=[round(x["wall"], 2) for x in rs], cpu_s=[round(x["cpu"], 2) for x in rs],
                            median_wall_s=round(statistics.median(x["wall"] for x in rs), 2))
    summary["ratio_b_over_a"] = round(summary[args.b]["median_wall_s"] / summary[args.a]["median_wall_s"], 3)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
