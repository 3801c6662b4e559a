"""`tbd run WORKLOAD` (one measured run) and `tbd demo` (the quick benchmark on the best device).

The orchestration is: validate the config, launch it (child process by default), store the
record, print the table.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tbd import registry, topology
from tbd.commands import EXAMPLES, add_home
from tbd.config import PRECISIONS, RunConfig
from tbd.errors import UsageError
from tbd.harness.launcher import launch
from tbd.metrics.devices import best_device
from tbd.report.tables import make_console, print_records
from tbd.results.store import Store


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--framework", "-f", default="torch", help="torch or jax (default: torch)")
    p.add_argument("--flavor", default="tiny", help="workload size: tiny or paper (default: tiny)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto, the best device present)")
    p.add_argument("--batch-size", "-b", type=positive_int, help="global batch size (default: the flavor's)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="fp32, tf32, bf16 or fp16 (default: fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (JAX always jit-compiles)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for convolutional models")
    p.add_argument("--seed", type=int, default=0, help="random seed for weights and synthetic data (default: 0)")
    p.add_argument("--max-steps", type=positive_int, default=300, help="step budget including warm-up (default: 300)")
    p.add_argument("--max-time", type=positive_float, default=60.0, help="time budget in seconds (default: 60)")
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


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="measure one training workload", formatter_class=EXAMPLES,
        description="Train WORKLOAD on synthetic data, detect warm-up, time steady steps until the throughput is known to +-1%, store the run.",
        epilog="examples:\n  tbd run resnet50\n  tbd run resnet50 --framework jax --flavor tiny --max-time 20\n"
               "  tbd run resnet50 --device cuda --flavor paper -b 256 --precision bf16 --channels-last --compile\n"
               "  tbd run resnet50 --device cuda --flavor paper -b 512 --nproc-per-node 8   (docs/distributed.md)",
    )
    p.add_argument("workload", help="workload name (see 'tbd list')")
    add_run_options(p)
    p.set_defaults(func=run)

    d = sub.add_parser(
        "demo", help="the quick benchmark on the best device present", formatter_class=EXAMPLES,
        description="Run every installed workload x framework once (tiny flavor on the CPU, paper flavor on a GPU) and print a table.",
        epilog="examples:\n  tbd demo\n  tbd demo --max-time 10",
    )
    d.add_argument("--max-time", type=positive_float, default=20.0, help="time budget per run in seconds (default: 20)")
    d.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    add_home(d)
    d.set_defaults(func=demo)


def topology_options(args, device: str, env: dict[str, str] | None = None) -> dict:
    """RunConfig fields of the topology: the flags where given, else SLURM's environment."""
    names = ("nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint", "parallel", "ddp_bucket_mb")
    return topology.topology({k: getattr(args, k, None) for k in names}, device, env)


def config_from_args(args, workload: str) -> RunConfig:
    device = best_device() if args.device == "auto" else args.device
    return RunConfig(
        workload=workload, framework=args.framework, flavor=args.flavor, device=device, batch_size=args.batch_size,
        precision=args.precision, compile=args.compile, channels_last=args.channels_last, seed=args.seed,
        max_steps=args.max_steps, max_time_s=args.max_time, target_ci_pct=args.target_ci, isolate=not args.in_process,
        profile=getattr(args, "profile", False) or getattr(args, "ncu", False), ncu=getattr(args, "ncu", False),
        **topology_options(args, device),
    ).validated()


def measure_and_store(config: RunConfig, store: Store, console: Console) -> dict[str, Any]:
    """Launch one run with a progress bar and store its record (also when it failed)."""
    label = f"{config.workload}/{config.framework}/{config.flavor} on {config.device}, batch {config.batch_size}"
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(label, total=config.max_steps, status="starting")

        def progress(p: dict) -> None:
            ci = f"CI ±{p['ci_pct']:.1f}%" if p["ci_pct"] != float("inf") else "warming up"
            bar.update(task, completed=p["steps"], status=f"{ci}  loss {p['loss']:.3g}")

        record = launch(config, progress)
    if config.profile:  # move the trace into this store, run the ncu pass (tbd.analysis.capture)
        from tbd.analysis.capture import after_launch

        after_launch(record, config, store)
    store.save(record)
    return record


def run(args) -> int:
    store = Store(args.home)
    config = config_from_args(args, args.workload)
    if config.ncu:  # fail before running when Nsight Compute is missing
        from tbd.analysis.ncu import require_ncu

        require_ncu(config.device)
    console = make_console()
    record = measure_and_store(config, store, console)
    print_records([record], title=f"tbd run {config.workload}", console=console)
    console.print(f"stored as [bold]{record['id']}[/] in {store.home} ('tbd results show {record['id']}')")
    if config.profile and record["status"] == "ok":
        from tbd.analysis.capture import describe

        console.print(escape(describe(record, store.home)))
    if record["status"] != "ok":
        console.print(f"[red]run failed ({record['error']['kind']}): {escape(record['error']['message'])}[/]")
        return 1
    return 0


def demo(args) -> int:
    store = Store(args.home)
    device = best_device() if args.device == "auto" else args.device
    flavor = "paper" if device == "cuda" else "tiny"
    console = make_console()
    console.print(f"tbd demo: every installed workload x framework, {flavor} flavor on {device}")
    records = []
    for workload in registry.workload_names():
        for fw in registry.implementations(workload):
            if not registry.is_installed(fw):
                console.print(f"skipping {workload}/{fw}: {fw} is not installed ({registry.framework(fw).install})")
                continue
            precision = "bf16" if device == "cuda" else "fp32"
            try:
                config = RunConfig(workload=workload, framework=fw, flavor=flavor, device=device, precision=precision,
                                   channels_last=device == "cuda" and registry.get_spec(workload).convolutional
                                   and registry.framework(fw).capabilities.channels_last,
                                   max_time_s=args.max_time, max_steps=200).validated()
            except UsageError as exc:
                console.print(f"skipping {workload}/{fw}: {exc}")
                continue
            records.append(measure_and_store(config, store, console))
            print_records(records[-1:], title=None, console=console)
    print_records(records, title=f"tbd demo ({device})", console=console)
    console.print(f"results stored in {store.home} (tbd results; tbd export --format csv)")
    if records:  # the demo ends with the report of what it ran (tbd.report.html)
        try:
            from tbd.report.html import write_report

            report = write_report(records, store.home / "reports" / "demo" / "report.html", f"tbd demo ({device})",
                                  subtitle=f"every installed workload x framework, {flavor} flavor on {device}.")
            console.print(f"report: {report.resolve()}")
        except ImportError as exc:
            console.print(f"no report written ({exc}); install matplotlib: pip install 'tbd[plot]'")
    return 0 if all(r["status"] == "ok" for r in records) else 1
