"""PyTorch memory profile of one training step, on a stock PyTorch: `tbd memory resnet50`.

How bytes are attributed (by tensor storage, so views are counted once):
- weights, optimizer state, input batch: storages of the parameters, of `optimizer.state` and of
  the session's batch, known before the step;
- gradients: storages of `p.grad`, read at every sample (they appear during backward);
- feature maps: storages packed by `torch.autograd.graph.saved_tensors_hooks` (what autograd
  keeps for backward) that belong to none of the above; forward pre/post hooks on every module
  say which layer was running when a tensor was saved;
- workspace / temporaries: every other storage an op created during the step (a
  `TorchDispatchMode` sees each op's outputs and keeps weak references, so it knows when they die),
  plus, on CUDA, what the allocator had allocated inside the peak op beyond the op's live tensors
  (cuDNN/cuBLAS scratch space);
- unattributed (CUDA): the allocator's allocated bytes minus all of the above.
A sample is taken after every op. On CUDA the peak is the op during which
`torch.cuda.max_memory_allocated` last rose, so the categories add up to it exactly; on the CPU
there is no allocator counter and the peak is the largest sum of live storages (scratch space
inside an op is not visible there).
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from tbd import frameworks
from tbd.results.memory_profile import empty_categories


def _key(t: torch.Tensor) -> tuple[int, int] | None:
    """(data pointer, bytes) of a tensor's storage; None for tensors without plain storage."""
    try:
        st = t.untyped_storage()
        ptr = st.data_ptr()
    except Exception:  # sparse, nested, meta tensors have no plain storage
        return None
    return (ptr, st.nbytes()) if ptr else None


def _unique_bytes(tensors: Iterable[torch.Tensor], device: torch.device) -> dict[int, int]:
    out: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device == device:
            k = _key(t)
            if k:
                out[k[0]] = k[1]
    return out


def resolve(device: torch.device) -> torch.device:
    """'cuda' -> 'cuda:N' of the current device: tensors carry an index, and torch.device('cuda')
    does not compare equal to torch.device('cuda:0')."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def training_parts(session) -> tuple[list[nn.Module], list[torch.optim.Optimizer]]:
    """Models and optimizers of a session, also those a workload keeps in `task.extra`
    (GANs and RL workloads train several)."""
    models, optims = [session.model], []
    candidates = [getattr(session, "optimizer", None), *session.extras.values()]
    for c in candidates:
        for item in (c.values() if isinstance(c, dict) else c if isinstance(c, (list, tuple)) else [c]):
            if isinstance(item, torch.optim.Optimizer) and all(item is not o for o in optims):
                optims.append(item)
            elif isinstance(item, nn.Module) and all(item is not m for m in models):
                models.append(item)
    return models, optims


def optimizer_tensors(optims: list[torch.optim.Optimizer]) -> list[torch.Tensor]:
    return [v for o in optims for state in o.state.values() for v in tree_leaves(state) if isinstance(v, torch.Tensor)]


class _Entry:
    __slots__ = ("nbytes", "refs", "layer", "weight_copy")

    def __init__(self, nbytes: int, layer: str):
        self.nbytes, self.refs, self.layer, self.weight_copy = nbytes, {}, layer, False


class StepTracker(TorchDispatchMode):
    """Samples memory by category after every op of the steps run inside it."""

    def __init__(self, session, device: torch.device):
        super().__init__()
        self.device = device = resolve(device)
        self.cuda = device.type == "cuda"
        self.models, self.optims = training_parts(session)
        self.params = [p for m in self.models for p in m.parameters()]
        # Weights are the parameters plus the model's buffers (BatchNorm running statistics).
        self.buffers = [b for m in self.models for b in m.buffers()]
        self.session = session
        self.layer_stack: list[str] = []
        self.names = {id(mod): (name or type(mod).__name__, type(mod).__name__) for m in self.models for name, mod in m.named_modules()}
        self.phase = "start"
        self.reset_step()

    # -- bookkeeping of one step ------------------------------------------------------------------
    def reset_step(self) -> None:
        self.weights = _unique_bytes([*self.params, *self.buffers], self.device)
        self.optim = {k: v for k, v in _unique_bytes(optimizer_tensors(self.optims), self.device).items() if k not in self.weights}
        batch = [t for b in self.session.batches for t in tree_leaves(b)]
        self.batch = {k: v for k, v in _unique_bytes(batch, self.device).items() if k not in self.weights}
        self.static = set(self.weights) | set(self.optim) | set(self.batch)
        self.live: dict[int, _Entry] = {}
        self.saved: dict[int, str] = {}  # storage -> layer that saved it
        self.samples: list[dict[str, int]] = []
        self.phases: list[str] = []
        self.ops: list[str] = []
        self.peak_index, self.peak_transient, self.last_max = 0, 0, 0
        self.largest_tensor = 0  # the step's largest tensor storage (the batch-size model's headroom)
        # ... and where it was made: a block made once early in the step (cuDNN's RNN reserve in the
        # forward pass) meets an unfragmented allocator; one made in the backward pass, late, may not.
        self.largest_tensor_phase = ""
        self.largest_backward_tensor = 0
        self.fmap_best, self.fmap_layers = -1, {}
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.last_max = torch.cuda.max_memory_allocated(self.device)
        self.sample("step start")

    def _register(self, t: torch.Tensor, weight_copy: bool = False) -> int | None:
        if not isinstance(t, torch.Tensor) or t.device != self.device:
            return None
        k = _key(t)
        if k is None or k[0] in self.static:
            return None
        ptr, nbytes = k
        entry = self.live.get(ptr)
        if entry is None:
            entry = self.live[ptr] = _Entry(nbytes, self.layer_stack[-1] if self.layer_stack else "(outside modules)")
        entry.nbytes = max(entry.nbytes, nbytes)
        if entry.nbytes > self.largest_tensor or entry.nbytes > self.largest_backward_tensor:
            phase = self.current_phase()  # asked only for a new largest: this runs after every op
            if entry.nbytes > self.largest_tensor:
                self.largest_tensor, self.largest_tensor_phase = entry.nbytes, phase
            if phase == "backward":
                self.largest_backward_tensor = max(self.largest_backward_tensor, entry.nbytes)
        entry.weight_copy |= weight_copy
        oid = id(t)
        ref = entry.refs.get(oid)
        if ref is None or ref() is not t:
            entry.refs[oid] = weakref.ref(t, lambda r, ptr=ptr, oid=oid: self._dead(ptr, oid, r))
        return ptr

    def _dead(self, ptr: int, oid: int, ref: weakref.ref) -> None:
        entry = self.live.get(ptr)
        if entry is None or entry.refs.get(oid) is not ref:
            return
        del entry.refs[oid]
        if not entry.refs:
            del self.live[ptr]
            self.saved.pop(ptr, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # Autocast's low-precision copies of the weights are scratch copies, not activations.
        weight_copy = (func is torch.ops.aten._to_copy.default and isinstance(args[0], torch.Tensor)
                       and _key(args[0]) is not None and _key(args[0])[0] in self.weights)
        for t in tree_leaves(out):
            self._register(t, weight_copy)
        self.sample(str(func.overloadpacket.__name__) if hasattr(func, "overloadpacket") else str(func))
        return out

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        ptr = self._register(t)
        if ptr is not None and ptr not in self.saved and not self.live[ptr].weight_copy:
            self.saved[ptr] = self.layer_stack[-1] if self.layer_stack else "(outside modules)"
        return t

    # -- sampling ---------------------------------------------------------------------------------
    def current_phase(self) -> str:
        return "backward" if torch._C._current_graph_task_id() != -1 else self.phase

    def sample(self, op: str) -> None:
        phase = self.current_phase()
        cats = empty_categories()
        cats["weights"] = sum(self.weights.values())
        cats["optimizer_state"] = sum(self.optim.values())
        cats["input_batch"] = sum(self.batch.values())
        grads = _unique_bytes((p.grad for p in self.params if p.grad is not None), self.device)
        grads = {k: v for k, v in grads.items() if k not in self.static}
        cats["gradients"] = sum(grads.values())
        fmap = temp = 0
        for ptr, e in self.live.items():
            if ptr in grads:
                continue
            if ptr in self.saved:
                fmap += e.nbytes
            else:
                temp += e.nbytes
        cats["feature_maps"], cats["workspace"] = fmap, temp
        index = len(self.samples)
        if self.cuda:
            allocated = torch.cuda.memory_allocated(self.device)
            cats["unattributed"] = allocated - sum(cats.values())
            high = torch.cuda.max_memory_allocated(self.device)
            if high > self.last_max or index == 0:
                # The peak happened during this op: what it allocated and freed inside is scratch.
                self.peak_index, self.peak_transient, self.last_max = index, high - allocated, high
        elif not self.samples or sum(cats.values()) > sum(self.samples[self.peak_index].values()):
            self.peak_index = index
        if fmap > self.fmap_best:
            self.fmap_best = fmap
            layers: dict[str, int] = {}
            for ptr, layer in self.saved.items():
                if ptr in self.live and ptr not in grads:
                    layers[layer] = layers.get(layer, 0) + self.live[ptr].nbytes
            self.fmap_layers = layers
        self.samples.append(cats)
        self.phases.append(phase)
        self.ops.append(op)

    def peak(self) -> dict[str, int]:
        cats = dict(self.samples[self.peak_index])
        cats["workspace"] += self.peak_transient
        return cats

    # -- hooks around the step --------------------------------------------------------------------
    def install(self) -> list[Any]:
        handles = []

        def pre(mod, _inputs):
            self.phase = "forward"
            self.layer_stack.append(self.names.get(id(mod), (type(mod).__name__,))[0])

        def post(mod, _inputs, _output):
            if self.layer_stack:
                self.layer_stack.pop()

        for m in self.models:
            for mod in m.modules():
                handles.append(mod.register_forward_pre_hook(pre))
                handles.append(mod.register_forward_hook(post, always_call=True))
        for o in self.optims:
            handles.append(o.register_step_pre_hook(lambda *a: setattr(self, "phase", "optimizer")))
            handles.append(o.register_step_post_hook(lambda *a: setattr(self, "phase", "after step")))
        return handles


def layer_table(tracker: StepTracker) -> list[dict[str, Any]]:
    types = {name: typ for name, typ in tracker.names.values()}
    rows = [{"layer": layer, "type": types.get(layer, "-"), "bytes": int(n)} for layer, n in tracker.fmap_layers.items() if n > 0]
    return sorted(rows, key=lambda r: -r["bytes"])


def run_tracked_step(session, device: torch.device) -> tuple[StepTracker, BaseException | None]:
    """Run one training step under the tracker. An OOM stops it and leaves the samples taken up
    to the op that failed."""
    session.forget_loss()  # the previous step's loss is not this step's memory
    cleanup(device)
    tracker = StepTracker(session, device)
    handles = tracker.install()
    error = None
    try:
        with torch.autograd.graph.saved_tensors_hooks(tracker.pack, lambda t: t), tracker:
            session.step()
        tracker.phase = "end"
        tracker.sample("step end")
    except torch.OutOfMemoryError as exc:
        error = exc
        tracker.sample("out of memory")  # the exception's frames still hold what was live
    finally:
        for h in handles:
            h.remove()
    if tracker.cuda and error is None:
        torch.cuda.synchronize(device)
    return tracker, error


def warm_up(session, device: torch.device, steps: int) -> bool:
    """Untracked steps first (optimizer state, cuDNN autotuning); False if one ran out of memory,
    in which case the tracked step that follows runs out too and shows where."""
    try:
        for _ in range(steps):
            session.step()
        return True
    except torch.OutOfMemoryError as exc:
        exc.__traceback__ = None
        session.forget_loss()
        cleanup(device)
        return False


def analytic_sizes(session, device: torch.device) -> dict[str, int]:
    """Sizes computed from shapes (numel x element size), to check the measured categories."""
    models, optims = training_parts(session)
    params = {id(p): p for m in models for p in m.parameters()}.values()
    buffers = {id(b): b for m in models for b in m.buffers()}.values()
    state = {id(t): t for t in optimizer_tensors(optims)}.values()
    return {
        "weights_bytes": sum(p.numel() * p.element_size() for p in params),
        "buffers_bytes": sum(b.numel() * b.element_size() for b in buffers),
        "gradients_bytes": sum(p.numel() * p.element_size() for p in params if p.requires_grad),
        "optimizer_state_bytes": sum(t.numel() * t.element_size() for t in state if t.device == device),
        "num_parameters": sum(p.numel() for p in params),
    }


def cleanup(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def open_registered(config):
    return frameworks.open_session(config)


def profile(config, warmup: int = 1, open_session=None) -> dict[str, Any]:
    """Open a session for `config` (a RunConfig with data_pool 1), run `warmup` steps and one
    profiled step under the tracker; an OOM gives a profile with status 'oom', not an exception."""
    from tbd.results.memory_profile import new_profile

    device = resolve(torch.device(config.device))
    prof = new_profile(framework="torch", workload=config.workload, flavor=config.flavor, device=config.device,
                       batch_size=config.batch_size, precision=config.precision)
    prof["method"] = {
        "attribution": "tensor storages: parameters, .grad, optimizer.state, the batch; saved_tensors_hooks for feature maps;"
                       " a TorchDispatchMode for every other tensor the step creates",
        "sampling": "after every op of the step",
        "peak": "op during which torch.cuda.max_memory_allocated last rose; in-op scratch counted as workspace" if device.type == "cuda"
                else "largest sum of live storages (CPU: no allocator counter; scratch inside an op is not seen)",
        "warmup_steps": warmup,
        "estimated": [] if device.type == "cuda" else ["allocator_cache and framework_overhead are not defined on the CPU (0)"],
    }
    try:
        return _profile_into(prof, config, device, warmup, open_session)
    finally:  # any failure too: the next profile in this process must start from an empty device
        cleanup(device)


def _profile_into(prof: dict[str, Any], config, device, warmup: int, open_session) -> dict[str, Any]:
    from tbd.results.memory_profile import allocated_total, downsample, finish_peak, nvml_process_bytes

    session = tracker = error = None
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        session = (open_session or open_registered)(config)
        warm_up(session, device, warmup)
        tracker, error = run_tracked_step(session, device)
        # Optimizer state appears in the first step: sizes are taken again after it.
        prof["analytic"] = analytic_sizes(session, device)
    except torch.OutOfMemoryError as exc:  # the model or its batch does not fit at all
        error = exc
    except Exception:  # not ours to explain: release the model and its tensors, then re-raise
        if session is not None:
            session.close()
        raise
    if error is not None:
        where = f" in {tracker.phases[-1]} ({tracker.ops[-1]})" if tracker and tracker.samples else " while building the model and data"
        prof["status"] = "oom"
        prof["error"] = f"out of memory at batch size {config.batch_size}{where}; the breakdown is what was measured up to then; try a smaller --batch-size"
        error.__traceback__ = None  # its frames hold the step's tensors
        del error
    if tracker is not None and tracker.samples:
        cats = tracker.peak()
        peak = prof["peak"]
        peak.update(index=tracker.peak_index, phase=tracker.phases[tracker.peak_index], op=tracker.ops[tracker.peak_index],
                    largest_tensor_bytes=tracker.largest_tensor, largest_tensor_phase=tracker.largest_tensor_phase,
                    largest_backward_tensor_bytes=tracker.largest_backward_tensor)
        if tracker.cuda:
            # What the peak op allocated and freed inside (cuDNN/cuBLAS scratch, counted in its
            # workspace above), and the most the step's tensors held between ops: the batch-size
            # model fits the latter where the scratch is a convolution's (profiler.model_bytes).
            peak["in_op_scratch_bytes"] = int(tracker.peak_transient)
            peak["live_peak_bytes"] = max(allocated_total(sample) for sample in tracker.samples)
        timeline = {"axis": "sample (after each op)", "index": list(range(len(tracker.samples))), "phase": tracker.phases, "op": tracker.ops,
                    "categories": {k: [s[k] for s in tracker.samples] for k in cats}}
        prof["timeline"] = downsample(timeline, tracker.peak_index)
        prof["layers"] = layer_table(tracker)
    else:
        cats = empty_categories()
    if device.type == "cuda":
        high = int(torch.cuda.max_memory_allocated(device))
        reserved = int(torch.cuda.max_memory_reserved(device))
        nvml_bytes = nvml_process_bytes(device.index or 0)
        if not tracker or not tracker.samples:
            cats["unattributed"] = high
        cats["allocator_cache"] = max(0, reserved - high)
        cats["framework_overhead"] = max(0, nvml_bytes - int(torch.cuda.memory_reserved(device))) if nvml_bytes else 0
        if not nvml_bytes:
            prof["method"]["estimated"].append("framework_overhead: NVML could not report this process's memory (0 shown)")
        prof["allocator"] = {"peak_allocated_bytes": high, "peak_reserved_bytes": reserved, "nvml_process_bytes": nvml_bytes,
                             "device_total_bytes": int(torch.cuda.get_device_properties(device).total_memory)}
    else:
        import psutil

        prof["allocator"] = {"host_rss_bytes": int(psutil.Process().memory_info().rss), "host_total_bytes": int(psutil.virtual_memory().total)}
    finish_peak(prof, cats)
    if device.type == "cuda" and prof["allocator"]["peak_allocated_bytes"]:
        prof["checks"] = {"categories_vs_allocator_peak_pct": 100.0 * (prof["peak"]["allocated_bytes"] / prof["allocator"]["peak_allocated_bytes"] - 1)}
    if session is not None:
        session.close()
    del session, tracker  # profile() then empties the allocator's cache
    return prof
