"""The measurement loop's verdict: ok, unconverged or insufficient, with a fake session whose step
times are scripted (no framework, no training), so each outcome is reproduced in milliseconds."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from tbd import registry
from tbd.config import RunConfig
from tbd.harness import measure as measure_mod
from tbd.harness.measure import derive_metrics, measure


class ScriptedSession:
    """Reports the step times of `times` (seconds) one after another, without sleeping; the clock
    the loop reads is moved by the same amount, so the time budget behaves as in a real run."""

    def __init__(self, times, clock, units=None):
        self.times, self.clock, self.i = list(times), clock, 0
        self.units = list(units) if units is not None else [8.0] * len(self.times)

    def run_steps(self, n):
        out, units = self.times[self.i : self.i + n], self.units[self.i : self.i + n]
        self.i += len(out)
        self.clock.now += sum(out)
        return SimpleNamespace(seconds=out, units=units, samples=[8.0] * len(out))

    def last_loss(self):
        return 1.0


def _run(times, monkeypatch, units=None, irregular_steps="", **budget):
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(measure_mod.time, "perf_counter", lambda: clock.now)
    config = RunConfig("resnet50", batch_size=8, **budget)
    m = measure(ScriptedSession(times, clock, units), config, irregular_steps=irregular_steps)
    metrics, method = derive_metrics(m, config, registry.get_spec("resnet50"), "cpu", 2)
    return metrics, method


def test_a_quiet_run_converges(monkeypatch):
    rng = np.random.default_rng(0)
    times = [5.0] + list(0.1 * (1 + 0.002 * rng.standard_normal(400)))
    metrics, method = _run(times, monkeypatch, max_time_s=30, min_window_s=1.0)
    assert method["convergence"]["status"] == "ok" and metrics["throughput_ci95_half_width_pct"] <= 1.0
    assert metrics["compile_time_s"] == 5.0  # step 0 reported, and not counted against the budget


def test_batches_of_different_sizes_are_rated_over_the_window_and_converge(monkeypatch):
    # Two resident batches of different lengths, stepped in turn (seq2seq's pool of two): the
    # per-step rates alternate between 10,000 and 11,111 units/s, so their median's CI would span
    # both (about +-5%) however long the run; the window's units over its time converge.
    rng = np.random.default_rng(2)
    n = 400
    units = [1000.0 if i % 2 else 3000.0 for i in range(n)]
    times = [u / (10_000.0 if u == 1000.0 else 11_111.0) * (1 + 0.002 * rng.standard_normal()) for u in units]
    times[0] = 5.0
    metrics, method = _run(times, monkeypatch, units=units, max_time_s=30, min_window_s=1.0)
    assert method["convergence"]["status"] == "ok" and metrics["throughput_ci95_half_width_pct"] <= 1.0
    start, stop = metrics["warmup_steps"], metrics["total_steps"]
    stop -= (stop - start) % 2  # whole rotations of the two batches
    window = sum(units[start:stop]) / sum(times[start:stop])
    assert abs(metrics["images_per_s"] - window) <= 1e-9 * window
    assert "different sizes" in method["throughput"]


def test_a_rotation_of_batches_whose_times_do_not_follow_their_sizes_converges(monkeypatch):
    # deepspeech2 in JAX on an H200: two resident batches padded to different frame edges, so a
    # step takes 150 or 400 ms while carrying 10 or 12 audio seconds (time not proportional to
    # work). Taken step by step, the fixed gap between the two counts as noise (the run read
    # +-11% after 30 s); taken a rotation at a time, only the 1% timing noise is left.
    rng = np.random.default_rng(3)
    n = 300
    units = [10.0 if i % 2 else 12.0 for i in range(n)]
    times = [(0.15 if u == 10.0 else 0.40) * (1 + 0.01 * rng.standard_normal()) for u in units]
    times[0] = 5.0
    metrics, method = _run(times, monkeypatch, units=units, max_time_s=30, min_window_s=1.0)
    assert method["convergence"]["status"] == "ok" and metrics["throughput_ci95_half_width_pct"] <= 1.0
    assert abs(metrics["images_per_s"] / (22.0 / 0.55) - 1) < 0.01
    # samples over the same whole rotations: 22 units to 16 samples in each
    assert abs(metrics["images_per_s"] / metrics["samples_per_s"] - 22.0 / 16.0) < 1e-9
    start, stop = metrics["warmup_steps"], metrics["total_steps"]
    steps_u, steps_t = np.asarray(units[start:stop]), np.asarray(times[start:stop])
    rate = steps_u.sum() / steps_t.sum()
    per_step_se = np.std(steps_u - rate * steps_t, ddof=1) / np.sqrt(len(steps_t)) / steps_t.mean()
    assert 1.96 * per_step_se / rate * 100 > 3 * metrics["throughput_ci95_half_width_pct"]  # what step by step would claim


def test_a_noisy_run_that_runs_out_of_time_is_unconverged_with_its_ci(monkeypatch):
    rng = np.random.default_rng(1)
    times = [0.5] + list(0.1 * np.exp(0.5 * rng.standard_normal(400)))
    metrics, method = _run(times, monkeypatch, max_time_s=4)
    verdict = method["convergence"]
    assert verdict["status"] == "unconverged" and verdict["ci_pct"] > 1.0
    assert metrics["throughput_ci95_half_width_pct"] == verdict["ci_pct"]
    assert "time budget" in method["stop_reason"]


def test_one_timed_step_is_insufficient_and_has_no_ci(monkeypatch):
    """The resnet50 --compile case of issue 21: a 204 s compilation, then 7.4 s steps, budget 5 s."""
    metrics, method = _run([204.3, 7.4, 7.4, 7.4], monkeypatch, max_time_s=5)
    assert method["convergence"]["status"] == "insufficient"
    assert metrics["throughput_ci95_half_width_pct"] is None  # never "±0.0%"
    assert metrics["compile_time_s"] == 204.3 and metrics["timed_steps"] == 1
    assert all(metrics[f"{name}_per_s_ci95_{end}"] is None for name in ("images", "samples") for end in ("low", "high"))


def test_steps_too_few_for_a_steady_window_never_count_the_compilation(monkeypatch):
    """A compiling session's first pass covers both resident batches (gpt in JAX, --max-steps 2):
    no steady step is left, and the throughput is the step after step 0, not their average."""
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(measure_mod.time, "perf_counter", lambda: clock.now)
    session = ScriptedSession([1.6, 0.008], clock)
    session.compile_count = 1
    config = RunConfig("resnet50", batch_size=8, max_steps=2)
    m = measure(session, config)
    metrics, method = derive_metrics(m, config, registry.get_spec("resnet50"), "cpu", 2)
    assert method["convergence"]["status"] == "insufficient" and metrics["timed_steps"] == 1
    assert metrics["images_per_s"] == 8 / 0.008 and method["warmup"]["excluded_steps"] == [0]


def test_a_window_rate_interval_never_reaches_below_zero(monkeypatch):
    # Wildly varying steps of two sizes: the delta method's normal interval spans more than the rate.
    rng = np.random.default_rng(0)
    units = [1000.0 if i % 2 else 3000.0 for i in range(12)]
    times = [0.01 * np.exp(2.5 * rng.standard_normal()) for _ in units]  # the interval's normal form: 42,684 -3,124 .. 88,492
    metrics, method = _run(times, monkeypatch, units=units, max_steps=12, min_timed_steps=4, max_time_s=1e308)  # (a budget int() cannot hold)
    assert "different sizes" in method["throughput"] and method["convergence"]["status"] == "unconverged"
    assert metrics["images_per_s_ci95_low"] >= 0 and metrics["samples_per_s_ci95_low"] >= 0


def test_the_time_budget_is_for_steady_steps_not_warm_up(monkeypatch):
    """20 slow warm-up steps (1.8 s) then fast ones, budget 2 s: the warm-up is excluded and the
    budget still buys 2 s of steady steps; compile and warm-up times are reported apart."""
    rng = np.random.default_rng(2)
    times = [3.0] + [0.09] * 20 + list(0.01 * (1 + 0.3 * rng.standard_normal(2000)).clip(0.5))
    metrics, method = _run(times, monkeypatch, max_time_s=2, max_steps=2000)
    assert metrics["warmup_steps"] == 21 and abs(metrics["warmup_time_s"] - 1.8) < 1e-6
    assert metrics["steady_window_s"] >= 2.0 and metrics["compile_time_s"] == 3.0
    assert method["convergence"]["status"] == "unconverged"  # 30% step noise: 200 steps give about +-5%, not 1%


class AutotuningSession(ScriptedSession):
    """A session whose first pass over its two resident batches peaks at 30 GiB (an autotuner's
    workspaces) and whose steady steps peak at 4 GiB, with a resettable peak counter."""

    def __init__(self, times, clock):
        super().__init__(times, clock)
        self.peak, self.resets = 0, []

    def run_steps(self, n):
        out = super().run_steps(n)
        self.peak = max(self.peak, (30 if self.i <= 2 else 4) * 2**30)
        return out

    def memory(self):
        return {"peak_allocated_bytes": self.peak, "peak_reserved_bytes": self.peak + 2**30}

    def reset_peak_memory(self):
        self.resets.append(self.i)
        self.peak = 0
        return True


def test_the_steady_peak_is_kept_apart_from_the_warm_up_peak(monkeypatch):
    from tbd.harness.runner import split_peaks

    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(measure_mod.time, "perf_counter", lambda: clock.now)
    session = AutotuningSession([1.0] + [0.1] * 200, clock)
    m = measure(session, RunConfig("resnet50", batch_size=8, max_time_s=5, data_pool=2))
    assert session.resets == [2]  # reset once, when both resident batches had been met
    peaks = split_peaks(session.memory(), m.warmup_memory)
    assert peaks["steady_peak_allocated_bytes"] == 4 * 2**30 and peaks["warmup_peak_allocated_bytes"] == 30 * 2**30
    assert peaks["peak_allocated_bytes"] == 30 * 2**30  # the run's peak stays the whole run's
    assert split_peaks(session.memory(), {}) == {}  # a session without a reset: one peak, nothing split


def test_the_rotation_period_of_step_sizes():
    from tbd.harness.stats import rotation_period, rotations

    assert rotation_period([5.0] * 12) == 1
    assert rotation_period([1.0, 2.0, 3.0] * 4) == 3
    assert rotation_period([2.0, 3.0, 1.0] * 3 + [2.0]) == 3  # a window may start and end mid-rotation
    assert rotation_period([1.0, 2.0] * 2) == 1  # fewer than three rotations: not a cycle
    assert rotation_period(np.random.default_rng(0).integers(1, 9, 50).astype(float)) == 1  # sizes from disk
    u, t = rotations([1.0, 2.0] * 3 + [1.0], [0.1, 0.3] * 3 + [0.1])
    assert u.tolist() == [3.0] * 3 and np.allclose(t, [0.4] * 3)  # the step after the last whole rotation dropped


def test_a_workload_whose_slow_steps_are_part_of_the_work_is_rated_over_the_window(monkeypatch):
    # a3c: one round in five has an episode end (an emulator reset) and takes twice as long. The
    # median step would report the fast rounds' rate; the window counts the slow ones too.
    rng = np.random.default_rng(4)
    times = [2.0] + [(0.1 if i % 5 else 0.2) * (1 + 0.01 * rng.standard_normal()) for i in range(600)]
    reason = registry.get_spec("a3c").irregular_steps
    assert reason
    metrics, method = _run(times, monkeypatch, irregular_steps=reason, max_time_s=30, min_window_s=1.0)
    assert method["throughput_statistic"] == "window" and reason in method["throughput"]
    assert abs(metrics["images_per_s"] / (8 / 0.12) - 1) < 0.02  # 8 units per 0.12 s on average, not 8 per 0.1 s
    plain, plain_method = _run(times, monkeypatch, max_time_s=30, min_window_s=1.0)
    assert plain_method["throughput_statistic"] == "median" and plain["images_per_s"] > 1.1 * metrics["images_per_s"]
