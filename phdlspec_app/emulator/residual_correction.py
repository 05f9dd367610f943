"""residual_correction: subtract the network's smooth, systematic error, learned from the
spectra it was trained on.

A network trained to a loss plateau still leaves an error that varies slowly across the
HR diagram: near any star its neighbours in the training grid are off in much the same
way (the cores of strong lines a little too shallow in cool giants, say). The correction is
a kernel average of those training residuals (emulator − engine),

    c(θ) = Σ_j w_j(θ) r_j,   w_j ∝ exp(−d_j² / 2),

d_j the distance of training spectrum j from θ in (Teff, log g, [Fe/H]) in units of
:attr:`ResidualCorrection.BANDWIDTH`, and the emulator returns network − c(θ). The
residuals are kept as a rank-K factorization r ≈ A B (their leading singular vectors),
so one call costs O(N_train K + K W) per spectrum rather than O(N_train W), and c is a
smooth, differentiable function of the labels (the Jacobian and the fitter's gradients
include it).

Only the spectra the network was trained on enter it, so the held-out spectra that measure
the model error (:mod:`.model_error`) and the injection tests stay independent of it.
Measured on the default model (2026-12-06, 3010 training spectra, 301 held out; 150 K,
0.3 dex, 0.2 dex, K = 128): held-out median |Δflux| 0.094 % → 0.062 %, and the label
shifts the held-out spectra's emulator errors cause in a fit at S/N 50 (rms, all labels
free; ``phdlspec model-error ... --correct``) Teff 21.1 → 17.0 K, log g 0.059 → 0.044,
[Fe/H] 0.034 → 0.027 dex.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import labels as L

__all__ = ["ResidualCorrection", "build_correction"]


class ResidualCorrection:
    """c(θ): the kernel-weighted mean training residual (emulator − engine) near θ.

    centres : (N, 3) Teff, log g, [Fe/H] of the training spectra (K, dex, dex)
    coeffs : (N, K) and basis : (K, W): the training residuals r ≈ coeffs @ basis
        (normalized flux)
    bandwidth : (3,) kernel width in Teff, log g, [Fe/H]

    Calling it on (N, 32) labels (torch, any device) gives (N, W), differentiable.
    """

    #: kernel width: 150 K, 0.3 dex in log g, 0.2 dex in [Fe/H] (median ≈ 77 effective
    #: training neighbours on the 3010-spectrum grid; 100 K/0.2/0.15 and local-linear
    #: kernels measured the same to within 5 %)
    BANDWIDTH = (150.0, 0.3, 0.2)
    KEYS = ("teff", "logg", "fe_h")

    def __init__(self, centres, coeffs, basis, bandwidth=BANDWIDTH, device="cpu"):
        self.centres = torch.as_tensor(np.ascontiguousarray(centres, np.float64), dtype=torch.float32, device=device)
        self.coeffs = torch.as_tensor(np.asarray(coeffs, np.float32), device=device)
        self.basis = torch.as_tensor(np.asarray(basis, np.float32), device=device)
        self.bandwidth = torch.as_tensor(np.asarray(bandwidth, np.float64), dtype=torch.float32, device=device)
        n, k = self.coeffs.shape
        if self.centres.shape != (n, 3) or self.basis.shape[0] != k or self.bandwidth.shape != (3,):
            raise ValueError(f"residual correction: centres {tuple(self.centres.shape)}, coefficients "
                             f"{tuple(self.coeffs.shape)}, basis {tuple(self.basis.shape)} and bandwidth "
                             f"{tuple(self.bandwidth.shape)} do not fit together (expected (N, 3), (N, K), "
                             f"(K, W), (3,))")
        if not (torch.all(torch.isfinite(self.coeffs)) and torch.all(torch.isfinite(self.basis))
                and torch.all(torch.isfinite(self.centres)) and torch.all(self.bandwidth > 0)):
            raise ValueError("residual correction: non-finite arrays or a bandwidth that is not positive")
        names = L.label_names()
        self._idx = torch.as_tensor([names.index(k) for k in self.KEYS], device=device)
        # distances by |x|^2 + |X|^2 - 2 x.X (a matrix product: a tenth of the time of the
        # broadcast difference at N = 1000), in float64 so the cancellation costs nothing
        self._x = (self.centres / self.bandwidth).double()
        self._x2 = (self._x**2).sum(-1)

    @property
    def n_pixels(self) -> int:
        return int(self.basis.shape[1])

    @property
    def rank(self) -> int:
        return int(self.basis.shape[0])

    def to(self, device) -> ResidualCorrection:
        return ResidualCorrection(self.centres.cpu().numpy(), self.coeffs.cpu().numpy(), self.basis.cpu().numpy(),
                                  tuple(self.bandwidth.cpu().tolist()), device=device)

    def weights(self, labels: torch.Tensor) -> torch.Tensor:
        """(N, N_train) kernel weights (each row sums to 1) at (N, 32) labels."""
        x = labels.index_select(-1, self._idx).double() / self.bandwidth.double()
        d2 = (x**2).sum(-1, keepdim=True) + self._x2[None] - 2.0 * x @ self._x.T
        return torch.softmax(-0.5 * d2.to(self.coeffs.dtype), dim=-1)

    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        """(N, W) mean training residual near each of (N, 32) labels (normalized flux)."""
        return (self.weights(labels) @ self.coeffs) @ self.basis

    def tensors(self) -> dict[str, torch.Tensor]:
        """The arrays to store in a model file (``residual_correction.*``)."""
        return {"residual_correction.centres": self.centres.cpu().double().contiguous(),
                "residual_correction.coeffs": self.coeffs.cpu().contiguous(),
                "residual_correction.basis": self.basis.cpu().contiguous(),
                "residual_correction.bandwidth": self.bandwidth.cpu().double().contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict, device="cpu") -> ResidualCorrection | None:
        """The correction stored in a model file's ``tensors``, or None when it has none."""
        if "residual_correction.basis" not in tensors:
            return None
        t = {k.split(".", 1)[1]: v.cpu().numpy() for k, v in tensors.items() if k.startswith("residual_correction.")}
        return cls(t["centres"], t["coeffs"], t["basis"], tuple(t["bandwidth"].tolist()), device=device)


def build_correction(residuals: np.ndarray, labels: np.ndarray, rank: int = 128,
                     bandwidth=ResidualCorrection.BANDWIDTH, device="cpu") -> ResidualCorrection:
    """The :class:`ResidualCorrection` of training residuals ``residuals`` (N, W) (emulator −
    engine, normalized flux, on the spectra the network was trained on) at their ``labels``
    (N, 32), kept to their ``rank`` leading singular vectors."""
    r = np.nan_to_num(np.asarray(residuals, np.float64))
    labels = np.asarray(labels, float)
    if r.ndim != 2 or labels.shape != (len(r), len(L.LABELS)):
        raise ValueError(f"residuals {r.shape} and labels {labels.shape} do not match "
                         f"(expected (N, W) and (N, {len(L.LABELS)}))")
    if len(r) < 20:
        raise ValueError(f"need at least 20 training spectra for a residual correction, got {len(r)}")
    U, s, Vt = np.linalg.svd(r, full_matrices=False)
    k = int(min(rank, len(s)))
    names = L.label_names()
    centres = labels[:, [names.index(n) for n in ResidualCorrection.KEYS]]
    return ResidualCorrection(centres, U[:, :k] * s[:k], Vt[:k], bandwidth, device=device)
