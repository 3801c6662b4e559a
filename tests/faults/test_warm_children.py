"""Runs in children started ahead (`launcher.warm_children`, used by tbd tune): each run is still a
fresh process of its own, the next one is started as a run begins, a changed environment gets a
new one, and none is left behind when the block ends."""

from __future__ import annotations

import os

import psutil

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
