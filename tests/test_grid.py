"""Training-grid sampling and the sharded, resumable grid writer."""
import json

import numpy as np
import pytest

from phdlspec_app.paths import sha256_file

from phdlspec_app import labels as L
from phdlspec_app.physics.grid import GridSpec, galactic_trend, make_grid, read_grid, sample_labels

I = {n: i for i, n in enumerate(L.label_names())}


def test_sampling_is_deterministic_and_inside_the_domain():
    spec = GridSpec(n=512)
    a, b = sample_labels(spec), sample_labels(spec)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sample_labels(GridSpec(n=512, seed=1)))
    assert a.shape == (512, 32)
    assert a[:, I["teff"]].min() >= 4000 and a[:, I["teff"]].max() <= 7000
    assert a[:, I["fe_h"]].min() >= -2.5 and a[:, I["fe_h"]].max() <= 0.5
    assert a[:, I["vmic"]].min() >= 0.5 and a[:, I["vmic"]].max() <= 2.5
    assert np.all(a[:, I["vbroad"]] == 0) and np.all(a[:, I["rv"]] == 0)
    assert L.check_in_range(a).all()
    # no cool dwarfs below the giant branch envelope, no hot giants at log g 1
    cool = a[:, I["teff"]] < 4300
    assert a[cool, I["logg"]].min() < 2.0 and a[cool, I["logg"]].max() > 4.4
    hot = a[:, I["teff"]] > 6500
    assert a[hot, I["logg"]].min() > 3.3


def test_abundances_scatter_around_the_galactic_trend():
    spec = GridSpec(n=1024)
    a = sample_labels(spec)
    trend = galactic_trend(a[:, I["fe_h"]])
    resid = a[:, I["mg_fe"]] - trend["mg_fe"]
    assert np.abs(resid).max() <= 0.5 + 1e-12 and abs(resid.mean()) < 0.03
    metal_poor = a[:, I["fe_h"]] < -1.2
    assert a[metal_poor, I["mg_fe"]].mean() > 0.3  # alpha-enhanced halo
    assert a[metal_poor, I["mn_fe"]].mean() < -0.2


@pytest.mark.shared_data
@pytest.mark.timeout(900)
def test_make_grid_writes_shards_manifest_and_resumes(tmp_path, shared_dir):
    spec = GridSpec(n=2, n_reference=1, shard_size=2, wl_range=(5160.0, 5200.0))
    manifest_path = make_grid(tmp_path, spec, progress=False)
    manifest = json.loads(manifest_path.read_text())
    assert set(manifest["files"]) == {"shard_00000.npz", "reference_00000.npz"}
    assert manifest["engine_version"] and manifest["data_sha256"]
    assert any(k.startswith("atmosnet/") for k in manifest["data_sha256"])
    g = read_grid(tmp_path)
    assert g["labels"].shape == (2, 32) and g["flux"].shape == (2, g["wavelength"].size)
    assert np.all((g["flux"] > 0) & (g["flux"] < 1.05))
    assert g["jacobian"].shape == (1, 30, g["wavelength"].size)
    k = g["wrt"].index("mg_fe")
    assert g["jacobian"][0, k].min() < -1e-3  # Mg b lies in the window
    # resume: nothing to redo, files untouched
    mtime = (tmp_path / "shard_00000.npz").stat().st_mtime_ns
    make_grid(tmp_path, spec, resume=True, progress=False)
    assert (tmp_path / "shard_00000.npz").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="different grid.*seed"):
        make_grid(tmp_path, GridSpec(n=2, n_reference=1, shard_size=2, seed=1, wl_range=(5160.0, 5200.0)),
                  resume=True, progress=False)
    # extended to 4 spectra: the first shard is kept, the second made, and the grid reads as
    # one sequence whose first two points are the ones already there
    bigger = GridSpec(n=4, n_reference=1, shard_size=2, wl_range=(5160.0, 5200.0))
    make_grid(tmp_path, bigger, resume=True, progress=False)
    assert (tmp_path / "shard_00000.npz").stat().st_mtime_ns == mtime
    g4 = read_grid(tmp_path)
    assert g4["labels"].shape == (4, 32)
    np.testing.assert_allclose(g4["labels"], sample_labels(bigger), atol=1e-9)
    np.testing.assert_array_equal(g4["flux"][:2], g["flux"])
    assert json.loads(manifest_path.read_text())["spec"]["n"] == 4


def test_a_grid_extends_only_by_more_points_on_a_shard_boundary():
    from dataclasses import asdict

    from phdlspec_app.physics.grid import _extension_problem, _jsonable

    def spec(**kw):
        return _jsonable(asdict(GridSpec(n=40, n_reference=8, shard_size=20, **kw)))

    base = spec()
    assert _extension_problem(base, spec()) is None
    assert _extension_problem(base, {**base, "n": 60, "n_reference": 12}) is None
    assert "differs in resolution" in _extension_problem(base, spec(resolution=2000.0))
    assert "smaller" in _extension_problem(base, {**base, "n": 20})
    odd = {**base, "n": 50}
    assert "shard boundary" in _extension_problem(odd, {**base, "n": 60})
    assert "shard boundary" in _extension_problem({**base, "n_reference": 9}, {**base, "n_reference": 12})


def test_training_and_reference_shards_are_interleaved(tmp_path):
    from phdlspec_app.physics.grid import _plan_jobs

    spec = GridSpec(n=6, n_reference=2, shard_size=2)
    jobs = _plan_jobs(spec, sample_labels(spec), sample_labels(spec, 2), tmp_path, {})
    assert [name for _, name, _ in jobs] == ["shard_00000.npz", "reference_00000.npz", "shard_00001.npz",
                                            "reference_00001.npz", "shard_00002.npz"]
    assert [len(lab) for *_, lab in jobs] == [2, 1, 2, 1, 2]


def test_packed_float16_grid_reads_back_within_quantization_and_grows_incrementally(tmp_path):
    from phdlspec_app.physics.grid import _atomic_savez, _write_manifest, pack_grid

    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    lab = sample_labels(GridSpec(n=4))
    wl = np.linspace(5000, 5100, 50)
    flux = rng.uniform(0.3, 1.0, (4, 50)).astype(np.float32)
    jac = (rng.normal(0, 1, (2, 30, 50)) * np.logspace(-6, -1, 30)[None, :, None]).astype(np.float32)
    _atomic_savez(src / "shard_00000.npz", labels=lab[:2], flux=flux[:2], wavelength=wl)
    _atomic_savez(src / "reference_00000.npz", labels=lab[:2], flux=flux[:2], jacobian=jac,
                  wrt=np.array([f"l{i}" for i in range(30)]), wavelength=wl)
    files = {n: {"sha256": sha256_file(src / n), "n": 2} for n in ("shard_00000.npz", "reference_00000.npz")}
    _write_manifest(src / "manifest.json", {"spec": {}, "files": files})
    dst = tmp_path / "packed"
    assert pack_grid(src, dst) == ["reference_00000.npz", "shard_00000.npz"]
    # the grid grows by one shard: only that one is packed
    _atomic_savez(src / "shard_00001.npz", labels=lab[2:], flux=flux[2:], wavelength=wl)
    files["shard_00001.npz"] = {"sha256": sha256_file(src / "shard_00001.npz"), "n": 2}
    _write_manifest(src / "manifest.json", {"spec": {}, "files": files})
    (src / "shard_00002.npz").write_bytes(b"unfinished: not in the manifest")
    assert pack_grid(src, dst) == ["shard_00001.npz"]
    g = read_grid(dst)
    assert np.abs(g["flux"] - flux).max() <= 2.5e-4
    rel = np.abs(g["jacobian"] - jac).max(axis=-1) / np.abs(jac).max(axis=-1)
    assert rel.max() < 1e-3          # every derivative to 3 digits, even those ~1e-6
    assert g["wrt"][5] == "l5" and np.array_equal(g["labels"], lab)
    (dst / "shard_00001.npz").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="checksum"):
        read_grid(dst)


def test_a_star_the_engine_refuses_is_dropped_not_fatal(tmp_path, monkeypatch):
    from phdlspec_app.physics import grid as G

    class Refusing:
        def __init__(self, **kw):
            self.n = 0

        def spectrum(self, row, resolution, wl_out):
            self.n += 1
            if self.n == 2:
                raise ValueError("outside the atmosnet training domain")
            return torch.ones(len(wl_out), dtype=torch.float64) * 0.5

    import torch

    monkeypatch.setattr("phdlspec_app.physics.synthesize.Synthesizer", Refusing)
    G._SYNTH_CACHE.clear()
    with pytest.warns(UserWarning, match="star 1 .* failed"):
        make_grid(tmp_path, GridSpec(n=3, n_reference=0, shard_size=3, wl_range=(5160.0, 5200.0)), progress=False)
    G._SYNTH_CACHE.clear()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["files"]["shard_00000.npz"]["failed"] == [1]
    g = read_grid(tmp_path)
    assert g["labels"].shape[0] == 2 and np.all(g["flux"] == 0.5)


def test_resume_redoes_a_shard_with_unreported_nan_spectra(tmp_path):
    from phdlspec_app.physics.grid import _atomic_savez, _encode, _plan_jobs

    spec = GridSpec(n=4, n_reference=0, shard_size=2)
    lab = sample_labels(spec)
    wl = np.linspace(5000, 5100, 5)
    good = np.full((2, 5), 0.9)
    bad = good.copy()
    bad[1] = np.nan
    _atomic_savez(tmp_path / "shard_00000.npz", **_encode(lab[:2], good, wl))
    _atomic_savez(tmp_path / "shard_00001.npz", **_encode(lab[2:], bad, wl))
    done = {n: {"sha256": sha256_file(tmp_path / n), "n": 2} for n in ("shard_00000.npz", "shard_00001.npz")}
    assert [n for _, n, _ in _plan_jobs(spec, lab, lab[:0], tmp_path, done)] == ["shard_00001.npz"]
    done["shard_00001.npz"]["failed"] = [1]      # a reported failure is kept
    assert _plan_jobs(spec, lab, lab[:0], tmp_path, done) == []
