"""Runs in another Python environment: `tbd run --python/--env`, `tbd env create/list`, sweeps
across environments and the report section comparing them (docs/environments.md)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from tbd.config import RunConfig
from tbd.errors import UsageError
from tbd.report.compare import across_environments
from tbd.results import envs
from tbd.results.store import Store
from tests.conftest import run_cli

WORKLOAD = str(Path(__file__).parents[1] / "plugins" / "my_workloads.py") + ":TinyMLP"  # a step of milliseconds
QUICK = ("--device", "cpu", "--max-steps", "12", "--max-time", "5")


def one_error_line(out) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr + out.stdout
    assert len(lines) == 1 and lines[0].startswith("tbd: error: "), out.stderr
    return lines[0]


def test_env_create_records_an_environment_that_runs_its_own_interpreter(second_env, registered_second, tbd_home):
    python = second_env["python"]
    assert python.endswith("/envs/second/bin/python") and os.path.exists(python)
    assert second_env["libraries"]["torch"] and second_env["python_version"] == sys.version.split()[0]
    assert envs.resolve(None, "second", tbd_home) == python
    listed = run_cli("env", "list")
    assert listed.returncode == 0 and "second" in listed.stdout and "torch" in listed.stdout


def test_a_run_with_env_runs_in_that_interpreter_and_its_record_says_so(registered_second):
    out = run_cli("run", WORKLOAD, "--env", "second", *QUICK)
    assert out.returncode == 0, out.stderr + out.stdout
    (record,) = Store().list()
    env = record["environment"]
    assert record["config"]["python"] == registered_second["python"]
    assert env["interpreter"] == registered_second["python"] != sys.executable
    assert env["env_name"] == "second" and env["python"] == sys.version.split()[0]
    assert env["libraries"]["torch"] == registered_second["libraries"]["torch"] and env["framework_version"]
    assert record["metrics"]["vectors_per_s"] > 0


def test_a_missing_interpreter_is_one_clear_line_and_exit_2(tmp_path):
    missing = one_error_line(run_cli("run", WORKLOAD, "--python", str(tmp_path / "nowhere" / "bin" / "python"), *QUICK))
    assert "no such file" in missing and "tbd env create" in missing


def refused(python: str, **config) -> str:
    with pytest.raises(UsageError) as caught:
        RunConfig(**{"workload": WORKLOAD, "device": "cpu", "python": python, **config}).validated()
    return str(caught.value)


def test_broken_interpreters_and_impossible_runs_are_refused_with_the_fix(tmp_path, second_env, tbd_home):
    script = tmp_path / "broken-python"
    script.write_text("#!/bin/sh\necho 'broken: libpython missing' >&2\nexit 127\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    assert "does not run as Python (exit 127: broken: libpython missing)" in refused(str(script))
    plain = tmp_path / "plain.txt"
    plain.write_text("not a program")
    assert "is not executable" in refused(str(plain))
    assert "is a folder" in refused(str(tmp_path))
    with pytest.raises(UsageError, match="no environment 'nope'.*tbd env create nope"):
        envs.resolve(None, "nope", tbd_home)
    no_mxnet = refused(second_env["python"], workload="resnet50", framework="mxnet")
    assert "framework 'mxnet' is not installed in" in no_mxnet and "tbd env create NAME --framework mxnet" in no_mxnet
    assert "drop --in-process" in refused(second_env["python"], isolate=False)
    assert "runs one process" in refused(second_env["python"], nproc_per_node=2)


def fake_interpreter(tmp_path: Path, facts: dict) -> str:
    """An executable that answers the probe with `facts`, as an interpreter with them would."""
    path = tmp_path / f"fake-python-{len(list(tmp_path.iterdir()))}"
    path.write_text(f"#!/bin/sh\necho 'TBD-PROBE {json.dumps(facts)}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_old_python_no_tbd_and_another_tbd_are_refused_with_the_fix(tmp_path):
    config = lambda python: RunConfig(workload="resnet50", device="cpu", python=python)  # noqa: E731
    with pytest.raises(UsageError, match=r"is Python 3\.7\.16; tbd's core needs Python 3\.11"):
        config(fake_interpreter(tmp_path, {"python": "3.7.16"})).validated()
    with pytest.raises(UsageError, match=r"cannot import tbd \(ModuleNotFoundError.*pip install -e"):
        config(fake_interpreter(tmp_path, {"python": "3.11.7", "error": "ModuleNotFoundError: No module named 'tbd'"})).validated()
    older = {"python": "3.12.1", "tbd_version": "0.0.1", "schema_version": 1, "config_fields": [], "frameworks": {}, "absent": []}
    with pytest.raises(UsageError, match=r"has tbd 0\.0\.1 \(record schema 1\), this is tbd .*install the same tbd there"):
        config(fake_interpreter(tmp_path, older)).validated()


def test_cntk_is_listed_as_not_installable_and_refused_with_the_reason():
    listed = run_cli("list", "--json")
    frameworks = {f["name"]: f for f in json.loads(listed.stdout)["frameworks"]}
    assert "mxnet" in frameworks and "Python 3.5 and 3.6 only" in frameworks["cntk"]["unavailable"]
    assert "cannot be installed" in one_error_line(run_cli("run", "resnet50", "--framework", "cntk", "--device", "cpu"))


def test_a_sweep_across_environments_and_the_report_section_comparing_them(registered_second, tmp_path):
    out = run_cli("sweep", "--name", "versions", "--workloads", WORKLOAD, "--frameworks", "torch", "--python", "current,second",
                  "--devices", "cpu", "--max-steps", "20", "--max-time", "5", "--min-timed-steps", "4")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "@second" in out.stdout
    records = Store().list()
    assert sorted(str(r["config"]["python"]) for r in records) == sorted(["None", registered_second["python"]])
    found = across_environments(records)
    assert found.baseline == "current" and set(found.environments) == {"current", "second"}
    (pair,) = found.pairs
    assert pair.label.endswith("second / current") and pair.ratio > 0 and pair.ci_low <= pair.ratio <= pair.ci_high
    report = run_cli("report", "versions", "--output", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report.html").read_text()
    assert "Environments compared" in page and "second / current" in page and registered_second["python"] in page


def test_a_failed_install_names_pips_error_not_its_progress_lines():
    """`tbd env create x --framework nope==1` printed pip's last progress lines ("Preparing editable
    metadata ... done"), which came after its error on the other stream."""
    stdout = "Obtaining file:///work/main\n  Preparing editable metadata (pyproject.toml): finished with status 'done'\n"
    stderr = ("WARNING: Location 'file:///opt/pypi/simple/nope/' is ignored: it is neither a file nor a directory.\n"
              "ERROR: Could not find a version that satisfies the requirement nope==1 (from versions: 0.1.0)\n"
              "ERROR: No matching distribution found for nope==1\n")
    assert envs.failure_lines(stdout, stderr) == ["ERROR: Could not find a version that satisfies the requirement nope==1 (from versions: 0.1.0)",
                                                  "ERROR: No matching distribution found for nope==1"]
    assert envs.failure_lines("a\nb\nc\nd\n", "") == ["b", "c", "d"]  # no ERROR line: the last three


def test_force_never_removes_a_folder_tbd_did_not_make(tmp_path):
    """`tbd env create e --dir precious --force` deleted precious/, data and all: --dir named a folder
    that was no environment, and the "exists; use --force" line led there."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("important")
    for force in (False, True):
        with pytest.raises(UsageError, match="is not an environment tbd made"):
            envs.create("e", ["torch"], home=tmp_path / "home", folder=precious, force=force, inherit=True)
    assert (precious / "data.txt").read_text() == "important"
