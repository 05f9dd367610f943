import subprocess
import sys

from phdlspec_app.cli import build_parser, main


def test_help_lists_subcommands_and_teaches():
    text = build_parser().format_help()
    for word in ("info", "serve", "--data-dir", "PHDLSPEC_DATA", "Examples"):
        assert word in text


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "phdlspec_app.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("phdlspec ")


def test_bad_data_dir_is_a_clear_error(capsys, tmp_path):
    import pytest

    with pytest.raises(SystemExit) as info:
        main(["--data-dir", str(tmp_path / "missing"), "info", "x.fits"])
    assert info.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_info_on_a_missing_file_returns_2(capsys, tmp_path):
    assert main(["info", str(tmp_path / "nope.fits")]) == 2
    assert "nope.fits: no such file" in capsys.readouterr().err


def test_data_dir_option_sets_the_environment(tmp_path, monkeypatch):
    import os

    from phdlspec_app import paths

    (tmp_path / "other").mkdir()
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "other"))  # --data-dir must win over it
    (tmp_path / "spectra" / "lamost").mkdir(parents=True)
    f = tmp_path / "s.csv"
    f.write_text("\n".join(f"{5000 + i},1.0,0.1" for i in range(10)))
    assert main(["--data-dir", str(tmp_path), "info", str(f)]) == 0
    assert os.environ[paths.ENV_VAR] == str(tmp_path.resolve())
    assert paths.lamost_spectra_dir() == tmp_path.resolve() / "spectra" / "lamost"


def test_synth_help_documents_units():
    import argparse

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["synth"].format_help()
    for word in ("K", "km/s", "--differential", "--set", "Example"):
        assert word in text


def test_synth_rejects_out_of_range_and_unknown_labels(tmp_path, capsys):
    import pytest

    from phdlspec_app.labels import LabelError

    assert main(["synth", "--teff", "20000", "-o", str(tmp_path / "x.fits")]) == 2
    assert "teff" in capsys.readouterr().err
    with pytest.raises(LabelError):
        main(["synth", "--set", "xx_fe=0.1", "-o", str(tmp_path / "x.fits")])


def test_synth_writes_a_model_file(tmp_path, shared_dir):
    import numpy as np
    import pytest

    from phdlspec_app.io import read_model

    out = tmp_path / "star.fits"
    assert main(["synth", "--teff", "5000", "--logg", "3.0", "--set", "mg_fe=0.2", "--wl-min", "5160",
                 "--wl-max", "5200", "-o", str(out), "--plot", str(tmp_path / "star.png")]) == 0
    m = read_model(out)
    assert m["labels"]["teff"] == 5000 and m["labels"]["mg_fe"] == pytest.approx(0.2)
    assert m["wavelength"][0] >= 5160 and m["wavelength"][-1] <= 5200
    assert 0.3 < m["flux"].min() < 0.8 and np.all(m["flux"] < 1.01)  # Mg b at R=1800
    assert m["meta"]["resolution"] == 1800 and (tmp_path / "star.png").stat().st_size > 10_000
