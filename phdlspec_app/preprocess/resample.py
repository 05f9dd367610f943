"""Flux-conserving resampling of an observed spectrum onto the model's wavelength grid.

Each input pixel is a bin (edges halfway between pixel centres) holding a constant flux
density; an output pixel's value is the bin-width-weighted mean of the input flux over
its own bin, so that ∫ f dλ over any range made of whole output bins is the same before
and after (as in SpectRes, Carnall 2017, arXiv:1705.05165). Variances propagate as
σ²_out = Σ w_i² σ²_i with the same weights w_i (neighbouring output pixels then share
input pixels, a correlation the likelihood ignores; it is nil when the grids coincide,
as they do for LAMOST files).
"""
from __future__ import annotations

import numpy as np
from scipy import sparse

__all__ = ["bin_edges", "overlap_matrix", "rebin"]


def bin_edges(centres: np.ndarray) -> np.ndarray:
    """(N+1,) pixel edges (Å) of increasing pixel centres (Å): midpoints, with the outer
    edges half a pixel beyond the first and last centres."""
    c = np.asarray(centres, dtype=float)
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def overlap_matrix(wl_in: np.ndarray, wl_out: np.ndarray) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Sparse (N_out, N_in) matrix of overlap lengths (Å) between output and input bins,
    and the (N_out,) output bin widths (Å)."""
    e_in, e_out = bin_edges(wl_in), bin_edges(wl_out)
    rows, cols, vals = [], [], []
    # input bins overlapping output bin j lie between these indices
    first = np.clip(np.searchsorted(e_in, e_out[:-1], side="right") - 1, 0, len(wl_in) - 1)
    last = np.clip(np.searchsorted(e_in, e_out[1:], side="left") - 1, 0, len(wl_in) - 1)
    for j in range(len(wl_out)):
        i = np.arange(first[j], last[j] + 1)
        ov = np.minimum(e_in[i + 1], e_out[j + 1]) - np.maximum(e_in[i], e_out[j])
        keep = ov > 0
        rows.append(np.full(keep.sum(), j))
        cols.append(i[keep])
        vals.append(ov[keep])
    m = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(len(wl_out), len(wl_in)))
    return m, np.diff(e_out)


def rebin(wl_in: np.ndarray, flux: np.ndarray, ivar: np.ndarray, good: np.ndarray, wl_out: np.ndarray,
          min_coverage: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample (flux, ivar, good) from ``wl_in`` onto ``wl_out`` (both Å, increasing),
    conserving flux.

    Only good input pixels contribute; an output pixel is good when good input bins cover
    at least ``min_coverage`` of its width and it lies wholly inside the input's range.
    Returns (flux, ivar, good) on ``wl_out``; bad pixels have flux 0 and ivar 0.
    """
    m, width = overlap_matrix(wl_in, wl_out)
    g = np.asarray(good, bool) & np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    f = np.where(g, flux, 0.0)
    var = np.where(g, 1.0 / np.where(g, ivar, 1.0), 0.0)
    mg = m @ sparse.diags(g.astype(float))
    cov = np.asarray(mg.sum(axis=1)).ravel()               # Å of good input inside each output bin
    total = np.asarray(m.sum(axis=1)).ravel()              # Å of any input inside each output bin
    with np.errstate(invalid="ignore", divide="ignore"):
        f_out = (mg @ f) / cov
        v_out = (mg.multiply(mg) @ var) / cov**2
    e_in, e_out = bin_edges(wl_in), bin_edges(wl_out)
    inside = (e_out[:-1] >= e_in[0] - 1e-9 * e_in[0]) & (e_out[1:] <= e_in[-1] + 1e-9 * e_in[-1])
    good_out = inside & (cov >= min_coverage * width) & (total > 0) & (v_out > 0) & np.isfinite(f_out)
    flux_out = np.where(good_out, f_out, 0.0)
    ivar_out = np.where(good_out, 1.0 / np.where(good_out, v_out, 1.0), 0.0)
    return flux_out, ivar_out, good_out
