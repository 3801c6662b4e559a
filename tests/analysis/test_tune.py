"""`tbd tune`'s search on a fake measurement backend: what is kept (only gains beyond the CI),
when it stops (nothing left, the budget), what --keep-semantics and --skip leave out, how an
out-of-memory bounds the batch, and that the answer (command line, sweep file, record) is ready
to use. No process is started here; tests/cli/test_tune_cli.py runs the real thing once."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from tbd.analysis import tune
from tbd.analysis.levers import apply_change, levers_for
from tbd.config import RunConfig
from tbd.errors import UsageError
from tbd.results.record import RunRecord

STEPS = 40


def start_config(**over) -> RunConfig:
    return RunConfig(**{"workload": "resnet50", "flavor": "tiny", "device": "cpu", **over}).validated()


class FakeBackend:
    """Throughput = base x the factor of each setting present; per-step rates with `noise_pct`
    spread (seeded by the config); `oom_above` batch sizes fail as out of memory; each trial
    takes `trial_s` seconds of the fake clock."""

    def __init__(self, factors: dict, noise_pct: float = 1.0, trial_s: float = 10.0, oom_above: int | None = None,
                 recommendations: list | None = None, fail_start: bool = False, slow: float | None = None, compile_s: float | None = None):
        self.factors, self.noise, self.trial_s, self.oom_above = factors, noise_pct / 100.0, trial_s, oom_above
        self.compile_s = compile_s  # a compiling trial's seconds (default: trial_s)
        self.recommendations, self.fail_start = recommendations or [], fail_start
        # `slow`: every step takes this many times longer, and the run steps only as many steps as
        # fit its --max-time (fewer than a CI needs: status 'insufficient'); the fake clock then
        # also advances by the steps' time.
        self.slow = slow
        self.now = 0.0
        self.measured: list[RunConfig] = []
        self.calibrated: list[tuple[str, float, float]] = []

    def clock(self) -> float:
        return self.now

    def speed(self, config: RunConfig) -> float:
        rate = 100.0 * (config.batch_size / 4) ** 0.5  # grows with the batch, less than linearly
        for (name, value), factor in self.factors.items():
            now = config.options.get(name[8:]) if name.startswith("options.") else getattr(config, name)
            if now == value:
                rate *= factor
        return rate

    def measure(self, config: RunConfig, timeout_s):
        if self.slow:
            return self.measure_slow(config)
        self.now += self.compile_s if config.compile and self.compile_s else self.trial_s
        self.measured.append(config)
        run_id = f"run-{len(self.measured)}"
        if self.fail_start and len(self.measured) == 1:
            return RunRecord.failed(config, "error", "injected: the model does not build", run_id).to_dict()
        if self.oom_above and config.batch_size > self.oom_above:
            return RunRecord.oom(config, f"out of memory at batch size {config.batch_size}", run_id).to_dict()
        # crc32, not hash(): str hashes differ per process (PYTHONHASHSEED); the noise must be the same each run
        rng = np.random.default_rng(zlib.crc32(repr(tune.change_key(config.to_dict())).encode()))
        rate = self.speed(config)
        units = [float(config.batch_size)] * STEPS
        step_s = [u / (rate * (1 + self.noise * rng.standard_normal())) for u in units]
        return {"id": run_id, "status": "ok", "config": config.to_dict(), "workload": {"unit": "images"}, "environment": {"hostname": "fake"},
                "metrics": {"images_per_s": rate, "warmup_steps": 0}, "samples": {"step_s": step_s, "units": units}, "method": {}}

    def measure_slow(self, config: RunConfig):
        self.measured.append(config)
        rate = self.speed(config) / self.slow
        step_s = config.batch_size / rate
        steps = min(STEPS, int(config.max_time_s / step_s))
        self.now += self.trial_s + steps * step_s
        need = min(config.min_timed_steps, config.max_steps - 1)
        status = "ok" if steps >= need else "insufficient"
        return {"id": f"run-{len(self.measured)}", "status": status, "config": config.to_dict(), "workload": {"unit": "images"},
                "metrics": {"images_per_s": rate, "warmup_steps": 0, "timed_steps": steps, "steady_window_s": steps * step_s},
                "samples": {"step_s": [step_s * (1 + 0.01 * (i % 3 - 1)) for i in range(steps)], "units": [float(config.batch_size)] * steps},
                "method": {"convergence": {"status": status, "min_timed_steps": need, "timed_steps": steps}}}

    def recommend(self, record):
        return list(self.recommendations)

    def calibrate(self, base, record, trial):
        self.calibrated.append((trial.change, trial.expected_gain_pct, trial.measured_gain_pct))


def run(backend: FakeBackend, budget_s: float = 1e6, **kw) -> tune.TuneResult:
    return tune.search(start_config(**kw.pop("start", {})), backend, budget_s=budget_s, clock=backend.clock, **kw)


def by_change(result: tune.TuneResult) -> dict[str, tune.Trial]:
    return {t.change: t for t in result.trail}


def test_keeps_only_gains_beyond_the_confidence_interval_and_stops_when_nothing_is_left():
    backend = FakeBackend({("channels_last", True): 1.30, ("compile", True): 1.003, ("precision", "bf16"): 0.8,
                           ("options.optimizer", "fused"): 1.05}, noise_pct=2.0)
    result = run(backend, batch_max=8)
    trail = by_change(result)
    assert trail["channels_last memory format"].kept
    assert trail["channels_last memory format"].gain_ci95_pct[0] > 0  # the CI lies above 0
    assert not trail["torch.compile"].kept and "within noise" in trail["torch.compile"].why  # +0.3% in 2% noise
    assert not trail["precision fp32 -> bf16"].kept and "slower" in trail["precision fp32 -> bf16"].why
    assert trail["optimizer kernels default -> fused"].kept
    assert trail["batch 4 -> 8"].kept  # the batch stops at the confirmed maximum (8)
    best = RunConfig.from_dict(result.best_config)
    assert (best.channels_last, best.compile, best.precision, best.batch_size, best.options["optimizer"]) == (True, False, "fp32", 8, "fused")
    assert result.stopped.startswith("nothing applicable is left")
    assert result.speedup == pytest.approx(1.30 * 1.05 * 2 ** 0.5, rel=0.05)
    # a rejected change is measured once more only after a change was kept since, and says so; none a third time
    measured = [tune.change_key(t.apply) for t in result.trail[1:]]
    assert max(measured.count(k) for k in measured) == 2
    for t in result.trail:
        assert (t.retry_of is not None) == ("(retried after " in t.change)
        if t.retry_of is not None:
            assert any(u.kept and u.step > t.retry_of for u in result.trail) and not result.trail[t.retry_of].kept
    last_kept = max(t.step for t in result.trail if t.kept)
    late = [tune.change_key(t.apply) for t in result.trail if t.step > last_kept]
    # a change first measured after the last kept one is not retried: nothing was kept since
    assert late and all(measured.count(k) == 1 for k in late if k not in measured[:last_kept])
    assert result.left_out["compile_mode"] == "applies on cuda only"


def test_budget_ends_the_search():
    backend = FakeBackend({("channels_last", True): 1.3}, trial_s=10.0)
    result = run(backend, budget_s=38.0)
    assert len(backend.measured) == 4  # the baseline and three trials, the last started with 8 s left (>= 3/4 of 10 s)
    assert result.stopped == "the budget of 38 s ended"
    assert result.elapsed_s == pytest.approx(40.0)
    # with 5 s left (< 3/4 of the 10 s a trial takes) no trial starts
    backend = FakeBackend({("channels_last", True): 1.3}, trial_s=10.0)
    result = run(backend, budget_s=35.0)
    assert len(backend.measured) == 3
    assert result.stopped.startswith("the budget of 35 s ends before another trial could finish (5 s left")


def test_an_interrupt_ends_the_search_with_the_best_so_far():
    class Interrupted(FakeBackend):
        def measure(self, config, timeout_s):
            if len(self.measured) == 2:
                raise KeyboardInterrupt
            return super().measure(config, timeout_s)

    result = run(Interrupted({("precision", "bf16"): 1.5}))
    assert result.interrupted and result.stopped.startswith("interrupted")
    assert [t.kept for t in result.trail] == [True, True] and RunConfig.from_dict(result.best_config).precision == "bf16"
    assert result.command and result.speedup == pytest.approx(1.5, rel=0.05)


def test_keep_semantics_and_skip_leave_levers_out():
    backend = FakeBackend({("precision", "bf16"): 2.0})
    result = run(backend, keep_semantics=True, skip=("compile",))
    assert not any(t.lever in ("precision", "batch_size", "compile") for t in result.trail)
    assert "keep-semantics" in result.left_out["precision"] and "keep-semantics" in result.left_out["batch_size"]
    assert result.left_out["compile"] == "--skip"
    best = RunConfig.from_dict(result.best_config)
    assert best.precision == "fp32" and best.batch_size == 4
    with pytest.raises(UsageError, match="--skip compiel: no such lever .did you mean: compile"):
        tune.check_skip(["compiel"], start_config())


def test_recommended_changes_go_first_by_expected_gain():
    recs = [{"action": "torch.compile", "expected_gain_pct": 40.0, "expected_gain_range_pct": [20.0, 80.0], "basis": "fusion", "apply": {"compile": True}},
            {"action": "fused optimizer", "expected_gain_pct": 60.0, "basis": "optimizer time", "apply": {"options": {"optimizer": "fused"}}},
            {"action": "more workers", "expected_gain_pct": 90.0, "basis": "input", "apply": None}]
    backend = FakeBackend({("compile", True): 1.2}, recommendations=recs)
    result = run(backend, budget_s=58.0)
    assert [t.change for t in result.trail[1:3]] == ["optimizer kernels default -> fused", "torch.compile"]
    assert result.trail[2].expected_gain_pct == 40.0 and "+20..+80%" in result.trail[2].expected_basis
    # the fused optimizer, rejected before compile was kept, is still recommended: retried before the unestimated changes
    assert result.trail[3].change == "optimizer kernels default -> fused (retried after torch.compile)" and result.trail[3].retry_of == 1
    assert result.trail[4].expected_gain_pct is None and result.trail[4].expected_basis.startswith("no estimate")
    # each recommended change measured is a calibration pair (expected, measured); the others are not
    assert [(c, e) for c, e, _ in backend.calibrated] == [("optimizer kernels default -> fused", 60.0), ("torch.compile", 40.0),
                                                        ("optimizer kernels default -> fused (retried after torch.compile)", 60.0)]
    assert abs(backend.calibrated[1][2] - 20.0) < 3.0


def rec(action: str, gain_pct: float, apply: dict) -> dict:
    return {"action": action, "expected_gain_pct": gain_pct, "basis": "fake", "apply": apply}


def test_recommended_changes_go_by_expected_gain_per_second_of_trial():
    # A first compiling trial is estimated at 3 x the 10 s of the others: +90% in 30 s ranks after
    # +60% and +34% in 10 s each (log(1.9)/30 < log(1.34)/10); of equal costs the larger gain goes first.
    recs = [rec("torch.compile", 90.0, {"compile": True}), rec("bf16", 34.0, {"precision": "bf16"}),
            rec("channels_last", 60.0, {"channels_last": True})]
    backend = FakeBackend({("compile", True): 1.9, ("precision", "bf16"): 1.34, ("channels_last", True): 1.6},
                          recommendations=recs, compile_s=40.0)
    result = run(backend, budget_s=1e6, skip=("batch_size",))
    assert [t.lever for t in result.trail[1:5]] == ["channels_last", "precision", "compile", "optimizer"]
    assert result.trail[4].expected_gain_pct is None  # the unestimated ones after every estimated one
    # with 40 s the compile trial (about 30 s) no longer fits after the two cheap ones: the budget decides
    backend = FakeBackend({("compile", True): 1.9, ("precision", "bf16"): 1.34, ("channels_last", True): 1.6},
                          recommendations=recs, compile_s=40.0)
    result = run(backend, budget_s=40.0, skip=("batch_size",))
    assert [t.lever for t in result.trail[1:]] == ["channels_last", "precision", "optimizer"] and not any(c.compile for c in backend.measured)
    assert "did not fit" in result.left_out["compile"] and result.elapsed_s == 40.0
    # the candidates alone: a +90% trial of 25 s goes before a +34% one of 120 s, and not without the costs
    ctx = tune.Context(config=start_config())
    seconds = {"compile": 120.0, "precision": 25.0}
    ranked = tune._candidates(levers_for(start_config())[:4], ctx, [rec("c", 34.0, {"compile": True}), rec("p", 90.0, {"precision": "bf16"})],
                              set(), {}, cost=lambda change: seconds[change.lever])
    assert [(c.lever, gain) for c, gain, _ in ranked[:2]] == [("precision", 90.0), ("compile", 34.0)]
    recs = [rec("c", 90.0, {"compile": True}), rec("p", 34.0, {"precision": "bf16"})]
    assert [c.lever for c, _, _ in tune._candidates(levers_for(start_config())[:4], ctx, recs, set(), {}, cost=lambda c: seconds[c.lever])][:2] \
        == ["precision", "compile"]
    assert [c.lever for c, _, _ in tune._candidates(levers_for(start_config())[:4], ctx, recs, set(), {})][:2] == ["compile", "precision"]


class Interacting(FakeBackend):
    """torch.compile slows the run down by 20% in the NCHW layout and speeds it up by 50% in
    channels_last (resnet50 on an H200: -19% at bf16, batch 32, NCHW; 6,795 images/s compiled at batch 256, channels_last);
    with `compile_fails` a compiling NCHW run fails instead."""

    def __init__(self, *args, compile_fails: bool = False, **kw):
        super().__init__({("channels_last", True): 1.3}, *args, **kw)
        self.compile_fails = compile_fails

    def speed(self, config):
        rate = super().speed(config)
        return rate * (1.5 if config.channels_last else 0.8) if config.compile else rate

    def measure(self, config, timeout_s):
        if self.compile_fails and config.compile and not config.channels_last:
            self.now += self.trial_s
            self.measured.append(config)
            return RunRecord.failed(config, "error", "injected: the compiler crashed", f"run-{len(self.measured)}").to_dict()
        return super().measure(config, timeout_s)


ONLY_LAYOUT_AND_COMPILE = ("precision", "batch_size", "optimizer", "threads")


def test_a_rejected_change_is_retried_once_after_a_change_was_kept_and_says_so():
    recs = [rec("torch.compile", 40.0, {"compile": True})]
    backend = Interacting(recommendations=recs)
    result = run(backend, skip=ONLY_LAYOUT_AND_COMPILE)
    assert [(t.change, t.kept) for t in result.trail[1:]] == [
        ("torch.compile", False), ("channels_last memory format", True),
        ("torch.compile (retried after channels_last memory format)", True)]
    assert "slower" in result.trail[1].why and result.trail[3].retry_of == 1 and result.trail[3].expected_gain_pct == 40.0
    assert result.trail[3].measured_gain_pct == pytest.approx(50.0, abs=3.0)
    best = RunConfig.from_dict(result.best_config)
    assert best.compile and best.channels_last and result.speedup == pytest.approx(1.3 * 1.5, rel=0.05)
    assert sum(c.compile for c in backend.measured) == 2
    # the budget still bounds the search: compiling trials of 20 s and a budget of 45 s leave 5 s for the retry
    backend = Interacting(recommendations=recs, compile_s=20.0)
    result = run(backend, budget_s=45.0, skip=ONLY_LAYOUT_AND_COMPILE)
    assert [t.change for t in result.trail[1:]] == ["torch.compile", "channels_last memory format"] and len(backend.measured) == 3
    assert result.stopped.startswith("the budget of 45 s ends before another trial could finish (5 s left, the next would take about 20 s)")


def test_no_retry_when_nothing_was_kept_since_nor_of_a_run_that_failed():
    recs = [rec("torch.compile", 40.0, {"compile": True})]
    backend = Interacting(recommendations=recs)
    result = run(backend, skip=ONLY_LAYOUT_AND_COMPILE + ("channels_last",))
    assert [(t.change, t.kept) for t in result.trail[1:]] == [("torch.compile", False)]
    assert result.stopped.startswith("nothing applicable is left")
    # a trial that failed to run has no measured gain to revise: not retried after channels_last is kept
    backend = Interacting(recommendations=recs, compile_fails=True)
    result = run(backend, skip=ONLY_LAYOUT_AND_COMPILE)
    assert [(t.change, t.kept) for t in result.trail[1:]] == [("torch.compile", False), ("channels_last memory format", True)]
    assert "the run failed" in result.trail[1].why and sum(c.compile for c in backend.measured) == 1


def test_out_of_memory_bounds_the_batch_and_bisects_towards_it():
    backend = FakeBackend({}, oom_above=12)
    result = run(backend, skip=("precision", "channels_last", "compile", "optimizer", "threads"), start={"batch_size": 4})
    batches = [(t.apply.get("batch_size"), t.kept) for t in result.trail if t.lever == "batch_size"]
    # 8 fits and helps; 16 runs out of memory; then halfway: 12 fits; then 14 (halfway to 16) fails
    assert batches == [(8, True), (16, False), (12, True), (14, False)]
    assert "oom" in by_change(result)["batch 8 -> 16"].why
    assert RunConfig.from_dict(result.best_config).batch_size == 12


def test_a_starting_configuration_that_fails_ends_the_search_with_its_reason():
    result = run(FakeBackend({}, fail_start=True))
    assert result.best_run_id is None and len(result.trail) == 1
    assert "did not run: injected" in result.stopped
    record = tune.tune_record(result, None, {})
    assert record.status == "failed" and record.kind == "tune"


def test_the_answer_is_a_ready_command_line_a_sweep_file_and_a_record(tmp_path):
    from tbd.cli import build_parser
    from tbd.commands.options import config_from_args
    from tbd.sweep import spec as sweep_spec

    backend = FakeBackend({("channels_last", True): 1.3, ("options.optimizer", "foreach"): 1.2}, noise_pct=0.5)
    result = run(backend, batch_max=4, start={"max_time_s": 5.0})
    best = RunConfig.from_dict(result.best_config).validated()
    assert best.channels_last and best.options == {"optimizer": "foreach"}
    # the command line parses back to the same configuration
    args = build_parser().parse_args(result.command.split()[1:])
    assert config_from_args(args, args.workload).to_dict() == best.to_dict()
    # the sweep file plans exactly that configuration
    plan = sweep_spec.plan(sweep_spec.parse_text(result.toml, "tuned.toml"))
    assert len(plan.lines) == 1 and plan.lines[0].batches == [best.batch_size]
    planned = plan.lines[0].config(best.batch_size)
    assert (planned.channels_last, planned.options, planned.precision, planned.max_time_s) == (True, {"optimizer": "foreach"}, "fp32", 5.0)
    # the record: typed, with its config, method and trail, and read back the same
    best_record = backend.measure(best, None)
    record = tune.tune_record(result, best_record, {"budget_s": 1e6})
    assert record.kind == "tune" and record.status == "ok" and record.config == best.to_dict()
    assert record.metrics["speedup_x"] == result.speedup and "greedy search" in record.method["tune"]["search"]
    back = RunRecord.from_dict(record.to_dict())
    assert back.tune["trail"][1]["change"] == result.trail[1].change and back.kind == "tune"


def test_levers_come_from_the_plugin_and_changes_merge_options():
    names = [lv.name for lv in levers_for(start_config())]
    assert names[:4] == ["precision", "batch_size", "channels_last", "compile"]
    assert {"optimizer", "compile_mode", "cudnn_benchmark", "allocator", "threads", "ddp_bucket"} <= set(names)
    jax = [lv.name for lv in levers_for(RunConfig(workload="resnet50", framework="jax"))]
    assert "compile_mode" not in jax and "optimizer" not in jax
    merged = apply_change(start_config(options={"compile_mode": "max-autotune"}), {"options": {"optimizer": "fused"}, "compile": True})
    assert merged.options == {"compile_mode": "max-autotune", "optimizer": "fused"} and merged.compile


@pytest.mark.parametrize("text,seconds", [("10m", 600.0), ("90s", 90.0), ("1h30m", 5400.0), ("45", 45.0)])
def test_parse_budget(text, seconds):
    assert tune.parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "0", "5x", "-3m"])
def test_parse_budget_rejects_bad_input(text):
    with pytest.raises(UsageError, match="--budget"):
        tune.parse_budget(text)


def test_unknown_option_value_is_one_line_naming_the_valid_ones():
    with pytest.raises(UsageError, match="optimizer=fast is not one of auto, fused, foreach, for-loop"):
        start_config(options={"optimizer": "fast"})


def test_torch_tune_options_reach_the_session():
    """The framework settings the levers change are applied by the PyTorch session (in this
    process, a tiny model): optimizer kernels on every optimizer the workload built (a second
    one kept in its `extra`, as wgan's critic), intra-op threads, and a clear failure where a
    workload's optimizer has no such kernel."""
    import torch

    from tbd import frameworks
    from tbd.errors import RunFailure
    from tbd.frameworks.torch.session import optimizers_of, set_optimizer_kernels

    before = torch.get_num_threads()
    try:
        session = frameworks.open_session(start_config(workload="gpt", options={"optimizer": "fused", "threads": "1"}))
        assert all(g["fused"] and not g["foreach"] for g in session.optimizer.param_groups)
        assert session.info.method["optimizer_kernels"] == "fused" and session.info.method["intra_op_threads"] == 1
        assert torch.get_num_threads() == 1
        session.run_steps(1)  # the fused update runs
        session.close()
    finally:
        torch.set_num_threads(before)
    model = torch.nn.Linear(2, 2)
    first, second = (torch.optim.Adam(model.parameters(), foreach=True) for _ in range(2))
    assert optimizers_of(first, {"state": {"opt_d": second, "other": 1}}) == [first, second]
    set_optimizer_kernels([first, second], "for-loop")
    assert all(g["fused"] is False and g["foreach"] is False for g in second.param_groups)

    class Plain(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {})

    with pytest.raises(RunFailure, match="option optimizer=fused: Plain has no fused implementation"):
        set_optimizer_kernels([Plain([torch.nn.Parameter(torch.zeros(1))])], "fused")


def test_store_backend_runs_short_traced_isolated_trials_and_survives_a_failed_analysis(monkeypatch, tmp_path):
    from tbd.harness import launcher
    from tbd.results.store import Store

    seen = []

    def fake_run_isolated(config, progress=None, timeout_s=None):
        seen.append((config, timeout_s))
        return RunRecord.failed(config, "error", "not run here")

    monkeypatch.setattr(launcher, "run_isolated", fake_run_isolated)
    store = Store(tmp_path / "home")
    backend = tune.StoreBackend(store, profile=True)
    record = backend.measure(start_config(isolate=False), timeout_s=12.0)
    config, timeout = seen[0]
    assert (config.profile, config.profile_steps, config.isolate, timeout) == (True, tune.TRACE_STEPS, True, 12.0)
    assert store.get(record["id"])["status"] == "failed"  # every trial is stored, failed ones too
    assert backend.recommend({"id": "x", "status": "failed", "config": record["config"]}) == []
    assert backend.notes and "no analysis" in backend.notes[0]


def test_profile_steps_bounds_a_gpu_trace(monkeypatch):
    from tbd.harness import profiling

    got = []
    monkeypatch.setattr(profiling, "trace_session", lambda session, config, run_id, steps=None, **kw: got.append(steps))
    record = {"id": "r", "metrics": {"step_time_ms_p50": 10.0}}
    profiling.trace_run(None, RunConfig(workload="gpt", device="cuda"), record)  # NVML's 3 s window: 300 steps, capped at 200
    profiling.trace_run(None, RunConfig(workload="gpt", device="cuda", profile_steps=tune.TRACE_STEPS), record)
    assert got == [profiling.MAX_GPU_STEPS, tune.TRACE_STEPS]
    # a trial's trace: about TRACE_MAX_S of steps (at least 2), and none for a trial too slow to be kept
    trial = RunConfig(workload="gpt", device="cuda", profile_steps=tune.TRACE_STEPS, profile_max_s=tune.TRACE_MAX_S)
    slow = {"id": "r", "workload": {"unit": "tokens"}, "metrics": {"step_time_ms_p50": 300.0, "tokens_per_s": 900.0}}
    profiling.trace_run(None, trial, slow)
    profiling.trace_run(None, trial, {**slow, "metrics": {"step_time_ms_p50": 900.0, "tokens_per_s": 300.0}})
    assert got[2:] == [3, 2]
    skipped = profiling.trace_run(None, RunConfig(workload="gpt", profile_min_rate=1000.0), slow)
    assert skipped["trace"] is None and "900 tokens/s is below the 1000" in skipped["skipped"] and len(got) == 4
    with pytest.raises(UsageError, match="profile_min_rate must be a finite positive number"):
        start_config(profile_min_rate=0.0)


def test_only_a_trial_that_may_become_the_best_is_traced():
    class Recording(FakeBackend):
        def measure(self, config, timeout_s):
            self.floors = getattr(self, "floors", []) + [config.profile_min_rate]
            return super().measure(config, timeout_s)

    backend = Recording({("channels_last", True): 1.3}, noise_pct=0.5)
    result = run(backend, batch_max=4, skip=("precision", "compile", "optimizer", "threads"))
    assert backend.floors[0] is None  # the baseline is always traced
    assert backend.floors[1] == pytest.approx(result.baseline_throughput * 1.01 * tune.TRACE_SLACK)
    assert RunConfig.from_dict(result.best_config).profile_min_rate is None  # the answer carries no tuner setting


def test_an_insufficient_baseline_is_measured_again_with_a_window_for_its_steps_and_keeps_it():
    # steps of 1 s: a 10 s window holds 10 steady steps, a CI needs 20 -> once more with 20 x 1 s x 1.5 = 30 s
    backend = FakeBackend({("channels_last", True): 1.3}, slow=25.0)
    result = run(backend, budget_s=400.0, batch_max=4, skip=("precision", "compile", "optimizer", "threads"), start={"max_time_s": 10.0})
    base = result.trail[0]
    assert [c.max_time_s for c in backend.measured[:2]] == [10.0, 30.0]
    assert base.window_s == 30.0 and base.run_id == "run-2" and result.baseline_run_id == "run-2"
    assert "re-measured with a 30 s window (the 10 s window gave 10 steady step(s), a CI needs 20" in base.why
    # later trials measure with the window the best needed; the answer keeps the user's --max-time
    assert all(c.max_time_s == 30.0 for c in backend.measured[2:]) and len(backend.measured) > 2
    assert result.trail[1].kept and not result.trail[1].remeasured
    assert RunConfig.from_dict(result.best_config).max_time_s == 10.0


def test_a_trial_without_enough_steps_in_the_budget_is_not_kept_nor_compared():
    # bf16 makes steps 50x slower (2 s): 5 steps in the 10 s window; a longer window does not fit the 60 s budget
    backend = FakeBackend({("precision", "bf16"): 0.02}, slow=1.0)
    result = run(backend, budget_s=60.0, skip=("batch_size", "channels_last", "compile", "optimizer", "threads"), start={"max_time_s": 10.0})
    trial = by_change(result)["precision fp32 -> bf16"]
    assert not trial.kept and trial.measured_gain_pct is None and trial.gain_ci95_pct is None
    assert trial.why.startswith("not kept: not measurable in the budget (the 10 s window gave 5 steady step(s), a CI needs 20")
    assert sum(c.precision == "bf16" for c in backend.measured) == 1  # not measured again: it could not fit


def test_a_baseline_that_cannot_be_measured_in_the_budget_ends_the_search_without_comparing():
    backend = FakeBackend({("channels_last", True): 1.3}, slow=25.0)
    result = run(backend, budget_s=40.0, start={"max_time_s": 10.0})
    assert len(backend.measured) == 1 and len(result.trail) == 1  # no trial compared against a baseline without a CI
    assert result.stopped.startswith("the starting configuration could not be measured to the steady steps a CI needs")
    assert "not measurable in the budget" in result.stopped and "try --max-time 30" in result.stopped
    assert result.speedup == 1.0 and result.best_run_id == result.baseline_run_id


def test_a_trial_in_flight_at_the_budgets_end_gets_a_silence_limit_not_the_seconds_left():
    # A run reports only after its build and warm-up: a trial started with 5 s left and stopped
    # after 5 s of silence is lost whole. It gets TRIAL_SILENCE_S (COMPILE_SILENCE_S when compiling).
    class Limits(FakeBackend):
        def measure(self, config, timeout_s):
            self.limits = getattr(self, "limits", []) + [(config.compile, timeout_s)]
            return super().measure(config, timeout_s)

    backend = Limits({("compile", True): 1.5, ("precision", "bf16"): 1.2})
    result = run(backend, budget_s=400.0)
    assert len(backend.limits) >= 3
    for compiling, limit in backend.limits:
        assert limit >= (tune.COMPILE_SILENCE_S if compiling else tune.TRIAL_SILENCE_S)
    assert backend.limits[0][1] == pytest.approx(400.0)  # the baseline: the whole budget, more than the minimum
    assert any(compiling for compiling, _ in backend.limits)
    assert result.trail[-1].run_id


def test_a_trial_that_cannot_fit_the_budget_left_gives_way_to_one_that_can():
    # trials take 10 s; a first compiling one is assumed to take 3 x 10 s: with 18 s left it does
    # not fit (3/4 of 30 s > 18 s), so the next candidate goes first and compile is said left out
    recs = [{"action": "torch.compile", "expected_gain_pct": 40.0, "basis": "fusion", "apply": {"compile": True}},
            {"action": "channels_last", "expected_gain_pct": 10.0, "basis": "layout", "apply": {"channels_last": True}}]
    backend = FakeBackend({("compile", True): 1.2, ("channels_last", True): 1.1}, recommendations=recs)
    result = run(backend, budget_s=28.0)
    assert result.trail[1].lever == "channels_last"
    assert "did not fit" in result.left_out["compile"]
    assert not any(c.compile for c in backend.measured)
    # with the time for it, compile goes first (the top recommendation)
    backend = FakeBackend({("compile", True): 1.2, ("channels_last", True): 1.1}, recommendations=recs)
    result = run(backend, budget_s=40.0)
    assert result.trail[1].lever == "compile"


def test_a_run_reading_a_dataset_gets_the_loader_levers():
    """--data runs: the loader's workers double up to the usable cores, and JPEG decoding moves to
    the GPU where the framework (PyTorch: nvJPEG) and the dataset (JPEG images) allow it."""
    import dataclasses

    from tbd.analysis.levers import Context
    from tbd.data.base import usable_loader_cores

    def proposals(config):
        ctx = Context(config=config)
        return {lv.name: lv.propose(ctx) for lv in levers_for(config)}

    synthetic = proposals(start_config())
    assert "not reading a dataset" in synthetic["workers"] and "needs --data" in synthetic["decode"]
    on_disk = dataclasses.replace(start_config(), data="/data/imagenet", workers=0, device="cuda")
    got = proposals(on_disk)
    limit = usable_loader_cores("cuda")
    if limit >= 2:
        assert [c.apply for c in got["workers"]] == [{"workers": min(limit, 2)}]
    assert [c.apply for c in got["decode"]] == [{"decode": "gpu"}]
    assert "needs --data" in proposals(dataclasses.replace(on_disk, workload="gpt"))["decode"]  # tokens, not JPEGs
    full = dataclasses.replace(on_disk, workers=limit)
    assert "every usable core" in proposals(full)["workers"]
