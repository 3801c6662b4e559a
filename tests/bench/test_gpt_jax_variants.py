"""bench/gpt_jax_variants_gpu.py, tbd's JAX gpt timed per loss variant and XLA flag set on a GPU:
its points (variants, chunk sizes, flag sets, batch order; unknown names refused) and one child
point timed in this process on the tiny flavor on the CPU."""

from __future__ import annotations

import argparse
import json
import math

import pytest


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("gpt_jax_variants_gpu")


def _args(**kw) -> argparse.Namespace:
    base = dict(variants="all", batches="16,64", xla=[], loss_chunk=0, quick=True, warmup=1, windows=2, window_s=0.05, loss="fp32_logits")
    return argparse.Namespace(**{**base, **kw})


def test_points_run_every_variant_batch_by_batch(bench):
    points = bench._points(_args())
    names = [*bench.LOSS_VARIANTS, *bench.XLA_VARIANTS]
    assert [(p["batch"], p["variant"]) for p in points] == [(b, n) for b in (16, 64) for n in names]
    lhs = next(p for p in points if p["variant"] == "lhs")
    assert lhs["loss"] == bench.BASELINE and "latency_hiding" in lhs["xla_flags"]


def test_points_take_chunk_sizes_and_flag_sets(bench):
    points = bench._points(_args(variants="fused_linear@8192,chunked,fp32_logits,nocb", xla=["nocb=--xla_gpu_enable_command_buffer="],
                                 batches="16", loss_chunk=2048))
    assert [(p["loss"], p["loss_chunk"], p["xla_flags"]) for p in points] == [
        ("fused_linear", 8192, None), ("chunked", 2048, None), ("fp32_logits", 0, None),
        ("fp32_logits", 0, "--xla_gpu_enable_command_buffer=")]
    for bad in ("nope", "fused@64", "chunked@0"):
        with pytest.raises(ValueError, match="valid: fp32_logits"):
            bench._points(_args(variants=bad))


def test_a_child_point_times_tbds_gpt_on_the_cpu(bench, capsys):
    pytest.importorskip("jax")
    bench.child(_args(batches="2", batch=2, loss="fused_linear", loss_chunk=32))
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["options"] == {"loss": "fused_linear", "loss_chunk": "32"} and result["batch"] == 2
    assert result["step_ms"] > 0 and result["tokens_per_s"] > 0 and result["tokens_per_step"] == 2 * 64
    assert result["mfu_pct"] is None and "unknown peak" in result["peak_source"]  # no peak for a CPU: no MFU
    assert math.isfinite(result["first_loss"]) and 5.0 < result["first_loss"] < 7.5  # ~ln(512) at initialization
    assert len(result["window_step_ms"]) == 2
