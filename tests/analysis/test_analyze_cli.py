"""End to end through the CLI on the CPU: a profiled run, its analysis stored with it, and bad
input rejected with exit code 2 and nothing changed."""

import gzip
import json
import os

import pytest

from tests.conftest import run_cli

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    home = tmp_path_factory.mktemp("tbd-home")
    env = {"TBD_HOME": str(home)}
    out = run_cli("run", "resnet50", "--device", "cpu", "--profile", "--max-time", "2", "--max-steps", "6", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return home, env, out


def _record(home):
    runs = list((home / "runs").glob("*.json"))
    assert len(runs) == 1
    return json.loads(runs[0].read_text())


def test_profiled_run_then_analyze(profiled):
    home, env, run_out = profiled
    assert "trace:" in run_out.stdout and "tbd analyze" in run_out.stdout
    record = _record(home)
    trace = record["analysis"]["trace"]
    assert trace["path"] == f"traces/{record['id']}.json.gz" and (home / trace["path"]).exists()
    with gzip.open(home / trace["path"], "rt") as f:
        assert "traceEvents" in json.load(f)  # loadable by Perfetto / chrome://tracing
    out = run_cli("analyze", "latest", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    for text in ("utilization", "host side", "CPU op self time by class", "step-time stability", "diagnosis: host-bound (CPU training)", "recommendations"):
        assert text in out.stdout, text
    report = _record(home)["analysis"]["report"]
    assert report["diagnosis"]["class"] == "host-bound"
    assert report["kernels"] is None and report["host"]["busy_pct"] > 0
    assert report["utilization"]["cpu_util_pct"] is not None
    js = run_cli("analyze", record["id"][:15], "--json", env=env)
    assert js.returncode == 0 and json.loads(js.stdout)["diagnosis"]["class"] == "host-bound"


def test_bad_inputs_exit_2_and_change_nothing(profiled):
    home, env, _ = profiled
    record_path = next((home / "runs").glob("*.json"))
    before = record_path.read_text()
    out = run_cli("analyze", "no-such-run", env=env)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no run 'no-such-run'" in out.stderr
    no_ncu = {**env, "PATH": os.path.dirname(os.sys.executable)}  # python, but no ncu
    out = run_cli("analyze", "latest", "--ncu", env=no_ncu)
    assert out.returncode == 2 and "ncu" in out.stderr and out.stderr.count("\n") == 1
    out = run_cli("run", "resnet50", "--device", "cpu", "--ncu", env=no_ncu)
    assert out.returncode == 2 and "ncu" in out.stderr
    for argv, message in ((["--repeat", "3"], "--repeat goes with --verify"), (["--verify", "--repeat", "0"], "at least 1 measurement")):
        out = run_cli("analyze", "latest", *argv, env=env)
        assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1
    assert record_path.read_text() == before and len(list((home / "runs").glob("*.json"))) == 1
    # A damaged trace: one line, exit 2, the record untouched.
    trace = home / json.loads(before)["analysis"]["trace"]["path"]
    good = trace.read_bytes()
    try:
        trace.write_bytes(good[: len(good) // 2])
        out = run_cli("analyze", "latest", env=env)
        assert out.returncode == 2 and "cannot be read" in out.stderr and out.stderr.count("\n") == 1
        assert record_path.read_text() == before
    finally:
        trace.write_bytes(good)


def test_run_without_trace_is_analyzed_from_samples(tmp_path):
    from tbd.analysis.analyze import NO_TRACE, analyze

    record = {"id": "r1", "status": "ok", "config": {"workload": "resnet50", "framework": "torch", "flavor": "tiny", "device": "cuda",
                                                     "batch_size": 32, "precision": "fp32", "compile": False, "channels_last": False},
              "metrics": {"gpu_util_nvml_pct": 35.0, "cpu_cores_busy": 1.0, "samples_per_s": 100.0},
              "samples": {"step_s": [1.0] + [0.1] * 30}, "environment": {}, "memory": {}, "method": {}}
    a = analyze(record, tmp_path)
    assert any(NO_TRACE in n for n in a["notes"])
    assert a["diagnosis"]["class"] == "host-bound" and "not proven" in a["diagnosis"]["evidence"]
    assert a["stability"]["steps"] >= 20


def test_gpu_run_analysis_renders_and_is_stored(tmp_path, capsys):
    """A GPU run's record with a Kineto-shaped trace (no GPU needed): every GPU table prints."""
    from tbd.cli import main
    from tbd.results.store import Store

    from .test_trace import _write, kineto_gpu_trace

    home = tmp_path / "home"
    (home / "traces").mkdir(parents=True)
    _write(home / "traces" / "g1.json.gz", kineto_gpu_trace())
    record = {"schema_version": 1, "id": "g1", "created_at": "2026-11-25T00:00:00+00:00", "status": "ok", "error": None,
              "config": {"workload": "resnet50", "framework": "torch", "flavor": "paper", "device": "cuda", "batch_size": 32,
                         "precision": "fp32", "compile": False, "channels_last": False},
              "environment": {"device_name": "NVIDIA H100 80GB HBM3", "gpu": {"memory_total_bytes": 80 * 2**30}, "cpu_cores": 16},
              "metrics": {"samples_per_s": 1000.0, "gpu_util_nvml_pct": 60.0, "mfu_pct": 20.0, "model_tflops_per_s": 13.4,
                          "cpu_util_pct": 7.0, "cpu_cores_busy": 1.1, "step_time_ms_p50": 32.0},
              "memory": {"peak_reserved_bytes": 10 * 2**30, "alloc_retries": 0, "ooms": 0},
              "samples": {"step_s": [1.0] + [0.032] * 40}, "method": {"data": "synthetic, 2 batch(es) resident on the device, rotated"},
              "analysis": {"trace": {"path": "traces/g1.json.gz", "steps": 1, "window_nvml_util_pct": 55.0}}}
    Store(home).save(record)
    assert main(["analyze", "g1", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    for text in ("GPU compute utilization (trace)", "50.0%", "kernel time by class", "top kernels", "launch-bound", "recommendations", "precision bf16"):
        assert text in out, text
    report = Store(home).get("g1")["analysis"]["report"]
    assert report["diagnosis"]["class"] == "host-bound"  # GPU idle 40% of the window with the host not waiting
    assert report["utilization"]["flop_util_by_precision_pct"]["fp32"] == pytest.approx(20.0)
    assert report["recommendations"][0]["expected_gain_pct"] > 0


def test_verify_with_nothing_to_verify_says_so_and_exits_0(tbd_home, capsys):
    """No recommendation a run option applies: one line saying so, exit 0, nothing rerun; under
    --json that line is on stderr and stdout is the analysis."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "sweep"))
    from sweep_fakes import fake_record

    from tbd.cli import main
    from tbd.config import RunConfig
    from tbd.results.store import Store

    store = Store(tbd_home)
    record = fake_record(RunConfig(workload="resnet50", device="cpu", batch_size=4))  # no trace: no recommendation
    store.save(record)
    assert main(["analyze", record["id"], "--verify"]) == 0
    out, err = capsys.readouterr()
    assert [line for line in out.splitlines() if "verify" in line] == [
        f"nothing to verify: run {record['id']} has no recommendation that a run option can apply"]
    assert err == ""
    assert main(["analyze", record["id"], "--verify", "all", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["verify"] == [] and err.strip().startswith("nothing to verify:") and err.count("\n") == 1
    assert [r["id"] for r in store.list()] == [record["id"]]  # nothing was rerun


def test_a_memory_profile_is_not_analyzed_as_a_timed_run(tmp_path):
    """`tbd analyze` on a `tbd memory` record printed "on cpu ()" and a host-bound diagnosis of a window it never had."""
    from tbd.analysis.analyze import analyze
    from tbd.errors import UsageError

    record = {"id": "20261201-000000-aaaaaa", "kind": "memory", "status": "ok", "config": {"workload": "gpt", "device": "cpu"}}
    with pytest.raises(UsageError, match="is a memory profile .* no timed steps to analyze"):
        analyze(record, tmp_path)
