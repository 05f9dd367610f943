"""Generic FITS, text, specutils and PhDLspec's own files; air/vacuum; errors."""
import gzip

import numpy as np
import pytest
from astropy.io import fits

from phdlspec_app.io import (Spectrum, SpectrumFormatError, air_to_vacuum, read_spectrum,
                             to_specutils, vacuum_to_air, write_spectrum)


def make_spectrum(n=2000, seed=1, sigma=0.01):
    rng = np.random.default_rng(seed)
    wl = 10 ** (3.5682 + 1e-4 * np.arange(n))
    true = 1.0 - 0.5 * np.exp(-0.5 * ((wl - 4500) / 3.0) ** 2)
    flux = true + rng.normal(0, sigma, n)
    ivar = np.full(n, 1 / sigma**2)
    mask = np.zeros(n, bool)
    mask[100:110] = True
    ivar[100:110] = 0
    return Spectrum(wl, flux, ivar, mask, meta={"designation": "TEST", "snr": {"g": 100.0}, "medium": "vacuum"},
                    extra={"andmask": np.where(mask, 4.0, 0.0)})


# ---- air / vacuum -------------------------------------------------------------------------

def test_air_to_vacuum_known_lines():
    # H-alpha: 6562.80 A in air is 6564.61 A in vacuum; Na D2 5889.951 -> 5891.583 (NIST)
    assert air_to_vacuum(6562.80) == pytest.approx(6564.61, abs=0.01)
    assert air_to_vacuum(5889.951) == pytest.approx(5891.583, abs=0.005)
    assert vacuum_to_air(8544.44) == pytest.approx(8542.09, abs=0.01)  # Ca II triplet line


def test_air_vacuum_round_trip():
    wl = np.linspace(2000, 25000, 5000)
    np.testing.assert_allclose(vacuum_to_air(air_to_vacuum(wl)), wl, atol=1e-4)


# ---- PhDLspec's own FITS / ECSV -------------------------------------------------------------

@pytest.mark.parametrize("name", ["s.fits", "s.fits.gz", "s.ecsv"])
def test_write_then_read_round_trips_exactly(tmp_path, name):
    spec = make_spectrum()
    spec.flux[5] = np.nan
    spec.mask[5] = True
    path = write_spectrum(spec, tmp_path / name)
    back = read_spectrum(path)
    np.testing.assert_array_equal(back.wavelength, spec.wavelength)
    np.testing.assert_array_equal(back.flux, spec.flux)
    np.testing.assert_array_equal(back.ivar, spec.ivar)
    np.testing.assert_array_equal(back.mask, spec.mask)
    np.testing.assert_array_equal(back.extra["andmask"], spec.extra["andmask"])
    assert {k: v for k, v in back.meta.items() if k != "source"} == spec.meta
    assert back.meta["source"] == str(path)
    assert not list(tmp_path.glob("*.part"))


def test_write_is_atomic_and_respects_overwrite(tmp_path):
    spec = make_spectrum()
    path = write_spectrum(spec, tmp_path / "a.fits")
    with pytest.raises(FileExistsError):
        write_spectrum(spec, path, overwrite=False)
    with pytest.raises(ValueError):
        write_spectrum(spec, tmp_path / "b.fits", format="hdf5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.fits"]


# ---- generic 1-D FITS ------------------------------------------------------------------------

def _image(flux, **cards):
    hdu = fits.PrimaryHDU(flux.astype(np.float32))
    for k, v in cards.items():
        hdu.header[k.replace("_", "-") if k == "DC_FLAG" else k] = v
    return hdu


def test_linear_wcs_in_air_is_converted_to_vacuum(tmp_path):
    n = 1500
    wl_air = 4000.0 + 0.5 * (np.arange(1, n + 1) - 3)  # CRPIX1 = 3
    flux = 1 + 0.01 * np.sin(wl_air)
    err = fits.ImageHDU(np.full(n, 0.02, np.float32), name="ERROR")
    path = tmp_path / "lin_air.fits"
    fits.HDUList([_image(flux, CRVAL1=4000.0, CDELT1=0.5, CRPIX1=3.0, CTYPE1="AWAV", CUNIT1="Angstrom"),
                  err]).writeto(path)
    spec = read_spectrum(path)
    np.testing.assert_allclose(spec.wavelength, air_to_vacuum(wl_air), rtol=1e-12)
    np.testing.assert_allclose(spec.ivar, 1 / 0.02**2, rtol=1e-5)
    assert spec.meta["medium"] == "air" and spec.meta["converted_to_vacuum"]
    assert spec.meta["layout"] == "fits-1d-wcs" and not spec.meta["ivar_estimated"]


def test_log_linear_wcs_cd_keyword_and_estimated_ivar(tmp_path):
    rng = np.random.default_rng(3)
    n = 3000
    flux = 100 + rng.normal(0, 2.0, n)  # true sigma = 2 -> ivar 0.25
    path = tmp_path / "log.fits"
    _image(flux, CRVAL1=3.6, CD1_1=1e-4, DC_FLAG=1, VACUUM=True).writeto(path)
    spec = read_spectrum(path)
    np.testing.assert_allclose(spec.wavelength, 10 ** (3.6 + 1e-4 * np.arange(n)), rtol=1e-12)
    assert spec.meta["ivar_estimated"]
    assert np.median(spec.ivar) == pytest.approx(0.25, rel=0.15)
    assert spec.meta["medium"] == "vacuum" and not spec.meta["medium_assumed"]


def test_silent_header_assumes_vacuum_and_says_so(tmp_path):
    path = tmp_path / "silent.fits"
    _image(np.ones(100) + np.arange(100) * 1e-3, CRVAL1=5000.0, CDELT1=1.0).writeto(path)
    spec = read_spectrum(path)
    assert spec.meta["medium_assumed"] and spec.wavelength[0] == 5000.0
    forced = read_spectrum(path, air=True)
    assert forced.wavelength[0] == pytest.approx(air_to_vacuum(5000.0))


def test_fits_table_sdss_like(tmp_path):
    n = 500
    loglam = 3.6 + 1e-4 * np.arange(n)
    cols = [fits.Column("loglam", "E", array=loglam), fits.Column("flux", "E", array=np.ones(n)),
            fits.Column("ivar", "E", array=np.full(n, 4.0)), fits.Column("and_mask", "J", array=np.zeros(n))]
    path = tmp_path / "sdss.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols, name="COADD2")]).writeto(path)
    spec = read_spectrum(path)
    np.testing.assert_allclose(spec.wavelength, 10**loglam.astype(np.float32), rtol=1e-6)
    assert spec.meta["layout"] == "fits-table" and np.all(spec.ivar == 4.0)


# ---- text ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sep,header", [(",", "wavelength,flux,error"), (" ", None), ("\t", "wave\tflux\tsigma"),
                                        (",", None)])
def test_three_column_text(tmp_path, sep, header):
    wl = np.linspace(4000, 5000, 300)
    rows = [sep.join(f"{v:.6f}" for v in r) for r in zip(wl, np.ones(300), np.full(300, 0.1))]
    text = "\n".join(([header] if header else []) + rows)
    path = tmp_path / "s.csv"
    path.write_text("# a comment line\n" + text + "\n")
    spec = read_spectrum(path)
    np.testing.assert_allclose(spec.wavelength, wl, rtol=1e-9)
    np.testing.assert_allclose(spec.ivar, 100.0)
    assert spec.meta["layout"] == "text-columns" and spec.meta["medium_assumed"]


def test_text_ivar_header_nm_unit_air_and_two_columns(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("lambda_air_nm flux ivar\n" + "\n".join(f"{500 + i * 0.1} 1.0 400" for i in range(200)))
    spec = read_spectrum(p)
    assert spec.wavelength[0] == pytest.approx(air_to_vacuum(5000.0))
    assert np.all(spec.ivar == 400) and spec.meta["medium"] == "air"
    p2 = tmp_path / "b.txt"
    p2.write_text("\n".join(f"{5000 + i} {1 + 0.01 * np.sin(i)}" for i in range(300)))
    spec2 = read_spectrum(p2)
    assert spec2.meta["ivar_estimated"] and np.all(spec2.ivar[5:-5] > 0)
    p3 = tmp_path / "c.txt"
    p3.write_text("\n".join(f"{5000 + i} 1.0 0.25" for i in range(300)))
    assert np.all(read_spectrum(p3, third_column="ivar").ivar == 0.25)
    assert np.all(read_spectrum(p3, third_column="var").ivar == 4.0)


def test_gzipped_text(tmp_path):
    p = tmp_path / "s.txt.gz"
    p.write_bytes(gzip.compress("\n".join(f"{5000 + i} 1.0 0.1" for i in range(50)).encode()))
    assert read_spectrum(p).npix == 50


# ---- specutils -------------------------------------------------------------------------------

def test_specutils_in_and_out():
    spec = make_spectrum()
    su = to_specutils(spec)
    import astropy.units as u

    assert su.spectral_axis.unit == u.AA
    back = read_spectrum(su)
    np.testing.assert_array_equal(back.wavelength, spec.wavelength)
    np.testing.assert_array_equal(back.flux, spec.flux)
    np.testing.assert_array_equal(back.mask, spec.mask)
    np.testing.assert_allclose(back.ivar, spec.ivar)
    assert spec.to_specutils().flux.shape == (spec.npix,)


def test_specutils_nm_axis_with_stddev():
    import astropy.units as u
    from astropy.nddata import StdDevUncertainty

    from phdlspec_app.io.specutils_bridge import specutils_class

    cls = specutils_class()
    su = cls(flux=np.ones(100) * u.Jy, spectral_axis=np.linspace(500, 510, 100) * u.nm,
             uncertainty=StdDevUncertainty(np.full(100, 0.5)))
    spec = read_spectrum(su)
    assert spec.wavelength[0] == pytest.approx(5000.0) and np.all(spec.ivar == 4.0)
    assert spec.meta["flux_unit"] == "Jy"


# ---- errors ----------------------------------------------------------------------------------

def _err(path_or_bytes, match, **kw):
    with pytest.raises(SpectrumFormatError, match=match) as info:
        read_spectrum(path_or_bytes, **kw)
    return str(info.value)


def test_errors_name_the_file_and_the_problem(tmp_path):
    missing = tmp_path / "nope.fits"
    assert "nope.fits" in _err(missing, "no such file")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty.csv" in _err(empty, "empty file")
    image = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((64, 64), np.float32)).writeto(image)
    msg = _err(image, "no spectrum layout")
    assert "image.fits" in msg and "(64, 64)" in msg
    table = tmp_path / "catalog.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column("RA", "D", array=np.zeros(3))])]).writeto(table)
    _err(table, "no spectrum layout")
    nan = tmp_path / "nan.csv"
    nan.write_text("\n".join(f"{5000 + i},nan,0.1" for i in range(20)))
    _err(nan, "no usable pixel")
    nonmono = tmp_path / "nonmono.csv"
    nonmono.write_text("\n".join(f"{w},1.0,0.1" for w in [5000, 5001, 5003, 5002, 5004]))
    _err(nonmono, "not monotonic: pixel 3")
    nowcs = tmp_path / "nowcs.fits"
    fits.PrimaryHDU(np.ones(100, np.float32)).writeto(nowcs)
    _err(nowcs, "without a wavelength solution")
    _err(b"\x00\x01\x02binary junk", "unknown binary format", name="junk.bin")
    _err(b"hello world\nthis is not a spectrum\n", "not numeric", name="words.txt")


@pytest.mark.shared_data
def test_truncated_files(tmp_path, lamost_dir):
    for rel in ["learninglamost/spec-55862-B6212_sp06-003.fits", "cmost/spec-55859-F5902_sp01-001.fits.gz"]:
        raw = (lamost_dir / rel).read_bytes()
        cut = tmp_path / ("cut_" + rel.split("/")[-1])
        cut.write_bytes(raw[: len(raw) // 2])
        msg = _err(cut, "truncated")
        assert cut.name in msg


def test_descending_wavelength_is_reversed(tmp_path):
    p = tmp_path / "desc.csv"
    p.write_text("\n".join(f"{6000 - i},{1 + i * 1e-3},0.1" for i in range(100)))
    spec = read_spectrum(p)
    assert spec.wavelength[0] == 5901 and spec.flux[0] == pytest.approx(1.099)
