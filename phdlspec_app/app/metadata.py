"""Turn :meth:`Spectrum.summary` into readable table rows and notes (no Panel import here)."""
from __future__ import annotations

import html
import math
from pathlib import Path

__all__ = ["spectrum_warnings", "summary_html", "summary_rows"]

_MISSING = "—"
_NO_SUBCLASS = {"non", "none", "unknown"}


def _fmt(value, digits: int | None = None) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return _MISSING
    if digits is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _fmt_snr(snr: dict, lower_limits=()) -> str:
    """LAMOST's per-band S/N, e.g. ``u 2.1 · g 12.2 · r ≥99.0`` (≥ marks a pipeline cap)."""
    if not snr:
        return _MISSING
    return " · ".join(f"{band} {'≥' if band in lower_limits else ''}{_fmt(val, 1)}" for band, val in snr.items())


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    """(label, value) pairs in display order; labels carry the units."""
    s = summary
    source = s.get("file")
    cls = " / ".join(v for v in (_fmt(s.get("class")), _fmt(s.get("subclass"))) if v != _MISSING)
    wmin, wmax = s.get("wavelength_min"), s.get("wavelength_max")
    masked = s.get("masked_fraction")
    return [
        ("File", Path(str(source)).name if source else _MISSING),
        ("Layout", _fmt(s.get("layout"))),
        ("Data release", _fmt(s.get("data_release"))),
        ("Pipeline version", _fmt(s.get("pipeline_version"))),
        ("obsid", _fmt(s.get("obsid"))),
        ("Designation", _fmt(s.get("designation"))),
        ("RA, Dec (deg)", f"{_fmt(s.get('ra'), 5)}, {_fmt(s.get('dec'), 5)}"),
        ("Class / subclass", cls or _MISSING),
        ("S/N per band", _fmt_snr(s.get("snr") or {}, s.get("snr_lower_limits") or ())),
        ("Median S/N per pixel", _fmt(s.get("median_pixel_snr"), 1)),
        ("Pixels", _fmt(s.get("npix"))),
        ("Wavelength range (Å, vacuum)", f"{_fmt(wmin, 1)} – {_fmt(wmax, 1)}"),
        ("Wavelength medium of file", _fmt(s.get("medium_of_file"))),
        ("Masked pixels", _MISSING if masked is None else f"{100 * masked:.2f} %"),
        ("Errors estimated (no ivar in file)", _fmt(bool(s.get("ivar_estimated")))),
        ("Resolution R", _fmt(s.get("resolution"))),
    ]


def summary_html(summary: dict) -> str:
    """:func:`summary_rows` as HTML (every value escaped): two label/value tables side by side,
    which wrap under each other on narrow screens, so the whole header fits below the plot."""
    rows = summary_rows(summary)
    half = (len(rows) + 1) // 2

    def table(part):
        body = "".join(f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
                       for label, value in part)
        return f'<table class="phdlspec-meta">{body}</table>'

    return f'<div class="phdlspec-meta-grid">{table(rows[:half])}{table(rows[half:])}</div>'


def spectrum_warnings(spec) -> list[str]:
    """Things a user must know before trusting labels derived from ``spec``."""
    notes = []
    cls = spec.meta.get("class")
    if cls and str(cls).strip().upper() != "STAR":
        sub = str(spec.meta.get("subclass") or "").strip()
        # LAMOST writes "Non" when it assigns no subclass (e.g. to QSOs): not worth showing.
        kind = f"{cls} ({sub})" if sub and sub.lower() not in _NO_SUBCLASS else str(cls)
        notes.append(f"LAMOST classifies this object as {kind}, not STAR: PhDLspec's stellar "
                     "labels do not apply to it. It is shown for inspection only.")
    if spec.meta.get("ivar_estimated"):
        notes.append("The file has no flux errors; the error band is an estimate.")
    if spec.npix and spec.mask.all():
        notes.append("Every pixel is masked.")
    return notes
