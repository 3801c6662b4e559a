"""Generated from the registry: every workload x framework gets a smoke test of its tiny flavor
through the whole harness, and a check that training on one fixed batch lowers the loss."""

from __future__ import annotations

import importlib.util
import math
import statistics

import pytest

from tbd import registry
from tbd.analysis.analyze import analyze
from tbd.config import RunConfig
from tbd.errors import UsageError
from tbd.harness.runner import execute, losses_on_fixed_batch
from tbd.results.record import MEASURED
from tests.conftest import FRAMEWORK_MARKERS


def _runnable_here(workload: str, framework: str) -> bool:
    needs = registry.get_spec(workload).requires  # extra modules (an RL environment, ...)
    return registry.is_installed(framework) and all(importlib.util.find_spec(m) for m in needs)


def _marks(workload: str, framework: str) -> list:
    # A framework's own pytest marker where it has one (`tf`: its tests run in the TF CI leg,
    # `make test-tf`, which fails instead of skipping when TensorFlow is missing; tests/conftest.py).
    own = [getattr(pytest.mark, framework)] if framework in FRAMEWORK_MARKERS else []
    return own + [pytest.mark.skipif(not _runnable_here(workload, framework), reason=f"{framework} or what {workload} needs is not installed")]


PAIRS = [
    pytest.param(w, f, id=f"{w}-{f}", marks=_marks(w, f))
    for w in registry.workload_names()
    for f in registry.implementations(w)
]


@pytest.mark.parametrize("workload,framework", PAIRS)
def test_tiny_flavor_runs_through_the_harness_and_its_trace_is_analyzed(workload, framework, tbd_home):
    # --profile as a user runs it (two traced steps after the timed ones), then `tbd analyze`'s own
    # function; a framework without a trace capture refuses --profile before the run
    traced = registry.framework(framework).capabilities.trace
    config = RunConfig(workload=workload, framework=framework, flavor="tiny", max_steps=6, max_time_s=60, isolate=False,
                       profile=True, profile_steps=2)
    if not traced:
        with pytest.raises(UsageError, match="--profile has no trace capture for .* drop --profile"):
            config.validated()
        config.profile = False
    record = execute(config.validated())
    assert record["status"] in MEASURED, record["error"]  # 6 steps: measured, converged or not
    m = record["metrics"]
    unit = registry.get_spec(workload).unit
    assert m[f"{unit}_per_s"] > 0 and math.isfinite(m[f"{unit}_per_s"])
    assert m["total_steps"] == len(record["samples"]["step_s"]) <= 6
    assert m["model_flops_per_sample"] > 0
    assert record["method"]["warmup"]["excluded_steps"][0] == 0
    # CPU utilization over the steady window, or why that window is too short to read it
    assert (m["cpu_util_pct"] or 0) > 0 or "window too short" in (m.get("cpu_util_note") or ""), m
    if not traced:
        return
    assert record["analysis"]["trace"], record["analysis"]
    report = analyze(record, tbd_home)
    assert report["trace"] and report["host"], report["notes"]  # the trace was read and has the host's work
    assert report["diagnosis"] and report["facts"]["step_ms"] > 0


# Workloads whose learning is not "steps on one fixed batch lower the loss": reinforcement
# learning draws its data from the policy itself (tests/workloads/test_a3c.py checks it).
OWN_LEARNING_TEST = {"a3c": "tests/workloads/test_a3c.py"}
# Steps of the fixed-batch check where the default 30 are slower than needed.
LOSS_CHECK_STEPS = {"deepspeech2": 12, "faster_rcnn": 20}


@pytest.mark.parametrize("workload,framework", PAIRS)
def test_training_on_a_fixed_batch_lowers_the_loss(workload, framework):
    if workload in OWN_LEARNING_TEST:
        pytest.skip(f"{workload} checks its learning in {OWN_LEARNING_TEST[workload]}")
    steps = LOSS_CHECK_STEPS.get(workload, 30)
    config = RunConfig(workload=workload, framework=framework, flavor="tiny", isolate=False).validated()
    losses = losses_on_fixed_batch(config, steps)
    assert all(math.isfinite(x) for x in losses)
    # The median of the last third of the steps, not their mean: with BatchNorm over a few images,
    # a model that has memorized its batch can still spike now and then.
    tail = losses[-max(3, len(losses) // 3) :]
    first, last = losses[0], statistics.median(tail)
    assert last < 0.7 * first, f"loss did not fall enough: {losses[0]:.4g} -> {tail}"


@pytest.mark.parametrize("workload,framework", PAIRS)
def test_batch_one_trains_or_is_refused_up_front(workload, framework):
    """Every flavor either trains at batch 1 (tiny flavors are run here; larger ones would take
    minutes on a CPU) or declares a smallest batch, which validation enforces in one line."""
    spec = registry.get_spec(workload)
    for flavor in spec.flavors.values():
        config = RunConfig(workload=workload, framework=framework, flavor=flavor.name, batch_size=1, isolate=False)
        if flavor.min_batch > 1:
            with pytest.raises(UsageError, match=f"trains at batch {flavor.min_batch} or more"):
                config.validated()
        elif flavor.name == "tiny":
            losses = losses_on_fixed_batch(config.validated(), 2)
            assert all(math.isfinite(x) for x in losses)


@pytest.mark.parametrize("workload,framework", PAIRS)
def test_memory_breakdown_of_the_tiny_flavor(workload, framework):
    """`tbd memory W --framework F --flavor tiny`'s profile: every category counted, the peak's
    categories adding up to it, and the weights and optimizer state non-empty."""
    from tbd.memory import profiler

    config = RunConfig(workload=workload, framework=framework, flavor="tiny", isolate=False).validated()
    if not registry.framework(framework).capabilities.memory_profile:
        with pytest.raises(UsageError, match="tbd memory has no profiler for .* use another --framework"):
            profiler.profile(config)
        return
    prof = profiler.profile(config)
    assert prof["status"] == "ok", prof.get("error")
    cats = prof["peak"]["categories"]
    assert all(v >= 0 for v in cats.values()), cats
    assert cats["weights"] > 0 and sum(cats.values()) == prof["peak"]["device_bytes"], (cats, prof["peak"])
