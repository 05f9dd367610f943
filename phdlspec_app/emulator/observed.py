"""observed: data-driven training (as in the paper and DD-Payne) — fine-tune the emulator
on observed spectra with reference labels, keeping the physics prior.

Input: a table (ECSV, CSV, FITS, Parquet — anything ``astropy.table.Table.read`` reads)
with a ``file`` column (paths, relative to the table's folder or absolute) and label
columns named as in the schema or by a catalog alias (``TEFF``, ``LOGG``, ``FE_H``,
``MG_FE``, ``[Mg/Fe]``, …). Labels the catalog lacks are set to their Galactic-trend
value at the star's [Fe/H] (abundances) or the schema default, and are *not* trusted:
the physics gradient term, evaluated on the ab initio grid's reference points, keeps the
emulator's response to them physical. ``rv`` comes from the table, else from the header
redshift (LAMOST ``Z``), else 0 (flagged); ``vbroad`` from the table, else the default.

Each spectrum goes through ``preprocess.prepare`` onto the emulator's grid — the same
resampling, LSF matching, masks and pseudo-continuum operator as the fitter — so the
loss per star is the fitter's χ² per good pixel::

    L = mean_stars Σ_p ivar_p (y_p − C[B f_emu(labels)]_p)² / n_good
      + λ_g · (gradient-matching term on the grid's reference points, see ``train``)
      + λ_f · (flux term on the grid's spectra, an anchor to the ab initio model)
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .. import labels as L
from .model import Emulator
from .train import FLUX_UNIT, TrainConfig, TrainingSet, _atomic_write, _gradient_loss, _gradient_units, _per_point

__all__ = ["ObservedSet", "load_observed", "finetune"]


@dataclass
class ObservedSet:
    """Prepared observations: ``labels`` (N, 32) reference labels (filled), ``known``
    (N, 32) bool (which came from the table), ``prepared`` (``preprocess.Prepared``
    per star), ``files``, ``flags`` per star."""

    files: list
    labels: np.ndarray
    known: np.ndarray
    prepared: list
    flags: list


def load_observed(table_path, wavelength, resolution: float = 1800.0, progress: bool = False) -> ObservedSet:
    """Read the table and prepare every spectrum onto ``wavelength`` (vacuum Å)."""
    from astropy.table import Table

    from ..io import SpectrumFormatError, read_spectrum
    from ..physics.constants import c_kms
    from ..physics.grid import galactic_trend
    from ..preprocess import FitInputError, prepare

    table_path = Path(table_path)
    try:
        tab = Table.read(table_path)
    except Exception as exc:  # astropy raises many kinds for unreadable tables
        raise ValueError(f"{table_path}: not a readable table ({exc})") from None
    cols = {c.lower(): c for c in tab.colnames}
    if "file" not in cols:
        raise ValueError(f"{table_path}: needs a 'file' column with the spectrum paths")
    names = L.label_names()
    known = np.zeros((len(tab), len(names)), bool)
    lab = np.tile(L.defaults(), (len(tab), 1))
    for c in tab.colnames:
        try:
            name = L.canonical_name(c)
        except (KeyError, ValueError):
            continue
        if name not in names:
            continue
        v = np.asarray(tab[c], dtype=float)
        j = names.index(name)
        ok = np.isfinite(v)
        lab[ok, j] = v[ok]
        known[ok, j] = True
    if not known[:, names.index("teff")].all() or not known[:, names.index("logg")].all() \
            or not known[:, names.index("fe_h")].all():
        raise ValueError(f"{table_path}: every row needs teff, logg and fe_h")
    trend = galactic_trend(lab[:, names.index("fe_h")])
    for name, centre in trend.items():
        j = names.index(name)
        lab[~known[:, j], j] = centre[~known[:, j]]
    files, preps, flags, keep = [], [], [], []
    it = range(len(tab))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="prepare", unit="spectrum")
    for i in it:
        f = Path(str(tab[cols["file"]][i]))
        f = f if f.is_absolute() else table_path.parent / f
        try:
            spec = read_spectrum(f)
            prep = prepare(spec, wavelength, resolution)
        except (SpectrumFormatError, FitInputError) as exc:
            warnings.warn(f"skipped: {exc}", stacklevel=2)
            continue
        fl = list(prep.flags)
        if not known[i, names.index("rv")]:
            z = spec.meta.get("z")
            if z is not None and np.isfinite(float(z)):
                lab[i, names.index("rv")] = float(z) * c_kms
            else:
                fl.append("rv_assumed_0")
        files.append(str(f))
        preps.append(prep)
        flags.append(fl)
        keep.append(i)
    if not keep:
        raise ValueError(f"{table_path}: none of the spectra could be prepared")
    return ObservedSet(files, lab[keep], known[keep], preps, flags)


def finetune(emu: Emulator, observed: ObservedSet, out_path, grid: TrainingSet | None = None,
             config: TrainConfig = TrainConfig(epochs=50, lr=3e-4), flux_weight: float = 1.0,
             progress: bool = True, log=None) -> Emulator:
    """Fine-tune ``emu`` on ``observed`` (see the module docstring) and save it.

    ``grid``: the ab initio grid (reference points for the physics gradient term, spectra
    for the anchor term); without it only the observations are fitted (not advised: the
    abundances the catalog lacks are then unconstrained)."""
    dev = emu.device
    torch.manual_seed(config.seed)
    for p in emu.net.parameters():
        p.requires_grad_(True)
    emu.net.train()
    X = torch.as_tensor(observed.labels, dtype=torch.float32, device=dev)
    # the χ² runs over the good pixels only: the model observable may be undefined (NaN)
    # where the observation is masked, and NaN × 0 would poison the loss and its gradient
    GI = [torch.as_tensor(np.nonzero(p.good)[0], device=dev) for p in observed.prepared]
    Y = [torch.as_tensor(p.y[p.good], dtype=torch.float32, device=dev) for p in observed.prepared]
    IV = [torch.as_tensor(p.ivar_y[p.good], dtype=torch.float32, device=dev) for p in observed.prepared]
    use_grad = grid is not None and config.grad_weight > 0 and len(grid.ref_labels) > 0
    if use_grad:
        XR = torch.as_tensor(grid.ref_labels, dtype=torch.float32, device=dev)
        grad_units = _gradient_units(grid.jacobian, config.grad_norm)
        JR = torch.as_tensor(grid.jacobian * _per_point(grad_units[0], len(grid.jacobian))[:, :, None],
                             dtype=torch.float32, device=dev)
    if grid is not None and flux_weight > 0:
        XG = torch.as_tensor(grid.labels, dtype=torch.float32, device=dev)
        YG = torch.as_tensor(grid.flux, dtype=torch.float32, device=dev)
    opt = torch.optim.AdamW(emu.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(X)
    steps = math.ceil(n / config.batch)
    history = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, desc="fine-tune", unit="epoch")
    t0 = time.perf_counter()
    for epoch in range(config.epochs):
        rng = np.random.default_rng([config.seed, epoch])
        torch.manual_seed(config.seed * 100003 + epoch)
        perm = rng.permutation(n)
        sums = np.zeros(3)
        for s in range(steps):
            idx = perm[s * config.batch:(s + 1) * config.batch]
            model = emu.forward(X[idx])
            chi = []
            for k, i in enumerate(idx):
                m = observed.prepared[i].model_observable(model[k].double()).float()
                chi.append((IV[i] * (Y[i] - m[GI[i]]) ** 2).sum() / max(observed.prepared[i].n_good, 1))
            loss_obs = torch.stack(chi).mean()
            loss = loss_obs
            sums[0] += loss_obs.item()
            if use_grad:
                lg = _gradient_loss(emu, XR, JR, config, rng, grad_units)
                loss = loss + config.grad_weight * lg
                sums[1] += lg.item()
            if grid is not None and flux_weight > 0:
                j = torch.as_tensor(rng.choice(len(XG), size=min(config.batch, len(XG)), replace=False), device=dev)
                lf = ((emu.flux_unbroadened(XG[j]) - YG[j]) ** 2).mean() / FLUX_UNIT ** 2
                loss = loss + flux_weight * lf
                sums[2] += lf.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(emu.net.parameters(), 10.0)
            opt.step()
        rec = {"epoch": epoch + 1, "chi2_per_pixel": sums[0] / steps,
               "loss_grad": sums[1] / steps if use_grad else None,
               "loss_flux": sums[2] / steps if grid is not None and flux_weight > 0 else None,
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        if bar:
            bar.update(1)
            bar.set_postfix(chi2=f"{rec['chi2_per_pixel']:.3g}")
        if log:
            log(rec)
    if bar:
        bar.close()
    emu.net.eval()
    for p in emu.net.parameters():
        p.requires_grad_(False)
    emu.card = {**emu.card, "finetune": {"config": asdict(config), "n_observed": n, "flux_weight": flux_weight,
                                         "physics_prior": bool(use_grad), "history_last": history[-1],
                                         "labels_from_table": [nm for j, nm in enumerate(L.label_names())
                                                               if observed.known[:, j].any()]}}
    emu.save(out_path)
    _atomic_write(Path(str(out_path) + ".history.json"), json.dumps(history, indent=1))
    return emu
