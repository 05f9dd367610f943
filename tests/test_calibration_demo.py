"""The calibration demonstration (``phdlspec calibration-demo``) end to end, with the engine
replaced by the TEST DOUBLE of ``tests/fitting_double.py`` made to disagree with itself in a
known, Teff-dependent way, so that the pipeline's calibration has a trend to remove.
The real run (engine, ATLAS9 atmospheres, trained emulator) is in BENCHMARKS.md."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fitting_double import LineDouble
from phdlspec_app import labels as L
from phdlspec_app.calibration import Calibration, read_table
from phdlspec_app.calibration.demo import SIMULATED_NOTE, DemoSpec, demo_stars, run_demo, synthesize_demo

torch.set_num_threads(1)
_I = {n: i for i, n in enumerate(L.label_names())}


def test_demo_stars_are_real_m67_positions_and_pairs_sharing_abundances(shared_dir):
    truth, pairs = demo_stars(DemoSpec(n_pairs=20), data_dir=shared_dir)
    m67 = truth[truth["kind"] == "m67"]
    assert len(m67) == 30 and all(s.startswith("2M") for s in m67["source_id"])
    assert m67["logg"].min() < 2.5 and m67["logg"].max() > 4.2  # giants to dwarfs
    assert np.ptp(m67["fe_h"]) == 0 and np.ptp(m67["mg_fe"]) == 0  # one composition
    pos = {s: i for i, s in enumerate(truth["id"])}
    for a, b in zip(pairs["id_a"], pairs["id_b"]):
        ia, ib = pos[a], pos[b]
        assert truth["teff"][ia] - truth["teff"][ib] >= 0
        for name in ("fe_h", "mg_fe", "ba_fe"):
            assert truth[name][ia] == truth[name][ib]
    assert truth.meta["note"] == SIMULATED_NOTE == pairs.meta["note"]


def test_demo_removes_an_injected_teff_trend_and_resumes(shared_dir, tmp_path):
    emu = LineDouble()
    slope = 0.2  # dex per 1000 K: the "other physics" makes Mg lines look richer in hotter stars

    def other_physics(lab):
        lab = np.array(lab, float)
        lab[_I["mg_fe"]] += slope * (lab[_I["teff"]] - 5500.0) / 1000.0
        return np.asarray(emu(lab[None]))[0]

    spec = DemoSpec(n_m67=6, n_m67_dwarfs=6, n_pairs=14, snr=80)
    res = run_demo(tmp_path, spec, emulator=emu, synthesizer=other_physics, data_dir=shared_dir, progress=False,
                   bootstrap=50, fit_kwargs={"cmaes_evals": 800})
    v = res["truth_scatter"]["mg_fe"]
    before, after = v["scatter_before"], v["scatter_after"]
    assert before > 0.06 and after < 0.5 * before, v
    assert v["trend_after"] < 0.5 * v["trend_before"], v
    for name in ("truth", "pairs", "results", "calibration", "summary", "truth_scatter"):
        assert res["paths"][name].is_file(), name
    assert res["paths"]["plots"]
    results = read_table(res["paths"]["results"])
    assert len(results) == 6 + 6 + 28 and bool(np.all(results["simulated"]))
    # the calibration file round-trips and gives the same calibrated labels
    again = Calibration.load(res["paths"]["calibration"]).apply(results)
    assert np.allclose(np.asarray(again["mg_fe"], float), np.asarray(res["calibration"].apply(results)["mg_fe"], float),
                       equal_nan=True)
    # resumable: the engine's spectra are on disk, so a second pass synthesizes nothing
    truth = read_table(res["paths"]["truth"])

    def must_not_run(lab):
        raise AssertionError("re-synthesized a star whose spectrum is on disk")

    fluxes = synthesize_demo(tmp_path, truth, spec, synthesizer=must_not_run, progress=False)
    assert len(fluxes) == len(truth)
    # recalibrating the same fits replaces the figures: one left by an earlier run goes
    stale = tmp_path / "plots" / "calibration_zz_fe.png"
    stale.write_bytes(b"an earlier run's figure")
    res2 = run_demo(tmp_path, spec, emulator=emu, synthesizer=must_not_run, data_dir=shared_dir, progress=False,
                    bootstrap=50, reuse_fits=True)
    assert not stale.exists()
    assert sorted(res2["paths"]["plots"]) == sorted(res["paths"]["plots"])
    assert all(p.is_file() for p in res2["paths"]["plots"])
