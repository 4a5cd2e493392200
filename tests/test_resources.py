"""Stored results are found from a clone, from an installed wheel and through BOOK_RESULTS_DIR."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lib.chapters import oamp_net, pretrained_sparse
from lib.chapters import unfolded_wmmse as uw
from lib.core import RESULTS_ENV, results_dir, results_search_path

ROOT = Path(__file__).resolve().parents[1]
STORED = ["oamp_net", "unfolded_wmmse", "unrolled_sparse"]


def test_clone_finds_repository_results(monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    for name in STORED:
        assert results_dir(name, must_exist=True) == ROOT / "results" / name
    assert pretrained_sparse.RESULTS_DIR == ROOT / "results" / "unrolled_sparse"


def test_environment_variable_comes_first(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "results" / "unfolded_wmmse", tmp_path / "unfolded_wmmse")
    data = json.loads((tmp_path / "unfolded_wmmse" / "step_sizes.json").read_text())
    data["setup"]["marker"] = "from the environment"
    (tmp_path / "unfolded_wmmse" / "step_sizes.json").write_text(json.dumps(data))
    monkeypatch.setenv(RESULTS_ENV, str(tmp_path))
    assert results_search_path()[0] == tmp_path
    assert results_dir("unfolded_wmmse") == tmp_path / "unfolded_wmmse"
    assert uw.stored_sweep()["setup"]["marker"] == "from the environment"
    # a name the environment's folder lacks falls through to the repository
    assert results_dir("oamp_net") == ROOT / "results" / "oamp_net"


def test_missing_results_are_reported(tmp_path, monkeypatch):
    monkeypatch.setenv(RESULTS_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not_stored.*pip install"):
        results_dir("not_stored", must_exist=True)
    assert results_dir("not_stored") == ROOT / "results" / "not_stored"


@pytest.mark.parametrize("bad", ["", "..", "a/b", "a\\b"])
def test_name_is_checked(bad):
    with pytest.raises(ValueError, match="name"):
        results_dir(bad)


def test_name_type_is_checked():
    with pytest.raises(TypeError, match="name"):
        results_dir(Path("unrolled_sparse"))


def test_installed_wheel_carries_the_results(tmp_path):
    """What `pip install "git+<repository>"` does on Colab: build a wheel, install it, load."""
    src = tmp_path / "src"
    src.mkdir()
    for f in ["pyproject.toml", "setup.py", "README.md"]:
        shutil.copy(ROOT / f, src / f)
    ignore = shutil.ignore_patterns("__pycache__", "*.lock")
    shutil.copytree(ROOT / "lib", src / "lib", ignore=ignore)
    shutil.copytree(ROOT / "results", src / "results", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = tmp_path / "wheels"
    subprocess.run(
        pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in (ROOT / "results").rglob("*"):
        if f.is_file() and not f.name.endswith(".lock"):
            assert "lib/_results/" + f.relative_to(ROOT / "results").as_posix() in names
    site = tmp_path / "site"
    subprocess.run(
        pip + ["install", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import lib, json; from lib.chapters import stored_results, stored_sweep, "
        "oamp_net_results, reference_matrix; "
        "print(json.dumps([lib.__file__, len(stored_results()['models']), "
        "len(stored_sweep()['models']), sorted(oamp_net_results()), "
        "list(reference_matrix().shape)]))"
    )
    env = {k: v for k, v in os.environ.items() if k != RESULTS_ENV}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    file, n_sparse, n_sweep, oamp_keys, shape = json.loads(out.strip().splitlines()[-1])
    assert Path(file).is_relative_to(site)
    assert n_sparse == len(pretrained_sparse.stored_results()["models"])
    assert n_sweep == len(uw.stored_sweep()["models"])
    assert oamp_keys == sorted(oamp_net.oamp_net_results())
    assert shape == [250, 500]
