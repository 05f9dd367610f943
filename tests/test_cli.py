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
