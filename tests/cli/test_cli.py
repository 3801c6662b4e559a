"""The command line as users meet it: help, bad input, run -> results -> export, failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tbd import cli, registry
from tbd.results.record import MEASURED
from tbd.results.store import Store
from tests.conftest import run_cli

QUICK = ("--max-steps", "4", "--max-time", "20")


@pytest.mark.parametrize("command", ["", "run", "list", "results", "export", "demo"])
def test_help_everywhere_with_examples(command):
    out = run_cli(*([command] if command else []), "--help")
    assert out.returncode == 0
    assert "examples:" in out.stdout


@pytest.mark.parametrize(
    "args,expected",
    [
        (("run", "resnt50"), "did you mean: resnet50"),
        (("run", "resnet50", "--framework", "pytorch"), "unknown framework 'pytorch'"),
        (("run", "resnet50", "--flavor", "huge"), "unknown flavor"),
        (("run", "resnet50", "--bach-size", "4"), "did you mean: --batch-size"),
        (("run", "resnet50", "--batch-size", "0"), "positive integer"),
        (("run", "resnet50", "--batch-size", "-3"), "positive integer"),
        (("run", "resnet50", "--device", "tpu"), "unknown device 'tpu'"),
        (("run", "resnet50", "--device", "cuda"), "no NVIDIA GPU"),
        (("run", "resnet50", "--precision", "fp8"), "invalid choice"),
        (("run", "resnet50", "--precision", "fp16", "--device", "cpu"), "needs a GPU"),
        # A framework's option values are checked before a run, from its plugin (TensorFlow need not be installed).
        (("run", "gpt", "--framework", "tf", "--option", "execution=lazy"), "TensorFlow option execution=lazy is not one of graph, eager"),
        (("run", "gpt", "--framework", "tf", "--option", "execution=eager", "--compile"), "--compile needs TensorFlow option execution=graph"),
        (("run", "resnet50", "--hf-config", "n_layer=2"), "resnet50 has no Hugging Face config to set; --hf-config (hf_config) goes with hf:MODEL"),
        # JAX and MXNet always compile: a "+c" run would measure the same configuration again.
        (("run", "gpt", "--framework", "jax", "--compile"), "--compile has nothing to switch on for JAX: XLA jit"),
        (("run", "resnet50", "--framework", "mxnet", "--compile"), "--compile has nothing to switch on for MXNet"),
        (("run", "gpt", "--option", "sdpa_backend=foo"), "PyTorch option sdpa_backend=foo is not one of auto, cudnn, flash"),
        (("run", "gpt", "--framework", "jax", "--option", "attention=foo"), "JAX option attention=foo is not one of auto, cudnn, xla"),
        (("results", "show", "nope"), "no runs stored"),
        (("frobnicate",), "invalid choice"),
        (("sweep", "my-sweep.toml"), "a file goes with --file: tbd sweep --file my-sweep.toml"),
        (("run", "resnet50", "extra"), "unexpected argument 'extra'"),
        (("run", "gpt", "--json"), "tbd run has no --json; the stored record: tbd results show latest --json"),
        (("export", "--json"), "tbd export has no --json; the whole records: tbd export --format json"),
        (("run", "resnet50", "--quarantine"), "tbd run has no --quarantine; tbd results takes it"),
        (("results", "list", "show"), "unexpected argument 'show'; usage: tbd results [list] [--workload W]"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, expected, tbd_home):
    out = run_cli(*args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tbd: error:"), out.stderr
    assert expected in lines[0]
    assert "Traceback" not in out.stderr
    assert not tbd_home.exists()


def test_an_option_of_another_command_points_there_in_process(capsys, tbd_home):
    """cli.main(argv) as the API and tests call it: the command is read from argv, not sys.argv;
    near misses are named only when very near (not --precision for --json)."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "gpt", "--json"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err == "tbd: error: tbd run has no --json; the stored record: tbd results show latest --json"
    with pytest.raises(SystemExit):
        cli.main(["memory", "resnet50", "--compile"])
    err = capsys.readouterr().err.strip()
    assert err == "tbd: error: tbd memory has no --compile; tbd run, tbd sweep, tbd scale, tbd tune take it"
    assert not tbd_home.exists()


def test_missing_framework_names_the_install_command(monkeypatch, capsys, tbd_home):
    monkeypatch.setattr(registry, "missing_modules", lambda name: ["jax"] if name == "jax" else [])
    code = cli.main(["run", "resnet50", "--framework", "jax", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "not installed" in err and "pip install 'tbd[jax]'" in err
    assert not tbd_home.exists()


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    """One quick `tbd run` into a store of its own, made once for the tests that need a stored run
    (a run takes about 8 s here): each copies the store into its own TBD_HOME."""
    home = tmp_path_factory.mktemp("one-run") / "tbd-home"
    return home, run_cli("run", "resnet50", "--device", "cpu", *QUICK, env={"TBD_HOME": str(home)})


def _store_of(one_run, tbd_home) -> subprocess.CompletedProcess:
    home, out = one_run
    assert out.returncode == 0, out.stderr
    shutil.copytree(home, tbd_home)
    return out


def test_run_results_show_export(one_run, tbd_home, tmp_path):
    out = _store_of(one_run, tbd_home)
    assert "images/s" in out.stdout and "stored as" in out.stdout
    [record] = Store().list()
    # 4 steps leave 2-3 timed ones: a measurement, with its verdict (which one depends on this machine's noise)
    assert record["status"] in MEASURED and record["method"]["convergence"]["status"] == record["status"]
    assert record["metrics"]["compile_time_s"] > 0 and "conditions" in record["environment"]
    assert record["schema_version"] == 3 and record["kind"] == "run"
    assert record["environment"]["libraries"]["torch"]
    assert "dirty" in record["environment"]["source"]
    assert len(record["samples"]["step_s"]) == record["metrics"]["total_steps"]
    assert (tbd_home / "runs" / f"{record['id']}.json").exists()

    shown = run_cli("results", "show", record["id"][:17], "--json")
    assert json.loads(shown.stdout)["id"] == record["id"]
    listed = run_cli("results")
    assert record["id"][:15] in listed.stdout  # ids are shortened to what tells the listed runs apart
    none = " ".join(run_cli("results", "list", "--workload", "gpt").stdout.split())
    assert "no stored run matches --workload gpt" in none and "no runs stored" not in none  # one is, of another workload

    csv_text = run_cli("export", "--format", "csv").stdout
    header, row = csv_text.strip().splitlines()
    assert {"throughput", "throughput_unit"} <= set(header.split(",")) and record["id"] in row and "images/s" in row
    target = tmp_path / "runs.json"
    assert run_cli("export", "--format", "json", "--output", str(target)).returncode == 0
    assert json.loads(target.read_text())[0]["id"] == record["id"]


@pytest.mark.parametrize("fault,kind", [("crash", "crash"), ("oom", "oom"), ("error", "error")])
def test_failures_become_stored_failed_runs(fault, kind, tbd_home):
    out = run_cli("run", "resnet50", "--device", "cpu", *QUICK, env={"TBD_INJECT_FAULT": fault})
    assert out.returncode == 1
    [record] = Store().list()
    assert record["status"] == "failed" and record["error"]["kind"] == kind
    if kind == "oom":
        assert "batch size 4" in record["error"]["message"]


def _wait_until_training(proc: subprocess.Popen, cpu_s: float = 2.0, deadline_s: float = 180.0) -> None:
    """Until the run's child process exists and has spent `cpu_s` of CPU (imports done, steps
    running), however loaded the machine is."""
    import psutil

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()[1]
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                times = child.cpu_times()
            except psutil.Error:
                continue
            if times.user + times.system >= cpu_s:
                return
        time.sleep(0.2)
    raise AssertionError(f"the run's child did not start training within {deadline_s:.0f} s")


def test_interrupt_keeps_the_store_consistent(one_run, tbd_home):
    _store_of(one_run, tbd_home)  # a store with a run in it, which the interrupted run must leave intact
    proc = subprocess.Popen(
        [sys.executable, "-m", "tbd.cli", "run", "resnet50", "--device", "cpu", "--max-time", "600", "--max-steps", "100000", "--target-ci", "0.001"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
        # Ctrl-C as a user meets it: `tbd` started from an interactive shell, SIGINT at its default.
        # Still needed although no test leaves SIGINT ignored any more (test_process_faults checks
        # the run child's entry points): pytest itself may start with SIGINT ignored, as does every
        # command a non-interactive shell starts in the background (`make test &` in a script),
        # and this child would inherit that and ignore the signal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait_until_training(proc)  # a readiness signal, not a fixed sleep: slow machines start late
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    records = Store().list()
    assert len(records) == 1 and records[0]["status"] in MEASURED
    with sqlite3.connect(tbd_home / "tbd.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert not list((tbd_home / "runs").glob("*.tmp"))


def test_broken_store_file_is_a_clear_error(tbd_home):
    tbd_home.mkdir(parents=True)
    (tbd_home / "tbd.sqlite").write_text("this is not a database")
    out = run_cli("results")
    assert out.returncode == 2
    assert "not a readable database" in out.stderr and "TBD_HOME" in out.stderr
    assert (tbd_home / "tbd.sqlite").read_text() == "this is not a database"


def test_a_stalled_run_fails_with_where_it_stalled(monkeypatch):
    from tbd.config import RunConfig
    from tbd.harness.launcher import run_isolated

    monkeypatch.setenv("TBD_INJECT_FAULT", "hang")
    config = RunConfig(workload="resnet50", framework="torch", flavor="tiny", device="cpu").validated()
    record = run_isolated(config, timeout_s=3)
    assert record["status"] == "failed" and record["error"]["kind"] == "timeout"
    assert "stalled in" in record["error"]["message"] and "runner.py" in record["error"]["message"]
    assert "in hang_for_tests" in record["error"]["message"]  # the innermost frame: where it sleeps
    assert "_child" in record["error"]["stacks"]
