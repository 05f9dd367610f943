"""Radiative transfer against analytic solutions."""
import numpy as np
import pytest
import torch

from phdlspec_app.physics.radiative_transfer import emergent_flux, optical_depth, planck_lambda


def _tau_grid(L=80, W=3):
    tau = torch.logspace(-6, 2.5, L, dtype=torch.float64)
    return tau[:, None].expand(L, W).clone()


@pytest.mark.parametrize("a,b", [(1.0, 0.0), (1.0, 1.5), (0.3, 2.0)])
def test_linear_source_function_gives_eddington_barbier_flux(a, b):
    # For S = a + b tau in a semi-infinite atmosphere, F = pi (a + 2 b / 3) exactly.
    tau = _tau_grid()
    S = a + b * tau
    F = emergent_flux(tau, S, n_mu=6)
    np.testing.assert_allclose(F.numpy(), np.pi * (a + 2 * b / 3), rtol=1e-6)


def test_quadratic_source_function_with_enough_resolution():
    # S = tau^2: I(mu) = 2 mu^2, F = 2 pi int 2 mu^3 dmu = pi
    tau = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-5, 2, 2000, dtype=torch.float64)])
    tau = tau[:, None]
    F = emergent_flux(tau, tau**2, n_mu=8)
    assert F.item() == pytest.approx(np.pi, rel=2e-4)


def test_planck_matches_scipy_constants():
    from scipy.constants import c, h, k

    lam = 5000e-10
    T = 5777.0
    expected = 2 * h * c**2 / lam**5 / np.expm1(h * c / (lam * k * T))  # W m^-3 sr^-1
    ours = planck_lambda(torch.tensor([5000.0], dtype=torch.float64), torch.tensor([T], dtype=torch.float64))
    assert ours.item() * 1e-7 * 1e4 * 1e2 == pytest.approx(expected, rel=1e-8)  # erg/s/cm2/cm/sr -> SI


def test_optical_depth_of_constant_opacity_is_kappa_times_rhox():
    rhox = torch.logspace(-3, 1, 50, dtype=torch.float64)
    rho = torch.full_like(rhox, 2e-7)
    alpha = torch.full((50, 4), 0.5 * 2e-7, dtype=torch.float64)  # kappa = 0.5 cm^2/g
    tau = optical_depth(alpha, rho, rhox)
    np.testing.assert_allclose(tau[:, 0].numpy(), 0.5 * rhox.numpy(), rtol=1e-12)


def test_flux_is_differentiable_and_gradient_matches_finite_difference():
    tau = _tau_grid(L=40, W=1)
    b = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    F = emergent_flux(tau, 1.0 + b * tau).sum()
    (g,) = torch.autograd.grad(F, b)
    assert g.item() == pytest.approx(2 * np.pi / 3, rel=1e-6)
