"""``phdlspec``: the one command-line entry point, with subcommands.

Each subcommand is added by the part of the pipeline that builds it; see
``phdlspec --help``.
"""
from __future__ import annotations

import argparse
import json
import sys

from . import __version__

_EPILOG = """\
Examples:
  phdlspec info spec-55859-F5902_sp01-001.fits.gz   what the reader finds in a file
  phdlspec info --json *.fits                        the same, as JSON lines
  phdlspec serve                                     open the dashboard in a browser

Data: PhDLspec reads its physics data and the real LAMOST spectra in place from the
data directory: --data-dir DIR, else $PHDLSPEC_DATA, else ../shared beside the checkout.
"""


def _cmd_info(args) -> int:
    from .io import SpectrumFormatError, read_spectrum

    status = 0
    for path in args.files:
        try:
            spec = read_spectrum(path, air=args.air, mask_bits=args.mask_bits)
        except SpectrumFormatError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
            continue
        summary = spec.summary()
        if args.json:
            print(json.dumps(summary))
            continue
        print(_format_summary(summary))
    return status


def _format_summary(s: dict) -> str:
    limits = set(s["snr_lower_limits"])
    snr = "  ".join(f"{b}:{'>=' if b in limits else ''}{v:.1f}" for b, v in s["snr"].items()) or "not given"
    lines = [
        f"file          {s['file']}",
        f"layout        {s['layout']}",
        f"release       {s['data_release'] or 'unknown'}   pipeline {s['pipeline_version'] or '-'}",
        f"object        obsid {s['obsid'] if s['obsid'] is not None else '-'}   {s['designation'] or ''}",
    ]
    if s["ra"] is not None:
        lines.append(f"position      RA {s['ra']:.6f}  Dec {s['dec']:+.6f} deg")
    lines += [
        f"class         {s['class'] or '-'} {s['subclass'] or ''}",
        f"wavelength    {s['wavelength_min']:.2f} - {s['wavelength_max']:.2f} A (vacuum; file in "
        f"{s['medium_of_file'] or 'vacuum'}), {s['npix']} pixels",
        f"S/N per band  {snr}",
        f"median S/N    {s['median_pixel_snr']:.1f} per pixel"
        + ("  (errors estimated from the data)" if s["ivar_estimated"] else ""),
        f"masked        {100 * s['masked_fraction']:.1f} % of pixels",
    ]
    if s["resolution"]:
        lines.append(f"resolution    R = {s['resolution']:.0f}")
    return "\n".join(lines)


def _parse_sets(items) -> dict:
    from .labels import canonical_name

    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"error: --set expects NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        out[canonical_name(name)] = float(value)
    return out


def _cmd_synth(args) -> int:
    import time

    import numpy as np
    import torch

    from . import labels as L
    from .io import write_model
    from .physics.lsf import lamost_wavelength
    from .physics.synthesize import DIFFERENTIAL_LABELS, Synthesizer

    values = {"teff": args.teff, "logg": args.logg, "fe_h": args.fe_h, "vmic": args.vmic,
              "vbroad": args.vbroad, "rv": args.rv}
    values = {k: v for k, v in values.items() if v is not None}
    values.update(_parse_sets(args.set))
    vec = L.to_vector(values)
    bad = [n for n, ok in zip(L.label_names(), L.check_in_range(vec)) if not ok]
    if bad:
        print(f"error: labels outside their physical range: {', '.join(bad)}", file=sys.stderr)
        return 2
    wl = lamost_wavelength()
    lo, hi = args.wl_min, args.wl_max
    wl = wl[(wl >= lo) & (wl <= hi)]
    syn = Synthesizer(wl_range=(max(3600.0, lo - 40.0), hi + 40.0), atmosphere=args.atmosphere, device=args.device)
    t0 = time.perf_counter()
    lab = torch.as_tensor(vec)
    if args.differential:
        flux, jac = syn.differential_spectra(lab, resolution=args.resolution, wl_out=wl, progress=True)
        wrt = list(DIFFERENTIAL_LABELS)
    else:
        flux, jac, wrt = syn.spectrum(lab, resolution=args.resolution, wl_out=wl, progress=True), None, None
    elapsed = time.perf_counter() - t0
    flux = flux.detach().cpu().numpy()
    meta = {"engine": f"phdlspec {__version__}", "resolution": args.resolution, "atmosphere": args.atmosphere,
            "synthesis_resolution": syn.resolution, "seconds": round(elapsed, 2)}
    write_model(args.output, wl, flux, L.to_dict(vec), None if jac is None else jac.cpu().numpy(), wrt, meta)
    print(f"wrote {args.output}: {wl.size} pixels {wl[0]:.1f}-{wl[-1]:.1f} A at R={args.resolution:.0f}"
          + (f", {len(wrt)} differential spectra" if wrt else "") + f" ({elapsed:.1f} s)")
    if args.plot:
        _plot_model(args.plot, wl, flux, vec, jac, wrt)
        print(f"wrote {args.plot}")
    return 0


def _plot_model(path, wl, flux, vec, jac, wrt):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from . import labels as L

    d = L.to_dict(vec)
    rows = 2 if jac is not None else 1
    fig = Figure(figsize=(11, 3.2 * rows))
    ax = fig.add_subplot(rows, 1, 1)
    ax.plot(wl, flux, lw=0.7, color="k")
    ax.set_ylabel("normalized flux")
    ax.set_title(f"PhDLspec synthesis: Teff {d['teff']:.0f} K, log g {d['logg']:.2f}, [Fe/H] {d['fe_h']:+.2f}")
    if jac is not None:
        ax2 = fig.add_subplot(rows, 1, 2, sharex=ax)
        for name in ("fe_h", "mg_fe", "ca_fe", "c_fe", "ti_fe"):
            if name in wrt:
                ax2.plot(wl, jac[wrt.index(name)].cpu().numpy(), lw=0.7, label=f"d flux / d {name}")
        ax2.legend(fontsize=8, ncol=5)
        ax2.set_ylabel("per dex")
    ax.set_xlabel("vacuum wavelength (A)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _cmd_grid(args) -> int:
    from .physics.grid import GridSpec, make_grid

    if (args.wl_min is None) != (args.wl_max is None):
        print("error: give both --wl-min and --wl-max, or neither", file=sys.stderr)
        return 2
    wl_range = None if args.wl_min is None else (args.wl_min, args.wl_max)
    if not 2000.0 <= args.teff_min < args.teff_max <= 50000.0:
        print(f"error: --teff-min {args.teff_min} must be below --teff-max {args.teff_max} (K)", file=sys.stderr)
        return 2
    spec = GridSpec(n=args.n, n_reference=args.reference_points, seed=args.seed, shard_size=args.shard_size,
                    wl_range=wl_range, teff=(args.teff_min, args.teff_max))
    manifest = make_grid(args.output, spec, resume=args.resume, workers=args.workers, float16=not args.float32)
    print(f"grid written: {manifest}")
    return 0


def _cmd_serve(args) -> int:
    from .app import serve

    serve(port=args.port, address=args.address, show=not args.no_show, data_dir=args.data_dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phdlspec",
        description="PhDLspec: ~30 stellar labels from LAMOST low-resolution spectra with a "
                    "physics-prior transformer emulator.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"phdlspec {__version__}")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="data directory (physics/, spectra/, catalogs/); default $PHDLSPEC_DATA "
                             "or ../shared beside the checkout")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="print what the reader finds in spectrum files",
                       description="Read spectrum files (any LAMOST layout, 1-D FITS, tables, text) and "
                                   "print their layout, release, object, wavelength range (vacuum), S/N "
                                   "and masked fraction.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--air", dest="air", action="store_const", const=True, default=None,
                   help="the file's wavelengths are in air (overrides the header)")
    p.add_argument("--vacuum", dest="air", action="store_const", const=False,
                   help="the file's wavelengths are in vacuum (overrides the header)")
    p.add_argument("--mask-bits", choices=("both", "and", "none"), default="both",
                   help="LAMOST pixel masks to honour (default: both andmask and ormask)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("synth", help="ab initio synthesis of one star (and its differential spectra)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="1D LTE synthesis on the LAMOST grid (vacuum) at resolving power R.\n"
                                   "Labels not given take the schema defaults (a solar dwarf).",
                       epilog="Example:\n  phdlspec synth --teff 4500 --logg 2.0 --fe-h -0.3 --set mg_fe=0.2 "
                              "--differential -o giant.fits --plot giant.png")
    p.add_argument("--teff", type=float, help="effective temperature, K")
    p.add_argument("--logg", type=float, help="surface gravity, dex (cgs)")
    p.add_argument("--fe-h", type=float, help="[Fe/H], dex")
    p.add_argument("--vmic", type=float, help="microturbulence, km/s")
    p.add_argument("--vbroad", type=float, help="macroturbulence+rotation Gaussian FWHM, km/s")
    p.add_argument("--rv", type=float, help="radial velocity, km/s")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="any label of the schema, e.g. --set mg_fe=0.1 --set '[Eu/Fe]=0.4' (repeatable)")
    p.add_argument("--resolution", type=float, default=1800.0, help="resolving power (default 1800)")
    p.add_argument("--differential", action="store_true",
                   help="also compute d flux/d label for teff, logg, vmic and the 27 abundances (forward-mode AD)")
    p.add_argument("--wl-min", type=float, default=3690.0, help="first wavelength, vacuum A (default 3690)")
    p.add_argument("--wl-max", type=float, default=9110.0, help="last wavelength, vacuum A (default 9110)")
    p.add_argument("--atmosphere", choices=("atmosnet", "kurucz"), default="atmosnet")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("-o", "--output", required=True, help="output FITS (phdlspec-model-v1 layout)")
    p.add_argument("--plot", help="also save a PNG of the spectrum (and differential spectra)")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("grid", help="synthesize the emulator's training grid (resumable shards)",
                       description="Quasi-random (Sobol) labels over the training domain; spectra on the LAMOST "
                                   "grid at R=1800 in shards with a manifest; differential spectra at reference points.")
    p.add_argument("-n", type=int, default=3000, help="number of training spectra (default 3000)")
    p.add_argument("--reference-points", type=int, default=200, help="stars with differential spectra (default 200)")
    p.add_argument("--seed", type=int, default=2604)
    p.add_argument("--teff-min", type=float, default=4000.0,
                   help="coolest Teff sampled, K (default 4000; a supplement of cool stars: --teff-max 5000 and its own --seed)")
    p.add_argument("--teff-max", type=float, default=7000.0, help="hottest Teff sampled, K (default 7000)")
    p.add_argument("--shard-size", type=int, default=50)
    p.add_argument("--workers", type=int, default=1, help="processes (one torch thread each)")
    p.add_argument("--resume", action="store_true", help="keep shards already written (checked by sha256); a larger -n or --reference-points extends the grid")
    p.add_argument("--float32", action="store_true",
                   help="store float32 shards (default: float16, small enough to commit; see pack_grid)")
    p.add_argument("--wl-min", type=float, help="restrict to a window (tests, previews)")
    p.add_argument("--wl-max", type=float)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.set_defaults(func=_cmd_grid)

    p = sub.add_parser("serve", help="start the dashboard (Panel) in a browser",
                       description="Serve the PhDLspec dashboard: load a spectrum (from the data "
                                   "directory or an upload) and inspect it.")
    p.add_argument("--port", type=int, default=5006, help="port (default 5006; 0 = any free port)")
    p.add_argument("--address", default="localhost", help="address to listen on (default localhost)")
    p.add_argument("--no-show", action="store_true", help="do not open a browser")
    p.set_defaults(func=_cmd_serve)

    # The emulator, fitting and calibration layers each define their own subcommands in a
    # ``command`` module with ``add_parsers(sub)`` (heavy imports stay inside the handlers).
    import importlib

    for mod in _COMMAND_MODULES:
        importlib.import_module(mod).add_parsers(sub)
    return parser


_COMMAND_MODULES: tuple[str, ...] = (
    "phdlspec_app.emulator.command",      # train
    "phdlspec_app.fitting.command",       # fit, fit-batch
    "phdlspec_app.calibration.command",   # calibrate
)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data_dir:
        from .paths import DataNotFoundError, set_data_dir

        try:
            set_data_dir(args.data_dir)
        except DataNotFoundError as exc:
            parser.error(str(exc))
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
