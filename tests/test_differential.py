"""Differential spectra d(normalized flux)/d(label) by forward-mode AD.

On a narrow window (LAMOST pixels 5150–5250 Å, Mg b) the multi-tangent derivatives of
``Synthesizer.differential_spectra`` are checked against central finite differences of
``Synthesizer.spectrum``, against the one-dual-pass-per-label reference, and for their
physics (Mg b); the custom autograd Functions are checked for forward mode on their own.

Tolerances. Central differences have a truncation error f'''h²/6 and a round-off error
~ε|f|/h. With the steps used (0.02 dex, 10 K, 0.05 km/s) the flux responses are close to
linear — the strongest Mg b pixel changes by ~0.5 % of the continuum per 0.02 dex — so the
truncation error is a few 1e-4 of the derivative and round-off (~1e-14 / 0.02) is
negligible. We require max |AD − FD| ≤ 2 % of max |AD| and a cosine similarity ≥ 0.999,
with margin for the curvature of saturated cores; AD and the dual-number reference are the
same derivative computed in two ways, so they must agree to round-off (1e-9 relative).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD

from phdlspec_app import labels as L
from phdlspec_app.physics.lsf import lamost_wavelength

F64 = torch.float64
MG_B = (5168.76, 5174.13, 5185.05)     # vacuum Å (air 5167.32, 5172.68, 5183.60)
STEPS = {"mg_fe": 0.02, "fe_h": 0.02, "teff": 10.0, "vmic": 0.05, "c_fe": 0.02}
WRT = list(STEPS) + ["eu_fe"]


@pytest.fixture(scope="module")
def setup(shared_dir):
    from phdlspec_app.physics.synthesize import Synthesizer

    synth = Synthesizer(wl_range=(5100.0, 5300.0))
    wl = lamost_wavelength()
    wl = wl[(wl >= 5150) & (wl <= 5250)]
    lab = torch.tensor(L.defaults(), dtype=F64)
    p, J = synth.differential_spectra(lab, wrt=WRT, wl_out=wl)
    return synth, wl, lab, p, J


def _fd(synth, wl, lab, name, h):
    i = L.label_names().index(name)
    up, dn = lab.clone(), lab.clone()
    up[i] += h
    dn[i] -= h
    return (synth.spectrum(up, wl_out=wl) - synth.spectrum(dn, wl_out=wl)) / (2 * h)


def test_primal_equals_spectrum(setup):
    synth, wl, lab, p, J = setup
    assert J.shape == (len(WRT), wl.size)
    assert torch.allclose(p, synth.spectrum(lab, wl_out=wl), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(STEPS))
def test_matches_central_differences(setup, name):
    synth, wl, lab, p, J = setup
    ad = J[WRT.index(name)]
    fd = _fd(synth, wl, lab, name, STEPS[name])
    scale = ad.abs().max()
    assert scale > 0
    assert (ad - fd).abs().max() <= 0.02 * scale, (name, float((ad - fd).abs().max() / scale))
    cos = torch.dot(ad, fd) / (ad.norm() * fd.norm())
    assert cos >= 0.999, (name, float(cos))


def test_mg_derivative_is_at_mg_b(setup):
    synth, wl, lab, p, J = setup
    d = J[WRT.index("mg_fe")].numpy()
    # strongest response: negative (more Mg → deeper lines), at one of the Mg b lines
    k = int(np.argmin(d))
    assert d[k] < 0 and abs(d[k]) == np.abs(d).max()
    pix = np.diff(wl).mean()
    assert min(abs(wl[k] - c) for c in MG_B) <= 1.5 * pix
    # each Mg b line shows a clear negative response; most of |d| is within ±4 Å of them
    near = np.zeros(wl.size, bool)
    for c in MG_B:
        m = np.abs(wl - c) <= 4.0
        near |= m
        assert d[m].min() < -0.2 * np.abs(d).max()
    assert np.abs(d[near]).sum() >= 0.6 * np.abs(d).sum()


def test_element_without_lines_gives_zero(setup):
    synth, wl, lab, p, J = setup
    eu = J[WRT.index("eu_fe")].abs().max()
    mg = J[WRT.index("mg_fe")].abs().max()
    assert eu <= 1e-3 * mg


@pytest.mark.parametrize("name", ["mg_fe", "teff"])
def test_multi_tangent_equals_dual_reference(setup, name):
    synth, wl, lab, p, J = setup
    p2, J2 = synth.differential_spectra(lab, wrt=[name], wl_out=wl, method="dual")
    ad = J[WRT.index(name)]
    assert torch.allclose(p2, p, rtol=0, atol=1e-12)
    assert (J2[0] - ad).abs().max() <= 1e-9 * ad.abs().max()


# ---------------------------------------------------------------------------------------
# forward mode of the custom autograd Functions
# ---------------------------------------------------------------------------------------
def test_voigt_hjerting_jvp_matches_backward():
    from phdlspec_app.physics.voigt import voigt_hjerting

    a = torch.tensor([1e-4, 1e-2, 0.3, 1.0, 4.0, 9.0], dtype=F64)
    v = torch.tensor([0.0, 1.3, -2.5, 5.99, 6.01, 40.0], dtype=F64)
    ta, tv = torch.linspace(0.3, 1.1, 6, dtype=F64), torch.linspace(-1.0, 0.7, 6, dtype=F64)
    with fwAD.dual_level():
        t = fwAD.unpack_dual(voigt_hjerting(fwAD.make_dual(a, ta), fwAD.make_dual(v, tv))).tangent
    a_, v_ = a.clone().requires_grad_(), v.clone().requires_grad_()
    ga, gv = torch.autograd.grad(voigt_hjerting(a_, v_).sum(), (a_, v_))
    assert torch.allclose(t, ga * ta + gv * tv, rtol=1e-12, atol=1e-15)
    # and under torch.func (vmap over tangents)
    _, tf = torch.func.jvp(voigt_hjerting, (a, v), (ta, tv))
    assert torch.allclose(tf, t, rtol=1e-12, atol=1e-15)


def test_line_absorption_jvp_matches_backward():
    from types import SimpleNamespace as NS

    from phdlspec_app.physics.line_absorption import line_absorption
    from phdlspec_app.physics.linelists import LineList

    ll = LineList(wavelength=np.array([5000.0, 5000.4, 5001.0]), species=np.array(["Fe I", "Fe II", "Ca I"]),
                  Z=np.array([26, 26, 20]), charge=np.array([0, 1, 0]), log_gf=np.array([-1.0, -2.0, 0.0]),
                  E_lower=np.array([1.0, 3.0, 2.0]), gamma_rad=np.full(3, np.nan),
                  gamma_stark=np.full(3, np.nan), vdw_log_gamma6=np.full(3, np.nan),
                  abo_sigma=np.full(3, np.nan), abo_alpha=np.full(3, np.nan),
                  mass=np.array([55.845, 55.845, 40.078]), source=np.array(["t"] * 3))
    L_ = 4
    wl = torch.linspace(4998, 5003, 801, dtype=F64)
    T0 = torch.linspace(4500, 7000, L_, dtype=F64)
    atoms = torch.zeros(L_, 93, 3, dtype=F64)
    atoms[:, 1, 0] = 1e16
    atoms[:, 26, :2] = torch.tensor([1e10, 3e11], dtype=F64)
    atoms[:, 20, 0] = 1e8
    U = torch.ones(L_, 93, 3, dtype=F64)

    def f(T, vmic):
        atm = NS(T=T, ne=torch.full((L_,), 1e13, dtype=F64))
        eos = NS(atoms=atoms * (T / 5000)[:, None, None], U=U, molecules={}, mol_U={})
        return line_absorption(ll, wl, atm, eos, vmic, threshold=0.0, alpha_cont=torch.full((L_, wl.numel()), 1e-9, dtype=F64))

    tT, tv = torch.linspace(1.0, 2.0, L_, dtype=F64), torch.tensor(0.3, dtype=F64)
    vm = torch.tensor(1.2, dtype=F64)
    with fwAD.dual_level():
        out = f(fwAD.make_dual(T0, tT), fwAD.make_dual(vm, tv))
        jt = fwAD.unpack_dual(out).tangent
    T_, v_ = T0.clone().requires_grad_(), vm.clone().requires_grad_()
    w = torch.linspace(-1, 1, wl.numel(), dtype=F64)
    gT, gv = torch.autograd.grad((f(T_, v_) * w).sum(), (T_, v_))
    assert torch.allclose((jt * w).sum(), (gT * tT).sum() + gv * tv, rtol=1e-10)
