"""train: fit the transformer to the ab initio grid, with the differential spectra as a prior.

Loss (per optimizer step; flux in units of ``FLUX_UNIT`` = 1 % of the continuum)::

    L = mean_{batch, pixels} (f_emu(x) − f_grid)² / FLUX_UNIT²
      + λ · mean_{ref, probes, pixels} (J_emu(x_ref) C v − J_engine(x_ref) C v)² / U

The second term is the physical prior: at the reference points the engine's
differential spectra J = d flux / d label (teff, logg, vmic, [Fe/H] and the 26 [X/Fe],
by forward-mode AD through the synthesis) must be matched by the emulator's own
derivatives. Matching the full 3909 × 30 Jacobian every step would cost 30 forward-mode
passes; instead each step draws ``n_probes`` random directions v ~ N(0, I) in the
network's scaled input space and matches the directional derivatives J v (one
``torch.func.jvp`` each). Since E[|A v|²] = |A|²_F for such v, this is an unbiased
estimate of the full Frobenius gradient-matching loss.

C = diag(c_k) says how much each label's derivative counts (``grad_norm``,
:func:`_gradient_units`):

- "point" (default): c_mk = 1 / rms_mk, the rms over pixels of the engine's
  d flux/d label_k at reference point m (never more than 10× the label's average weight),
  and U = ``REL_UNIT``² × 30: every label's derivative is matched relative to its own
  size at every reference point, a 10 % error weighing like 1 % of flux. The elements'
  derivatives span a factor of ~250 in size (Teff per 50 K: 0.6 % rms; Zn per 0.05 dex:
  0.002 %), and one element's spans a factor of ~10 between stars (O: CO and OH in cool
  stars, the 7774 Å triplet alone in hot dwarfs), so without this the weak elements' —
  and the weak stars' — derivative shapes, which the fitter needs and gradient fidelity
  measures, are hardly trained.
- "label": c_k = 1 / rms_k over all reference points (the same, averaged over stars).
- "step": c_k = the label step δ (``GRAD_STEP``: 50 K, 0.1 dex in log g, 0.1 km/s,
  0.05 dex in abundances), U = ``FLUX_UNIT``²: the flux change of a typical step, in
  the flux term's units (the models before 2026-12-05).

Held-out split: every 11th spectrum of the grid (index % 11 == 10) and every 11th
reference point are never trained on; they are what the accuracy and gradient-fidelity
bars are measured on.

Reproducible: fixed seed, deterministic order; checkpoints (``checkpoint.pt``, a dict of
tensors and numbers, loaded with ``weights_only=True``) every ``checkpoint_every`` epochs
and resumable.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .. import labels as L
from .domain import TrainingDomain
from .model import INPUT_LABELS, Emulator
from .network import SpectrumTransformer

__all__ = ["TrainConfig", "TrainingSet", "load_training_set", "train", "split_heldout", "FLUX_UNIT"]

FLUX_UNIT = 0.01
_ALL = L.label_names()


@dataclass
class TrainConfig:
    """Training settings. ``epochs`` passes over the training spectra; ``batch`` spectra
    per step; ``grad_weight`` is λ; ``n_probes`` random directions per reference point."""

    epochs: int = 300
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-5
    grad_weight: float = 1.0
    n_probes: int = 2
    ref_batch: int = 16
    seed: int = 2604
    device: str = "auto"
    checkpoint_every: int = 10
    network: dict = field(default_factory=lambda: {"head": "patch"})
    max_train: int | None = None   # use only the first N training spectra (ablation)
    grad_norm: str = "point"       # "point"/"label": each label's derivative matched relative to its own size at
    #                                each reference point / on average; "step": per GRAD_STEP (_gradient_units)
    cool_weight: float = 1.0       # spectra cooler than cool_teff count this many times in the flux term: their
    cool_teff: float = 4800.0      # molecular bands and dense lines carry most of the emulator's error


@dataclass
class TrainingSet:
    """Arrays in schema order: labels (N, 32), flux (N, W); reference points:
    ref_labels (M, 32), ref_flux (M, W), jacobian (M, 30, W) in INPUT_LABELS order."""

    labels: np.ndarray
    flux: np.ndarray
    wavelength: np.ndarray
    ref_labels: np.ndarray
    ref_flux: np.ndarray
    jacobian: np.ndarray
    domain: TrainingDomain
    source: dict


def split_heldout(n: int) -> np.ndarray:
    """(n,) bool: the held-out members (index % 11 == 10) — stable as a grid grows."""
    return (np.arange(n) % 11) == 10


def load_training_set(grid_dir, heldout: bool = False) -> TrainingSet:
    """The training (or, with ``heldout``, the held-out) part of a grid folder written by
    ``phdlspec grid`` (or its committed float16 copy).

    ``grid_dir`` may also be a list of folders: the first is the grid, the others are
    supplements inside its domain (e.g. extra cool stars, ``phdlspec grid --teff-max 5000``
    with its own seed), on the same wavelength grid and resolution. Each folder's own
    every 11th spectrum is held out, so the first grid's held-out set is the same with or
    without supplements."""
    dirs = [grid_dir] if isinstance(grid_dir, (str, os.PathLike)) else list(grid_dir)
    if not dirs:
        raise ValueError("no grid folder given")
    parts = [_load_one(d, heldout) for d in dirs]
    first = parts[0]
    for d, p in zip(dirs[1:], parts[1:]):
        why = _supplement_problem(first, p)
        if why:
            raise ValueError(f"{d}: cannot supplement {dirs[0]}: {why}")
    if len(parts) == 1:
        return first
    def cat(key):
        return np.concatenate([getattr(p, key) for p in parts])

    source = dict(first.source)
    source["grid"] = " + ".join(str(d) for d in dirs)
    source["supplements"] = [p.source for p in parts[1:]]
    return replace(first, labels=cat("labels"), flux=cat("flux"), ref_labels=cat("ref_labels"),
                   ref_flux=cat("ref_flux"), jacobian=cat("jacobian"), source=source)


def _same_wavelengths(a, b) -> bool:
    """The two wavelength grids (Å) are the same pixels (to 1e-7 relative: a float32 copy
    still matches; neighbouring LAMOST pixels differ by 1.6e-4)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-7, atol=0.0))


def _supplement_problem(grid: TrainingSet, extra: TrainingSet) -> str | None:
    """Why ``extra`` cannot be trained on with ``grid`` (None: it can)."""
    if not _same_wavelengths(extra.wavelength, grid.wavelength):
        return "its wavelength grid differs"
    a, b = grid.source["spec"], extra.source["spec"]
    if a.get("resolution") != b.get("resolution"):
        return f"resolution {b.get('resolution')} differs from {a.get('resolution')}"
    if a.get("wl_range") != b.get("wl_range"):
        return "its wavelength window differs"
    return grid.domain.covers(extra.domain)


def _load_one(grid_dir, heldout: bool) -> TrainingSet:
    from ..physics.grid import read_grid

    g = read_grid(grid_dir)
    if "labels" not in g:
        raise ValueError(f"{grid_dir}: the grid has no training shards yet")
    sel = split_heldout(len(g["labels"])) == heldout
    if "jacobian" in g:
        rsel = split_heldout(len(g["ref_labels"])) == heldout
        order = [g["wrt"].index(n) for n in INPUT_LABELS]
        jac = g["jacobian"][rsel][:, order]
        ref_labels, ref_flux = g["ref_labels"][rsel], g["ref_flux"][rsel]
    else:
        W = g["flux"].shape[1]
        jac = np.zeros((0, len(INPUT_LABELS), W), np.float32)
        ref_labels, ref_flux = np.zeros((0, len(_ALL))), np.zeros((0, W), np.float32)
    spec = g["manifest"]["spec"]
    return TrainingSet(labels=g["labels"][sel], flux=g["flux"][sel], wavelength=g["wavelength"],
                       ref_labels=ref_labels, ref_flux=ref_flux, jacobian=jac,
                       domain=TrainingDomain.from_grid_spec(spec),
                       source={"grid": str(grid_dir), "engine_version": g["manifest"].get("engine_version"),
                               "spec": spec, "n_grid": int(len(g["labels"])),
                               "n_grid_reference": int(len(g.get("ref_labels", []))),
                               "files_sha256": {k: v["sha256"] for k, v in sorted(g["manifest"]["files"].items())}})


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


#: label steps (K, dex, km/s) in which the gradient term measures derivatives: about
#: one LAMOST-quality uncertainty each, so that J·δ is the flux change of a typical step
GRAD_STEP = {"teff": 50.0, "logg": 0.1, "vmic": 0.1}
_ABUND_STEP = 0.05


def _grad_steps() -> np.ndarray:
    """δ_k for the INPUT_LABELS (see :data:`GRAD_STEP`; abundances 0.05 dex)."""
    return np.array([GRAD_STEP.get(n, _ABUND_STEP) for n in INPUT_LABELS])


def _half_range() -> np.ndarray:
    """d(physical label)/d(scaled input) for the INPUT_LABELS: half the schema range."""
    return np.array([(L.get_label(n).hi - L.get_label(n).lo) / 2.0 for n in INPUT_LABELS])


def train(data: TrainingSet, out_path, config: TrainConfig = TrainConfig(), workdir=None, resume: bool = False,
          progress: bool = True, log=None, heldout: TrainingSet | None = None,
          init: Emulator | None = None) -> Emulator:
    """Train an emulator on ``data`` and save it to ``out_path`` (safetensors).

    With ``heldout`` (at least 10 engine spectra never trained on) the saved model carries
    its error spectrum (:mod:`.model_error`), which the fitter adds to the noise.

    ``workdir`` (default: beside ``out_path``) holds ``checkpoint.pt`` and
    ``history.json``; with ``resume`` training continues from the checkpoint.

    With ``init`` (a trained emulator on the same wavelength grid) training starts from its
    network and flux scaling instead of fresh weights (fine-tuning: continue with a new
    learning-rate cycle, usually a smaller ``lr``); ``config.network`` is then ignored. Its
    residual correction and model error are not carried over: both are rebuilt for the new
    weights as after any training.
    Returns the trained :class:`Emulator`.
    """
    if not config.cool_weight > 0:
        raise ValueError(f"cool_weight must be > 0, got {config.cool_weight}")
    out_path = Path(out_path)
    workdir = Path(workdir) if workdir else out_path.with_suffix(".train")
    workdir.mkdir(parents=True, exist_ok=True)
    dev = _device(config.device)
    torch.manual_seed(config.seed)     # the network's initial weights

    labels, flux = data.labels, data.flux
    if config.max_train is not None:
        labels, flux = labels[: config.max_train], flux[: config.max_train]
    # the reference points' spectra are ab initio spectra too: train on them
    all_labels = np.concatenate([labels, data.ref_labels]).astype(np.float32)
    all_flux = np.concatenate([flux, data.ref_flux]).astype(np.float32)
    n_train = len(all_labels)
    if n_train < 2:
        raise ValueError("need at least 2 training spectra")
    if init is None:
        mean = all_flux.mean(0)
        std = np.maximum(all_flux.std(0), 1e-3)
        net = SpectrumTransformer(n_labels=len(INPUT_LABELS), n_pix=all_flux.shape[1], **config.network)
    else:
        if not _same_wavelengths(init.wavelength, data.wavelength):
            raise ValueError("init model's wavelength grid differs from the training grid's")
        import copy

        # the network must learn against the same scaling it was trained with
        mean, std = init.flux_mean.cpu().numpy(), init.flux_std.cpu().numpy()
        net = copy.deepcopy(init.net).cpu()
        # the card must name the network actually trained, not the config's unused one
        config = replace(config, network={k: v for k, v in net.config.items() if k not in ("n_labels", "n_pix")})
    emu = Emulator(net, mean, std, data.wavelength, data.domain, device=dev)
    for p in emu.net.parameters():
        p.requires_grad_(True)
    emu.net.train()

    X = torch.as_tensor(all_labels, device=dev)
    Y = torch.as_tensor(all_flux, device=dev)
    # per-spectrum weights of the flux term, normalized in each batch so that its scale is unchanged
    teff = all_labels[:, _ALL.index("teff")]
    SW = torch.as_tensor(np.where(teff < config.cool_teff, float(config.cool_weight), 1.0).astype(np.float32),
                         device=dev)
    use_grad = config.grad_weight > 0 and len(data.ref_labels) > 0
    grad_units = None
    if use_grad:
        grad_units = _gradient_units(data.jacobian, config.grad_norm)
        XR = torch.as_tensor(data.ref_labels.astype(np.float32), device=dev)
        JR = torch.as_tensor((data.jacobian * _per_point(grad_units[0], len(data.jacobian))[:, :, None])
                             .astype(np.float32), device=dev)

    opt = torch.optim.AdamW(emu.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(n_train / config.batch)
    total = config.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total, pct_start=0.05)
    start_epoch, history = 0, []
    init_record = None  # what the card says of the model fine-tuned from
    if init is not None:
        init_training = (init.card or {}).get("training", {})
        init_record = {"training": init_training.get("config"), "final_loss_flux": init_training.get("final_loss_flux")}
    ckpt = workdir / "checkpoint.pt"
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        if init is None and state.get("init"):  # a fine-tune resumed without --init is still one
            init_record = json.loads(state["init"])
        if "flux_mean" in state:  # the weights were trained against this scaling (an init model's, say)
            emu.flux_mean = state["flux_mean"].to(dev)
            emu.flux_std = state["flux_std"].to(dev)
        emu.net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start_epoch = int(state["epoch"])
        hist_path = workdir / "history.json"
        history = json.loads(hist_path.read_text()) if hist_path.exists() else []

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, initial=start_epoch, desc="train", unit="epoch")
    t0 = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        # every epoch draws from its own seeded streams, so a resumed run is identical
        # to an uninterrupted one
        rng = np.random.default_rng([config.seed, epoch])
        torch.manual_seed(config.seed * 100003 + epoch)
        perm = torch.as_tensor(rng.permutation(n_train), device=dev)
        sums = np.zeros(2)
        for s in range(steps_per_epoch):
            idx = perm[s * config.batch:(s + 1) * config.batch]
            pred = emu.flux_unbroadened(X[idx])
            sw = SW[idx]
            loss_f = (((pred - Y[idx]) ** 2).mean(1) * sw).sum() / sw.sum() / FLUX_UNIT ** 2
            loss = loss_f
            if use_grad:
                loss_g = _gradient_loss(emu, XR, JR, config, rng, grad_units)
                loss = loss + config.grad_weight * loss_g
                sums[1] += loss_g.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(emu.net.parameters(), 10.0)
            opt.step()
            sched.step()
            sums[0] += loss_f.item()
        rec = {"epoch": epoch + 1, "loss_flux": sums[0] / steps_per_epoch,
               "loss_grad": sums[1] / steps_per_epoch if use_grad else None,
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        if bar:
            bar.update(1)
            bar.set_postfix(flux=f"{rec['loss_flux']:.3g}", grad=f"{rec['loss_grad'] or 0:.3g}")
        if log:
            log(rec)
        if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs:
            _atomic_torch_save({"net": emu.net.state_dict(), "opt": opt.state_dict(),
                                "flux_mean": emu.flux_mean.detach().cpu(), "flux_std": emu.flux_std.detach().cpu(),
                                "sched": sched.state_dict(), "epoch": epoch + 1,
                                "init": json.dumps(init_record) if init_record else ""}, ckpt)
            _atomic_write(workdir / "history.json", json.dumps(history, indent=1))
    if bar:
        bar.close()
    emu.net.eval()
    for p in emu.net.parameters():
        p.requires_grad_(False)
    emu.card = {"training": {"config": asdict(config), "n_train_spectra": int(len(labels)),
                             "init": init_record,
                             "n_reference": int(len(data.ref_labels)), "source": data.source,
                             "final_loss_flux": history[-1]["loss_flux"] if history else None,
                             "final_loss_grad": history[-1]["loss_grad"] if history else None,
                             "device": str(dev), "torch": torch.__version__,
                             "threads": torch.get_num_threads(),
                             "gradient_units": None if grad_units is None else
                             {"per_label_factor": dict(zip(INPUT_LABELS, map(float, np.median(
                                 _per_point(grad_units[0], len(data.jacobian)), axis=0)))),
                              "loss_unit": grad_units[1]},
                             "seconds": sum(h["seconds"] for h in history[-1:])}}
    if len(labels) >= 20:
        attach_residual_correction(emu, labels, flux)
    if heldout is not None and len(heldout.labels) >= 10:
        attach_model_error(emu, heldout)
    emu.save(out_path)
    return emu


def attach_residual_correction(emu: Emulator, labels: np.ndarray, flux: np.ndarray, rank: int = 128) -> Emulator:
    """Set ``emu.residual_correction`` (:mod:`.residual_correction`) from the spectra the
    network was trained on, ``flux`` (N, W) at ``labels`` (N, 32) (the grid's: vbroad = rv = 0),
    and record it in the card. Any earlier correction is replaced, not stacked. Measure the
    model error (:func:`attach_model_error`) after this, never before."""
    from .model_error import residuals
    from .residual_correction import build_correction

    emu.residual_correction = None
    r = residuals(emu, labels, flux)
    emu.residual_correction = build_correction(r, labels, rank=rank).to(emu.device)
    after = residuals(emu, labels, flux)
    emu.card["residual_correction"] = {
        "method": "kernel mean of the training residuals in (Teff, log g, [Fe/H]) (emulator.residual_correction)",
        "bandwidth": dict(zip(emu.residual_correction.KEYS, emu.residual_correction.bandwidth.tolist())),
        "rank": emu.residual_correction.rank, "n_train": len(labels),
        "train_median_abs_before": float(np.median(np.abs(r))),
        "train_median_abs_after": float(np.median(np.abs(after)))}
    return emu


def attach_model_error(emu: Emulator, heldout: TrainingSet) -> Emulator:
    """Set ``emu.model_error`` (per-pixel rms), its correlated split
    (``model_error_basis``/``model_error_rest``, :func:`~.model_error.error_basis`) and,
    with ≥ 20 spectra, the same made star by star with the label shifts the error causes
    (``model_error_local``, :class:`~.model_error.LocalModelError`) from held-out engine
    spectra, and record them in the card."""
    from .model_error import (LocalModelError, error_basis, projection_remainder, residuals, rms_error,
                              shift_equations, solve_shifts)

    r = residuals(emu, heldout.labels, heldout.flux)
    emu.model_error = rms_error(r)
    q = projection_remainder(r)
    emu.model_error_basis, emu.model_error_rest = error_basis(r, remainder=q)
    emu.model_error_local = None
    if len(r) >= 20:  # enough neighbours to make the error at each star from those near it
        emu.model_error_local = LocalModelError(r, heldout.labels, remainders=q,
                                                shifts=shift_equations(emu, heldout.labels, heldout.flux))
    shifts50 = None if emu.model_error_local is None else solve_shifts(*emu.model_error_local.shifts, snr=50.0)
    w = emu.wavelength
    emu.card["model_error"] = {
        "method": "per-pixel rms of emulator - engine over held-out grid spectra",
        "n_heldout": int(len(heldout.labels)), "median": float(np.median(emu.model_error)),
        "median_3700_4500": float(np.median(emu.model_error[w < 4500])),
        "median_7500_9100": float(np.median(emu.model_error[w >= 7500])),
        "correlated": {"rank": int(emu.model_error_basis.shape[0]),
                       "median_uncorrelated_fraction": float(np.median(emu.model_error_rest**2 / emu.model_error**2))},
        "local": None if emu.model_error_local is None else {
            "method": "error_basis of the held-out residuals weighted by exp(-d^2/2) in (Teff, log g, [Fe/H]) "
                      "(model_error.LocalModelError)",
            "bandwidth": dict(emu.model_error_local.BANDWIDTH),
            "median_effective_neighbours": float(np.median(
                [emu.model_error_local.n_effective(x) for x in heldout.labels])),
            "label_shift_rms_snr50": {n: float(np.sqrt(np.mean(shifts50[:, i] ** 2)))
                                      for i, n in enumerate(emu.label_names) if n in ("teff", "logg", "fe_h", "mg_fe")}},
        "grid": heldout.source.get("grid")}
    return emu


#: relative derivative error counted as one unit by the "label"-normalized gradient term:
#: 10 % of a label's own typical derivative weighs like 1 % of flux in the flux term
REL_UNIT = 0.1


def _gradient_units(jacobian: np.ndarray, mode: str) -> tuple[np.ndarray, float]:
    """(c, unit): the gradient term compares c_k · d flux/d label_k, and divides its mean
    square by ``unit``. ``c`` is (30,), or (M, 30) — one row per reference point — for "point".

    "step": c_k = δ_k (:data:`GRAD_STEP`), the flux change of a typical label step, in
    units of ``FLUX_UNIT`` — Teff and [Fe/H] dominate, and an element whose lines move the
    flux by 0.005 % per step hardly counts. "label": c_k = 1 / rms_k, with rms_k the rms of
    the engine's d flux/d label_k over the training reference points and pixels, so every
    label's derivative is matched relative to its own size (``REL_UNIT`` of it weighing like
    1 % of flux); the unit also divides by the number of labels, so λ keeps its meaning.
    "point": the same per reference point m, c_mk = 1 / max(rms_mk, rms_k / 10).
    The derivative shape of a weak element (Zn, Eu: ~250× below Teff per step) is then as much a
    target as Teff's, which is what gradient fidelity measures."""
    if mode == "step":
        return _grad_steps(), FLUX_UNIT ** 2
    if mode in ("label", "point"):
        rms = np.sqrt((np.asarray(jacobian, float) ** 2).mean(axis=(0, 2)))
        # a label with (almost) no lines is matched in absolute terms, at 0.1 % of the
        # strongest label's derivative with respect to the scaled input
        hr = _half_range()
        floor = 1e-3 * (rms * hr).max() / hr
        if not np.isfinite(floor).all() or (rms * hr).max() <= 0:
            raise ValueError("the reference points' differential spectra are all zero")
        rms = np.maximum(rms, floor)
        if mode == "label":
            return 1.0 / rms, REL_UNIT ** 2 * len(rms)
        # per reference point: a star where an element's lines are weak (O in a 6500 K
        # dwarf) has its derivative shape matched too, instead of being swamped by the
        # stars where they are strong; no point weighs more than 10× the label's average
        rms_m = np.sqrt((np.asarray(jacobian, float) ** 2).mean(axis=2))
        return 1.0 / np.maximum(rms_m, 0.1 * rms), REL_UNIT ** 2 * len(rms)
    raise ValueError(f"grad_norm must be 'label', 'point' or 'step', not {mode!r}")


def _per_point(factor: np.ndarray, m: int) -> np.ndarray:
    """The (30,) or (M, 30) factors of :func:`_gradient_units` as (M, 30)."""
    return np.broadcast_to(np.asarray(factor, float), (m, len(INPUT_LABELS)))


def _gradient_loss(emu: Emulator, XR, JR, config: TrainConfig, rng, units) -> torch.Tensor:
    """Random-probe estimate of the gradient-matching term (see the module docstring).

    ``JR`` (M, 30, W): the engine's derivatives times c_k; ``units`` = (c, unit) from
    :func:`_gradient_units`. A probe v ~ N(0, I) moves the network's scaled input by
    v_k / (c_k · half-range_k), so that the emulator's J v and the target JR v compare alike."""
    from torch.func import jvp

    factor, unit = units
    m = min(config.ref_batch, len(XR))
    pick = rng.choice(len(XR), size=m, replace=False)
    idx = torch.as_tensor(pick, device=XR.device)
    x = emu.scale(XR[idx])
    jr = JR[idx]
    to_scaled = torch.as_tensor(_per_point(factor, len(XR))[pick] / _half_range(), dtype=x.dtype, device=x.device)
    total = 0.0
    for _ in range(config.n_probes):
        v = torch.randn_like(x)
        _, jv = jvp(lambda s: emu.flux_std * emu.net(s), (x,), (v * to_scaled,))
        target = torch.einsum("mkw,mk->mw", jr, v)
        total = total + ((jv - target) ** 2).mean()
    return total / config.n_probes / unit


def _atomic_write(path: Path, text: str):
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_torch_save(obj, path: Path):
    tmp = path.with_name(f".{path.name}.part")
    torch.save(obj, tmp)
    os.replace(tmp, path)
