"""What the spectra hold: the Cramér–Rao bound of every label on the held-out engine spectra.

For each held-out spectrum of the grid (every 11th of ``phdlspec grid``; never trained on),
with the injection benchmark's random ``rv`` (±100 km/s) and ``vbroad`` (0–20 km/s) and the
same seed, the marginal Cramér–Rao bound of all 32 labels (all free) at the truth, for
Gaussian noise 1/S/N per pixel, through the fit's own preprocessing (masks, pseudo-continuum)
and an exact emulator (its Jacobian). No fitter, unbiased, can beat it on average; it says
how many [X/Fe] a spectrum of this kind can give to ≤ 0.10 / ≤ 0.05 dex.

``--noise flat`` (default, as the injection benchmark): the same S/N in every pixel.
``--noise lamost``: LAMOST's own shape — S/N is quoted in the g band (LAMOST's ``snrg``,
the median per-pixel S/N over 4000–5500 Å), and a real spectrum's S/N is far lower in the
blue and higher in the red; the profile is the median, over the real LAMOST stars of the
data directory (``$PHDLSPEC_DATA``, ``--data-dir``), of each one's per-pixel S/N divided by
its own g-band S/N, after the fit's preprocessing (about 200 spectra, half a minute).

Reported by [Fe/H] bin and for the whole held-out set (the count uses the median bound over
the stars of a bin, as ``bench_injection.py --crb`` does), and, with ``--variants``, the same
with the user masks off and with wider pseudo-continuum filters, to show how much of the
limit is the preprocessing's.

    .venv/bin/python benchmarks/information_limit.py --grid assets/grid [--snr 50] [--variants] [--noise lamost]

Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

FEH_BINS = ((-2.5, -1.5), (-1.5, -1.0), (-1.0, -0.5), (-0.5, 0.6))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", required=True)
    ap.add_argument("--model")
    ap.add_argument("--snr", type=float, default=50.0)
    ap.add_argument("--seed", type=int, default=5, help="rv/vbroad draws (bench_injection's default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", action="store_true",
                    help="also masks off, and pseudo-continuum sigma 100/400 px, on every third star with [Fe/H] >= -1")
    ap.add_argument("--noise", choices=["flat", "lamost"], default="flat",
                    help="flat S/N per pixel, or LAMOST's wavelength profile with --snr in the g band")
    ap.add_argument("--data-dir", help="the shared data directory (for --noise lamost)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from phdlspec_app import labels as L
    from phdlspec_app.emulator import load_emulator
    from phdlspec_app.emulator.train import load_training_set

    names = L.label_names()
    xfe = [lab.name for lab in L.xfe_labels()]
    emu = load_emulator(args.model, device="cpu")
    held = load_training_set(args.grid, heldout=True)
    n = len(held.labels)
    truth, clean = injected(held, n, np.random.default_rng(args.seed))

    def summary(crb, sel):
        med = np.median(crb[sel], axis=0)
        ranked = sorted((float(med[names.index(k)]), k) for k in xfe)
        return {"n": int(sel.sum()),
                "elements_le_0.10": sum(v <= 0.10 for v, _ in ranked),
                "elements_le_0.05": sum(v <= 0.05 for v, _ in ranked),
                "teff": round(float(med[names.index("teff")]), 1), "logg": round(float(med[names.index("logg")]), 3),
                "fe_h": round(float(med[names.index("fe_h")]), 3),
                "xfe_median_bound": {k: round(v, 3) for v, k in ranked}}

    snr = args.snr
    out = {"grid": args.grid, "model": str(args.model or "default"), "snr": args.snr, "noise": args.noise, "n": n}
    if args.noise == "lamost":
        profile, n_spec = lamost_snr_profile(emu, args.data_dir)
        snr = args.snr * profile
        out["lamost_profile"] = {"n_spectra": n_spec, **{
            f"{a}-{b}": round(float(np.median(profile[(emu.wavelength >= a) & (emu.wavelength < b)])), 2)
            for a, b in ((3700, 4000), (4000, 4500), (4500, 5500), (5500, 6500), (6500, 7500), (7500, 8500),
                         (8500, 9100))}}
    crb = np.array([bound(emu, held.wavelength, clean[i], snr, truth[i]) for i in range(n)])
    feh = truth[:, names.index("fe_h")]
    out.update({
           "all": summary(crb, np.ones(n, bool)), "by_fe_h": {}})
    for lo, hi in FEH_BINS:
        out["by_fe_h"][f"{lo:+.1f}..{hi:+.1f}"] = summary(crb, (feh >= lo) & (feh < hi))
    if args.variants:
        sel = np.nonzero(feh >= -1.0)[0][::3]
        out["variants_fe_h_ge_-1"] = {}
        for label, kw in (("default (masks all, sigma 43 px)", {}), ("masks none", {"masks": "none"}),
                          ("continuum sigma 100 px", {"continuum_sigma_pix": 100.0}),
                          ("continuum sigma 400 px", {"continuum_sigma_pix": 400.0})):
            c = np.array([bound(emu, held.wavelength, clean[i], snr, truth[i], **kw) for i in sel])
            out["variants_fe_h_ge_-1"][label] = summary(c, np.ones(len(sel), bool))
    print(json.dumps(out, indent=1))
    return 0


def injected(held, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` held-out engine spectra as the injection benchmark makes them:
    (truth (n, 32) with ``rv`` drawn in ±100 km/s and ``vbroad`` in 0–20 km/s from ``rng``,
    in that order; the noiseless spectra (n, P) shifted and broadened to match)."""
    from phdlspec_app import labels as L
    from phdlspec_app.emulator.broadening import broaden_and_shift

    names = L.label_names()
    truth = held.labels[:n].copy()
    truth[:, names.index("rv")] = rng.uniform(-100, 100, n)
    truth[:, names.index("vbroad")] = rng.uniform(0, 20, n)
    clean = broaden_and_shift(torch.as_tensor(held.flux[:n], dtype=torch.float64),
                              torch.as_tensor(truth[:, names.index("vbroad")]),
                              torch.as_tensor(truth[:, names.index("rv")])).numpy()
    return truth, clean


def lamost_snr_profile(emu, data_dir=None) -> tuple[np.ndarray, int]:
    """((P,) median per-pixel S/N relative to the g band (4000–5500 Å) of the real LAMOST
    stars in the data directory, on the emulator's grid after the fit's preprocessing;
    the number of spectra used). Pixels no spectrum covers take the profile's minimum."""
    import csv
    import warnings

    from phdlspec_app.io import read_spectrum
    from phdlspec_app.paths import lamost_spectra_dir
    from phdlspec_app.preprocess import prepare

    root = lamost_spectra_dir(data_dir)
    wl = emu.wavelength
    g = (wl > 4000) & (wl < 5500)
    profiles = []
    with open(root / "INVENTORY.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["cls"].strip().upper() == "STAR"]
    for r in rows:
        path = root.parent.parent / r["file"]  # INVENTORY paths start at spectra/lamost/
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p = prepare(read_spectrum(path), wl, float(getattr(emu, "resolution", 1800.0)))
        except (OSError, ValueError) as exc:  # unreadable, or refused (FitInputError): skipped, said
            print(f"skipped {path.name}: {exc}", file=sys.stderr)
            continue
        s = np.where(p.good, p.y * np.sqrt(p.ivar_y), np.nan)
        sg = np.nanmedian(s[g])
        if np.isfinite(sg) and sg >= 5:
            profiles.append(s / sg)
    prof = np.nanmedian(np.array(profiles), axis=0)
    ok = np.isfinite(prof) & (prof > 0)
    return np.where(ok, prof, prof[ok].min()), len(profiles)


def bound(emu, wavelength, clean, snr, truth, **prepare_kw):
    """(32,) marginal Cramér–Rao bound of every label (all free) at ``truth`` for noise
    1/snr per pixel (a number, or (P,) per pixel), through ``prepare`` (its keywords:
    masks, continuum_sigma_pix)."""
    from phdlspec_app.fitting.diagnostics import covariance
    from phdlspec_app.fitting.likelihood import Likelihood
    from phdlspec_app.io import Spectrum
    from phdlspec_app.preprocess import prepare

    ivar = np.broadcast_to(np.asarray(snr, float) ** 2, clean.shape).copy()
    spec = Spectrum(wavelength, clean, ivar, np.zeros(clean.size, bool), meta={"source": "crb"})
    prep = prepare(spec, emu.wavelength, float(getattr(emu, "resolution", 1800.0)), **prepare_kw)
    lik = Likelihood(emu, prep, np.arange(truth.size), truth)
    return np.sqrt(np.diag(covariance(lik.fisher(truth)[2])))


if __name__ == "__main__":
    sys.exit(main())
