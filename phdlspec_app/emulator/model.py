"""model: the emulator object the fitter and the app use, and its file format.

``load_emulator()`` returns an :class:`Emulator`: a :class:`~.network.SpectrumTransformer`
with its input scaling (from the schema's ranges), the per-pixel flux standardization,
the training domain, and the analytic ``vbroad``/``rv`` step.

File format (``phdlspec-emulator-v1``): one safetensors file — the network weights and
the arrays ``flux_mean``, ``flux_std``, ``wavelength`` — whose string metadata holds the
network configuration, the training domain and the model card's numbers as JSON. It is
read with ``safetensors`` (no pickle).
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import torch

from .. import labels as L
from ..paths import assets_dir
from .broadening import broaden_and_shift
from .domain import TrainingDomain
from .network import SpectrumTransformer

__all__ = ["Emulator", "load_emulator", "default_model_path", "EmulatorFileError", "INPUT_LABELS",
           "FORMAT"]

FORMAT = "phdlspec-emulator-v1"
#: the labels the network sees, in schema order (vbroad and rv are applied analytically)
INPUT_LABELS: tuple[str, ...] = tuple(n for n in L.label_names() if n not in ("vbroad", "rv"))
_ALL = L.label_names()
_IN_IDX = [_ALL.index(n) for n in INPUT_LABELS]
_VBROAD, _RV = _ALL.index("vbroad"), _ALL.index("rv")
_LO = np.array([L.get_label(n).lo for n in INPUT_LABELS])
_HI = np.array([L.get_label(n).hi for n in INPUT_LABELS])
#: spectra per network pass in a large call: the activations of 128 spectra (62 patch
#: tokens × 128 MLP channels each) stay in cache, those of 4096 do not — on 2 CPU cores
#: 4310 spectra/s in passes of 128 against 1810/s in one pass of 4096 (BENCHMARKS.md,
#: session 24); the split costs nothing measurable below 128
CHUNK = 128
#: forward-mode autodiff (``torch.func.jacfwd``) keeps its dual levels in process-wide state:
#: two threads taking Jacobians at once fail ("Trying to access a forward AD level with an
#: invalid index"; measured: 4 of 4 threads on the shipped model). The dashboard's fit jobs
#: and its slider path, and ``fit-batch`` workers with several threads, do take them at
#: once, so every Jacobian in this process holds this lock. Re-entrant, so that a wrapper
#: (``fitting.shared_emulator``) may hold it around any emulator's Jacobian, this one's included.
FORWARD_AD_LOCK = threading.RLock()


class EmulatorFileError(ValueError):
    """A model file that is missing, of another format, or inconsistent."""


def default_model_path() -> Path:
    """``$PHDLSPEC_EMULATOR`` if set, else ``assets/emulator/phdlspec_default.safetensors``."""
    env = os.environ.get("PHDLSPEC_EMULATOR")
    return Path(env) if env else assets_dir() / "emulator" / "phdlspec_default.safetensors"


def _pick_device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Emulator:
    """Normalized flux on the LAMOST grid for the 32 labels of the schema.

    Attributes
    ----------
    wavelength : (3909,) vacuum Angstrom
    label_names : the 32 schema labels, in order
    resolution : resolving power of the Gaussian LSF of the output (before ``vbroad``)
    domain : :class:`TrainingDomain`
    card : dict, the model card (training grid, loss, metrics)
    model_error : (3909,) or None, the emulator's own 1-sigma error per pixel in normalized
        flux (rms of emulator - engine over held-out engine spectra,
        :func:`~.model_error.rms_error`); the fitter adds its square to the noise
        variance so that the error bars include what the emulator gets wrong
    model_error_basis, model_error_rest : (K, 3909) and (3909,) or None: the same error split
        into a correlated part (covariance ``basis.T @ basis``) and an uncorrelated remainder
        (:func:`~.model_error.error_basis`); when present the fitter uses these instead of
        ``model_error`` alone, so that errors shared by many pixels are not averaged down
    model_error_local : :class:`~.model_error.LocalModelError` or None: the same split made
        at each star from the held-out residuals nearest it in Teff, log g and [Fe/H]; when
        present the fitter uses it at the labels it linearizes about, and adds the label
        shifts those residuals cause (``label_covariance``) to the labels' covariance
    residual_correction : :class:`~.residual_correction.ResidualCorrection` or None: the
        network's smooth error near each star, learned from its own training residuals and
        subtracted from its output (the model error above is measured after it)

    Calling it on (N, 32) or (32,) labels (K, dex, km/s) returns (N, 3909) or (3909,)
    normalized flux: numpy in → numpy float64 out; torch in → torch out on ``device``,
    differentiable. ``vbroad`` (Gaussian FWHM, km/s) and ``rv`` (km/s) are applied after
    the network, analytically (``broadening``).
    """

    def __init__(self, net: SpectrumTransformer, flux_mean, flux_std, wavelength, domain: TrainingDomain,
                 resolution: float = 1800.0, card: dict | None = None, device="auto", model_error=None,
                 model_error_basis=None, model_error_rest=None, model_error_local=None,
                 residual_correction=None):
        self.device = _pick_device(device)
        self.net = net.to(self.device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.flux_mean = torch.as_tensor(flux_mean, dtype=torch.float32, device=self.device)
        self.flux_std = torch.as_tensor(flux_std, dtype=torch.float32, device=self.device)
        self.wavelength = np.asarray(wavelength, dtype=float)
        self.label_names = list(_ALL)
        self.input_labels = list(INPUT_LABELS)
        self.domain = domain
        self.resolution = float(resolution)
        self.card = dict(card or {})
        self.model_error = None if model_error is None else np.asarray(model_error, dtype=float)
        if self.model_error is not None and self.model_error.shape != self.wavelength.shape:
            raise ValueError(f"model_error has shape {self.model_error.shape}, the wavelength grid "
                             f"{self.wavelength.shape}")
        self.model_error_basis = None if model_error_basis is None else np.asarray(model_error_basis, float)
        self.model_error_rest = None if model_error_rest is None else np.asarray(model_error_rest, float)
        if (self.model_error_basis is None) != (self.model_error_rest is None):
            raise ValueError("model_error_basis and model_error_rest come together")
        if self.model_error_basis is not None and (self.model_error_basis.ndim != 2 or self.model_error_basis.shape[1]
                                                   != self.wavelength.size or self.model_error_rest.shape
                                                   != self.wavelength.shape):
            raise ValueError(f"model error basis {self.model_error_basis.shape} / remainder "
                             f"{self.model_error_rest.shape} do not fit the wavelength grid {self.wavelength.shape}")
        self.model_error_local = model_error_local
        if model_error_local is not None and model_error_local.residuals.shape[1] != self.wavelength.size:
            raise ValueError(f"local model error residuals {model_error_local.residuals.shape} do not fit the "
                             f"wavelength grid {self.wavelength.shape}")
        self.residual_correction = None
        if residual_correction is not None:
            if residual_correction.n_pixels != self.wavelength.size:
                raise ValueError(f"the residual correction has {residual_correction.n_pixels} pixels, the wavelength "
                                 f"grid {self.wavelength.size}")
            self.residual_correction = residual_correction.to(self.device)
        self._lo = torch.as_tensor(_LO, dtype=torch.float32, device=self.device)
        self._hi = torch.as_tensor(_HI, dtype=torch.float32, device=self.device)
        self._in_idx = torch.as_tensor(_IN_IDX, device=self.device)

    # --- scaling ---------------------------------------------------------------------
    def scale(self, labels: torch.Tensor) -> torch.Tensor:
        """(N, 32) physical labels → (N, 30) network inputs in [-1, 1] (schema ranges)."""
        x = labels.index_select(-1, self._in_idx)
        return 2.0 * (x - self._lo) / (self._hi - self._lo) - 1.0

    def flux_unbroadened(self, labels: torch.Tensor) -> torch.Tensor:
        """(N, 32) labels (torch, float32, on ``device``) → (N, 3909) flux at R = 1800,
        vbroad = 0, rv = 0."""
        f = self.flux_mean + self.flux_std * self.net(self.scale(labels))
        if self.residual_correction is not None:
            f = f - self.residual_correction(labels)
        return f

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """The full model on a (N, 32) float32 tensor on ``device``; differentiable. Large
        batches run in passes of :data:`CHUNK` spectra."""
        if labels.shape[0] > CHUNK:
            return torch.cat([self.forward(part) for part in labels.split(CHUNK)])
        f = self.flux_unbroadened(labels)
        return broaden_and_shift(f, labels[:, _VBROAD], labels[:, _RV])

    # --- public API ------------------------------------------------------------------
    def _as_batch(self, labels):
        is_np = not isinstance(labels, torch.Tensor)
        t = torch.as_tensor(np.asarray(labels, dtype=np.float32) if is_np else labels)
        t = t.to(device=self.device, dtype=torch.float32)
        single = t.dim() == 1
        if single:
            t = t[None]
        if t.dim() != 2 or t.shape[-1] != len(_ALL):
            raise ValueError(f"labels must have shape (N, {len(_ALL)}) or ({len(_ALL)},), got {tuple(t.shape)}")
        return t, is_np, single

    def __call__(self, labels):
        t, is_np, single = self._as_batch(labels)
        if is_np:
            # the result leaves torch at once: inference mode skips autograd's version
            # counters and views, a tenth of the one-spectrum time
            with torch.inference_mode():
                out = self.forward(t)
        elif not t.requires_grad:
            with torch.no_grad():
                out = self.forward(t)
        else:
            out = self.forward(t)
        out = out[0] if single else out
        return out.double().cpu().numpy() if is_np else out

    def jacobian(self, labels):
        """(N, 32, 3909) d flux / d label, per unit of each label (K, dex, km/s), by
        forward-mode automatic differentiation (one tangent per label). Thread-safe: one
        Jacobian at a time in the process (:data:`FORWARD_AD_LOCK`)."""
        from torch.func import jacfwd, vmap

        t, is_np, single = self._as_batch(labels)
        with FORWARD_AD_LOCK, torch.no_grad():
            jac = vmap(jacfwd(lambda row: self.forward(row[None])[0]))(t)   # (N, 3909, 32)
        jac = jac.transpose(1, 2)
        jac = jac[0] if single else jac
        return jac.double().cpu().numpy() if is_np else jac

    def in_domain(self, labels) -> np.ndarray:
        """(N,) bool (a Python bool for one label vector): inside the training domain."""
        x = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels, float)
        ok = self.domain.contains(x)
        return bool(ok[0]) if x.ndim == 1 else ok

    @property
    def domain_box(self) -> dict[str, tuple[float, float]]:
        """Bounding box of the training domain, {label: (lo, hi)} (K, dex, km/s)."""
        return self.domain.box()

    def domain_violations(self, labels) -> list[list[str]]:
        """Per row, the names of the labels outside the training domain."""
        x = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels, float)
        return self.domain.violations(x)

    # --- persistence -----------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the model (safetensors, written to a temporary file then renamed)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        tensors["flux_mean"] = self.flux_mean.cpu()
        tensors["flux_std"] = self.flux_std.cpu()
        tensors["wavelength"] = torch.as_tensor(self.wavelength, dtype=torch.float64)
        if self.model_error is not None:
            tensors["model_error"] = torch.as_tensor(self.model_error, dtype=torch.float64)
        # with a local error the global split is derived from its residuals on loading (4.7 MB less)
        if self.model_error_basis is not None and self.model_error_local is None:
            tensors["model_error_basis"] = torch.as_tensor(self.model_error_basis, dtype=torch.float32)
            tensors["model_error_rest"] = torch.as_tensor(self.model_error_rest, dtype=torch.float64)
        if self.model_error_local is not None:
            loc = self.model_error_local
            tensors["model_error_residuals"] = torch.as_tensor(loc.residuals, dtype=torch.float32)
            tensors["model_error_remainders"] = torch.as_tensor(loc.remainders, dtype=torch.float32)
            tensors["model_error_labels"] = torch.as_tensor(loc.labels, dtype=torch.float64)
            if loc.shifts is not None:
                for key, arr in zip(("shift_normal", "shift_rhs", "shift_box"), loc.shifts):
                    tensors[f"model_error_{key}"] = torch.as_tensor(arr, dtype=torch.float64)
        if self.residual_correction is not None:
            tensors.update(self.residual_correction.tensors())
        meta = {"format": FORMAT, "config": json.dumps(self.net.config),
                "input_labels": json.dumps(self.input_labels), "domain": json.dumps(self.domain.to_dict()),
                "resolution": repr(self.resolution), "card": json.dumps(self.card)}
        tmp = path.with_name(f".{path.name}.part")
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path, device="auto") -> "Emulator":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise EmulatorFileError(f"{path}: no such emulator file")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise EmulatorFileError(f"{path}: not a readable safetensors file ({exc})") from exc
        if meta.get("format") != FORMAT:
            raise EmulatorFileError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        if json.loads(meta["input_labels"]) != list(INPUT_LABELS):
            raise EmulatorFileError(f"{path}: trained on other labels than this schema's")
        net = SpectrumTransformer(**json.loads(meta["config"]))
        state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise EmulatorFileError(f"{path}: weights do not match the configuration ({exc})") from exc
        local = _local_model_error(tensors)
        basis = tensors["model_error_basis"].double().numpy() if "model_error_basis" in tensors else None
        rest = tensors["model_error_rest"].numpy() if "model_error_rest" in tensors else None
        if local is not None and basis is None:
            from .model_error import error_basis

            basis, rest = error_basis(local.residuals, remainder=local.remainders)
        return cls(net, tensors["flux_mean"], tensors["flux_std"], tensors["wavelength"].numpy(),
                   TrainingDomain(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in json.loads(meta["domain"]).items()}),
                   resolution=float(meta.get("resolution", 1800.0)), card=json.loads(meta.get("card", "{}")),
                   device=device,
                   model_error=tensors["model_error"].numpy() if "model_error" in tensors else None,
                   model_error_basis=basis, model_error_rest=rest, model_error_local=local,
                   residual_correction=_residual_correction(path, tensors))


def _residual_correction(path, tensors):
    """The file's :class:`~.residual_correction.ResidualCorrection`, or None when it has none."""
    from .residual_correction import ResidualCorrection

    try:
        return ResidualCorrection.from_tensors(tensors)
    except (KeyError, ValueError) as exc:
        raise EmulatorFileError(f"{path}: bad residual correction ({exc})") from exc


def _local_model_error(tensors):
    """The file's :class:`~.model_error.LocalModelError`, or None when it has none."""
    if "model_error_residuals" not in tensors:
        return None
    from .model_error import LocalModelError

    return LocalModelError(tensors["model_error_residuals"].double().numpy(), tensors["model_error_labels"].numpy(),
                           remainders=tensors["model_error_remainders"].double().numpy(),
                           shifts=tuple(tensors[f"model_error_{k}"].numpy() for k in ("shift_normal", "shift_rhs",
                                                                                       "shift_box"))
                           if "model_error_shift_normal" in tensors else None)


def load_emulator(path=None, device="auto") -> Emulator:
    """The default emulator (``assets/emulator/``, or ``$PHDLSPEC_EMULATOR``), or the one at
    ``path``. ``device``: "auto" (CUDA when present, else CPU), "cpu", "cuda"."""
    return Emulator.load(default_model_path() if path is None else path, device=device)
