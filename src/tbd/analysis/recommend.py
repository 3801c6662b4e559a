"""Ranked recommendations, each with an expected gain and, where a run option expresses it, the
config change `tbd analyze RUN --verify` applies.

`pytest tests/analysis/test_diagnose.py` checks them on synthetic facts. The gains come from a
simple time model of one step, normalized to 1: the device is busy a fraction u (kernel
utilization) and idle 1 - u; a change that speeds up kernel time by a factor f (per class
share s_c, f = sum s_c / k_c) gives T' = (1 - u) + u f, never below the host's own time per
step (`host_floor`); removing idle host time shrinks (1 - u). Gain = 1 / T' - 1. The speed-ups
per class (k) started as round figures from public measurements (REFERENCE_NUMBERS.md) and were
revised from the pairs `tbd tune` and `--verify` measured on an H200 (docs/analysis.md,
"Calibration"); they are estimates to rank by, which --verify then measures.
"""

from __future__ import annotations

from typing import Any

from tbd.analysis.kernels import BANDWIDTH_CLASSES

# Assumed kernel speed-ups (k) per change. tbd's fp32 is true fp32 (no TF32), so bf16 moves the
# matmuls from the FMA pipes to the tensor cores: gpt 124M fp32 -> bf16 on an H200 measured +607%,
# which the model meets with k = 10 (the peak ratio is ~15x; bf16 kernels at batch 16 reach less
# of their peak than fp32 ones do of theirs). tf32 -> bf16 stays the public figure (REFERENCE_NUMBERS:
# ResNet-50 tf32 NCHW vs bf16 channels_last); fp32 -> tf32 follows as 10 / 1.6 (not measured yet).
K_MATMUL = {("fp32", "bf16"): 10.0, ("tf32", "bf16"): 1.6, ("fp32", "tf32"): 6.0}
# Convolutional workloads gain far less: cuDNN's true-fp32 convolutions are closer to their peak
# than fp32 GEMMs, and an NCHW model's bf16 convolutions transpose their inputs. Measured on an
# H200 (fp32 -> bf16 from each run's kernel shares): resnet50 k = 1.8, inception_v3 2.3, wgan 3.5;
# the model takes 2.5 (tf32 -> bf16 stays 1.6, so fp32 -> tf32 is 2.5 / 1.6).
K_CONV = {("fp32", "bf16"): 2.5, ("tf32", "bf16"): 1.6, ("fp32", "tf32"): 2.5 / 1.6}
K_BANDWIDTH_BF16 = 1.5  # half the bytes, but not everything is cast under autocast
K_CONV_CHANNELS_LAST = 1.15
# Under autocast, PyTorch runs batch norm on bf16 NCHW tensors in its own generic kernels
# (cuDNN's serve fp32), which read channel planes with strides; NHWC has vectorized kernels.
# resnet50 bf16 batch 128 on an H200: normalization 299 -> 124 ms per 10 steps with
# channels_last (x1/2.4), step 54.7 -> 29.7 ms (+84%, expected +15% without this term).
K_NORM_CHANNELS_LAST_LOW_PRECISION = 2.4
# torch.compile as applied (default mode: Triton fusion, no CUDA graphs) cuts a step by this share
# of its fusable kernels' share (elementwise, reductions; normalization outside convolutional
# models), on the device and on the host alike: a host-bound step shrinks with the launches
# fused away, a device-bound one with the kernel time. gpt bf16 (fusable 48%): +30% measured
# twice (model +28%); transformer fp32 (15%): +6% (model +7%). The former model (fusion x0.4 plus
# 60% of the launch-bound idle removed, as CUDA graphs would) expected +38% and +39%.
FUSION_CUT = 0.45
# In convolutional models compile leaves the convolutions to cuDNN, with the layout transposes
# cuDNN adds around them, and training-mode batch norm (batch statistics, a reduction per
# channel) gains nothing from Triton: resnet50 bf16 NCHW gained -19% (expected +107%),
# inception_v3 fp32 -1% (expected +34%). Only their other elementwise kernels count as fusable.
# A recurrent model (the spec's `recurrent`) keeps its recurrence eager under compile, and its
# fusable kernels by name are there (cuDNN's RNN kernels, or the cells of a time-step loop): no
# compile estimate. deepspeech2 and seq2seq bf16 on an H200 (2026-11-30) gained +2% and +4% where
# the fusable share said +17% and +42%.
OPTIMIZER_FACTOR = {"per-parameter": 0.3, "foreach": 0.6}
CPU_OP_OVERHEAD_US = 10.0  # eager dispatch + Python per op on a CPU, a rough figure
MAX_BATCH_FACTOR = 4
# A kernel's time has a part that does not grow with the batch (launch latency, ramp-up, the
# last wave): with it, kernel time grows less than the batch. resnet50 bf16 32 -> 128 on an H200:
# kernels of 15.0 us -> 53.6 us (3.6x for 4x); gpt bf16 16 -> 64: 47.3 -> 179.6 us (3.8x); seq2seq
# fp32 512 -> 2048: 15.0 -> 44.1 us (2.9x). 2 us reproduces these within 10%.
KERNEL_FIXED_US = 2.0
# A kernel whose grid has fewer blocks than the GPU has SMs leaves SMs idle, and a larger batch
# first fills them: its time grows only once its blocks outnumber the SMs. The trace's kernel time
# by grid fill (summary.FILL_BINS) is taken at each bin's middle blocks per SM; kernels of one or
# more blocks per SM grow with the batch. Not fitted: deepspeech2 8 -> 32 on an H200 (its GRU
# kernels at batch 8 under-fill the GPU) gained +167% where full kernels gave +53%, and that pair
# predates the fact. Its first test, resnet50 bf16 32 -> 128 on an H200 (2026-11-30), had 34% of
# its kernel time at a quarter to one block per SM, and its kernels grew 3.6x for 4x, as full ones
# do (the term for that bin said 3.0x: +136% expected, +85% measured). So only kernels of under a
# quarter of a block per SM, which stay under one at 4x, are taken not to grow.
FILL_BLOCKS_PER_SM = {"under_quarter": 0.125}
# Host work that runs per sample (host_work_per_sample: torchvision's detection heads handle
# each image's proposals apart) makes this share of a host-bound step grow with the batch:
# faster_rcnn bf16 2 -> 8 on an H200, step 80.9 -> 177.8 ms, i.e. 48.6 ms + 16.2 ms per image,
# 40% of the batch-2 step (expected +202% with a constant host time; measured +82%). One pair.
HOST_PER_SAMPLE_SHARE = 0.4
# Where the batch is processes on the host's cores (a3c's actors), each added process yields
# this share of the first ones' rate: they share the cores with the learner and each other
# (SMT siblings). a3c 8 -> 32 actors on 16 cores (at most 2x): 1.72x and 1.56x measured.
HOST_CORE_YIELD = 0.65
# gpt 124M on 2 H100s (docs/results.md): 25 -> 100 MiB buckets cut exposed comm from 5.3 to 1.6 ms per step.
DDP_BUCKET_CUT = 0.7
DDP_BUCKET_MAX_MB = 200.0
MIN_GAIN_PCT = 1.0  # below this a recommendation is noise in the time model, not advice
# Host-bound: the GPU sits idle, not waiting on a sync, for this share of a step or more, so the
# host's busy time is its own work and sets the pace (transformer and faster_rcnn fp32 on an
# H200: 29% idle; bf16 then gained -1% and +21%, not the +30% and +44% the kernels allowed;
# inception_v3 fp32, 16% idle, gained +70% from bf16: its host was not the limit).
HOST_BOUND_IDLE = 0.25
# Autocast adds a cast kernel per matmul input and per bf16 output used in fp32, each a launch:
# the host's work per step grows by about this factor (faster_rcnn fp32 -> bf16 on an H200: +21%
# measured against the 1 / 0.69 host-busy bound of +44%; 0.69 x 1.2 = 0.83 gives +20%).
AUTOCAST_HOST_FACTOR = 1.2
# Device-bound: the host's busy time includes launches that waited for room in CUDA's launch
# queue, so its own work is capped by kernels per step x this: the most host time per kernel seen
# in such a run once the device got faster (wgan fp32 -> bf16 on an H200: 10,004 kernels in a
# 247 ms step, 24.7 us each; gpt fp32 read 81% busy on a GPU 99.5% busy, then ran 7x faster).
HOST_US_PER_KERNEL = 25.0


def host_bound(facts: dict[str, Any]) -> bool:
    """The GPU idle, not waiting on a sync, for HOST_BOUND_IDLE of the step or more."""
    idle = facts.get("gpu_idle_not_waiting_pct")
    return idle is not None and idle / 100.0 >= HOST_BOUND_IDLE


def host_floor(facts: dict[str, Any], adds_casts: bool = False) -> float:
    """The host's own share of a step, below which no device-side change takes it.

    Host-bound runs (the GPU idle and not waiting for HOST_BOUND_IDLE of the step or more): the
    host's busy share, grown by AUTOCAST_HOST_FACTOR for a change that adds cast kernels. Device-
    bound runs: the busy share overstates the host's own work (blocked launches count as busy),
    so it is capped by kernels per step x HOST_US_PER_KERNEL."""
    g = facts.get
    busy = (g("host_busy_pct") or 0) / 100.0
    if host_bound(facts):
        return busy * (AUTOCAST_HOST_FACTOR if adds_casts else 1.0)
    kernels, step_ms = g("launches_per_step") or g("kernels_per_step"), g("step_ms")
    if kernels and step_ms:
        return min(busy, kernels * HOST_US_PER_KERNEL / (step_ms * 1e3))
    return busy


def fill_growth(fill_share_pct: dict[str, float] | None, factor: int) -> tuple[float, float]:
    """(how many times longer the kernels' batch-dependent time gets at `factor` x the batch, the
    share of kernel time in kernels taken not to grow, %). Without the trace's grid fill,
    every kernel grows with the batch (factor, 0)."""
    if not fill_share_pct:
        return float(factor), 0.0
    total = sum(fill_share_pct.values()) or 100.0
    growth, under = 0.0, 0.0
    for name, pct in fill_share_pct.items():
        share = pct / total
        blocks = FILL_BLOCKS_PER_SM.get(name)
        if blocks is None:  # one or more blocks per SM: more work is more waves
            growth += share * factor
        else:
            growth += share * max(1.0, blocks * factor)
            under += pct
    return growth, under / total * 100.0


def device_share(facts: dict[str, Any]) -> float | None:
    """The share of an unprofiled step its kernels fill: kernel time per step (from the trace:
    kernels per step x mean kernel time; CUPTI barely changes kernel durations) over the median
    step time of the unprofiled window. The trace's own utilization understates it where the step
    is host-bound: profiling slows the host (resnet50 bf16 at batch 32 on an H200: 27% busy in the
    trace, while the measured batch-128 step implies 58%). None where the facts lack a figure."""
    g = facts.get
    kernels, mean_us, step_ms = g("kernels_per_step"), g("mean_kernel_us"), g("step_ms")
    if not (kernels and mean_us and step_ms) or g("kernels_per_step_from_utilization"):
        return None
    return min(1.0, kernels * mean_us / (step_ms * 1e3))


def _gain(t_new: float, host_floor: float = 0.0) -> float:
    t_new = max(t_new, host_floor, 1e-3)
    return (1.0 / t_new - 1.0) * 100.0


def recommend(facts: dict[str, Any]) -> list[dict[str, Any]]:
    g = facts.get
    recs = _cpu(facts) if g("device") == "cpu" else _gpu(facts)
    if (g("input_wait_pct") or 0) >= 5 and g("data_path"):
        recs += _input(facts)
    elif (g("input_wait_pct") or 0) >= 5:
        i = g("input_wait_pct") / 100.0
        recs.append(_rec("more data-loader workers / prefetching", _gain(1 - 0.9 * i), f"input wait {i * 100:.0f}% of the window, 90% of it hidden",
                         None, "raise num_workers, pin_memory=True, prefetch to the device"))
    exposed = g("exposed_comm_pct") or 0
    several_buckets = g("gradient_mib") is None or g("gradient_mib") > 2 * (g("ddp_bucket_mb") or 25)
    if (g("world_size") or 1) > 1 and g("parallel") == "ddp" and exposed >= 2 and several_buckets and (g("ddp_bucket_mb") or 25) < DDP_BUCKET_MAX_MB:
        now = g("ddp_bucket_mb") or 25.0
        new = min(DDP_BUCKET_MAX_MB, now * 4)
        recs.append(_rec(f"larger DDP gradient buckets ({now:g} -> {new:g} MiB)", _gain(1 - DDP_BUCKET_CUT * exposed / 100.0),
                         f"exposed communication {exposed:.1f}% of the step x(1-{DDP_BUCKET_CUT}): fewer, larger all-reduces",
                         {"ddp_bucket_mb": new}, "--ddp-bucket-mb (with --compile also fewer graph splits)"))
    stall = g("stall_share_pct") or 0
    if g("period_steps") and stall >= 1:
        recs.append(_rec(f"remove the periodic stall every {g('period_steps')} steps", stall / max(100 - stall, 1) * 100,
                         f"stalled steps cost {stall:.1f}% of the time", None,
                         "look for garbage collection (gc.freeze()), logging or checkpointing on that period"))
    recs = sorted((r for r in recs if r["expected_gain_pct"] >= MIN_GAIN_PCT), key=lambda r: -r["expected_gain_pct"])
    for rank, r in enumerate(recs, 1):
        r["rank"] = rank
    return recs


# How far a measured gain may lie from the estimate, as a factor either way. Verified on the GPU
# (issue 15): a larger batch was estimated +127% and measured +222% (resnet50), estimated +226%
# and measured +76% (seq2seq): the time model's "kernel time linear in batch" misses by up to
# ~3x; the other levers' estimates by up to ~2x. `tbd analyze --calibration` shows the store's
# verified pairs, from which these are to be revised.
# The H200 tune pairs (docs/analysis.md, "Calibration") put inception_v3's bf16 gain at 2.4x its
# estimate (the host floor of small-batch CNNs overstated), so precision gets 2.5.
UNCERTAINTY_FACTOR = {"larger batch": 3.0, "precision": 2.5}
DEFAULT_UNCERTAINTY = 2.0
# torch.compile's measured / expected gain on the H200 pairs (current model): 1.1 (gpt, twice),
# 0.85 (transformer), -0.1 (inception_v3) and -2.9 (resnet50 bf16 NCHW, 19% slower): it can lose.
# And 3.0 (wgan bf16 at 64, 2026-12-01: +78%, +91%, +110% against +30%; its gradient penalty's
# chains of elementwise kernels fuse far more than the model's fixed share of their time).
COMPILE_SPREAD = (-3.0, 3.0)


def _rec(action: str, gain: float, basis: str, apply: dict[str, Any] | None, how: str,
         spread: tuple[float, float] | None = None) -> dict[str, Any]:
    """One recommendation; its range is the gain x `spread` (low, high: the measured / expected
    ratios seen for the lever, a low below 0 where it was measured to lose), else / and x its factor."""
    gain = max(gain, 0.0)
    factor = next((f for key, f in UNCERTAINTY_FACTOR.items() if action.startswith(key)), DEFAULT_UNCERTAINTY)
    low, high = spread or (1 / factor, factor)
    return {"action": action, "expected_gain_pct": round(gain, 1), "expected_gain_range_pct": [round(gain * low, 1), round(gain * high, 1)],
            "basis": basis, "apply": apply, "how": how}


# Input pipelines (runs on a dataset on disk). Time model of an input-bound step, normalized to 1:
# the step's own work takes c = 1 - i (i: the share spent waiting for input) and the loader,
# which sets the pace, delivers one batch per step, so a batch costs it 1 (with w workers in
# parallel; with none, loading runs inside the step and costs i). The step after a change takes
# max(c, the loader's new time per batch).
DECODE_SHARE = 0.8  # share of a CPU worker's time per JPEG spent decoding (PIL; crop/resize/flip the rest), a rough figure
GPU_DECODE_DEVICE_COST = 0.05  # device time the GPU's crops and resizes add to a step, rough
STORED_SIDE_FACTOR = 256 / 224  # a stored shorter side of 256 px for 224 px crops (the usual ImageNet resize) keeps crops sharp


def _input(facts: dict[str, Any]) -> list[dict[str, Any]]:
    g = facts.get
    recs: list[dict[str, Any]] = []
    i = g("input_wait_pct") / 100.0
    c = 1.0 - i
    workers = g("data_workers") or 0
    cores = g("cores") or 1
    limit = max(1, cores - 1) if g("device") == "cuda" else max(1, cores // 2)  # a CPU run trains on the other cores
    if workers < limit:
        new = min(limit, max(2 * workers, 2))
        t_new = max(c, 1.0 * workers / new) if workers else max(c, i / new)
        recs.append(_rec(f"more loader workers ({workers} -> {new})", _gain(t_new),
                         f"waiting for input {i * 100:.0f}% of the step; the loader's time per batch / {new / max(workers, 1):g} "
                         f"({limit} usable cores)", {"workers": new}, f"--workers {new} (one process per core)"))
    if g("device") == "cuda" and g("data_decode") == "cpu" and g("gpu_decodable") and g("gpu_decode_how"):
        t_new = max(c * (1 + GPU_DECODE_DEVICE_COST), 1.0 - DECODE_SHARE)
        recs.append(_rec("decode JPEGs on the GPU", _gain(t_new),
                         f"decoding ~{DECODE_SHARE * 100:.0f}% of a worker's time per image moves to the GPU's JPEG decoder; "
                         f"+{GPU_DECODE_DEVICE_COST * 100:.0f}% device time for crops", {"decode": "gpu"}, f"--decode gpu ({g('gpu_decode_how')})"))
    pixels, size = g("data_mean_pixels"), g("image_size")
    if pixels and size and g("data_decode") == "cpu":
        side = int(round(size * STORED_SIDE_FACTOR))
        stored = side * side * 4 / 3  # a 4:3 image with that shorter side
        if pixels > 1.5 * stored:
            t_new = max(c, DECODE_SHARE * stored / pixels + (1 - DECODE_SHARE))
            recs.append(_rec(f"store the images at a shorter side of {side} px", _gain(t_new),
                             f"images average {pixels / 1e3:.0f}k pixels, {pixels / stored:.1f}x a {side} px image; decoding time ~ pixels",
                             {"data_resize": side}, f"tbd data resize WORKLOAD --data PATH --side {side} --out DIR, then --data DIR"))
    return recs


def _gpu(facts: dict[str, Any]) -> list[dict[str, Any]]:
    g = facts.get
    recs: list[dict[str, Any]] = []
    shares = {k: v / 100.0 for k, v in (g("class_share") or {}).items()}
    util = g("gpu_util_trace_pct") if g("gpu_util_trace_pct") is not None else g("gpu_util_nvml_pct")
    u = min(max(util / 100.0, 0.0), 1.0) if util is not None else None
    floor = host_floor(facts)
    s_mm = shares.get("matmul/conv", 0.0) + shares.get("attention", 0.0)
    s_bw = sum(shares.get(c, 0.0) for c in BANDWIDTH_CLASSES)
    compiler = g("compiler")  # the framework's optional compiler ("torch.compile"); "" if always compiled
    precision = g("precision")
    if u is not None and shares:
        for target in ("bf16", "tf32"):
            k = (K_CONV if g("convolutional") else K_MATMUL).get((precision, target))
            if not k:
                continue
            k_bw = K_BANDWIDTH_BF16 if target == "bf16" else 1.0
            # NCHW batch norm leaves cuDNN for PyTorch's generic kernels under bf16 autocast: it
            # gets slower, not faster (the channels_last term's x2.4 over the bandwidth gain).
            s_norm_generic = shares.get("normalization", 0.0) if target == "bf16" and g("convolutional") and not g("channels_last") else 0.0
            k_norm = k_bw / K_NORM_CHANNELS_LAST_LOW_PRECISION
            f = (1 - s_mm - s_bw) + s_mm / k + (s_bw - s_norm_generic) / k_bw + s_norm_generic / k_norm
            how = "autocast to bfloat16 (weights and optimizer stay fp32)" if target == "bf16" else "TF32 tensor cores for fp32 matmuls and convolutions"
            recs.append(_rec(f"precision {target}", _gain((1 - u) + u * f, host_floor(facts, adds_casts=target == "bf16")),
                             f"matmul/conv {s_mm * 100:.0f}% of kernel time x1/{k:g},"
                             f" bandwidth-bound kernels {(s_bw - s_norm_generic) * 100:.0f}% x1/{k_bw:g}"
                             + (f", NCHW batch norm {s_norm_generic * 100:.0f}% x{1 / k_norm:.2g} (generic kernels)" if s_norm_generic else "")
                             + f", GPU busy {u * 100:.0f}%",
                             {"precision": target}, how))
        # A host-bound step does not get shorter from faster kernels of the same count, and NHWC adds
        # host work (layout checks, input conversion): resnet50 bf16 at 32 and wgan bf16 at 64 on an
        # H200, both with the GPU idle over half the step, measured -8% and -10% (expected +19%, +7%);
        # resnet50 bf16 at 128, idle 12%, +84%.
        if g("convolutional") and not g("channels_last") and g("channels_last_lever") and not host_bound(facts):
            s_tr = (g("layout_transpose_share_pct") or 0) / 100.0
            k_norm = K_NORM_CHANNELS_LAST_LOW_PRECISION if precision in ("bf16", "fp16") else 1.0
            s_norm = shares.get("normalization", 0.0)
            f = 1 - s_tr - shares.get("matmul/conv", 0.0) * (1 - 1 / K_CONV_CHANNELS_LAST) - s_norm * (1 - 1 / k_norm)
            recs.append(_rec("channels_last memory format", _gain((1 - u) + u * f, floor),
                             f"layout transposes {s_tr * 100:.1f}% of kernel time removed, convolutions x1/{K_CONV_CHANNELS_LAST:g}"
                             + (f", {precision} normalization {s_norm * 100:.0f}% x1/{k_norm:g} (NHWC kernels)" if k_norm > 1 else ""),
                             {"channels_last": True}, "model and inputs in NHWC (torch.channels_last)"))
    if compiler and not g("compile") and u is not None and not g("recurrent"):
        conv = bool(g("convolutional"))
        s_fuse = shares.get("elementwise", 0.0) + shares.get("reduction", 0.0) + (0.0 if conv else shares.get("normalization", 0.0))
        if conv:  # cuDNN's own layout transposes are elementwise by name and stay
            s_fuse = max(0.0, s_fuse - (g("layout_transpose_share_pct") or 0) / 100.0)
        what = "elementwise+reduction" + ("" if conv else "+normalization")
        recs.append(_rec(compiler, _gain(1 - FUSION_CUT * s_fuse),
                         f"{what} {s_fuse * 100:.0f}% of kernel time (and of launches) x(1-{FUSION_CUT}); convolutions"
                         f"{' and batch norm' if conv else ''} stay as they are",
                         {"compile": True}, f"{compiler}(model) (mode='reduce-overhead' adds CUDA graphs where the GPU waits on launches)",
                         spread=COMPILE_SPREAD))
    # The steady steps' own peak where the run counted the warm-up's (autotuner workspaces) apart:
    # the autotuner picks algorithms that fit what is free, so it does not bound the batch.
    peak, total, batch = g("steady_peak_allocated_bytes") or g("peak_reserved_bytes"), g("device_total_bytes"), g("batch_size")
    if peak and total and batch and u is not None:
        factor = min(MAX_BATCH_FACTOR, int(0.85 * total / peak))
        d = device_share(facts)
        if d is not None:  # host and device overlap: a step is max(host, device); below 1 the host sets it
            mean_us = g("mean_kernel_us")
            fixed = min(KERNEL_FIXED_US, mean_us)
            growth, under_filled = fill_growth(g("kernel_fill_share_pct"), factor)
            kernel_growth = (fixed + (mean_us - fixed) * growth) / mean_us
            host = 1.0 + (HOST_PER_SAMPLE_SHARE * (factor - 1) if g("host_work_per_sample") else 0.0)
            gain = (factor / max(host, d * kernel_growth) - 1) * 100
            why = (f"peak {peak / 2**30:.1f} of {total / 2**30:.0f} GiB; kernels fill {d * 100:.0f}% of an unprofiled step and take"
                   f" {kernel_growth:.1f}x as long at {factor}x the batch ({KERNEL_FIXED_US:g} us of each does not grow"
                   + (f"; kernels of under a quarter block per SM, {under_filled:.0f}% of kernel time, fill idle SMs and do not grow"
                      if under_filled >= 1 else "")
                   + "); the host's"
                   + (f" step grows {host:.1f}x (per-sample host work)" if host > 1 else " time per step is amortized over the samples"))
        else:
            gain = (1 / (u + (1 - u) / max(factor, 1)) - 1) * 100
            why = (f"peak {peak / 2**30:.1f} of {total / 2**30:.0f} GiB; idle {(1 - u) * 100:.0f}% per step amortized over {factor}x the samples"
                   " (kernel time assumed linear in batch)")
        cores = g("cores")
        if g("batch_on_host_cores") and cores:  # the batch's work runs on CPU cores (a3c's actors): no more parallel than the cores
            parallel = min(factor, cores / batch)
            gain = min(gain, (parallel - 1) * HOST_CORE_YIELD * 100)
            why = (f"the batch runs on the host's {cores} cores: {batch} -> {batch * factor} runs at most {max(parallel, 1):.2g}x as many"
                   f" at once, each added one at {HOST_CORE_YIELD:g} of the first ones' rate")
        if factor >= 2 and gain >= MIN_GAIN_PCT:
            recs.append(_rec(f"larger batch ({batch} -> {batch * factor})", gain, why,
                             {"batch_size": batch * factor}, "raise --batch-size (retune the learning rate for training to the same accuracy)"))
    kind = g("optimizer_kind")
    s_opt = shares.get("optimizer", 0.0)
    if g("fused_optimizer_how") and u is not None and kind in OPTIMIZER_FACTOR and s_opt >= 0.01:
        factor = OPTIMIZER_FACTOR[kind]
        recs.append(_rec(f"fused optimizer (now {kind})", _gain((1 - u) + u * (1 - s_opt * (1 - factor)), floor),
                         f"optimizer {s_opt * 100:.1f}% of kernel time x{factor}", g("fused_optimizer_apply"), g("fused_optimizer_how")))
    if (g("alloc_retries") or 0) > 0 and g("allocator_setting"):
        recs.append(_rec("expandable allocator segments", 5.0, "allocator retries flush the cache and synchronize the device (rough 5%)",
                         g("allocator_apply"), g("allocator_setting")))
    return recs


def _cpu(facts: dict[str, Any]) -> list[dict[str, Any]]:
    g = facts.get
    recs: list[dict[str, Any]] = []
    shares = {k: v / 100.0 for k, v in (g("host_class_share") or {}).items()}
    compiler = g("compiler")
    step_us = (g("step_ms") or 0) * 1e3
    overhead = min(0.9, (g("ops_per_step") or 0) * CPU_OP_OVERHEAD_US / step_us) if step_us and g("ops_per_step") else None
    if overhead is not None and g("batch_size") and g("host_peak_rss_bytes") and g("host_total_bytes"):
        factor = min(MAX_BATCH_FACTOR, int(0.5 * g("host_total_bytes") / g("host_peak_rss_bytes")))
        if factor >= 2:
            batch = g("batch_size")
            recs.append(_rec(f"larger batch ({batch} -> {batch * factor})", (1 / ((1 - overhead) + overhead / factor) - 1) * 100,
                             f"{g('ops_per_step'):.0f} ops per step x ~{CPU_OP_OVERHEAD_US:g} us dispatch = {overhead * 100:.0f}% of the step,"
                             f" amortized over {factor}x the samples",
                             {"batch_size": batch * factor}, "raise --batch-size"))
    if g("channels_last_lever") and g("convolutional") and not g("channels_last"):
        s_conv = shares.get("matmul/conv", 0.0)
        recs.append(_rec("channels_last memory format", _gain(1 - s_conv * (1 - 1 / K_CONV_CHANNELS_LAST)),
                         f"convolutions {s_conv * 100:.0f}% of CPU op time x1/{K_CONV_CHANNELS_LAST:g} (oneDNN prefers NHWC)",
                         {"channels_last": True}, "model and inputs in NHWC (torch.channels_last)"))
    if compiler and not g("compile"):
        s_fuse = shares.get("elementwise", 0.0) + shares.get("normalization", 0.0)
        recs.append(_rec(compiler, _gain(1 - FUSION_CUT * s_fuse - 0.5 * (overhead or 0)),
                         f"elementwise+normalization {s_fuse * 100:.0f}% of CPU op time x(1-{FUSION_CUT}), dispatch overhead halved",
                         {"compile": True}, f"{compiler}(model) (fused code for the CPU)"))
    kind, s_opt = g("host_optimizer_kind"), shares.get("optimizer", 0.0)
    if g("fused_optimizer_how") and kind in OPTIMIZER_FACTOR and s_opt >= 0.03:
        factor = OPTIMIZER_FACTOR[kind]
        recs.append(_rec(f"fused optimizer (now {kind})", _gain(1 - s_opt * (1 - factor)), f"optimizer {s_opt * 100:.0f}% of CPU op time x{factor}",
                         g("fused_optimizer_apply"), g("fused_optimizer_how")))
    if g("cpu_amx_bf16") and g("precision") == "fp32":
        s_mm = shares.get("matmul/conv", 0.0)
        recs.append(_rec("precision bf16 (AMX)", _gain(1 - s_mm + s_mm / 3.0), f"matmul/conv {s_mm * 100:.0f}% of CPU op time x1/3 on AMX tiles",
                         {"precision": "bf16"}, "autocast to bfloat16 on a CPU with AMX"))
    return recs
