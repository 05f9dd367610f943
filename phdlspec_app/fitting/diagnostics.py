"""Per-element diagnostics: which pixels carry an element's information, how well they are
fitted, whether the spectrum prefers the fitted abundance over the Galactic trend, and the
best precision the data allow.

For each abundance label k (``fe_h`` and the x_fe labels), with J the Jacobian of the
model observable at the best fit (per dex) and σ the pixel errors:

- sensitive pixels: |J_k| · ``delta_dex`` ≥ ``threshold`` · σ (a change of 0.1 dex moves
  the pixel by at least 0.5 σ, by default);
- ``chi2_sensitive``: χ² over those pixels per pixel;
- ``dchi2_trend``: χ²(fit with x_fe at its Galactic-trend value ``physics.grid.galactic_trend``,
  other labels unchanged) − χ²(fit), from real emulator evaluations (one batched call);
  ``dchi2_trend_profile``: the same with the other labels re-optimized, to second order:
  ((x − trend)/σ_CR)²;
- ``crb``: the Cramér–Rao bound, √[(Jᵀ C⁻¹ J)⁻¹]_kk over all free labels (marginal), and
  ``crb_conditional`` = 1/√[Jᵀ C⁻¹ J]_kk (others held fixed): what the spectrum holds, C the
  noise and the model error's pixel covariance; the reported errors may add the emulator floor;
- ``constrained``: crb ≤ ``max_crb`` dex (information accumulates over many weakly
  sensitive pixels, so the pixel count is reported, not required). Unconstrained elements are reported as flags, not as measurements.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .. import labels as L
from ..physics.grid import galactic_trend
from .likelihood import Likelihood

__all__ = ["ElementDiagnostic", "element_diagnostics", "covariance"]


@dataclass
class ElementDiagnostic:
    """Diagnostics of one abundance label (units: dex; χ² dimensionless)."""

    label: str
    element: str
    n_sensitive: int
    chi2_sensitive: float
    dchi2_trend: float
    dchi2_trend_profile: float
    trend_value: float
    crb: float
    crb_conditional: float
    constrained: bool
    free: bool

    def to_dict(self) -> dict:
        return asdict(self)


def covariance(F: np.ndarray) -> np.ndarray:
    """Inverse of a Fisher matrix, robust to labels the data do not constrain at all
    (zero rows): those get infinite variance, the rest the inverse of their block."""
    F = np.asarray(F, float)
    d = np.diag(F)
    ok = d > 1e-12 * max(d.max(), 1e-300)
    cov = np.full(F.shape, np.nan)
    np.fill_diagonal(cov, np.inf)
    if ok.any():
        sub = F[np.ix_(ok, ok)]
        try:
            inv = np.linalg.inv(sub)
        except np.linalg.LinAlgError:
            inv = np.linalg.pinv(sub)
        cov[np.ix_(ok, ok)] = inv
    return cov


def element_diagnostics(lik: Likelihood, best_labels: np.ndarray, model: np.ndarray, jac: np.ndarray,
                        F: np.ndarray, delta_dex: float = 0.1, threshold: float = 0.5,
                        max_crb: float = 0.3) -> dict[str, ElementDiagnostic]:
    """Diagnostics for every abundance label; see the module docstring."""
    prep = lik.prep
    g = prep.good
    sigma = np.where(g, 1.0 / np.sqrt(np.where(g, prep.ivar_y, 1.0)), np.inf)
    resid2 = np.zeros(g.size)
    resid2[g] = (prep.y[g] - np.asarray(model)[g]) ** 2 * prep.ivar_y[g]
    chi2_best = float(resid2.sum())
    cov = covariance(F)
    free = list(lik.free)
    names = L.label_names()
    fe_h = float(best_labels[names.index("fe_h")])
    trend = {k: float(v[0]) for k, v in galactic_trend(np.array([fe_h])).items()}
    abund = [lab for lab in L.abundance_labels()]
    # one batched call: each x_fe moved to its trend value, all else at the best fit
    variants = []
    for lab in abund:
        v = best_labels.copy()
        if lab.name in trend:
            v[lab.index] = trend[lab.name]
        variants.append(v)
    chi2_var = lik.chi2_labels(np.array(variants))
    out = {}
    for lab, c2 in zip(abund, chi2_var):
        k = lab.index
        sens = g & (np.abs(jac[k]) * delta_dex >= threshold * sigma)
        n = int(sens.sum())
        fk = float((jac[k][g] ** 2 * prep.ivar_y[g]).sum())
        crb_cond = 1.0 / np.sqrt(fk) if fk > 0 else np.inf
        if k in free:
            j = free.index(k)
            crb = float(np.sqrt(cov[j, j])) if np.isfinite(cov[j, j]) else np.inf
        else:
            crb = crb_cond
        tv = trend.get(lab.name, np.nan)
        prof = float(((best_labels[k] - tv) / crb) ** 2) if np.isfinite(tv) and np.isfinite(crb) and crb > 0 else np.nan
        out[lab.name] = ElementDiagnostic(
            label=lab.name, element=lab.element.symbol, n_sensitive=n,
            chi2_sensitive=float(resid2[sens].sum() / n) if n else np.nan,
            dchi2_trend=float(c2 - chi2_best) if lab.name in trend else np.nan,
            dchi2_trend_profile=prof, trend_value=tv, crb=crb, crb_conditional=float(crb_cond),
            constrained=bool(np.isfinite(crb) and crb <= max_crb), free=k in free)
    return out
