"""JAX memory profile of one training step: `tbd memory resnet50 --framework jax`.

A JAX step is one XLA executable, so the breakdown comes from its buffer assignment
(`jit(step).lower(...).compile().memory_analysis()`), not from watching ops run:
- arguments are split by their pytrees: parameters and model state (BatchNorm statistics) are
  weights, `opt_state` is optimizer state, the batch is the input batch (exact sizes);
- XLA's temporaries hold gradients, saved activations and scratch space. Gradients are sized as
  the parameters (estimated: XLA may free some before others exist); feature maps are the
  residuals `jax.vjp` keeps from the forward pass for the backward pass, found by tracing the
  loss (estimated: XLA may fuse or rematerialize some); workspace is the rest of the temporaries;
- on a GPU a real step is also run, and the allocator's peak (`device.memory_stats()`) is the
  total: what the analysis does not explain is shown as unattributed.
The per-layer table names Flax modules (module calls are traced under `jax.named_scope`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from tbd import frameworks, registry
from tbd.frameworks.base import BuildContext
from tbd.results.memory_profile import empty_categories, finish_peak, mark_oom, new_profile, nvml_process_bytes, three_point_timeline


def tree_bytes(tree: Any) -> int:
    return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "shape")))


def residuals(loss_of, *args) -> tuple[int, list[dict[str, Any]]]:
    """Bytes of what reverse-mode AD saves from the forward pass (arguments excluded: those are
    weights or the batch), and the same bytes by the Flax module that produced them."""
    try:
        from flax.linen.module import override_named_call
    except ImportError:  # not Flax: no module names, one row
        import contextlib

        override_named_call = lambda enable: contextlib.nullcontext()  # noqa: E731
    flat, tree = jax.tree_util.tree_flatten(args)

    def f(*leaves):
        return loss_of(*jax.tree_util.tree_unflatten(tree, leaves))

    with override_named_call(True):
        closed, shapes = jax.make_jaxpr(lambda *a: jax.vjp(f, *a), return_shape=True)(*flat)
    jaxpr = closed.jaxpr
    n_res = len(jax.tree_util.tree_leaves(shapes[1]))
    res_vars = {v for v in jaxpr.outvars[len(jaxpr.outvars) - n_res:] if type(v).__name__ != "Literal"}
    producer = {v: eqn for eqn in jaxpr.eqns for v in eqn.outvars}
    total, layers = 0, {}
    for v in res_vars:
        eqn = producer.get(v)
        if eqn is None:  # an argument (weight or batch) or a constant
            continue
        nbytes = int(np.prod(v.aval.shape, dtype=np.int64) * np.dtype(v.aval.dtype).itemsize)
        name = str(eqn.source_info.name_stack) or "(outside modules)"
        # name stacks look like 'jvp(ResNet50)/layer1_0/conv1': keep the module path
        name = "/".join(p.removeprefix("jvp(").removesuffix(")") for p in name.split("/") if p and not p.startswith("transpose"))
        total += nbytes
        layers[name] = layers.get(name, 0) + nbytes
    rows = [{"layer": k, "type": "-", "bytes": v} for k, v in sorted(layers.items(), key=lambda kv: -kv[1])]
    return total, rows


def _is_oom(exc: BaseException) -> bool:
    return "RESOURCE_EXHAUSTED" in str(exc) or "out of memory" in str(exc).lower()


def profile(config, warmup: int = 1) -> dict[str, Any]:
    impl = registry.load_implementation(config.workload, config.framework)
    prof = new_profile(framework="jax", workload=config.workload, flavor=config.flavor, device=config.device,
                       batch_size=config.batch_size, precision=config.precision)
    prof["method"] = {
        "attribution": "XLA buffer assignment of the jitted step (memory_analysis): arguments split by pytree; temporaries split into"
                       " gradients (sized as the parameters), vjp residuals (feature maps) and the rest (workspace)",
        "estimated": ["gradients: sized as the parameters",
                      "feature_maps: residuals jax.vjp keeps, before XLA fusion/rematerialization",
                      "workspace: XLA temporaries minus gradients and feature maps",
                      "timeline: three points (start, peak, end) from the analysis, not a trace"],
        "warmup_steps": warmup,
    }
    cats = empty_categories()
    session = None
    try:
        session = frameworks.open_session(config)
        state, batch = session.state, session.batches[0]
        cats["weights"] = tree_bytes(state.params) + tree_bytes(state.model_state)
        cats["optimizer_state"] = tree_bytes(state.opt_state)
        cats["input_batch"] = tree_bytes(batch)
        prof["analytic"] = {"weights_bytes": tree_bytes(state.params), "model_state_bytes": tree_bytes(state.model_state),
                            "optimizer_state_bytes": cats["optimizer_state"], "num_parameters": session.num_parameters}
        compiled = session.compiled_step()
        ma = compiled.memory_analysis()
        analysis = {f: int(getattr(ma, f)) for f in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
                                                    "temp_size_in_bytes", "generated_code_size_in_bytes") if hasattr(ma, f)}
        # XLA's own peak figure is not filled in on every backend (on the CPU it can leave out the
        # temporaries), so the peak is also computed from the buffer classes; the larger is used.
        computed = (analysis["argument_size_in_bytes"] + analysis["output_size_in_bytes"] - analysis["alias_size_in_bytes"]
                    + analysis["temp_size_in_bytes"])
        peak = max(computed, int(getattr(ma, "peak_memory_in_bytes", 0) or 0))
        analysis["peak_memory_in_bytes"] = peak
        prof["allocator"] = {"xla_memory_analysis": analysis}
        temp = analysis["temp_size_in_bytes"] + analysis["output_size_in_bytes"] - analysis["alias_size_in_bytes"]
        grads = min(tree_bytes(state.params), temp)
        fmap = 0
        task = impl.build(BuildContext.for_run(config, config.batch_size))  # its loss, traced for the residuals
        if task.train_step is None and task.host_step is None:
            def loss_of(params, model_state, batch, rng):
                return task.loss(params, model_state, batch, rng, True)[0]

            with jax.default_matmul_precision(session.precision):
                fmap, prof["layers"] = residuals(loss_of, state.params, state.model_state, batch, state.rng)
            fmap = min(fmap, temp - grads)
        else:
            prof["method"]["estimated"].append("feature_maps: 0 (the workload has its own train step; its activations are in workspace)")
        cats["gradients"], cats["feature_maps"], cats["workspace"] = grads, fmap, temp - grads - fmap
        # Whatever XLA's peak holds beyond these (the step's rng key, code) is shown, not dropped.
        # It can also hold less: XLA drops arguments the step never reads (seq2seq's and the
        # transformer's batch lengths, a few bytes), which are resident all the same.
        cats["unattributed"] = max(0, peak - sum(cats.values()))
        if config.device == "cuda":
            _measure_on_device(session, warmup, cats, prof)
    except Exception as exc:
        if not _is_oom(exc):
            raise
        mark_oom(prof, config.batch_size, exc)
    finally:
        if session is not None:
            session.close()
    finish_peak(prof, cats)
    prof["peak"].update(phase="backward", op="XLA buffer assignment peak", index=1)
    prof["timeline"] = three_point_timeline(cats, "point of the step (from XLA's analysis)")
    return prof


def _measure_on_device(session, warmup: int, cats: dict[str, int], prof: dict[str, Any]) -> None:
    """Run real steps and take the allocator's peak as the total (GPU)."""
    session.run_steps(max(1, warmup))
    stats = session.memory()
    session.run_steps(1)
    stats = session.memory() or stats
    high = stats.get("peak_allocated_bytes")
    if not high:
        return
    cats["unattributed"] += high - sum(cats[k] for k in ("weights", "gradients", "optimizer_state", "input_batch", "feature_maps", "workspace", "unattributed"))
    pool = stats.get("reserved_bytes") or stats.get("bytes_limit") or high
    cats["allocator_cache"] = max(0, pool - high)
    nvml_bytes = nvml_process_bytes(0)
    cats["framework_overhead"] = max(0, nvml_bytes - pool) if nvml_bytes else 0
    prof["allocator"].update({"peak_allocated_bytes": high, "pool_bytes": pool, "nvml_process_bytes": nvml_bytes, "bytes_limit": stats.get("bytes_limit"),
                            **{f"jax_{k}": v for k, v in stats.items()}})
    prof["checks"] = {"categories_vs_allocator_peak_pct": 100.0 * (sum(cats[k] for k in list(cats)[:7]) / high - 1)}

