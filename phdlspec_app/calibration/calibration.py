"""The :class:`Calibration` object: the corrections of every method in the order they are
applied, their provenance and valid domain, and the diagnostics behind their plots;
saved as ONE human-readable, versioned file.

File formats
------------
``.ecsv``: the diagnostics table (one row per star or pair per method and label, see
:mod:`.diagnostics`) with the corrections, provenance and summary in the YAML header
under ``phdlspec_calibration``. ``.json``: the same content as one JSON document (the
diagnostics as column lists). Both carry ``format: phdlspec-calibration`` and
``version``; :meth:`Calibration.load` refuses newer versions.

Order of the methods
--------------------
:func:`build_calibration` fits wide binaries on the raw labels, then the cluster on the
binary-corrected labels (a cluster shape that widens the pairs' differences is vetoed),
then the reference catalog on the labels corrected by both, so
each later method only sees what the earlier left, and :meth:`Calibration.apply` applies
them in that same order.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from .. import __version__
from ..labels import label_names
from . import diagnostics as D
from .correction import Correction
from .tables import CalibrationInputError

__all__ = ["Calibration", "build_calibration", "FORMAT", "VERSION", "METHOD_ORDER"]

FORMAT = "phdlspec-calibration"
VERSION = 1
METHOD_ORDER = ("wide_binaries", "cluster", "reference")


@dataclass
class Calibration:
    """Corrections in application order, plus provenance and diagnostics.

    Attributes
    ----------
    corrections : list of :class:`Correction`, in the order they are applied
    provenance : inputs (files with sha256), options, software version, creation time (UTC)
    diagnostics : astropy Table of residuals before/after (see :mod:`.diagnostics`)
    """

    corrections: list = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    diagnostics: object = None

    # ------------------------------------------------------------------ queries
    @property
    def labels(self) -> list[str]:
        """Calibrated labels, in schema order."""
        have = {c.label for c in self.corrections}
        return [n for n in label_names() if n in have]

    def summary(self):
        """Table per method and label: n, scatter before/after, internal precision (pairs)."""
        return D.summary(self.diagnostics if self.diagnostics is not None else D.stack([]))

    def domain(self) -> dict:
        """``{label: {method: {feature: [lo, hi]}}}``: where each correction is valid."""
        out: dict = {}
        for c in self.corrections:
            out.setdefault(c.label, {})[c.method] = dict(c.trend.domain)
        return out

    def diagnostics_for(self, label: str, method: str | None = None):
        """The diagnostics rows of one label (and method): arrays for the app to plot."""
        d = self.diagnostics
        sel = np.asarray(d["label"]) == label
        if method is not None:
            sel &= np.asarray(d["method"]) == method
        return d[sel]

    # ------------------------------------------------------------------ apply
    def apply(self, results, outside: str = "clip"):
        """Calibrate a results table (or one fit: a dict or table row).

        For every calibrated label ``x``: ``x`` becomes the calibrated value, ``x_raw`` keeps
        the input, ``x_err`` (and ``x_err_lo``/``x_err_hi``) becomes the input error scaled
        by the calibration's scale factor and combined in quadrature with the correction's
        1-sigma uncertainty; ``x_err_raw`` keeps the input error. ``calib_flags`` lists, per
        star, the labels whose correction was outside its valid domain (evaluated at the
        domain's edge with ``outside="clip"``, NaN with ``outside="nan"``), e.g.
        ``"mg_fe,ca_fe"``; empty when none.

        Returns a new table (or a dict for a dict/row input).
        """
        from astropy.table import Row, Table

        single = isinstance(results, (Mapping, Row))
        if isinstance(results, Mapping):
            table = Table({k: [v] for k, v in results.items()})
        elif isinstance(results, Row):
            table = results.table[results.index:results.index + 1]
        else:
            table = results
        table = Table(table, copy=True, masked=False)
        if any(f"{c.label}_raw" in table.colnames for c in self.corrections):
            raise CalibrationInputError(
                f"{table.meta.get('source_file', 'table')}: already calibrated (has *_raw columns)")
        n = len(table)
        flags = [set() for _ in range(n)]
        err_cols = {}
        for label in self.labels:
            if label not in table.colnames:
                continue
            table[f"{label}_raw"] = np.asarray(table[label], float)
            for suf in ("_err", "_err_lo", "_err_hi"):
                if label + suf in table.colnames:
                    table[f"{label}{suf}_raw"] = np.asarray(table[label + suf], float)
                    err_cols.setdefault(label, []).append(label + suf)
        corr_var = {label: np.zeros(n) for label in self.labels}
        err_scale = {label: np.ones(n) for label in self.labels}
        for method in METHOD_ORDER:
            step = [c for c in self.corrections if c.method == method and c.label in table.colnames]
            # Every label of one step sees the same (pre-step) Teff, log g, [Fe/H].
            results_step = [(c, c.apply(table, outside=outside)) for c in step]
            for c, (value, sigma, scale, out) in results_step:
                table[c.label] = value
                corr_var[c.label] = corr_var[c.label] * scale ** 2 + sigma ** 2
                err_scale[c.label] = err_scale[c.label] * scale
                for i in np.flatnonzero(out):
                    flags[i].add(c.label)
        for label, cols in err_cols.items():
            for col in cols:
                raw = np.asarray(table[col + "_raw"], float)
                table[col] = np.sqrt((raw * err_scale[label]) ** 2 + corr_var[label])
        for label in self.labels:
            if label in table.colnames and label not in err_cols:
                table[f"{label}_calib_err"] = np.sqrt(corr_var[label])
        order = {n: i for i, n in enumerate(label_names())}
        table["calib_flags"] = [",".join(sorted(f, key=order.get)) for f in flags]
        table.meta["calibration"] = self.provenance.get("id", "")
        if single:
            return {k: (v.item() if hasattr(v, "item") else v) for k, v in zip(table.colnames, table[0])}
        return table

    # ------------------------------------------------------------------ file I/O
    def to_dict(self, with_diagnostics: bool = True) -> dict:
        out = {"format": FORMAT, "version": VERSION, "provenance": _jsonable(self.provenance),
               "method_order": list(METHOD_ORDER), "labels": self.labels,
               "domain": self.domain(),
               "corrections": [c.to_dict() for c in self.corrections],
               "summary": _table_to_lists(self.summary())}
        if with_diagnostics and self.diagnostics is not None:
            out["diagnostics"] = _table_to_lists(self.diagnostics)
        return out

    @classmethod
    def from_dict(cls, d: dict, source: str = "calibration") -> "Calibration":
        if d.get("format") != FORMAT:
            raise CalibrationInputError(f"{source}: not a PhDLspec calibration (format {d.get('format')!r})")
        if int(d.get("version", 0)) > VERSION:
            raise CalibrationInputError(f"{source}: calibration file version {d['version']} is newer than "
                                        f"this PhDLspec understands ({VERSION}); upgrade PhDLspec")
        try:
            corrections = [Correction.from_dict(c) for c in d["corrections"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationInputError(f"{source}: malformed correction: {exc}") from exc
        diag = d.get("diagnostics")
        if isinstance(diag, dict):
            from astropy.table import Table

            diag = Table({k: np.asarray(v, dtype=str if k in ("method", "label", "star") else float)
                          for k, v in diag.items()})
        return cls(corrections, dict(d.get("provenance", {})), diag if diag is not None else D.stack([]))

    def save(self, path) -> Path:
        """Write to ``path`` (``.ecsv`` or ``.json``) through a temporary file and a rename."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".ecsv", ".json"):
            raise CalibrationInputError(f"{path}: a calibration is saved as .ecsv or .json")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
        os.close(fd)
        try:
            if suffix == ".json":
                with open(tmp, "w") as fh:
                    json.dump(self.to_dict(), fh, indent=1)
                    fh.write("\n")
            else:
                table = (self.diagnostics if self.diagnostics is not None else D.stack([])).copy()
                table.meta = {"phdlspec_calibration": self.to_dict(with_diagnostics=False)}
                table.write(tmp, format="ascii.ecsv", overwrite=True)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path) -> "Calibration":
        """Read a calibration saved by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise CalibrationInputError(f"{path}: no such file")
        try:
            if path.suffix.lower() == ".json":
                d = json.loads(path.read_text())
                return cls.from_dict(d, str(path))
            from astropy.table import Table

            table = Table.read(path, format="ascii.ecsv")
        except CalibrationInputError:
            raise
        except Exception as exc:
            raise CalibrationInputError(f"{path}: cannot read a calibration: {type(exc).__name__}: {exc}") from exc
        d = table.meta.get("phdlspec_calibration")
        if not isinstance(d, dict):
            raise CalibrationInputError(f"{path}: no phdlspec_calibration block in the ECSV header")
        cal = cls.from_dict(dict(d), str(path))
        table.meta = {}
        cal.diagnostics = table
        return cal


def build_calibration(results, pairs=None, cluster_members=None, cluster_reference=None, matched_reference=None,
                      options: dict | None = None, inputs: dict | None = None, **kw) -> Calibration:
    """Fit every method that has data, in :data:`METHOD_ORDER`, each on the labels corrected
    by the ones before.

    Parameters
    ----------
    results : our results table (schema columns), used by the wide-binary method
    pairs : pairs table (two identifier columns) or None
    cluster_members : boolean mask or index array selecting the cluster members in ``results``
    cluster_reference : ``{label: (mean, err)}`` for the cluster, or None
    matched_reference : a function ``table -> matched table`` that cross-matches (calibrated-so-far)
        results to the reference catalog, or None
    options : per-method keyword arguments, ``{"wide_binaries": {...}, "cluster": {...},
        "reference": {...}}``
    inputs : ``{role: path}`` recorded with sha256 in the provenance
    """
    from .binaries import fit_wide_binaries, pair_indices
    from .cluster import fit_cluster
    from .reference import fit_reference
    from ..paths import sha256_file

    options = {m: dict((options or {}).get(m, {})) for m in METHOD_ORDER}
    cal = Calibration()
    blocks = []
    current = results
    if pairs is not None:
        corr, b = fit_wide_binaries(current, pairs, **options["wide_binaries"])
        cal.corrections += corr
        blocks += b
        current = Calibration(corr).apply(current)
        current = _strip_calibration_columns(current, results)
    if cluster_members is not None:
        members = current[cluster_members]
        copts = dict(options["cluster"])
        if pairs is not None and "pair_check" not in copts:
            # the cluster's shapes must not widen the (already corrected) pairs' differences
            wb = options["wide_binaries"]
            ia, ib, _ = pair_indices(current, pairs, wb.get("id_column"), wb.get("pair_columns"))
            copts["pair_check"] = (current, ia, ib)
        corr, b = fit_cluster(members, cluster_reference, **copts)
        cal.corrections += corr
        blocks += b
        current = _strip_calibration_columns(Calibration(corr).apply(current), results)
    if matched_reference is not None:
        corr, b = fit_reference(matched_reference(current), **options["reference"])
        cal.corrections += corr
        blocks += b
    if not cal.corrections:
        raise CalibrationInputError("no correction could be fitted: give pairs, cluster members or a "
                                    "reference catalog with enough stars that have the labels")
    cal.diagnostics = D.stack(blocks)
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    cal.provenance = {
        "id": f"phdlspec-calibration-{now}", "created_utc": now, "software": f"phdlspec {__version__}",
        "inputs": {role: {"path": str(p), "sha256": sha256_file(p)} for role, p in (inputs or {}).items()
                   if p is not None and Path(p).is_file()},
        "options": _jsonable(options), "cluster_reference": _jsonable(cluster_reference or {}),
        "n_results": len(results), **_jsonable(kw)}
    return cal


def _strip_calibration_columns(table, original):
    """Keep the corrected label values but drop the bookkeeping columns, so the next method
    sees a plain results table (errors as in the input)."""
    drop = [c for c in table.colnames if c not in original.colnames]
    table.remove_columns(drop)
    for c in table.colnames:
        if c.endswith(("_err", "_err_lo", "_err_hi")):
            table[c] = original[c]
    return table


def _table_to_lists(t) -> dict:
    return {c: [_scalar(v) for v in t[c]] for c in t.colnames}


def _scalar(v):
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (np.str_, bytes)):
        return str(v)
    return v


def _jsonable(v):
    from .correction import _plain

    return _plain(v)
