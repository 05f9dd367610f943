"""Hydrogen Balmer/Paschen opacity from the Stehlé & Hutcheson (1999) tables."""
from __future__ import annotations

import math
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

from phdlspec_app.physics import constants as C

pytestmark = pytest.mark.shared_data
F64 = torch.float64


@pytest.fixture(scope="module")
def hl(shared_dir):
    from phdlspec_app.physics import hydrogen_lines
    return hydrogen_lines


def _tr(hl, lower, upper):
    return next(t for t in hl.hydrogen_transitions() if (t["lower"], t["upper"]) == (lower, upper))


def _profile_on_lambda(hl, tr, T, ne, half=400.0, n=400001):
    lam0 = hl.vacuum_wavelength(tr["lower"], tr["upper"])
    lam = torch.linspace(lam0 - half, lam0 + half, n, dtype=F64)
    dnu = (C.c / (lam * 1e-8) - C.c / (lam0 * 1e-8)).abs()
    P, inside = hl.stark_profile(tr, torch.tensor([T], dtype=F64), torch.tensor([ne], dtype=F64),
                                 dnu)
    assert bool(inside[0])
    return lam0, lam, P[0]


def test_vacuum_wavelengths_and_gf(hl):
    assert hl.vacuum_wavelength(2, 3) == pytest.approx(6564.70, abs=0.02)
    assert hl.vacuum_wavelength(2, 4) == pytest.approx(4862.74, abs=0.02)
    assert hl.vacuum_wavelength(3, 4) == pytest.approx(18756.3, abs=0.2)
    assert _tr(hl, 2, 3)["log_gf"] == pytest.approx(0.710, abs=2e-3)    # Wiese & Fuhr 2009
    assert _tr(hl, 2, 4)["log_gf"] == pytest.approx(-0.020, abs=2e-3)


@pytest.mark.parametrize("T,ne", [(4500.0, 1e11), (6000.0, 1e13), (8000.0, 1e15), (6000.0, 1e16)])
def test_profile_integrates_to_one(hl, T, ne):
    lam0, lam, P = _profile_on_lambda(hl, _tr(hl, 2, 3), T, ne, half=3000.0, n=600001)
    dnu_dlam = C.c / (lam * 1e-8) ** 2
    area = torch.trapezoid(P * dnu_dlam, lam * 1e-8).item()
    assert area == pytest.approx(1.0, abs=0.01)


def test_stark_width_grows_with_ne(hl):
    widths = []
    for ne in (1e14, 1e15, 1e16):
        lam0, lam, P = _profile_on_lambda(hl, _tr(hl, 2, 3), 6000.0, ne, half=50, n=200001)
        half = lam[P >= P.max() / 2]
        widths.append((half.max() - half.min()).item())
    assert widths[0] < widths[1] < widths[2]
    assert widths[2] > 2 * widths[0]


def test_far_wings_follow_holtsmark(hl):
    """P ∝ Δν^(−5/2) far out: the slope of ln P against ln Δλ over 100–300 Å from Hα."""
    lam0, lam, P = _profile_on_lambda(hl, _tr(hl, 2, 3), 7000.0, 1e16, half=400, n=80001)
    far = (lam - lam0 > 100) & (lam - lam0 < 300)
    dnu = (C.c / (lam[far] * 1e-8) - C.c / (lam0 * 1e-8)).abs()
    slope_nu = np.polyfit(np.log(dnu.numpy()), np.log(P[far].numpy()), 1)[0]
    slope_lam = np.polyfit(np.log((lam[far] - lam0).numpy()), np.log(P[far].numpy()), 1)[0]
    assert slope_nu == pytest.approx(-2.5, abs=0.05)
    assert slope_lam == pytest.approx(-2.5, abs=0.1)


def _state(T, ne, nH, nHe=None):
    T = torch.as_tensor(T, dtype=F64)
    L = T.numel()
    atoms = torch.zeros(L, 93, 3, dtype=F64)
    atoms[:, 1, 0] = torch.as_tensor(nH, dtype=F64)
    atoms[:, 2, 0] = torch.as_tensor(nH if nHe is None else nHe, dtype=F64) * 0.085
    U = torch.ones(L, 93, 3, dtype=F64)
    U[:, 1, 0] = 2.0
    return NS(T=T, ne=torch.as_tensor(ne, dtype=F64), P=None), NS(atoms=atoms, U=U)


def test_hydrogen_line_absorption_balmer_paschen(hl):
    T = torch.tensor([5000.0, 6500.0], dtype=F64, requires_grad=True)
    atm, eos = _state(T, [1e12, 1e14], [1e16, 1e17])
    wl = torch.linspace(3700, 9100, 54001, dtype=F64)
    alpha = hl.hydrogen_line_absorption(wl, atm, eos)
    assert alpha.shape == (2, 54001) and bool((alpha >= 0).all())
    i_ha = int(torch.argmax(alpha[1] * ((wl > 6500) & (wl < 6600))))
    assert wl[i_ha].item() == pytest.approx(6564.70, abs=0.1)
    # Hα line strength: ∫α dν of the Stark part = (πe²/mc) gf n_lower(1 − e^(−hν/kT)) ×
    # (1 + the same again from the summed self-broadening Voigt), within the ±150 Å window
    lam0 = hl.vacuum_wavelength(2, 3)
    sel = (wl > lam0 - 150) & (wl < lam0 + 150)
    only_ha = hl.hydrogen_line_absorption(wl[sel], atm, eos, n_upper_max=3, series=("balmer",))
    integral = torch.trapezoid(only_ha[1], wl[sel] * 1e-8).item()
    beta = 1 / (C.k_B_eV * 6500.0)
    E2, E3 = C.RydbergH_eV * 0.75, C.RydbergH_eV * (1 - 1 / 9)
    strength = C.pi_e2_over_mc * 10**0.71 * 1e17 / 2.0 * (math.exp(-beta * E2) - math.exp(-beta * E3))
    w3 = hl.hummer_mihalas_w(3, torch.tensor(1e17), torch.tensor(0.085e17), torch.tensor(1e14)).item()
    expect = 2 * strength * w3 * (lam0 * 1e-8) ** 2 / C.c
    assert integral == pytest.approx(expect, rel=0.05)
    alpha.sum().backward()
    assert torch.isfinite(T.grad).all() and (T.grad.abs() > 0).all()


def test_mhd_dissolves_high_levels(hl):
    nH, nHe, ne = torch.tensor(1e17), torch.tensor(8.5e15), torch.tensor(1e14)
    w = [hl.hummer_mihalas_w(n, nH, nHe, ne).item() for n in (3, 8, 15, 25)]
    assert w[0] > 0.99 and w[0] > w[1] > w[2] > w[3] and w[3] < 1e-3


@pytest.mark.parametrize("pair", [(2, 3), (2, 8), (3, 12)])
def test_analytic_stark_partials_match_forward_ad(hl, pair):
    """The analytic ∂P/∂T and ∂P/∂n_e of the normalized Stark profile (used by the
    differential spectra, per-star cache) equal forward-mode AD of ``stark_profile``:
    layers inside and outside the table, points in the core, the tabulated wings and
    beyond the table's last x (Holtsmark asymptote)."""
    tr = _tr(hl, *pair)
    T = torch.tensor([4200.0, 5800.0, 7600.0, 9000.0, 6000.0], dtype=F64)
    ne = torch.tensor([3e11, 2e13, 4e14, 1e15, 1e23], dtype=F64)     # last: outside the table
    lam0 = hl.vacuum_wavelength(*pair)
    lam = lam0 + torch.tensor([-120.0, -20.0, -3.1, -0.4, -0.013, 0.0, 0.02, 0.7, 5.5, 60.0, 140.0], dtype=F64)
    dnu = (C.c / (lam * 1e-8) - C.c / (lam0 * 1e-8)).abs()
    cache = {}
    P, dT, dne = hl.stark_profile_partials(tr, T, ne, dnu, cache)
    ref = hl._diag_partials(lambda T_, ne_: hl.stark_profile(tr, T_, ne_, dnu)[0], (T, ne), range(2))
    P0 = hl.stark_profile(tr, T, ne, dnu)[0]
    assert torch.allclose(P, P0, rtol=1e-12, atol=0)
    for got, want in ((dT, ref[0]), (dne, ref[1])):
        scale = want.abs().amax(dim=1, keepdim=True).clamp(min=1e-300)
        assert ((got - want).abs() / scale).max() <= 1e-8
    assert (P[-1] == 0).all() and (dT[-1] == 0).all()        # outside the table: no opacity
    assert dne[:4].abs().max() > 0
    assert len(cache) == 1                                    # per-layer quantities kept once


@pytest.mark.parametrize("pair", [(2, 3), (2, 5)])
def test_analytic_abo_partials_match_forward_ad(hl, pair):
    """The analytic T, n(H I), ξ partials of the Hα–Hγ self-broadening (ABO) Voigt
    component equal forward-mode AD of ``_abo_shape``, core and wings."""
    T = torch.tensor([3900.0, 5800.0, 7600.0], dtype=F64)
    nH = torch.tensor([1e15, 3e16, 2e17], dtype=F64)
    xi = torch.tensor([0.5e5, 1.0e5, 2.5e5], dtype=F64)
    lam0 = hl.vacuum_wavelength(*pair)
    lam = lam0 + torch.tensor([-80.0, -3.0, -0.2, -0.01, 0.0, 0.05, 1.0, 25.0], dtype=F64)
    A, dA = hl._abo_shape_partials(*pair, lam0, lam, T, nH, xi)
    ref = hl._diag_partials(lambda T_, n_, x_: hl._abo_shape(*pair, lam0, lam, T_, n_, x_), (T, nH, xi), range(3))
    assert torch.allclose(A, hl._abo_shape(*pair, lam0, lam, T, nH, xi), rtol=1e-12, atol=0)
    for q in range(3):
        scale = ref[q].abs().amax(dim=1, keepdim=True)
        assert ((dA[q] - ref[q]).abs() / scale).max() <= 1e-9, q


def test_has_hydrogen_lines_marks_where_the_opacity_is_zero(hl):
    """The synthesis skips the chunks has_hydrogen_lines rules out: there the opacity must
    be exactly zero, and where it says yes, not zero."""
    atm, eos = _state([5000.0, 6500.0], [1e12, 1e14], [1e16, 1e17])
    cases = [((5500.0, 5600.0), {}, False), ((6300.0, 6400.0), {}, False),
             ((6420.0, 6430.0), {}, True),                       # Hα's far wing (window ±150 Å)
             ((3960.0, 4000.0), {"n_upper_max": 6}, True),       # Hδ's wing only (Hε, H8… excluded)
             ((3800.0, 3900.0), {"n_upper_max": 6}, False),
             ((5500.0, 5600.0), {"n_upper_min": 7}, False),
             ((8600.0, 8700.0), {"n_upper_min": 7}, True)]       # Paschen 13–16
    for (lo, hi), kw, expect in cases:
        wl = torch.linspace(lo, hi, 201, dtype=F64)
        alpha = hl.hydrogen_line_absorption(wl, atm, eos, **kw)
        assert hl.has_hydrogen_lines(lo, hi, **kw) is expect, (lo, hi, kw)
        assert bool((alpha > 0).any()) is expect, (lo, hi, kw)
