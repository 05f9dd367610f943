"""The :class:`FitResult` of one star, and its one-row table form."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import labels as L

__all__ = ["FitResult", "error_row"]


@dataclass
class FitResult:
    """The labels of one star with their uncertainties and diagnostics.

    labels : {name: value} for all 32 labels (fixed ones at their fixed value); units K, dex, km/s.
        CMA-ES: the optimum, except [X/Fe], which are the medians of their posterior along
        the profile line inside the search box (``posterior.line_posterior``) — the optimum
        itself for a well-measured element away from the box's edges. MCMC: the chain's medians
    err_lo, err_hi : {name: 1σ lower/upper error}: CMA-ES, the Cramér–Rao σ (for [X/Fe] the
        16/84 percentiles of the line posterior, never narrower than that σ cut by the box);
        MCMC, the chain's 16/84 percentiles; with the emulator's own error added in
        quadrature when the model measures it (``info["emulator_floor"]``); 0 for fixed labels
    method : "cmaes", "mcmc" or "both" (values then are MCMC medians)
    chi2, chi2_reduced, n_pixels, n_free : fit quality (χ² over good pixels, dof = n − free)
    snr : median per-pixel S/N of the continuum-normalized observation
    flags : quality flags (strings; see ``fit.FLAGS``)
    elements : {abundance label: ElementDiagnostic}
    fixed : labels held fixed; priors : {name: (mean, sigma)}
    wavelength, observed, model, ivar, good : the fit on the model grid (continuum-normalized)
    mcmc : {'tau', 'acceptance', 'steps', 'nwalkers', 'converged'} when MCMC ran
    samples : (n, n_free) posterior draws (MCMC) for corner plots; chain if requested
    covariance : (n_free, n_free) covariance of the free labels in ``free_names`` order
        (units as the labels): the Cramér–Rao/Laplace inverse Fisher matrix for CMA-ES, the
        chain's sample covariance when MCMC ran, each plus the emulator floor when there is
        one; None for results made elsewhere
    meta : identifiers of the input (file, obsid, designation, ...); info : preprocessing details
    """

    labels: dict
    err_lo: dict
    err_hi: dict
    method: str
    chi2: float
    chi2_reduced: float
    n_pixels: int
    n_free: int
    snr: float
    flags: list
    elements: dict
    fixed: list = field(default_factory=list)
    priors: dict = field(default_factory=dict)
    free_names: list = field(default_factory=list)
    wavelength: np.ndarray | None = None
    observed: np.ndarray | None = None
    model: np.ndarray | None = None
    ivar: np.ndarray | None = None
    good: np.ndarray | None = None
    mcmc: dict | None = None
    samples: np.ndarray | None = None
    chain: np.ndarray | None = None
    covariance: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def in_domain(self) -> bool:
        return "out_of_domain" not in self.flags

    def unconstrained(self) -> list[str]:
        return [k for k, d in self.elements.items() if not d.constrained]

    def to_row(self) -> dict:
        """One flat row: identifiers, every label (NaN for unconstrained elements), its
        error(s) (``<label>_err``, the mean of the two sides, for CMA-ES, and
        ``_err_lo``/``_err_hi`` for every label when MCMC ran and for the [X/Fe], whose
        posterior is asymmetric, when it did not), fit quality,
        flags (";"-separated) and per-element diagnostics (``<label>_crb``,
        ``<label>_nsens``, ``<label>_dchi2``)."""
        row = identifiers(self.meta)
        row["method"] = self.method
        two = self.method in ("mcmc", "both")
        bad = set(self.unconstrained())
        xfe = {lab.name for lab in L.xfe_labels()}
        for name in L.label_names():
            v = self.labels[name]
            lo, hi = self.err_lo[name], self.err_hi[name]
            if name in bad:
                v, lo, hi = np.nan, np.nan, np.nan
            row[name] = float(v)
            if two:
                row[f"{name}_err_lo"], row[f"{name}_err_hi"] = float(lo), float(hi)
            else:
                row[f"{name}_err"] = float(0.5 * (lo + hi))
                if name in xfe:
                    row[f"{name}_err_lo"], row[f"{name}_err_hi"] = float(lo), float(hi)
        row.update(chi2_reduced=float(self.chi2_reduced), snr=float(self.snr), n_pixels=int(self.n_pixels),
                   in_domain=bool(self.in_domain), flags=";".join(self.flags), error="")
        if self.mcmc:
            row["mcmc_tau_max"] = float(np.nanmax(self.mcmc["tau"]))
            row["mcmc_acceptance"] = float(self.mcmc["acceptance"])
            row["mcmc_steps"] = int(self.mcmc["steps"])
            rhat = np.asarray(self.mcmc.get("rhat", np.nan), float)
            row["mcmc_rhat_max"] = float(np.max(rhat)) if np.all(np.isfinite(rhat)) else float("nan")
        for name, d in self.elements.items():
            row[f"{name}_crb"] = float(d.crb)
            row[f"{name}_nsens"] = int(d.n_sensitive)
            row[f"{name}_dchi2"] = float(d.dchi2_trend)
        return row


def identifiers(meta: dict) -> dict:
    """The identifying columns of a row: file, obsid, designation (empty when unknown)."""
    obsid = meta.get("obsid")
    return {"file": str(meta.get("source") or ""), "obsid": "" if obsid is None else str(obsid),
            "designation": str(meta.get("designation") or "")}


def error_row(file: str, message: str, meta: dict | None = None) -> dict:
    """The row of an input that could not be fitted: identifiers and the error message
    (label columns are filled with NaN by the table writer)."""
    row = identifiers({**(meta or {}), "source": file})
    row["error"] = message
    return row

