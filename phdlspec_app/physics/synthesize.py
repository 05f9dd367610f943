"""synthesize: labels → normalized spectrum (high resolution, and on the LAMOST grid),
and differential spectra d flux / d label by forward-mode automatic differentiation.

One star (or a batch) goes through, in order:

1. ``abundances.number_fractions`` (labels → ε_X) and ``atmosphere`` (Teff, log g,
   [Fe/H], [α/Fe] → T, P, n_e on RHOX);
2. ``eos.solve_eos`` (ionization and molecular equilibrium, n_e, ρ) — once per star;
3. ``continuum_absorption`` once per star on a coarse ln λ grid (resolving power
   ``continuum_resolution``) spanning the synthesized range; per wavelength chunk it is
   interpolated linearly (the continuum is smooth there),
   ``line_absorption`` and ``hydrogen_line_absorption`` on the fine grid (resolving
   power ``resolution``; the high hydrogen series on a sub-grid, see ``hydrogen_step``), optical depth and emergent flux with and without lines
   (``radiative_transfer``), normalized flux = F / F_cont;
4. ``lsf.degrade``: instrumental LSF (R, default 1800) and ``vbroad``, Doppler shift by
   ``rv``, sampled on the LAMOST grid.

Everything is torch float64 on ``device``; derivatives flow from every label, in reverse
mode (autograd) and forward mode (``torch.autograd.forward_ad``). The radiative transfer
is fused by ``torch.compile`` when the inputs are plain tensors (as the Voigt kernels;
``PHDLSPEC_COMPILE=0`` keeps everything eager). ``differential_spectra`` computes the
derivatives w.r.t. all 30 differential labels in one pass (see its docstring and
docs/physics.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .. import labels as L
from . import abundances
from .atmosphere import ModelAtmosphere, load_atmosphere
from .autodiff import call_compiled, want_compile
from .continuum_absorption import continuum_absorption, continuum_tangents
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
        #: the opacity of the hydrogen lines whose upper level is above
        #: ``hydrogen_exact_upper`` (H ε, H8, … and Paschen 7 upward: most of the transitions,
        #: and most of the work, in the crowded series) is evaluated on every
        #: ``hydrogen_step``-th point of the fine grid and interpolated linearly in λ
        #: (values and derivatives alike); Hα–Hδ, whose saturated cores are the narrowest
        #: features that matter, stay exact. The thermal Doppler core of H (σ ≈ λ/47 000 at
        #: 5000 K) spans ≥ 6 fine steps at R = 300 000, so the sub-grid keeps a spacing of
        #: at most 3 steps of R = 300 000 whatever ``resolution`` (tests/test_synthesize.py
        #: bounds the change of the normalized flux at R = 1800).
        self.hydrogen_step = max(1, int(3 * self.resolution / 300_000 + 1e-9))
        self.hydrogen_exact_upper = 6
        #: precision of the Faddeeva function in the forward line-profile kernel (see
        #: ``line_absorption``): float32 halves the kernel time; the normalized flux moves
        #: by < 1e-6 (BENCHMARKS.md). Derivatives are float64 either way.
        self.profile_dtype = "float32"
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

    def _coarse_grid(self, wl: np.ndarray) -> np.ndarray:
        """The ln-λ grid (resolving power ``continuum_resolution``) spanning ``wl`` on which
        the continuum is computed (once per star) and interpolated linearly."""
        n_c = max(2, int(np.ceil(np.log(wl[-1] / wl[0]) * self.continuum_resolution)) + 1)
        return np.geomspace(wl[0], wl[-1], n_c)

    def _prepared(self, mol_names) -> object:
        """The line list prepared once (static per-line data), per set of molecules."""
        from .line_absorption import prepare_lines

        key = tuple(mol_names)
        cache = self.__dict__.setdefault("_prep_cache", {})
        if key not in cache:
            cache[key] = prepare_lines(self.linelist, key)
        return cache[key]

    def _lines(self, wl_chunk, atm, eos, vmic, alpha_c, n_layers, return_plan=False):
        from .line_absorption import molecule_names, prepared_window

        prep = prepared_window(self._prepared(molecule_names(eos)), wl_chunk[0] - 30.0,
                               wl_chunk[-1] + 30.0)
        return line_absorption(None, wl_chunk, atm, eos, vmic, alpha_cont=alpha_c,
                               threshold=self.line_threshold, prepared=prep,
                               return_plan=return_plan, profile_dtype=self.profile_dtype,
                               n_layers=n_layers)

    def _chunk_flux(self, wl_chunk: np.ndarray, atm, eos, vmic, wl_c, alpha_cc, F_cc, h_cache=None):
        """(F, F_c) on one chunk: F by the radiative transfer on the fine grid, the
        continuum flux F_c interpolated from the coarse grid (see :func:`_continuum_flux`)."""
        dev = self.device
        wl_t = torch.as_tensor(wl_chunk, dtype=torch.float64, device=dev)
        idx, tw = _interp_weights(wl_c, wl_t)
        alpha_c = _interp_cols(alpha_cc, idx, tw)
        n = _transfer_depth(alpha_c, eos.rho, atm.rhox)
        alpha_l = self._lines(wl_chunk, atm, eos, vmic, alpha_c, n)
        if self.hydrogen:
            from .hydrogen_lines import hydrogen_line_absorption

            alpha_h = self._hydrogen_split(hydrogen_line_absorption, wl_t, atm, eos, vmic_kms=vmic, cache=h_cache)
            if alpha_h is not None:
                alpha_l = alpha_l + alpha_h[..., :n, :]
        S = planck_lambda(wl_t, atm.T[..., :n])
        return (_flux(alpha_c[..., :n, :] + alpha_l, S, eos.rho[..., :n], atm.rhox[..., :n], self.n_mu),
                _interp_cols(F_cc, idx, tw))

    def _hydrogen_split(self, fn, wl_t, *args, **kw):
        """``fn`` (``hydrogen_line_absorption`` or :func:`_hydrogen_partials`, λ on the last
        axis of every output) for the lines up to ``hydrogen_exact_upper`` on ``wl_t``, plus
        the higher ones on the sub-grid of ``hydrogen_step``, interpolated to ``wl_t``; None
        where no hydrogen line reaches ``wl_t`` (about half of the chunks)."""
        from .hydrogen_lines import has_hydrogen_lines

        n_sub = self.hydrogen_exact_upper + 1
        lo, hi = float(wl_t[0]), float(wl_t[-1])
        out = None
        if has_hydrogen_lines(lo, hi, n_upper_max=n_sub - 1):
            out = fn(wl_t, *args, n_upper_max=n_sub - 1, **kw)
        if has_hydrogen_lines(lo, hi, n_upper_min=n_sub):
            sub, idx, tw = _subgrid(wl_t, self.hydrogen_step)
            coarse = fn(wl_t[sub], *args, n_upper_min=n_sub, **kw)
            if torch.is_tensor(coarse):
                coarse = _interp_cols(coarse, idx, tw)
                out = coarse if out is None else out + coarse
            else:
                coarse = tuple(_interp_cols(c, idx, tw) for c in coarse)
                out = coarse if out is None else tuple(e + c for e, c in zip(out, coarse))
        return out

    def highres(self, labels, wl_range: tuple[float, float] | None = None, progress: bool = False) -> SynthesisResult:
        """Normalized spectra on the fine grid, for labels (…, 32)."""
        atm, eos, vmic = self.state(labels)
        wl = self._grid(wl_range)
        wl_c = torch.as_tensor(self._coarse_grid(wl), dtype=torch.float64, device=self.device)
        alpha_cc = continuum_absorption(wl_c, atm, eos)
        F_cc = _continuum_flux(wl_c, alpha_cc, atm.T, eos.rho, atm.rhox, self.n_mu)
        chunks = list(self._chunks(wl))
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="synthesis", unit="chunk")
        F, C = [], []
        h_cache = {}        # per-layer hydrogen quantities of this star, shared by the chunks
        for a, b in chunks:
            f, c = self._chunk_flux(wl[a:b], atm, eos, vmic, wl_c, alpha_cc, F_cc, h_cache)
            F.append(f)
            C.append(c)
        F = torch.cat(F, dim=-1)
        C = torch.cat(C, dim=-1)
        return SynthesisResult(wavelength=wl, flux=F / C, flux_abs=F, continuum=C)

    def _grid(self, wl_range):
        wl = self.wavelength
        if wl_range is not None:
            wl = wl[(wl >= wl_range[0]) & (wl <= wl_range[1])]
            if wl.size < 2:
                raise ValueError(f"wl_range {wl_range} is outside the synthesizer's range {self.wl_range}")
        return wl

    def spectrum(self, labels, resolution: float = 1800.0, wl_out: np.ndarray | None = None,
                 progress: bool = False) -> torch.Tensor:
        """Normalized spectra (…, W_out) at resolving power ``resolution`` on ``wl_out``
        (default: the LAMOST grid), with the labels' ``vbroad`` and ``rv`` applied."""
        lab = self._labels(labels)
        out = lamost_wavelength() if wl_out is None else np.asarray(wl_out, float)
        hr = self.highres(lab, wl_range=self._needed_range(out), progress=progress)
        return degrade(hr.flux, hr.wavelength, resolution, lab[..., _I["vbroad"]], lab[..., _I["rv"]], out)

    def _needed_range(self, wl_out: np.ndarray):
        """The part of the fine grid that reaches ``wl_out`` through the LSF (None: all).
        The margin (25 Å + 0.3 %) covers 5σ of an R = 1800 LSF, vbroad up to 300 km/s and
        rv up to ±600 km/s."""
        lo = float(np.min(wl_out)) * (1 - 3e-3) - 25.0
        hi = float(np.max(wl_out)) * (1 + 3e-3) + 25.0
        if lo <= self.wavelength[0] and hi >= self.wavelength[-1]:
            return None
        return (max(lo, self.wavelength[0]), min(hi, self.wavelength[-1]))

    def differential_spectra(self, labels, wrt: Sequence[str] = DIFFERENTIAL_LABELS, resolution: float = 1800.0,
                             wl_out: np.ndarray | None = None, progress: bool = False, method: str = "auto"):
        """Spectrum (W_out,) and its derivatives d flux / d label (len(wrt), W_out) for one
        star, by forward-mode automatic differentiation.

        Units of the derivatives: per K (teff), per dex (logg, abundances), per km/s (vmic).
        Abundance derivatives are with respect to the schema's labels ([Fe/H] and [X/Fe]).

        method : "multi" (default for the labels of :data:`DIFFERENTIAL_LABELS`): all
            tangents in one pass (see :meth:`_differential_multi`); "dual": one
            ``torch.autograd.forward_ad`` dual-number pass per label through
            :meth:`spectrum` (the reference; slow); "auto": "multi" when every label in
            ``wrt`` is a differential label, else "dual".
        """
        lab = self._labels(labels)
        if lab.dim() != 1:
            raise ValueError("differential_spectra takes one star (a label vector of length 32)")
        names = [L.canonical_name(n) for n in wrt]
        if method == "auto":
            method = "multi" if set(names) <= set(DIFFERENTIAL_LABELS) else "dual"
        if method == "multi":
            return self._differential_multi(lab, names, resolution, wl_out, progress)
        if method != "dual":
            raise ValueError(f"unknown method {method!r}")
        import torch.autograd.forward_ad as fwAD

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

    # ---- all tangents at once ----------------------------------------------------------------
    def _differential_multi(self, lab, names, resolution, wl_out, progress):
        """Forward-mode derivatives for K labels in one pass over the wavelengths.

        1. Star state: the labels are copied K times with one-hot tangents and pushed
           through atmosphere, abundances, EOS, the layer quantities of the line opacity and
           the coarse continuum as dual numbers (cheap: arrays of layers); row k's tangent
           is d/d label_k.
        2. Per chunk the primal opacities are computed once, and the normalized flux
           R(λ) = F/F_c is differentiated by one reverse pass w.r.t. the per-(layer, λ)
           inputs of the radiative transfer (α_total, α_c, S, ρ, RHOX): R(λ) only depends
           on column λ, so these gradients are exact per-wavelength sensitivities G.
        3. dR_k(λ) = Σ_layers G · (tangent k of the inputs): the line opacity's tangents are
           contracted with G inside the Voigt kernels (:func:`contract_line_tangents`), the
           hydrogen lines' through their partials w.r.t. the six layer quantities they
           depend on, the continuum's from its interpolated dual tangents.
        4. The LSF and resampling are linear: applied to the K tangent rows.
        The result equals the dual-number derivative of :meth:`spectrum` (up to round-off).
        """
        import torch.autograd.forward_ad as fwAD

        from .line_absorption import _layers, contract_line_tangents, molecule_names

        dev = self.device
        K = len(names)
        out = lamost_wavelength() if wl_out is None else np.asarray(wl_out, float)
        wl = self._grid(self._needed_range(out))
        wl_c_np = self._coarse_grid(wl)
        wl_c = torch.as_tensor(wl_c_np, dtype=torch.float64, device=dev)
        E = torch.zeros(K, lab.numel(), dtype=torch.float64, device=dev)
        for k, name in enumerate(names):
            E[k, _I[name]] = 1.0
        with fwAD.dual_level():
            lab_d = fwAD.make_dual(lab.expand(K, -1).clone(), E)
            atm_d = self.atmosphere(lab_d)
            eos_d = solve_eos(atm_d, abundances.number_fractions(lab_d, self.scale))
            vmic_d = lab_d[:, _I["vmic"]]
            mol_names = molecule_names(eos_d)
            lay_d, _, _ = _layers(atm_d, eos_d, vmic_d, mol_names)
            Lz = atm_d.T.shape[-1]

            def split(x):                       # dual (K, ...) → primal (...), tangent (K, ...)
                p, t = fwAD.unpack_dual(x)
                t = torch.zeros_like(p) if t is None else t
                return p[0].detach(), t.detach()

            def split_lay(x):                   # (1, K·L) or (K·L, C) → (1, L)/(L, C), (K, …)
                p, t = fwAD.unpack_dual(x)
                t = torch.zeros_like(p) if t is None else t
                if x.shape[0] == 1:
                    return p.reshape(K, 1, Lz)[0].detach(), t.reshape(K, 1, Lz).detach()
                return p.reshape(K, Lz, -1)[0].detach(), t.reshape(K, Lz, -1).detach()

            lay, lay_t = {}, {}
            for key, val in lay_d.items():
                lay[key], lay_t[key] = split_lay(val)
            T, dT = split(atm_d.T)
            ne_a, dne_a = split(atm_d.ne)
            rho, drho = split(eos_d.rho)
            rhox, drhox = split(atm_d.rhox)
            xi, dxi = split(vmic_d)
            hvars = [split(v) for v in (atm_d.T, atm_d.ne, eos_d.atoms[..., 1, 0], eos_d.atoms[..., 2, 0],
                                        eos_d.U[..., 1, 0])]
            # the continuum's inputs: primal (one star) and K tangents
            c_in = [split(v) for v in (atm_d.T, eos_d.ne, eos_d.atoms, eos_d.U,
                                       eos_d.molecules.get("H2", torch.zeros_like(atm_d.T)),
                                       eos_d.n_Hminus)]
            atm = ModelAtmosphere(rhox=rhox, T=T, P=split(atm_d.P)[0], ne=ne_a)
            eos = _detach_eos(eos_d)
        alpha_cc, dalpha_cc = _continuum_tangents(wl_c, [c[0] for c in c_in], [c[1] for c in c_in])
        F_cc, dF_cc = _continuum_flux_tangents(wl_c, alpha_cc, dalpha_cc, T, dT, rho, drho, rhox, drhox, self.n_mu)
        # hydrogen-line inputs: T, n_e, n(H I), n(He I), U(H I), ξ — primal (L,), tangents (K, L)
        hp = [h[0] for h in hvars] + [xi]
        ht = torch.stack([h[1] for h in hvars] + [dxi[:, None].expand(K, Lz)], dim=1)   # (K, 6, L)
        use_compile = want_compile("auto")
        dacLK = dalpha_cc.permute(2, 1, 0).contiguous()                      # (Wc, L, K)
        h_cache = {}        # per-layer hydrogen quantities and partials, shared by the chunks
        chunks = list(self._chunks(wl))
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="differential spectra", unit="chunk")

        def one(ab):
            """Normalized flux R (W,) and its tangents dR (K, W) on one wavelength chunk."""
            a, b = ab
            wl_chunk = wl[a:b]
            wl_t = torch.as_tensor(wl_chunk, dtype=torch.float64, device=dev)
            idx, tw = _interp_weights(wl_c, wl_t)
            alpha_c = _interp_cols(alpha_cc, idx, tw)
            n = _transfer_depth(alpha_c, rho, rhox)     # layers [0, n) reach the surface
            with torch.no_grad():
                alpha_l, plan = self._lines(wl_chunk, atm, eos, xi, alpha_c, n, return_plan=True)
            h = self._hydrogen_split(_hydrogen_partials, wl_t, hp, cache=h_cache) if self.hydrogen else None
            alpha_h, P_h = (None, None) if h is None else (h[0][:n], h[1][:, :n])   # (n, W), (6, n, W)
            S = planck_lambda(wl_t, T[:n])
            # R = F/F_c with F_c interpolated from the coarse grid: the per-wavelength
            # sensitivities of F/F_c at fixed F_c by one reverse pass, then − R dF_c/F_c
            inv_c = 1.0 / _interp_cols(F_cc, idx, tw)
            leaves = [(alpha_c[:n] + alpha_l + (alpha_h if alpha_h is not None else 0.0)), S,
                      rho[:n, None].expand_as(S).clone(), rhox[:n, None].expand_as(S).clone()]
            leaves = [x.detach().requires_grad_(True) for x in leaves]
            with torch.enable_grad():
                R = _scaled_flux(*leaves, inv_c, self.n_mu)
                G_tot, G_S, G_rho, G_rhox = torch.autograd.grad(R.sum(), leaves)
            R = R.detach()
            # continuum opacity tangents: Σ_l G (interpolated coarse tangents), as a batched
            # (K, L) @ (L, 1) per coarse interval
            dR = _contract_interpolated(dacLK[:, :n], idx, tw, G_tot.T).T.contiguous()
            dR -= (R * inv_c) * _interp_cols(dF_cc, idx, tw)
            dBdT = _planck_dT(wl_t, T[:n])
            dR += dT[:, :n] @ (G_S * dBdT) + drho[:, :n] @ G_rho + drhox[:, :n] @ G_rhox
            if plan is not None:
                dR += contract_line_tangents(plan, lay, lay_t, G_tot.T.contiguous(), wl_t, use_compile,
                                             layers=_significant_layers(G_tot, alpha_l)).T
            if P_h is not None:
                Y = (G_tot[None] * P_h).reshape(6 * n, -1)                   # (6n, W)
                dR += ht[:, :, :n].reshape(K, 6 * n) @ Y
            return R, dR

        R_all, dR_all = zip(*(one(ab) for ab in chunks))
        R = torch.cat(R_all, -1)
        dR = torch.cat(dR_all, -1)
        # R and dR are plain tensors (the tangents are explicit), so degrade takes its
        # sampled path; one broadening and shift for all K+1 rows shares its gather.
        both = degrade(torch.cat([R[None], dR], 0), wl, resolution, float(lab[_I["vbroad"]]),
                       float(lab[_I["rv"]]), out)
        return both[0], both[1:]


#: a layer's line-opacity tangents are contracted only where |∂R/∂α| · α_lines reaches
#: this (the change of the normalized flux for d ln α_lines = 1 in that layer) at some
#: wavelength of the chunk: d ln α_lines per unit label is O(1–10) (abundances: ln 10;
#: T: β E_low / T), so the layers left out change a derivative by < 1e-9 per unit label
#: and layer. The opacity is that of the lines being contracted, not the total: the
#: continuum keeps the uppermost layers above the bound everywhere, the lines only where
#: strong lines are.
LAYER_TOLERANCE = 1e-10


#: layers below the depth where the continuum's optical depth reaches this at every
#: wavelength of a chunk (for every star) are left out of the line opacity and the
#: radiative transfer: the light they emit reaches the surface attenuated by e^(−50) or more
#: (the lines only add opacity). The line selection still looks at every layer.
TAU_DEEP = 50.0


def _transfer_depth(alpha_c: torch.Tensor, rho: torch.Tensor, rhox: torch.Tensor,
                    tau_max: float = TAU_DEEP) -> int:
    """Number of layers from the top that the radiative transfer needs: up to and including
    the first layer where τ_c ≥ ``tau_max`` at every wavelength (α_c (…, L, W), ρ and RHOX
    (…, L); all of them if τ_c never gets there)."""
    with torch.no_grad():
        tau = optical_depth(_primal(alpha_c), _primal(rho), _primal(rhox))
        Lz = tau.shape[-2]
        tmin = tau.movedim(-2, 0).reshape(Lz, -1).amin(dim=1)
        deep = torch.nonzero(tmin >= tau_max).flatten()
    return Lz if deep.numel() == 0 else int(deep[0]) + 1


def _primal(x: torch.Tensor) -> torch.Tensor:
    """x without a forward-mode tangent and detached (for decisions such as a layer cut)."""
    import torch.autograd.forward_ad as fwAD

    return fwAD.unpack_dual(x).primal.detach()


def _significant_layers(G: torch.Tensor, alpha: torch.Tensor, tol: float = LAYER_TOLERANCE):
    """(first, stop): the hull of the layers where max over λ of |G · α| ≥ ``tol``
    (G, α: (L, W)); in practice the deepest layers (τ ≫ 1) drop out, and the uppermost
    where no strong line is."""
    w = (G * alpha).abs().amax(dim=1)
    keep = torch.nonzero(w >= tol).flatten()
    if keep.numel() == 0:
        return (0, 1)
    return int(keep[0]), int(keep[-1]) + 1


def _continuum_tangents(wl_c, prim, tans, block: int = 2400):
    """Continuum α_c (L, Wc) and its K tangents (K, L, Wc) on the coarse grid ``wl_c``
    (:func:`~.continuum_absorption.continuum_tangents`), in blocks of the coarse grid
    (memory bound: ≈ 40 MB of partials per block)."""
    out = [continuum_tangents(wl_c[s0:s0 + block], prim, tans) for s0 in range(0, wl_c.numel(), block)]
    return torch.cat([o[0] for o in out], -1), torch.cat([o[1] for o in out], -1)


def _detach_eos(eos_d):
    """Primal of star 0 of a K-batched dual EOS result (plain tensors)."""
    def p(x):
        return _primal(x)[0]

    return EOSResult(ne=p(eos_d.ne), atoms=p(eos_d.atoms), U=p(eos_d.U),
                     molecules={k: p(v) for k, v in eos_d.molecules.items()},
                     mol_U={k: p(v) for k, v in eos_d.mol_U.items()}, n_Hminus=p(eos_d.n_Hminus),
                     n_H=p(eos_d.n_H), rho=p(eos_d.rho), n_heavy=p(eos_d.n_heavy),
                     max_residual=eos_d.max_residual[0], n_iter=eos_d.n_iter)


def _hydrogen_partials(wl_t, hp, **kw):
    """α_H (L, W) and its partials (6, L, W) w.r.t. each layer's T, n_e, n(H I), n(He I),
    U(H I), ξ (km/s) — see :func:`hydrogen_lines.hydrogen_line_partials` (``kw``: its
    transition range)."""
    from .hydrogen_lines import hydrogen_line_partials

    return hydrogen_line_partials(wl_t, *hp[:5], hp[5], **kw)


def _planck_dT(wavelength_A: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """∂B_λ/∂T (…, L, W)."""
    from .constants import c, h, k_B

    lam = wavelength_A * 1e-8
    x = (h * c / k_B) / (lam * T[..., None])
    ex = torch.exp(-x)
    B = (2.0 * h * c**2) / lam**5 * ex / (-torch.expm1(-x))
    return B * x / T[..., None] / (-torch.expm1(-x))


def _tau_columns(alpha, rho_f, rhox_f):
    """optical_depth with ρ and RHOX given per (layer, λ) (so that their gradients are
    per wavelength); same arithmetic as :func:`radiative_transfer.optical_depth`."""
    kappa = alpha / rho_f
    drhox = torch.diff(rhox_f, dim=-2)
    steps = 0.5 * (kappa[..., 1:, :] + kappa[..., :-1, :]) * drhox
    top = kappa[..., :1, :] * rhox_f[..., :1, :]
    return torch.cumsum(torch.cat([top, steps], dim=-2), dim=-2)


def _scaled_flux_eager(alpha_tot, S, rho_f, rhox_f, scale, n_mu: int):
    return emergent_flux(_tau_columns(alpha_tot, rho_f, rhox_f), S, n_mu) * scale


def _flux_eager(alpha, S, rho, rhox, n_mu: int):
    return emergent_flux(optical_depth(alpha, rho, rhox), S, n_mu)


def _flux(alpha, S, rho, rhox, n_mu: int):
    """Emergent flux F (…, W) for opacity α (…, L, W) (compiled when the inputs are plain tensors)."""
    return call_compiled(_flux_eager, alpha, S, rho, rhox, n_mu)


def _scaled_flux(alpha_tot, S, rho_f, rhox_f, scale, n_mu: int):
    """F · scale (W,) with ρ and RHOX given per (layer, λ) (see :func:`_tau_columns`)."""
    return call_compiled(_scaled_flux_eager, alpha_tot, S, rho_f, rhox_f, scale, n_mu)


def _continuum_flux(wl_c, alpha_cc, T, rho, rhox, n_mu: int) -> torch.Tensor:
    """Continuum flux F_c (…, Wc) on the coarse grid, from α_c (…, L, Wc) computed there.

    The normalized spectrum divides by F_c interpolated linearly from this grid (resolving
    power ``continuum_resolution``) rather than by a second radiative transfer on the fine
    grid: α_c is itself interpolated linearly from the same grid, F_c is as smooth, and the
    transfer of the continuum was half of the fine-grid transfer's cost. The normalized
    flux at R = 1800 moves by ≤ 7e-5 at the Mg I 3757 Å edge (α_c has a step there that the
    coarse grid resolves only to its own spacing either way) and by ~1e-6 rms elsewhere
    (BENCHMARKS.md, session 13)."""
    return _flux(alpha_cc, planck_lambda(wl_c, T), rho, rhox, n_mu)


def _continuum_flux_tangents(wl_c, alpha_cc, dalpha_cc, T, dT, rho, drho, rhox, drhox, n_mu: int):
    """:func:`_continuum_flux` (Wc,) of one star and its K tangents (K, Wc), from α_c (L, Wc)
    and its tangents (K, L, Wc) and the tangents (K, L) of T, ρ and RHOX: one reverse pass
    gives ∂F_c/∂(α_c, S, ρ, RHOX) per coarse wavelength and layer, contracted with them."""
    S = planck_lambda(wl_c, T)
    leaves = [alpha_cc, S, rho[:, None].expand_as(S).clone(), rhox[:, None].expand_as(S).clone()]
    leaves = [x.detach().requires_grad_(True) for x in leaves]
    with torch.enable_grad():
        F = _scaled_flux(*leaves, torch.ones_like(wl_c), n_mu)
        G_a, G_S, G_rho, G_rhox = torch.autograd.grad(F.sum(), leaves)
    dF = (torch.einsum("lc,klc->kc", G_a, dalpha_cc) + dT @ (G_S * _planck_dT(wl_c, T))
          + drho @ G_rho + drhox @ G_rhox)
    return F.detach(), dF


def _contract_interpolated(coarse: torch.Tensor, idx: torch.Tensor, tw: torch.Tensor,
                           G: torch.Tensor) -> torch.Tensor:
    """Σ_l G[w, l] · (coarse tangents interpolated to w) → (W, K), without forming the
    interpolated (W, L, K) array: ``coarse`` (Wc, L, K), (idx, tw) from
    :func:`_interp_weights` (idx non-decreasing), G (W, L). The fine points are grouped by
    coarse interval (padded to the longest) and each group takes two batched matrix
    products with the tangents at its interval's two ends."""
    W, Lz = G.shape
    i0 = int(idx[0])
    seg = idx - i0
    n_int = int(seg[-1]) + 1
    counts = torch.bincount(seg, minlength=n_int)
    pos = torch.arange(W, device=G.device) - (torch.cumsum(counts, 0) - counts)[seg]
    P = int(counts.max())
    Z0 = G.new_zeros(n_int, P, Lz)
    Z1 = G.new_zeros(n_int, P, Lz)
    Z0[seg, pos] = G * (1 - tw)[:, None]
    Z1[seg, pos] = G * tw[:, None]
    out = torch.bmm(Z0, coarse[i0 - 1:i0 - 1 + n_int]) + torch.bmm(Z1, coarse[i0:i0 + n_int])
    return out[seg, pos]


def _subgrid(wl_t: torch.Tensor, step: int):
    """Every ``step``-th point of ``wl_t`` and its last one (indices), with the weights
    (:func:`_interp_weights`) that interpolate linearly from them back to all of ``wl_t``."""
    n = wl_t.numel()
    if n < 2:  # _chunks gives every chunk two points or more
        raise ValueError("_subgrid needs at least two wavelengths")
    sub = torch.arange(0, n, max(1, int(step)), device=wl_t.device)
    if int(sub[-1]) != n - 1:
        sub = torch.cat([sub, torch.tensor([n - 1], device=wl_t.device)])
    idx, tw = _interp_weights(wl_t[sub], wl_t)
    return sub, idx, tw


def _interp_cols(values: torch.Tensor, idx: torch.Tensor, tw: torch.Tensor) -> torch.Tensor:
    """Linear interpolation along the last axis with :func:`_interp_weights`' (idx, tw)."""
    return values[..., idx - 1] * (1 - tw) + values[..., idx] * tw


def _interp_weights(x: torch.Tensor, xq: torch.Tensor):
    idx = torch.searchsorted(x, xq).clamp(1, x.numel() - 1)
    x0, x1 = x[idx - 1], x[idx]
    return idx, ((xq - x0) / (x1 - x0)).clamp(0.0, 1.0)


def _interp_last(values: torch.Tensor, x: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """Linear interpolation along the last axis of ``values`` from x (n,) to xq (m,)."""
    return _interp_cols(values, *_interp_weights(x, xq))
