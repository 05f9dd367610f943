"""Model atmospheres: atmosnet emulator (safe loading, solar sanity numbers, autograd)
and the Kurucz ATLAS9 grid (parsing, interpolation, cross-check).

Reference numbers: shared/docs/sme-reference-notes.md ("atmosnet checked against
physics": solar top T 3691 K; at τ_Ross ≈ 1 T 6244 K, P 1.1e5 dyn cm⁻², ne 4.7e13 cm⁻³;
P ≈ g·RHOX within 2 %), and the ATLAS model files themselves.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle

import numpy as np
import pytest
import torch

from phdlspec_app.physics import atmosphere as A

needs_atmosnet = pytest.mark.skipif(importlib.util.find_spec("atmosnet") is None,
                                    reason="the atmosnet package (weights) is not installed")
SOLAR = (5777.0, 4.44, 0.0, 0.0)


# ---------------------------------------------------------------------------- atmosnet
@needs_atmosnet
def test_installed_weight_files_have_the_recorded_checksums():
    for kind, digest in A.ATMOSNET_SHA256.items():
        assert hashlib.sha256(A._atmosnet_file(kind).read_bytes()).hexdigest() == digest


@needs_atmosnet
def test_solar_atmosnet_model_matches_the_reference_numbers():
    atm = A.atmosnet_atmosphere(*SOLAR)
    assert atm.T.shape == (80,) and atm.T.dtype == torch.float64
    assert torch.all(torch.diff(atm.rhox) > 0) and torch.all(torch.diff(atm.tau_ross) > 0)
    assert atm.T[0].item() == pytest.approx(3691.0, abs=1.0)
    i = int(torch.argmin(torch.log10(atm.tau_ross).abs()))
    assert atm.tau_ross[i].item() == pytest.approx(1.0, abs=0.05)
    assert atm.T[i].item() == pytest.approx(6244.0, abs=2.0)
    assert atm.P[i].item() == pytest.approx(1.1e5, rel=0.02)
    assert atm.ne[i].item() == pytest.approx(4.7e13, rel=0.02)
    assert torch.all(atm.n_total > 0)


@needs_atmosnet
def test_atmosnet_is_in_hydrostatic_equilibrium():
    # P_gas = g · rhox up to radiation/turbulent pressure and emulator error: the notes
    # quote 2 %; the worst layer of the solar model is 2.1 % off.
    for teff, logg, feh in [(5777.0, 4.44, 0.0), (4500.0, 2.0, -0.3), (6200.0, 4.0, -1.5)]:
        atm = A.atmosnet_atmosphere(teff, logg, feh, 0.0)
        ratio = atm.P / (10**logg * atm.rhox)
        assert torch.all((ratio - 1).abs() < 0.03), (teff, logg, feh)
        assert (ratio.median() - 1).abs() < 0.015


@needs_atmosnet
def test_atmosnet_gradients_match_finite_differences():
    x0 = torch.tensor([5500.0, 4.2, -0.4, 0.1], dtype=torch.float64, requires_grad=True)
    atm = A.atmosnet_atmosphere(*x0)
    layers = [10, 40, 60]
    steps = [1.0, 1e-3, 1e-3, 1e-3]           # K, dex, dex, dex
    for layer in layers:
        (grad,) = torch.autograd.grad(atm.T[layer], x0, retain_graph=True)
        assert torch.all(torch.isfinite(grad))
        for j, h in enumerate(steps):
            xp, xm = x0.detach().clone(), x0.detach().clone()
            xp[j] += h
            xm[j] -= h
            fd = (A.atmosnet_atmosphere(*xp).T[layer] - A.atmosnet_atmosphere(*xm).T[layer]) / (2 * h)
            assert grad[j].item() == pytest.approx(fd.item(), rel=1e-4, abs=1e-6), (layer, j)
    # a hotter star is hotter at every depth
    (g_teff,) = torch.autograd.grad(atm.T.sum(), x0)
    assert g_teff[0] > 0


@needs_atmosnet
def test_atmosnet_batches_broadcast_and_switch_networks():
    teff = torch.tensor([[5000.0, 7000.0, 9000.0], [5777.0, 6000.0, 8000.0]], dtype=torch.float64)
    atm = A.atmosnet_atmosphere(teff, 4.0, torch.tensor([0.0, -1.0, 0.3]).double(), 0.2)
    assert atm.T.shape == (2, 3, 80) and atm.source == "atmosnet:cool+hot"
    single = A.atmosnet_atmosphere(9000.0, 4.0, 0.3, 0.2)
    assert single.source == "atmosnet:hot"
    torch.testing.assert_close(atm.T[0, 2], single.T)
    torch.testing.assert_close(atm.ne[1, 1], A.atmosnet_atmosphere(6000.0, 4.0, -1.0, 0.2).ne)
    assert A.atmosnet_atmosphere(8000.0, 4.0, 0.0).source == "atmosnet:cool"


@needs_atmosnet
@pytest.mark.parametrize("params", [(5250.0, 0.5, 0.0, 0.0),   # no logg < 1 trained at 5250 K
                                    (9000.0, 1.0, 0.0, 0.0),   # hot net: logg ≥ 1.5 at 9000 K
                                    (5000.0, 4.0, 1.8, 0.0), (5000.0, 4.0, 0.0, 0.8),
                                    (2000.0, 4.0, 0.0, 0.0)])
def test_atmosnet_refuses_labels_outside_its_training_domain(params):
    with pytest.raises(ValueError, match="outside the atmosnet training domain"):
        A.atmosnet_atmosphere(*params)


@needs_atmosnet
def test_model_atmosphere_to_keeps_values():
    atm = A.atmosnet_atmosphere(*SOLAR)
    moved = atm.to("cpu", dtype=torch.float32)
    assert moved.T.dtype == torch.float32 and moved.vturb is None and moved.source == atm.source
    assert moved.P[20].item() == pytest.approx(atm.P[20].item(), rel=1e-6)


# ---------------------------------------------------------------- restricted unpickling
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unpickler_refuses_a_pickle_that_calls_os_system(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([{"w": np.zeros(3)}, _Evil(marker)]))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        A.read_weight_pickle(path, digest)          # right checksum, wrong content
    assert not marker.exists()


def test_unpickler_refuses_dill_imports_of_other_modules():
    # dill's way of naming a function: _get_attr(_import_module("os"), "system")
    data = b"cdill._dill\n_import_module\n(Vos\ntR."
    with pytest.raises(pickle.UnpicklingError, match="refusing to import module 'os'"):
        A.restricted_loads(data)


def test_unpickler_refuses_object_arrays():
    with pytest.raises(pickle.UnpicklingError):
        A.restricted_loads(pickle.dumps(np.array([{"a": 1}], dtype=object)))


def test_weight_reader_checks_the_checksum_first(tmp_path):
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps({"w": np.arange(4.0), "names": ["a", "b"]}))
    with pytest.raises(A.ChecksumError, match="sha256"):
        A.read_weight_pickle(path, A.ATMOSNET_SHA256["cool"])
    good = A.read_weight_pickle(path, hashlib.sha256(path.read_bytes()).hexdigest())
    np.testing.assert_array_equal(good["w"], np.arange(4.0))
    assert good["names"] == ["a", "b"]


# --------------------------------------------------------------------------- Kurucz
def _raw_node(shared_dir, fname, teff, logg):
    """Independent plain read of one model of a grid file (first 7 columns)."""
    lines = (shared_dir / "physics/atmospheres/kurucz1993_sdsc_grid" / fname).read_text().splitlines()
    start = next(i for i, s in enumerate(lines)
                 if f"EFF   {teff:.0f}.  GRAVITY {logg:.5f}" in s)
    deck = next(i for i in range(start, len(lines)) if "DECK6" in lines[i])
    n = int(lines[deck].split()[2])
    return np.array([[float(v) for v in s.split()[:7]] for s in lines[deck + 1:deck + 1 + n]])


@pytest.mark.shared_data
def test_kurucz_interpolation_reproduces_a_grid_node(shared_dir):
    raw = _raw_node(shared_dir, "ap00k2.dat", 5750, 4.5)
    atm = A.kurucz_atmosphere(5750.0, 4.5, 0.0)
    assert atm.T.shape == (raw.shape[0],)
    np.testing.assert_allclose(atm.T.numpy(), raw[:, 1], rtol=1e-12)
    np.testing.assert_allclose(atm.P.numpy(), raw[:, 2], rtol=1e-12)
    np.testing.assert_allclose(atm.ne.numpy(), raw[:, 3], rtol=1e-12)
    np.testing.assert_allclose(atm.rhox.numpy(), raw[:, 0], rtol=1e-12)
    # a metal-poor file whose lines lost the Fortran carriage-control character
    raw = _raw_node(shared_dir, "am05k2.dat", 4500, 2.0)
    np.testing.assert_allclose(A.kurucz_atmosphere(4500, 2.0, -0.5).T.numpy(), raw[:, 1], rtol=1e-12)


def _t_at(atm, log_tau):
    return np.interp(log_tau, np.log10(atm.tau_ross.numpy()), atm.T.numpy())


@pytest.mark.shared_data
@pytest.mark.parametrize("mid, lo, hi", [((5875.0, 4.5, 0.0), (5750.0, 4.5, 0.0), (6000.0, 4.5, 0.0)),
                                         ((5750.0, 4.25, 0.0), (5750.0, 4.0, 0.0), (5750.0, 4.5, 0.0)),
                                         ((5750.0, 4.5, -0.75), (5750.0, 4.5, -1.0), (5750.0, 4.5, -0.5))])
def test_kurucz_interpolation_lies_between_neighbours(shared_dir, mid, lo, hi):
    log_tau = np.linspace(-4.0, 1.5, 23)
    t_mid = _t_at(A.kurucz_atmosphere(*mid), log_tau)
    t_lo, t_hi = _t_at(A.kurucz_atmosphere(*lo), log_tau), _t_at(A.kurucz_atmosphere(*hi), log_tau)
    assert np.all(t_mid >= np.minimum(t_lo, t_hi) - 1e-6)
    assert np.all(t_mid <= np.maximum(t_lo, t_hi) + 1e-6)
    # and it is the mean of the two (linear weights 1/2) on the common τ scale
    np.testing.assert_allclose(t_mid, 0.5 * (t_lo + t_hi), rtol=2e-3)


@pytest.mark.shared_data
def test_kurucz_refuses_points_outside_the_grid(shared_dir):
    with pytest.raises(ValueError, match="outside the Kurucz grid"):
        A.kurucz_atmosphere(5000.0, 4.0, 1.5)
    with pytest.raises(ValueError, match="outside the Kurucz grid"):
        A.kurucz_atmosphere(3000.0, 4.0, 0.0)
    with pytest.raises(ValueError, match="lacks the corner"):
        A.kurucz_atmosphere(6100.0, 0.2, 0.0)        # 6000 K has a logg 0 model, 6250 K has not
    with pytest.raises(ValueError, match=r"logg = 0.2 is outside the Kurucz grid \(0.5"):
        A.kurucz_atmosphere(6600.0, 0.2, 0.0)        # neither 6500 nor 6750 K goes below logg 0.5


@pytest.mark.shared_data
def test_read_krz_castelli_model(shared_dir):
    atm = A.read_krz(shared_dir / "physics/atmospheres/single_models/pysme_testatmo1_5750_4.5_0.0.krz")
    assert atm.T.shape == (72,)
    assert atm.T[0].item() == pytest.approx(3676.6)
    assert atm.T[-1].item() == pytest.approx(9956.0)
    assert atm.ne[-1].item() == pytest.approx(6.884e15)
    assert atm.vturb[0].item() == pytest.approx(2.0e5)
    np.testing.assert_allclose((atm.P / (10**4.5 * atm.rhox)).numpy(), 1.0, rtol=2e-3)


@needs_atmosnet
@pytest.mark.shared_data
def test_atmosnet_agrees_with_atlas_models(shared_dir):
    log_tau = np.array([-3.0, -2.0, -1.0, 0.0, 1.0])
    net = _t_at(A.atmosnet_atmosphere(5750.0, 4.5, 0.0, 0.0), log_tau)
    # Castelli NOVER ATLAS9 (same convection treatment as C3K): within 1 %
    krz = _t_at(A.read_krz(shared_dir / "physics/atmospheres/single_models/"
                           "pysme_testatmo1_5750_4.5_0.0.krz"), log_tau)
    np.testing.assert_allclose(net, krz, rtol=0.01)
    # Kurucz 1993 grid (approximate overshoot, ~120 K hotter at τ = 1): within 3 %
    for teff, logg, feh in [(5777.0, 4.44, 0.0), (4500.0, 2.0, -0.3), (6200.0, 4.0, -1.5)]:
        np.testing.assert_allclose(_t_at(A.atmosnet_atmosphere(teff, logg, feh), log_tau[:-1]),
                                   _t_at(A.kurucz_atmosphere(teff, logg, feh), log_tau[:-1]), rtol=0.03)


@pytest.mark.shared_data
def test_load_atmosphere_dispatches(shared_dir):
    assert A.load_atmosphere(5777, 4.44, 0.0, source="kurucz").source.startswith("kurucz")
    assert A.salaris_m_h(-1.0, 0.4) == pytest.approx(-1.0 + np.log10(0.638 * 10**0.4 + 0.362))
    with pytest.raises(ValueError, match="unknown atmosphere source"):
        A.load_atmosphere(5777, 4.44, 0.0, source="marcs")
    if importlib.util.find_spec("atmosnet") is not None:
        assert A.load_atmosphere(5777, 4.44, 0.0).source == "atmosnet:cool"


def test_atmosnet_structure_that_turns_back_deep_is_cut_and_higher_up_refused():
    """Hot subgiants at the edge of atmosnet's envelope (found by the training grid: the
    engine's flux was NaN there) turn back in column mass at τ_Ross ≈ 220: cut there.
    One that turns back at τ_Ross ≈ 3 is refused with a clear message."""
    from phdlspec_app.physics.atmosphere import TAU_CUT_MIN, atmosnet_atmosphere

    atm = atmosnet_atmosphere(6922.58, 3.75, -2.05, 0.4)
    assert (torch.diff(atm.rhox) > 0).all() and 60 < atm.rhox.numel() < 80
    assert atm.tau_ross[-1] >= TAU_CUT_MIN
    with pytest.raises(ValueError, match="not monotonic in column mass"):
        atmosnet_atmosphere(5908.2, 3.64, 0.0669, -0.0583)
    sun = atmosnet_atmosphere(5777.0, 4.44, 0.0, 0.0)
    assert sun.rhox.numel() == 80 and (torch.diff(sun.rhox) > 0).all()


def test_kurucz_interpolates_cool_stars_between_half_dex_nodes_despite_off_step_hot_models(shared_dir):
    # the [M/H] = 0 grid also holds 25000 K at log g 3.3: a log g of 3.1 at 4756 K must still
    # be bracketed by 3.0 and 3.5 (the bug asked for 4750 K / 3.3 corners that do not exist)
    atm = A.kurucz_atmosphere(4756.06, 3.098, 0.0615)
    t = _t_at(atm, 0.0)
    t_lo = _t_at(A.kurucz_atmosphere(4750.0, 3.0, 0.0), 0.0)
    t_hi = _t_at(A.kurucz_atmosphere(4750.0, 3.5, 0.0), 0.0)
    assert min(t_lo, t_hi) - 30 < t < max(t_lo, t_hi) + 30
