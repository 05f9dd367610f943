"""The synthesis' hydrogen-line shortcut: the high series members (upper level > 6) are
evaluated on every third fine-grid point and interpolated linearly.

Checked in the H8 window (3860–3940 Å) of a 7000 K dwarf, where the Balmer lines are
strongest in the training domain: the normalized flux at R = 1800 stays within 3e-4 of the
exact evaluation (measured: 1.2e-4 at most over the whole LAMOST range for this star,
BENCHMARKS.md), the shortcut is really in use (the two differ), and the multi-tangent
derivatives still equal the dual-number reference to round-off, i.e. the interpolated
partials are the derivative of the interpolated opacity.
"""
from __future__ import annotations

import pytest
import torch

from phdlspec_app import labels as L
from phdlspec_app.physics.lsf import lamost_wavelength

F64 = torch.float64
HOT = {"teff": 7000.0, "logg": 4.0, "fe_h": 0.0, "vmic": 1.5}


@pytest.fixture(scope="module")
def h8(shared_dir):
    from phdlspec_app.physics.synthesize import Synthesizer

    synth = Synthesizer(wl_range=(3820.0, 3980.0))
    wl = lamost_wavelength()
    wl = wl[(wl >= 3860) & (wl <= 3940)]
    lab = torch.tensor(L.to_vector(HOT), dtype=F64)
    return synth, wl, lab


def test_subsampled_high_series_stays_within_bound(h8):
    synth, wl, lab = h8
    assert synth.hydrogen_step == 3 and synth.hydrogen_exact_upper == 6
    fast = synth.spectrum(lab, wl_out=wl)
    synth.hydrogen_step = 1
    try:
        exact = synth.spectrum(lab, wl_out=wl)
    finally:
        synth.hydrogen_step = 3
    diff = (fast - exact).abs().max().item()
    assert 0.0 < diff <= 3e-4, diff
    assert exact.min() < 0.8          # H8 is in the window, deep


def test_multi_tangent_equals_dual_with_subsampled_hydrogen(h8):
    synth, wl, lab = h8
    p, J = synth.differential_spectra(lab, wrt=["teff", "logg"], wl_out=wl)
    p2, J2 = synth.differential_spectra(lab, wrt=["teff", "logg"], wl_out=wl, method="dual")
    assert torch.allclose(p2, p, rtol=0, atol=1e-12)
    for k in range(2):
        assert (J2[k] - J[k]).abs().max() <= 1e-9 * J[k].abs().max()


def test_deep_layers_left_out_of_the_transfer_change_nothing(h8, monkeypatch):
    """Layers below τ_c = 50 at every wavelength (TAU_DEEP) are left out of the line opacity
    and the transfer: the cut is in use (fewer layers than the model has) and the spectrum
    and its derivatives are those of the full depth to round-off."""
    from phdlspec_app.physics import synthesize as S

    synth, wl, lab = h8
    depths = []
    cut = S._transfer_depth

    def spy(alpha_c, rho, rhox, tau_max=S.TAU_DEEP):
        n = cut(alpha_c, rho, rhox, tau_max)
        depths.append((n, alpha_c.shape[-2]))
        return n

    monkeypatch.setattr(S, "_transfer_depth", spy)
    p, J = synth.differential_spectra(lab, wrt=["teff", "fe_h", "mg_fe"], wl_out=wl)
    f = synth.spectrum(lab, wl_out=wl)
    assert depths and all(n < L_all for n, L_all in depths)
    monkeypatch.setattr(S, "_transfer_depth", lambda alpha_c, rho, rhox: alpha_c.shape[-2])
    p0, J0 = synth.differential_spectra(lab, wrt=["teff", "fe_h", "mg_fe"], wl_out=wl)
    f0 = synth.spectrum(lab, wl_out=wl)
    assert (f - f0).abs().max() <= 1e-13 and (p - p0).abs().max() <= 1e-13
    assert ((J - J0).abs().amax(dim=1) / J0.abs().amax(dim=1)).max() <= 1e-10
