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

    p = sub.add_parser("serve", help="start the dashboard (Panel) in a browser",
                       description="Serve the PhDLspec dashboard: load a spectrum (from the data "
                                   "directory or an upload) and inspect it.")
    p.add_argument("--port", type=int, default=5006, help="port (default 5006; 0 = any free port)")
    p.add_argument("--address", default="localhost", help="address to listen on (default localhost)")
    p.add_argument("--no-show", action="store_true", help="do not open a browser")
    p.set_defaults(func=_cmd_serve)
    return parser


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
