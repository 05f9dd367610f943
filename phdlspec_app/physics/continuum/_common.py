"""Shared helpers of the continuum-opacity modules: units, interpolation, broadcasting.

Conventions: wavelengths ``wl`` in Å (vacuum), shape ``(W,)`` (or anything broadcastable
against ``(..., L, W)``); thermodynamic quantities ``(..., L)``; every process returns a
linear absorption coefficient α in cm⁻¹ with shape ``(..., L, W)``. All interpolation is
done in torch so that derivatives with respect to T, n_e and number densities flow
(piecewise-linear interpolation is differentiable almost everywhere).
"""
from __future__ import annotations

import numpy as np
import torch

from .. import constants as C

#: h/k in K s (for h ν / k T)
H_OVER_K = C.h / C.k_B
#: ionization energy of H⁻ [eV] (McLaughlin et al. 2017, the value their cross sections use)
HMINUS_ION_EV = 0.754204
#: Rydberg energy (infinite nuclear mass) [eV] (CODATA 2018), used by van Hoof (2014) and Colgan (2016)
RYDBERG_INF_EV = 13.605693122994


def as_tensor(x, like: torch.Tensor | None = None) -> torch.Tensor:
    """float64 tensor on the device of ``like`` (no copy when already right)."""
    dev = like.device if like is not None else None
    if isinstance(x, torch.Tensor):
        return x.to(dtype=torch.float64, device=dev if dev is not None else x.device)
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=torch.float64, device=dev)


def frequency(wl: torch.Tensor) -> torch.Tensor:
    """ν [Hz] from vacuum wavelength [Å]."""
    return C.c / (wl * C.angstrom)


def layer(x: torch.Tensor) -> torch.Tensor:
    """(..., L) → (..., L, 1) so it broadcasts against wavelength (W,)."""
    return x.unsqueeze(-1)


def stim_factor(wl: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """1 − exp(−hν/kT), shape (..., L, W): correction for stimulated emission (LTE)."""
    return -torch.expm1(-H_OVER_K * frequency(wl) / layer(T))


def interp1d(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor, left=None, right=None) -> torch.Tensor:
    """Piecewise-linear interpolation of ``fp(xp)`` (``xp`` increasing, 1-D) at ``x`` (any shape).

    ``fp`` may carry extra trailing dimensions: shape ``(N, *K)`` → result ``(*x.shape, *K)``.
    Outside the table the end value is held unless ``left``/``right`` are given (a number).
    """
    n = xp.shape[0]
    idx = torch.searchsorted(xp, x.detach().contiguous()).clamp(1, n - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    w = ((x - x0) / (x1 - x0)).clamp(0.0, 1.0)
    f0, f1 = fp[idx - 1], fp[idx]
    extra = fp.dim() - 1
    wv = w.reshape(w.shape + (1,) * extra)
    out = f0 + wv * (f1 - f0)
    if left is not None:
        out = torch.where((x < xp[0]).reshape(x.shape + (1,) * extra), torch.full_like(out, left), out)
    if right is not None:
        out = torch.where((x > xp[-1]).reshape(x.shape + (1,) * extra), torch.full_like(out, right), out)
    return out


def interp_layers(q: torch.Tensor, grid: torch.Tensor, table_w: torch.Tensor) -> torch.Tensor:
    """Second stage of a 2-D table interpolation.

    ``table_w`` (W, N) is a table already interpolated to the W wavelengths, tabulated on the
    increasing 1-D ``grid`` (N,) of a layer quantity (T, θ, …); ``q`` (..., L) are the layer
    values (clamped to the grid). Returns (..., L, W), linear in ``q``.
    """
    n = grid.shape[0]
    qc = torch.clamp(q, grid[0], grid[-1])
    idx = torch.searchsorted(grid, qc.detach().contiguous()).clamp(1, n - 1)
    g0, g1 = grid[idx - 1], grid[idx]
    w = ((qc - g0) / (g1 - g0)).unsqueeze(-1)
    tab = table_w.transpose(0, 1)  # (N, W)
    return tab[idx - 1] + w * (tab[idx] - tab[idx - 1])


def table2d(wl: torch.Tensor, q: torch.Tensor, wl_grid, q_grid, table, *, wl_left=None, wl_right=None,
            log_values: bool = False) -> torch.Tensor:
    """Bilinear interpolation of ``table`` (len(wl_grid), len(q_grid)) at (wl (W,), q (..., L)).

    Linear in wavelength then in ``q``; ``log_values`` interpolates log(table) and exponentiates.
    Outside the wavelength range the end value is held unless ``wl_left``/``wl_right`` are given
    (in the units of the table). ``q`` is clamped to its grid.
    """
    wg = as_tensor(wl_grid, wl)
    qg = as_tensor(q_grid, wl)
    tb = as_tensor(table, wl)
    if log_values:
        tb = torch.log(tb.clamp_min(1e-300))
    tw = interp1d(wl, wg, tb)  # (W, Nq)
    out = interp_layers(q, qg, tw)
    if log_values:
        out = torch.exp(out)
    if wl_left is not None:
        out = torch.where(wl < wg[0], torch.full_like(out, wl_left), out)
    if wl_right is not None:
        out = torch.where(wl > wg[-1], torch.full_like(out, wl_right), out)
    return out
