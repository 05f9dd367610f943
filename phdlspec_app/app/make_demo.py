"""Regenerate the embedded demo stars in ``assets/demo/`` (deterministic, seeded).

Each star is synthesized by PhDLspec's own ab initio engine
(:class:`phdlspec_app.physics.synthesize.Synthesizer`, R = 1800, the LAMOST grid), then given
LAMOST-like Gaussian noise (S/N about 50 per pixel in the g band, lower in the blue and the far
red, photon-noise scaling with the flux), and written in PhDLspec's native FITS layout. Every
file says it is SIMULATED (``designation``, ``class``/``subclass`` note, ``meta['simulated']``,
primary-header keyword ``SIMULATE = T``) and carries its true labels
(``meta['true_labels']`` and ``HIERARCH TRUE <LABEL>`` keywords) and the noise-free model
(extra column ``X_MODEL``).

    python -m phdlspec_app.app.make_demo [--out assets/demo] [--only solar_dwarf]

Needs the physics data (``--data-dir`` / ``$PHDLSPEC_DATA`` / ``../shared``); each star takes
10-60 s after the engine's first (compiling) call. The app itself never runs this: it reads the
committed files.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["DEMO_STARS", "DemoStar", "lamost_like_snr", "make_demo_star", "main"]


@dataclass(frozen=True)
class DemoStar:
    """One embedded demo star: file stem, display title, labels that differ from the defaults."""

    name: str
    title: str
    subclass: str
    labels: dict = field(default_factory=dict)
    seed: int = 0
    snr_g: float = 50.0


DEMO_STARS: tuple[DemoStar, ...] = (
    DemoStar("solar_dwarf", "Solar-type dwarf", "G2V",
             {"teff": 5777.0, "logg": 4.44, "vmic": 1.0, "vbroad": 5.0, "rv": 12.5, "fe_h": 0.0},
             seed=1),
    DemoStar("k_giant", "K giant", "K1III",
             {"teff": 4600.0, "logg": 2.4, "vmic": 1.4, "vbroad": 6.0, "rv": -38.0, "fe_h": -0.2,
              "c_fe": -0.15, "n_fe": 0.3, "o_fe": 0.1, "mg_fe": 0.1, "si_fe": 0.08, "ca_fe": 0.05,
              "ti_fe": 0.08, "ba_fe": 0.05},
             seed=2),
    DemoStar("metal_poor_turnoff", "Metal-poor turn-off star", "F8IV",
             {"teff": 6200.0, "logg": 4.0, "vmic": 1.3, "vbroad": 8.0, "rv": 145.0, "fe_h": -1.5,
              "o_fe": 0.45, "mg_fe": 0.35, "si_fe": 0.3, "ca_fe": 0.3, "ti_fe": 0.25, "mn_fe": -0.3,
              "ba_fe": -0.1, "eu_fe": 0.4},
             seed=3),
)

# Relative S/N of a LAMOST low-resolution spectrum across the wavelength range, normalized to
# 1 at the g band (~4700 A): low in the blue (throughput, dichroic), best in the red arm.
_SNR_NODES = np.array([[3700, 0.18], [4000, 0.45], [4300, 0.75], [4700, 1.0], [5500, 1.25],
                       [5800, 1.05], [6200, 1.4], [7000, 1.5], [8000, 1.3], [8700, 1.05], [9100, 0.8]])
# LAMOST's band S/N are quoted at these wavelengths.
_BANDS = {"u": 3600.0, "g": 4700.0, "r": 6200.0, "i": 7500.0, "z": 8900.0}


def lamost_like_snr(wavelength: np.ndarray, snr_g: float) -> np.ndarray:
    """Per-pixel S/N of the continuum at ``wavelength`` (Angstrom) for S/N ``snr_g`` in g."""
    return snr_g * np.interp(wavelength, _SNR_NODES[:, 0], _SNR_NODES[:, 1])


def make_demo_star(star: DemoStar, synthesizer, out_dir: Path) -> Path:
    """Synthesize ``star``, add seeded noise and write ``out_dir/<name>.fits``."""
    from astropy.io import fits

    from phdlspec_app.io import Spectrum, write_spectrum
    from phdlspec_app.labels import label_names, to_vector
    from phdlspec_app.physics.lsf import lamost_wavelength

    wl = lamost_wavelength()
    vec = to_vector(star.labels)
    import torch

    model = synthesizer.spectrum(torch.tensor(vec, dtype=torch.float64), resolution=1800.0, wl_out=wl)
    model = np.asarray(model.detach().cpu().numpy(), dtype=np.float64)
    snr = lamost_like_snr(wl, star.snr_g)
    sigma = np.sqrt(np.clip(model, 0.05, None)) / snr
    rng = np.random.default_rng(star.seed)
    # float32 precision is all a noisy spectrum needs; it also keeps the file small and
    # byte-reproducible across platforms' last-bit differences.
    flux = (model + sigma * rng.standard_normal(wl.size)).astype(np.float32).astype(np.float64)
    ivar = (1.0 / sigma**2).astype(np.float32).astype(np.float64)
    true_labels = {n: float(v) for n, v in zip(label_names(), vec)}
    meta = {
        "designation": f"SIMULATED {star.title}",
        "class": "STAR",
        "subclass": f"{star.subclass} (simulated)",
        "layout": "phdlspec-demo (simulated)",
        "data_release": "SIMULATED by the PhDLspec ab initio engine",
        "objtype": "SIMULATED",
        "simulated": True,
        "true_labels": true_labels,
        "noise": {"snr_g": star.snr_g, "seed": star.seed,
                  "model": "Gaussian, sigma = sqrt(flux) / S/N(lambda), LAMOST-like S/N shape"},
        "snr": {b: round(float(lamost_like_snr(np.array([w]), star.snr_g)[0]), 1) for b, w in _BANDS.items()},
        "resolution": 1800.0,
        "medium": "vacuum",
    }
    spec = Spectrum(wl, flux, ivar, np.zeros(wl.size, bool), meta,
                    extra={"model": model.astype(np.float32).astype(np.float64)})
    out_dir.mkdir(parents=True, exist_ok=True)
    path = write_spectrum(spec, out_dir / f"{star.name}.fits")
    with fits.open(path, mode="update") as hdul:
        h = hdul[0].header
        h["SIMULATE"] = (True, "synthetic spectrum, not an observation")
        h["OBJECT"] = f"SIMULATED {star.title}"
        for name, value in true_labels.items():
            h[f"HIERARCH TRUE {name.upper()}"] = value
    path.chmod(0o644)  # the atomic writer's temporary file is private (0600)
    return path


def main(argv=None) -> int:
    from phdlspec_app.paths import assets_dir, set_data_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=assets_dir() / "demo")
    ap.add_argument("--only", nargs="*", choices=[s.name for s in DEMO_STARS])
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    if args.data_dir:
        set_data_dir(args.data_dir)
    from phdlspec_app.physics.synthesize import Synthesizer

    syn = Synthesizer()
    for star in DEMO_STARS:
        if args.only and star.name not in args.only:
            continue
        t0 = time.perf_counter()
        path = make_demo_star(star, syn, args.out)
        print(f"{path}  ({path.stat().st_size / 1e3:.0f} kB, {time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
