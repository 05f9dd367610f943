"""Validation 2: differential spectra d flux / d[X/H] against SME finite differences.

For each star (the Sun, the K giant and the metal-poor turnoff star of validation 1) and
each window, both codes change the abundance of one element by +-0.1 dex at a fixed
atmosphere (our atmosnet model of the star) and everything else equal; the central
differences at R = 1800 on the LAMOST pixels of the window are compared by cosine
similarity and by the ratio of their norms. Our finite differences equal our
forward-mode AD derivatives (tests/test_differential.py: cosine >= 0.999), so this checks
the physics of the prior. Line list: atomic, hydrogen and molecular lines (CH, CN, C2,
MgH, TiO, NH, OH), so that carbon's response is its molecular bands as in a real star;
``--atoms-only`` drops the molecules from both codes.

    HOME=/tmp/smehome python benchmarks/validate_differential.py [--elements Mg,Ca,Fe,Ti,C]
        [--stars sun,giant,mp] [--atoms-only]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from phdlspec_app import labels as L  # noqa: E402
from phdlspec_app.physics import abundances, synthesize  # noqa: E402
from phdlspec_app.physics.atomic_data import atomic_number  # noqa: E402
from sme_reference import add_physics_options, comparison_linelist  # noqa: E402
from phdlspec_app.physics.lsf import degrade, lamost_wavelength  # noqa: E402

from validate_sme import DEFAULT_WINDOWS, STARS  # noqa: E402


def ours(syn, lab, Z, delta, wl_out):
    """Our R=1800 spectrum with log eps_Z shifted by delta at a fixed atmosphere."""
    orig = abundances.number_fractions

    def shifted(labels, scale="asplund2009"):
        eps = orig(labels, scale).clone()
        eps[..., Z] = eps[..., Z] * 10.0**delta
        return eps

    synthesize.abundances.number_fractions = shifted
    try:
        hr = syn.highres(lab)
    finally:
        synthesize.abundances.number_fractions = orig
    return degrade(hr.flux.detach(), hr.wavelength, 1800.0, 0.0, 0.0, wl_out).numpy(), hr


def main():
    from sme_reference import sme_inputs, sme_normalized_spectrum

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--elements", default="Mg,Ca,Fe,Ti,C")
    ap.add_argument("--windows", default=",".join(f"{a}-{b}" for a, b in DEFAULT_WINDOWS))
    ap.add_argument("--step", type=float, default=0.1, help="dex")
    ap.add_argument("--stars", default="sun")
    add_physics_options(ap)
    args = ap.parse_args()
    ll = comparison_linelist(args)
    h = args.step
    results = []
    for star, w in ((s, w) for s in args.stars.split(",") for w in args.windows.split(",")):
        lab = torch.tensor(L.to_vector({**STARS[star], "vbroad": 0.0}), dtype=torch.float64)
        lo, hi = (float(x) for x in w.split("-"))
        syn = synthesize.Synthesizer(linelist=ll, wl_range=(lo - 15, hi + 15))
        wl_out = lamost_wavelength()
        wl_out = wl_out[(wl_out > lo) & (wl_out < hi)]
        atm_np, A = sme_inputs(syn, lab)
        for el in args.elements.split(","):
            Z = atomic_number(el)
            d_ours = (ours(syn, lab, Z, +h, wl_out)[0] - ours(syn, lab, Z, -h, wl_out)[0]) / (2 * h)
            _, hr = ours(syn, lab, Z, 0.0, wl_out)
            sme = []
            with tempfile.TemporaryDirectory() as tmp:
                cwd = os.getcwd()
                os.chdir(tmp)
                try:
                    for s in (+h, -h):
                        A2 = A.copy()
                        A2[Z] += s
                        wv, fl = sme_normalized_spectrum(atm_np, A2, float(lab[2]), ll, lo - 15, hi + 15,
                                                         teff=float(lab[0]), logg=float(lab[1]))
                        on = torch.as_tensor(np.interp(hr.wavelength, wv, fl))
                        sme.append(degrade(on, hr.wavelength, 1800.0, 0.0, 0.0, wl_out).numpy())
                finally:
                    os.chdir(cwd)
            d_sme = (sme[0] - sme[1]) / (2 * h)
            na, nb = np.linalg.norm(d_ours), np.linalg.norm(d_sme)
            cos = float(d_ours @ d_sme / (na * nb)) if na > 0 and nb > 0 else float("nan")
            rec = {"star": star, "window": w, "element": el, "cosine": round(cos, 4), "norm_ratio_ours_over_sme": round(float(na / nb), 3) if nb > 0 else None,
                   "max_abs_ours_per_dex": round(float(np.abs(d_ours).max()), 4), "max_abs_sme_per_dex": round(float(np.abs(d_sme).max()), 4)}
            results.append(rec)
            print(json.dumps(rec), flush=True)
    sig = [r for r in results if r["max_abs_sme_per_dex"] >= 0.01]
    print(json.dumps({"summary": {"n": len(results), "n_significant": len(sig),
                                  "min_cosine_significant": min((r["cosine"] for r in sig), default=None),
                                  "all_significant_above_0.95": all(r["cosine"] >= 0.95 for r in sig)}}))


if __name__ == "__main__":
    main()
