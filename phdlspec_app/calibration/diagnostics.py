"""Diagnostics of a calibration: the residuals before and after each correction, the fitted
trend at every point, the scatter per label, and PNG plots of them.

The data behind every plot are plain columns of one table (:func:`rows` builds it; the
:class:`~.calibration.Calibration` keeps it as ``diagnostics``), so the dashboard can draw
them without matplotlib::

    method  label  star  teff  logg  fe_h  dteff  dlogg  before  after  trend

``teff`` (K), ``logg`` (dex), ``fe_h`` (dex) are the star's (for a pair, the first star's);
``dteff``, ``dlogg`` the pair's differences (NaN outside the wide-binary method);
``before``/``after`` the residual in the label's unit (pair difference, star minus cluster
reference, ours minus reference catalog); ``trend`` the fitted model at that point.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .models import robust_std

__all__ = ["rows", "summary", "plot_label", "write_plots", "COLUMNS"]

COLUMNS = ("method", "label", "star", "teff", "logg", "fe_h", "dteff", "dlogg", "before", "after", "trend")


def rows(method: str, label: str, star, teff, logg, fe_h, before, after, trend, dteff=None, dlogg=None):
    """One block of diagnostics rows (a dict of equal-length arrays, see the module doc)."""
    n = len(before)
    nan = np.full(n, np.nan)

    def arr(v):
        return nan.copy() if v is None else np.asarray(v, float)

    return {"method": np.full(n, method, dtype=object), "label": np.full(n, label, dtype=object),
            "star": np.asarray([str(s) for s in star], dtype=object), "teff": arr(teff), "logg": arr(logg),
            "fe_h": arr(fe_h), "dteff": arr(dteff), "dlogg": arr(dlogg), "before": arr(before),
            "after": arr(after), "trend": arr(trend)}


def stack(blocks):
    """An astropy Table from diagnostics blocks (empty table with the columns if none)."""
    from astropy.table import Table

    if not blocks:
        return Table({c: np.zeros(0, dtype=str if c in ("method", "label", "star") else float) for c in COLUMNS})
    cols = {c: np.concatenate([b[c] for b in blocks]) for c in COLUMNS}
    for c in ("method", "label", "star"):
        cols[c] = np.asarray(cols[c], dtype=str)
    return Table(cols)


def summary(diagnostics):
    """Per method and label: n, robust scatter before and after (label's unit), and for wide
    binaries the internal precision of one star, scatter_after / sqrt(2).

    Returns an astropy Table with columns method, label, n, scatter_before, scatter_after,
    internal_precision.
    """
    from astropy.table import Table

    out = {"method": [], "label": [], "n": [], "scatter_before": [], "scatter_after": [], "internal_precision": []}
    if len(diagnostics):
        keys = sorted(set(zip(diagnostics["method"], diagnostics["label"])), key=lambda k: (k[0], k[1]))
        for method, label in keys:
            sel = (diagnostics["method"] == method) & (diagnostics["label"] == label)
            before = np.asarray(diagnostics["before"][sel], float)
            after = np.asarray(diagnostics["after"][sel], float)
            out["method"].append(method)
            out["label"].append(label)
            out["n"].append(int(np.isfinite(before).sum()))
            out["scatter_before"].append(robust_std(before))
            out["scatter_after"].append(robust_std(after))
            out["internal_precision"].append(robust_std(after) / np.sqrt(2) if method == "wide_binaries" else np.nan)
    t = Table(out, dtype=[str, str, int, float, float, float])
    return t


_XAXES = {"wide_binaries": ("dteff", "dlogg", "fe_h"), "cluster": ("teff", "logg", "fe_h"),
          "reference": ("teff", "logg", "fe_h")}
_XLABEL = {"teff": "Teff (K)", "logg": "log g (dex)", "fe_h": "[Fe/H] (dex)", "dteff": "ΔTeff of the pair (K)",
           "dlogg": "Δlog g of the pair (dex)"}
_YLABEL = {"wide_binaries": "Δ within pair", "cluster": "star − cluster", "reference": "ours − reference"}


def plot_label(diagnostics, label: str, path, title_note: str = "") -> Path | None:
    """One PNG for ``label``: a row per method, columns residual vs Teff, log g, [Fe/H]
    (pairs: vs ΔTeff, Δlog g), before (grey) and after (blue), the fitted trend at each
    point (red) and the
    scatter in each panel's legend. Written to a temporary file and renamed. None if the
    label has no diagnostics."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    sel_label = np.asarray(diagnostics["label"]) == label
    methods = [m for m in ("wide_binaries", "cluster", "reference") if np.any(sel_label & (np.asarray(diagnostics["method"]) == m))]
    if not methods:
        return None
    fig = Figure(figsize=(12, 3.2 * len(methods)))
    for i, method in enumerate(methods):
        d = diagnostics[sel_label & (np.asarray(diagnostics["method"]) == method)]
        before, after, trend = (np.asarray(d[c], float) for c in ("before", "after", "trend"))
        for j, xname in enumerate(_XAXES[method]):
            ax = fig.add_subplot(len(methods), 3, 3 * i + j + 1)
            x = np.asarray(d[xname], float)
            if not np.any(np.isfinite(x)):
                ax.set_visible(False)
                continue
            ax.scatter(x, before, s=8, color="0.6", label=f"before σ={robust_std(before):.3g}")
            ax.scatter(x, after, s=8, color="tab:blue", label=f"after σ={robust_std(after):.3g}")
            # The trend at each point (not a line: it may also depend on the other variables).
            ax.scatter(x, trend, s=3, color="tab:red", label="fitted trend")
            ax.axhline(0, color="k", lw=0.5)
            ax.set_xlabel(_XLABEL[xname])
            if j == 0:
                ax.set_ylabel(f"{label}: {_YLABEL[method]}")
                ax.set_title(f"{method.replace('_', ' ')} (n={len(d)})" + (f" · {title_note}" if title_note else ""),
                             fontsize=9, loc="left")
            ax.legend(fontsize=7, loc="upper right")  # "best" searches every point: slow
    # Fixed margins instead of tight_layout, which draws the figure twice.
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.12 / len(methods) ** 0.5, top=1 - 0.08 / len(methods) ** 0.5,
                        wspace=0.25, hspace=0.45)
    return _save_atomic(fig, Path(path))


def _save_atomic(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=80, format="png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_plots(diagnostics, directory, note: str = "") -> list[Path]:
    """A PNG per label with diagnostics, ``<directory>/calibration_<label>.png``; returns the paths.

    An earlier run's ``calibration_*.png`` of a label this calibration no longer has is
    removed (after the new ones are written, so a failure on the way leaves the old set):
    otherwise the folder would show a correction that no longer exists. Other files stay."""
    directory = Path(directory)
    out = []
    for label in sorted(set(np.asarray(diagnostics["label"], str))):
        p = plot_label(diagnostics, label, directory / f"calibration_{label}.png", note)
        if p is not None:
            out.append(p)
    for stale in set(directory.glob("calibration_*.png")) - set(out):
        stale.unlink()
    return out
