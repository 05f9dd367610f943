"""The residual correction: the network's smooth error, learned from its training spectra,
subtracted from its output; stored in the model file; differentiable; measured on the
default model's held-out spectra."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_emulator import IDX, _tiny_emulator

from phdlspec_app import labels as L
from phdlspec_app.emulator import EmulatorFileError, load_emulator
from phdlspec_app.emulator.model_error import residuals
from phdlspec_app.emulator.residual_correction import ResidualCorrection, build_correction
from phdlspec_app.emulator.train import attach_residual_correction
from phdlspec_app.physics.grid import GridSpec, sample_labels

torch.set_num_threads(1)


def _smooth_error(lab, n_pix=200):
    """An error that varies slowly with Teff and log g, of one shape in wavelength."""
    shape = np.sin(np.linspace(0, 6 * np.pi, n_pix))
    amp = 0.01 * np.sin(lab[:, IDX["teff"]] / 700.0) + 0.005 * (lab[:, IDX["logg"]] - 3.0)
    return amp[:, None] * shape[None]


def test_the_correction_removes_a_smooth_error_on_spectra_it_never_saw(tmp_path):
    emu = _tiny_emulator()
    train = sample_labels(GridSpec(n=600))
    rng = np.random.default_rng(1)
    # "engine" = emulator minus a smooth error minus pixel noise the kernel must average away
    engine = emu(train) - _smooth_error(train) - rng.normal(0, 0.002, (600, 200))
    new = sample_labels(GridSpec(n=60), offset=5000)
    truth = emu(new) - _smooth_error(new)
    before = np.median(np.abs(emu(new) - truth))
    attach_residual_correction(emu, train, engine)
    after = np.median(np.abs(emu(new) - truth))
    assert after < 0.35 * before, (before, after)
    card = emu.card["residual_correction"]
    assert card["n_train"] == 600 and card["rank"] == 128
    assert card["train_median_abs_after"] < card["train_median_abs_before"]
    # attaching again replaces the correction rather than stacking a second one
    once = emu(new)
    attach_residual_correction(emu, train, engine)
    np.testing.assert_allclose(emu(new), once, atol=2e-6)
    # the model file keeps it exactly; a file without one loads without one
    emu2 = load_emulator(emu.save(tmp_path / "c.safetensors"), device="cpu")
    np.testing.assert_array_equal(emu2(new), emu(new))
    assert emu2.residual_correction.rank == 128
    assert load_emulator(_tiny_emulator().save(tmp_path / "n.safetensors"), device="cpu").residual_correction is None


def test_the_corrected_emulator_is_differentiable_and_its_jacobian_includes_the_correction():
    emu = _tiny_emulator()
    train = sample_labels(GridSpec(n=200))
    attach_residual_correction(emu, train, emu(train) - 3 * _smooth_error(train))
    lab = sample_labels(GridSpec(n=2), offset=300)
    jac = emu.jacobian(lab)
    for name, h in (("teff", 5.0), ("logg", 0.01), ("fe_h", 0.01)):
        up, dn = lab.copy(), lab.copy()
        up[:, IDX[name]] += h
        dn[:, IDX[name]] -= h
        fd = (emu(up) - emu(dn)) / (2 * h)
        corr_part = (emu.residual_correction(torch.as_tensor(up, dtype=torch.float32))
                     - emu.residual_correction(torch.as_tensor(dn, dtype=torch.float32))).numpy() / (2 * h)
        assert np.abs(corr_part).max() > 0.05 * np.abs(fd).max(), name   # the correction matters here
        assert np.abs(jac[:, IDX[name]] - fd).max() < 2e-2 * np.abs(fd).max(), name
    x = torch.tensor(lab, dtype=torch.float32, requires_grad=True)
    emu(x).sum().backward()
    assert torch.all(torch.isfinite(x.grad)) and x.grad[:, IDX["teff"]].abs().max() > 0


def test_bad_corrections_are_refused_with_the_problem_named(tmp_path):
    lab = sample_labels(GridSpec(n=30))
    with pytest.raises(ValueError, match="at least 20"):
        build_correction(np.zeros((10, 200)), lab[:10])
    with pytest.raises(ValueError, match="do not match"):
        build_correction(np.zeros((30, 200)), lab[:, :5])
    with pytest.raises(ValueError, match="do not fit together"):
        ResidualCorrection(np.zeros((30, 3)), np.zeros((30, 4)), np.zeros((5, 200)))
    emu = _tiny_emulator()
    emu.residual_correction = build_correction(np.zeros((30, 200)), lab)
    path = emu.save(tmp_path / "m.safetensors")
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    t = load_file(str(path))
    t["residual_correction.bandwidth"] = torch.tensor([150.0, -1.0, 0.2], dtype=torch.float64)
    save_file(t, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(EmulatorFileError, match="bad.safetensors.*residual correction"):
        load_emulator(tmp_path / "bad.safetensors", device="cpu")
    with pytest.raises(ValueError, match="pixels"):
        type(emu)(emu.net, emu.flux_mean, emu.flux_std, emu.wavelength, emu.domain, device="cpu",
                  residual_correction=build_correction(np.zeros((30, 100)), lab))


def test_the_default_model_is_closer_to_the_engine_on_heldout_spectra_with_its_correction():
    """Measured on the committed grid's held-out spectra (never trained on, never in the
    correction): the correction must earn its place."""
    from phdlspec_app.emulator.train import load_training_set
    from phdlspec_app.paths import assets_dir

    emu = load_emulator(device="cpu")
    assert emu.residual_correction is not None, "the default model carries a residual correction"
    held = load_training_set(assets_dir() / "grid", heldout=True)
    lab, flux = held.labels[:120], held.flux[:120]
    with_corr = np.median(np.abs(residuals(emu, lab, flux)))
    rc, emu.residual_correction = emu.residual_correction, None
    without = np.median(np.abs(residuals(emu, lab, flux)))
    emu.residual_correction = rc
    assert with_corr < 0.8 * without, (with_corr, without)
    assert emu.card["residual_correction"]["n_train"] == emu.card["training"]["n_train_spectra"]
    # the labels it reads are the schema's
    assert list(ResidualCorrection.KEYS) == [n for n in L.label_names() if n in ("teff", "logg", "fe_h")]
