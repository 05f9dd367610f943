import numpy as np
import pytest
import torch

from phdlspec_app.physics.lsf import degrade, gaussian_broaden, lamost_wavelength, log_lambda_grid


def test_lamost_grid():
    wl = lamost_wavelength()
    assert wl.size == 3909
    assert wl[0] == pytest.approx(3699.99, abs=0.01) and wl[-1] == pytest.approx(9099.14, abs=0.01)


def test_gaussian_line_broadens_to_the_expected_width_and_keeps_its_area():
    R_synth = 200_000
    wl = log_lambda_grid(5000, 5100, R_synth)
    x = torch.as_tensor(np.log(wl / 5050.0) * 299792.458)  # velocity, km/s
    sigma0 = 3.0
    depth = 0.5 * torch.exp(-0.5 * (x / sigma0) ** 2)
    flux = 1 - depth
    fwhm = 299792.458 / 1800
    out = gaussian_broaden(flux, 1 / R_synth, fwhm)
    # area (equivalent width in velocity) is conserved
    ew_in = depth.sum()
    ew_out = (1 - out).sum()
    assert ew_out.item() == pytest.approx(ew_in.item(), rel=1e-6)
    # width: sigma^2 adds
    prof = (1 - out)
    var = ((x**2) * prof).sum() / prof.sum()
    expected = sigma0**2 + (fwhm / 2.3548200450309493) ** 2
    assert var.item() == pytest.approx(expected, rel=2e-3)
    assert torch.allclose(gaussian_broaden(torch.ones_like(flux), 1 / R_synth, 100.0), torch.ones_like(flux))


def test_degrade_shifts_by_rv_and_is_differentiable():
    R_synth = 100_000
    wl = log_lambda_grid(6500, 6650, R_synth)
    line = 1 - 0.6 * torch.exp(-0.5 * (torch.as_tensor(np.log(wl / 6564.6) * 299792.458) / 20.0) ** 2)
    wl_out = torch.linspace(6540, 6590, 501, dtype=torch.float64)
    vb = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
    rv = torch.tensor(50.0, dtype=torch.float64)
    out = degrade(line, wl, 1800, vb, rv, wl_out)
    center = wl_out[out.argmin()].item()
    assert center == pytest.approx(6564.6 * (1 + 50 / 299792.458), abs=0.15)
    out.sum().backward()
    assert vb.grad is not None and torch.isfinite(vb.grad)


@pytest.mark.parametrize("vbroad, rv", [(0.0, 0.0), (5.0, 600.0),
                                        (torch.tensor([10.0, 250.0]), torch.tensor([-300.0, 37.0]))])
def test_sampled_lsf_equals_the_full_convolution(vbroad, rv):
    """Without derivatives, degrade convolves only where the resampling reads; with them it
    convolves every fine pixel. Both must give the same spectrum (to round-off), for one
    broadening for all rows and one per row."""
    wl = log_lambda_grid(3650, 9150, 100_000)
    g = torch.Generator().manual_seed(0)
    flux = 1 - 0.3 * torch.rand(2, wl.size, generator=g, dtype=torch.float64)
    fast = degrade(flux, wl, 1800.0, vbroad, rv)
    full = degrade(flux.clone().requires_grad_(True), wl, 1800.0, vbroad, rv).detach()
    assert fast.shape == full.shape == (2, 3909)
    assert torch.allclose(fast, full, rtol=0, atol=1e-13)
