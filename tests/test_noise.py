"""Noise: change points in step times, warnings from conditions, and the conditions a run records."""

from __future__ import annotations

import numpy as np
import pytest

from tbd.harness import noise
from tbd.harness.stats import change_points
from tbd.metrics.conditions import ConditionsMonitor, intra_op_threads


def _steps(*parts, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([ms / 1e3 * (1 + 0.05 * rng.standard_normal(n)) for ms, n in parts])


def test_change_point_finds_the_slow_phase_of_issue_21():
    """672 ms steps, then 12 ms steps (another job stopped): one change, at the right step."""
    [p] = change_points(_steps((672, 60), (12, 60)))
    assert p.index == 60 and p.before_median == pytest.approx(0.672, rel=0.05) and p.after_median == pytest.approx(0.012, rel=0.05)


def test_change_points_find_a_regime_inside_and_ignore_noise_and_spikes():
    points = change_points(_steps((10, 80), (20, 40), (10, 80)))
    assert [p.index for p in points] == [80, 120]
    rng = np.random.default_rng(3)
    assert not any(change_points(0.01 * np.exp(0.4 * rng.standard_normal(300))) for _ in range(50))  # heavy noise, no regime
    spikes = _steps((10, 300))
    spikes[::37] *= 5  # lone slow steps (GC, a page fault) are not a regime
    assert change_points(spikes) == []


def test_assess_warns_on_a_regime_change_and_busy_machine():
    steps = list(_steps((5000, 1), (672, 40), (12, 40)))
    conditions = {"usable_cpus": 2, "others_cpu_cores": 1.5, "busiest_others": [{"pid": 7, "name": "make", "cpu_pct": 140.0}],
                  "before": {"load_avg": [4.6, 4, 3]}, "after": {"load_avg": [3.1, 3, 3], "gpu": {"throttle_reasons": ["software power cap"]}}}
    out = noise.assess(steps, 1, conditions)
    assert out["noisy"] and out["change_points"][0]["step"] == 41
    text = "\n".join(out["warnings"])
    assert "changed regime at step 41" in text and "other processes kept 1.5 of 2 CPU(s) busy" in text and "make (140%)" in text
    assert "load average 4.6 -> 3.1" in text and "software power cap" in text
    quiet = noise.assess(list(_steps((10, 100))), 1, {"usable_cpus": 2, "others_cpu_cores": 0.05, "before": {"load_avg": [0.3, 0, 0]}})
    assert not quiet["noisy"] and quiet["warnings"] == []


def test_monitor_counts_other_processes_not_its_own(monkeypatch):
    """Others' CPU = the machine's busy CPU time minus this process tree's, over the window."""
    from tbd.metrics import conditions

    clock = iter([100.0, 102.0])  # a 2 s window
    busy = iter([50.0, 55.0])  # the machine: 5 CPU-seconds busy
    own = iter([10.0, 13.0])  # this tree: 3 of them
    monkeypatch.setattr(conditions.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(conditions, "_busy_s", lambda: next(busy))
    monkeypatch.setattr(conditions, "_tree_cpu_s", lambda proc: next(own))
    monitor = ConditionsMonitor()
    monitor.start()
    c = monitor.stop()
    assert c["others_cpu_cores"] == pytest.approx(1.0)  # (5 - 3) CPU-s over 2 s
    assert c["usable_cpus"] >= 1 and c["after"]["threads"] >= 1 and "load_avg" in c["before"]


def test_intra_op_threads_honour_omp_and_share_cpus(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert intra_op_threads() == {"intra_op": 3, "source": "OMP_NUM_THREADS"}
    monkeypatch.delenv("OMP_NUM_THREADS")
    one, two = intra_op_threads(1)["intra_op"], intra_op_threads(2)["intra_op"]
    assert one >= 1 and two == max(1, one // 2)


def test_compare_says_when_conditions_differed():
    def rec(noisy, others, threads):
        return {"environment": {"conditions": {"others_cpu_cores": others, "intra_op_threads": threads, "before": {"load_avg": [1, 1, 1]}}},
                "method": {"noise": {"noisy": noisy}}}
    lines = noise.compare_conditions([rec(False, 0.0, 2)], [rec(True, 1.4, 1)])
    text = "\n".join(lines)
    assert "0 of 1 run(s) of A and 1 of 1 of B had noise warnings" in text
    assert "A 0.0 cores, B 1.4 cores" in text and "intra-op threads differed: A 2 vs B 1" in text
    assert noise.compare_conditions([rec(False, 0.1, 2)], [rec(False, 0.2, 2)]) == []


def test_other_processes_gpu_use_is_read_from_nvml_process_samples():
    from types import SimpleNamespace

    from tbd.metrics.conditions import other_sm_util

    class FakeNvml:
        def nvmlDeviceGetProcessUtilization(self, handle, since):
            return [SimpleNamespace(pid=11, smUtil=30), SimpleNamespace(pid=11, smUtil=70), SimpleNamespace(pid=5, smUtil=90)]

    assert other_sm_util(FakeNvml(), None, mine={5}) == {11: 70}  # our own process is left out

    class NoSamples:
        def nvmlDeviceGetProcessUtilization(self, handle, since):
            raise RuntimeError("NVML_ERROR_NOT_FOUND")

    assert other_sm_util(NoSamples(), None, mine=set()) is None


def test_the_busy_machine_note_counts_runs_in_words_not_a_bare_number():
    """'load average above the usable CPUs (4)' read as four CPUs on a two-core machine: the
    count is of runs, and the note says so."""
    from tbd.report.tables import notes_for

    def rec(i, warnings):
        return {"id": f"r{i}", "status": "ok", "error": None, "method": {"noise": {"warnings": warnings, "run_warnings": []}}}
    load = "load average 4.6 -> 3.1 (before -> after) on 2 usable CPU(s)"
    records = [rec(0, [load]), rec(1, [load]), rec(2, [])]
    (busy,) = [n for n in notes_for(records, {r["id"]: r["id"] for r in records}) if "busy machine" in n]
    assert "during 2 of 3 run(s): load average above the usable CPUs (2 run(s))" in busy, busy
