"""The calibration demonstration on SIMULATED stars: a simulated M67 sequence and simulated
wide-binary pairs, synthesized by our ab initio engine, fitted with the emulator, calibrated.

There are no LAMOST spectra of M67 members or wide binaries in the shared data, so the
stars are made here. They are synthesized under physics a little different from the
emulator's training set: Kurucz ATLAS9 model atmospheres (``Synthesizer(atmosphere="kurucz")``)
instead of the atmosnet C3K/ATLAS12 ones. The fitted labels therefore carry model-dependent
trends with Teff and log g, as real fits do, and the calibration has something real to remove.

* **M67** (``m67_000`` …): real members, the OCCAM DR14 members of NGC 2682 (flag GM)
  cross-matched by 2MASS id with GALAH DR3, which gives each star's Teff and log g. Those
  inside the training grid's Teff range (4000–7000 K) and log g envelope are kept (15 with
  the shared catalogs, all giants and subgiants; ``n_m67`` takes a subset evenly spread in
  log g). The dwarfs come from GALAH's M67 field: ``n_m67_dwarfs`` (15) stars with log g ≥ 3.8
  and [Fe/H] within 0.1 dex of the members' GALAH median, spread evenly in Teff. They are
  likely members, and they need only put realistic points on the cluster's main sequence. All have one composition, OCCAM's M67 means
  ([Fe/H] and the [X/Fe] OCCAM gives; 0 for the others). vmic follows the APOGEE DR12
  relation vmic = 2.478 − 0.325 log g km/s (Holtzman et al. 2015); RV is +33.6 km/s
  (Geller et al. 2015).
* **Wide binaries** (``wb000a``/``wb000b`` …): each pair shares [Fe/H] (uniform in −0.8…+0.3)
  and every [X/Fe] (the grid's Galactic trend plus N(0, 0.05) dex), and the two stars share
  their RV to within 0.5 km/s. The primary's Teff is uniform in 5300–6500 K, and the
  secondary is 300–1500 K cooler (≥ 4300 K). Both are dwarfs: log g lies 0.05–0.25 dex
  below the grid's main-sequence envelope.

Each spectrum is the engine's normalized flux on the LAMOST grid at R = 1800 with Gaussian
noise at ``snr`` per pixel. The fit is ``fit_spectrum`` (CMA-ES + polish). The calibration
then runs the wide-binary method and the cluster method, anchored to the OCCAM means. The
summary reports, per label, the scatter of (fit − truth) before and after the calibration,
which only a simulation can give, next to the methods' own before/after scatter.

Everything is written into ``out``. The engine's noiseless spectra go to ``out/spectra/*.npz``
(float32, resumable: a star whose file holds the same labels is not synthesized again). Also
written: ``truth.ecsv``, ``pairs.ecsv``, ``results.ecsv``, ``calibration.ecsv``,
``summary.ecsv``, ``truth_scatter.ecsv``, ``plots/*.png``. The tables say SIMULATED: in
``meta['note']`` or, for the results, a ``simulated`` column.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import labels as L
from ..physics.grid import _atomic_savez

__all__ = ["DemoSpec", "SIMULATED_NOTE", "demo_stars", "synthesize_demo", "fit_demo", "run_demo"]

SIMULATED_NOTE = ("SIMULATED: stars synthesized by PhDLspec's ab initio engine (ATLAS9 atmospheres) for the "
                  "calibration demonstration; not observations")
M67_RV_KMS = 33.6  # Geller, Latham & Mathieu 2015, AJ 150, 97
_IDX = {n: i for i, n in enumerate(L.label_names())}


@dataclass
class DemoSpec:
    """How many stars, at which S/N, with which seed and atmospheres."""

    n_m67: int | None = None  # None: every matched member inside the grid (15 with the shared catalogs)
    n_m67_dwarfs: int = 15
    n_pairs: int = 50
    snr: float = 50.0
    seed: int = 67
    atmosphere: str = "kurucz"
    resolution: float = 1800.0


def _vmic(logg):
    return np.clip(2.478 - 0.325 * np.asarray(logg, float), 0.5, 2.5)


def m67_labels(n: int | None = None, data_dir=None, n_dwarfs: int = 15):
    """(ids, labels (N, 32), 2MASS ids) for ``n`` (None: all) OCCAM M67 members and
    ``n_dwarfs`` GALAH M67-field dwarfs of the cluster's metallicity (module doc)."""
    from ..physics.grid import logg_envelope
    from .catalogs import galah_m67_field, occam_cluster_means, occam_members

    members = {s.upper().removeprefix("2M") for s in occam_members(data_dir=data_dir)["apogee_id"]}
    galah = galah_m67_field(data_dir)
    tm = np.array([str(s).strip().upper().removeprefix("2M") for s in galah["tmass_id"]])
    teff, logg = np.asarray(galah["teff"], float), np.asarray(galah["logg"], float)
    lo, hi = logg_envelope(teff)
    usable = ((np.asarray(galah["flag_sp"]) == 0) & np.isfinite(teff) & np.isfinite(logg)
              & (teff >= 4000) & (teff <= 7000) & (logg >= lo) & (logg <= hi))
    idx = np.flatnonzero(usable & np.isin(tm, list(members)))
    n = idx.size if n is None else n
    if idx.size < n:
        raise ValueError(f"only {idx.size} OCCAM M67 members with GALAH Teff/log g inside the grid; asked for {n}")
    idx = idx[np.argsort(logg[idx], kind="stable")]
    pick = idx[np.unique(np.linspace(0, idx.size - 1, n).round().astype(int))]
    # APOGEE's members are giants; the dwarfs come from GALAH's M67 field at the members'
    # metallicity (GALAH's own scale), spread evenly in Teff
    fe = np.asarray(galah["fe_h"], float)
    fe0 = float(np.median(fe[idx]))
    dw = np.flatnonzero(usable)
    dw = dw[(logg[dw] >= 3.8) & (np.abs(fe[dw] - fe0) <= 0.1) & ~np.isin(dw, pick)]
    if dw.size < n_dwarfs:
        raise ValueError(f"only {dw.size} GALAH M67-field dwarfs at [Fe/H] {fe0:+.2f} ± 0.1; asked for {n_dwarfs}")
    dw = dw[np.argsort(teff[dw], kind="stable")]
    pick = np.concatenate([pick, dw[np.unique(np.linspace(0, dw.size - 1, n_dwarfs).round().astype(int))]])
    means = occam_cluster_means(data_dir=data_dir)
    lab = np.tile(L.defaults(), (pick.size, 1))
    lab[:, _IDX["teff"]], lab[:, _IDX["logg"]] = teff[pick], logg[pick]
    lab[:, _IDX["vmic"]] = _vmic(logg[pick])
    for name, (mean, _err) in means.items():
        if name in _IDX and np.isfinite(mean):
            lab[:, _IDX[name]] = np.clip(mean, L.get_label(name).lo, L.get_label(name).hi)
    lab[:, _IDX["vbroad"]] = 5.0
    lab[:, _IDX["rv"]] = M67_RV_KMS
    ids = [f"m67_{k:03d}" for k in range(pick.size)]
    return ids, lab, [f"2M{tm[i]}" for i in pick]


def binary_labels(n_pairs: int, seed: int):
    """(ids_a, ids_b, labels_a, labels_b) for ``n_pairs`` simulated pairs (see module doc)."""
    from ..physics.grid import galactic_trend, logg_envelope

    rng = np.random.default_rng(seed)
    la, lb = np.tile(L.defaults(), (n_pairs, 1)), np.tile(L.defaults(), (n_pairs, 1))
    ta = rng.uniform(5300, 6500, n_pairs)
    tb = np.maximum(ta - rng.uniform(300, 1500, n_pairs), 4300.0)
    fe = rng.uniform(-0.8, 0.3, n_pairs)
    rv = rng.uniform(-60, 60, n_pairs)
    for lab, t in ((la, ta), (lb, tb)):
        lab[:, _IDX["teff"]] = t
        lab[:, _IDX["logg"]] = logg_envelope(t)[1] - rng.uniform(0.05, 0.25, n_pairs)
        lab[:, _IDX["vmic"]] = _vmic(lab[:, _IDX["logg"]])
        lab[:, _IDX["fe_h"]] = fe
        lab[:, _IDX["vbroad"]] = rng.uniform(2, 8, n_pairs)
        lab[:, _IDX["rv"]] = rv + rng.normal(0, 0.5, n_pairs)
    for name, trend in galactic_trend(fe).items():
        x = trend + rng.normal(0, 0.05, n_pairs)
        la[:, _IDX[name]] = lb[:, _IDX[name]] = x
    ids_a = [f"wb{k:03d}a" for k in range(n_pairs)]
    ids_b = [f"wb{k:03d}b" for k in range(n_pairs)]
    return ids_a, ids_b, la, lb


def demo_stars(spec: DemoSpec = DemoSpec(), data_dir=None):
    """(truth table: ``id``, ``kind`` m67|binary, ``pair``, ``source_id`` and the 32 labels;
    pairs table: ``id_a``, ``id_b``)."""
    from astropy.table import Table

    ids, lab, src = m67_labels(spec.n_m67, data_dir, n_dwarfs=spec.n_m67_dwarfs)
    ia, ib, la, lb = binary_labels(spec.n_pairs, spec.seed)
    n_m = len(ids)
    truth = Table({"id": ids + ia + ib,
                   "kind": ["m67"] * n_m + ["binary"] * (2 * len(ia)),
                   "pair": [""] * n_m + [i[:-1] for i in ia] + [i[:-1] for i in ib],
                   "source_id": src + [""] * (2 * len(ia))})
    allv = np.vstack([lab, la, lb])
    for j, name in enumerate(L.label_names()):
        truth[name] = allv[:, j]
    pairs = Table({"id_a": ia, "id_b": ib})
    for t in (truth, pairs):
        t.meta["note"] = SIMULATED_NOTE
    return truth, pairs


def _labels_of(truth, i) -> np.ndarray:
    return np.array([float(truth[name][i]) for name in L.label_names()])


def _synth_one(args):
    import torch

    from ..physics.synthesize import Synthesizer

    path, lab, kwargs, resolution = args
    torch.set_num_threads(1)
    syn = _SYNTH.get("syn")
    if syn is None:
        syn = _SYNTH["syn"] = Synthesizer(**kwargs)
    flux = syn.spectrum(torch.as_tensor(lab), resolution=resolution).detach().numpy()
    _atomic_savez(path, labels=lab, flux=flux.astype(np.float32))
    return path


_SYNTH: dict = {}


def _done(path: Path, lab: np.ndarray) -> bool:
    if not path.exists():
        return False
    with np.load(path, allow_pickle=False) as z:
        return z["labels"].shape == lab.shape and np.allclose(z["labels"], lab) and np.isfinite(z["flux"]).all()


def synthesize_demo(out, truth, spec: DemoSpec = DemoSpec(), workers: int = 1, synthesizer=None,
                    progress: bool = True) -> dict:
    """The noiseless engine spectrum of every star of ``truth`` into ``out/spectra/<id>.npz``
    (resumable); returns {id: flux (3909,)}. ``synthesizer`` (labels (32,) → flux) replaces the
    engine (tests); ``workers`` > 1 synthesizes in processes of one torch thread each."""
    d = Path(out) / "spectra"
    d.mkdir(parents=True, exist_ok=True)
    jobs = []
    for i, sid in enumerate(truth["id"]):
        lab = _labels_of(truth, i)
        if not _done(d / f"{sid}.npz", lab):
            jobs.append((d / f"{sid}.npz", lab))
    bar = None
    if progress and jobs:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="synthesizing (ab initio, ATLAS9)", unit="star")
    if synthesizer is not None:
        for path, lab in jobs:
            _atomic_savez(path, labels=lab, flux=np.asarray(synthesizer(lab), np.float32))
            bar and bar.update()
    elif jobs:
        kwargs = {"atmosphere": spec.atmosphere}
        args = [(p, lab, kwargs, spec.resolution) for p, lab in jobs]
        if workers > 1:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(workers) as pool:
                for _ in pool.imap_unordered(_synth_one, args):
                    bar and bar.update()
        else:
            for a in args:
                _synth_one(a)
                bar and bar.update()
    if bar:
        bar.close()
    out_flux = {}
    for sid in truth["id"]:
        with np.load(d / f"{sid}.npz", allow_pickle=False) as z:
            out_flux[str(sid)] = z["flux"].astype(float)
    return out_flux


def fit_demo(truth, fluxes: dict, emulator, spec: DemoSpec = DemoSpec(), progress: bool = True,
             **fit_kwargs) -> list[dict]:
    """Noisy observations (S/N ``spec.snr`` per pixel, seeded) of ``fluxes`` fitted with
    :func:`phdlspec_app.fitting.fit_spectrum`; returns one row per star in the ``phdlspec fit``
    layout (identifier ``designation`` = the star's id) plus ``kind`` and ``simulated``."""
    from ..fitting import fit_spectrum
    from ..io import Spectrum
    from ..physics.lsf import lamost_wavelength

    wl = lamost_wavelength()
    rng = np.random.default_rng(spec.seed + 1)
    rows = []
    it = range(len(truth))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="fitting (emulator)", unit="star")
    for i in it:
        sid = str(truth["id"][i])
        f = fluxes[sid]
        y = f + rng.normal(0.0, 1.0 / spec.snr, f.size)
        s = Spectrum(wl, y, np.full(f.size, spec.snr**2), np.zeros(f.size, bool),
                     meta={"designation": sid, "source": f"simulated:{sid}"})
        r = fit_spectrum(s, emulator, seed=1, **fit_kwargs)
        rows.append({**r.to_row(), "kind": str(truth["kind"][i]), "simulated": True})
    return rows


def _truth_scatter(results, truth, calibrated) -> dict:
    """Per label, over the stars where the fit measured it (not flagged ``at_bound``), the
    robust scatter of (fit - truth) and the residual trend's amplitude, before and after the
    calibration: {label: {scatter_before, scatter_after, trend_before, trend_after, n_measured}}.

    The trend amplitude is the rms over the stars of a robust linear fit of (fit - truth)
    against the TRUE Teff (per 1000 K) and log g: what a calibration should remove, and what
    the scatter alone would hide under the fit noise. Labels are in their own unit (K, dex).
    """
    from .models import fit_linear, robust_std
    from .tables import measured_column

    pos = {str(s): i for i, s in enumerate(truth["id"])}
    order = [pos[str(s)] for s in results["designation"]]
    z = np.column_stack([np.ones(len(order)), (np.asarray(truth["teff"], float)[order] - 5500.0) / 1000.0,
                         np.asarray(truth["logg"], float)[order] - 4.0])

    def trend_rms(d):
        ok = np.isfinite(d)
        if ok.sum() < 10:
            return float("nan")
        res = fit_linear(np.where(ok[:, None], z, np.nan), d, robust="huber")
        shape = z[ok, 1:] @ res.coef[1:]
        return float(np.sqrt(np.mean((shape - shape.mean()) ** 2)))

    out = {}
    for name in L.label_names():
        if name in ("rv", "vbroad") or name not in results.colnames:
            continue
        t = np.asarray(truth[name], float)[order]
        measured = np.isfinite(measured_column(results, name))
        before = np.where(measured, np.asarray(results[name], float) - t, np.nan)
        after = np.where(measured, np.asarray(calibrated[name], float) - t, np.nan)
        out[name] = {"scatter_before": robust_std(before), "scatter_after": robust_std(after),
                     "trend_before": trend_rms(before), "trend_after": trend_rms(after),
                     "n_measured": int(measured.sum())}
    return out


def _check_reusable(out: Path, truth, spec: DemoSpec) -> None:
    """Refuse to calibrate fits made for another demonstration: the stars, their true labels
    (the truth.ecsv written with the fits) and the S/N must be this one's. Star ids alone do
    not depend on the seed or the pair count."""
    from .tables import read_table

    res_path, old_path = out / "results.ecsv", out / "truth.ecsv"
    if not res_path.is_file() or not old_path.is_file():
        raise FileNotFoundError(f"{res_path}: no fits (and truth.ecsv) to reuse; run without reuse_fits first")
    results, old = read_table(res_path), read_table(old_path)
    why = None
    if sorted(map(str, results["designation"])) != sorted(map(str, truth["id"])):
        why = f"{len(results)} rows for {len(truth)} stars, or other stars"
    elif list(map(str, old["id"])) != list(map(str, truth["id"])):
        why = "truth.ecsv lists other stars"
    else:
        for name in L.label_names():
            if name in old.colnames and not np.allclose(np.asarray(old[name], float), np.asarray(truth[name], float),
                                                        rtol=0, atol=1e-6, equal_nan=True):
                why = f"the true {name} differ from truth.ecsv (another seed or catalog?)"
                break
    if why is None and "snr" in results.colnames:
        snr = float(np.nanmedian(np.asarray(results["snr"], float)))
        if not 0.7 * spec.snr < snr < 1.3 * spec.snr:
            why = f"the fits' median S/N is {snr:.0f}, this demonstration's {spec.snr:g}"
    if why:
        raise ValueError(f"{res_path}: not this demonstration's fits ({why}); fit again without reuse_fits")


def run_demo(out, spec: DemoSpec = DemoSpec(), workers: int = 1, emulator=None, synthesizer=None,
             data_dir=None, progress: bool = True, bootstrap: int = 200, fit_kwargs: dict | None = None,
             reuse_fits: bool = False) -> dict:
    """The whole demonstration into ``out`` (see the module doc); returns
    {'truth_scatter': {label: {scatter_before, scatter_after, trend_before, trend_after, n_measured}}, 'summary': Table, 'n_stars': int, 'paths': {...}}.

    ``reuse_fits``: calibrate the fits already in ``out/results.ecsv`` instead of fitting again
    (after a change to the calibration methods); refused when they are not of these stars."""
    from astropy.table import Table

    from ..emulator import load_emulator
    from . import diagnostics as D
    from .calibration import build_calibration
    from ..fitting.output import write_results
    from .catalogs import occam_cluster_means
    from .tables import read_table, write_table

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    truth, pairs = demo_stars(spec, data_dir)
    if reuse_fits:
        _check_reusable(out, truth, spec)
    paths = {"truth": write_table(truth, out / "truth.ecsv"), "pairs": write_table(pairs, out / "pairs.ecsv")}
    if reuse_fits:
        paths["results"] = out / "results.ecsv"
        results = read_table(paths["results"])
    else:
        fluxes = synthesize_demo(out, truth, spec, workers=workers, synthesizer=synthesizer, progress=progress)
        emu = emulator if emulator is not None else load_emulator(device="cpu")
        rows = fit_demo(truth, fluxes, emu, spec, progress=progress, **(fit_kwargs or {}))
        paths["results"] = write_results(rows, out / "results.ecsv")
        results = read_table(paths["results"])
    members = np.asarray(results["kind"]) == "m67"
    reference = occam_cluster_means(data_dir=data_dir)
    cal = build_calibration(results, pairs=pairs, cluster_members=members, cluster_reference=reference,
                            options={"wide_binaries": {"n_boot": bootstrap, "id_column": "designation"}},
                            inputs={"results": paths["results"], "pairs": paths["pairs"]},
                            command="phdlspec calibration-demo", note=SIMULATED_NOTE)
    paths["calibration"] = cal.save(out / "calibration.ecsv")
    calibrated = cal.apply(results)
    scatter = _truth_scatter(results, truth, calibrated)
    summary = cal.summary()
    nan = {"scatter_before": np.nan, "scatter_after": np.nan}
    summary["scatter_vs_truth_before"] = [scatter.get(n, nan)["scatter_before"] for n in summary["label"]]
    summary["scatter_vs_truth_after"] = [scatter.get(n, nan)["scatter_after"] for n in summary["label"]]
    summary.meta["note"] = SIMULATED_NOTE
    paths["summary"] = write_table(summary, out / "summary.ecsv")
    truth_table = Table({"label": list(scatter), "n_measured": [v["n_measured"] for v in scatter.values()],
                         **{f"{k}_vs_truth": [v[k] for v in scatter.values()]
                            for k in ("scatter_before", "scatter_after", "trend_before", "trend_after")}})
    truth_table.meta["note"] = SIMULATED_NOTE
    paths["truth_scatter"] = write_table(truth_table, out / "truth_scatter.ecsv")
    # write_plots also drops an earlier run's figure of a label no star measures now
    paths["plots"] = D.write_plots(cal.diagnostics, out / "plots", note="SIMULATED stars")
    return {"truth_scatter": scatter, "summary": summary, "n_stars": len(truth), "paths": paths,
            "calibration": cal}
