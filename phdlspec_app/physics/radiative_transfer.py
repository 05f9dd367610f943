"""Radiative transfer: emergent flux of a plane-parallel LTE atmosphere.

The source function is the Planck function (LTE; continuum scattering is treated
as absorption, as in Korg.jl, Wheeler et al. 2023, AJ 165, 68). The optical depth
at each wavelength is integrated along the column mass,

    d tau = (alpha / rho) d rhox,

with the trapezoidal rule on kappa = alpha / rho, and tau at the top layer set to
kappa_0 * rhox_0 (constant opacity above the model).

The emergent flux is F = 2 pi int_0^1 I(0, mu) mu dmu, with I(0, mu) the formal
solution for a source function that is linear in tau between layers (exact
integral of S e^{-t/mu} dt/mu for piecewise-linear S), plus the diffusion
approximation I = S + mu dS/dtau below the deepest layer. The mu integral uses
Gauss-Legendre quadrature on [0, 1] (default 6 points; 6 points reproduce the
exact flux of a linear source function, pi (a + 2b/3), to round-off).

Everything is torch float64 and differentiable; shapes are (..., L, W) for
opacities and (..., L) for layer quantities.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .constants import c, h, k_B

__all__ = ["planck_lambda", "optical_depth", "emergent_flux", "gauss_legendre_mu"]


def planck_lambda(wavelength_A: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Planck function B_lambda (erg s^-1 cm^-2 cm^-1 sr^-1) at wavelengths (W,) in
    Angstrom for temperatures (..., L) in K; returns (..., L, W)."""
    lam = wavelength_A * 1e-8
    x = (h * c / k_B) / (lam * T[..., None])
    return (2.0 * h * c**2) / lam**5 / torch.expm1(x)


def optical_depth(alpha: torch.Tensor, rho: torch.Tensor, rhox: torch.Tensor) -> torch.Tensor:
    """tau (..., L, W) from extinction alpha (..., L, W) in cm^-1, mass density rho
    (..., L) in g cm^-3 and column mass rhox (..., L) in g cm^-2 (increasing inward)."""
    kappa = alpha / rho[..., None]
    drhox = torch.diff(rhox, dim=-1)[..., None]
    steps = 0.5 * (kappa[..., 1:, :] + kappa[..., :-1, :]) * drhox
    top = kappa[..., :1, :] * rhox[..., :1, None]
    return torch.cumsum(torch.cat([top, steps], dim=-2), dim=-2)


@functools.lru_cache(maxsize=8)
def _gl(n: int):
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (x + 1.0), 0.5 * w


def gauss_legendre_mu(n: int, like: torch.Tensor):
    """Gauss-Legendre nodes and weights on [0, 1], as tensors like ``like``."""
    x, w = _gl(int(n))
    return (torch.as_tensor(x, dtype=like.dtype, device=like.device),
            torch.as_tensor(w, dtype=like.dtype, device=like.device))


def _linear_weights(d: torch.Tensor):
    """For an interval of optical thickness d along the ray: (1 - e^-d) and
    g(d) = (1 - (1 + d) e^-d) / d, with a series where g would cancel."""
    em1 = torch.expm1(-d)
    small = d < 1e-3
    d_safe = torch.where(small, torch.ones_like(d), d)
    # e^-d as 1 + expm1(-d): one exponential per point instead of two (the transfer's
    # exponentials are most of its time), equal to exp(−d) to round-off
    e_safe = torch.where(small, torch.full_like(d, math.exp(-1.0)), 1.0 + em1)
    g_big = (-em1 - d_safe * e_safe) / d_safe
    g_small = d * (0.5 - d * (1.0 / 3.0 - d / 8.0))
    return -em1, torch.where(small, g_small, g_big)


def emergent_flux(tau: torch.Tensor, S: torch.Tensor, n_mu: int = 6) -> torch.Tensor:
    """Emergent astrophysical flux F (same units as S times pi), shape (..., W).

    Parameters
    ----------
    tau : (..., L, W) optical depth at each layer, increasing inward, tau >= 0
    S : (..., L, W) source function at each layer
    n_mu : number of Gauss-Legendre angles on [0, 1]
    """
    mu, w = gauss_legendre_mu(n_mu, tau)
    dtau = torch.diff(tau, dim=-2)                       # (..., L-1, W)
    dS = torch.diff(S, dim=-2)
    # bottom boundary: diffusion approximation, dS/dtau from the last interval
    dSdtau_bottom = dS[..., -1, :] / torch.clamp(dtau[..., -1, :], min=1e-30)
    flux = torch.zeros(tau.shape[:-2] + tau.shape[-1:], dtype=tau.dtype, device=tau.device)
    for m, wm in zip(mu, w):
        d = dtau / m
        a, g = _linear_weights(d)
        atten = torch.exp(-tau[..., :-1, :] / m)
        intensity = (atten * (S[..., :-1, :] * a + dS * g)).sum(dim=-2)
        # the layer above the top: constant S over [0, tau_0]
        intensity = intensity + S[..., 0, :] * -torch.expm1(-tau[..., 0, :] / m)
        intensity = intensity + torch.exp(-tau[..., -1, :] / m) * (S[..., -1, :] + m * dSdtau_bottom)
        flux = flux + (2.0 * torch.pi) * wm * m * intensity
    return flux
