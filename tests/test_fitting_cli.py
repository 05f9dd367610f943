"""``phdlspec fit`` / ``fit-batch`` and the result tables, with the TEST DOUBLE
(``fitting_double:make_double``) as the emulator."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from fitting_double import TRUTHS, LineDouble, noisy_spectrum
from phdlspec_app import labels as L
from phdlspec_app.cli import main
from phdlspec_app.fitting.output import read_results, write_results
from phdlspec_app.io import write_spectrum

torch.set_num_threads(1)
FIX = [f"--fix={lab.name}=0" for lab in L.abundance_labels() if lab.name not in ("fe_h", "mg_fe")]
FAST = ["--emulator", "fitting_double:make_double", "--cmaes-evals", "300", *FIX]
def test_fit_command_rows_errors_and_plots(double_stars, tmp_path, capsys):
    qso = tmp_path / "qso.ecsv"
    write_spectrum(noisy_spectrum(LineDouble(), {}, 30, seed=9, meta={"class": "QSO", "subclass": "Non"}), qso)
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not a spectrum")
    out = tmp_path / "res.ecsv"
    rc = main(["fit", str(double_stars[0]), str(double_stars[1]), str(qso), str(junk), "-o", str(out), "--plot",
               str(tmp_path / "figs"), "--prior", "logg=4.3,0.2", *FAST])
    err = capsys.readouterr().err
    assert rc == 2
    assert "qso.ecsv: LAMOST classifies this object as QSO" in err and "junk.fits" in err
    rows = read_results(out)
    assert [Path(r["file"]).name for r in rows] == ["star0.ecsv", "star1.ecsv", "qso.ecsv", "junk.fits"]
    for r, t in zip(rows[:2], TRUTHS):
        assert r["error"] == "" and abs(r["teff"] - t["teff"]) < 5 * r["teff_err"] + 20
        assert abs(r["rv"] - t["rv"]) < 3 and r["chi2_reduced"] < 1.3 and r["obsid"] in ("1000", "1001", 1000, 1001)
    assert "QSO" in rows[2]["error"] and np.isnan(rows[2]["teff"])
    assert (tmp_path / "figs" / "star0_fit.png").stat().st_size > 10000
    assert (tmp_path / "figs" / "star1_corner.png").stat().st_size > 10000


def test_result_formats_and_atomic_writes(tmp_path):
    rows = [{"file": "a", "teff": 5000.0, "teff_err": 20.0, "flags": "low_snr", "error": ""},
            {"file": "b", "error": "b: not a star"}]
    for ext in (".ecsv", ".fits", ".json", ".parquet"):
        p = write_results(rows, tmp_path / f"r{ext}")
        back = read_results(p)
        assert [r["file"] for r in back] == ["a", "b"]
        assert back[0]["teff"] == 5000.0 and back[1]["error"] == "b: not a star"
        assert back[1]["teff"] is None or np.isnan(back[1]["teff"])
    assert len(json.loads((tmp_path / "r.json").read_text())[0]) >= 32
    # a failing write leaves the previous table untouched and no temporary file behind
    before = (tmp_path / "r.ecsv").read_bytes()
    with pytest.raises(Exception):
        write_results([{"file": "c", "teff": object()}], tmp_path / "r.ecsv")
    assert (tmp_path / "r.ecsv").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(ValueError, match="output format"):
        write_results(rows, tmp_path / "r.xlsx")


def test_fit_batch_survives_a_killed_worker_and_resumes(double_stars, tmp_path, monkeypatch):
    """2-process LocalCluster; one worker is SIGKILLed after the first result: every star
    still gets its row (the scheduler reschedules the lost task). Then --resume fits nothing."""
    from dask.distributed import Client, LocalCluster

    from phdlspec_app.fitting.batch import run_batch
    from phdlspec_app.fitting.fit import parse_fix

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    opts = {"fix": parse_fix([f.removeprefix("--fix=") for f in FIX]), "cmaes_evals": 300}
    out = tmp_path / "batch.parquet"
    killed = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)

        def kill_one(row, n):
            if n == 1:
                pid = next(iter(pids.values()))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        rows = run_batch([str(p) for p in double_stars], out, "fitting_double:make_double", client=client, options=opts,
                         on_result=kill_one, progress=False)
    assert killed
    assert sorted(Path(r["file"]).name for r in rows) == [p.name for p in double_stars]
    assert all(r["error"] == "" for r in rows)
    table = read_results(out)
    assert len(table) == 4
    for r in table:
        t = TRUTHS[int(Path(r["file"]).stem[-1])]
        assert abs(r["teff"] - t["teff"]) < 150
    calls = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        again = run_batch([str(p) for p in double_stars], out, "fitting_double:make_double", client=client, options=opts,
                          resume=True, on_result=lambda r, n: calls.append(n), progress=False)
    assert calls == [] and len(again) == 4
