"""Figures of a fit: observed/model/residual, and a corner plot (matplotlib only; the
``corner`` package is not a dependency)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import labels as L
from .diagnostics import covariance
from .result import FitResult

__all__ = ["plot_fit", "plot_corner"]

_CORNER = ("teff", "logg", "fe_h", "vmic", "rv", "mg_fe")


def _figure(w, h):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def plot_fit(r: FitResult, path) -> Path:
    """Continuum-normalized observation and model (top) and residual/σ (bottom), masked
    pixels shaded."""
    fig = _figure(12, 5)
    ax, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    wl, g = r.wavelength, r.good
    ax.plot(wl, np.where(g, r.observed, np.nan), lw=0.6, color="k", label="observed")
    ax.plot(wl, r.model, lw=0.6, color="C3", label="model")
    ax.set_ylabel("flux / pseudo-continuum")
    lab = r.labels
    ax.set_title(f"{Path(str(r.meta.get('source', ''))).name}: Teff {lab['teff']:.0f} K, log g {lab['logg']:.2f}, "
                 f"[Fe/H] {lab['fe_h']:+.2f}, rv {lab['rv']:.1f} km/s, chi2_red {r.chi2_reduced:.2f}, S/N {r.snr:.0f}")
    ax.legend(loc="lower right", fontsize=8)
    res = np.where(g, (r.observed - r.model) * np.sqrt(np.where(g, r.ivar, 0.0)), np.nan)
    ax2.plot(wl, res, lw=0.5, color="k")
    for a in (ax, ax2):
        a.fill_between(wl, 0, 1, where=~g, color="0.85", transform=a.get_xaxis_transform(), lw=0)
    ax2.set_ylabel("resid / sigma")
    ax2.set_ylim(-6, 6)
    ax2.set_xlabel("vacuum wavelength (A)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_corner(r: FitResult, path, names=_CORNER, fisher: np.ndarray | None = None, seed: int = 0) -> Path:
    """Pairwise posterior draws of the main labels: MCMC samples when the fit has them,
    else draws from the Laplace (Cramér–Rao) Gaussian of the errors (stated on the figure)."""
    names = [n for n in names if n in r.free_names]
    idx = [r.free_names.index(n) for n in names]
    if r.samples is not None:
        x, what = r.samples[:, idx], "MCMC posterior"
    else:
        rng = np.random.default_rng(seed)
        mu = np.array([r.labels[n] for n in names])
        sd = np.array([r.err_lo[n] for n in names])
        cov = np.diag(sd**2) if fisher is None else covariance(fisher)[np.ix_(idx, idx)]
        x, what = rng.multivariate_normal(mu, np.where(np.isfinite(cov), cov, 0.0), 2000), "Gaussian (Cramer-Rao) errors"
    k = len(names)
    fig = _figure(2.0 * k + 1, 2.0 * k + 1)
    axes = np.atleast_2d(fig.subplots(k, k, squeeze=False))
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if j > i:
                ax.set_axis_off()
                continue
            if i == j:
                ax.hist(x[:, i], bins=40, histtype="step", color="k")
                q = np.percentile(x[:, i], [16, 50, 84])
                for v in q:
                    ax.axvline(v, ls="--", lw=0.7, color="C0")
                ax.set_yticks([])
            else:
                ax.hist2d(x[:, j], x[:, i], bins=30, cmap="Greys")
            if i == k - 1:
                ax.set_xlabel(L.get_label(names[j]).latex)
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(L.get_label(names[i]).latex)
            elif j > 0:
                ax.set_yticklabels([])
    fig.suptitle(what)
    fig.savefig(path, dpi=90)
    return Path(path)
