"""Workload plugins: a package registered under the `tbd.workloads` entry point group, and an
object given by path (`tbd run ./my_workloads.py:TinyMLP`).

The entry-point test installs tests/plugins/example_plugin with pip, as a user would, into a
temporary `--target` folder put on PYTHONPATH: pip writes the same dist-info with its
entry_points.txt that an install into the venv writes, and nothing is left behind in the test
venv when the folder goes (a real venv install could leak into later tests and runs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tbd.results.record import MEASURED  # a run with a throughput, converged or not

from tbd import registry
from tbd.config import RunConfig
from tbd.errors import UsageError
from tbd.harness.runner import execute
from tests.conftest import run_cli

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> str:
    """PYTHONPATH with the example plugin pip-installed into a temporary folder."""
    root = tmp_path_factory.mktemp("plugin")
    shutil.copytree(PLUGINS / "example_plugin", root / "src")  # pip builds in the source folder: keep the repo clean
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(root / "site"), str(root / "src")], check=True, capture_output=True, timeout=300)
    assert list((root / "site").glob("tbd_example_plugin-*.dist-info/entry_points.txt"))
    return os.pathsep.join([str(root / "site"), SRC])


def test_a_plugin_by_entry_point_is_listed_and_runs(installed_plugin, tbd_home):
    listing = run_cli("list", env={"PYTHONPATH": installed_plugin})
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if "tiny_mlp" in line)
    assert "plugin from tbd-example-plugin" in row and "torch" in row
    out = run_cli("run", "tiny_mlp", "--device", "cpu", "--max-steps", "5", "--max-time", "20", env={"PYTHONPATH": installed_plugin})
    assert out.returncode == 0, out.stderr + out.stdout
    record = json.loads(next((tbd_home / "runs").glob("*.json")).read_text())
    assert record["config"]["workload"] == "tiny_mlp" and record["status"] in MEASURED
    assert record["workload"]["unit"] == "vectors" and record["metrics"]["model_flops_per_sample"] == 12.0 * 32**2


def test_a_plugin_by_path_runs_through_the_cli(tbd_home, tmp_path):
    out = subprocess.run([sys.executable, "-m", "tbd.cli", "run", "my_workloads.py:TinyMLP", "--device", "cpu", "--max-steps", "5"],
                         capture_output=True, text=True, timeout=300, cwd=PLUGINS, env={**os.environ, "PYTHONPATH": SRC, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr + out.stdout
    record = json.loads(next((tbd_home / "runs").glob("*.json")).read_text())
    # stored by absolute path, so reports and the run's child find it from anywhere
    assert record["config"]["workload"] == f"{PLUGINS / 'my_workloads.py'}:TinyMLP"
    assert record["status"] in MEASURED and "flop_counter" in record["method"]["flops"]


def test_path_plugins_in_process_and_their_errors(monkeypatch):
    monkeypatch.chdir(PLUGINS)
    config = RunConfig(workload="my_workloads.py:TinyMLP", device="cpu", max_steps=4, isolate=False).validated()
    assert os.path.isabs(config.workload) and registry.source(config.workload) == str(PLUGINS / "my_workloads.py")
    assert registry.implementations(config.workload) == ["torch"]
    record = execute(config)
    assert record.status in MEASURED, record.error
    assert record.metrics["model_flops_per_sample"] > 0
    with pytest.raises(UsageError, match="unknown object in .*'TinyMLQ' \\(did you mean: TinyMLP"):
        registry.resolve("my_workloads.py:TinyMLQ")
    with pytest.raises(UsageError, match="not found"):
        registry.resolve("nowhere.py:Net")
    with pytest.raises(UsageError, match="no torch implementation|has no jax"):
        RunConfig(workload="my_workloads.py:TinyMLP", framework="jax").validated()


def test_a_file_without_an_object_names_the_objects_to_choose_from(tbd_home, tmp_path, monkeypatch):
    monkeypatch.chdir(PLUGINS)
    for name in ("my_workloads.py", "my_workloads.py:"):
        with pytest.raises(UsageError, match=r"name the workload object in the file: my_workloads\.py:OBJECT \(objects here: TinyMLP\)"):
            registry.resolve(name)
    (tmp_path / "empty.py").write_text("X = 1\n")
    with pytest.raises(UsageError, match="empty.py has no workload object"):
        registry.resolve(str(tmp_path / "empty.py"))
    out = run_cli("run", "my_workloads.py", "--device", "cpu")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert not (tbd_home / "runs").exists() or not list((tbd_home / "runs").glob("*.json"))


def test_a_file_whose_module_is_the_plugin_runs_without_naming_an_object(tmp_path):
    (tmp_path / "module_plugin.py").write_text("from tests.plugins.my_workloads import TinyMLP\nspec = TinyMLP.spec\nbuild_torch = TinyMLP.build_torch\n")
    workload = registry.resolve(str(tmp_path / "module_plugin.py"))
    assert workload.spec.name == "tiny_mlp_file" and workload.has("torch")
