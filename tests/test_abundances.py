"""Solar abundance scales and label → number-fraction mapping.

Reference numbers: Asplund et al. 2009 (ARA&A 47, 481, Table 1): A(Fe) 7.50, A(Mg) 7.60,
A(C) 8.43, A(He) 10.93; Asplund et al. 2021: A(Fe) 7.46; mean mass per nucleus of the
Asplund 2009 mixture 1.258 amu (sme-reference-notes.md, SME's EOS).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from phdlspec_app import labels as L
from phdlspec_app.physics import abundances as ab

pytestmark = pytest.mark.shared_data


def _labels(**values) -> torch.Tensor:
    return torch.tensor(L.to_vector(values), dtype=torch.float64)


def _idx(name: str) -> int:
    return L.get_label(name).index


def test_asplund2009_values(shared_dir):
    a = ab.solar_abundances()
    assert a.shape == (93,) and np.isnan(a[0])
    assert a[1] == 12.0 and a[2] == pytest.approx(10.93)
    assert a[26] == pytest.approx(7.50) and a[12] == pytest.approx(7.60) and a[6] == pytest.approx(8.43)


def test_other_scales(shared_dir):
    assert set(ab.available_scales()) == {"asplund2009", "asplund2021", "grevesse2007", "bergemann2025"}
    assert ab.solar_abundances("asplund2021")[26] == pytest.approx(7.46)
    assert ab.solar_abundances("Asplund_2020")[26] == pytest.approx(7.46)
    assert ab.solar_abundances("grevesse2007")[26] == pytest.approx(7.45)
    with pytest.raises(ValueError, match="unknown solar abundance scale"):
        ab.solar_abundances("anders1989")
    a = ab.solar_abundances()
    a[26] = 0.0                                       # a copy: the cache is untouched
    assert ab.solar_abundances()[26] == pytest.approx(7.50)


def test_solar_labels_give_solar_fractions(shared_dir):
    eps = ab.number_fractions(_labels())
    assert eps.shape == (93,) and eps.dtype == torch.float64
    assert eps[0] == 0.0 and eps[1] == 1.0
    np.testing.assert_allclose(torch.log10(eps[1:]).numpy() + 12, ab.solar_abundances()[1:], atol=1e-12)


def test_mg_enhanced_metal_poor_star(shared_dir):
    eps = ab.number_fractions(_labels(fe_h=-1.0, mg_fe=0.3))
    assert math.log10(eps[12]) + 12 == pytest.approx(6.90, abs=1e-12)      # 7.60 − 1 + 0.3
    assert math.log10(eps[26]) + 12 == pytest.approx(6.50, abs=1e-12)
    assert math.log10(eps[2]) + 12 == pytest.approx(10.93, abs=1e-12)      # He stays solar
    assert math.log10(eps[31]) + 12 == pytest.approx(3.04 - 1.0, abs=1e-12)  # Ga follows [Fe/H]
    # Ne, S, Ar follow [α/Fe] = mean(Mg, Si, Ca) = 0.1
    assert math.log10(eps[16]) + 12 == pytest.approx(7.12 - 1.0 + 0.1, abs=1e-12)
    assert ab.alpha_fe(_labels(mg_fe=0.3, si_fe=0.3, ca_fe=0.0)).item() == pytest.approx(0.2)


def test_gradients_wrt_labels(shared_dir):
    lab = _labels(fe_h=-0.5, mg_fe=0.2).requires_grad_(True)
    eps = ab.number_fractions(lab)
    (g,) = torch.autograd.grad(torch.log10(eps[12]), lab, retain_graph=True)
    assert g[_idx("mg_fe")].item() == pytest.approx(1.0)
    assert g[_idx("fe_h")].item() == pytest.approx(1.0)
    assert g.abs().sum().item() == pytest.approx(2.0)       # nothing else moves Mg
    (g,) = torch.autograd.grad(torch.log(eps[12]), lab, retain_graph=True)
    assert g[_idx("mg_fe")].item() == pytest.approx(math.log(10))
    (g,) = torch.autograd.grad(torch.log10(eps[10]), lab, retain_graph=True)  # Ne
    for name in ("mg_fe", "si_fe", "ca_fe"):
        assert g[_idx(name)].item() == pytest.approx(1 / 3)
    (g,) = torch.autograd.grad(eps[2] + eps[1], lab)
    assert torch.all(g == 0)


def test_batches(shared_dir):
    lab = torch.tensor(np.tile(L.defaults(), (2, 3, 1)))
    lab[1, 2, _idx("fe_h")] = -2.0
    eps = ab.number_fractions(lab)
    assert eps.shape == (2, 3, 93)
    assert math.log10(eps[1, 2, 26]) + 12 == pytest.approx(5.50)
    assert ab.alpha_fe(lab).shape == (2, 3)
    with pytest.raises(ValueError, match="shape"):
        ab.number_fractions(torch.zeros(5, 31))


def test_mean_mass_per_nucleus(shared_dir):
    eps = ab.number_fractions(_labels())
    assert ab.mean_mass_per_nucleus(eps).item() == pytest.approx(1.258, rel=1e-3)
    assert ab.mass_per_hydrogen(eps).item() == pytest.approx(1.258 * eps.sum().item(), rel=1e-3)
    masses = ab.atomic_masses()
    assert masses[1] == pytest.approx(1.008) and masses[26] == pytest.approx(55.845)
