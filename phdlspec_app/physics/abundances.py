"""Solar abundance scales and the number fractions of a star's 92 elements.

Notation: A(X) = log10(N_X / N_H) + 12 ("log ε"), ε_X = N_X / N_H, so A(H) = 12 and
ε_H = 1. Arrays indexed by atomic number Z have length 93; index 0 is unused.

Sources
-------
- ``physics_dir()/abundances/solar_abundances_A_X.csv``: Asplund et al. 2009 (ARA&A 47,
  481; default), Asplund et al. 2021 (A&A 653, A141), Grevesse et al. 2007 (SSRv 130,
  105), Bergemann et al. 2025, transcribed from Korg.jl ``src/atomic_data.jl``. The
  table writes −5 for elements without a value (Tc, Pm, Po … Pa); like Korg we keep
  −5, an abundance 17 dex below H that no opacity or EOS term can notice.
- ``physics_dir()/atomic/mendeleev/elements.db``: standard atomic weights (amu).

The mapping labels → [X/H] is one constant (93, 32) matrix, so ``number_fractions`` is
linear in the labels before the exponential and differentiable by autograd.
"""
from __future__ import annotations

import csv
from functools import lru_cache

import numpy as np
import torch

from phdlspec_app import labels as _labels
from phdlspec_app.paths import physics_dir
from phdlspec_app.physics.atomic_data import atomic_masses

__all__ = ["N_Z", "available_scales", "solar_abundances", "alpha_fe", "number_fractions",
           "atomic_masses", "mass_per_hydrogen", "mean_mass_per_nucleus", "UNLABELLED_ALPHA_Z"]

#: length of every per-element array (index = Z, 0 unused, 1 … 92)
N_Z = 93

# Scale names accepted by the API -> column of the CSV. The 2021 paper of Asplund et al.
# appears in the CSV (as in Korg) under "asplund_2020", its arXiv year.
_SCALES = {
    "asplund2009": "asplund_2009",
    "asplund2021": "asplund_2020",
    "grevesse2007": "grevesse_2007",
    "bergemann2025": "bergemann_2025",
}
_SCALE_ALIASES = {"asplund2020": "asplund2021", "a09": "asplund2009", "a21": "asplund2021",
                  "gs07": "grevesse2007", "grevesse2007sauval": "grevesse2007"}

#: The α elements without a label of their own (Ne, S, Ar): they follow [α/Fe]
UNLABELLED_ALPHA_Z = (10, 16, 18)
#: The labels whose mean defines [α/Fe] (docs/physics.md)
_ALPHA_LABELS = ("mg_fe", "si_fe", "ca_fe")


def available_scales() -> list[str]:
    """Names accepted by ``scale`` (aliases such as ``asplund2020`` also work)."""
    return list(_SCALES)


def _canonical_scale(scale: str) -> str:
    key = str(scale).strip().lower().replace("_", "").replace(" ", "").replace("-", "")
    key = _SCALE_ALIASES.get(key, key)
    if key not in _SCALES:
        raise ValueError(f"unknown solar abundance scale {scale!r}; available: {', '.join(_SCALES)}")
    return key


@lru_cache(maxsize=None)
def _read_table() -> dict[str, np.ndarray]:
    path = physics_dir() / "abundances" / "solar_abundances_A_X.csv"
    with open(path, newline="") as fh:
        rows = [r for r in fh if not r.startswith("#")]
    table = {col: np.full(N_Z, np.nan) for col in _SCALES.values()}
    for row in csv.DictReader(rows):
        z = int(row["Z"])
        for col in table:
            table[col][z] = float(row[col])
    for col, arr in table.items():
        if np.isnan(arr[1:]).any():
            raise ValueError(f"{path}: column {col} lacks elements "
                             f"{np.flatnonzero(np.isnan(arr[1:])) + 1}")
        arr.setflags(write=False)
    return table


def solar_abundances(scale: str = "asplund2009") -> np.ndarray:
    """Solar A(X) = log10(N_X/N_H) + 12 for Z = 1 … 92, shape (93,); index 0 is NaN.

    ``scale``: one of :func:`available_scales` (default Asplund et al. 2009).
    Returns a fresh writable copy.
    """
    return _read_table()[_SCALES[_canonical_scale(scale)]].copy()


@lru_cache(maxsize=None)
def _label_matrix() -> np.ndarray:
    """M (93, 32) with [X/H]_Z = Σ_j M[Z, j] labels_j (zero rows: H, He, Z = 0).

    Built from the label schema (positions and elements are looked up, never assumed).
    """
    n = len(_labels.LABELS)
    m = np.zeros((N_Z, n))
    i_fe = _labels.get_label("fe_h").index
    m[3:, i_fe] = 1.0                      # metals (Z ≥ 3) scale with [Fe/H]; H, He stay solar
    for lab in _labels.abundance_labels():
        if lab.name != "fe_h":             # [X/H] = [Fe/H] + [X/Fe]
            m[lab.element.Z, lab.index] += 1.0
    alpha_idx = [_labels.get_label(name).index for name in _ALPHA_LABELS]
    for z in UNLABELLED_ALPHA_Z:
        m[z, alpha_idx] += 1.0 / len(alpha_idx)
    m.setflags(write=False)
    return m


def _as_labels(labels) -> torch.Tensor:
    lab = labels if torch.is_tensor(labels) else torch.as_tensor(np.asarray(labels, dtype=float))
    if not lab.is_floating_point():
        lab = lab.double()
    if lab.shape[-1] != len(_labels.LABELS):
        raise ValueError(f"labels must have shape (..., {len(_labels.LABELS)}), got {tuple(lab.shape)}")
    return lab


def alpha_fe(labels) -> torch.Tensor:
    """[α/Fe] (dex) = mean of the mg_fe, si_fe and ca_fe labels; labels (…, 32) → (…).

    This is the [α/Fe] handed to the model atmosphere and the one Ne, S, Ar follow.
    """
    lab = _as_labels(labels)
    idx = [_labels.get_label(name).index for name in _ALPHA_LABELS]
    return lab[..., idx].mean(dim=-1)


def number_fractions(labels, scale: str = "asplund2009") -> torch.Tensor:
    """ε_X = N_X / N_H for Z = 0 … 92 from labels (…, 32) in schema order → (…, 93).

    ε_H = 1, He keeps its solar value, labelled elements have [X/H] = [Fe/H] + [X/Fe],
    Ne, S and Ar follow [α/Fe] (:func:`alpha_fe`), every other metal follows [Fe/H];
    ε_0 = 0 (index 0 is unused). Same dtype and device as ``labels`` (float64 advised);
    differentiable: ∂ ln ε_X / ∂ [X/Fe] = ln 10.
    """
    lab = _as_labels(labels)
    a_sun = torch.as_tensor(solar_abundances(scale), dtype=lab.dtype, device=lab.device)
    m = torch.tensor(_label_matrix(), dtype=lab.dtype, device=lab.device)
    x_h = lab @ m.T                                   # (..., 93) [X/H] in dex
    log_eps = torch.nan_to_num(a_sun, nan=0.0) - 12.0 + x_h
    eps = torch.pow(10.0, log_eps)
    # index 0 is no element: zero it without touching the graph of the others
    mask = torch.ones(N_Z, dtype=lab.dtype, device=lab.device)
    mask[0] = 0.0
    return eps * mask


def mass_per_hydrogen(eps: torch.Tensor) -> torch.Tensor:
    """Mass per H nucleus, Σ_Z ε_Z m_Z (amu), from ε (…, 93) → (…)."""
    m = torch.tensor(atomic_masses(), dtype=eps.dtype, device=eps.device)
    return (eps * m).sum(dim=-1)


def mean_mass_per_nucleus(eps: torch.Tensor) -> torch.Tensor:
    """Mean mass per atomic nucleus, Σ ε m / Σ ε (amu), from ε (…, 93) → (…).

    ρ = n_nuclei × this × amu. Asplund 2009 solar: 1.258 (the value SME's EOS reproduces,
    shared/docs/sme-reference-notes.md).
    """
    return mass_per_hydrogen(eps) / eps.sum(dim=-1)
