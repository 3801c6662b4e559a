"""TensorFlow memory profile of one training step: `tbd memory resnet50 --framework tf`.

TensorFlow exposes no per-tensor allocation trace to Python, so the breakdown combines what is
exact with what its allocator reports:
- exact, from the variables: weights (every model variable, BatchNorm statistics included),
  gradients (one per trainable variable, in the variable's dtype: fp32 under the mixed
  policies too), optimizer state (the optimizer's variables: slots, step counter, loss scale),
  and the input batch (the session's resident tensors);
- measured on a GPU: the allocator's peak over one step (`tf.config.experimental.get_memory_info`
  after `reset_memory_stats`), and the memory NVML charges to the process;
- estimated: feature maps = the peak minus the exact categories (the activations kept for the
  backward pass together with the step's temporaries, which TensorFlow does not separate); the
  framework's share = NVML's figure minus the peak (CUDA context, kernels, and the allocator's
  pool beyond its peak, which TensorFlow does not report).
On the CPU TensorFlow reports no allocator peak: the exact categories are given and the rest is
"not measurable here".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tbd import frameworks
from tbd.results.memory_profile import empty_categories, finish_peak, mark_oom, new_profile, nvml_process_bytes, three_point_timeline


def variable_bytes(variables) -> int:
    return int(sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables))


def tensor_bytes(tensors) -> int:
    return int(sum(int(np.prod(t.shape)) * t.dtype.size for t in tensors))


def _is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "ResourceExhaustedError" or "out of memory" in str(exc).lower() or "OOM" in str(exc)


def profile(config, warmup: int = 1) -> dict[str, Any]:
    prof = new_profile(framework="tf", workload=config.workload, flavor=config.flavor, device=config.device,
                       batch_size=config.batch_size, precision=config.precision)
    prof["method"] = {
        "attribution": "exact sizes of the variables (weights, gradients one per trainable variable, optimizer variables) and of the "
                       "resident batch; on a GPU the allocator's peak over one step (tf.config.experimental.get_memory_info)",
        "estimated": ["feature_maps: the allocator's peak minus the exact categories (saved activations and the step's temporaries, "
                      "not separated by TensorFlow)",
                      "framework_overhead: NVML's memory of the process minus the peak (CUDA context, kernels, the allocator's pool "
                      "beyond its peak)",
                      "timeline: three points (start, peak, end), not a trace"],
        "warmup_steps": warmup,
    }
    cats = empty_categories()
    session = None
    try:
        session = frameworks.open_session(config)
        trainable = session.model.trainable_variables
        cats["weights"] = variable_bytes(session.model.variables)
        cats["gradients"] = variable_bytes(session.variables)
        cats["optimizer_state"] = variable_bytes(session.optimizer.variables)
        cats["input_batch"] = tensor_bytes(session.batches[0])
        prof["analytic"] = {"weights_bytes": variable_bytes(trainable), "model_state_bytes": cats["weights"] - variable_bytes(trainable),
                            "gradient_bytes": cats["gradients"], "optimizer_state_bytes": cats["optimizer_state"],
                            "num_parameters": session.num_parameters}
        if config.device == "cuda":
            _measure_on_device(session, warmup, cats, prof)
        else:  # only the exact categories: say so instead of the GPU's estimates
            prof["method"]["estimated"] = ["feature maps, workspace and the peak: not measurable here (TensorFlow reports no allocator "
                                           "statistics for the CPU); shown as 0", "timeline: three points (start, peak, end), not a trace"]
    except Exception as exc:
        if not _is_oom(exc):
            raise
        mark_oom(prof, config.batch_size, exc)
    finally:
        if session is not None:
            session.close()
    finish_peak(prof, cats)
    prof["peak"].update(phase="backward", op="allocator peak of one step" if config.device == "cuda" else "exact categories only", index=1)
    if config.device != "cuda":  # a batch-size line through these peaks would only count the input
        prof["peak"]["not_measured"] = "TensorFlow reports no allocator statistics for the CPU, so the step's peak is not measurable here"
    prof["timeline"] = three_point_timeline(cats, "point of the step")
    return prof


def _measure_on_device(session, warmup: int, cats: dict[str, int], prof: dict[str, Any]) -> None:
    """Warm up, then one step between a reset of the allocator's peak and its reading."""
    import tensorflow as tf

    session.run_steps(max(1, warmup))
    device = session.device.replace("/device:", "").lstrip("/")
    tf.config.experimental.reset_memory_stats(device)
    session.run_steps(1)
    info = tf.config.experimental.get_memory_info(device)
    peak = int(info["peak"])
    exact = sum(cats[k] for k in ("weights", "gradients", "optimizer_state", "input_batch"))
    cats["feature_maps"] = max(0, peak - exact)
    cats["unattributed"] = min(0, peak - exact)  # negative only if gradients were freed before the peak: shown, not hidden
    nvml_bytes = nvml_process_bytes(0)
    cats["framework_overhead"] = max(0, nvml_bytes - peak) if nvml_bytes else 0
    prof["allocator"] = {"peak_allocated_bytes": peak, "current_bytes": int(info["current"]), "nvml_process_bytes": nvml_bytes}
