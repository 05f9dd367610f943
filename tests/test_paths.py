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
