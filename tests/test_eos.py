"""Equation of state (phdlspec_app.physics.eos): Saha sanity, conservation, molecules,
derivatives, batching, speed, and a layer-by-layer comparison with SME's EOS.

Abundances: Asplund et al. 2009 read from the shared CSV (the comparison with SME uses
SME's own table of the same name, so both codes see identical ε).
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from phdlspec_app.physics import atomic_data as ad
from phdlspec_app.physics import eos as E
from phdlspec_app.physics.constants import k_B, k_B_eV

pytestmark = pytest.mark.shared_data

F64 = torch.float64
SOLAR_KRZ = "physics/atmospheres/single_models/pysme_testatmo1_5750_4.5_0.0.krz"


def _asplund09(shared_dir) -> torch.Tensor:
    eps = np.zeros(93)
    path = shared_dir / "physics/abundances/solar_abundances_A_X.csv"
    rows = csv.DictReader(line for line in path.read_text().splitlines() if not line.startswith("#"))
    for row in rows:
        eps[int(row["Z"])] = 10 ** (float(row["asplund_2009"]) - 12)
    return torch.tensor(eps, dtype=F64)


def _read_krz(path):
    lines = path.read_text().splitlines()
    i = next(j for j, line in enumerate(lines) if line.startswith("READ DECK6"))
    n = int(lines[i].split()[2])
    d = np.array([[float(x) for x in line.split()[:4]] for line in lines[i + 1:i + 1 + n]])
    return SimpleNamespace(rhox=torch.tensor(d[:, 0]), T=torch.tensor(d[:, 1]),
                           P=torch.tensor(d[:, 2]), ne=torch.tensor(d[:, 3]))


def _layer(T, P, ne=None):
    t = lambda v: torch.as_tensor(np.atleast_1d(v), dtype=F64)  # noqa: E731
    return SimpleNamespace(T=t(T), P=t(P), ne=None if ne is None else t(ne))


@pytest.fixture(scope="module")
def eps(shared_dir):
    return _asplund09(shared_dir)


@pytest.fixture(scope="module")
def solar(shared_dir):
    return _read_krz(shared_dir / SOLAR_KRZ)


# --------------------------------------------------------------------------------------
# physics sanity
# --------------------------------------------------------------------------------------
def test_saha_solar_tau1_layer(eps):
    """atmosnet's solar τ_Ross ≈ 1 layer: T = 6244 K, P = 1.1e5, n_e ≈ 4.7e13."""
    r = E.solve_eos(_layer(6244.0, 1.1e5, 4.7e13), eps)
    ion = lambda Z: float(r.atoms[0, Z, 1:].sum() / r.atoms[0, Z].sum())  # noqa: E731
    assert 0.93 <= ion(26) <= 0.975          # Fe: 97.0 %
    assert ion(20) >= 0.99                   # Ca: 99.9 %
    assert ion(11) >= 0.997                  # Na: 99.94 %
    # the model's n_e (its own EOS and abundances) agrees with ours to a few per cent
    assert float(r.ne[0]) == pytest.approx(4.7e13, rel=0.05)
    # H⁻/H I ~ 1e-7 in the solar photosphere
    assert 3e-8 < float(r.n_Hminus[0] / r.atoms[0, 1, 0]) < 3e-7
    U = r.U[0, 26, 0]
    assert float(U) == pytest.approx(33.7, rel=0.04)  # SME's value (notes)


def test_conservation_charge_and_pressure(eps, solar):
    # an enhanced-C, cool-ish variant too: molecules take a large share of C, N, O
    eps2 = eps.clone()
    eps2[6] *= 3.0
    for e, atm in ((eps, solar), (eps2, _layer([2800.0, 3500.0, 4000.0, 8000.0],
                                                [1e5, 1e4, 1e3, 1e4]))):
        r = E.solve_eos(atm, e)
        n_H = r.n_H
        # nuclei of each element in every form
        nuclei = r.atoms.sum(-1).clone()
        nuclei[..., 1] += r.n_Hminus
        for name, n in r.molecules.items():
            for z in ad.molecule(name).atoms:
                nuclei[..., z] += n
        target = e * n_H.unsqueeze(-1)
        present = e > 0
        rel = (nuclei[..., present] / target[..., present] - 1).abs()
        assert float(rel.max()) < 1e-8
        # charge neutrality: n_e = Σ (q n_ion) − n(H⁻)
        charge = r.atoms[..., 1].sum(-1) + 2 * r.atoms[..., 2].sum(-1) - r.n_Hminus
        assert torch.allclose(charge, r.ne, rtol=1e-10, atol=0)
        # pressure: all particles + electrons = P/kT
        particles = r.atoms.sum((-1, -2)) + sum(r.molecules.values()) + r.n_Hminus
        assert torch.allclose(particles, r.n_heavy, rtol=1e-10, atol=0)
        assert torch.allclose(particles + r.ne, atm.P / (k_B * atm.T), rtol=1e-10, atol=0)
        assert float(r.max_residual.max()) < 1e-12


def test_molecules_cool_giant_layer(eps):
    """T = 3600 K, P = 1e4 dyn cm⁻² (upper photosphere of a K/M giant), O > C."""
    r = E.solve_eos(_layer(3600.0, 1e4), eps)
    nC, nO = eps[6] * r.n_H, eps[8] * r.n_H
    co_frac = float(r.molecules["CO"] / nC)
    assert co_frac > 0.95                                       # CO holds most C
    assert float(r.molecules["CO"] / nO) < float(eps[6] / eps[8])  # and cannot exceed C/O
    h2 = float(2 * r.molecules["H2"] / r.n_H)
    assert 1e-3 < h2 < 0.2                                      # H2 present, H mostly atomic
    for name in E.DEFAULT_MOLECULES:
        assert float(r.molecules[name]) >= 0
    # H2 grows steadily towards cool, dense layers and vanishes in hot ones
    T = torch.tensor([2500.0, 3000.0, 3500.0, 4500.0, 6000.0, 8000.0], dtype=F64)
    rr = E.solve_eos(SimpleNamespace(T=T, P=torch.full_like(T, 1e5), ne=None), eps)
    f = 2 * rr.molecules["H2"] / rr.n_H
    assert torch.all(torch.diff(f) < 0)
    assert float(f[0]) > 0.9 and float(f[-1]) < 1e-4
    # when C > O, CO holds most O instead
    e2 = eps.clone()
    e2[6] = 2.0 * eps[8]
    r2 = E.solve_eos(_layer(3600.0, 1e4), e2)
    assert float(r2.molecules["CO"] / (eps[8] * r2.n_H)) > 0.95
    assert float(r2.molecules["C2"]) > float(r.molecules["C2"]) * 100


def test_hot_and_cold_extremes_converge(eps):
    T = torch.tensor([2000.0, 2500.0, 9000.0, 20000.0, 35000.0], dtype=F64)
    P = torch.tensor([1e2, 1e6, 1e2, 1e4, 1e3], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = E.solve_eos(SimpleNamespace(T=T, P=P, ne=None), eps)
    assert torch.isfinite(r.atoms).all() and torch.isfinite(r.ne).all()
    assert float(r.ne[3] / r.n_H[3]) == pytest.approx(1.08, abs=0.03)   # H and He⁺ ionized
    assert float(r.ne[0] / r.n_H[0]) < 1e-5


def test_absent_elements_and_dtypes(eps, solar):
    e = eps.clone()
    e[22] = 0.0     # no Ti (forms TiO) and no Sc (free element)
    e[21] = 0.0
    r = E.solve_eos(solar, e)
    assert torch.all(r.atoms[..., 22, :] == 0) and torch.all(r.atoms[..., 21, :] == 0)
    assert torch.all(r.molecules["TiO"] == 0) and torch.all(r.molecules["ScO"] == 0)
    assert torch.isfinite(r.ne).all()
    # float32 inputs are promoted (float32 cannot hold the conservation sums)
    atm32 = SimpleNamespace(T=solar.T.float(), P=solar.P.float(), ne=solar.ne.float())
    r32 = E.solve_eos(atm32, eps.float())
    assert r32.ne.dtype == F64
    # the model's n_e is only a starting guess
    r_no = E.solve_eos(SimpleNamespace(T=solar.T, P=solar.P, ne=None), eps)
    r_ref = E.solve_eos(solar, eps)
    assert torch.allclose(r_no.ne, r_ref.ne, rtol=1e-11)
    assert r_ref.density("Fe I") is not None and torch.equal(r_ref.density("e-"), r_ref.ne)
    assert torch.equal(r_ref.density("CO"), r_ref.molecules["CO"])


def test_batching_matches_single_stars(eps, solar):
    e_poor = eps.clone()
    e_poor[3:] *= 10**-1.5
    T = torch.stack([solar.T, solar.T * 0.9])
    P = torch.stack([solar.P, solar.P * 2])
    eps_b = torch.stack([eps, e_poor])
    rb = E.solve_eos(SimpleNamespace(T=T, P=P, ne=None), eps_b)
    assert rb.atoms.shape == (2, 72, 93, 3) and rb.molecules["CO"].shape == (2, 72)
    for i in range(2):
        ri = E.solve_eos(SimpleNamespace(T=T[i], P=P[i], ne=None), eps_b[i])
        assert torch.allclose(rb.atoms[i], ri.atoms, rtol=1e-10, atol=0)
        assert torch.allclose(rb.ne[i], ri.ne, rtol=1e-10)
    # (93,) abundances broadcast against a (2, L) atmosphere
    rc = E.solve_eos(SimpleNamespace(T=T, P=P, ne=None), eps)
    assert rc.ne.shape == (2, 72)


def test_residual_jacobian_matches_autograd(eps):
    """The analytic Newton Jacobian equals the autograd one (so convergence is quadratic)."""
    T = torch.tensor([3000.0, 5000.0, 9000.0], dtype=F64)
    P = torch.tensor([1e5, 1e4, 1e3], dtype=F64)
    s, *_ = E._setup(T, P, eps.expand(3, 93), E.DEFAULT_MOLECULES)
    y = E._initial_guess(s, 1e-4 * s.nP) + 0.1 * torch.randn(3, s.kz.numel() + 2, dtype=F64)
    _, _, J = E._residual(y, s, want_jac=True)
    for b in range(3):
        Jb = torch.autograd.functional.jacobian(
            lambda v: E._residual(v.unsqueeze(0), E._Setup(**{
                k: (t[b:b + 1] if torch.is_tensor(t) and t.dim() >= 1 and t.shape[0] == 3 else t)
                for k, t in s.__dict__.items()}), want_jac=False)[0][0], y[b])
        assert torch.allclose(J[b], Jb, rtol=1e-9, atol=1e-9 * float(Jb.abs().max()))


# --------------------------------------------------------------------------------------
# derivatives
# --------------------------------------------------------------------------------------
def test_derivatives_against_finite_differences(eps, solar):
    idx = [0, 30, 50, 71]
    atm = SimpleNamespace(T=solar.T[idx].clone(), P=solar.P[idx].clone(), ne=solar.ne[idx])

    def f(e, T, P):
        r = E.solve_eos(SimpleNamespace(T=T, P=P, ne=atm.ne), e)
        return r.atoms[:, 26, 0], r.ne, r.molecules["CO"], r.rho

    e = eps.clone().requires_grad_(True)
    T = atm.T.clone().requires_grad_(True)
    P = atm.P.clone().requires_grad_(True)
    fe1, ne, co, rho = f(e, T, P)
    # d n(Fe I)/d ε_Fe, and d n(CO)/d ε_O, which couples through the molecular equilibrium
    # (relative step 1e-6 on ε, central differences)
    for out, k, Z in ((fe1, 0, 26), (co, 2, 8)):
        g, = torch.autograd.grad(out.sum(), e, retain_graph=True)
        h = 1e-6 * float(eps[Z])
        ep, em = eps.clone(), eps.clone()
        ep[Z] += h
        em[Z] -= h
        fd = (f(ep, atm.T, atm.P)[k].sum() - f(em, atm.T, atm.P)[k].sum()) / (2 * h)
        assert float(g[Z]) == pytest.approx(float(fd), rel=1e-6)
    # per-layer derivatives w.r.t. T and P of n(Fe I), n_e and n(CO)
    for out_i, out in enumerate((fe1, ne, co)):
        for k in range(len(idx)):
            gT, gP = torch.autograd.grad(out[k], (T, P), retain_graph=True)
            for var, g in (("T", gT), ("P", gP)):
                dv = 1e-6 * float((atm.T if var == "T" else atm.P)[k])
                Tp, Tm, Pp, Pm = atm.T.clone(), atm.T.clone(), atm.P.clone(), atm.P.clone()
                if var == "T":
                    Tp[k] += dv
                    Tm[k] -= dv
                else:
                    Pp[k] += dv
                    Pm[k] -= dv
                fd = (f(eps, Tp, Pp)[out_i][k] - f(eps, Tm, Pm)[out_i][k]) / (2 * dv)
                assert float(g[k]) == pytest.approx(float(fd), rel=2e-5), (out_i, k, var)
    # ρ grows with P at fixed T (ρ ∝ n_heavy = P/kT − n_e up to molecules)
    gr, = torch.autograd.grad(rho.sum(), P)
    assert torch.isfinite(gr).all() and torch.all(gr > 0)


def test_gradients_finite_with_absent_elements(eps, solar):
    e = eps.clone()
    e[43] = 0.0
    e = e.requires_grad_(True)
    T = solar.T.clone().requires_grad_(True)
    r = E.solve_eos(SimpleNamespace(T=T, P=solar.P, ne=solar.ne), e)
    loss = r.atoms[..., 26, 0].sum() + r.molecules["TiO"].sum() + r.ne.sum()
    ge, gT = torch.autograd.grad(loss, (e, T))
    assert torch.isfinite(ge).all() and torch.isfinite(gT).all()


def test_speed_80_layers(eps):
    """One star, 80 layers: ≲ 50 ms. Timed on one thread: on a shared, loaded machine
    torch's intra-op threads wait on each other and timings scatter by 10×. Measured
    8 ms (solar model, 5 iterations from the model's n_e) to 17 ms (this test: no n_e
    given, 14 iterations) on one core of a loaded 2-core machine."""
    T = torch.linspace(3700, 10000, 80, dtype=F64)
    P = torch.logspace(1, 5.2, 80, dtype=F64)
    atm = SimpleNamespace(T=T, P=P, ne=None)
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        E.solve_eos(atm, eps)                  # tables parsed, caches warm
        t = []
        for _ in range(5):
            t0 = time.perf_counter()
            E.solve_eos(atm, eps)
            t.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(n_threads)
    assert min(t) < 0.05 * 2                   # headroom for loaded CI machines


# --------------------------------------------------------------------------------------
# against SME (SMElib 6.13 through pysme-astro)
# --------------------------------------------------------------------------------------
_SME_SCRIPT = textwrap.dedent("""
    import sys, json, numpy as np, pandas as pd
    from pysme.sme_synth import SME_DLL
    from pysme.atmosphere.atmosphere import Atmosphere
    from pysme.abund import Abund
    from pysme.linelist.linelist import LineList
    kB, amu = 1.380649e-16, 1.66053906660e-24
    krz, out = sys.argv[1], sys.argv[2]
    lines = open(krz).read().splitlines()
    i = [j for j, l in enumerate(lines) if l.startswith("READ DECK6")][0]
    n = int(lines[i].split()[2])
    d = np.array([[float(x) for x in l.split()[:4]] for l in lines[i + 1:i + 1 + n]])
    rhox, T, P, xne = d.T
    xna = P / (kB * T) - xne
    ab = Abund(0, "asplund2009")
    atmo = Atmosphere(teff=5750, logg=4.5, vturb=2.0, method="embedded", geom="PP",
                      depth="RHOX", interp="RHOX", rhox=rhox, temp=T, xne=xne, xna=xna,
                      rho=xna * 1.258 * amu, monh=0.0, abund="asplund2009")
    ll = LineList(pd.DataFrame(dict(species=["Fe 1"], wlcent=[5500.0], excit=[3.0],
                  gflog=[-1.0], gamrad=[0.0], gamqst=[0.0], gamvw=[0.0], atom_number=[1.0],
                  ionization=[1])), lineformat="short", medium="air")
    dll = SME_DLL()
    dll.SetLibraryPath()
    dll.InputLineList(ll)
    dll.InputModel(5750, 4.5, 2.0, atmo)
    dll.InputAbund(ab)
    dll.Ionization(0)
    A = ab("H=12")
    res = dict(T=T, P=P, xne=xne, ne=dll.GetNelec(), natom=dll.GetNatom(),
               rho=dll.GetDensity(), A=[A[s] for s in A], symbols=list(A))
    for s in ["H", "Fe", "Fe+", "Ca", "Ca+", "Mg", "Mg+", "Na", "Na+", "Si", "Si+", "Ti",
              "H2", "CO", "OH", "CH", "CN", "NH", "C2", "TiO"]:
        res["n_" + s] = dll.GetFraction(s, 0)     # number density (FRACT x PF)
        res["U_" + s] = dll.GetFraction(s, 1)     # partition function
    json.dump({k: np.asarray(v).tolist() for k, v in res.items()}, open(out, "w"))
""")


@pytest.fixture(scope="module")
def sme_eos(shared_dir, tmp_path_factory):
    if importlib.util.find_spec("pysme") is None:
        pytest.skip("pysme-astro not installed")
    tmp = tmp_path_factory.mktemp("sme")
    (tmp / "run_sme.py").write_text(_SME_SCRIPT)
    # SME writes ~/.sme (config, 30 MB line-profile file) on first import and
    # syntherr.log in the working directory: run it in a subprocess with HOME and cwd in tmp
    env = dict(os.environ, HOME=str(tmp))
    proc = subprocess.run([sys.executable, "run_sme.py", str(shared_dir / SOLAR_KRZ), "out.json"],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        pytest.fail(f"SME run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    d = {k: np.asarray(v) for k, v in json.loads((tmp / "out.json").read_text()).items()}
    A = np.array([np.nan if v is None else v for v in d["A"].tolist()], float)
    eps = np.zeros(93)
    for sym, a in zip(d["symbols"].tolist(), A):
        if sym in ad.ELEMENT_SYMBOLS and np.isfinite(a):
            eps[ad.atomic_number(sym)] = 10 ** (a - 12)
    atm = SimpleNamespace(T=torch.tensor(d["T"]), P=torch.tensor(d["P"]), ne=torch.tensor(d["xne"]))
    return d, E.solve_eos(atm, torch.tensor(eps))


def _ours(r, s):
    if s in r.molecules:
        return r.molecules[s].numpy(), r.mol_U[s].numpy()
    Z = ad.atomic_number(s.rstrip("+"))
    q = s.count("+")
    return r.atoms[:, Z, q].numpy(), r.U[:, Z, q].numpy()


def test_against_sme_totals_and_dominant_species(sme_eos):
    """SME's EOS (SMElib 6.13, same model, same Asplund 2009 ε), all 72 layers.

    Measured max |ours/SME − 1|: n_e 1.5 % (≤ 0.08 % in the 48 layers below 5500 K,
    growing with T in the deep layers where SME's larger high-T partition functions of
    the metals' neutrals and its H data matter: 0.27 % at 5980 K, 0.84 % at 7855 K),
    ρ and n_heavy 0.07 %, H I 0.14 %, Fe II 0.3 %, Ca II 1.1 %, Mg II 1.3 %, Na II 1.2 %,
    Si II 1.4 %. Tolerances: 2 % for n_e and dominant stages, 0.2 % for ρ — the
    residual differences come from the two codes' partition functions of minority
    species and molecule sets, not from the solver (n_e within 0.3 % below 6000 K is
    tested too)."""
    d, r = sme_eos
    rel = lambda a, b: np.abs(a / b - 1)  # noqa: E731
    assert rel(r.ne.numpy(), d["ne"]).max() < 0.02
    assert rel(r.ne.numpy(), d["ne"])[d["T"] < 6000].max() < 0.003
    assert rel(r.rho.numpy(), d["rho"]).max() < 2e-3
    assert rel(r.n_heavy.numpy(), d["natom"]).max() < 2e-3
    for s in ("H", "Fe+", "Ca+", "Mg+", "Na+", "Si+"):
        assert rel(_ours(r, s)[0], d["n_" + s]).max() < 0.02, s


def test_against_sme_neutral_minorities(sme_eos):
    """Neutral minority species. What enters line opacity is n/U (n_lower = (n/U) g
    e^{−E/kT}); for a mostly ionized element n(X I) ∝ U(X I) itself, so n/U does not
    depend on U(X I). SME's U(Ca I), U(Na I), U(K I) are far above the NIST level sums
    (Ca I 2.3 vs 1.1 at 4600 K; Na I 26.7 vs 2.0 at 3700 K; Irwin's fits agree with ours,
    see test_atomic_data), so n(Ca I), n(Na I) differ by those factors (−50…−92 %) while
    n/U agrees: measured max 4.0 % (Ca I), 2.7 % (Na I), 3.1 % (Mg I), 2.4 % (Fe I).
    n(Fe I) itself agrees to 1.6 % below 6500 K; U(Fe I) to 0.8 % below 5500 K, 3 % at
    6400 K (SME's U(Fe I) grows faster with T: 17 % larger at 9956 K)."""
    d, r = sme_eos
    rel = lambda a, b: np.abs(a / b - 1)  # noqa: E731
    for s in ("Fe", "Ca", "Mg", "Na", "Si", "Ti", "Fe+", "Ca+"):
        n, U = _ours(r, s)
        assert rel(n / U, d["n_" + s] / d["U_" + s]).max() < 0.05, s
    cool = d["T"] < 6500
    n, U = _ours(r, "Fe")
    assert rel(n, d["n_Fe"])[cool].max() < 0.03
    assert rel(U, d["U_Fe"])[cool].max() < 0.035
    assert rel(U, d["U_Fe"])[d["T"] < 5500].max() < 0.01


def test_against_sme_molecules(sme_eos):
    """Molecules (same Barklem & Collet constants and U in both codes): measured max
    0.3 % (H2, OH), 1.0 % (CO, CH, CN), 0.4 % (NH), 3 % (TiO, through U(Ti I)). C2: SME
    keeps B&C's D0 = 6.371 eV, we adopt Visser et al.'s 6.24 eV, a factor
    exp(−0.131 eV/kT) (−34 % at 3700 K); with that factor removed they agree to 1 %."""
    d, r = sme_eos
    rel = lambda a, b: np.abs(a / b - 1)  # noqa: E731
    for s, tol in (("H2", 0.015), ("CO", 0.015), ("OH", 0.015), ("CH", 0.015),
                   ("CN", 0.015), ("NH", 0.015), ("TiO", 0.04)):
        n, U = _ours(r, s)
        assert rel(n, d["n_" + s]).max() < tol, s
        assert rel(U, d["U_" + s]).max() < 2e-3, s
    T = d["T"]
    c2 = _ours(r, "C2")[0] * np.exp((ad.C2_D0_BARKLEM_COLLET - ad.C2_D0_VISSER) / (k_B_eV * T))
    assert rel(c2, d["n_C2"]).max() < 0.02
