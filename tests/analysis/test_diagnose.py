"""Diagnosis rules and recommendations on synthetic facts: every class is reachable, and the
recommendations rank the way the time model says."""

import pytest

from tbd.analysis.diagnose import diagnose
from tbd.analysis.recommend import recommend
from tbd.analysis.analyze import framework_levers

TORCH = framework_levers("torch")  # what the PyTorch plugin offers: compile, channels_last, fused optimizers

GIB = 2**30


def gpu(**over):
    """A profiled GPU run, busy 95% of the window on matmul-heavy kernels, with memory to spare."""
    f = {
        **TORCH, "device": "cuda", "framework": "torch", "precision": "bf16", "compile": False, "channels_last": True,
        "batch_size": 64, "convolutional": True, "has_trace": True,
        "gpu_util_trace_pct": 95.0, "gpu_util_nvml_pct": 97.0, "mfu_pct": 40.0,
        "class_share": {"matmul/conv": 70.0, "elementwise": 15.0, "normalization": 10.0, "optimizer": 5.0},
        "tensor_core_share_pct": 65.0, "layout_transpose_share_pct": 0.0, "exposed_comm_pct": 0.0,
        "gpu_idle_not_waiting_pct": 3.0, "host_busy_pct": 40.0, "input_wait_pct": 0.0,
        "peak_reserved_bytes": 70 * GIB, "device_total_bytes": 80 * GIB, "alloc_retries": 0, "ooms": 0,
        "optimizer_kind": "fused", "cpu_cores_busy": 1.0, "cores": 16,
    }
    f.update(over)
    return f


@pytest.mark.parametrize("facts,expected", [
    (gpu(), "compute-bound"),
    (gpu(class_share={"matmul/conv": 20.0, "elementwise": 50.0, "normalization": 20.0, "reduction": 10.0}), "memory-bandwidth-bound"),
    (gpu(ncu_tensor_pipe_pct=10.0, ncu_fma_pipe_pct=5.0, ncu_dram_pct=75.0), "memory-bandwidth-bound"),
    (gpu(gpu_util_trace_pct=45.0, gpu_idle_not_waiting_pct=50.0), "host-bound"),
    (gpu(input_wait_pct=30.0), "input-bound"),
    (gpu(exposed_comm_pct=25.0, class_share={"matmul/conv": 60.0, "communication": 40.0}), "communication-bound"),
    (gpu(alloc_retries=12), "memory-capacity-limited"),
    ({"device": "cpu", "framework": "torch", "cpu_cores_busy": 1.9, "cores": 2, "cpu_util_pct": 95.0, "has_trace": True}, "host-bound"),
    # without a trace: NVML says idle while a core is saturated
    ({"device": "cuda", "framework": "torch", "gpu_util_nvml_pct": 30.0, "cpu_cores_busy": 1.0, "has_trace": False}, "host-bound"),
    ({"device": "cuda", "framework": "torch", "has_trace": False}, "undetermined"),
])
def test_each_class_is_reachable(facts, expected):
    d = diagnose(facts)
    assert d["class"] == expected, d
    assert d["evidence"]


def test_secondary_classes_and_notes():
    d = diagnose(gpu(gpu_idle_not_waiting_pct=15.0, peak_reserved_bytes=78 * GIB, data_synthetic=True, period_steps=10, stall_share_pct=4.0))
    assert d["class"] == "compute-bound"
    assert {s["class"] for s in d["secondary"]} == {"host-bound", "memory-capacity-limited"}
    assert any("synthetic" in n for n in d["notes"]) and any("every 10 steps" in n for n in d["notes"])
    assert "run again with --profile" in diagnose({"device": "cuda", "has_trace": False})["evidence"]
    assert diagnose({"device": "cpu", "cores": 2})["label"] == "host-bound (CPU training)"


def test_fp32_compute_bound_recommends_bf16_first():
    recs = recommend(gpu(precision="fp32", channels_last=False, convolutional=False, channels_last_lever=False, peak_reserved_bytes=20 * GIB))
    assert recs[0]["action"] == "precision bf16" and recs[0]["apply"] == {"precision": "bf16"}
    actions = [r["action"] for r in recs]
    assert "precision tf32" in actions
    assert "larger batch (64 -> 192)" in actions  # 0.85 x 80 GiB / 20 GiB -> 3x
    assert [r["rank"] for r in recs] == list(range(1, len(recs) + 1))
    assert all(recs[i]["expected_gain_pct"] >= recs[i + 1]["expected_gain_pct"] for i in range(len(recs) - 1))
    # bf16 on a 95%-busy GPU with 70% matmul time: T' = 0.05 + 0.95 * (0.3/1.5 + 0.7/10) = 0.3065 -> +226%,
    # but never below the host's 40% of the step (no kernel counts to say it is less) -> +150%
    assert recs[0]["expected_gain_pct"] == 150.0
    no_host = recommend(gpu(precision="fp32", channels_last=False, convolutional=False, peak_reserved_bytes=20 * GIB, host_busy_pct=10.0))
    assert 215 < no_host[0]["expected_gain_pct"] < 235
    # a convolutional model's kernels gain 2.5x, not 10x; in NHWC: T' = 0.05 + 0.95 * (0.3/1.5 + 0.7/2.5) = 0.506 -> +97.6%
    nhwc = recommend(gpu(precision="fp32", channels_last=True, peak_reserved_bytes=20 * GIB))
    assert next(r for r in nhwc if r["action"] == "precision bf16")["expected_gain_pct"] == 97.6
    # in NCHW its batch norm (10%) moves to generic kernels, x2.4 / 1.5 = 1.6 slower:
    # T' = 0.05 + 0.95 * (0.2/1.5 + 0.1 * 1.6 + 0.7/2.5) = 0.595 -> +68.2%
    conv = recommend(gpu(precision="fp32", channels_last=False, peak_reserved_bytes=20 * GIB))
    bf16 = next(r for r in conv if r["action"] == "precision bf16")
    assert bf16["expected_gain_pct"] == 68.2 and "NCHW batch norm 10% x1.6" in bf16["basis"]
    assert "channels_last memory format" in [r["action"] for r in conv]


def test_a_host_busy_only_because_launches_block_does_not_cap_the_gain():
    # gpt 124M fp32 on an H200 (tbd tune, 2026-11-29): the GPU busy 99.5% of the step, the host
    # "busy" 81% of it (blocked in launches: the queue was full), 48 kernels per 30 ms step.
    # Measured: bf16 +607%. The old floor (host busy) capped the estimate at +23%.
    facts = gpu(precision="fp32", channels_last=False, convolutional=False, gpu_util_trace_pct=99.5, host_busy_pct=81.0,
                class_share={"matmul/conv": 80.9, "attention": 11.9, "reduction": 3.2, "elementwise": 2.3, "normalization": 1.4, "optimizer": 0.3},
                kernels_per_step=482, step_ms=298.9)
    bf16 = next(r for r in recommend(facts) if r["action"] == "precision bf16")
    assert 500 < bf16["expected_gain_pct"] < 650
    # ... and wgan fp32's 10,004 kernels in a 607 ms step (GPU 95.7% busy, host "busy" 87%) take
    # 25 us each of host time at most: floor 0.41, below the convolutions' own T' = 0.52 -> +93%
    # (measured +146%; the host-busy floor gave +19%); its normalization (3.2%, batch and group
    # norm in NCHW) counts as PyTorch's generic bf16 kernels, 1.6x slower than in fp32
    wgan = gpu(precision="fp32", channels_last=False, gpu_util_trace_pct=95.7, host_busy_pct=87.1, gpu_idle_not_waiting_pct=4.2,
               class_share={"matmul/conv": 76.1, "elementwise": 17.6, "normalization": 3.2, "reduction": 1.7, "other": 1.1, "optimizer": 0.2},
               kernels_per_step=10004, step_ms=607.2)
    bf16 = next(r for r in recommend(wgan) if r["action"] == "precision bf16")
    assert 88 < bf16["expected_gain_pct"] < 97


def test_a_host_bound_step_stays_host_bound_and_autocast_adds_to_it():
    # faster_rcnn fp32 on an H200: GPU idle (not waiting) 29% of the step, host busy 69%: the host
    # sets the pace, and autocast's casts add launches: floor 0.69 x 1.2 -> +20% (measured +21%)
    frcnn = gpu(precision="fp32", channels_last=False, gpu_util_trace_pct=70.4, host_busy_pct=69.4, gpu_idle_not_waiting_pct=29.1,
                class_share={"matmul/conv": 76.8, "elementwise": 18.6, "other": 2.1, "reduction": 1.4, "optimizer": 0.9, "memcpy/memset": 0.2},
                kernels_per_step=2623, step_ms=93.9)
    bf16 = next(r for r in recommend(frcnn) if r["action"] == "precision bf16")
    assert bf16["expected_gain_pct"] == pytest.approx(100 / (0.694 * 1.2) - 100, abs=0.5)
    # a layout change of the same kernels does not shorten a host-bound step: not recommended
    # (resnet50 bf16 at 32 and wgan bf16 at 64 on an H200, over half the step idle: -8%, -10%) ...
    assert not [r for r in recommend(dict(frcnn, channels_last_lever=True)) if r["action"] == "channels_last memory format"]
    # ... while a device-bound one gains (resnet50 bf16 at 128, idle 12%: +84%)
    busy = dict(frcnn, channels_last_lever=True, gpu_idle_not_waiting_pct=12.0, layout_transpose_share_pct=13.0)
    assert [r for r in recommend(busy) if r["action"] == "channels_last memory format"][0]["expected_gain_pct"] > 0


def test_a_larger_batch_is_estimated_from_the_kernels_share_of_the_unprofiled_step():
    # resnet50 bf16 batch 32 on an H200: the trace says the GPU is busy 28% of a step, but profiling
    # slowed the host; 971 kernels of 15.0 us fill 51% of the unprofiled 28.5 ms step. Host and
    # device overlap, and 2 us of each kernel does not grow with the batch: at 4x the batch the
    # kernels take (2 + 13 x 4) / 15 = 3.6x as long, 1.84x the step -> +117% (measured +108%)
    facts = gpu(precision="bf16", convolutional=False, channels_last=False, gpu_util_trace_pct=27.9, gpu_idle_not_waiting_pct=72.1,
                host_busy_pct=78.6, batch_size=32, steady_peak_allocated_bytes=1.8 * GIB, device_total_bytes=140 * GIB,
                kernels_per_step=971.0, mean_kernel_us=15.0, step_ms=28.45,
                class_share={"normalization": 47.7, "elementwise": 27.7, "matmul/conv": 21.4, "optimizer": 3.2})
    batch = next(r for r in recommend(facts) if r["action"].startswith("larger batch"))
    assert batch["apply"] == {"batch_size": 128}
    growth = (2.0 + 13.0 * 4) / 15.0
    assert batch["expected_gain_pct"] == pytest.approx((4 / (971 * 15.0 / 28450 * growth) - 1) * 100, abs=0.1)
    # per-sample host work (faster_rcnn's detection heads): 40% of the step grows with the batch
    frcnn = next(r for r in recommend(dict(facts, host_work_per_sample=True, kernels_per_step=300.0)) if r["action"].startswith("larger batch"))
    assert frcnn["expected_gain_pct"] == pytest.approx((4 / (1 + 0.4 * 3) - 1) * 100, abs=0.1)
    # without the kernels' figures: idle time amortized (serial), from the trace's utilization
    serial = next(r for r in recommend(dict(facts, kernels_per_step=None)) if r["action"].startswith("larger batch"))
    assert serial["expected_gain_pct"] == pytest.approx((1 / (0.279 + 0.721 / 4) - 1) * 100, abs=0.1)
    # a kernel count derived from the trace's utilization adds nothing: the serial model again
    derived = next(r for r in recommend(dict(facts, kernels_per_step_from_utilization=True)) if r["action"].startswith("larger batch"))
    assert derived["expected_gain_pct"] == serial["expected_gain_pct"]


def test_kernels_that_under_fill_the_gpu_first_fill_it_at_a_larger_batch():
    # deepspeech2-like: 60% of kernel time in kernels of under a quarter block per SM (its GRU
    # steps at batch 8), 20% between a quarter and one, 20% full. At 4x the batch the first stay
    # as long (0.125 x 4 < 1); the others take 4x, as resnet50's quarter-to-one kernels did on an
    # H200 (3.6x for 4x with the fixed part): 0.6 + 0.8 + 0.8.
    facts = gpu(precision="bf16", convolutional=False, channels_last=False, gpu_util_trace_pct=60.0, gpu_idle_not_waiting_pct=10.0,
                host_busy_pct=40.0, batch_size=8, steady_peak_allocated_bytes=2 * GIB, device_total_bytes=140 * GIB,
                kernels_per_step=10_000.0, mean_kernel_us=7.0, step_ms=100.0,
                class_share={"matmul/conv": 60.0, "elementwise": 40.0},
                kernel_fill_share_pct={"under_quarter": 60.0, "quarter_to_one": 20.0, "one_or_more": 20.0})
    batch = next(r for r in recommend(facts) if r["action"].startswith("larger batch"))
    growth = (2.0 + 5.0 * (0.6 + 0.8 + 0.8)) / 7.0
    assert batch["expected_gain_pct"] == pytest.approx((4 / (0.7 * growth) - 1) * 100, abs=0.1)
    assert "under a quarter block per SM, 60% of kernel time" in batch["basis"]
    # every kernel full (or no grid sizes in the trace): the plain growth, as before
    full = next(r for r in recommend(dict(facts, kernel_fill_share_pct={"one_or_more": 100.0})) if r["action"].startswith("larger batch"))
    plain = next(r for r in recommend(dict(facts, kernel_fill_share_pct=None)) if r["action"].startswith("larger batch"))
    assert full["expected_gain_pct"] == plain["expected_gain_pct"] == pytest.approx((4 / (0.7 * (2 + 5 * 4) / 7) - 1) * 100, abs=0.1)

def test_a_recurrent_model_gets_no_compile_estimate():
    # seq2seq bf16 on an H200 (2026-11-30): 60% of kernel time elementwise by name, nearly all of it
    # the decoder's time-step loop, which stays eager under torch.compile. The fusable share said
    # +42%; compile measured +4%.
    facts = gpu(precision="bf16", convolutional=False, channels_last=False, gpu_util_trace_pct=10.1, gpu_idle_not_waiting_pct=89.9,
                host_busy_pct=84.2, batch_size=128, kernels_per_step=6526.0, mean_kernel_us=3.3, step_ms=129.0,
                class_share={"elementwise": 60.3, "matmul/conv": 30.5, "reduction": 5.5, "optimizer": 2.7, "memcpy/memset": 1.0})
    assert "torch.compile" in [r["action"] for r in recommend(facts)]
    assert "torch.compile" not in [r["action"] for r in recommend(dict(facts, recurrent=True))]


def test_a_batch_of_host_processes_gains_at_most_the_idle_cores():
    # a3c: the batch is 8 actor processes on a 16-core host; the GPU learner is idle 99.6% of the
    # time, which the plain model reads as +295% from 4x the batch. The cores allow 2x, each added
    # actor at 0.65 of the first ones' rate: +65% (measured +72% and +56%).
    a3c = gpu(precision="fp32", convolutional=False, channels_last=False, gpu_util_trace_pct=0.4, gpu_idle_not_waiting_pct=99.3,
              host_busy_pct=13.6, batch_size=8, batch_on_host_cores=True, cores=16, steady_peak_allocated_bytes=1 * GIB,
              class_share={"memcpy/memset": 87.5, "optimizer": 12.5})
    batch = next(r for r in recommend(a3c) if r["action"].startswith("larger batch"))
    assert batch["expected_gain_pct"] == 65.0 and batch["apply"] == {"batch_size": 32}
    assert not any(r["action"].startswith("larger batch") for r in recommend(dict(a3c, batch_size=16)))  # no idle cores left


def test_compile_fuses_elementwise_work_but_not_convolutions_or_batch_norm():
    # gpt bf16 on an H200: elementwise + reduction + normalization 48% of kernel time -> 1 - 0.45 x 0.48
    # of the step: +27.6% (measured +30%); no CUDA graphs in the change applied, so no idle term
    gpt = gpu(precision="bf16", convolutional=False, channels_last=False, gpu_util_trace_pct=72.0, gpu_idle_not_waiting_pct=28.0,
              class_share={"matmul/conv": 40.0, "elementwise": 27.0, "reduction": 11.0, "normalization": 10.0, "attention": 9.0, "optimizer": 3.0})
    comp = next(r for r in recommend(gpt) if r["apply"] == {"compile": True})
    assert comp["expected_gain_pct"] == pytest.approx((1 / (1 - 0.45 * 0.48) - 1) * 100, abs=0.1)
    assert comp["expected_gain_range_pct"][0] < 0 < comp["expected_gain_range_pct"][1]  # it was measured to lose too
    # resnet50 bf16 NCHW: batch norm and cuDNN's transposes stay; only the other elementwise kernels fuse
    cnn = gpu(precision="bf16", convolutional=True, channels_last=False, gpu_util_trace_pct=27.9, gpu_idle_not_waiting_pct=72.1,
              layout_transpose_share_pct=13.8, class_share={"normalization": 47.7, "elementwise": 27.7, "matmul/conv": 21.4, "reduction": 0.2})
    comp = next(r for r in recommend(cnn) if r["apply"] == {"compile": True})
    assert comp["expected_gain_pct"] == pytest.approx((1 / (1 - 0.45 * (0.277 + 0.002 - 0.138)) - 1) * 100, abs=0.1)


def test_channels_last_counts_low_precision_batch_norm():
    # resnet50 bf16 batch 128, NCHW: batch norm in PyTorch's generic kernels (56% of kernel time)
    # runs 2.4x faster in NHWC, transposes (13%) go: +72% (measured +84%; +15% without the norm term)
    facts = gpu(precision="bf16", convolutional=True, channels_last=False, channels_last_lever=True, gpu_util_trace_pct=87.6,
                gpu_idle_not_waiting_pct=12.0, layout_transpose_share_pct=13.0,
                class_share={"normalization": 55.9, "elementwise": 25.8, "matmul/conv": 17.2, "optimizer": 0.7})
    cl = next(r for r in recommend(facts) if r["apply"] == {"channels_last": True})
    f = 1 - 0.13 - 0.172 * (1 - 1 / 1.15) - 0.559 * (1 - 1 / 2.4)
    assert cl["expected_gain_pct"] == pytest.approx((1 / (0.124 + 0.876 * f) - 1) * 100, abs=0.1)
    fp32 = next(r for r in recommend(dict(facts, precision="fp32")) if r["apply"] == {"channels_last": True})
    assert fp32["expected_gain_pct"] < cl["expected_gain_pct"] / 3  # cuDNN's fp32 batch norm: no such term


def test_launch_bound_recommends_compile_and_batch_not_precision_gains():
    facts = gpu(gpu_util_trace_pct=40.0, gpu_idle_not_waiting_pct=55.0, host_busy_pct=90.0, peak_reserved_bytes=10 * GIB)
    recs = recommend(facts)
    top = recs[0]["action"]
    assert top.startswith("larger batch") or top.startswith("torch.compile")
    # a fully-busy GPU gains little from a larger batch (the paper's finding)
    busy = [r for r in recommend(gpu(gpu_util_trace_pct=99.0, peak_reserved_bytes=10 * GIB)) if r["action"].startswith("larger batch")]
    assert not busy or busy[0]["expected_gain_pct"] < 2


def test_fused_optimizer_input_and_stall_recommendations():
    recs = {r["action"]: r for r in recommend(gpu(optimizer_kind="foreach", class_share={"matmul/conv": 60.0, "optimizer": 20.0, "elementwise": 20.0},
                                                  input_wait_pct=20.0, period_steps=50, stall_share_pct=5.0))}
    assert recs["fused optimizer (now foreach)"]["apply"] == {"options": {"optimizer": "fused"}}  # a run option since tbd tune
    assert recs["more data-loader workers / prefetching"]["expected_gain_pct"] > 10
    assert "remove the periodic stall every 50 steps" in recs


def test_cpu_run_recommendations():
    facts = {**TORCH, "device": "cpu", "framework": "torch", "precision": "fp32", "compile": False, "channels_last": False, "convolutional": True,
             "batch_size": 4, "step_ms": 20.0, "ops_per_step": 600, "host_peak_rss_bytes": 1 * GIB, "host_total_bytes": 16 * GIB,
             "host_class_share": {"matmul/conv": 60.0, "normalization": 20.0, "optimizer": 15.0, "elementwise": 5.0}, "host_optimizer_kind": "foreach"}
    recs = recommend(facts)
    actions = [r["action"] for r in recs]
    by = {r["action"]: r for r in recs}
    # 600 ops x 10 us = 30% of a 20 ms step, amortized over 4x: 1 / (0.7 + 0.3 / 4) - 1
    assert by["larger batch (4 -> 16)"]["expected_gain_pct"] == pytest.approx(29.0, abs=0.1)
    assert set(actions[:2]) == {"larger batch (4 -> 16)", "torch.compile"}
    assert "channels_last memory format" in actions and "torch.compile" in actions and "fused optimizer (now foreach)" in actions
    assert not any(r["action"].startswith("precision") for r in recs)  # no AMX here


def test_verify_reruns_the_top_applicable_recommendations_and_logs_them(monkeypatch, tmp_path):
    from tbd.analysis import verify as verify_mod
    from tbd.results.store import Store

    seen = []
    speed = {(True, False): 150.0, (False, True): 80.0}  # (channels_last, compile) -> samples/s

    def fake_launch(config, progress=None):
        seen.append(config)
        return {"id": f"new-{len(seen)}", "created_at": "2026-01-01T00:00:00+00:00", "status": "ok", "config": config.to_dict(),
                "metrics": {"samples_per_s": speed[(config.channels_last, config.compile)]}, "error": None}

    monkeypatch.setattr(verify_mod, "launch", fake_launch)
    record = {"id": "old", "config": {"workload": "resnet50", "framework": "torch", "flavor": "tiny", "device": "cpu", "batch_size": 4,
                                      "precision": "fp32", "profile": True}, "metrics": {"samples_per_s": 100.0}}
    analysis = {"recommendations": [{"action": "fused optimizer", "expected_gain_pct": 30.0, "apply": None},
                                    {"action": "channels_last memory format", "expected_gain_pct": 12.0, "apply": {"channels_last": True}},
                                    {"action": "torch.compile", "expected_gain_pct": 10.0, "apply": {"compile": True}},
                                    {"action": "precision bf16", "expected_gain_pct": 5.0, "apply": {"precision": "bf16"}}]}
    store = Store(tmp_path / "home")
    out = verify_mod.verify(record, analysis, store)  # the top two applicable ones
    assert [o["action"] for o in out] == ["channels_last memory format", "torch.compile"]
    assert seen[0].channels_last is True and seen[0].profile is False and seen[0].batch_size == 4
    assert [o["measured_gain_pct"] for o in out] == [pytest.approx(50.0), pytest.approx(-20.0)]
    assert store.get("new-1")["metrics"]["samples_per_s"] == 150.0
    rows, summary = verify_mod.calibration(store)
    assert [r["action"] for r in rows] == ["channels_last memory format", "torch.compile"] and summary["pairs"] == 2
    # |12 - 50| / 50 = 76%, |10 - (-20)| / 20 = 150%: median 113%
    assert summary["median_abs_error_pct_of_measured"] == pytest.approx(113.0)
    assert len(verify_mod.pick(analysis["recommendations"], None)) == 3


def test_verify_measures_the_gain_in_the_workloads_unit(monkeypatch, tmp_path):
    """seq2seq's two resident batches at 128 pairs had 50-token targets, at 512 15 and 31: pairs per
    second rose 7x for 4x the batch (H200, 2026-11-30). The gain is measured in tokens per second,
    as tbd tune judges a change; a record without its unit's figure falls back to samples."""
    import json

    from tbd.analysis import verify as verify_mod
    from tbd.results.record import throughput_of
    from tbd.results.store import Store

    def fake_launch(config, progress=None):
        return {"id": "bigger", "created_at": "2026-01-01T00:00:00+00:00", "status": "ok", "config": config.to_dict(),
                "workload": {"unit": "tokens"}, "metrics": {"samples_per_s": 7000.0, "tokens_per_s": 160_000.0}, "error": None}

    monkeypatch.setattr(verify_mod, "launch", fake_launch)
    record = {"id": "old", "config": {"workload": "seq2seq", "framework": "torch", "flavor": "tiny", "device": "cpu", "batch_size": 128,
                                      "precision": "fp32", "profile": True},
              "workload": {"unit": "tokens"}, "metrics": {"samples_per_s": 1000.0, "tokens_per_s": 80_000.0}}
    analysis = {"recommendations": [{"action": "larger batch (128 -> 512)", "expected_gain_pct": 150.0, "apply": {"batch_size": 512}}]}
    out = verify_mod.verify(record, analysis, Store(tmp_path / "home"))
    assert out[0]["measured_gain_pct"] == pytest.approx(100.0) and out[0]["unit"] == "tokens"
    assert (out[0]["throughput_before"], out[0]["throughput_after"]) == (80_000.0, 160_000.0)
    assert throughput_of({"workload": {"unit": "tokens"}, "metrics": {"samples_per_s": 3.0}}) == 3.0
    assert json.loads(verify_mod.calibration_path(Store(tmp_path / "home")).read_text())["measured_in"] == "tokens_per_s"



def test_verify_repeated_pairs_each_change_with_a_fresh_unchanged_run(monkeypatch, tmp_path):
    """--repeat 3: unchanged then changed, three times; the gain is the median of the three pairs'
    gains, each against the run just before it, so a host that drifts between pairs cancels."""
    import json

    from tbd.analysis import verify as verify_mod
    from tbd.results.store import Store

    launched = []
    host_speed = iter([1.0, 1.0, 0.5, 0.5, 0.8, 0.8])  # the machine slows and recovers between pairs

    def fake_launch(config, progress=None):
        launched.append(config)
        rate = (130.0 if config.compile else 100.0) * next(host_speed)
        return {"id": f"r{len(launched)}", "created_at": "2026-01-01T00:00:00+00:00", "status": "ok", "config": config.to_dict(),
                "metrics": {"samples_per_s": rate}, "error": None}

    monkeypatch.setattr(verify_mod, "launch", fake_launch)
    record = {"id": "old", "config": {"workload": "resnet50", "framework": "torch", "flavor": "tiny", "device": "cpu", "batch_size": 4,
                                      "precision": "fp32", "profile": True}, "metrics": {"samples_per_s": 200.0}}
    analysis = {"recommendations": [{"action": "torch.compile", "expected_gain_pct": 25.0, "apply": {"compile": True}}]}
    store = Store(tmp_path / "home")
    out = verify_mod.verify(record, analysis, store, repeat=3)[0]
    assert [c.compile for c in launched] == [False, True] * 3 and not any(c.profile for c in launched)
    assert out["measured_gain_pct"] == pytest.approx(30.0)  # not +35% (130 / 100 x 0.5 ...) nor against the analyzed run's 200
    assert out["measured_gains_pct"] == [pytest.approx(30.0)] * 3 and out["baseline_run_ids"] == ["r1", "r3", "r5"]
    logged = json.loads(verify_mod.calibration_path(store).read_text())
    assert logged["measured_gain_pct"] == pytest.approx(30.0) and len(logged["measured_gains_pct"]) == 3
    # an unchanged rerun that fails ends the measurement with that run's error
    monkeypatch.setattr(verify_mod, "launch", lambda config, progress=None: {"id": "x", "status": "failed", "config": config.to_dict(),
                                                                            "error": {"kind": "crash", "message": "died"}})
    failed = verify_mod.verify(record, analysis, store, repeat=2)[0]
    assert failed["measured_gain_pct"] is None and failed["error"] == "died (the unchanged rerun)"


def test_verify_neither_shows_nor_logs_a_gain_from_a_run_without_a_ci(monkeypatch, tmp_path):
    """gpt tiny on 2 cores, --max-time 5, torch.compile: the compiled rerun spent its budget compiling,
    kept 6 steady steps and read 289 tokens/s against 95,355: "measured -99.7%" was the compilation."""
    from tbd.analysis import verify as verify_mod
    from tbd.results.store import Store

    def short_run(config, progress=None):
        return {"id": "short", "created_at": "2026-01-01T00:00:00+00:00", "status": "insufficient", "config": config.to_dict(),
                "metrics": {"samples_per_s": 2.9, "timed_steps": 6}, "method": {"convergence": {"min_timed_steps": 20}}, "error": None}

    monkeypatch.setattr(verify_mod, "launch", short_run)
    record = {"id": "old", "status": "ok", "config": {"workload": "gpt", "framework": "torch", "flavor": "tiny", "device": "cpu",
                                                      "batch_size": 4, "precision": "fp32", "profile": True}, "metrics": {"samples_per_s": 950.0}}
    analysis = {"recommendations": [{"action": "torch.compile", "expected_gain_pct": 118.0, "apply": {"compile": True}}]}
    store = Store(tmp_path / "home")
    out = verify_mod.verify(record, analysis, store)[0]
    assert out["measured_gain_pct"] is None
    assert out["not_measurable"] == "not measurable in this budget: run short had 6 steady step(s), a CI needs 20; analyze a run with a longer --max-time"
    assert not verify_mod.calibration_path(store).exists()  # nothing logged

def test_calibration_re_estimates_each_pair_with_the_current_model(tmp_path):
    """A pair logged under an older model is estimated again from its run's stored facts, so a
    revised model is judged on the same pairs (tbd analyze --calibration: column "now")."""
    import json

    from tbd.analysis import verify as verify_mod
    from tbd.results.store import Store

    store = Store(tmp_path / "home")
    config = {"workload": "gpt", "framework": "torch", "flavor": "paper", "device": "cuda", "batch_size": 16, "precision": "fp32"}
    facts = gpu(precision="fp32", channels_last=False, convolutional=False, gpu_util_trace_pct=99.5, host_busy_pct=81.0,
                class_share={"matmul/conv": 80.9, "attention": 11.9, "reduction": 3.2, "elementwise": 2.3, "normalization": 1.4},
                kernels_per_window=4820, step_ms=298.9, kernel_fill_share_pct={"under_quarter": 10.0, "one_or_more": 90.0})
    base = {"id": "base", "created_at": "2026-01-01T00:00:00+00:00", "status": "ok", "config": config, "metrics": {"samples_per_s": 10.0},
            "analysis": {"trace": {"steps": 10}, "report": {"facts": facts}}}
    new = {"id": "bf16", "created_at": "2026-01-01T00:01:00+00:00", "status": "ok", "config": {**config, "precision": "bf16"},
           "metrics": {"samples_per_s": 70.7}}
    store.save(base)
    store.save(new)
    verify_mod.log_calibration(store, base, {"action": "precision bf16", "expected_gain_pct": 22.9, "measured_gain_pct": 607.0, "run_id": "bf16"}, facts)
    logged = json.loads(verify_mod.calibration_path(store).read_text())["facts"]
    assert logged["kernel_fill_share_pct"] == facts["kernel_fill_share_pct"]  # every fact an estimate reads is logged
    rows, summary = verify_mod.calibration(store)
    now = next(r for r in recommend(dict(facts, kernels_per_step=482.0)) if r["action"] == "precision bf16")["expected_gain_pct"]
    assert rows[0]["expected_now_pct"] == now and now > 500  # kernels per step from the trace's 10 steps
    assert summary["median_abs_error_pct_of_measured"] == pytest.approx(abs(22.9 - 607) / 607 * 100)
    assert summary["median_abs_error_now_pct_of_measured"] == pytest.approx(abs(now - 607) / 607 * 100)


def test_a_pair_whose_runs_are_elsewhere_is_re_estimated_from_its_logged_facts(tmp_path):
    """A calibration log copied from another machine (docs/data/calibration_*.jsonl) has no runs in
    this store: "now" comes from the facts logged with each pair, the change read from its action."""
    import json

    from tbd.analysis import verify as verify_mod
    from tbd.results.store import Store

    store = Store(tmp_path / "home")
    wgan = {"gpu_util_trace_pct": 95.7, "host_busy_pct": 87.1, "gpu_idle_not_waiting_pct": 4.2, "kernels_per_step": 10004.0, "step_ms": 607.2,
            "class_share": {"matmul/conv": 76.1, "elementwise": 17.6, "normalization": 3.2, "reduction": 1.7, "other": 1.1, "optimizer": 0.2}}
    # an a3c pair logged before cores and the batch's meaning were facts: cores logged, the meaning from the spec
    a3c = {"gpu_util_trace_pct": 0.4, "host_busy_pct": 13.6, "gpu_idle_not_waiting_pct": 99.3, "cores": 16, "batch_on_host_cores": None,
           "class_share": {"memcpy/memset": 87.5, "optimizer": 12.5}}
    pairs = [{"run_id": "a", "verify_run_id": "b", "workload": "wgan", "framework": "torch", "device": "cuda", "precision": "fp32",
              "batch_size": 64, "action": "precision fp32 -> bf16", "expected_gain_pct": 19.0, "measured_gain_pct": 145.6, "facts": wgan},
             {"run_id": "c", "verify_run_id": "d", "workload": "a3c", "framework": "torch", "device": "cuda", "precision": "fp32",
              "batch_size": 8, "action": "larger batch (8 -> 32)", "expected_gain_pct": 295.1, "measured_gain_pct": 72.0, "facts": a3c},
             {"run_id": "e", "verify_run_id": "f", "workload": "gpt", "framework": "torch", "device": "cuda", "precision": "bf16",
              "batch_size": 16, "action": "remove a periodic stall", "expected_gain_pct": 3.0, "measured_gain_pct": 1.0, "facts": {}}]
    verify_mod.calibration_path(store).parent.mkdir(parents=True, exist_ok=True)
    verify_mod.calibration_path(store).write_text("".join(json.dumps(p) + "\n" for p in pairs))
    rows, summary = verify_mod.calibration(store)
    expected_wgan = next(r for r in recommend(gpu(precision="fp32", channels_last=False, **wgan)) if r["action"] == "precision bf16")
    assert rows[0]["expected_now_pct"] == expected_wgan["expected_gain_pct"]
    assert rows[1]["expected_now_pct"] == 65.0  # 16 cores for 8 actors: at most 2x at a 0.65 yield, whatever the idle GPU suggests
    assert rows[2]["expected_now_pct"] is None  # no facts, and a change no run option expresses
    assert summary["median_abs_error_now_pct_of_measured"] is not None
    # the same pairs judged by the throughput each estimate predicts: |1.19 / 2.456 - 1|, |3.951 / 1.72 - 1|, |1.03 / 1.01 - 1|
    errors = sorted([abs(119.0 / 245.6 - 1) * 100, abs(395.1 / 172.0 - 1) * 100, abs(103.0 / 101.0 - 1) * 100])
    assert summary["median_throughput_error_pct"] == pytest.approx(errors[1])


def test_every_estimate_comes_with_its_range():
    for rec in recommend(gpu(precision="fp32", channels_last=False, peak_reserved_bytes=20 * GIB)):
        low, high = rec["expected_gain_range_pct"]
        assert low <= rec["expected_gain_pct"] <= high


def test_distributed_ddp_run_with_exposed_communication_gets_larger_buckets():
    """A DDP run (no single trace; comm from the per-rank traces) whose all-reduces show."""
    facts = {"device": "cuda", "framework": "torch", "has_trace": False, "world_size": 2, "parallel": "ddp",
             "ddp_bucket_mb": 25.0, "exposed_comm_pct": 17.0, "gpu_util_nvml_pct": 95.0}
    assert diagnose(facts)["label"] == "communication-bound"
    [rec] = [r for r in recommend(facts) if r["action"].startswith("larger DDP")]
    assert rec["apply"] == {"ddp_bucket_mb": 100.0}
    assert rec["expected_gain_pct"] == pytest.approx((1 / (1 - 0.7 * 0.17) - 1) * 100, abs=0.1)
    assert not [r for r in recommend({**facts, "parallel": "fsdp2"}) if r["action"].startswith("larger DDP")]
    assert not [r for r in recommend({**facts, "ddp_bucket_mb": 200.0}) if r["action"].startswith("larger DDP")]
    small_model = {**facts, "gradient_mib": 10.0}  # one bucket already: nothing to merge
    assert not [r for r in recommend(small_model) if r["action"].startswith("larger DDP")]
