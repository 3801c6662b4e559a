"""Faults of processes: `tbd` terminated (SIGTERM) or killed (SIGKILL) while a run is in flight,
for single runs, sweeps and torchrun's workers; a run's process killed by SIGKILL (an OOM only on
evidence); allocation failures on the host."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import psutil
import pytest
from faults_kit import SRC, alive, descendants, kill_all, wait_for
from sweep_fakes import fake_record

from tbd.config import RunConfig
from tbd.results.record import RunRecord
from tbd.results.store import Store

RUN = ["run", "resnet50", "--device", "cpu", "--max-steps", "2"]
SWEEP = ["sweep", "--workloads", "resnet50", "--frameworks", "torch", "--devices", "cpu", "--batch-sizes", "2,4", "--name", "sigs"]
ORPHAN_WAIT_S = 5.0  # the promise is "within a second or two"; margin for a loaded test machine


def start(args: list[str], tmp_path, **env) -> tuple[subprocess.Popen, list[psutil.Process], object]:
    """`tbd ARGS` with its run stuck in flight (TBD_INJECT_FAULT=hang: the run's process sleeps);
    returns once the run's process exists, with that process and the temp folder it was given."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    ready = tmp_path / "run-is-hanging"
    full_env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": SRC, "TMPDIR": str(tmpdir), "TBD_INJECT_FAULT": "hang",
                "TBD_TEST_READY_FILE": str(ready), **env}
    proc = subprocess.Popen([sys.executable, "-m", "tbd.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
    # the run's process touches the file where it hangs: past its start-up, however slow the machine
    assert wait_for(ready.exists, 180), f"the run did not reach its hang: {proc.poll()} {proc.stderr.read() if proc.poll() is not None else ''}"
    return proc, descendants(proc.pid), tmpdir


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def leftovers(tmpdir) -> list[str]:
    return sorted(p.name for p in tmpdir.iterdir() if p.name.startswith("tbd-"))


@pytest.mark.parametrize("command", [RUN, SWEEP], ids=["run", "sweep"])
def test_sigterm_stops_the_run_keeps_the_store_and_exits_143(command, tmp_path, tbd_home):
    proc, kids, tmpdir = start(command, tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err
        lines = err.strip().splitlines()
        assert lines == ["tbd: terminated (SIGTERM); runs that finished are stored, the one in flight was stopped"], err
        wait_for(lambda: not alive(kids), ORPHAN_WAIT_S)
        assert alive(kids) == []
        assert leftovers(tmpdir) == []
        with sqlite3.connect(tbd_home / "tbd.sqlite") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
            if command is SWEEP:  # the sweep let go of its line
                assert conn.execute("SELECT count(*) FROM claims").fetchone()[0] == 0
    finally:
        kill_all(alive(kids) + ([psutil.Process(proc.pid)] if proc.poll() is None else []))


@pytest.mark.parametrize("command", [RUN, SWEEP], ids=["run", "sweep"])
def test_sigkill_of_tbd_leaves_no_training_process_and_no_file(command, tmp_path):
    proc, kids, tmpdir = start(command, tmp_path)
    try:
        proc.kill()
        proc.wait(timeout=30)
        killed = time.monotonic()
        wait_for(lambda: not alive(kids), ORPHAN_WAIT_S)
        assert alive(kids) == [], f"still running {time.monotonic() - killed:.1f} s after tbd was killed: {[_cmdline(p) for p in alive(kids)]}"
        assert leftovers(tmpdir) == []
    finally:
        kill_all(alive(kids))


@pytest.mark.slow
def test_sigkill_of_tbd_stops_torchrun_and_its_workers(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    ready = tmp_path / "rank-0-is-hanging"
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": SRC, "TMPDIR": str(tmpdir), "TBD_TEST_READY_FILE": str(ready),
           "TBD_TEST_KILL_RANK": "0", "TBD_TEST_KILL_AFTER_STEPS": "0", "TBD_TEST_KILL_MODE": "hang"}  # rank 0 hangs, rank 1 waits for it
    proc = subprocess.Popen([sys.executable, "-m", "tbd.cli", *RUN, "--nproc-per-node", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    def ranks():
        found = [p for p in descendants(proc.pid) if "tbd.harness.distributed_worker" in _cmdline(p) and "torch.distributed.run" not in _cmdline(p)]
        return found if len(found) == 2 else []

    workers = wait_for(ranks, 180, every=0.5)
    kids = []
    try:
        assert len(workers) == 2, proc.communicate(timeout=5) if proc.poll() is not None else "no workers"
        assert wait_for(ready.exists, 180), "rank 0 did not reach its hang"  # past its imports, in the run
        kids = descendants(proc.pid)
        proc.kill()
        proc.wait(timeout=30)
        wait_for(lambda: not alive(kids), ORPHAN_WAIT_S)
        assert alive(kids) == [], [_cmdline(p) for p in alive(kids)]
    finally:
        kill_all(alive(kids) + alive(workers))


# ---- a killed run's process: out of memory only on evidence ------------------------------


def test_a_run_killed_by_sigkill_is_not_called_out_of_memory_without_evidence(monkeypatch, tmp_path):
    from tbd.harness.launcher import run_isolated
    from tbd.sweep.engine import is_oom

    ready = tmp_path / "run-is-hanging"
    monkeypatch.setenv("TBD_INJECT_FAULT", "hang")
    monkeypatch.setenv("TBD_TEST_READY_FILE", str(ready))
    config = RunConfig(workload="resnet50", framework="torch", flavor="tiny", device="cpu").validated()
    me = psutil.Process()

    def kill_the_run():  # as a user or a job scheduler would, once the run is in its hang
        wait_for(ready.exists, 180)
        run = [p for p in me.children() if "spawn_main" in " ".join(_cmdline(p))]
        for p in run:
            p.send_signal(signal.SIGKILL)

    threading.Thread(target=kill_the_run, daemon=True).start()
    record = run_isolated(config, timeout_s=120)
    err = record["error"]
    assert record["status"] == "failed" and err["kind"] == "crash" and "SIGKILL" in err["message"]
    assert not is_oom(record)  # a sweep does not skip larger batches; --retry-failed retries it
    assert err["oom"] in ("not-oom", "unknown") and err["oom_evidence"]
    assert ("not for lack of memory" in err["message"]) if err["oom"] == "not-oom" else ("unknown" in err["message"])


@pytest.mark.parametrize("log,before,after,expected", [
    (["Out of memory: Killed process 4242 (python) total-vm:123kB"], {}, {}, "oom"),
    (["oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),task=python,pid=4242,uid=0"], {}, {}, "oom"),
    (["Out of memory: Killed process 999 (other)"], {"f": 0}, {"f": 0}, "not-oom"),  # the log names another process only
    (["Out of memory: Killed process 999 (other)"], {"f": 0}, {"f": 1}, "oom"),  # ... but the cgroup counted a kill (pid namespaces)
    (None, {"f": 3}, {"f": 4}, "oom"),  # no log; the cgroup's OOM-kill counter rose
    (None, {"f": 3}, {"f": 3}, "not-oom"),
    (None, {}, {}, "unknown"),  # nothing readable: say so
])
def test_oom_verdict_comes_from_evidence(log, before, after, expected):
    from tbd.harness.oom_evidence import verdict

    found, evidence = verdict(4242, before, after, log)
    assert found == expected and evidence


@pytest.mark.parametrize("log,counters,kind,words", [
    (["Memory cgroup out of memory: Killed process 4242 (python)"], {}, "oom", "killed by the kernel"),
    (None, {}, "crash", "unknown"),
])
def test_a_sigkilled_run_says_what_the_evidence_says(log, counters, kind, words, monkeypatch):
    from tbd.harness import launcher, oom_evidence

    monkeypatch.setattr(oom_evidence, "kernel_log", lambda: log)
    monkeypatch.setattr(oom_evidence, "oom_kill_counters", lambda: counters)
    config = RunConfig(workload="resnet50", device="cpu").validated()
    record = launcher._died(config, "r1", -signal.SIGKILL, 4242, {})
    assert record["error"]["kind"] == kind and words in record["error"]["message"]


def test_a_run_childs_entry_points_leave_the_callers_sigint_as_it_was(monkeypatch, tmp_path):
    """The child ignores Ctrl-C while it runs (its parent decides), but run in the caller's own
    process, as a test may, neither entry point leaves SIGINT ignored: every later child of that
    process would inherit it and be deaf to Ctrl-C."""
    import io
    import queue

    from tbd.harness import child_process, launcher

    monkeypatch.delenv("TBD_INJECT_FAULT", raising=False)
    monkeypatch.delenv(child_process.lifeline.PARENT_ENV, raising=False)
    seen = []

    def fake_execute(config, progress=None, run_id=None):
        seen.append(signal.getsignal(signal.SIGINT))
        return fake_record(config)

    config = RunConfig(workload="resnet50", device="cpu", batch_size=2)
    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(launcher, "execute", fake_execute)
    out = queue.Queue()
    launcher._child(config.to_dict(), "r1", out)
    assert out.get_nowait()[0] == "record"
    assert signal.getsignal(signal.SIGINT) is before

    monkeypatch.setattr(child_process, "execute", fake_execute)
    monkeypatch.setattr(child_process.faulthandler, "register", lambda *a, **k: None)  # no SIGUSR1 dump left armed in pytest
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(config.to_dict())))
    read_fd, write_fd = os.pipe()
    assert child_process.main([str(write_fd), "r2", str(tmp_path / "stacks.txt")]) == 0
    with os.fdopen(read_fd) as pipe:
        assert "record" in json.loads(pipe.read().splitlines()[-1])
    assert signal.getsignal(signal.SIGINT) is before
    assert seen == [signal.SIG_IGN, signal.SIG_IGN]  # while the run worked, Ctrl-C was the parent's


# ---- allocation failures on the host ------------------------------------------------------


def _host_allocation_failure() -> BaseException:
    import torch

    try:
        torch.empty(2**62, dtype=torch.uint8)  # what a huge batch asks of the CPU allocator
    except RuntimeError as exc:
        return exc
    raise AssertionError("the allocation did not fail")


def test_a_cpu_allocation_failure_is_out_of_memory_and_the_sweep_skips_larger_batches(tbd_home):
    from tbd.harness.runner import classify
    from tbd.sweep import spec as sweep_spec
    from tbd.sweep.engine import SweepRunner

    failure = _host_allocation_failure()
    config = RunConfig(workload="resnet50", device="cpu", batch_size=4096).validated()
    assert classify(failure, config)["kind"] == "oom"
    assert classify(MemoryError(), config)["kind"] == "oom"
    calls = []

    def launch(config, progress=None):
        calls.append(config.batch_size)
        if config.batch_size < 8:
            return fake_record(config)
        return RunRecord.for_run(config).fail(**classify(failure, config))

    plan = sweep_spec.plan(sweep_spec.SweepSpec(name="cpu-oom", workloads=["resnet50"], frameworks=["torch"], devices=["cpu"], batch_sizes=[4, 8, 16]))
    result = SweepRunner(plan, Store(), launch=launch).run()
    assert calls == [4, 8] and result.skipped == 1
