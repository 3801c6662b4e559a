"""Options shared by the commands that run workloads, declared once: `tbd run`, `tbd scale` and
`tbd memory` take the same definitions, and `config_from_args` turns them into a RunConfig.
"""

from __future__ import annotations

import argparse
import math

from tbd import registry, topology
from tbd.commands import add_home
from tbd.config import MAX_SEED, PRECISIONS, RunConfig
from tbd.errors import UsageError
from tbd.metrics.devices import best_device
from tbd.results import envs


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
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value) or value <= 0:  # nan and inf parse as floats
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got '{text}'")
    return value


def seed_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {MAX_SEED}, got {text}")
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
    # Model settings: the sequence length (hf:MODEL's seq_len, gpt's block_size) and hf:MODEL's config.
    p.add_argument("--seq-len", type=positive_int,
                   help="tokens per sequence: hf:MODEL (default: 64 in tiny, the model's maximum up to 1024 in paper) and gpt (its context, block_size)")
    p.add_argument("--hf-config", metavar="KEY=VALUE,...", help="hf:MODEL: override fields of the model's config, e.g. n_layer=2,n_embd=64,n_head=4")


def add_run_options(p: argparse.ArgumentParser, batch_help: str = GLOBAL_BATCH_HELP, placement: bool = True) -> None:
    """Every option of a measured run (tbd run, tbd scale). `placement=False` (tbd scale, which
    places the processes itself) keeps the rank-placement flags out of the help; they are still
    parsed, so the command can refuse them with a line that says why."""
    add_workload_options(p, batch_help)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (JAX always jit-compiles)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="a framework setting (PyTorch: compile_mode=max-autotune, sdpa_backend=cudnn); repeatable")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed for weights and synthetic data (default: 0)")
    p.add_argument("--max-steps", type=positive_int, default=300, help="step budget including warm-up (default: 300)")
    p.add_argument("--max-time", type=positive_float, default=60.0,
                   help="time budget for steady steps in seconds; compilation (step 0) is not counted, warm-up may add as much again (default: 60)")
    p.add_argument("--target-ci", type=positive_float, default=1.0, help="stop once the 95%% CI of throughput is within +-this %% (default: 1)")
    p.add_argument("--in-process", action="store_true", help="run in this process instead of a child process (for debugging)")
    p.add_argument("--python", metavar="PATH", help="run in another environment: the child runs this interpreter's tbd and framework "
                   "(e.g. /path/to/venv/bin/python; docs/environments.md)")
    p.add_argument("--env", metavar="NAME", help="run in an environment made by 'tbd env create NAME' (as --python its bin/python)")
    p.add_argument("--wide", action="store_true", help="full-width table: every column, full ids, whatever the terminal")
    p.add_argument("--profile", action="store_true", help="trace a few steady steps after the timed ones for 'tbd analyze' (docs/analysis.md)")
    p.add_argument("--profile-steps", type=positive_int, help="with --profile: steps to trace (default: 3 s of steps on a GPU, at most 200; a few on a CPU)")
    p.add_argument("--ncu", action="store_true", help="with --profile: also read tensor/FMA pipe utilization with Nsight Compute (needs ncu)")
    # Scale-out (docs/distributed.md): torchrun starts nproc-per-node x nnodes ranks; SLURM's environment fills these when absent.
    def shown(text: str) -> str:
        return text if placement else argparse.SUPPRESS

    p.add_argument("--nproc-per-node", type=positive_int,
                   help=shown("processes (ranks) on this machine, one per GPU; on the CPU at most 2 a core (default: 1)"))
    p.add_argument("--nnodes", type=positive_int, help=shown("machines taking part (default: 1)"))
    p.add_argument("--node-rank", type=int, help=shown("this machine's rank, 0..nnodes-1 (node 0 hosts the rendezvous)"))
    p.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help=shown("node 0's address and a free port, for --nnodes > 1"))
    p.add_argument("--parallel", choices=("ddp", "fsdp2"), help="ddp (default) or fsdp2 (PyTorch: shards parameters, for large models)")
    p.add_argument("--ddp-bucket-mb", type=positive_float, help="DDP gradient bucket size in MiB (default 25): larger buckets, fewer all-reduces")
    add_data_options(p)
    add_home(p)


def add_data_options(p: argparse.ArgumentParser) -> None:
    """A dataset on disk instead of synthetic batches (docs/data.md)."""
    p.add_argument("--data", metavar="PATH", help="train from the dataset at PATH in the workload's real format (docs/data.md; "
                                                  "'tbd data make WORKLOAD --out DIR' writes a small one)")
    p.add_argument("--workers", type=non_negative_int, help="with --data: loader worker processes (0: load in the training process; "
                                                             "default: a number for this machine)")
    p.add_argument("--prefetch", type=positive_int, default=2, help="with --data: batches prepared ahead, per worker and on the device (default: 2)")
    p.add_argument("--decode", choices=("cpu", "gpu"), default="cpu", help="with --data: decode JPEGs in the loader's workers (cpu, default) "
                                                                           "or on the GPU (nvJPEG; ImageNet-style folders)")


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def data_fields(args) -> dict:
    """RunConfig fields of the data options (absent on commands without them)."""
    return {"data": getattr(args, "data", None), "workers": getattr(args, "workers", None),
            "prefetch": getattr(args, "prefetch", 2), "decode": getattr(args, "decode", "cpu")}


def topology_options(args, device: str, env: dict[str, str] | None = None) -> dict:
    """RunConfig fields of the topology: the flags where given, else SLURM's environment."""
    names = ("nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint", "parallel", "ddp_bucket_mb")
    return topology.topology({k: getattr(args, k, None) for k in names}, device, env)


def model_hparams(args) -> dict:
    """Hyperparameter overrides given as flags (--seq-len, --hf-config); a workload without such a
    hyperparameter rejects them in RunConfig.validated()."""
    hparams: dict = {}
    if getattr(args, "seq_len", None) is not None:
        hparams["seq_len"] = args.seq_len
    if getattr(args, "hf_config", None):
        hparams["hf_config"] = key_values(args.hf_config, "--hf-config")
    return hparams


def key_values(text: str, flag: str) -> dict:
    """'n_layer=2,n_embd=64,tie=false' -> {'n_layer': 2, 'n_embd': 64, 'tie': False}."""
    out: dict = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} takes KEY=VALUE pairs separated by commas, got '{pair}'; e.g. {flag} n_layer=2,n_embd=64")
        out[key.strip()] = _value(value.strip())
    return out


def _value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def config_from_args(args, workload: str) -> RunConfig:
    device = best_device() if args.device == "auto" else args.device
    return RunConfig(
        workload=workload, framework=args.framework, flavor=args.flavor, device=device, batch_size=args.batch_size,
        precision=args.precision, compile=args.compile, channels_last=args.channels_last, seed=args.seed,
        hparams=model_hparams(args), options=framework_options(getattr(args, "option", [])),
        max_steps=args.max_steps, max_time_s=args.max_time, target_ci_pct=args.target_ci, isolate=not args.in_process,
        python=envs.resolve(getattr(args, "python", None), getattr(args, "env", None), getattr(args, "home", None)),
        profile=getattr(args, "profile", False) or getattr(args, "ncu", False), ncu=getattr(args, "ncu", False),
        profile_steps=getattr(args, "profile_steps", None),
        **topology_options(args, device), **data_fields(args),
    ).validated()
