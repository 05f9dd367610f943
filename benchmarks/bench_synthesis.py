"""Benchmark of the full synthesis: one star, the default line list, the LAMOST grid.

Measures, in one process (CPU threads as given by ``--threads``, default 2):

- ``primal``: ``Synthesizer().spectrum(labels)`` — the normalized spectrum on the 3909
  LAMOST pixels (3700–9100 Å), synthesized at R = 300 000 over 3650–9150 Å;
- ``differential``: ``Synthesizer().differential_spectra(labels)`` — the spectrum and its
  30 derivatives (teff, logg, vmic and the 27 abundance labels) by forward-mode AD
  (all tangents in one pass, ``method="multi"``).

- ``sme`` (``--sme``): SME (``pysme-astro``, the compiled SME library) given the same
  atmosphere, abundances and line list (atoms, molecules, Balmer/Paschen lines) over the
  same 3650–9150 Å in 500 Å pieces (as ``validate_sun.py``), its normalized spectrum only
  (SME has no differential spectra); the ratios to our warm timings are reported. Needs a
  writable HOME for SME's cache (``HOME=/tmp/smehome``).

"cold" is the first call in the process: it includes ``torch.compile`` of the kernels
(inductor's on-disk cache makes a second process faster than a truly first run; delete
``/tmp/torchinductor_$USER`` for a really cold start). "warm" is the median of
``--repeats`` further calls. Peak RSS (``resource.getrusage``, whole process, monotone)
is reported after each phase. Line counts come from one pass over the wavelength chunks
with the solar state (input lines per chunk summed over chunks, which double-counts the
±30 Å chunk margins; lines passing the screening bound; lines selected).

    HOME=/tmp/smehome .venv/bin/python benchmarks/bench_synthesis.py [--repeats 3] [--no-diff] [--sme] [--teff 5777 --logg 4.44]

Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import numpy as np
import torch


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6   # Linux: kB


def _timed(fn, what=""):
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    if what:
        print(f"[bench] {what}: {dt:.1f} s, peak RSS {_rss_gb():.2f} GB", file=sys.stderr, flush=True)
    return dt, out


def line_counts(synth, labels) -> dict:
    from phdlspec_app.physics.continuum_absorption import continuum_absorption
    from phdlspec_app.physics.synthesize import _interp_last

    atm, eos, vmic = synth.state(labels)
    wl = synth.wavelength
    wl_c = torch.as_tensor(synth._coarse_grid(wl), dtype=torch.float64)
    acc = continuum_absorption(wl_c, atm, eos)
    tot = dict(n_input=0, n_screened=0, n_selected=0, n_points=0, n_kernel_chunks=0)
    with torch.no_grad():
        for a, b in synth._chunks(wl):
            w = wl[a:b]
            ac = _interp_last(acc, wl_c, torch.as_tensor(w))
            from phdlspec_app.physics.line_absorption import (line_absorption, molecule_names,
                                                              prepared_window)

            prep = prepared_window(synth._prepared(molecule_names(eos)), w[0] - 30, w[-1] + 30)
            _, st = line_absorption(None, w, atm, eos, vmic, alpha_cont=ac, prepared=prep,
                                    threshold=synth.line_threshold, return_stats=True)
            tot["n_input"] += st.n_input
            tot["n_screened"] += max(st.n_screened, 0)
            tot["n_selected"] += st.n_selected
            tot["n_points"] += st.n_points
            tot["n_kernel_chunks"] += st.n_chunks
    tot["n_linelist"] = int(len(synth.linelist.wavelength))
    tot["n_chunks"] = len(synth._chunks(wl))
    tot["n_fine_grid"] = int(wl.size)
    return tot


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-diff", action="store_true")
    ap.add_argument("--teff", type=float, default=None)
    ap.add_argument("--logg", type=float, default=None)
    ap.add_argument("--fe-h", type=float, default=None)
    ap.add_argument("--sme", action="store_true", help="also time SME on the same star and range")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from phdlspec_app import labels as L
    from phdlspec_app.physics.synthesize import DIFFERENTIAL_LABELS, Synthesizer

    lab = torch.tensor(L.defaults(), dtype=torch.float64)
    names = L.label_names()
    for key, val in (("teff", args.teff), ("logg", args.logg), ("fe_h", args.fe_h)):
        if val is not None:
            lab[names.index(key)] = val
    res = {"labels": {k: float(lab[names.index(k)]) for k in ("teff", "logg", "fe_h", "vmic")},
           "threads": torch.get_num_threads(), "torch": torch.__version__}
    t_init, synth = _timed(Synthesizer, "init")
    res["init_s"] = round(t_init, 2)

    t, sp = _timed(lambda: synth.spectrum(lab), "primal cold")
    res["primal_cold_s"] = round(t, 2)
    warm = [_timed(lambda: synth.spectrum(lab), "primal warm")[0] for _ in range(args.repeats)]
    res["primal_warm_s"] = round(statistics.median(warm), 2)
    res["primal_warm_runs_s"] = [round(x, 2) for x in warm]
    res["peak_rss_gb_after_primal"] = round(_rss_gb(), 2)
    res["n_pixels"] = int(sp.shape[-1])

    if not args.no_diff:
        t, (p, J) = _timed(lambda: synth.differential_spectra(lab), "differential cold")
        res["differential_cold_s"] = round(t, 2)
        warm = [_timed(lambda: synth.differential_spectra(lab), "differential warm")[0] for _ in range(max(1, args.repeats - 1))]
        res["differential_warm_s"] = round(statistics.median(warm), 2)
        res["differential_warm_runs_s"] = [round(x, 2) for x in warm]
        res["n_differential_labels"] = len(DIFFERENTIAL_LABELS)
        res["max_abs_primal_difference"] = float((p - sp).abs().max())
        res["max_abs_derivative"] = {n: float(J[i].abs().max()) for i, n in enumerate(DIFFERENTIAL_LABELS)}
        res["peak_rss_gb_after_differential"] = round(_rss_gb(), 2)
    if args.sme:
        res["sme_s"] = round(_timed(lambda: sme_full_range(synth, lab), "SME")[0], 1)
        res["sme_over_primal_warm"] = round(res["sme_s"] / res["primal_warm_s"], 1)
        if "differential_warm_s" in res:
            res["sme_over_differential_warm"] = round(res["sme_s"] / res["differential_warm_s"], 2)
    res["lines"] = _timed(lambda: line_counts(synth, lab), "line counts")[1]
    print(json.dumps(res, indent=1))


def sme_full_range(synth, lab, piece: float = 500.0):
    """SME's normalized spectrum of ``lab`` over the synthesizer's range, in pieces."""
    import os
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sme_reference import sme_inputs, sme_normalized_spectrum

    atm_np, A = sme_inputs(synth, lab)
    lo, hi = synth.wl_range
    names = ["teff", "logg", "vmic"]
    from phdlspec_app import labels as L

    teff, logg, vmic = (float(lab[L.label_names().index(n)]) for n in names)
    edges = np.append(np.arange(lo, hi, piece), hi)
    import contextlib
    import logging

    logging.getLogger("pysme").setLevel(logging.WARNING)   # its INFO lines go to stdout (the JSON)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            for a, b in zip(edges[:-1], edges[1:]):
                sme_normalized_spectrum(atm_np, A, vmic, synth.linelist, a, b, teff=teff, logg=logg)
        finally:
            os.chdir(cwd)


if __name__ == "__main__":
    main()
