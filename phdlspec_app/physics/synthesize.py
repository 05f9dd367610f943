"""synthesize: labels → normalized spectrum (high resolution, and on the LAMOST grid),
and differential spectra d flux / d label by forward-mode automatic differentiation.

One star (or a batch) goes through, in order:

1. ``abundances.number_fractions`` (labels → ε_X) and ``atmosphere`` (Teff, log g,
   [Fe/H], [α/Fe] → T, P, n_e on RHOX);
2. ``eos.solve_eos`` (ionization and molecular equilibrium, n_e, ρ) — once per star;
3. per wavelength chunk: ``continuum_absorption`` on a coarse ln λ grid (resolving power
   ``continuum_resolution``, linearly interpolated; the continuum is smooth there),
   ``line_absorption`` and ``hydrogen_line_absorption`` on the fine grid (resolving
   power ``resolution``), optical depth and emergent flux with and without lines
   (``radiative_transfer``), normalized flux = F / F_cont;
4. ``lsf.degrade``: instrumental LSF (R, default 1800) and ``vbroad``, Doppler shift by
   ``rv``, sampled on the LAMOST grid.

Everything is torch float64 on ``device``; derivatives flow from every label.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .. import labels as L
from . import abundances
from .atmosphere import ModelAtmosphere, load_atmosphere
from .continuum_absorption import continuum_absorption
from .eos import EOSResult, solve_eos
from .line_absorption import line_absorption
from .lsf import degrade, lamost_wavelength, log_lambda_grid
from .radiative_transfer import emergent_flux, optical_depth, planck_lambda

__all__ = ["Synthesizer", "SynthesisResult", "DIFFERENTIAL_LABELS"]

#: Labels whose differential spectra the engine provides: teff, logg, vmic and the 27 abundances.
DIFFERENTIAL_LABELS: tuple[str, ...] = ("teff", "logg", "vmic") + tuple(
    lab.name for lab in L.abundance_labels())

_I = {name: i for i, name in enumerate(L.label_names())}


@dataclass
class SynthesisResult:
    """High-resolution synthesis of one batch of stars.

    wavelength : (W,) vacuum Angstrom, uniform in ln(lambda)
    flux : (..., W) normalized flux F / F_cont
    flux_abs : (..., W) emergent astrophysical flux (erg s^-1 cm^-2 cm^-1)
    continuum : (..., W) continuum-only flux, same units
    """

    wavelength: np.ndarray
    flux: torch.Tensor
    flux_abs: torch.Tensor
    continuum: torch.Tensor


class Synthesizer:
    """The ab initio 1D LTE synthesis.

    Parameters
    ----------
    linelist : LineList or None (default: ``linelist.load_default_linelist`` over the range)
    wl_range : (min, max) vacuum Angstrom synthesized (default 3650-9150, the LAMOST
        range with margins for the LSF)
    resolution : resolving power of the fine synthesis grid (step 1/resolution in ln lambda)
    continuum_resolution : resolving power of the coarse grid the continuum is computed on
    atmosphere : "atmosnet" (default; differentiable in Teff/logg) or "kurucz"
    scale : solar abundance scale
    chunk_angstrom : width of the wavelength chunks processed at once (memory bound)
    hydrogen : include Balmer and Paschen lines
    n_mu : Gauss-Legendre angles for the flux integral
    device : "cpu", "cuda" or "auto"
    """

    def __init__(self, linelist=None, wl_range: tuple[float, float] = (3650.0, 9150.0),
                 resolution: float = 300_000.0, continuum_resolution: float = 5_000.0,
                 atmosphere: str = "atmosnet", scale: str = "asplund2009", chunk_angstrom: float = 100.0,
                 hydrogen: bool = True, n_mu: int = 6, line_threshold: float = 1e-4, device: str = "cpu"):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.wl_range = (float(wl_range[0]), float(wl_range[1]))
        self.resolution = float(resolution)
        self.continuum_resolution = float(continuum_resolution)
        self.atmosphere_source = atmosphere
        self.scale = scale
        self.chunk_angstrom = float(chunk_angstrom)
        self.hydrogen = hydrogen
        self.n_mu = int(n_mu)
        self.line_threshold = float(line_threshold)
        if linelist is None:
            from .linelist import load_default_linelist

            linelist = load_default_linelist(self.wl_range[0] - 50, self.wl_range[1] + 50)
        self.linelist = linelist
        self.wavelength = log_lambda_grid(self.wl_range[0], self.wl_range[1], self.resolution)

    # ---- per-star state ------------------------------------------------------------------
    def _labels(self, labels) -> torch.Tensor:
        lab = torch.as_tensor(labels, dtype=torch.float64, device=self.device)
        if lab.shape[-1] != len(L.LABELS):
            raise ValueError(f"labels must have {len(L.LABELS)} entries in schema order, got shape {tuple(lab.shape)}")
        return lab

    def atmosphere(self, labels) -> ModelAtmosphere:
        """Model atmosphere (…, L) for labels (…, 32)."""
        lab = self._labels(labels)
        return load_atmosphere(lab[..., _I["teff"]], lab[..., _I["logg"]], lab[..., _I["fe_h"]],
                               abundances.alpha_fe(lab), source=self.atmosphere_source)

    def state(self, labels) -> tuple[ModelAtmosphere, EOSResult, torch.Tensor]:
        """(atmosphere, equation of state, vmic in km/s) for labels (…, 32)."""
        lab = self._labels(labels)
        atm = self.atmosphere(lab)
        eps = abundances.number_fractions(lab, self.scale)
        eos = solve_eos(atm, eps)
        return atm, eos, lab[..., _I["vmic"]]

    # ---- synthesis -----------------------------------------------------------------------
    def _chunks(self, wl: np.ndarray):
        """(start, stop) index pairs splitting ``wl`` into near-equal chunks of about
        ``chunk_angstrom``, each with at least two points."""
        n = max(1, int(np.ceil((wl[-1] - wl[0]) / self.chunk_angstrom)))
        n = min(n, max(1, wl.size // 2))
        bounds = np.linspace(0, wl.size, n + 1).astype(int)
        return list(zip(bounds[:-1], bounds[1:]))

    def _chunk_flux(self, wl_chunk: np.ndarray, atm, eos, vmic):
        dev = self.device
        wl_t = torch.as_tensor(wl_chunk, dtype=torch.float64, device=dev)
        # continuum on a coarse ln-lambda grid spanning the chunk, interpolated linearly
        n_c = max(2, int(np.ceil(np.log(wl_chunk[-1] / wl_chunk[0]) * self.continuum_resolution)) + 1)
        wl_c = torch.as_tensor(np.geomspace(wl_chunk[0], wl_chunk[-1], n_c), dtype=torch.float64, device=dev)
        alpha_c_coarse = continuum_absorption(wl_c, atm, eos)
        alpha_c = _interp_last(alpha_c_coarse, wl_c, wl_t)
        lines = self.linelist.select(wl_chunk[0] - 30.0, wl_chunk[-1] + 30.0)
        alpha_l = line_absorption(lines, wl_t, atm, eos, vmic, alpha_cont=alpha_c, threshold=self.line_threshold)
        if self.hydrogen:
            from .hydrogen_lines import hydrogen_line_absorption

            alpha_l = alpha_l + hydrogen_line_absorption(wl_t, atm, eos)
        S = planck_lambda(wl_t, atm.T)
        tau_c = optical_depth(alpha_c, eos.rho, atm.rhox)
        tau = optical_depth(alpha_c + alpha_l, eos.rho, atm.rhox)
        return emergent_flux(tau, S, self.n_mu), emergent_flux(tau_c, S, self.n_mu)

    def highres(self, labels, wl_range: tuple[float, float] | None = None, progress: bool = False) -> SynthesisResult:
        """Normalized spectra on the fine grid, for labels (…, 32)."""
        atm, eos, vmic = self.state(labels)
        wl = self.wavelength
        if wl_range is not None:
            wl = wl[(wl >= wl_range[0]) & (wl <= wl_range[1])]
            if wl.size < 2:
                raise ValueError(f"wl_range {wl_range} is outside the synthesizer's range {self.wl_range}")
        chunks = list(self._chunks(wl))
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="synthesis", unit="chunk")
        F, C = [], []
        for a, b in chunks:
            f, c = self._chunk_flux(wl[a:b], atm, eos, vmic)
            F.append(f)
            C.append(c)
        F = torch.cat(F, dim=-1)
        C = torch.cat(C, dim=-1)
        return SynthesisResult(wavelength=wl, flux=F / C, flux_abs=F, continuum=C)

    def spectrum(self, labels, resolution: float = 1800.0, wl_out: np.ndarray | None = None,
                 progress: bool = False) -> torch.Tensor:
        """Normalized spectra (…, W_out) at resolving power ``resolution`` on ``wl_out``
        (default: the LAMOST grid), with the labels' ``vbroad`` and ``rv`` applied."""
        lab = self._labels(labels)
        out = lamost_wavelength() if wl_out is None else np.asarray(wl_out, float)
        hr = self.highres(lab, progress=progress)
        return degrade(hr.flux, hr.wavelength, resolution, lab[..., _I["vbroad"]], lab[..., _I["rv"]], out)

    def differential_spectra(self, labels, wrt: Sequence[str] = DIFFERENTIAL_LABELS, resolution: float = 1800.0,
                             wl_out: np.ndarray | None = None, progress: bool = False):
        """Spectrum (W_out,) and its derivatives d flux / d label (len(wrt), W_out) for one
        star, by forward-mode automatic differentiation (one dual-number pass per label).

        Units of the derivatives: per K (teff), per dex (logg, abundances), per km/s (vmic).
        Abundance derivatives are with respect to the schema's labels ([Fe/H] and [X/Fe]).
        """
        import torch.autograd.forward_ad as fwAD

        lab = self._labels(labels)
        if lab.dim() != 1:
            raise ValueError("differential_spectra takes one star (a label vector of length 32)")
        names = [L.canonical_name(n) for n in wrt]
        rows = []
        primal = None
        it = names
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(names, desc="differential spectra", unit="label")
        for name in it:
            tangent = torch.zeros_like(lab)
            tangent[_I[name]] = 1.0
            with fwAD.dual_level():
                dual = fwAD.make_dual(lab, tangent)
                out = self.spectrum(dual, resolution, wl_out)
                p, t = fwAD.unpack_dual(out)
            primal = p.detach() if primal is None else primal
            rows.append(t.detach() if t is not None else torch.zeros_like(p))
        return primal, torch.stack(rows)


def _interp_last(values: torch.Tensor, x: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """Linear interpolation along the last axis of ``values`` from x (n,) to xq (m,)."""
    idx = torch.searchsorted(x, xq).clamp(1, x.numel() - 1)
    x0, x1 = x[idx - 1], x[idx]
    t = ((xq - x0) / (x1 - x0)).clamp(0.0, 1.0)
    return values[..., idx - 1] * (1 - t) + values[..., idx] * t
