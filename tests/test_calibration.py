"""Calibration methods on synthetic tables with KNOWN injected trends, the Calibration
object (apply, round trip, domain), and the table reader's errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.table import Table

from phdlspec_app.calibration import Calibration, CalibrationInputError, build_calibration, crossmatch, read_table
from phdlspec_app.calibration import diagnostics as D
from phdlspec_app.calibration.binaries import fit_wide_binaries
from phdlspec_app.calibration.cluster import fit_cluster
from phdlspec_app.calibration.reference import fit_reference
from phdlspec_app.calibration.tables import find_id_column

SLOPE = 0.1  # injected d[Mg/Fe]/dTeff, dex per 1000 K


def binaries_table(n_pairs=120, slope=SLOPE, noise=0.03, seed=1, logg_slope=0.0):
    """Pairs (rows 2i, 2i+1) sharing [Fe/H] and [Mg/Fe]; measured [Mg/Fe] has a Teff trend."""
    rng = np.random.default_rng(seed)
    n = 2 * n_pairs
    teff = rng.uniform(4500, 6500, n)
    # dwarfs and subgiants: log g not a function of Teff, so both trends are separable
    logg = rng.uniform(3.6, 4.6, n)
    feh = np.repeat(rng.normal(0, 0.2, n_pairs), 2)
    mg_true = np.repeat(rng.normal(0.05, 0.1, n_pairs), 2)
    mg = mg_true + slope * (teff - 5000) / 1000 + logg_slope * (logg - 4.0) + rng.normal(0, noise, n)
    ca = np.repeat(rng.normal(0.0, 0.1, n_pairs), 2) + rng.normal(0, noise, n)  # no trend
    t = Table(dict(obsid=np.arange(n), teff=teff, logg=logg, fe_h=feh + rng.normal(0, 0.02, n),
                   mg_fe=mg, mg_fe_err=np.full(n, noise), ca_fe=ca, ca_fe_err=np.full(n, noise)))
    pairs = Table(dict(obsid_a=np.arange(0, n, 2), obsid_b=np.arange(1, n, 2)))
    return t, pairs


def cluster_table(n=80, offset=0.08, slope=-0.06, logg_slope=0.04, noise=0.03, seed=2, mean=0.01):
    """One cluster, dwarfs to giants, [Mg/Fe] = mean + offset + slope*(Teff-5000)/1000 + logg_slope*(logg-3)."""
    rng = np.random.default_rng(seed)
    teff = rng.uniform(4300, 6300, n)
    logg = np.where(teff < 5000, rng.uniform(2.0, 3.5, n), rng.uniform(3.8, 4.6, n))
    mg = mean + offset + slope * (teff - 5000) / 1000 + logg_slope * (logg - 3.0) + rng.normal(0, noise, n)
    return Table(dict(id=[f"m{i}" for i in range(n)], teff=teff, logg=logg, fe_h=0.07 + rng.normal(0, 0.03, n),
                      mg_fe=mg))


def reference_tables(n=300, seed=3, zp=0.05, k=0.2, slope=0.04, noise=0.03):
    """Ours vs a reference: ours = ref + zp + k (ref - 0) + slope (Teff-5000)/1000 + noise."""
    rng = np.random.default_rng(seed)
    teff = rng.uniform(4200, 6500, n)
    logg = rng.uniform(1.5, 4.7, n)
    feh = rng.uniform(-1.0, 0.4, n)
    ref_mg = rng.uniform(-0.1, 0.4, n)
    ours_mg = ref_mg + zp + k * ref_mg + slope * (teff - 5000) / 1000 + rng.normal(0, noise, n)
    ours = Table(dict(designation=[f"J{i:05d}" for i in range(n)], ra=rng.uniform(0, 360, n),
                      dec=rng.uniform(-60, 60, n), teff=teff, logg=logg, fe_h=feh, mg_fe=ours_mg,
                      mg_fe_err=np.full(n, noise)))
    ref = Table(dict(APOGEE_ID=[f"J{i:05d}" for i in range(n)][::-1], TEFF=teff[::-1], LOGG=logg[::-1],
                     FE_H=feh[::-1], MG_FE=ref_mg[::-1]))
    return ours, ref, ref_mg


# ----------------------------------------------------------------------------- methods
def test_wide_binaries_recover_injected_teff_trend():
    t, pairs = binaries_table()
    corr, blocks = fit_wide_binaries(t, pairs, n_boot=400)
    by = {c.label: c for c in corr}
    mg = by["mg_fe"]
    slope, err = mg.trend.coef[0], np.sqrt(mg.trend.cov[0, 0])
    assert abs(slope - SLOPE) < 3 * err, (slope, err)
    assert 0.002 < err < 0.02  # 120 pairs, 0.03 dex noise: ~0.005 dex per 1000 K
    # no injected trend: cross-validation keeps no shape, so nothing is applied to [Ca/Fe]
    ca = by["ca_fe"]
    assert ca.stats["order"] == 0 and ca.trend.coef.size == 0, ca.stats
    assert mg.stats["order"] == 1 and set(mg.stats["cv_scores"]) == {"order0", "order1"}
    out = Calibration([ca]).apply(t)
    assert np.array_equal(np.asarray(out["ca_fe"]), np.asarray(t["ca_fe"]))
    assert mg.stats["scatter_after"] < 0.6 * mg.stats["scatter_before"]
    # internal precision of one star: the injected 0.03 dex
    assert mg.stats["internal_precision"] == pytest.approx(0.03, rel=0.25)


def test_wide_binaries_separate_teff_and_logg_trends():
    t, pairs = binaries_table(n_pairs=200, logg_slope=-0.05, seed=5)
    corr, _ = fit_wide_binaries(t, pairs, features=("teff", "logg"), labels=["mg_fe"], n_boot=300, select=None)
    coef, err = corr[0].trend.coef, np.sqrt(np.diag(corr[0].trend.cov))
    assert corr[0].trend.term_names == ["teff", "logg"]
    assert abs(coef[0] - SLOPE) < 3 * err[0] and abs(coef[1] + 0.05) < 3 * err[1], (coef, err)


def test_wide_binary_bootstrap_errors_are_honest():
    """Over many independent data sets the true slope lies within +-1 bootstrap sigma ~68 % of
    the time (and within 2 sigma ~95 %)."""
    z = []
    for seed in range(200):
        t, pairs = binaries_table(n_pairs=40, seed=1000 + seed, noise=0.04)
        corr, _ = fit_wide_binaries(t, pairs, labels=["mg_fe"], n_boot=150, rng=seed, select=None)
        z.append((corr[0].trend.coef[0] - SLOPE) / np.sqrt(corr[0].trend.cov[0, 0]))
    z = np.abs(np.array(z))
    assert 0.58 < np.mean(z < 1) < 0.78, np.mean(z < 1)
    assert np.mean(z < 2) > 0.90


def test_cluster_error_bars_are_honest():
    z = []
    for seed in range(150):
        m = cluster_table(n=40, seed=2000 + seed)
        corr, _ = fit_cluster(m, {"mg_fe": (0.01, 0.0)}, labels=["mg_fe"], select=None)
        c = corr[0]
        i = c.trend.term_names.index("teff")
        z.append((c.trend.coef[i] + 0.06) / np.sqrt(c.trend.cov[i, i]))
    assert 0.58 < np.mean(np.abs(np.array(z)) < 1) < 0.78


def test_the_cv_gate_rarely_applies_a_trend_that_is_not_there():
    """Pure noise, no trend: across many data sets the gate keeps no shape in most of them
    (a 1-standard-error rule: false positives well under half), for both methods; with a
    real trend of a few sigma it keeps the shape every time."""
    kept_pairs, kept_cluster = [], []
    for seed in range(40):
        t, pairs = binaries_table(n_pairs=50, slope=0.0, seed=3000 + seed, noise=0.05)
        c, _ = fit_wide_binaries(t, pairs, labels=["mg_fe"], n_boot=20, rng=seed)
        kept_pairs.append(c[0].stats["order"] > 0)
        m = cluster_table(n=30, slope=0.0, logg_slope=0.0, seed=4000 + seed)
        c, _ = fit_cluster(m, {"mg_fe": (0.01, 0.0)}, labels=["mg_fe"], rng=seed)
        kept_cluster.append(c[0].trend.term_names != ["1"])
    assert np.mean(kept_pairs) < 0.3, np.mean(kept_pairs)
    assert np.mean(kept_cluster) < 0.3, np.mean(kept_cluster)
    for seed in range(10):
        t, pairs = binaries_table(n_pairs=50, slope=0.1, seed=5000 + seed, noise=0.05)
        assert fit_wide_binaries(t, pairs, labels=["mg_fe"], n_boot=20, rng=seed)[0][0].stats["order"] == 1
        m = cluster_table(n=30, slope=-0.15, logg_slope=0.0, seed=6000 + seed)
        names = fit_cluster(m, {"mg_fe": (0.01, 0.0)}, labels=["mg_fe"], rng=seed)[0][0].trend.term_names
        assert "teff" in names, names


def test_pairs_veto_a_cluster_shape_they_contradict():
    """A cluster's Teff shape is applied to field pairs only if it shrinks their differences:
    pairs with no Teff trend veto it, pairs with the same trend keep it."""
    from phdlspec_app.calibration.binaries import pair_indices

    m = cluster_table(n=40, slope=-0.15, logg_slope=0.0, seed=11)
    flat, pf = binaries_table(n_pairs=40, slope=0.0, seed=12)
    same, ps = binaries_table(n_pairs=40, slope=-0.15, seed=13)
    ref = {"mg_fe": (0.01, 0.0)}
    # without a check the cluster's shape is kept
    assert "teff" in fit_cluster(m, ref, labels=["mg_fe"])[0][0].trend.term_names
    ia, ib, _ = pair_indices(flat, pf)
    c = fit_cluster(m, ref, labels=["mg_fe"], pair_check=(flat, ia, ib))[0][0]
    assert "teff" not in c.trend.term_names and "teff" in c.stats["pair_vetoed"], c.stats
    assert c.stats["n_pairs_checked"] == 40
    assert abs(c.trend.coef[0] - (np.median(m["mg_fe"]) - 0.01)) < 0.05  # the anchor survives
    ia, ib, _ = pair_indices(same, ps)
    c = fit_cluster(m, ref, labels=["mg_fe"], pair_check=(same, ia, ib))[0][0]
    assert "teff" in c.trend.term_names and c.stats["pair_vetoed"] == [], c.stats


def test_cluster_with_no_shape_still_anchors_the_zero_point():
    m = cluster_table(slope=0.0, logg_slope=0.0, offset=0.1, seed=7)
    corr, _ = fit_cluster(m, {"mg_fe": (0.01, 0.02)}, labels=["mg_fe"])
    c = corr[0]
    assert c.trend.term_names == ["1"] and c.stats["terms"] == ["1"], c.stats
    out = Calibration([c]).apply(m)
    assert np.median(out["mg_fe"]) == pytest.approx(0.01, abs=0.015)
    assert np.all(out["mg_fe_calib_err"] >= 0.02)  # the reference mean's error is propagated
    again = Calibration.from_dict(Calibration([c]).to_dict())
    assert np.allclose(again.apply(m)["mg_fe"], out["mg_fe"])


def test_cluster_recovers_trend_and_anchors_to_reference_mean():
    m = cluster_table()
    corr, blocks = fit_cluster(m, {"mg_fe": (0.01, 0.02)}, labels=["mg_fe"])
    c = corr[0]
    names = c.trend.term_names
    assert names == ["1", "teff", "logg"]
    coef, err = c.trend.coef, np.sqrt(np.diag(c.trend.cov))
    assert abs(coef[1] + 0.06) < 3 * err[1] and abs(coef[2] - 0.04) < 3 * err[2], (coef, err)
    assert err[0] >= 0.02  # the reference mean's error is part of the anchor's
    out = Calibration([c]).apply(m)
    assert np.median(out["mg_fe"]) == pytest.approx(0.01, abs=0.015)
    assert np.median(out["mg_fe_raw"]) == pytest.approx(0.09, abs=0.02)
    # flattened: no Teff slope left among the members
    slope_after = np.polyfit((out["teff"] - 5000) / 1000, out["mg_fe"], 1)[0]
    assert abs(slope_after) < 0.02
    assert c.stats["scatter_after"] < c.stats["scatter_before"]


def test_cluster_without_reference_keeps_the_zero_point():
    m = cluster_table(slope=-0.15)
    corr, _ = fit_cluster(m, None, labels=["mg_fe"])
    assert not corr[0].trend.intercept
    out = Calibration(corr).apply(m)
    assert np.median(out["mg_fe"]) == pytest.approx(np.median(m["mg_fe"]), abs=0.03)
    assert np.std(m["mg_fe"]) > 0.06 and np.std(out["mg_fe"]) < 0.036  # down to the 0.03 dex noise


def test_reference_recovers_zero_point_scale_and_trend():
    ours, ref, ref_mg = reference_tables()
    matched = crossmatch(ours, read_like(ref))
    corr, blocks = fit_reference(matched, labels=["mg_fe"])
    c = corr[0]
    assert c.stats["scale_term"] and c.stats["order"] >= 1, c.stats
    out = Calibration([c]).apply(ours)
    resid = out["mg_fe"] - ref_mg
    assert abs(np.median(resid)) < 0.01
    assert np.std(resid) < 0.04  # the 0.03 dex noise, scaled by 1/(1+k), plus fit error
    assert np.std(ours["mg_fe"] - ref_mg) > 2 * np.std(resid)
    k = c.trend.coef[c.trend.term_names.index("self")]
    assert abs(k - 0.2) < 3 * np.sqrt(c.trend.cov[-1, -1]) + 0.01
    # the self term sits on the reference value: no regression dilution
    assert abs(np.polyfit(ref_mg, resid, 1)[0]) < 0.05


def test_reference_cross_validation_prefers_the_simplest_adequate_model():
    ours, ref, ref_mg = reference_tables(zp=-0.07, k=0.0, slope=0.0, seed=9)
    corr, _ = fit_reference(crossmatch(ours, read_like(ref)), labels=["mg_fe"])
    c = corr[0]
    assert c.stats["order"] == 0 and not c.stats["scale_term"], c.stats
    assert c.trend.coef[0] == pytest.approx(-0.07, abs=3 * np.sqrt(c.trend.cov[0, 0]))
    assert set(c.stats["cv_scores"]) >= {"order0", "order1", "order2", "order1+scale"}


def test_reference_also_calibrates_teff_and_logg():
    ours, ref, _ = reference_tables()
    ours["teff"] = np.asarray(ref["TEFF"][::-1]) + 80.0  # a pure zero point of 80 K
    corr, _ = fit_reference(crossmatch(ours, read_like(ref)), labels=["teff"])
    out = Calibration(corr).apply(ours)
    assert np.allclose(out["teff"], ref["TEFF"][::-1], atol=1.0)


def read_like(ref):
    """The reference as read_table would give it (APOGEE names mapped)."""
    from phdlspec_app.calibration.tables import normalize_columns

    return normalize_columns(ref, {"APOGEE_ID": "designation"})


# ----------------------------------------------------------------------------- object
def full_calibration():
    t, pairs = binaries_table()
    return t, build_calibration(t, pairs=pairs, cluster_members=np.arange(0, 60),
                                cluster_reference={"mg_fe": (0.0, 0.02)},
                                options={"wide_binaries": {"n_boot": 100}})


@pytest.mark.parametrize("suffix", [".ecsv", ".json"])
def test_calibration_round_trip(tmp_path, suffix):
    t, cal = full_calibration()
    path = cal.save(tmp_path / f"cal{suffix}")
    back = Calibration.load(path)
    assert [(c.label, c.method) for c in back.corrections] == [(c.label, c.method) for c in cal.corrections]
    a, b = cal.apply(t), back.apply(t)
    for col in ("mg_fe", "mg_fe_err", "ca_fe", "fe_h"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-12, atol=1e-14)
    assert back.domain() == cal.domain()
    assert back.provenance["id"] == cal.provenance["id"]
    assert len(back.diagnostics) == len(cal.diagnostics)
    np.testing.assert_allclose(back.diagnostics["after"], cal.diagnostics["after"])
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    assert back.to_dict()["format"] == "phdlspec-calibration" and back.to_dict()["version"] == 1


def test_load_refuses_newer_versions_and_foreign_files(tmp_path):
    _, cal = full_calibration()
    d = cal.to_dict()
    d["version"] = 99
    (tmp_path / "new.json").write_text(json.dumps(d))
    with pytest.raises(CalibrationInputError, match="new.json.*version 99"):
        Calibration.load(tmp_path / "new.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something"}))
    with pytest.raises(CalibrationInputError, match="other.json.*not a PhDLspec calibration"):
        Calibration.load(tmp_path / "other.json")
    Table({"a": [1]}).write(tmp_path / "plain.ecsv")
    with pytest.raises(CalibrationInputError, match="plain.ecsv.*no phdlspec_calibration"):
        Calibration.load(tmp_path / "plain.ecsv")


def test_apply_keeps_raw_propagates_errors_and_works_on_one_row():
    t, pairs = binaries_table()
    corr, _ = fit_wide_binaries(t, pairs, labels=["mg_fe"], n_boot=200)
    cal = Calibration(corr)
    out = cal.apply(t)
    c = corr[0]
    model, sigma = c.trend.predict(np.asarray(t["teff"])[:, None])
    np.testing.assert_allclose(out["mg_fe"], t["mg_fe"] - model)
    np.testing.assert_allclose(out["mg_fe_raw"], t["mg_fe"])
    np.testing.assert_allclose(out["mg_fe_err"], np.sqrt(t["mg_fe_err"] ** 2 + sigma ** 2))
    np.testing.assert_allclose(out["mg_fe_err_raw"], t["mg_fe_err"])
    assert np.all(out["mg_fe_err"] > out["mg_fe_err_raw"])
    one = cal.apply(dict(zip(t.colnames, t[3])))
    assert isinstance(one, dict) and one["mg_fe"] == pytest.approx(out["mg_fe"][3])
    row = cal.apply(t[5])
    assert row["mg_fe"] == pytest.approx(out["mg_fe"][5])
    with pytest.raises(CalibrationInputError, match="already calibrated"):
        cal.apply(out)


def test_outside_the_valid_domain_is_flagged_not_extrapolated():
    t, pairs = binaries_table()
    cal = Calibration(fit_wide_binaries(t, pairs, labels=["mg_fe"], n_boot=50)[0])
    lo, hi = cal.domain()["mg_fe"]["wide_binaries"]["teff"]
    star = dict(obsid=1, teff=hi + 1500.0, logg=4.0, fe_h=0.0, mg_fe=0.2)
    edge = dict(star, teff=hi)
    out, at_edge = cal.apply(star), cal.apply(edge)
    assert out["calib_flags"] == "mg_fe" and at_edge["calib_flags"] == ""
    assert out["mg_fe"] == pytest.approx(at_edge["mg_fe"])  # clipped to the edge, not extrapolated
    assert np.isnan(cal.apply(star, outside="nan")["mg_fe"])
    inside = cal.apply(dict(star, teff=0.5 * (lo + hi)))
    assert inside["calib_flags"] == ""


def test_apply_needs_the_trend_variables():
    t, pairs = binaries_table()
    cal = Calibration(fit_wide_binaries(t, pairs, labels=["mg_fe"], n_boot=50)[0])
    t.remove_column("teff")
    with pytest.raises(CalibrationInputError, match="'teff' is needed"):
        cal.apply(t)


def test_sequential_methods_do_not_double_correct():
    """Binaries remove the Teff trend; the cluster, fitted after them, finds none left."""
    t, cal = full_calibration()
    by = {(c.method, c.label): c for c in cal.corrections}
    cl = by[("cluster", "mg_fe")]
    # the cross-validation gate drops the Teff term that the binaries already removed
    assert "teff" not in cl.trend.term_names, cl.stats
    out = cal.apply(t)
    mg_true = out["mg_fe"] - (out["mg_fe_raw"] - SLOPE * (t["teff"] - 5000) / 1000)
    assert np.std(mg_true) < 0.02  # what remains is a constant shift


def test_diagnostics_summary_and_plots(tmp_path):
    t, cal = full_calibration()
    s = cal.summary()
    row = s[(s["method"] == "wide_binaries") & (s["label"] == "mg_fe")][0]
    assert row["scatter_after"] < 0.6 * row["scatter_before"]
    assert row["internal_precision"] == pytest.approx(row["scatter_after"] / np.sqrt(2))
    d = cal.diagnostics_for("mg_fe", "wide_binaries")
    assert len(d) == 120 and np.all(np.isfinite(d["dteff"]))
    # the trend column is the fitted model at each pair: slope * dTeff / 1000
    np.testing.assert_allclose(d["trend"], cal.corrections[1].trend.coef[0] * d["dteff"] / 1000, rtol=1e-10)
    # an earlier run's figure of a label this calibration lacks goes; other files stay
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "calibration_zz_fe.png").write_bytes(b"old")
    (tmp_path / "plots" / "notes.txt").write_text("mine")
    paths = D.write_plots(cal.diagnostics, tmp_path / "plots")
    assert {p.name for p in paths} == {"calibration_mg_fe.png", "calibration_ca_fe.png", "calibration_fe_h.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert not list((tmp_path / "plots").glob(".*"))
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted([p.name for p in paths] + ["notes.txt"])


# ----------------------------------------------------------------------------- tables
def test_read_table_maps_catalog_columns_in_every_format(tmp_path):
    apogee = Table(dict(APOGEE_ID=["2M1", "2M2"], TEFF=[5000.0, -9999.0], TEFF_ERR=[50.0, 60.0], LOGG=[4.4, 2.5],
                        M_H=[0.1, 0.2], FE_H=[0.12, 0.18], MG_FE=[0.05, 0.1], MG_H=[0.17, 0.28], S_FE=[0.0, 0.1]))
    galah = Table(dict(sobject_id=[1, 2], teff=[5000.0, 4800.0], e_teff=[80.0, 90.0], fe_h=[0.0, -0.2],
                       Mg_fe=[0.1, 0.2], e_Mg_fe=[0.05, 0.06]))
    apogee.write(tmp_path / "a.fits")
    galah.write(tmp_path / "g.csv")
    galah.write(tmp_path / "g.parquet")
    galah.write(tmp_path / "g.ecsv")
    a = read_table(tmp_path / "a.fits")
    assert a["fe_h"].tolist() == [0.12, 0.18]  # FE_H (exact) wins over the alias M_H
    assert np.isnan(a["teff"][1]) and a["teff_err"][0] == 50.0  # -9999 sentinel -> NaN
    assert a["mg_fe"].tolist() == [0.05, 0.1] and "S_FE" in a.colnames  # non-schema columns kept
    for name in ("g.csv", "g.parquet", "g.ecsv"):
        g = read_table(tmp_path / name)
        assert g["mg_fe"].tolist() == [0.1, 0.2] and g["teff_err"].tolist() == [80.0, 90.0]
        assert g["mg_fe_err"].tolist() == [0.05, 0.06]
    xh = Table({"fe_h": [-0.5], "[Mg/H]": [-0.2]})
    xh.write(tmp_path / "xh.ecsv")
    assert read_table(tmp_path / "xh.ecsv")["mg_fe"][0] == pytest.approx(0.3)
    m = read_table(tmp_path / "g.csv", mapping={"sobject_id": "id", "fe_h": "[Fe/H]"})
    assert "id" in m.colnames and find_id_column(m) == "id"


def test_read_table_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(CalibrationInputError, match="nope.fits: no such file"):
        read_table(tmp_path / "nope.fits")
    (tmp_path / "x.dat").write_text("a,b\n1,2\n")
    with pytest.raises(CalibrationInputError, match="x.dat: unknown table format"):
        read_table(tmp_path / "x.dat")
    (tmp_path / "bad.fits").write_bytes(b"this is not FITS" * 100)
    with pytest.raises(CalibrationInputError, match="bad.fits: cannot read as a table"):
        read_table(tmp_path / "bad.fits")
    (tmp_path / "empty.csv").write_text("teff,logg\n")
    with pytest.raises(CalibrationInputError, match="empty.csv: the table has no rows"):
        read_table(tmp_path / "empty.csv")
    Table({"teff": [1.0], "TEFF": [2.0]}).write(tmp_path / "dup.ecsv")
    with pytest.raises(CalibrationInputError, match="dup.ecsv: columns 'teff' and 'TEFF' both map to 'teff'"):
        read_table(tmp_path / "dup.ecsv")
    Table({"teff": ["hot"]}).write(tmp_path / "str.ecsv")
    with pytest.raises(CalibrationInputError, match="str.ecsv: column 'teff'.*not numeric"):
        read_table(tmp_path / "str.ecsv")
    Table({"teff": [1.0]}).write(tmp_path / "ok.ecsv")
    with pytest.raises(CalibrationInputError, match="ok.ecsv: column 'TEFFX' named in the column mapping"):
        read_table(tmp_path / "ok.ecsv", mapping={"TEFFX": "teff"})
    with pytest.raises(CalibrationInputError, match="ok.ecsv: no identifier column found"):
        find_id_column(read_table(tmp_path / "ok.ecsv"))


def test_crossmatch_by_identifier_and_by_position():
    ours = Table(dict(obsid=[10, 11, 12], ra=[10.0, 20.0, 30.0], dec=[0.0, 5.0, -5.0], teff=[5000.0, 5100, 5200]))
    ref = Table(dict(obsid=["12", "10", "99"], RAJ2000=[30.0 + 1.5 / 3600, 10.0 + 0.5 / 3600, 20.0 + 10 / 3600],
                     DEJ2000=[-5.0, 0.0, 5.0], teff=[5210.0, 4990, 5090]))
    m = crossmatch(ours, ref)
    assert m["obsid"].tolist() == [10, 12] and m["teff_ref"].tolist() == [4990.0, 5210.0]
    p = crossmatch(ours, ref, radius_arcsec=2.0)
    assert p["obsid"].tolist() == [10, 12]
    np.testing.assert_allclose(p["match_sep_arcsec"], [0.5, 1.5 * np.cos(np.radians(5))], atol=1e-3)
    assert crossmatch(ours, ref, radius_arcsec=20.0)["obsid"].tolist() == [10, 11, 12]
    with pytest.raises(CalibrationInputError, match="no star matched within 0.1 arcsec"):
        crossmatch(ours, ref, radius_arcsec=0.1)
    with pytest.raises(CalibrationInputError, match="no RA/Dec columns"):
        crossmatch(ours, Table(dict(obsid=[1])), radius_arcsec=1.0)


def test_wide_binaries_say_when_no_pair_is_found():
    t, pairs = binaries_table(n_pairs=10)
    pairs["obsid_a"] = pairs["obsid_a"] + 10_000
    with pytest.raises(CalibrationInputError, match="no pair has both stars"):
        fit_wide_binaries(t, pairs)


def test_empty_identifiers_match_nothing_and_are_skipped_by_detection():
    """`phdlspec fit` writes obsid "" when a file has none: fall back to designation."""
    ours = Table(dict(file=["a.fits", "b.fits"], obsid=["", ""], designation=["J1", "J2"], teff=[5000.0, 5100.0]))
    assert find_id_column(ours) == "designation"
    ref = Table(dict(obsid=["", "7"], teff=[4000.0, 4100.0]))
    with pytest.raises(CalibrationInputError, match="no star matched"):
        crossmatch(ours, ref, on="obsid")


# ----------------------------------------------------------------------------- the gate's details
def _offset_like_pairs(seed, slope=0.06, n_pairs=60):
    """Pairs whose Teff differences are all about 1000 K: the trend shows as an offset of Delta."""
    rng = np.random.default_rng(seed)
    ta = rng.uniform(5600, 6400, n_pairs)
    tb = ta - rng.normal(1000, 30, n_pairs)
    teff = np.empty(2 * n_pairs)
    teff[0::2], teff[1::2] = ta, tb
    mg = np.repeat(rng.normal(0, 0.1, n_pairs), 2) + slope * (teff - 5000) / 1000 + rng.normal(0, 0.03, 2 * n_pairs)
    t = Table(dict(obsid=np.arange(2 * n_pairs), teff=teff, logg=np.full(2 * n_pairs, 4.3), mg_fe=mg))
    return t, Table(dict(obsid_a=np.arange(0, 2 * n_pairs, 2), obsid_b=np.arange(1, 2 * n_pairs, 2)))


def test_the_gate_charges_a_no_correction_model_for_the_offset_it_leaves():
    """A 0.06 dex offset of the pair differences (15 sigma) is a trend, even when a
    scatter about the median would not see it."""
    kept = []
    for seed in range(10):
        t, pairs = _offset_like_pairs(seed)
        c = fit_wide_binaries(t, pairs, labels=["mg_fe"], n_boot=50, rng=seed)[0][0]
        kept.append(c.trend.term_names == ["teff"])
    assert np.mean(kept) >= 0.9, kept


def test_a_label_without_a_shape_is_never_outside_its_domain():
    t, pairs = binaries_table(n_pairs=40, slope=0.0, seed=21)
    c = fit_wide_binaries(t, pairs, labels=["ca_fe"], n_boot=50)[0][0]
    assert c.trend.term_names == []
    far = Table(dict(teff=[3000.0, 5500.0, 9000.0], logg=[4.0] * 3, ca_fe=[0.1, 0.2, 0.3]))
    corrected, sigma, _, out = c.apply(far, outside="nan")
    assert not out.any() and np.allclose(corrected, [0.1, 0.2, 0.3])


def test_labels_at_a_bound_are_not_measurements():
    from phdlspec_app.calibration.tables import measured_column

    t = Table(dict(mg_fe=[0.1, 0.2, 0.3, 0.4], flags=["", "at_bound:mg_fe", "at_bound:mg_fe_x;x", "at_bound:ca_fe;at_bound:mg_fe"]))
    v = measured_column(t, "mg_fe")
    assert np.isfinite(v[0]) and np.isnan(v[1]) and np.isfinite(v[2]) and np.isnan(v[3])


def test_cv_seed_is_deterministic_and_per_label():
    from phdlspec_app.calibration.models import cv_seed

    assert cv_seed((3, "mg_fe")) == cv_seed((3, "mg_fe")) != cv_seed((3, "ca_fe"))
    assert cv_seed(7) == 7
    # a Generator is drawn from once by the caller; the per-label seeds then do not depend
    # on the order the labels come in
    s1, s2 = cv_seed(np.random.default_rng(1)), cv_seed(np.random.default_rng(1))
    assert s1 == s2


def test_pairs_do_not_veto_a_cluster_shape_they_cannot_see():
    """Pairs of nearly equal Teff cannot judge a Teff shape: it shifts their difference by ~0."""
    from phdlspec_app.calibration.binaries import pair_indices

    m = cluster_table(n=40, slope=-0.15, logg_slope=0.0, seed=11)
    twins, pt = binaries_table(n_pairs=40, slope=0.0, seed=14)
    twins["teff"][1::2] = twins["teff"][0::2] + 5.0
    ia, ib, _ = pair_indices(twins, pt)
    c = fit_cluster(m, {"mg_fe": (0.01, 0.0)}, labels=["mg_fe"], pair_check=(twins, ia, ib))[0][0]
    assert "teff" in c.trend.term_names, c.stats
