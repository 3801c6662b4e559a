"""Runs in children started ahead (`launcher.warm_children`, used by tbd tune): each run is still a
fresh process of its own, the next one is started as a run begins, a changed environment gets a
new one, and none is left behind when the block ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
from faults_kit import SRC, alive, descendants, kill_all, wait_for

from tbd.config import RunConfig
from tbd.harness import launcher


def tiny(**over) -> RunConfig:
    return RunConfig(**{"workload": "gpt", "flavor": "tiny", "device": "cpu", "max_steps": 3, "min_timed_steps": 1, **over}).validated()


def test_runs_take_children_started_ahead_and_none_outlives_the_block(monkeypatch):
    with launcher.warm_children("torch"):
        first = launcher._warm["torch"].process
        record = launcher.run_isolated(tiny())
        assert record.status in ("ok", "unconverged", "insufficient") and record.metrics.get("samples_per_s")
        first.join(timeout=30)
        assert first.exitcode == 0  # it ran that job, then ended: one process per run
        second = launcher._warm["torch"].process
        assert second.pid != first.pid and second.is_alive()  # started as the first run began
        # a run under another environment does not take a child started under the old one
        monkeypatch.setenv("TBD_WARM_TEST", "1")
        record = launcher.run_isolated(tiny(seed=1))
        assert record.metrics.get("samples_per_s")
        second.join(timeout=30)
        assert not second.is_alive()
        third = launcher._warm["torch"].process
    third.join(timeout=30)
    assert not third.is_alive() and "torch" not in launcher._warm
    assert not [c for c in psutil.Process(os.getpid()).children(recursive=True) if c.pid in (first.pid, second.pid, third.pid)]


def test_a_run_outside_the_block_starts_its_own_child():
    assert not launcher._warm
    record = launcher.run_isolated(tiny())
    assert record.metrics.get("samples_per_s") and not launcher._warm


def test_ctrl_c_while_a_child_waits_for_its_job_is_one_line_and_no_traceback(tmp_path, tbd_home):
    """Ctrl-C reaches the whole process group, the warm children too: the one waiting for its job
    leaves it to `tbd`, which stops the run and exits 130 with its one line."""
    ready, warm_ready = tmp_path / "trial-is-hanging", tmp_path / "warm-children"
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": SRC, "TBD_INJECT_FAULT": "hang", "TBD_TEST_READY_FILE": str(ready),
           "TBD_TEST_WARM_READY_FILE": str(warm_ready)}
    proc = subprocess.Popen([sys.executable, "-m", "tbd.cli", "tune", "gpt", "--flavor", "tiny", "--device", "cpu", "--budget", "2m"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # SIGINT as an interactive shell leaves it
    kids = []
    try:
        # the first trial hangs in the child that took it, and the child started for the next waits for its job
        assert wait_for(lambda: ready.exists() and warm_ready.exists() and len(warm_ready.read_text().split()) >= 2, 180), \
            proc.communicate(timeout=5) if proc.poll() is not None else "no trial in flight with a child waiting"
        kids = descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: to every process of the group
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert err.strip().splitlines() == ["tbd: interrupted; runs that finished are stored, the one in flight was dropped"], err
        wait_for(lambda: not alive(kids), 10)
        assert alive(kids) == []
    finally:
        kill_all(alive(kids) + ([psutil.Process(proc.pid)] if proc.poll() is None else []))
