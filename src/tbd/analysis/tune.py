"""`tbd tune WORKLOAD`: the fastest configuration of a workload on this machine, step by step.

The search is greedy and measured (`search`): measure the starting configuration; then, while
the budget lasts, take the most promising change from the current best, measure it, and keep it
only when it helps beyond the 95% confidence interval; stop when no applicable change is left.
- Candidates are the levers' proposals (`tbd.analysis.levers`) from the current best. Those the
  analysis of the current best recommends (`tbd.analysis.recommend`, from its trace) come
  first, ordered by expected gain per expected second of trial, log(1 + gain) / seconds (the
  seconds as for the budget, below): gains compound, so this rate buys the most speedup by a
  deadline; a +90% trial of 25 s goes before a +34% one of 120 s, and of equal costs the larger
  gain goes first. The rest follow in the levers' order, with no estimate.
- Each trial is a run in its own process through the same harness as `tbd run` (warm-up
  detection, steady window, stop at the target CI), stored in the store like any run.
- A change is kept when the 95% CI of the throughput ratio new / best lies above 1 and the ratio
  is at least 1 + `min_gain_pct`. The ratio is of median throughputs over each run's steady
  window (of window rates for runs fed from disk), its CI a percentile bootstrap over the steps
  (`tbd compare`'s statistic, `tbd.report.compare.throughput_ratio_ci`).
- No decision rests on a measurement with too few steady steps for a CI (status 'insufficient',
  slow steps in a short window): such a run is measured once more with a window long enough for
  the steps a CI needs (from its median step time, bounded by the budget left), and that longer
  window stays for the later trials while its configuration is the best. A baseline that stays
  insufficient ends the search; a trial that does is "not measurable in the budget", not kept.
- A change that was measured and not kept may help once other changes are kept (torch.compile
  on resnet50 on an H200 was -19% at bf16, batch 32, NCHW; compiled at bf16, batch 256,
  channels_last it ran at 6,795 images/s, against 4,310 uncompiled at batch 128): it is
  measured once more after a change was kept since, at most once, after the never-tried changes
  of its kind (estimated or not), its trail label saying "retried after <the changes kept since>".
  A change that failed to run, was not applicable or could not be measured is not retried. A
  lever still proposes new values from the new best (batch 128 -> 512 after 32 -> 128).
- A larger batch that ran out of memory bounds the batch lever from then on (it bisects towards
  that batch), as does a confirmed maximum batch in the store (`tbd memory --max-batch`).
- The budget is wall time from the start, the baseline included. No trial starts with less left
  than three quarters of its estimated time: the shortest trial so far of its kind (compiling or
  not; a first compiling one `COMPILE_COST_FACTOR` x the shortest), and where the top candidate
  does not fit, the next that does goes first; the trial in flight when the budget
  ends goes on while it reports, and is stopped after a silence of the budget left or
  `TRIAL_SILENCE_S` (`COMPILE_SILENCE_S` when it compiles), whichever is more: the budget may be
  overrun by the end of one trial, which is not thrown away.

Measuring is behind `Backend` (`measure(config, timeout_s)` -> stored record, `recommend(record)`
-> the analysis' recommendations), so the tests drive the search with a fake one.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from tbd import registry
from tbd.analysis.levers import Change, Context, Lever, apply_change, change_key, levers_for
from tbd.config import RunConfig
from tbd.errors import UsageError, closest
from tbd.results.record import RunRecord, has_result, throughput_of
from tbd.topology import world_size

MIN_GAIN_PCT = 1.0  # a kept change must also gain this much at the point estimate
# A trial's trace covers at most this many steps after its timed ones: enough for the kernel shares
# the recommendations use, and quick to write and read (a GPU run's default spans NVML's 3 s window).
TRACE_STEPS = 10
TRACE_MAX_S = 1.0  # ... and at most about this long (at least 2 steps): the profiler's export grows with the steps
# A trial is traced only when its throughput could make it the best: at least the best's x (1 + min_gain),
# less this slack (the child's median and the tuner's ratio come from the same steps; the slack is for rounding).
TRACE_SLACK = 0.98
# A measurement with too few steady steps for a CI ('insufficient') is measured again with a window
# of (the steps a CI needs) x (the median step time) x this margin (warm-up detection may take some).
WINDOW_MARGIN = 1.5
SHORTEST_TRIAL_SHARE = 0.75  # no trial starts with less budget left than this share of the shortest one so far
# A trial in flight is stopped when it has sent nothing for the budget left or this long, whichever
# is more: a run reports only after its build and warm-up (cuDNN autotuning, compilation), and a
# trial stopped there is lost whole (an H200's resnet50 bf16 trial started with 22 s left was
# stopped in its warm-up). Compiling runs get more: a compile reports nothing for a minute or two.
TRIAL_SILENCE_S = 60.0
COMPILE_SILENCE_S = 240.0
# Before the first compiling trial, one is assumed to take this many times the shortest trial so
# far (an H200's eager runs of the suite take 17-55 s, compiled ones 39-170 s: bench/frameworks_compare_gpu.py's plan).
COMPILE_COST_FACTOR = 3.0
METHOD = ("greedy search over run options: each trial a separate measured run (same harness as tbd run); a change is kept when the "
          "95% CI of the throughput ratio (new / current best: medians of the steady window, percentile bootstrap over per-step "
          "rates, as tbd compare) lies above 1 and the ratio is at least 1 + min_gain")


class Backend(Protocol):
    def measure(self, config: RunConfig, timeout_s: float | None) -> dict[str, Any]:
        """Run `config` (a child process), store its record and return it (failed runs too)."""

    def recommend(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """The analysis' recommendations for a measured run (empty where there is none)."""

    def calibrate(self, base: dict[str, Any], record: dict[str, Any], trial: Trial) -> None:
        """A recommended change was measured: keep its (expected, measured) gain for calibration."""


@dataclass
class Trial:
    """One step of the trail."""

    step: int
    lever: str
    change: str
    apply: dict[str, Any]
    expected_gain_pct: float | None
    expected_basis: str
    run_id: str | None = None
    throughput: float | None = None
    measured_gain_pct: float | None = None
    gain_ci95_pct: list[float] | None = None  # [low, high] of the measured gain
    kept: bool = False
    why: str = ""
    seconds: float = 0.0
    window_s: float | None = None  # steady seconds (--max-time) of the measurement that counts
    remeasured: str = ""  # why and how it was measured again (its first run had too few steady steps)
    retry_of: int | None = None  # the step that measured this change first and did not keep it (a retry after kept changes)


@dataclass
class TuneResult:
    start_config: dict[str, Any]
    best_config: dict[str, Any]
    unit: str
    budget_s: float
    keep_semantics: bool
    min_gain_pct: float
    levers: list[str]  # the levers the search could pull
    left_out: dict[str, str]  # lever -> why it was not tried (--keep-semantics, --skip, not applicable here)
    baseline_run_id: str | None = None
    best_run_id: str | None = None
    baseline_throughput: float | None = None
    best_throughput: float | None = None
    speedup: float | None = None
    speedup_ci95: list[float] | None = None
    trail: list[Trial] = field(default_factory=list)
    stopped: str = ""
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False
    command: str = ""
    toml: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- statistics ---------------------------------------------------------------------------


def gain(before: dict[str, Any], after: dict[str, Any]) -> tuple[float, float, float]:
    """Throughput ratio after / before with its 95% bootstrap CI (nan bounds: too few steps)."""
    from tbd.report.compare import throughput_ratio_ci

    return throughput_ratio_ci(before, after)


def verdict(ratio: float, low: float, high: float, min_gain_pct: float) -> tuple[bool, str]:
    """(kept, why) for a measured ratio and its CI."""
    span = f"gain {(ratio - 1) * 100:+.1f}%, 95% CI {(low - 1) * 100:+.1f}% .. {(high - 1) * 100:+.1f}%"
    if math.isnan(low) or math.isnan(high):
        return False, f"gain {(ratio - 1) * 100:+.1f}% without a CI (too few steady steps; raise --max-time)"
    if low > 1.0 and ratio >= 1.0 + min_gain_pct / 100.0:
        return True, f"kept: {span} lies above 0"
    if low > 1.0:
        return False, f"not kept: {span} is above 0 but below the {min_gain_pct:g}% worth keeping"
    if high < 1.0:
        return False, f"not kept: slower ({span})"
    return False, f"not kept: within noise ({span} includes 0)"


# ---- the search ---------------------------------------------------------------------------


def timed_steps(record: dict[str, Any]) -> int:
    return int((record.get("metrics") or {}).get("timed_steps") or 0)


def steps_for_ci(record: dict[str, Any]) -> int:
    """The steady steps the run's convergence verdict asked for (`tbd.harness.measure.convergence`)."""
    need = ((record.get("method") or {}).get("convergence") or {}).get("min_timed_steps")
    if need:
        return int(need)
    config = record.get("config") or {}
    return max(3, min(int(config.get("min_timed_steps") or 20), int(config.get("max_steps") or 300) - 1))


def step_time_s(record: dict[str, Any]) -> tuple[float, float] | None:
    """(median, fastest) seconds of the steps after step 0 (step 0 compiles)."""
    steps = [float(t) for t in ((record.get("samples") or {}).get("step_s") or [])]
    later = steps[1:] or steps
    if not later:
        return None
    return float(np.median(later)), min(later)


def longer_window(record: dict[str, Any], window_s: float, took_s: float, left_s: float) -> tuple[float | None, str]:
    """(the --max-time to measure again with, what the trail says) for an 'insufficient' run that
    took `took_s` with a `window_s` window, with `left_s` of the budget left; (None, why) when no
    window that fits the budget can hold the steps a CI needs."""
    need, got = steps_for_ci(record), timed_steps(record)
    first = f"the {window_s:g} s window gave {got} steady step(s), a CI needs {need}"
    times = step_time_s(record)
    if times is None:
        return None, f"{first}; no step time to size a longer window: not measurable in the budget"
    median, fastest = times
    overhead = max(0.0, took_s - float((record.get("metrics") or {}).get("steady_window_s") or 0.0))  # start-up, build, warm-up, trace
    fits = left_s - overhead
    wanted = max(window_s * 2, need * median * WINDOW_MARGIN)
    longer = min(math.ceil(wanted), fits)  # whole seconds read better in the trail
    if longer < need * fastest or longer <= window_s:
        return None, (f"{first}; at {median:.3g} s a step that needs a window of about {math.ceil(need * median * WINDOW_MARGIN)} s, "
                      f"and the {left_s:.0f} s left hold {max(0.0, fits):.0f} s after the run's {overhead:.0f} s of start-up, build "
                      f"and warm-up: not measurable in the budget")
    return longer, f"re-measured with a {longer:.0f} s window ({first}, at {median:.3g} s a step)"


def budget_hint(record: dict[str, Any]) -> str:
    """What budget would measure this run's configuration (from its step time)."""
    times = step_time_s(record)
    if times is None:
        return "Raise --budget and --max-time."
    window = steps_for_ci(record) * times[0] * WINDOW_MARGIN
    return f"Its steps take {times[0]:.3g} s: try --max-time {math.ceil(window)} with a --budget of several times that."


def check_skip(skip: list[str], config: RunConfig) -> None:
    names = [lever.name for lever in levers_for(config)]
    for name in skip:
        if name not in names:
            raise UsageError(f"--skip {name}: no such lever{closest(name, names)}; levers here: {', '.join(names)}")


def search(start: RunConfig, backend: Backend, *, budget_s: float, keep_semantics: bool = False, skip: tuple[str, ...] = (),
           min_gain_pct: float = MIN_GAIN_PCT, batch_max: int | None = None, clock: Callable[[], float] = time.monotonic,
           on_trial: Callable[[Trial], None] | None = None, on_start: Callable[[Trial], None] | None = None) -> TuneResult:
    """Tune `start` (validated) within `budget_s` seconds of wall time; see the module docstring."""
    began = clock()
    levers = levers_for(start)
    left_out: dict[str, str] = {}
    active: list[Lever] = []
    for lever in levers:
        if lever.name in skip:
            left_out[lever.name] = "--skip"
        elif keep_semantics and lever.changes_semantics:
            left_out[lever.name] = "--keep-semantics (it changes the training math)"
        else:
            active.append(lever)
    spec = registry.get_spec(start.workload)
    result = TuneResult(start_config=start.to_dict(), best_config=start.to_dict(), unit=spec.unit, budget_s=budget_s,
                        keep_semantics=keep_semantics, min_gain_pct=min_gain_pct, levers=[lv.name for lv in active], left_out=left_out)

    def remaining() -> float:
        return budget_s - (clock() - began)

    def silence_limit(config: RunConfig) -> float:
        return max(remaining(), COMPILE_SILENCE_S if config.compile else TRIAL_SILENCE_S)

    took: dict[bool, list[float]] = {False: [], True: []}  # seconds of the trials so far, by whether they compiled

    def estimate_s(change: Change) -> float:
        """About how long a trial of `change` from the current best takes (see the module docstring)."""
        try:
            compiles = bool(apply_change(best, change.apply).compile)
        except UsageError:  # found out (and said) when it is tried
            compiles = best.compile
        if took[compiles]:
            return min(took[compiles])
        shortest = min(took[False] + took[True])
        return shortest * COMPILE_COST_FACTOR if compiles else shortest

    baseline_trial = Trial(step=0, lever="start", change="the starting configuration", apply={}, expected_gain_pct=None,
                           expected_basis="the baseline every gain is measured against")
    if on_start:
        on_start(baseline_trial)
    window = start.max_time_s  # steady seconds per measurement; longer once the best needed more (slow steps)

    def measure(config: RunConfig, trial: Trial, trace_above: float | None = None) -> dict[str, Any]:
        """`config` measured with the current window, and once more with a longer one where the
        first had too few steady steps for a CI (see `longer_window`); traced only where its
        throughput reaches `trace_above` (units/s; None: always)."""
        t0 = clock()
        config = dataclasses.replace(config, profile_min_rate=trace_above)
        record = backend.measure(dataclasses.replace(config, max_time_s=window), silence_limit(config))
        trial.window_s = window
        if record.get("status") == "insufficient":
            longer, why = longer_window(record, window, clock() - t0, remaining())
            if longer is None:
                trial.remeasured = why
            else:
                trial.remeasured = why + f" (run {record.get('id')})"
                record = backend.measure(dataclasses.replace(config, max_time_s=longer), silence_limit(config))
                trial.window_s = longer
                if record.get("status") == "insufficient":
                    trial.remeasured += f"; still {timed_steps(record)} steady step(s): not measurable in the budget"
        trial.seconds, trial.run_id = clock() - t0, record.get("id")
        took[bool(config.compile)].append(trial.seconds)
        return record

    base = measure(start, baseline_trial)
    result.trail.append(baseline_trial)
    if not has_result(base):
        message = (base.get("error") or {}).get("message", "failed")
        baseline_trial.why = f"the starting configuration did not run: {message}"
        result.stopped = baseline_trial.why + "; fix it (a smaller --batch-size, another --precision) and tune again"
        result.elapsed_s = clock() - began
        if on_trial:
            on_trial(baseline_trial)
        return result
    baseline_trial.throughput = throughput_of(base)
    baseline_trial.kept, baseline_trial.why = True, "baseline" + (f"; {baseline_trial.remeasured}" if baseline_trial.remeasured else "")
    window = baseline_trial.window_s or window
    if on_trial:
        on_trial(baseline_trial)
    result.baseline_run_id = result.best_run_id = base["id"]
    result.baseline_throughput = result.best_throughput = baseline_trial.throughput
    best_record, best = base, start
    measurable = base.get("status") != "insufficient"
    if not measurable:  # nothing can be decided against a baseline without a CI: no trial
        result.stopped = (f"the starting configuration could not be measured to the steady steps a CI needs within the budget "
                          f"({baseline_trial.remeasured or 'too few steady steps'}); nothing was compared. {budget_hint(base)}")
    recommendations = backend.recommend(base) if measurable else []
    tried: set[str] = set()  # the changes measured or found not applicable (keys)
    rejected: dict[str, int] = {}  # change key -> the step that measured it and did not keep it (a measured gain)
    retried: set[str] = set()  # at most one retry per change

    def retries() -> dict[str, tuple[int, str]]:
        """Rejected changes that may be measured once more, as the best changed since: key -> (their
        first step, "retried after <the changes kept since>")."""
        out = {}
        for key, first in rejected.items():
            since = [t.change for t in result.trail if t.kept and t.step > first]
            if since and key not in retried:
                out[key] = (first, f"retried after {', '.join(since)}")
        return out

    ctx = Context(config=best, batch_max=batch_max)
    step = 0
    try:
        while measurable:
            if remaining() <= 0:
                result.stopped = f"the budget of {budget_s:g} s ended"
                break
            ctx.config = best
            again = retries()
            candidates = _candidates(active, ctx, recommendations, tried, result.left_out,
                                     retry={k: why for k, (_, why) in again.items()}, cost=estimate_s)
            if not candidates:
                result.stopped = "nothing applicable is left to try: every lever's changes from the best configuration were measured"
                break
            fitting = [c for c in candidates if remaining() >= SHORTEST_TRIAL_SHARE * estimate_s(c[0])]
            if not fitting:
                result.stopped = (f"the budget of {budget_s:g} s ends before another trial could finish "
                                  f"({remaining():.0f} s left, the next would take about {estimate_s(candidates[0][0]):.0f} s)")
                break
            for skipped, _, _ in candidates[:candidates.index(fitting[0])]:
                result.left_out.setdefault(skipped.lever, f"its trial (about {estimate_s(skipped):.0f} s) did not fit the {remaining():.0f} s left")
            change, expected, basis = fitting[0]
            tried.add(change.key)
            step += 1
            trial = Trial(step=step, lever=change.lever, change=change.label, apply=change.apply, expected_gain_pct=expected, expected_basis=basis)
            if change.key in again:
                retried.add(change.key)
                trial.retry_of = again[change.key][0]
            try:
                config = apply_change(best, change.apply).validated()
            except UsageError as exc:
                trial.why = f"not applicable: {exc}"
                result.trail.append(trial)
                if on_trial:
                    on_trial(trial)
                continue
            if on_start:
                on_start(trial)
            # only a trial that may become the best needs a trace (the next recommendations come from the best's)
            record = measure(config, trial, (result.best_throughput or 0.0) * (1 + min_gain_pct / 100.0) * TRACE_SLACK or None)
            result.trail.append(trial)
            if record.get("status") == "insufficient":  # too few steady steps even after a longer window: no decision
                trial.throughput = throughput_of(record)
                trial.why = f"not kept: not measurable in the budget ({trial.remeasured})"
            elif not has_result(record):
                error = record.get("error") or {}
                if remaining() <= 0 and error.get("kind") == "timeout":
                    trial.why = f"not kept: the budget ended during the trial, which then sent nothing for {silence_limit(config):.0f} s"
                else:
                    trial.why = f"not kept: the run failed ({error.get('kind', 'error')}: {str(error.get('message', ''))[:200]})"
                if error.get("kind") == "oom" and "batch_size" in change.apply:
                    ctx.batch_fails = min(ctx.batch_fails or change.apply["batch_size"], change.apply["batch_size"])
            else:
                trial.throughput = throughput_of(record)
                ratio, low, high = gain(best_record, record)
                trial.measured_gain_pct = (ratio - 1) * 100.0
                trial.gain_ci95_pct = [(low - 1) * 100.0, (high - 1) * 100.0] if not math.isnan(low) else None
                trial.kept, trial.why = verdict(ratio, low, high, min_gain_pct)
                if trial.remeasured:
                    trial.why += f"; {trial.remeasured}"
                if trial.expected_gain_pct is not None:
                    backend.calibrate(best_record, record, trial)
                if not trial.kept:  # a verdict on a measured gain: worth one more look once the best has changed
                    rejected.setdefault(change.key, trial.step)
            if on_trial:
                on_trial(trial)
            if trial.kept:  # the window it needed stays while it is the best
                best_record, best, window = record, config, trial.window_s or window
                result.best_run_id, result.best_throughput, result.best_config = record["id"], trial.throughput, config.to_dict()
                recommendations = backend.recommend(record)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the answer so far is still an answer (the command stores it)
        result.stopped, result.interrupted = "interrupted; the trials so far are stored", True
    result.elapsed_s = clock() - began
    for name in {t.lever for t in result.trail}:  # a lever that was tried is not "left out", whatever it says now
        result.left_out.pop(name, None)
    if best_record is not base:
        ratio, low, high = gain(base, best_record)
        result.speedup, result.speedup_ci95 = ratio, None if math.isnan(low) else [low, high]
    else:
        result.speedup = 1.0
    result.command = run_command(best)
    result.toml = toml_snippet(best, result)
    return result


def _candidates(levers: list[Lever], ctx: Context, recommendations: list[dict[str, Any]], tried: set[str],
                left_out: dict[str, str], retry: dict[str, str] | None = None,
                cost: Callable[[Change], float] | None = None) -> list[tuple[Change, float | None, str]]:
    """(change, expected gain %, basis) not tried yet, best first: the recommended ones by their
    expected gain per expected second of trial (`cost`: log(1 + gain) / seconds; by gain alone
    without one), then the others in lever order. `retry` (key -> why) names tried changes that may
    be measured once more: each after the never-tried ones of its kind (estimated or not)."""
    retry = retry or {}
    recommended: dict[str, dict[str, Any]] = {}
    ctx.suggested = {}
    for rec in recommendations:
        apply = rec.get("apply")
        owner = next((lv for lv in levers if apply and lv.owns(apply)), None)
        if owner is not None:
            ctx.suggested.setdefault(owner.name, []).append(apply)
            recommended.setdefault(change_key(apply), rec)
    out = []
    for order, lever in enumerate(levers):
        proposal = lever.propose(ctx)
        if isinstance(proposal, str):
            left_out.setdefault(lever.name, proposal)
            continue
        for change in proposal:
            again = change.key in tried
            if again and change.key not in retry:
                continue
            if again:
                change = dataclasses.replace(change, label=f"{change.label} ({retry[change.key]})")
            rec = recommended.get(change.key)
            if rec is not None:
                low, high = rec.get("expected_gain_range_pct") or (rec["expected_gain_pct"], rec["expected_gain_pct"])
                basis = f"{rec['action']}: {rec.get('basis', '')} (range +{low:.0f}..+{high:.0f}%)"
                out.append((int(again), -_rank_score(rec["expected_gain_pct"], change, cost), order, change, rec["expected_gain_pct"], basis))
            else:
                out.append((2 + int(again), 0.0, order, change, None, "no estimate: not among the analysis' recommendations for the current best"))
    out.sort(key=lambda c: c[:3])
    return [(c[3], c[4], c[5]) for c in out]


def _rank_score(expected_gain_pct: float, change: Change, cost: Callable[[Change], float] | None) -> float:
    """Expected gain per expected second of trial: log(1 + gain) / seconds. The log makes gains
    that compound (x1.9 then x1.34) add, so the rate orders trials for the most speedup by a
    deadline; with equal seconds the larger gain wins. A gain of 0 or less is not divided (it
    would rank a dearer trial higher) and comes last."""
    value = math.log1p(max(expected_gain_pct, -99.0) / 100.0)
    if cost is None or value <= 0:
        return value
    return value / max(cost(change), 1e-3)


# ---- the answer as a command line and a sweep file -----------------------------------------

DEFAULTS = RunConfig(workload="-")


def run_command(config: RunConfig) -> str:
    """The `tbd run` command line that measures `config`."""
    words = ["tbd", "run", config.workload, "--framework", config.framework, "--flavor", config.flavor, "--device", config.device,
             "--batch-size", str(config.batch_size), "--precision", config.precision]
    if config.channels_last:
        words.append("--channels-last")
    if config.compile:
        words.append("--compile")
    for key, value in sorted(config.options.items()):
        words += ["--option", f"{key}={value}"]
    hp = dict(config.hparams)
    if "seq_len" in hp:
        words += ["--seq-len", str(hp.pop("seq_len"))]
    if "hf_config" in hp:
        words += ["--hf-config", ",".join(f"{k}={v}" for k, v in hp.pop("hf_config").items())]
    for name, flag in (("nproc_per_node", "--nproc-per-node"), ("nnodes", "--nnodes"), ("parallel", "--parallel"),
                       ("ddp_bucket_mb", "--ddp-bucket-mb"), ("seed", "--seed"), ("max_time_s", "--max-time"), ("target_ci_pct", "--target-ci")):
        value = getattr(config, name)
        if value != getattr(DEFAULTS, name):
            words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    line = shlex.join(words)
    if hp:  # hyperparameters without a flag: say so rather than drop them silently
        line += f"  # and hyperparameters {hp} (no flag; use the Python API)"
    return line


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_snippet(config: RunConfig, result: TuneResult | None = None) -> str:
    """A sweep file (`tbd sweep --file`) of the one configuration."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{config.workload}-tuned").strip("-")
    lines = []
    if result is not None and result.speedup:
        lines.append(f"# tbd tune: {result.speedup:.2f}x the starting configuration ({result.best_run_id})")
    lines += [f"name = {_toml_value(name)}", f"workloads = [{_toml_value(config.workload)}]", f"frameworks = [{_toml_value(config.framework)}]",
              f"flavors = [{_toml_value(config.flavor)}]", f"devices = [{_toml_value(config.device)}]",
              f"precisions = [{_toml_value(config.precision)}]", f"batch_sizes = [{config.batch_size}]",
              f"compile = {_toml_value(config.compile)}", f"channels_last = {_toml_value(config.channels_last)}"]
    if config.options:
        lines += ["", "[options]"] + [f"{k} = {_toml_value(v)}" for k, v in sorted(config.options.items())]
    lines += ["", "[budget]", f"max_time = {config.max_time_s:g}", f"target_ci = {config.target_ci_pct:g}"]
    if world_size(config) > 1 or config.hparams:
        lines.insert(0, "# a sweep file has no keys for processes, DDP buckets or hyperparameters: run the command line for those")
    return "\n".join(lines) + "\n"


# ---- the record ---------------------------------------------------------------------------


def tune_record(result: TuneResult, best_record: dict[str, Any] | None, method: dict[str, Any]) -> RunRecord:
    """The store's record of a tuning: the best configuration with its measured figures, the
    whole trail under `tune`, and how it was found under `method.tune`."""
    config = RunConfig.from_dict(result.best_config)
    record = RunRecord.for_run(config, registry.get_spec(config.workload), kind="tune")
    record.tune = result.to_dict()
    record.method = {"tune": {"search": METHOD, **method}}
    if best_record is None:
        record.fail("error", result.stopped)
        return record
    record.environment = dict(best_record.get("environment") or {})
    record.workload = dict(best_record.get("workload") or record.workload)
    record.metrics = {**(best_record.get("metrics") or {}), "speedup_x": result.speedup,
                      "speedup_ci95_low_x": (result.speedup_ci95 or [None, None])[0],
                      "speedup_ci95_high_x": (result.speedup_ci95 or [None, None])[1]}
    record.memory = dict(best_record.get("memory") or {})
    record.method["convergence"] = (best_record.get("method") or {}).get("convergence")
    record.method["best_run"] = best_record.get("method")
    return record.succeed()


def parse_budget(text: str) -> float:
    """'10m', '90s', '1h', '1h30m' or plain seconds -> seconds."""
    t = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        seconds = float(t)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*(h|m|s)", t)
        if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*(h|m|s)", "", t).strip():
            raise UsageError(f"--budget takes a time like 10m, 90s or 1h30m, got '{text}'")
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"--budget must be a positive time, got '{text}'; e.g. --budget 10m")
    return seconds


# ---- the real backend ---------------------------------------------------------------------


class StoreBackend:
    """Trials as runs in child processes through the harness, stored in `store`; with `profile`
    each trial also traces about a second of steady steps after its timed ones (outside the
    measurement; none where its throughput is below `config.profile_min_rate`, set by the search),
    and the analysis of a kept trial's trace gives the recommendations for the next step."""

    def __init__(self, store, profile: bool = True, progress: Callable[[dict], None] | None = None):
        self.store, self.profile, self.progress = store, profile, progress
        self.notes: list[str] = []
        self.last_store_s = 0.0  # seconds the last trial spent being stored after its process returned

    def measure(self, config: RunConfig, timeout_s: float | None) -> dict[str, Any]:
        from tbd.analysis.capture import adopt_trace
        from tbd.harness.launcher import launch, run_isolated

        traceable = registry.framework(config.framework).capabilities.trace and world_size(config) == 1
        config = dataclasses.replace(config, profile=self.profile and traceable, profile_steps=TRACE_STEPS, profile_max_s=TRACE_MAX_S,
                                     ncu=False, isolate=True)
        if world_size(config) == 1:
            record = run_isolated(config, self.progress, timeout_s)
        else:
            record = launch(config, self.progress)
        returned = time.monotonic()
        if config.profile:  # into this store; read by `recommend` if the trial is kept (or later by tbd analyze)
            adopt_trace(record, self.store)
        self.store.save(record)
        self.last_store_s = time.monotonic() - returned
        return record.to_dict() if isinstance(record, RunRecord) else record

    def recommend(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        from tbd.analysis.analyze import analyze

        try:
            analysis = analyze(record, self.store.home)
        except Exception as exc:  # no analysis is no estimate, not the end of the search
            self.notes.append(f"run {record['id']}: no analysis ({type(exc).__name__}: {str(exc)[:160]}); levers tried without estimates")
            return []
        record.setdefault("analysis", {})["report"] = analysis
        self.store.save(record)
        return analysis["recommendations"]

    def calibrate(self, base: dict[str, Any], record: dict[str, Any], trial: Trial) -> None:
        """Into the store's calibration log, as `tbd analyze --verify` does (`tbd analyze --calibration`)."""
        from tbd.analysis.verify import log_calibration

        report = (base.get("analysis") or {}).get("report") or {}
        log_calibration(self.store, base, {"action": trial.change, "expected_gain_pct": trial.expected_gain_pct,
                                           "measured_gain_pct": trial.measured_gain_pct, "run_id": record["id"], "source": "tbd tune"},
                        report.get("facts"))


def confirmed_max_batch(store, config: RunConfig) -> int | None:
    """The newest confirmed largest batch (`tbd memory --max-batch` on this device) of the same
    workload, framework, flavor and precision, if the store has one."""
    try:
        records = store.list(workload=config.workload, framework=config.framework, flavor=config.flavor, device=config.device)
    except Exception:
        return None
    for r in records:  # newest first
        if r.get("kind") != "memory" or r["config"].get("precision") != config.precision:
            continue
        confirmed = (((r.get("memory_profile") or {}).get("batch_model") or {}).get("confirmed") or {})
        if confirmed.get("largest_fitting"):
            return int(confirmed["largest_fitting"])
    return None
