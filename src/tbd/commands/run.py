"""`tbd run WORKLOAD`: one measured run.

The orchestration is: validate the config, launch it (child process by default), store the
record, print the table.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tbd.commands import EXAMPLES
from tbd.commands.options import add_run_options, config_from_args
from tbd.config import RunConfig
from tbd.harness.launcher import launch
from tbd.report.tables import make_console, print_records
from tbd.results.record import has_result
from tbd.results.store import Store


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="measure one training workload", formatter_class=EXAMPLES,
        description="Train WORKLOAD on synthetic data (or a dataset on disk: --data, docs/data.md), detect warm-up, "
                    "time steady steps until the throughput is known to +-1% "
                    "(or the budget runs out: status unconverged, or insufficient with too few steps for a CI), store the run.",
        epilog="examples:\n  tbd run resnet50\n  tbd run resnet50 --framework jax --flavor tiny --max-time 20\n"
               "  tbd run resnet50 --device cuda --flavor paper -b 256 --precision bf16 --channels-last --compile\n"
               "  tbd run resnet50 --device cuda --flavor paper -b 512 --nproc-per-node 8   (docs/distributed.md)\n"
               "  tbd run resnet50 --data ./imgs --workers 4   ('tbd data make resnet50 --out ./imgs' writes one; docs/data.md)",
    )
    p.add_argument("workload", help="workload name (see 'tbd list')")
    add_run_options(p)
    p.set_defaults(func=run)


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


def measurement_notes(record: dict[str, Any]) -> list[str]:
    """What a reader must know before trusting the number: compile/warm-up time that ate the
    budget, and the stop reason of a run that did not converge."""
    if not has_result(record):
        return []
    m = record.get("metrics") or {}
    out = []
    compile_s, warm_s, window_s = m.get("compile_time_s"), m.get("warmup_time_s") or 0.0, m.get("steady_window_s") or 0.0
    if compile_s is not None and compile_s + warm_s > window_s:
        out.append(f"[dim]compilation (step 0) took {compile_s:.3g} s and warm-up {warm_s:.3g} s, "
                   f"against {window_s:.3g} s of steady steps; neither is in the throughput[/]")
    if record["status"] != "ok":
        out.append("raise --max-time (or --max-steps) for a converged number")
    if m.get("input_wait_host_pct") is not None:  # a dataset on disk (docs/data.md)
        device = m.get("input_stall_device_pct")
        where = f"the device idle for input {device:.1f}%, " if device is not None and record["config"]["device"] == "cuda" else ""
        out.append(f"[dim]input: {where}the training loop waited {m['input_wait_host_pct']:.1f}% of the steady window "
                   f"({m['input_wait_host_ms_per_step']:.3g} ms per step)[/]")
    if m.get("data_skipped_samples"):
        out.append(f"[yellow]{m['data_skipped_samples']} corrupt sample(s) skipped and replaced; 'tbd results show {record['id']}' "
                   "names them (method.data_skipped_files)[/]")
    return out


def run(args) -> int:
    store = Store(args.home)
    config = config_from_args(args, args.workload)
    if config.ncu:  # fail before running when Nsight Compute is missing
        from tbd.analysis.ncu import require_ncu

        require_ncu(config.device)
    store.prepare()  # a store that cannot take the run fails here, before anything is measured
    console = make_console(getattr(args, "wide", False))
    record = measure_and_store(config, store, console)
    print_records([record], title=f"tbd run {config.workload}", console=console, wide=getattr(args, "wide", False))
    console.print(f"stored as [bold]{record['id']}[/] in {escape(str(store.home))} ('tbd results show {record['id']}')")
    for line in measurement_notes(record):
        console.print(line)
    if config.profile and has_result(record):
        from tbd.analysis.capture import describe

        console.print(escape(describe(record, store.home)))
    defect = (record["method"] or {}).get("recompilation_defect")
    if defect:  # a step that keeps recompiling measures the compiler, not the training
        console.print(f"[yellow]warning: {escape(defect)}[/]")
    if not has_result(record):
        console.print(f"[red]run failed ({record['error']['kind']}): {escape(record['error']['message'])}[/]")
        return 1
    return 0


