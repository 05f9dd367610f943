"""The reader on every real LAMOST spectrum in the shared data."""
import csv
import subprocess
import sys

import numpy as np
import pytest

from conftest import LAMOST_DIR, lamost_files
from phdlspec_app.io import SpectrumFormatError, read_spectrum

pytestmark = pytest.mark.shared_data

FILES = lamost_files()
LAYOUT_OF_FORMAT = {
    "bintable": "lamost-coadd-table",
    "primary_image_5x": None,  # image: 'lamost-image' or 'lamost-v2.6-image' by EXTEN0
}


def _inventory():
    if not LAMOST_DIR:
        return {}
    with open(LAMOST_DIR / "INVENTORY.csv") as fh:
        return {row["file"].split("spectra/lamost/", 1)[1]: row for row in csv.DictReader(fh)}


INVENTORY = _inventory()


def test_all_206_files_are_present(lamost_dir):
    assert len(FILES) == 206, f"expected the 206 real LAMOST spectra, found {len(FILES)}"
    assert len(INVENTORY) == 206


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_real_lamost_file_reads_and_matches_inventory(path, lamost_dir):
    spec = read_spectrum(path)
    row = INVENTORY[str(path.relative_to(lamost_dir))]
    wl = spec.wavelength
    # vacuum Angstrom, strictly increasing, the LAMOST log-linear grid (1e-4 dex per pixel)
    assert np.all(np.diff(wl) > 0)
    assert 3680 < wl[0] < 3710 and 8800 < wl[-1] < 9110
    np.testing.assert_allclose(np.diff(np.log10(wl)), 1e-4, rtol=2e-3)
    assert spec.npix == int(row["format"].split("x")[-1]) if "image" in row["format"] else spec.npix > 3800
    assert spec.mask.dtype == bool and spec.flux.shape == spec.ivar.shape == wl.shape
    assert np.all(spec.ivar[~spec.mask] > 0)
    assert np.all(spec.ivar >= 0)
    assert np.all(spec.mask[spec.ivar == 0])
    assert spec.masked_fraction < 0.9
    m = spec.meta
    assert m["medium"] == "vacuum" and m["source"] == str(path)
    assert m["designation"] == row["desig"]
    assert m["class"] == row["cls"]
    assert abs(m["ra"] - float(row["ra"])) < 1e-5
    if row["snrg"]:
        assert m["snr"]["g"] == pytest.approx(float(row["snrg"]), abs=0.01)
    if row["obsid"]:
        assert str(m["obsid"]) == row["obsid"]
    if row["format"].startswith("bintable"):
        assert m["layout"] == "lamost-coadd-table" and "normalization" in spec.extra
    elif "Subcontinuum" in (row["exten0"] or "") or row["verspipe"] == "v2.6.4":
        assert m["layout"] == "lamost-v2.6-image" and "subcontinuum" in spec.extra
    else:
        assert m["layout"] == "lamost-image"


def test_v26_third_row_is_subcontinuum_and_wavelength_comes_from_coeffs(lamost_dir):
    from astropy.io import fits

    path = lamost_dir / "learninglamost" / "spec-55862-B6212_sp06-003.fits"
    spec = read_spectrum(path)
    raw = fits.getdata(path)
    hdr = fits.getheader(path)
    expected = 10 ** (hdr["COEFF0"] + hdr["COEFF1"] * np.arange(raw.shape[1]))
    np.testing.assert_allclose(spec.wavelength, expected, rtol=1e-12)
    np.testing.assert_array_equal(spec.extra["subcontinuum"], raw[2])
    assert not np.allclose(raw[2], expected)  # the third row is not the wavelength
    assert spec.meta["snr_lower_limits"] == ["i", "r", "z"]


def test_dr7_image_and_dr9_table_of_the_same_star_agree(lamost_dir):
    dr9 = read_spectrum(lamost_dir / "cmost" / "spec-55859-F5902_sp01-001.fits.gz")
    dr7 = read_spectrum(lamost_dir / "cmost" / "spec-55859-F5902_sp01-001_dr7.fits.gz")
    assert dr9.meta["layout"] == "lamost-coadd-table" and dr7.meta["layout"] == "lamost-image"
    assert dr9.meta["obsid"] == dr7.meta["obsid"] == 101001
    n = min(dr9.npix, dr7.npix)
    np.testing.assert_allclose(dr9.wavelength[:n], dr7.wavelength[:n], rtol=1e-6)


def test_mask_bits_and_zero_ivar_become_mask(lamost_dir):
    path = next(p for p in FILES if (read_spectrum(p, mask_bits="none").extra["ormask"] != 0).any())
    both = read_spectrum(path)
    andonly = read_spectrum(path, mask_bits="and")
    none = read_spectrum(path, mask_bits="none")
    orm, andm = both.extra["ormask"] != 0, both.extra["andmask"] != 0
    assert both.mask[orm].all() and both.mask[andm].all()
    assert andonly.mask[andm].all()
    assert none.mask.sum() <= andonly.mask.sum() <= both.mask.sum()
    np.testing.assert_array_equal(none.mask, none.ivar <= 0)


def test_qso_is_read_and_labelled(lamost_dir):
    spec = read_spectrum(lamost_dir / "cmost" / "spec-60591-LN042429N340750BM01_sp01-005.fits.gz")
    assert spec.meta["class"] == "QSO"
    assert spec.meta["data_release"].startswith("LAMOST DR13")


def _info(*args):
    return subprocess.run([sys.executable, "-m", "phdlspec_app.cli", "info", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_cli_info_prints_ranges_and_snr(lamost_dir):
    out = _info(lamost_dir / "cmost" / "spec-55859-F5902_sp01-001.fits.gz",
                lamost_dir / "learninglamost" / "spec-55862-B6212_sp06-003.fits")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "3699.99 - 9097.04 A (vacuum" in text
    assert "3699.99 - 9088.66 A (vacuum" in text
    assert "g:12.2" in text and "r:27.2" in text  # DR9 header SNRG/SNRR
    assert "g:71.4" in text and "r:>=99.0" in text  # v2.6 header SN_G, capped SN_R
    assert "lamost-coadd-table" in text and "lamost-v2.6-image" in text
    assert "LAMOST DR9" in text and "masked" in text


def test_cli_info_json_and_bad_file(tmp_path, lamost_dir):
    import json

    bad = tmp_path / "broken.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    out = _info("--json", lamost_dir / "laspec" / "spec-58397-EG014118N254444M01_sp03-031.fits", bad)
    assert out.returncode == 2
    rec = json.loads(out.stdout.splitlines()[0])
    assert rec["obsid"] == 677503031 and rec["snr"]["g"] == pytest.approx(153.72)
    assert "broken.fits" in out.stderr and "Traceback" not in out.stderr
