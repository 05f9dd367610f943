"""The emulator: analytic broadening, domain, file format, Jacobian, gradient term, training."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from phdlspec_app import labels as L
from phdlspec_app.emulator import Emulator, EmulatorFileError, load_emulator
from phdlspec_app.emulator.broadening import DLNLAM, broaden_and_shift
from phdlspec_app.emulator.domain import TrainingDomain
from phdlspec_app.emulator.model import INPUT_LABELS
from phdlspec_app.emulator.network import SpectrumTransformer
from phdlspec_app.emulator.train import (
    TrainConfig,
    TrainingSet,
    _gradient_loss,
    load_training_set,
    split_heldout,
    train,
)
from phdlspec_app.physics.constants import c_kms
from phdlspec_app.physics.grid import GridSpec, sample_labels
from phdlspec_app.physics.lsf import lamost_wavelength

IDX = {n: i for i, n in enumerate(L.label_names())}
SIGMA_1800 = c_kms / 1800 / (2 * math.sqrt(2 * math.log(2))) / (c_kms * DLNLAM)  # R=1800 LSF sigma, pixels


def _line(n=400, centre=200.3, sigma=SIGMA_1800, depth=0.4):
    x = np.arange(n, dtype=np.float64)
    return torch.as_tensor(1 - depth * np.exp(-0.5 * ((x - centre) / sigma) ** 2))[None]


def _moments(flux):
    a = (1 - flux[0]).numpy()
    x = np.arange(a.size)
    c = (a * x).sum() / a.sum()
    return a.sum(), c, math.sqrt((a * (x - c) ** 2).sum() / a.sum())


def test_vbroad_composes_gaussians_and_keeps_the_equivalent_width():
    f = _line()
    vb = 150.0
    out = broaden_and_shift(f, torch.tensor([vb], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64))
    area0, c0, s0 = _moments(f)
    area, c, s = _moments(out)
    expected = math.hypot(s0, vb / (2 * math.sqrt(2 * math.log(2))) / (c_kms * DLNLAM))
    assert area == pytest.approx(area0, rel=1e-6)
    assert c == pytest.approx(c0, abs=1e-6)
    assert s == pytest.approx(expected, rel=1e-3)
    # a flat spectrum stays flat, edges included
    flat = broaden_and_shift(torch.ones(1, 300, dtype=torch.float64), torch.tensor([80.0]), torch.tensor([300.0]))
    assert torch.allclose(flat, torch.ones_like(flat), atol=1e-12)


def test_rv_shifts_by_the_doppler_formula():
    f = _line()
    rv = 123.4
    out = broaden_and_shift(f, torch.tensor([0.0], dtype=torch.float64), torch.tensor([rv], dtype=torch.float64))
    _, c0, _ = _moments(f)
    _, c, _ = _moments(out)
    assert c - c0 == pytest.approx(math.log1p(rv / c_kms) / DLNLAM, abs=2e-3)   # 1.79 px


def test_broadening_is_differentiable_in_vbroad_and_rv():
    f = _line()
    p = torch.tensor([30.0, 40.0], dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda q: broaden_and_shift(f, q[:1], q[1:]), (p,))


def test_domain_accepts_the_grid_and_names_what_is_outside():
    dom = TrainingDomain()
    lab = sample_labels(GridSpec(n=64))
    assert dom.contains(lab).all()
    bad = lab[:4].copy()
    bad[0, IDX["teff"]] = 3600.0
    bad[1, IDX["logg"]] = 1.0            # a 1.0 dex "giant" at ~5000-7000 K: below the grid's RGB
    bad[1, IDX["teff"]] = 6500.0
    bad[2, IDX["mg_fe"]] = bad[2, IDX["mg_fe"]] + 1.2
    bad[3, IDX["rv"]] = 900.0
    assert not dom.contains(bad).any()
    v = dom.violations(bad)
    assert v[0] == ["teff"] and v[1] == ["logg"] and v[2] == ["mg_fe"] and v[3] == ["rv"]
    with pytest.raises(ValueError, match="length 32"):
        dom.contains(np.zeros((2, 5)))
    # a supplement's domain must lie inside the grid's, and the refusal says which label leaves it
    assert dom.covers(TrainingDomain(teff=(4000.0, 5000.0))) is None
    assert "teff range [6500.0, 7500.0]" in dom.covers(TrainingDomain(teff=(6500.0, 7500.0)))
    assert "vmic" in dom.covers(TrainingDomain(vmic=(0.3, 2.0)))
    assert "half-width 0.7" in dom.covers(TrainingDomain(xfe_halfwidth=0.7))


def test_label_bounds_are_schema_range_cut_by_the_training_box():
    from types import SimpleNamespace

    from phdlspec_app import labels as L
    from phdlspec_app.emulator.domain import label_bounds

    lo, hi = label_bounds()                    # no emulator: the default training domain
    assert (lo[IDX["teff"]], hi[IDX["teff"]]) == (4000.0, 7000.0)
    # vbroad and rv are applied analytically: the schema's own range stands
    for name in ("vbroad", "rv"):
        lab = L.LABELS[IDX[name]]
        assert (lo[IDX[name]], hi[IDX[name]]) == (lab.lo, lab.hi)
    emu = SimpleNamespace(domain_box={"teff": (3000.0, 5000.0), "mg_fe": (-0.1, 0.3)})
    lo, hi = label_bounds(emu, {"vbroad": (0.0, 50.0), "teff": (0.0, 1.0)})
    # the box wins over ``defaults``; the schema's range still cuts the box
    assert (lo[IDX["teff"]], hi[IDX["teff"]]) == (max(3000.0, L.LABELS[IDX["teff"]].lo), 5000.0)
    assert (lo[IDX["mg_fe"]], hi[IDX["mg_fe"]]) == (-0.1, 0.3)
    assert (lo[IDX["vbroad"]], hi[IDX["vbroad"]]) == (0.0, 50.0)


def _tiny_emulator(n_pix=200, seed=0):
    torch.manual_seed(seed)
    net = SpectrumTransformer(n_labels=len(INPUT_LABELS), n_pix=n_pix, d_model=16, n_heads=2, n_encoder=1,
                              n_decoder=1, patch=32)
    with torch.no_grad():
        net.linear.weight.normal_(0, 0.3)
    wl = lamost_wavelength()[1000:1000 + n_pix]
    return Emulator(net, np.full(n_pix, 0.9), np.full(n_pix, 0.05), wl, TrainingDomain(), device="cpu")


def test_save_load_round_trip_is_exact_and_bad_files_are_named(tmp_path):
    emu = _tiny_emulator()
    lab = sample_labels(GridSpec(n=4))
    path = emu.save(tmp_path / "m.safetensors")
    emu2 = load_emulator(path, device="cpu")
    np.testing.assert_array_equal(emu(lab), emu2(lab))
    assert emu2.label_names == L.label_names() and emu2.wavelength.shape == (200,)
    assert emu(lab[0]).shape == (200,) and emu(lab).dtype == np.float64
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(EmulatorFileError, match="bad.safetensors"):
        load_emulator(bad)
    with pytest.raises(EmulatorFileError, match="no such"):
        load_emulator(tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="shape"):
        emu(np.zeros((3, 30)))


def test_per_patch_head_round_trips_and_differs_from_the_shared_head(tmp_path):
    """head="patch" gives every wavelength patch its own output map; the file remembers it,
    and a file without the key (older models) loads as the shared head."""
    torch.manual_seed(0)
    net = SpectrumTransformer(n_labels=len(INPUT_LABELS), n_pix=200, d_model=16, n_heads=2, n_encoder=1,
                              n_decoder=1, patch=32, head="patch")
    assert net.head_weight.shape == (7, 16, 32) and not hasattr(net, "head")
    wl = lamost_wavelength()[1000:1200]
    emu = Emulator(net, np.full(200, 0.9), np.full(200, 0.05), wl, TrainingDomain(), device="cpu")
    lab = sample_labels(GridSpec(n=3))
    emu2 = load_emulator(emu.save(tmp_path / "p.safetensors"), device="cpu")
    assert emu2.net.config["head"] == "patch"
    np.testing.assert_array_equal(emu(lab), emu2(lab))
    # changing one patch's head moves only that patch's pixels
    with torch.no_grad():
        net.head_weight[2] += torch.randn(16, 32)
    d = np.abs(emu(lab) - emu2(lab)).max(0)
    assert (d[64:96] > 1e-3).all() and (np.delete(d, np.arange(64, 96)) < 1e-6).all()
    assert "head" not in _tiny_emulator().net.config
    with pytest.raises(ValueError, match="head"):
        SpectrumTransformer(n_pix=200, head="perpixel")


def test_jacobian_matches_finite_differences():
    emu = _tiny_emulator()
    lab = sample_labels(GridSpec(n=2))
    lab[:, IDX["vbroad"]] = 20.0
    jac = emu.jacobian(lab)
    assert jac.shape == (2, 32, 200)
    for name, h in (("teff", 5.0), ("mg_fe", 0.01), ("vmic", 0.01), ("rv", 1.0), ("vbroad", 1.0)):
        up, dn = lab.copy(), lab.copy()
        up[:, IDX[name]] += h
        dn[:, IDX[name]] -= h
        fd = (emu(up) - emu(dn)) / (2 * h)
        scale = np.abs(fd).max()
        assert scale > 0
        assert np.abs(jac[:, IDX[name]] - fd).max() < 2e-2 * scale, name


def test_jacobians_from_several_threads_at_once():
    """Forward-mode AD keeps process-wide state: without the emulator's lock, four threads
    taking Jacobians together fail ("invalid forward AD level"; the dashboard's fit jobs
    and slider path, and fit-batch workers with threads, do this)."""
    import threading

    emu = _tiny_emulator()
    lab = sample_labels(GridSpec(n=4))
    ref = [emu.jacobian(lab[i]) for i in range(4)]
    errors, out = [], {}

    def run(i):
        try:
            for k in range(20):
                out[i, k] = emu.jacobian(lab[i])
        except Exception as exc:  # noqa: BLE001 — collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(out) == 80
    for (i, _), jac in out.items():
        np.testing.assert_array_equal(jac, ref[i])


def test_torch_input_gives_a_differentiable_output():
    emu = _tiny_emulator()
    x = torch.as_tensor(sample_labels(GridSpec(n=3)), dtype=torch.float32).requires_grad_(True)
    y = emu(x)
    assert isinstance(y, torch.Tensor) and y.shape == (3, 200)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_a_large_batch_runs_in_chunks_with_the_same_result():
    from phdlspec_app.emulator import model as M

    emu = _tiny_emulator()
    lab = sample_labels(GridSpec(n=M.CHUNK + 7))
    lab[:, IDX["vbroad"]] = np.linspace(0, 30, len(lab))          # each row broadened its own way
    whole = emu(lab)
    parts = np.concatenate([emu(lab[:5]), emu(lab[5:M.CHUNK + 1]), emu(lab[M.CHUNK + 1:])])
    assert whole.shape == (M.CHUNK + 7, 200)
    assert np.allclose(whole, parts, rtol=0, atol=1e-6)
    # gradients flow through the split too
    x = torch.as_tensor(lab, dtype=torch.float32).requires_grad_(True)
    emu(x)[-1].sum().backward()
    assert x.grad[-1].abs().sum() > 0 and x.grad[0].abs().sum() == 0


@pytest.mark.parametrize("mode", ["step", "label", "point"])
def test_random_probe_gradient_term_estimates_the_full_jacobian_mismatch(mode):
    """E over probes of the gradient term = the mean squared Jacobian mismatch, each label's
    column weighted by its factor c_k (per step δ, or per the label's own rms)."""
    from phdlspec_app.emulator.train import _gradient_units

    emu = _tiny_emulator()
    lab = torch.as_tensor(sample_labels(GridSpec(n=3)), dtype=torch.float32)
    rng = np.random.default_rng(1)
    # engine derivatives per label unit, 10⁴ apart in size between labels (as Teff per K
    # and Zn per dex are)
    raw = rng.normal(0, 1.0, (3, 30, 200)) * np.logspace(-5, -1, 30)[None, :, None]
    factor, unit = _gradient_units(raw, mode)
    factor = np.broadcast_to(factor, (3, 30))             # "point" gives one row per point
    target = torch.as_tensor(raw * factor[:, :, None], dtype=torch.float32)
    cfg = TrainConfig(n_probes=400, ref_batch=3)
    torch.manual_seed(0)
    est = float(_gradient_loss(emu, lab, target, cfg, rng, (factor, unit)))
    # exact: the emulator's Jacobian per label unit, times c_k; the default labels carry
    # vbroad = 0 and rv = 0, so the broadened Jacobian is the network's
    jac = torch.as_tensor(emu.jacobian(lab.numpy())[:, [L.label_names().index(n) for n in INPUT_LABELS]],
                          dtype=torch.float32)
    jac = jac * torch.as_tensor(factor.copy(), dtype=torch.float32)[:, :, None]
    exact = float(((jac - target) ** 2).sum(1).mean()) / unit
    assert est == pytest.approx(exact, rel=0.15)


def test_label_normalized_gradient_term_weighs_every_label_by_its_own_size():
    """In "label" mode a 10 % error in a weak label's derivative costs what a 10 % error in a
    strong one costs; in "step" mode it is invisible."""
    from phdlspec_app.emulator.train import REL_UNIT, _gradient_units, _half_range

    rng = np.random.default_rng(2)
    scale = np.full(30, 1e-2)              # per unit: K for teff, dex for the abundances
    scale[0], scale[3] = 1e-5, 1e-4        # teff per K; fe_h 100× weaker than eu_fe
    raw = rng.normal(0, 1.0, (4, 30, 50)) * scale[None, :, None]
    raw[:, 7] = 0.0                        # a label with no lines at all
    for mode in ("label", "step"):
        factor, unit = _gradient_units(raw, mode)
        # fe_h (index 3) and eu_fe (29) have the same step δ
        cost = [((0.1 * raw[:, k] * factor[k]) ** 2).mean() / unit for k in (3, 29)]
        if mode == "label":
            assert cost[0] == pytest.approx(cost[1], rel=1e-9)
            assert cost[1] == pytest.approx(1.0 / 30, rel=1e-9)   # one REL_UNIT per label
            # the line-less label is matched in absolute terms, at 0.1 % of the strongest
            # label's derivative with respect to the scaled input (not at 1/0)
            hr = _half_range()
            rms = np.sqrt((raw ** 2).mean(axis=(0, 2)))
            assert factor[7] == pytest.approx(hr[7] / (1e-3 * (rms * hr).max()), rel=1e-9)
        else:
            assert cost[0] < 1e-3 * cost[1]
    # "point": per reference point, so a star where a label's lines are weak still counts;
    # never more than 10× the label's average weight
    weak = raw.copy()
    weak[1, 29] *= 0.2                     # eu_fe 5× weaker at point 1
    weak[2, 29] *= 1e-3                    # and all but absent at point 2
    factor, _ = _gradient_units(weak, "point")
    label_factor, _ = _gradient_units(weak, "label")
    assert factor.shape == (4, 30)
    rms_m = np.sqrt((weak[:, 29] ** 2).mean(axis=1))
    assert factor[1, 29] == pytest.approx(1 / rms_m[1], rel=1e-9)
    assert factor[1, 29] / factor[0, 29] == pytest.approx(rms_m[0] / rms_m[1], rel=1e-9)
    assert factor[2, 29] == pytest.approx(10 * label_factor[29], rel=1e-9)
    with pytest.raises(ValueError, match="all zero"):
        _gradient_units(np.zeros((2, 30, 5)), "label")
    with pytest.raises(ValueError, match="grad_norm"):
        _gradient_units(raw, "bogus")
    assert REL_UNIT == 0.1


def test_heldout_split_is_stable_as_the_grid_grows():
    a, b = split_heldout(100), split_heldout(3300)
    assert np.array_equal(a, b[:100])
    assert b.sum() == 300


def _toy_set(n=48, n_ref=6, n_pix=120):
    """A training set whose 'spectra' are an analytic function of teff and mg_fe, with
    its exact Jacobian — to test the training loop's mechanics, not physics."""
    wl = lamost_wavelength()[2000:2000 + n_pix]
    lab = sample_labels(GridSpec(n=n + n_ref))
    x = np.arange(n_pix)

    def model(l):
        t = (l[:, IDX["teff"]][:, None] - 5500.0) / 1500.0
        m = l[:, IDX["mg_fe"]][:, None]
        return 1 - 0.3 * np.exp(-0.5 * ((x - 60) / 3.0) ** 2) * (1 + 0.5 * m - 0.4 * t)

    jac = np.zeros((n_ref, 30, n_pix))
    g = 0.3 * np.exp(-0.5 * ((x - 60) / 3.0) ** 2)
    jac[:, INPUT_LABELS.index("teff")] = g * 0.4 / 1500.0
    jac[:, INPUT_LABELS.index("mg_fe")] = -g * 0.5
    return TrainingSet(lab[:n], model(lab[:n]).astype(np.float32), wl, lab[n:], model(lab[n:]).astype(np.float32),
                       jac.astype(np.float32), TrainingDomain(), {"grid": "toy"})


def _toy_config(**kw) -> TrainConfig:
    """A small network for the toy set. "step" units: the toy's 28 line-less labels would
    otherwise be held at zero derivative with weight 1/(0.1 % of Teff's), slowing the flux
    fit these tests measure."""
    net = {"d_model": 16, "n_heads": 2, "n_encoder": 1, "n_decoder": 1, "patch": 24}
    return TrainConfig(**{"epochs": 10, "batch": 16, "lr": 3e-3, "checkpoint_every": 5, "network": net,
                          "grad_norm": "step", **kw})


def test_training_reduces_the_loss_is_deterministic_and_resumes(tmp_path):
    torch.set_num_threads(1)
    data = _toy_set()
    cfg = _toy_config(epochs=20)
    hist = []
    emu = train(data, tmp_path / "a.safetensors", cfg, progress=False, log=hist.append)
    assert hist[-1]["loss_flux"] < 0.5 * hist[0]["loss_flux"]
    assert hist[-1]["loss_grad"] is not None
    emu_b = train(data, tmp_path / "b.safetensors", cfg, progress=False)
    lab = data.labels[:5]
    np.testing.assert_array_equal(emu(lab), emu_b(lab))
    # a run interrupted after its epoch-5 checkpoint, then resumed, ends where the
    # uninterrupted run ends
    def stop_at_7(rec):
        if rec["epoch"] == 7:
            raise KeyboardInterrupt

    work = tmp_path / "c.train"
    with pytest.raises(KeyboardInterrupt):
        train(data, tmp_path / "c.safetensors", cfg, workdir=work, progress=False, log=stop_at_7)
    assert torch.load(work / "checkpoint.pt", weights_only=True)["epoch"] == 5
    emu_c = train(data, tmp_path / "c.safetensors", cfg, workdir=work, resume=True, progress=False)
    np.testing.assert_allclose(emu_c(lab), emu(lab), atol=1e-6)
    loaded = load_emulator(tmp_path / "c.safetensors")
    assert loaded.card["training"]["n_train_spectra"] == 48


def test_fine_tuning_starts_from_the_init_weights_and_cool_weight_favours_cool_stars(tmp_path):
    """``train(..., init=emu)`` continues from emu's weights and flux scaling (its first-epoch
    loss is the trained model's, not a fresh network's) and lowers it further; a model given
    to init is left untouched. ``cool_weight`` > 1 buys a smaller error on the cool
    spectra than the same run without it."""
    torch.set_num_threads(1)
    data = _toy_set()
    cfg = _toy_config()
    fresh = []
    base = train(data, tmp_path / "a.safetensors", cfg, progress=False, log=fresh.append)
    before = base(data.labels[:5]).copy()
    # with a vanishing learning rate the fine-tuned model is the init model: same weights, same scaling
    still = train(data, tmp_path / "s.safetensors", _toy_config(epochs=1, lr=1e-12), progress=False, init=base)
    np.testing.assert_allclose(still.net(still.scale(torch.as_tensor(data.labels[:5], dtype=torch.float32))).numpy(),
                               base.net(base.scale(torch.as_tensor(data.labels[:5], dtype=torch.float32))).numpy(),
                               atol=1e-6)
    tuned_hist = []
    tune_cfg = _toy_config(lr=1e-3)
    tuned = train(data, tmp_path / "b.safetensors", tune_cfg, progress=False, log=tuned_hist.append, init=base)
    assert tuned_hist[0]["loss_flux"] < fresh[0]["loss_flux"]
    assert tuned_hist[-1]["loss_flux"] < fresh[-1]["loss_flux"]
    assert tuned is not base
    np.testing.assert_array_equal(base(data.labels[:5]), before)
    # the init model's flux scaling, not the new data's, and its network in the card
    dim = TrainingSet(data.labels, 0.9 * data.flux, data.wavelength, data.ref_labels, 0.9 * data.ref_flux,
                      data.jacobian, data.domain, data.source)
    big = {"d_model": 32, "n_heads": 2, "n_encoder": 1, "n_decoder": 1, "patch": 24}
    work = tmp_path / "d.train"
    d1 = train(dim, tmp_path / "d.safetensors", _toy_config(epochs=2, lr=1e-12, network=big, checkpoint_every=1),
               workdir=work, progress=False, init=base)
    np.testing.assert_array_equal(d1.flux_mean.numpy(), base.flux_mean.numpy())
    assert d1.card["training"]["config"]["network"]["d_model"] == 16
    # resuming that run without init keeps the scaling its weights were trained against
    d2 = train(dim, tmp_path / "d.safetensors", _toy_config(epochs=2, lr=1e-12, checkpoint_every=1),
               workdir=work, resume=True, progress=False)
    np.testing.assert_array_equal(d2.flux_mean.numpy(), base.flux_mean.numpy())
    # ... and still says it was a fine-tune, of which model
    assert d2.card["training"]["init"] == d1.card["training"]["init"] is not None
    assert d2.card["training"]["init"]["final_loss_flux"] == base.card["training"]["final_loss_flux"]
    with pytest.raises(ValueError, match="cool_weight"):
        train(data, tmp_path / "z.safetensors", _toy_config(cool_weight=0.0), progress=False)
    assert load_emulator(tmp_path / "b.safetensors").card["training"]["init"] is not None
    other = _toy_set(n_pix=100)
    with pytest.raises(ValueError, match="wavelength"):
        train(other, tmp_path / "c.safetensors", tune_cfg, progress=False, init=base)
    shifted = TrainingSet(data.labels, data.flux, data.wavelength * (1 + 1e-4), data.ref_labels, data.ref_flux,
                          data.jacobian, data.domain, data.source)   # the same pixel count, 30 km/s off
    with pytest.raises(ValueError, match="wavelength grid differs"):
        train(shifted, tmp_path / "c.safetensors", tune_cfg, progress=False, init=base)

    teff = data.labels[:, IDX["teff"]]
    cool = teff < np.median(teff)
    err = {}
    for w in (1.0, 10.0):
        c = _toy_config(cool_weight=w, cool_teff=float(np.median(teff)))
        e = train(data, tmp_path / f"w{w}.safetensors", c, progress=False)
        e.residual_correction = None  # the network's own error: the correction would hide most of the difference
        r = (e(data.labels) - data.flux) ** 2
        err[w] = (r[cool].mean(), r[~cool].mean())
    assert err[10.0][0] < err[1.0][0]
    assert err[10.0][0] / err[10.0][1] < err[1.0][0] / err[1.0][1]


def test_the_gradient_term_teaches_the_derivative_the_flux_alone_does_not_pin_down():
    """With the spectra all at mg_fe = 0, only the prior says how flux responds to Mg."""
    torch.set_num_threads(1)
    data = _toy_set(n=32)
    data.labels[:, IDX["mg_fe"]] = 0.0
    data.ref_labels[:, IDX["mg_fe"]] = 0.0
    net = {"d_model": 16, "n_heads": 2, "n_encoder": 1, "n_decoder": 1, "patch": 24}
    k = INPUT_LABELS.index("mg_fe")

    def cosine(grad_weight, path):
        # "step" units: in "label" units the toy's 28 line-less labels are held at zero
        # derivative so hard that this tiny network tops out at cosine 0.898 (λ 1–20)
        emu = train(data, path, TrainConfig(epochs=25, batch=16, lr=3e-3, grad_weight=grad_weight,
                                            network=net, grad_norm="step"), progress=False)
        j = emu.jacobian(data.ref_labels)[:, IDX["mg_fe"]]
        t = data.jacobian[:, k]
        return float((j * t).sum() / np.sqrt((j * j).sum() * (t * t).sum()))

    import tempfile
    with tempfile.TemporaryDirectory() as d:
        with_prior = cosine(20.0, f"{d}/p.safetensors")
        without = cosine(0.0, f"{d}/n.safetensors")
    assert with_prior > 0.9
    assert with_prior > without + 0.3


def test_phdlspec_train_on_a_small_engine_grid_end_to_end(tmp_path, shared_dir):
    """`phdlspec grid` (ab initio, a 40 Å window) then `phdlspec train`, then the model file."""
    from phdlspec_app.cli import main

    grid = tmp_path / "grid"
    assert main(["grid", "-n", "11", "--reference-points", "1", "--shard-size", "6", "--wl-min", "5160",
                 "--wl-max", "5200", "-o", str(grid)]) == 0
    model = tmp_path / "m.safetensors"
    assert main(["train", "--grid", str(grid), "-o", str(model), "--epochs", "4", "--batch", "4",
                 "--d-model", "16", "--checkpoint-every", "2"]) == 0
    emu = load_emulator(model, device="cpu")
    card = emu.card["training"]
    assert card["n_train_spectra"] == 10 and card["n_reference"] == 1   # index 10 is held out
    assert emu.wavelength.size == 34 and 5160 < emu.wavelength[0] < 5161.2
    f = emu(L.defaults())
    assert f.shape == (34,) and np.isfinite(f).all()
    assert main(["train", "--grid", str(tmp_path / "absent"), "-o", str(model)]) == 2

    # a cool-star supplement (its own seed, Teff 4000-5000 K) is trained on with the grid; the
    # grid's own held-out spectrum stays the held-out set (the supplement is too small to hold one out)
    cool = tmp_path / "cool"
    assert main(["grid", "-n", "3", "--reference-points", "0", "--shard-size", "3", "--seed", "9",
                 "--teff-min", "4000", "--teff-max", "5000", "--wl-min", "5160", "--wl-max", "5200",
                 "-o", str(cool)]) == 0
    both = load_training_set([grid, cool])
    held = load_training_set([grid, cool], heldout=True)
    assert len(both.labels) == 10 + 3 and len(held.labels) == 1
    assert (both.labels[10:, L.label_names().index("teff")] < 5000).all()
    assert both.domain.teff == load_training_set(grid).domain.teff
    assert np.array_equal(held.labels, load_training_set(grid, heldout=True).labels)
    model2 = tmp_path / "m2.safetensors"
    assert main(["train", "--grid", str(grid), str(cool), "-o", str(model2), "--epochs", "2", "--batch", "4",
                 "--d-model", "16"]) == 0
    card = load_emulator(model2, device="cpu").card["training"]
    assert card["n_train_spectra"] == 13 and card["source"]["supplements"][0]["n_grid"] == 3
    # supplements outside the grid's domain or on another window are refused by name
    for name, change, why in (("hot", {"teff": [6500.0, 7500.0]}, "teff range"),
                              ("other", {"wl_range": [5170.0, 5200.0]}, "wavelength window")):
        shutil.copytree(cool, tmp_path / name)
        man = json.loads((tmp_path / name / "manifest.json").read_text())
        man["spec"].update(change)
        (tmp_path / name / "manifest.json").write_text(json.dumps(man))
        with pytest.raises(ValueError, match=rf"{name}: cannot supplement .*{why}"):
            load_training_set([grid, tmp_path / name])
    assert main(["train", "--grid", str(grid), str(tmp_path / "other"), "-o", str(model2)]) == 2
    other = tmp_path / "other"
    assert main(["grid", "-n", "1", "--teff-min", "5000", "--teff-max", "4000", "-o", str(other)]) == 2


@pytest.fixture(scope="module")
def engine_observations(tmp_path_factory, shared_dir):
    """Five ab initio spectra (5080-5420 A, R = 1800) with Gaussian noise at S/N 100,
    written as FITS files, and a reference table with teff, logg, fe_h and mg_fe only."""
    from astropy.table import Table

    from phdlspec_app.io import Spectrum, write_spectrum
    from phdlspec_app.physics.synthesize import Synthesizer

    d = tmp_path_factory.mktemp("observed")
    wl = lamost_wavelength()
    wl = wl[(wl > 5080) & (wl < 5420)]
    syn = Synthesizer(wl_range=(5050.0, 5450.0))
    lab = sample_labels(GridSpec(n=5, seed=7))
    rng = np.random.default_rng(3)
    rows = []
    for i, row in enumerate(lab):
        flux = syn.spectrum(torch.as_tensor(row), wl_out=wl).numpy()
        noisy = flux + rng.normal(0, 0.01, flux.size)
        write_spectrum(Spectrum(wavelength=wl, flux=noisy, ivar=np.full(wl.size, 1e4),
                                mask=np.zeros(wl.size, bool), meta={"object": f"sim{i}"}), d / f"s{i}.fits")
        rows.append((f"s{i}.fits", row[IDX["teff"]], row[IDX["logg"]], row[IDX["fe_h"]], row[IDX["mg_fe"]]))
    Table(rows=rows, names=("file", "TEFF", "LOGG", "FE_H", "MG_FE")).write(d / "ref.ecsv")
    return d / "ref.ecsv", wl, lab


def test_data_driven_finetuning_on_engine_spectra_lowers_chi2_and_keeps_the_prior(engine_observations, tmp_path):
    from phdlspec_app.emulator.observed import finetune, load_observed

    table, wl, lab = engine_observations
    torch.manual_seed(0)
    net = SpectrumTransformer(n_labels=len(INPUT_LABELS), n_pix=wl.size, d_model=16, n_heads=2, n_encoder=1,
                              n_decoder=1, patch=32)
    emu = Emulator(net, np.full(wl.size, 0.9), np.full(wl.size, 0.05), wl, TrainingDomain(), device="cpu")
    obs = load_observed(table, emu.wavelength, 1800.0)
    assert len(obs.files) == 5
    # labels from the table, the rest at the Galactic trend; rv assumed 0 and flagged
    assert obs.known[:, IDX["mg_fe"]].all() and not obs.known[:, IDX["ca_fe"]].any()
    np.testing.assert_allclose(obs.labels[:, IDX["teff"]], lab[:, IDX["teff"]])
    assert all("rv_assumed_0" in f for f in obs.flags)
    toy = _toy_set(n=8, n_ref=3, n_pix=wl.size)
    hist = []
    # the toy grid's spectra are unrelated to these observations: no anchor term here
    finetune(emu, obs, tmp_path / "tuned.safetensors", grid=toy, flux_weight=0.0,
             config=TrainConfig(epochs=25, batch=1, lr=3e-3, grad_norm="step"), progress=False,
             log=hist.append)
    assert hist[-1]["chi2_per_pixel"] < 0.6 * hist[0]["chi2_per_pixel"]
    assert hist[-1]["loss_grad"] is not None
    card = load_emulator(tmp_path / "tuned.safetensors").card["finetune"]
    assert card["physics_prior"] and set(card["labels_from_table"]) >= {"teff", "logg", "fe_h", "mg_fe"}
    bad = tmp_path / "bad.ecsv"
    bad.write_text("# %ECSV 1.0\n# ---\n# datatype:\n# - {name: teff, datatype: float64}\nteff\n5000\n")
    with pytest.raises(ValueError, match="bad.ecsv.*'file' column"):
        load_observed(bad, wl)
