"""Which aten ops one WGAN-GP train step of tbd's PyTorch implementation runs, by phase (CPU).

    PYTHONPATH=src python3 bench/wgan_torch_ops_cpu.py --out DIR [--batch 2] [--flavor paper]
        [--no-channels-last] [--option layer_norm=ops] [--option mean_pool=reshape]

Profiles (torch.profiler, CPU, shapes recorded) one train step after a warm-up step, with the
session tbd builds (bf16 autocast, channels_last as asked), and attributes each *kernel-launching* aten op
(one that launches work itself: not a view or allocation, and calling no such op: on a GPU,
roughly one kernel launch each) to a phase:
generator forward, critic forward, penalty gradient (autograd.grad with create_graph), the
critic's backward (which contains the double backward), the optimizer updates, in the critic
iterations or the generator iteration. Phases come from record_function ranges put around the
implementation's own calls (wrapped methods), so the step profiled is tbd's, unchanged. Within
the backward passes, ops are also grouped by the autograd node that ran them
(e.g. NativeGroupNormBackwardBackward0: GroupNorm's double backward). Op counts do not depend
on the batch size; times on a shared 2-core CPU only rank the ops.

Read on 2026-11-29 (paper flavor, batch 1, bf16, channels_last, torch 2.14.1 CPU): 9,801
kernel-launching ops per step (an H200 trace of the same step: 10,356 kernels), 4,171 on
activation-sized inputs. GroupNorm(1, C) accounts for 4,180 of them (43%): its create_graph
backward runs the composite formula (1,020 ops in the penalty gradients), whose own backward is
2,080 more (MulBackward0 alone 1,680), and the first-order backward 980; avg_pool2d 403; the
critic's convolutions 1,797; foreach Adam 2,128 on the CPU (a handful of multi-tensor kernels on
a GPU). channels_last off: 9,647 ops (layout copies 106 instead of 300, most of them in the
convolutions' double backward). layer_norm=ops: 12,116 ops (5,080 large), mean_pool=reshape:
10,067 (4,201), both: 12,422 (5,150); part of the growth is CPU-only (bf16 GroupNorm on the CPU
needs no casts; CPU reductions add fills and copies), so the GPU bench decides.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from tbd import frameworks, registry
from tbd.config import RunConfig
from tbd.workloads.wgan import torch_impl

CAST_OPS = {"aten::to", "aten::_to_copy"}
LAYOUT_OPS = {"aten::contiguous", "aten::clone"}
# Ops that launch no kernel on a GPU (allocation, views, metadata, host scalars).
NO_KERNEL = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::view", "aten::as_strided", "aten::_reshape_alias",
             "aten::reshape", "aten::resize_", "aten::detach", "aten::detach_", "aten::alias", "aten::_nnpack_available",
             "aten::result_type", "aten::resolve_conj", "aten::resolve_neg", "aten::t", "aten::transpose", "aten::permute",
             "aten::expand", "aten::squeeze", "aten::unsqueeze", "aten::flatten", "aten::unflatten", "aten::slice",
             "aten::select", "aten::split", "aten::chunk", "aten::narrow", "aten::lift_fresh", "aten::_unsafe_view",
             "aten::_local_scalar_dense", "aten::item", "aten::split_with_sizes", "aten::view_as", "aten::expand_as",
             "aten::is_same_size", "aten::contiguous", "aten::to", "aten::numpy_T", "aten::_has_compatible_shallow_copy_type"}


class PhaseLabels:
    """record_function ranges around the implementation's calls; the phase (critic iterations or
    the generator iteration) advances with each backward."""

    def __init__(self, n_critic: int):
        self.n_critic, self.backwards = n_critic, 0

    @property
    def where(self) -> str:
        return "critic_iters" if self.backwards < self.n_critic else "generator_iter"

    @contextlib.contextmanager
    def installed(self):
        saved = (torch_impl.Critic.forward, torch_impl.Generator.forward, torch.autograd.grad, torch.Tensor.backward,
                 torch.optim.Adam.step)
        labels = self

        def ranged(name, fn, after=None):
            def wrapper(*args, **kwargs):
                with record_function(f"phase::{labels.where}/{name}"):
                    out = fn(*args, **kwargs)
                if after:
                    after()
                return out
            return wrapper

        def count_backward():
            self.backwards += 1

        torch_impl.Critic.forward = ranged("critic_forward", saved[0])
        torch_impl.Generator.forward = ranged("generator_forward", saved[1])
        torch.autograd.grad = ranged("penalty_grad", saved[2])
        torch.Tensor.backward = ranged("backward", saved[3], count_backward)
        torch.optim.Adam.step = ranged("adam_step", saved[4])
        try:
            yield
        finally:
            (torch_impl.Critic.forward, torch_impl.Generator.forward, torch.autograd.grad, torch.Tensor.backward,
             torch.optim.Adam.step) = saved


def _phase_and_node(event, double_seq: dict[int, str]) -> tuple[str, str]:
    """The phase range around an op, and the autograd node that ran it; a node that
    differentiates an op of the penalty gradient's graph (the double backward) is named
    "2nd[first-order node that made that op]: node"."""
    phase, node = "other", ""
    e = event.cpu_parent
    while e is not None:
        if not node and e.name.startswith("autograd::engine::evaluate_function: "):
            node = e.name.split(": ", 1)[1]
            if e.sequence_nr in double_seq:
                node = f"2nd[{double_seq[e.sequence_nr]}]: {node}"
        if e.name.startswith("phase::"):
            phase = e.name[len("phase::"):]
            break
        e = e.cpu_parent
    return phase, node


def _is_kernel(event) -> bool:
    """An aten op that would launch a kernel on a GPU: not a view/allocation, and none of the ops
    it calls launches one itself (so each kernel is counted once, at the innermost op)."""
    if not event.name.startswith("aten::") or event.name in NO_KERNEL:
        return False
    return not any(_has_kernel(c) for c in event.cpu_children)


def _has_kernel(event) -> bool:
    return _is_kernel(event) or any(_has_kernel(c) for c in event.cpu_children)


def _penalty_graph_seq(events) -> dict[int, str]:
    """Sequence numbers of the autograd nodes the penalty gradient created (create_graph=True),
    each with the first-order backward node whose computation created it."""
    seq = {}
    for e in events:
        if e.sequence_nr < 0 or not e.name.startswith("aten::"):
            continue
        maker, p = "", e.cpu_parent
        while p is not None and not p.name.startswith("phase::"):
            if not maker and p.name.startswith("autograd::engine::evaluate_function: "):
                maker = p.name.split(": ", 1)[1]
            p = p.cpu_parent
        if p is not None and p.name.endswith("/penalty_grad"):
            seq.setdefault(e.sequence_nr, maker or "penalty")
    return seq


def _largest_input(event) -> int:
    sizes = []
    for shape in event.input_shapes or []:
        if isinstance(shape, (list, tuple)) and shape and all(isinstance(d, int) for d in shape):
            n = 1
            for d in shape:
                n *= d
            sizes.append(n)
    return max(sizes, default=0)


def attribute(prof, large: int) -> dict:
    """Kernel-launching aten ops by phase, by (phase, autograd node), by op name; casts and layout
    copies. `large`: ops with an input of at least this many elements (activation-sized, not a
    per-sample or per-channel statistic) are counted apart: on a GPU those take the time."""
    events = prof.events()
    double_seq = _penalty_graph_seq(events)
    by_phase, by_node, by_op = collections.Counter(), collections.Counter(), collections.Counter()
    us_phase, us_op = collections.Counter(), collections.Counter()
    casts, layouts, pools, norms = (collections.Counter() for _ in range(4))
    node_ops: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    large_phase, large_node, large_op = collections.Counter(), collections.Counter(), collections.Counter()
    for e in events:
        if not _is_kernel(e):
            continue
        phase, node = _phase_and_node(e, double_seq)
        if _largest_input(e) >= large:
            large_phase[phase] += 1
            large_node[f"{phase} | {node or '(forward)'}"] += 1
            large_op[e.name] += 1
        # the outermost aten op this kernel belongs to (e.g. aten::native_group_norm, aten::to)
        chain, p = [e.name], e.cpu_parent
        while p is not None and p.name.startswith("aten::"):
            chain.append(p.name)
            p = p.cpu_parent
        top = chain[-1]
        by_phase[phase] += 1
        us_phase[phase] += e.cpu_time_total
        by_op[e.name] += 1
        us_op[e.name] += e.cpu_time_total
        by_node[f"{phase} | {node or '(forward) ' + top}"] += 1
        node_ops[f"{node or '(forward) ' + top}"][e.name] += 1
        if any(c in CAST_OPS for c in chain):
            casts[f"{phase} | {node or top}"] += 1
        if any(c in LAYOUT_OPS for c in chain):
            layouts[f"{phase} | {node or top} | {e.name}"] += 1
        if "pool" in (node + top + e.name).lower():
            pools[f"{phase} | {node or top} | {e.name}"] += 1
        if "groupnorm" in node.lower() or "group_norm" in top or "ChannelLayerNorm" in node:
            norms[f"{phase} | {node or top}"] += 1
    return {"kernel_ops": sum(by_phase.values()), "by_phase": dict(by_phase.most_common()),
            "cpu_us_by_phase": {k: round(v) for k, v in us_phase.most_common()},
            "by_op": dict(by_op.most_common(40)), "cpu_us_by_op": {k: round(v) for k, v in us_op.most_common(25)},
            "by_phase_and_autograd_node": dict(by_node.most_common(80)),
            "ops_of_node": {k: dict(v.most_common(12)) for k, v in sorted(node_ops.items(), key=lambda kv: -sum(kv[1].values()))[:40]},
            "casts": dict(casts.most_common(40)), "layout_copies": dict(layouts.most_common(30)),
            "pooling": dict(pools.most_common(30)), "group_norm": dict(norms.most_common(30)),
            "large_threshold_elements": large, "large_ops": sum(large_phase.values()),
            "large_by_phase": dict(large_phase.most_common()), "large_by_op": dict(large_op.most_common(30)),
            "large_by_phase_and_autograd_node": dict(large_node.most_common(60))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--flavor", default="paper")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--option", action="append", default=[], help="KEY=VALUE, a torch option of the run")
    args = ap.parse_args()
    options = dict(o.split("=", 1) for o in args.option)
    config = RunConfig(workload="wgan", flavor=args.flavor, device="cpu", batch_size=args.batch, precision="bf16",
                       channels_last=not args.no_channels_last, isolate=False, data_pool=1, options=options).validated()
    session = frameworks.open_session(config)
    session.step()  # warm-up: optimizer state, first-call paths
    hp = {**registry.get_spec("wgan").flavor(args.flavor).hparams, **config.hparams}
    labels = PhaseLabels(hp["n_critic"])
    t0 = time.perf_counter()
    with labels.installed(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        session.step()
    seconds = time.perf_counter() - t0
    result = {"config": {"flavor": args.flavor, "batch": args.batch, "channels_last": config.channels_last,
                         "precision": "bf16", "options": options, "torch": torch.__version__},
              "step_s_profiled": seconds, **attribute(prof, large=4096 * args.batch)}
    args.out.mkdir(parents=True, exist_ok=True)
    tag = ("cl" if config.channels_last else "nchw") + "".join(f"_{k}-{v}" for k, v in options.items())
    (args.out / f"wgan_ops_{args.flavor}_{tag}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"wgan_ops_{args.flavor}_{tag}.txt").write_text(
        prof.key_averages(group_by_input_shape=False).table(sort_by="count", row_limit=60))
    print(f"{tag}: {result['kernel_ops']} kernel-launching aten ops per step, {result['large_ops']} of them on "
          f"activation-sized inputs ({seconds:.1f} s profiled)")
    for phase, count in result["by_phase"].items():
        print(f"  {phase:40s} {count:6d} ops ({result['large_by_phase'].get(phase, 0):5d} large) "
              f"{result['cpu_us_by_phase'][phase] / 1e3:9.1f} ms cpu")


if __name__ == "__main__":
    main()
