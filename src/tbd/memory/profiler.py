"""Framework dispatch and the batch-size sweep behind `tbd memory WORKLOAD [--max-batch]`.

`profile(config)` returns one memory profile (see categories.new_profile) from the framework's
profiler; `fit_batch_model(config, batches)` profiles a few small batches and fits
fixed + per-sample memory; `budget(...)` says how much memory a batch may use.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tbd import registry
from tbd.errors import UsageError
from tbd.results import environment
from tbd.results.record import RunRecord
from tbd.memory.batch_model import BatchModel, fit
from tbd.results.memory_profile import fmt_bytes

def profile(config, warmup: int = 1, **kwargs: Any) -> dict[str, Any]:
    """One profiled training step after `warmup` steps, with a single resident batch, by the
    framework plugin's memory profiler."""
    config = dataclasses.replace(config, data_pool=1, isolate=False)
    return registry.framework(config.framework).profile_memory(config, warmup, **kwargs)


def headroom_tensor_bytes(peak: dict[str, Any]) -> int:
    """The tensor the batch-size model keeps headroom for: the largest one the backward pass makes.
    By then the forward pass's feature maps fill the memory and partial frees have cut it into
    pieces, so a large block may not be found. A block made early in the forward pass is placed
    while most of the memory is still free, and its bytes are in the allocated peak already.
    deepspeech2's cuDNN GRU reserve, 75% of its per-sample memory, made the headroom predict 484
    where 774 trains (bf16, H200, 2026-11-30); its backward pass's largest tensor is 3.8 MiB a
    sample, and the prediction is 827. Where the backward pass makes the largest tensor too
    (gpt's logits, the other suite workloads), nothing changes. Profiles without the fact (older
    records) keep the step's largest tensor."""
    backward = peak.get("largest_backward_tensor_bytes")
    return int(backward if backward is not None else peak.get("largest_tensor_bytes") or 0)


# The ops whose workspace cuDNN's autotuner sizes by the memory free (ATen's names, forward and backward).
CONVOLUTION_OPS = ("convolution", "cudnn_convolution", "_convolution")


def model_bytes(prof: dict[str, Any]) -> int:
    """What must fit on the device for this step: the allocator's allocated peak. PyTorch's
    cached-but-free blocks are left out: near the limit the caching allocator empties its cache
    and retries before it fails. Fitting on the reserved peak instead predicted 16% too small a
    batch for resnet50 on an H100 (801 against a real boundary of 957, docs/results.md).

    Where the peak is inside a convolution, the line takes the most the step's tensors held
    between two ops instead, leaving out the scratch that convolution took: cuDNN's autotuner
    picks the fastest algorithm whose workspace it can allocate, so a small batch with the device
    nearly empty takes large-workspace algorithms that a batch near the limit goes without. On
    an H200 (fp32, 2026-11-30) that scratch was 18 MiB a sample of wgan's 73 at batches 64-256
    and 27 of 82 at 628, and faster_rcnn's peak at 150 had none; the line through the whole
    peaks predicted 1628 and 141, where 1794 and 154 train."""
    peak = prof["peak"]
    if str(peak.get("op", "")).startswith(CONVOLUTION_OPS) and peak.get("live_peak_bytes") is not None:
        return int(peak["live_peak_bytes"])
    return int(peak["allocated_bytes"])


# A line fitted on small batches is extrapolated at most this far: where it predicts more than
# EXTRAPOLATION_LIMIT x the largest batch measured, a batch at a third of the prediction is
# profiled and the line refitted on the three largest batches (up to MAX_EXTRA_FITS times). On an
# H200, wgan's line from 16/32/64 (fixed workspaces still large beside the samples) predicted 3085
# and 2904 ran out of memory; resnet50's from 8/16/32 extrapolated 100x.
EXTRAPOLATION_LIMIT = 4
MAX_EXTRA_FITS = 2


def fit_batch_model(
    config, batches: list[int], warmup: int = 1, known: dict[int, dict] | None = None, budget_bytes: float | None = None,
    **kwargs: Any,
) -> tuple[BatchModel | None, list[dict[str, Any]]]:
    """Profile each batch size (reusing `known` profiles by batch size) and fit the model; a
    batch that runs out of memory ends the sweep (larger ones would too). With `budget_bytes`,
    larger batches are added until the prediction lies within EXTRAPOLATION_LIMIT x the largest
    batch measured."""
    profiles, points, largest = [], [], []

    def measure(b: int) -> bool:
        prof = (known or {}).get(b) or profile(dataclasses.replace(config, batch_size=b), warmup, **kwargs)
        profiles.append(prof)
        if prof["status"] != "ok":
            return False
        points.append((b, model_bytes(prof)))
        largest.append((b, headroom_tensor_bytes(prof["peak"])))
        return True

    for b in batches:
        if not measure(b):
            break
    if len(points) < 2:
        return None, profiles
    model = fit(points).with_headroom(largest)
    for _ in range(MAX_EXTRA_FITS if budget_bytes else 0):
        predicted, biggest = model.per_sample_bytes > 0 and model.max_batch(budget_bytes), points[-1][0]
        if not predicted or predicted <= EXTRAPOLATION_LIMIT * biggest or predicted // 3 <= biggest:
            break
        if not measure(predicted // 3):
            break
        # The small batches' fixed costs (workspaces, allocator rounding) do not scale: fit the largest.
        model = fit(points[-3:]).with_headroom(largest)
    return model, profiles


def _input_bytes_per_sample(profiles: list[dict[str, Any]]) -> float:
    inputs = [p["peak"]["categories"].get("input_batch", 0) / p["batch_size"] for p in profiles if p["status"] == "ok" and p["batch_size"]]
    return min(inputs) if inputs else 0


def grows_by_input_alone(model: BatchModel, profiles: list[dict[str, Any]]) -> bool:
    """Whether the fitted line adds no more a sample than the sample's own input: the measured
    peaks hold no activation (a small model's CPU step peaks in its optimizer step)."""
    return model.per_sample_bytes <= 1.1 * _input_bytes_per_sample(profiles)


def unusable_fit(model: BatchModel, profiles: list[dict[str, Any]]) -> str | None:
    """Why a fitted line cannot predict a batch (None when it can): each sample must cost more
    than its own input bytes, and the line must pass near the measured points. A line that grows
    by the input alone comes from peaks where no activation is held (small batches on the CPU
    peak in the optimizer step): larger batches peak elsewhere, and the prediction is absurd
    ('12.0 KiB per sample ... 1366558' for resnet50 tiny)."""
    if grows_by_input_alone(model, profiles):
        return (f"the fitted line adds {fmt_bytes(model.per_sample_bytes)} per sample, no more than one sample's input "
                f"({fmt_bytes(_input_bytes_per_sample(profiles))}): the measured peaks do not hold the batch's activations, "
                "so larger batches peak elsewhere")
    if model.max_residual_pct > 20:
        return f"the measured peaks lie up to {model.max_residual_pct:.0f}% off the fitted line"
    return None


def optimizer_peaks(model: BatchModel, profiles: list[dict[str, Any]]) -> list[int]:
    """Batches of the line's points whose peak lies in the optimizer step, where no activation is
    held (PyTorch's profiles say the phase): there the peak does not grow with the batch."""
    points = {b for b, _ in model.points}
    return sorted(p["batch_size"] for p in profiles
                  if p["status"] == "ok" and p["batch_size"] in points and p["peak"].get("phase") == "optimizer")


def mixed_peaks(model: BatchModel, profiles: list[dict[str, Any]]) -> str | None:
    """Why a line through peaks of two kinds predicts nothing (None where its points are of one
    kind): below a batch the step peaks in the optimizer, flat, and above it with the activations,
    so a line through both is bent (resnet50 tiny on the CPU: 32 and 64 in the optimizer step, 128
    in the backward pass, a slope of 0.96 MiB a sample against 1.7 MiB of feature maps)."""
    flat = optimizer_peaks(model, profiles)
    if not flat or len(flat) == len(model.points):
        return None
    which = f"the peaks of batches {', '.join(map(str, flat))} lie" if len(flat) > 1 else f"the peak of batch {flat[0]} lies"
    return f"{which} in the optimizer step, where no activation is held, and the others' do not: the points do not lie on one line"


# How many times the default fit batches are made 4x larger where their peaks hold no activation.
MAX_WIDENINGS = 3


def widened_fit_batches(model: BatchModel | None, profiles: list[dict[str, Any]], batches: list[int],
                        budget_bytes: float) -> list[int] | None:
    """Batches 4x `batches` where the line through them grew by the input alone or some of them
    peaked in the optimizer step, so that the step's feature maps make the peaks; None where the
    line's points all hold activations, or
    where the largest new batch's feature maps (per sample, from the per-layer table of the
    largest batch measured) beside that batch's peak would not fit in `budget_bytes`, or where no
    per-layer table says what they cost."""
    if model is None or not (grows_by_input_alone(model, profiles) or optimizer_peaks(model, profiles)):
        return None
    if any(p["peak"].get("not_measured") for p in profiles if p["status"] == "ok"):  # larger batches would say no more
        return None
    measured = [p for p in profiles if p["status"] == "ok" and p.get("layers")]
    if not measured:
        return None
    largest = max(measured, key=lambda p: p["batch_size"])
    feature_maps_per_sample = sum(layer["bytes"] for layer in largest["layers"]) / largest["batch_size"]
    wider = [4 * b for b in batches]
    if largest["peak"]["allocated_bytes"] + wider[-1] * feature_maps_per_sample > budget_bytes:
        return None
    return wider


def budget(prof: dict[str, Any], memory_bytes: int | None) -> tuple[int, str]:
    """Bytes a training step may use, and a sentence saying where the figure comes from."""
    overhead = prof["peak"]["categories"].get("framework_overhead", 0)
    alloc = prof.get("allocator") or {}
    if memory_bytes is not None:
        if prof["device"] == "cuda" and overhead:
            return memory_bytes - overhead, f"--memory {fmt_bytes(memory_bytes)} minus the {fmt_bytes(overhead)} of CUDA context and libraries measured here"
        return memory_bytes, f"--memory {fmt_bytes(memory_bytes)}"
    if prof["device"] == "cuda":
        if alloc.get("bytes_limit"):  # a framework that caps its own allocator (JAX's preallocation)
            return int(alloc["bytes_limit"]), f"the {prof['framework']} allocator's limit on this GPU ({fmt_bytes(alloc['bytes_limit'])})"
        total = alloc.get("device_total_bytes")
        if total:
            return total - overhead, f"this GPU's {fmt_bytes(total)} minus the {fmt_bytes(overhead)} of CUDA context and libraries measured here"
    host = alloc.get("host_total_bytes")
    if host:
        return int(host), f"host RAM ({fmt_bytes(host)}): no --memory was given and a CPU has no device memory; pass --memory 80GiB to size a GPU"
    raise UsageError("cannot tell how much memory this device has; give it with --memory, e.g. --memory 80GiB")


def memory_record(config, prof: dict[str, Any]) -> RunRecord:
    """The store's record of a memory profile (kind 'memory': its metrics are empty)."""
    config = dataclasses.replace(config, batch_size=prof["batch_size"])
    record = RunRecord.for_run(config, registry.get_spec(config.workload), kind="memory")
    record.environment = environment.capture(config.device, registry.framework(config.framework).libraries)
    record.method = {"memory_profile": prof["method"]}
    if prof["status"] == "ok":
        record.succeed()
    else:
        record.fail("oom", prof["error"])
    alloc = prof.get("allocator") or {}
    record.memory = {"peak_allocated_bytes": prof["peak"]["allocated_bytes"],
                     **{k: v for k, v in alloc.items() if isinstance(v, (int, float)) and k != "peak_allocated_bytes"}}
    return record
