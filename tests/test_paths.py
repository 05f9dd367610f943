import pytest

from phdlspec_app import paths


def test_env_var_wins_over_the_checkout_default(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
    assert paths.data_dir() == tmp_path.resolve()
    assert paths.data_dir(tmp_path / ".") == tmp_path.resolve()


def test_named_but_missing_folder_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(paths.DataNotFoundError, match="PHDLSPEC_DATA"):
        paths.data_dir()


def test_missing_subfolder_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
    with pytest.raises(paths.DataNotFoundError, match="physics is missing"):
        paths.physics_dir()


def test_no_data_anywhere(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    monkeypatch.setattr(paths, "repo_root", lambda: tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    assert paths.data_dir() is None
    with pytest.raises(paths.DataNotFoundError, match="set \\$PHDLSPEC_DATA or pass --data-dir"):
        paths.require_data_dir()


def test_default_is_shared_beside_the_checkout(monkeypatch, shared_dir):
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    assert paths.data_dir() == (paths.repo_root().parent / "shared").resolve()
    assert (paths.lamost_spectra_dir() / "INVENTORY.csv").is_file()


def test_a_non_editable_install_ships_and_finds_the_assets(tmp_path):
    """Build the wheel, install it into a bare folder, and load the default emulator and the
    demo stars from there (not from the checkout); the training grid stays out of the wheel."""
    import subprocess
    import sys
    import zipfile

    root = paths.repo_root()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(root)], check=True, cwd=tmp_path)
    wheel, = (tmp_path / "dist").glob("phdlspec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "phdlspec_app/assets/emulator/phdlspec_default.safetensors" in names
    assert "phdlspec_app/assets/emulator/phdlspec_default.md" in names
    assert "phdlspec_app/assets/demo/solar_dwarf.fits" in names
    assert not [n for n in names if "/grid/" in n or n.startswith("assets/")]
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, cwd=tmp_path)
    code = ("import phdlspec_app, phdlspec_app.paths as p\n"
            "from phdlspec_app.emulator import load_emulator\n"
            "from phdlspec_app.app.demo import demo_dir\n"
            "e = load_emulator(device='cpu')\n"
            "print(phdlspec_app.__file__, p.assets_dir(), len(list(demo_dir().glob('*.fits'))), e.wavelength.size)")
    env = {k: v for k, v in __import__("os").environ.items() if k != "PHDLSPEC_EMULATOR"}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env=env).stdout.split()
    assert out[0].startswith(str(site)), out
    assert out[1] == str((site / "phdlspec_app" / "assets").resolve())
    assert int(out[2]) >= 3 and int(out[3]) == 3909
