"""A wheel install works without the source tree: the shipped spaces travel with the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_for_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "speq_search").rglob("__init__.py")}
    assert found | {"speq_search.search_spaces"} == listed


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """A fresh virtual environment holding the built wheel; the dependencies come from this
    environment's site-packages through a path file (no download), not its editable install."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "dist")], check=True, capture_output=True, cwd=tmp)
    wheel = next((tmp / "dist").glob("speq_search-*.whl"))
    venv = tmp / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # A path line adds the deps; .pth files inside that folder (the editable install's) are not run.
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, capture_output=True)
    return venv, tmp


def _cli(venv, cwd, *args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    return subprocess.run([str(venv / "bin" / "speq-search"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_wheel_install_lists_and_runs_the_shipped_spaces(wheel_venv):
    venv, tmp = wheel_venv
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import speq_search; print(speq_search.__file__)"],
                           cwd=tmp, capture_output=True, text=True, check=True).stdout
    assert str(venv) in where  # the installed copy, not the source tree
    listing = _cli(venv, tmp, "spaces")
    assert listing.returncode == 0, listing.stderr
    assert "default" in listing.stdout and "per-layer" in listing.stdout
    proc = _cli(venv, tmp, "run", "--num-samples", "2", "--max-concurrent", "2", "--name", "w", "--out-dir",
                str(tmp / "runs"), "--set", "train.epochs=1", "--set", "train.optim.fp_epochs=1",
                "--set", "train.model.width=0.5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp / "runs" / "w" / "summary.json").read_text())
    assert summary["n_completed"] == 2


@pytest.mark.parametrize("code", [
    "import speq_search",
    "import speq_search.analysis.pareto",
    "import speq_search.analysis",
    "import speq_search.config, speq_search.schema, speq_search.space",
    "from speq_search.cli import main; main(['spaces'])",
    "from speq_search.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
])
def test_commands_that_train_nothing_do_not_import_torch(code):
    check = "\nimport sys\nassert 'torch' not in sys.modules and 'sklearn' not in sys.modules, sorted(sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code + check], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-500:]


def test_the_public_names_still_resolve():
    import speq_search

    for name in speq_search.__all__:
        assert getattr(speq_search, name) is not None
    assert speq_search.run_training.__name__ == "run"
