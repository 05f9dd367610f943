"""`phdlspec calibrate` end to end on temporary files, and the loaders of the real
reference catalogs in the shared data (skipped when absent)."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from phdlspec_app.calibration import Calibration, crossmatch, read_table
from phdlspec_app.calibration import catalogs as C
from phdlspec_app.cli import main

from test_calibration import SLOPE, binaries_table, reference_tables


def _write_inputs(tmp_path):
    t, pairs = binaries_table(n_pairs=100)
    ours, ref, ref_mg = reference_tables(n=200)
    # one results table: the binaries plus the reference stars (ids unique)
    ours["obsid"] = np.arange(10_000, 10_000 + len(ours))
    ref["obsid"] = ours["obsid"][::-1]
    for col in ("ca_fe", "ca_fe_err"):
        ours[col] = np.nan
    results = Table(dict(obsid=np.concatenate([t["obsid"], ours["obsid"]])))
    for col in ("teff", "logg", "fe_h", "mg_fe", "mg_fe_err", "ca_fe", "ca_fe_err"):
        results[col] = np.concatenate([t[col], ours[col]])
    results["ra"] = np.concatenate([np.full(len(t), np.nan), ours["ra"]])
    results["dec"] = np.concatenate([np.full(len(t), np.nan), ours["dec"]])
    results.write(tmp_path / "results.ecsv")
    pairs.write(tmp_path / "pairs.csv")
    Table(dict(obsid=np.arange(0, 60))).write(tmp_path / "members.ecsv")
    Table(dict(mg_fe=[0.0], mg_fe_err=[0.02])).write(tmp_path / "cluster_ref.ecsv")
    ref["RA"] = ours["ra"][::-1] + 0.3 / 3600
    ref["DEC"] = ours["dec"][::-1]
    ref.write(tmp_path / "apogee.fits")
    return results, ref_mg


def test_cli_fit_then_apply(tmp_path, capsys):
    results, _ = _write_inputs(tmp_path)
    rc = main(["calibrate", str(tmp_path / "results.ecsv"), "--pairs", str(tmp_path / "pairs.csv"),
               "--cluster", str(tmp_path / "members.ecsv"), "--cluster-ref", str(tmp_path / "cluster_ref.ecsv"),
               "--reference", str(tmp_path / "apogee.fits"), "--match-on", "obsid", "--bootstrap", "100",
               "--labels", "mg_fe,ca_fe,teff",
               "-o", str(tmp_path / "cal.ecsv"), "--plots", str(tmp_path / "plots")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "wide_binaries  mg_fe" in out and "reference      mg_fe" in out and "cluster        mg_fe" in out
    cal = Calibration.load(tmp_path / "cal.ecsv")
    assert {(c.method, c.label) for c in cal.corrections} >= {
        ("wide_binaries", "mg_fe"), ("cluster", "mg_fe"), ("reference", "mg_fe"), ("reference", "teff")}
    wb = next(c for c in cal.corrections if c.method == "wide_binaries" and c.label == "mg_fe")
    assert abs(wb.trend.coef[0] - SLOPE) < 3 * np.sqrt(wb.trend.cov[0, 0])
    assert set(cal.provenance["inputs"]) == {"results", "pairs", "cluster", "reference"}
    assert len(cal.provenance["inputs"]["results"]["sha256"]) == 64
    assert (tmp_path / "plots" / "calibration_mg_fe.png").is_file()

    rc = main(["calibrate", "--apply", str(tmp_path / "cal.ecsv"), str(tmp_path / "results.ecsv"),
               "-o", str(tmp_path / "calibrated.ecsv")])
    assert rc == 0
    cal_t = read_table(tmp_path / "calibrated.ecsv")
    assert len(cal_t) == len(results)
    np.testing.assert_allclose(cal_t["mg_fe_raw"], results["mg_fe"])
    assert {"mg_fe_err_raw", "calib_flags", "teff_raw"} <= set(cal_t.colnames)
    assert np.all(cal_t["mg_fe_err"] >= cal_t["mg_fe_err_raw"])


def test_cli_matches_by_position(tmp_path, capsys):
    _write_inputs(tmp_path)
    rc = main(["calibrate", str(tmp_path / "results.ecsv"), "--reference", str(tmp_path / "apogee.fits"),
               "--match-radius", "1", "-o", str(tmp_path / "cal.json")])
    assert rc == 0, capsys.readouterr()
    cal = Calibration.load(tmp_path / "cal.json")
    ref = next(c for c in cal.corrections if c.label == "mg_fe")
    assert ref.stats["n_stars"] == 200
    rc = main(["calibrate", str(tmp_path / "results.ecsv"), "--reference", str(tmp_path / "apogee.fits"),
               "--match-radius", "0.1", "-o", str(tmp_path / "cal2.json")])
    assert rc == 2 and "no star matched within 0.1 arcsec" in capsys.readouterr().err


def test_cli_bad_inputs_give_clear_errors(tmp_path, capsys):
    _write_inputs(tmp_path)
    rc = main(["calibrate", str(tmp_path / "missing.ecsv"), "--pairs", str(tmp_path / "pairs.csv"),
               "-o", str(tmp_path / "c.ecsv")])
    assert rc == 2 and "missing.ecsv: no such file" in capsys.readouterr().err
    rc = main(["calibrate", str(tmp_path / "results.ecsv"), "-o", str(tmp_path / "c.ecsv")])
    assert rc == 2 and "no correction could be fitted" in capsys.readouterr().err
    rc = main(["calibrate", str(tmp_path / "results.ecsv"), "--pairs", str(tmp_path / "pairs.csv"),
               "-o", str(tmp_path / "c.txt")])
    assert rc == 2 and "c.txt: a calibration is saved as .ecsv or .json" in capsys.readouterr().err
    rc = main(["calibrate", "--apply", str(tmp_path / "results.ecsv"), str(tmp_path / "results.ecsv"),
               "-o", str(tmp_path / "x.ecsv")])
    assert rc == 2 and "no phdlspec_calibration block" in capsys.readouterr().err
    assert not (tmp_path / "c.ecsv").exists()


def test_cli_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    text = capsys.readouterr().out
    assert "phdlspec calibrate --apply calibration.ecsv" in text and "--match-radius" in text


# ----------------------------------------------------------------------------- real catalogs
def test_occam_m67_means_and_members(shared_dir):
    means = C.occam_cluster_means("M67", data_dir=shared_dir)
    assert means["fe_h"] == (0.07, 0.03) and means["mg_fe"] == (0.01, 0.02)
    assert set(means) == {"fe_h", "o_fe", "mg_fe", "si_fe", "ca_fe", "v_fe", "cr_fe", "mn_fe", "co_fe", "ni_fe"}
    assert C.occam_cluster_means("NGC_2682", data_dir=shared_dir) == means
    members = C.occam_members("M67", data_dir=shared_dir)
    assert len(members) == 35  # NUM_STARS of the cluster means
    # M67 is at RA 132.85, Dec +11.81
    assert np.all(np.abs(members["ra"] - 132.85) < 1.0) and np.all(np.abs(members["dec"] - 11.8) < 1.0)
    with pytest.raises(ValueError, match="not in the OCCAM"):
        C.occam_cluster_means("NGC 9999", data_dir=shared_dir)


def test_gaia_benchmark_stars(shared_dir):
    v3 = C.gaia_benchmark_stars("v3", data_dir=shared_dir)
    assert len(v3) > 100 and {"teff", "logg", "fe_h", "ra", "dec", "name"} <= set(v3.colnames)
    v21 = C.gaia_benchmark_stars("v2.1", data_dir=shared_dir)
    sco = v21[v21["name"] == "18 Sco"][0]
    assert sco["teff"] == pytest.approx(5810, abs=1)
    # [Mg/Fe] = [Mg/H] - [Fe/H], the catalog's columns kept beside the schema ones
    assert sco["mg_fe"] == pytest.approx(sco["__Mg_H_"] - sco["fe_h"], abs=1e-6)
    assert abs(sco["mg_fe"]) < 0.1


def test_real_m67_demo_galah_iron_anchored_to_apogee(shared_dir, tmp_path, capsys):
    """GALAH DR3 M67-field stars that OCCAM lists as members, calibrated in [Fe/H] onto
    APOGEE's M67 mean through the CLI (a real-data run of the cluster method)."""
    galah = C.galah_m67_field(data_dir=shared_dir)
    galah.rename_column("sobject_id", "id")
    galah.write(tmp_path / "galah_m67.ecsv")
    members = crossmatch(galah, C.occam_members("M67", data_dir=shared_dir), radius_arcsec=2.0)
    assert len(members) >= 20
    rc = main(["calibrate", str(tmp_path / "galah_m67.ecsv"), "--cluster", "occam:M67", "--cluster-ref", "M67",
               "--labels", "fe_h", "-o", str(tmp_path / "m67.ecsv")])
    assert rc == 0, capsys.readouterr()
    cal = Calibration.load(tmp_path / "m67.ecsv")
    c = cal.corrections[0]
    assert (c.method, c.label, c.stats["n_members"]) == ("cluster", "fe_h", len(members))
    out = cal.apply(members)
    assert np.median(out["fe_h"]) == pytest.approx(0.07, abs=0.02)


def test_cli_reference_from_the_shared_gaia_benchmarks(shared_dir, tmp_path, monkeypatch, capsys):
    """`--reference gaia:v3` loads the Gaia FGK benchmark stars and matches by position; our
    labels made from theirs with known offsets get those offsets back as zero points."""
    monkeypatch.setenv("PHDLSPEC_DATA", str(shared_dir))
    gbs = C.gaia_benchmark_stars("v3", data_dir=shared_dir)
    ok = np.isfinite(np.asarray(gbs["teff"], float)) & np.isfinite(np.asarray(gbs["logg"], float)) \
        & np.isfinite(np.asarray(gbs["fe_h"], float))
    gbs = gbs[ok]
    rng = np.random.default_rng(5)
    n = len(gbs)
    ours = Table(dict(designation=[f"star{i}" for i in range(n)],
                      ra=np.asarray(gbs["ra"], float) + 0.5 / 3600, dec=np.asarray(gbs["dec"], float),
                      teff=np.asarray(gbs["teff"], float) + 80 + rng.normal(0, 40, n),
                      logg=np.asarray(gbs["logg"], float) - 0.2 + rng.normal(0, 0.05, n),
                      fe_h=np.asarray(gbs["fe_h"], float) + 0.1 + rng.normal(0, 0.03, n)))
    ours.write(tmp_path / "ours.ecsv")
    assert main(["calibrate", str(tmp_path / "ours.ecsv"), "--reference", "gaia:v3",
                 "--max-order", "0", "-o", str(tmp_path / "cal.ecsv")]) == 0
    cal = Calibration.load(tmp_path / "cal.ecsv")
    zp = {c.label: (c.trend.coef[0], np.sqrt(c.trend.cov[0, 0])) for c in cal.corrections}
    assert abs(zp["teff"][0] - 80) < 3 * zp["teff"][1] + 5, zp
    assert abs(zp["logg"][0] + 0.2) < 3 * zp["logg"][1] + 0.01, zp
    assert abs(zp["fe_h"][0] - 0.1) < 3 * zp["fe_h"][1] + 0.005, zp
    assert main(["calibrate", str(tmp_path / "ours.ecsv"), "--reference", "gaia:v9",
                 "-o", str(tmp_path / "x.ecsv")]) == 2
    assert "not one of the shared catalogs" in capsys.readouterr().err
