"""Subcommands of the calibration layer for the ``phdlspec`` entry point (see ``phdlspec_app.cli``)."""
from __future__ import annotations

import argparse
import sys

_EPILOG = """\
Examples:
  # fit: wide binaries, M67 members anchored to APOGEE's M67 means, and APOGEE stars
  phdlspec calibrate results.ecsv --pairs pairs.ecsv --cluster m67_members.ecsv \\
      --cluster-ref M67 --reference apogee.fits --match-radius 2 -o calibration.ecsv --plots plots/
  # M67 members straight from the shared OCCAM catalog (matched by position)
  phdlspec calibrate results.ecsv --cluster occam:M67 --cluster-ref M67 --match-radius 2 -o cal.ecsv
  # a reference catalog matched on an identifier column, with a column mapping
  phdlspec calibrate results.fits --reference galah.csv --match-on designation \\
      --ref-columns sobject_id=id,Mg_fe=mg_fe -o cal.json
  # apply a calibration to a batch (or a one-row) results table
  phdlspec calibrate --apply calibration.ecsv results.ecsv -o calibrated.ecsv

RESULTS is a table as `phdlspec fit` writes it: one row per star, label columns named as in
the schema (teff, logg, fe_h, mg_fe ...), errors as <label>_err, identifiers (obsid, id,
designation, file) and ra/dec in degrees. Any table format: .fits, .ecsv, .csv, .parquet.
Catalog columns are mapped by name (APOGEE TEFF, FE_H, MG_FE; GALAH teff, fe_h, mg_fe;
[Mg/Fe]); --ref-columns overrides. The identifier column is found by itself (obsid, id,
designation, file) unless --match-on names it; --match-radius matches by sky position.
The methods run in the order wide binaries -> cluster -> reference, each on the labels
corrected by the ones before; `--apply` applies them in that order, keeps the input
labels as <label>_raw, propagates the corrections' uncertainties into <label>_err and
lists labels evaluated outside their valid domain in calib_flags.
"""


def add_parsers(sub) -> None:
    """Register this layer's subcommands on the argparse sub-parsers object ``sub``."""
    p = sub.add_parser(
        "calibrate", help="fit or apply a calibration of fitted labels (wide binaries, clusters, catalogs)",
        description="Fit a calibration of PhDLspec labels from wide-binary pairs, open-cluster members and a "
                    "high-resolution reference catalog, or apply one to a results table.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", metavar="RESULTS", help="results table (phdlspec fit layout)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="calibration file to write (.ecsv or .json); with --apply, the calibrated table")
    p.add_argument("--apply", metavar="CALIBRATION", help="apply this calibration file to RESULTS")
    p.add_argument("--outside", choices=("clip", "nan"), default="clip",
                   help="with --apply: outside a correction's valid domain evaluate it at the domain edge "
                        "(clip, default) or give NaN; both are flagged in calib_flags")
    g = p.add_argument_group("inputs of the fit")
    g.add_argument("--pairs", metavar="FILE", help="wide-binary pairs: two identifier columns per row")
    g.add_argument("--pair-columns", metavar="A,B", help="the pairs table's two identifier columns")
    g.add_argument("--cluster", metavar="FILE|occam:NAME",
                   help="members of one open cluster: a table of identifiers or positions, or occam:M67 "
                        "for the OCCAM DR14 members in the shared catalogs (matched by position)")
    g.add_argument("--cluster-ref", metavar="NAME|FILE",
                   help="the cluster's reference abundances: an OCCAM cluster name (M67, NGC_2682) or a "
                        "one-row table of label columns with <label>_err")
    g.add_argument("--reference", metavar="FILE|gaia:v3|gaia:v2.1|galah:m67",
                   help="high-resolution reference catalog: a table, or one in the shared catalogs "
                        "(gaia:v3, gaia:v2.1: the Gaia FGK benchmark stars; galah:m67: GALAH DR3 in the "
                        "M67 field), matched by position (--match-radius, default 2 arcsec)")
    g.add_argument("--ref-columns", metavar="COL=LABEL,...", help="column mapping of the reference catalog")
    g.add_argument("--match-on", metavar="COLUMN", help="identifier column to match on (default: detected)")
    g.add_argument("--match-radius", type=float, metavar="ARCSEC", help="match by sky position within ARCSEC")
    g.add_argument("--labels", metavar="L1,L2", help="calibrate only these labels (default: all present)")
    g.add_argument("--binary-features", default="teff", metavar="F1,F2",
                   help="wide-binary trend variables (default teff; teff,logg adds log g)")
    g.add_argument("--cluster-order", type=int, default=1, help="cluster trend degree in Teff, log g (default 1)")
    g.add_argument("--max-order", type=int, default=2,
                   help="highest reference-trend degree tried by cross-validation (default 2)")
    g.add_argument("--bootstrap", type=int, default=400, help="bootstrap resamples of the pairs (default 400)")
    g.add_argument("--plots", metavar="DIR",
                   help="write diagnostic PNGs (calibration_<label>.png, one per calibrated label) into DIR; "
                        "an earlier run's calibration_*.png there of a label without a figure now is removed")
    p.set_defaults(func=_cmd_calibrate)

    d = sub.add_parser(
        "calibration-demo", help="the calibration demonstration on SIMULATED M67 stars and wide binaries",
        description="Synthesize SIMULATED stars with the ab initio engine on ATLAS9 atmospheres (physics a "
                    "little different from the emulator's training set): real M67 members' Teff/log g at "
                    "M67's OCCAM composition, and wide-binary pairs sharing their abundances. Fit them with "
                    "the emulator, calibrate (wide binaries, then the cluster anchored to the OCCAM means) and "
                    "report the scatter of fit - truth per label before and after. Resumable: the engine's "
                    "spectra are kept in DIR/spectra.",
        epilog="Example:\n  phdlspec calibration-demo -o calibration_demo --workers 2\n\n"
               "Writes DIR/truth.ecsv, pairs.ecsv, results.ecsv, calibration.ecsv, summary.ecsv, "
               "truth_scatter.ecsv and plots/. About 25 s per star and worker for the synthesis on this "
               "machine's cores, then ~10 s per star for the fits.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    d.add_argument("--pairs", type=int, default=50, help="simulated wide-binary pairs (default 50)")
    d.add_argument("--giants", type=int, default=None,
                   help="OCCAM M67 members to use (default: all 15 inside the grid)")
    d.add_argument("--dwarfs", type=int, default=15, help="GALAH M67-field dwarfs to add (default 15)")
    d.add_argument("--snr", type=float, default=50.0, help="S/N per pixel of the noisy observations")
    d.add_argument("--seed", type=int, default=67)
    d.add_argument("--workers", type=int, default=1, help="synthesis processes (one torch thread each)")
    d.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the pairs")
    d.add_argument("--model", metavar="PATH", help="emulator weights (default: the shipped model)")
    d.add_argument("--fast", action="store_true",
                   help="fit with the atmospheric-label search (CMA-ES over Teff, logg, vmic, [Fe/H], vbroad, rv; "
                        "Levenberg-Marquardt for the abundances; fit_spectrum's default, ~4 s per star); without "
                        "it the demo keeps the 32-D search over every label (~20 s per star) of its recorded runs")
    d.add_argument("--reuse-fits", action="store_true",
                   help="calibrate the fits already in DIR/results.ecsv instead of fitting again (seconds; after "
                        "a change to the calibration methods)")
    d.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    import numpy as np

    from ..emulator import load_emulator
    from .demo import DemoSpec, run_demo

    spec = DemoSpec(n_m67=args.giants, n_m67_dwarfs=args.dwarfs, n_pairs=args.pairs, snr=args.snr, seed=args.seed)
    res = run_demo(args.output, spec, workers=args.workers,
                   emulator=None if args.reuse_fits else load_emulator(args.model, device="cpu"),
                   data_dir=args.data_dir, bootstrap=args.bootstrap,
                   fit_kwargs={"cmaes_scope": "atmosphere" if args.fast else "all"}, reuse_fits=args.reuse_fits)
    print(f"SIMULATED calibration demonstration: {res['n_stars']} stars in {args.output}")
    print("fit - truth over the stars where the fit measured the label (not at a bound):")
    print(f"{'label':<7} {'n':>4} {'scatter before':>15} {'after':>9} {'trend before':>13} {'after':>9}")
    for name, v in res["truth_scatter"].items():
        if np.isfinite(v["scatter_before"]):
            print(f"{name:<7} {v['n_measured']:>4} {v['scatter_before']:>15.4g} {v['scatter_after']:>9.4g} "
                  f"{v['trend_before']:>13.4g} {v['trend_after']:>9.4g}")
    return 0


def _split(s):
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def _mapping(s):
    out = {}
    for item in _split(s) or []:
        if "=" not in item:
            raise SystemExit(f"error: --ref-columns expects COL=LABEL pairs, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _cmd_calibrate(args) -> int:
    from .tables import CalibrationInputError

    try:
        return _apply(args) if args.apply else _fit(args)
    except CalibrationInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _apply(args) -> int:
    from .calibration import Calibration
    from .tables import read_table, write_table

    cal = Calibration.load(args.apply)
    out = cal.apply(read_table(args.results), outside=args.outside)
    write_table(out, args.output)
    n_flag = sum(1 for f in out["calib_flags"] if f)
    print(f"wrote {args.output}: {len(out)} stars, {len(cal.labels)} labels calibrated "
          f"({', '.join(cal.labels)}); {n_flag} stars with a label outside its valid domain")
    return 0


def _members_mask(results, args):
    import numpy as np

    from .catalogs import occam_members
    from .tables import CalibrationInputError, crossmatch, read_table

    spec = args.cluster
    if spec.lower().startswith("occam:"):
        members = occam_members(spec.split(":", 1)[1])
        radius = args.match_radius or 2.0
    else:
        members = read_table(spec)
        radius = args.match_radius
    tagged = results.copy()
    tagged["__row"] = np.arange(len(results))
    try:
        m = crossmatch(tagged, members, on=args.match_on, radius_arcsec=radius)
    except CalibrationInputError as exc:
        raise CalibrationInputError(f"cluster members: {exc}") from exc
    mask = np.zeros(len(results), bool)
    mask[np.asarray(m["__row"], int)] = True
    return mask


def _reference(args):
    """The reference catalog: a file, or a shared catalog by name (then matched by position)."""
    from pathlib import Path

    from . import catalogs as C
    from .tables import CalibrationInputError, read_table

    spec = args.reference
    kind, _, which = spec.partition(":")
    builtin = {("gaia", "v3"): lambda: C.gaia_benchmark_stars("v3"),
               ("gaia", "v2.1"): lambda: C.gaia_benchmark_stars("v2.1"),
               ("galah", "m67"): C.galah_m67_field}
    key = (kind.lower(), which.lower())
    if which and not Path(spec).is_file():
        if key not in builtin:
            raise CalibrationInputError(f"--reference {spec}: not a file, and not one of the shared catalogs "
                                        "gaia:v3, gaia:v2.1, galah:m67")
        if args.match_on is None and args.match_radius is None:
            args.match_radius = 2.0
        return builtin[key]()
    return read_table(spec, mapping=_mapping(args.ref_columns))


def _cluster_reference(spec):
    from pathlib import Path

    import numpy as np

    from .catalogs import occam_cluster_means
    from .tables import read_table

    if spec is None:
        return None
    if not Path(spec).is_file():
        return occam_cluster_means(spec)
    t = read_table(spec)
    from ..labels import label_names

    return {n: (float(t[n][0]), float(t[n + "_err"][0]) if n + "_err" in t.colnames else np.nan)
            for n in label_names() if n in t.colnames}


def _fit(args) -> int:
    import numpy as np

    from . import diagnostics as D
    from .calibration import build_calibration
    from .tables import crossmatch, read_table

    results = read_table(args.results)
    labels = _split(args.labels)
    pairs = read_table(args.pairs) if args.pairs else None
    members = _members_mask(results, args) if args.cluster else None
    cref = _cluster_reference(args.cluster_ref)
    ref = _reference(args) if args.reference else None
    matcher = None
    if ref is not None:
        def matcher(current):
            return crossmatch(current, ref, on=args.match_on, radius_arcsec=args.match_radius)
    options = {
        "wide_binaries": {"features": tuple(_split(args.binary_features)), "n_boot": args.bootstrap,
                          "id_column": args.match_on, "labels": labels,
                          "pair_columns": _split(args.pair_columns)},
        "cluster": {"order": args.cluster_order, "labels": labels,
                    "name": args.cluster},
        "reference": {"max_order": args.max_order, "labels": labels},
    }
    cal = build_calibration(results, pairs=pairs, cluster_members=members, cluster_reference=cref,
                            matched_reference=matcher, options=options,
                            inputs={"results": args.results, "pairs": args.pairs,
                                    "cluster": args.cluster if args.cluster and not args.cluster.startswith("occam:") else None,
                                    "reference": args.reference},
                            command=" ".join(sys.argv[1:]) if sys.argv else "")
    cal.save(args.output)
    summary = cal.summary()
    print(f"wrote {args.output}: {len(cal.corrections)} corrections for {len(cal.labels)} labels")
    print(f"{'method':<14} {'label':<7} {'n':>5} {'scatter before':>15} {'after':>9} {'internal':>9}")
    for row in summary:
        ip = f"{row['internal_precision']:.4g}" if np.isfinite(row["internal_precision"]) else ""
        print(f"{row['method']:<14} {row['label']:<7} {row['n']:>5} {row['scatter_before']:>15.4g} "
              f"{row['scatter_after']:>9.4g} {ip:>9}")
    if args.plots:
        paths = D.write_plots(cal.diagnostics, args.plots)
        print(f"wrote {len(paths)} diagnostic plots to {args.plots}")
    return 0
