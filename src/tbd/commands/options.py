"""Options shared by the commands that run workloads, declared once: `tbd run`, `tbd scale` and
`tbd memory` take the same definitions, and `config_from_args` turns them into a RunConfig.
"""

from __future__ import annotations

import argparse

from tbd import registry, topology
from tbd.commands import add_home
from tbd.config import PRECISIONS, RunConfig
from tbd.errors import UsageError
from tbd.metrics.devices import best_device


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def framework_options(pairs: list[str]) -> dict[str, str]:
    """--option KEY=VALUE pairs as a dict (the plugin checks the keys)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--option takes KEY=VALUE, got '{pair}'; e.g. --option compile_mode=max-autotune")
        out[key.strip()] = value.strip()
    return out


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


GLOBAL_BATCH_HELP = "global batch size, in the workload's batch unit ('tbd list' shows it; default: the flavor's)"


def add_workload_options(p: argparse.ArgumentParser, batch_help: str = GLOBAL_BATCH_HELP) -> None:
    """What is trained and how: framework, flavor, device, batch, precision, layout (run, memory,
    scale; the sweep takes lists of the same)."""
    frameworks = " or ".join(registry.framework_names())
    p.add_argument("--framework", "-f", default="torch", help=f"{frameworks} (default: torch)")
    flavors = sorted({f for w in registry.workload_names() for f in registry.get_spec(w).flavors})
    p.add_argument("--flavor", default="tiny", help=f"workload size: {', '.join(flavors)} ('tbd list' shows each workload's; default: tiny)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto, the best device present)")
    p.add_argument("--batch-size", "-b", type=positive_int, help=batch_help)
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="fp32, tf32, bf16 or fp16 (default: fp32)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for convolutional models")


def add_run_options(p: argparse.ArgumentParser, batch_help: str = GLOBAL_BATCH_HELP) -> None:
    """Every option of a measured run (tbd run, tbd scale)."""
    add_workload_options(p, batch_help)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (JAX always jit-compiles)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="a framework setting (PyTorch: compile_mode=max-autotune, sdpa_backend=cudnn); repeatable")
    p.add_argument("--seed", type=int, default=0, help="random seed for weights and synthetic data (default: 0)")
    p.add_argument("--max-steps", type=positive_int, default=300, help="step budget including warm-up (default: 300)")
    p.add_argument("--max-time", type=positive_float, default=60.0,
                   help="time budget for steady steps in seconds; compilation (step 0) is not counted, warm-up may add as much again (default: 60)")
    p.add_argument("--target-ci", type=positive_float, default=1.0, help="stop once the 95%% CI of throughput is within +-this %% (default: 1)")
    p.add_argument("--in-process", action="store_true", help="run in this process instead of a child process (for debugging)")
    p.add_argument("--profile", action="store_true", help="trace a few steady steps after the timed ones for 'tbd analyze' (docs/analysis.md)")
    p.add_argument("--ncu", action="store_true", help="with --profile: also read tensor/FMA pipe utilization with Nsight Compute (needs ncu)")
    # Scale-out (docs/distributed.md): torchrun starts nproc-per-node x nnodes ranks; SLURM's environment fills these when absent.
    p.add_argument("--nproc-per-node", type=positive_int, help="processes (ranks) on this machine, one per GPU (default: 1)")
    p.add_argument("--nnodes", type=positive_int, help="machines taking part (default: 1)")
    p.add_argument("--node-rank", type=int, help="this machine's rank, 0..nnodes-1 (node 0 hosts the rendezvous)")
    p.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="node 0's address and a free port, for --nnodes > 1")
    p.add_argument("--parallel", choices=("ddp", "fsdp2"), help="ddp (default) or fsdp2 (PyTorch: shards parameters, for large models)")
    p.add_argument("--ddp-bucket-mb", type=float, help="DDP gradient bucket size in MiB (default 25): larger buckets, fewer all-reduces")
    add_home(p)


def topology_options(args, device: str, env: dict[str, str] | None = None) -> dict:
    """RunConfig fields of the topology: the flags where given, else SLURM's environment."""
    names = ("nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint", "parallel", "ddp_bucket_mb")
    return topology.topology({k: getattr(args, k, None) for k in names}, device, env)


def config_from_args(args, workload: str) -> RunConfig:
    device = best_device() if args.device == "auto" else args.device
    return RunConfig(
        workload=workload, framework=args.framework, flavor=args.flavor, device=device, batch_size=args.batch_size,
        precision=args.precision, compile=args.compile, channels_last=args.channels_last, seed=args.seed,
        options=framework_options(getattr(args, "option", [])),
        max_steps=args.max_steps, max_time_s=args.max_time, target_ci_pct=args.target_ci, isolate=not args.in_process,
        profile=getattr(args, "profile", False) or getattr(args, "ncu", False), ncu=getattr(args, "ncu", False),
        **topology_options(args, device),
    ).validated()
