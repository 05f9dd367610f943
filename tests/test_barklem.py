"""ABO damping from MOOG's Barklem tables (physics/linelists/barklem.py): table reading,
the log Γ₆ → σ conversion, MOOG's matching rules, and the default list's coverage."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import gamma as gamma_fn

from phdlspec_app.io.airvac import air_to_vacuum
from phdlspec_app.physics import constants as C
from phdlspec_app.physics.abundances import solar_abundances
from phdlspec_app.physics.linelists import default as default_mod
from phdlspec_app.physics.linelists.barklem import (BARKLEM_DTYPE, MOOG_REL_TOLERANCE,
                                                    abo_sigma_from_gamma6, apply_barklem_abo,
                                                    read_barklem_tables)
from phdlspec_app.physics.linelists.core import LineList
from phdlspec_app.physics.linelists.moog import read_linemake
from phdlspec_app.physics.linelists.turbospectrum import read_ges_turbospectrum

MOOG_DIR = "physics/atomic/moog"
GES = "physics/linelists/ges_v6_turbospectrum/nlte_ges_linelist_jmg17feb2022_I_II"

# (species, λ air as in linemake, σ a₀², α as published (Barklem et al. 2000; the GES v6
#  list prints the same σ.α), Γ_rad s⁻¹ as in Barklem.dat)
KNOWN = [("Fe I", 5001.863, 725, 0.240, 1.51e8), ("Ti I", 4999.503, 318, 0.245, 8.74e7),
         ("Mg I", 5167.321, 729, 0.238, 1.32e8), ("Mg I", 5172.684, 729, 0.238, 1.32e8),
         ("Mg I", 5183.604, 729, 0.238, 1.32e8), ("Na I", 5889.951, 407, 0.273, 6.64e7),
         ("Na I", 5895.924, 407, 0.273, 6.62e7), ("Ca I", 6162.173, 876, 0.234, 9.67e7),
         ("Fe I", 5269.537, 237, 0.249, 1.50e7)]


def _find(ll: LineList, species: str, wl_vac: float, tol: float = 0.005) -> int:
    idx = np.flatnonzero(ll.species_mask(species) & (np.abs(ll.wavelength - wl_vac) < tol))
    assert len(idx) >= 1, f"no {species} line within {tol} Å of {wl_vac}"
    return int(idx[np.argmin(np.abs(ll.wavelength[idx] - wl_vac))])


def _abo_gamma6(sigma, alpha, mass, T=1e4):
    """Γ₆/n_H (FWHM, s⁻¹ cm³) of ABO theory, written out independently of barklem.py."""
    mu = 1.0 / (1.0 / (1.00794 * C.amu) + 1.0 / (mass * C.amu))
    vbar = math.sqrt(8 * C.k_B * T / (math.pi * mu))
    v0 = 1e6
    return (2 * (4 / math.pi) ** (alpha / 2) * gamma_fn((4 - alpha) / 2) * v0 * sigma * C.a0**2
            * (vbar / v0) ** (1 - alpha))


def _toy_list(rows):
    """LineList from (species, Z, charge, λ vac) tuples."""
    sp, z, ch, wl = zip(*rows)
    return LineList(wavelength=np.array(wl), species=np.array(sp), Z=np.array(z), charge=np.array(ch),
                    log_gf=0.0, E_lower=1.0, mass=55.845).sorted()


def _toy_table(rows):
    """A Barklem-like table from (λ air, Z, charge, σ, α, Γ_rad) tuples."""
    t = np.zeros(len(rows), BARKLEM_DTYPE)
    for i, (wl, z, ch, sig, alp, grad) in enumerate(rows):
        t[i] = (wl, z + ch / 10, z, ch, np.nan, alp, grad, sig)
    return t[np.lexsort((t["wavelength_air"], t["code"]))]


# ------------------------------------------------------------------ no shared data needed
def test_sigma_conversion_inverts_abo_formula():
    for sigma, alpha, mass in [(725.0, 0.240, 55.845), (407.0, 0.273, 22.99), (237.0, 0.249, 55.845),
                               (1200.0, 0.4, 6.94), (300.0, 0.2, 137.33)]:
        lg = math.log10(_abo_gamma6(sigma, alpha, mass))
        assert abo_sigma_from_gamma6(lg, alpha, mass) == pytest.approx(sigma, rel=1e-10)
    # Barklem.dat's Fe I 5001.862 entry, log Γ₆ = -7.273, α = 0.240 -> the published σ = 725
    assert abo_sigma_from_gamma6(-7.273, 0.240, 55.845) == pytest.approx(725, abs=1.0)


def test_matching_rules_on_a_toy_table():
    wl0 = 1500.0  # below 2000 Å air = vacuum: the tolerance is exactly 5e-6 λ
    tab = _toy_table([(wl0, 26, 0, 300.0, 0.25, 1e8), (wl0 + 0.001, 26, 0, 310.0, 0.26, np.nan),
                      (wl0 + 1.0, 26, 1, 200.0, 0.30, 2e8), (wl0 + 2.0, 22, 0, 400.0, 0.22, 3e8)])
    tol = MOOG_REL_TOLERANCE * wl0
    ll = _toy_list([
        ("Fe I", 26, 0, wl0 - 0.9 * tol),      # 0: matches entry 0
        ("Fe I", 26, 0, wl0 + 0.0009),        # 1: nearest is entry 1 (no Γ_rad there)
        ("Fe I", 26, 0, wl0 + 1.0),           # 2: only an Fe II entry at this λ -> NaN
        ("Fe II", 26, 1, wl0 + 1.0 + 1.1 * tol),  # 3: just outside the tolerance -> NaN
        ("Ti I", 22, 0, wl0 + 2.0),           # 4: matches
        ("CN", 0, 0, wl0 + 2.0),              # 5: a molecule -> never
        ("Ni I", 28, 0, wl0 + 3.0),           # 6: no Ni entries -> NaN
    ])
    ll.abo_sigma[4], ll.abo_alpha[4] = 111.0, 0.111  # given by the list: kept
    before = LineList(**ll.arrays())
    out = apply_barklem_abo(ll, table=tab)
    assert ll.equals(before)  # the input is not modified
    np.testing.assert_array_equal(out.abo_sigma[[0, 1, 4]], [300.0, 310.0, 111.0])
    np.testing.assert_array_equal(out.abo_alpha[[0, 1, 4]], [0.25, 0.26, 0.111])
    assert np.isnan(out.abo_sigma[[2, 3, 5, 6]]).all() and np.isnan(out.abo_alpha[[2, 3, 5, 6]]).all()
    assert out.gamma_rad[0] == 1e8 and np.isnan(out.gamma_rad[[1, 2, 3, 4, 5, 6]]).all()
    assert out.meta["barklem"]["abo"] == 2 and out.meta["barklem"]["gamma_rad"] == 1
    # an absolute tolerance replaces the relative one; gamma_rad=False leaves Γ_rad alone
    wide = apply_barklem_abo(ll, table=tab, tolerance_A=0.01, gamma_rad=False)
    assert wide.abo_sigma[3] == 200.0 and np.isnan(wide.gamma_rad).all()
    # a Γ_rad given by the list is not replaced
    ll.gamma_rad[0] = 5e7
    assert apply_barklem_abo(ll, table=tab).gamma_rad[0] == 5e7


# ------------------------------------------------------------------ shared data
@pytest.fixture(scope="module")
def tables(shared_dir):
    return read_barklem_tables(shared_dir / MOOG_DIR)


@pytest.fixture(scope="module")
def atoms_abo(shared_dir):
    atoms = read_linemake("atoms", (3650.0, 9150.0))
    return atoms, apply_barklem_abo(atoms, directory=shared_dir / MOOG_DIR)


@pytest.mark.shared_data
def test_read_barklem_tables(tables, shared_dir):
    assert tables.dtype == BARKLEM_DTYPE
    assert len(tables) == 15935 + 13154  # Barklem.dat + BarklemUV.dat
    assert read_barklem_tables(shared_dir / MOOG_DIR) is tables  # cached
    assert not tables.flags.writeable
    key = tables["code"] * 1e7 + tables["wavelength_air"]
    assert np.all(np.diff(key) >= 0)  # by species, then wavelength
    assert tables["wavelength_air"].min() == pytest.approx(890.122)
    fe = tables[(tables["Z"] == 26) & (tables["charge"] == 0)]
    row = fe[np.argmin(np.abs(fe["wavelength_air"] - 5001.862))]
    assert (row["log_gamma6"], row["alpha"], row["gamma_rad"]) == (-7.273, 0.240, 1.51e8)
    assert row["sigma"] == pytest.approx(725, abs=1.0)
    # 4-column rows (no Γ_rad) -> NaN, e.g. Ni I 4431.033
    ni = tables[(tables["Z"] == 28) & (np.abs(tables["wavelength_air"] - 4431.033) < 1e-6)]
    assert len(ni) == 1 and np.isnan(ni["gamma_rad"][0])
    assert np.isnan(tables["gamma_rad"]).sum() >= 547
    assert set(np.unique(tables["charge"])) <= {0, 1}


@pytest.mark.shared_data
@pytest.mark.parametrize("species, air, sigma, alpha, grad", KNOWN)
def test_known_lines_get_published_abo(atoms_abo, species, air, sigma, alpha, grad):
    atoms, ll = atoms_abo
    i = _find(ll, species, air_to_vacuum(air), tol=0.002)
    assert np.isnan(atoms.abo_sigma[i])  # linemake itself has none
    assert ll.abo_sigma[i] == pytest.approx(sigma, abs=1.0)
    assert ll.abo_alpha[i] == pytest.approx(alpha, abs=0.01)
    assert ll.gamma_rad[i] == pytest.approx(grad, rel=1e-6)
    assert np.isnan(ll.vdw_log_gamma6[i]) and np.isnan(ll.vdw_enhancement[i])


@pytest.mark.shared_data
def test_agrees_with_ges_abo(atoms_abo, shared_dir):
    """Every matched line that GES v6 also lists with ABO data: same σ.α."""
    _, ll = atoms_abo
    ges = read_ges_turbospectrum(shared_dir / GES, wl_range=(3650.0, 9150.0))
    ges = ges[np.isfinite(ges.abo_sigma)]
    ds, da = [], []
    for i in np.flatnonzero(np.isfinite(ll.abo_sigma)):
        lo, hi = np.searchsorted(ges.wavelength, [ll.wavelength[i] - 0.003, ll.wavelength[i] + 0.003])
        k = [j for j in range(lo, hi) if ges.species[j] == ll.species[i]]
        if k:
            j = min(k, key=lambda j: abs(ges.wavelength[j] - ll.wavelength[i]))
            ds.append(ll.abo_sigma[i] / ges.abo_sigma[j] - 1)
            da.append(ll.abo_alpha[i] - ges.abo_alpha[j])
    ds, da = np.abs(ds), np.abs(da)
    assert len(ds) > 2000
    assert np.median(ds) < 0.002 and np.mean((ds < 0.005) & (da < 0.01)) > 0.99


@pytest.mark.shared_data
def test_lines_without_entry_stay_nan(atoms_abo):
    atoms, ll = atoms_abo
    hit = np.isfinite(ll.abo_sigma)
    assert np.array_equal(hit, np.isfinite(ll.abo_alpha))
    assert 4000 < hit.sum() < 6000
    # Ti II, Ba I, rare earths: no entries in Barklem.dat
    for sp in ("Ti II", "Ba I", "Nd II", "Ce II", "Zr II"):
        m = ll.species_mask(sp)
        assert m.any() and not hit[m].any(), sp
    # only Γ_rad and ABO columns change, and only on matched lines
    for name in ("wavelength", "log_gf", "E_lower", "mass", "gamma_stark", "vdw_log_gamma6"):
        assert np.array_equal(getattr(ll, name), getattr(atoms, name), equal_nan=True)
    assert np.isnan(ll.gamma_rad[~hit]).all()


@pytest.mark.shared_data
def test_default_list_has_abo_for_strong_neutral_lines(shared_dir):
    ll = default_mod.build_default_linelist(3700.0, 9100.0, molecules=("CN",))
    assert ll.meta["barklem"]["abo"] > 4000
    bare = default_mod.build_default_linelist(3700.0, 9100.0, molecules=("CN",), barklem=False)
    assert np.isnan(bare.abo_sigma).all() and ll.meta["files"][-1].endswith("Barklem.dat")
    assert np.isnan(ll.abo_sigma[ll.species_mask("CN")]).all()
    hit = np.isfinite(ll.abo_sigma)
    per = {sp: int(hit[ll.species_mask(sp)].sum()) for sp in
           ("Fe I", "Ti I", "Cr I", "Ni I", "V I", "Ca I", "Mg I", "Na I", "Fe II")}
    assert per["Fe I"] > 1400 and per["Ti I"] > 200 and per["Cr I"] > 300 and per["Ni I"] > 200
    assert per["Ca I"] >= 40 and per["Mg I"] >= 10 and per["Na I"] >= 8 and per["Fe II"] > 900
    # line strength at 5000 K for solar abundances: log eps + log gf - theta E_low
    eps = solar_abundances()
    neutral = ll.charge == 0
    s = eps[ll.Z] + ll.log_gf - 5040.0 / 5000.0 * ll.E_lower
    assert hit[neutral & (s > 5)].all()  # the ~80 strongest (Mg b, Na D, Ca I 4226, Fe I ...)
    assert hit[neutral & (s > 4)].mean() > 0.85
    assert hit[neutral & (s > 3)].mean() > 0.7


@pytest.mark.shared_data
def test_default_cache_key_depends_on_barklem(shared_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PHDLSPEC_CACHE", str(tmp_path))
    default_mod._load.cache_clear()
    try:
        with_abo = default_mod.load_default_linelist(5160, 5190, molecules=())
        without = default_mod.load_default_linelist(5160, 5190, molecules=(), barklem=False)
        assert len(list(tmp_path.glob("linelist-*.npz"))) == 2
        assert np.isfinite(with_abo.abo_sigma).any() and np.isnan(without.abo_sigma).all()
        default_mod._load.cache_clear()
        again = default_mod.load_default_linelist(5160, 5190, molecules=())  # from the cache
        assert again.equals(with_abo)
        i = _find(again, "Mg I", air_to_vacuum(5183.604))
        assert again.abo_sigma[i] == pytest.approx(729, abs=1.0)
    finally:
        default_mod._load.cache_clear()
