"""`tbd scale WORKLOAD --nproc 1,2,4,8`: one run per process count on this machine, throughput
against processes, efficiency against linear scaling, a table and a figure.

`tbd scale resnet50 --nproc 1,2 --device cpu --max-steps 6` exercises it on a CPU.

Definitions (docs/distributed.md): T_n is the global throughput with n processes (per step, the
units of all ranks and the slowest rank's step time; over the steady steps the statistic of one
process's throughput: the median per-step rate, or the window rate where steps differ in size);
speedup S_n = T_n / T_1; efficiency E_n = T_n / (n x T_1), 100% being linear scaling. Weak scaling (default) keeps the
batch per process fixed, so the global batch grows with n, as the paper's multi-GPU runs did;
strong scaling keeps the global batch fixed and splits it.

Each run is stored as soon as it ends (a failure does not stop the others); afterwards every run
of the series gets a `scale` entry (series id, n, speedup, efficiency, figure) and the series a
summary `scales/<id>.json` next to the store, with the figure in `figures/`.
"""

from __future__ import annotations

import dataclasses
import json
import time

from tbd.commands import EXAMPLES
from tbd.errors import UsageError
from tbd.results.record import MEASURED, has_result


def register(sub) -> None:
    from tbd.commands.options import add_run_options

    p = sub.add_parser(
        "scale", help="throughput and scaling efficiency over process counts", formatter_class=EXAMPLES,
        description="Run WORKLOAD once per process count (torchrun on this machine; one process per GPU on GPUs), "
                    "then show throughput, speedup and efficiency against linear scaling, communication share and overlap "
                    "(each multi-process run traces a few steps after timing), peak memory per rank, and save a figure.",
        epilog="examples:\n  tbd scale resnet50 --nproc 1,2 --device cpu --max-steps 10\n"
               "  tbd scale resnet50 --nproc 1,2,4,8 --device cuda --flavor paper -b 64 --precision bf16\n"
               "  tbd scale resnet50 --nproc 1,2,4,8 --scaling strong -b 256\n"
               "  tbd scale gpt --nproc 1,2 --device cuda --flavor paper -b 8 --precision bf16 --ddp-bucket-mb 100",
    )
    p.add_argument("workload", help="workload name (see 'tbd list')")
    p.add_argument("--nproc", default="1,2", help="comma-separated process counts (default: 1,2)")
    p.add_argument("--scaling", choices=("weak", "strong"), default="weak",
                   help="weak (default): --batch-size is per process, the global batch grows with n; strong: --batch-size is the global batch, split n ways")
    add_run_options(p, batch_help="with --scaling weak (default): the batch per process, so n processes train n x this; "
                                  "with --scaling strong: the global batch, split n ways (default: the flavor's)", placement=False)
    p.set_defaults(func=scale)


def parse_counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--nproc takes comma-separated integers such as 1,2,4,8, got '{text}'") from None
    if not counts or any(n < 1 for n in counts):
        raise UsageError(f"--nproc needs positive process counts such as 1,2,4,8, got '{text}'")
    return sorted(set(counts))


def _pct(value: float | None) -> str:
    return f"{value:.0f}%" if value is not None else "-"


def scale(args) -> int:
    from rich.markup import escape
    from rich.table import Table

    from tbd.commands.options import config_from_args
    from tbd.commands.run import measure_and_store
    from tbd.report.scaling import plot_scaling, scaling_rows
    from tbd.report.tables import fmt_num, make_console, status_text
    from tbd.results.store import Store

    if any(getattr(args, k, None) is not None for k in ("nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint")):
        raise UsageError("tbd scale sets the process count itself from --nproc; drop --nproc-per-node/--nnodes/--node-rank/--rdzv-endpoint")
    counts = parse_counts(args.nproc)
    store = Store(args.home)
    console = make_console(args.wide)
    base = config_from_args(args, args.workload)  # validates everything but the process counts
    if base.device == "cpu":  # before any run, in the flag's name scale users gave
        from tbd.topology import check_cpu_ranks

        check_cpu_ranks(max(counts), "--nproc")
    configs = []
    for n in counts:
        batch = base.batch_size * n if args.scaling == "weak" else base.batch_size
        # Multi-process runs are profiled for a few steps after timing: that is where communication
        # share and overlap come from.
        configs.append(dataclasses.replace(base, nproc_per_node=n, nnodes=1, node_rank=0, rdzv_endpoint=None, batch_size=batch,
                                           profile=base.profile or n > 1).validated())
    store.prepare()  # a store that cannot take the runs fails here, before anything is measured
    series = time.strftime("%Y%m%d-%H%M%S") + f"-{args.workload}"
    records = []
    for config in configs:
        console.print(f"[bold]{config.nproc_per_node} process(es)[/], global batch {config.batch_size}")
        records.append(measure_and_store(config, store, console))
    rows = scaling_rows(records)
    title = f"{args.workload}/{base.framework}/{base.flavor} on {base.device}, {args.scaling} scaling"
    figure = plot_scaling(rows, store.home / "figures" / f"scale-{series}.png", title)
    summary = {"series": series, "workload": args.workload, "scaling": args.scaling, "device": base.device,
               "figure": str(figure) if figure else None, "rows": rows,
               "definitions": {"throughput": "global: units of all ranks per step / slowest rank's step time",
                               "speedup": "T_n / T_1", "efficiency_pct": "100 x T_n / (n x T_1)",
                               "comm_share_pct": "communication time per step / profiled step time, on the rank that waited least",
                               "comm_overlap_pct": "share of that communication time concurrent with computation",
                               "comm_wait_ms_per_step": "the most any rank spent in collectives beyond that: waiting for slower ranks"}}
    for record, row in zip(sorted(records, key=lambda r: r["config"]["nproc_per_node"]), rows):
        record["scale"] = {"series": series, "scaling": args.scaling, "nproc": row["nproc"], "speedup": row["speedup"],
                           "efficiency_pct": row["efficiency_pct"], "figure": summary["figure"]}
        store.save(record)
    (store.home / "scales").mkdir(parents=True, exist_ok=True)
    (store.home / "scales" / f"{series}.json").write_text(json.dumps(summary, indent=1, default=str))

    table = Table(title=f"tbd scale {title}", header_style="bold")
    for col in ("processes", "global batch", f"{rows[0]['unit']}/s", "speedup", "efficiency", "step p50 ms", "comm % of step",
                "comm overlap", "peak mem/rank", "stragglers", "status"):
        table.add_column(col, justify="left" if col in ("status", "stragglers") else "right")
    for row in rows:
        status = status_text(row["status"]) if row["status"] in MEASURED else f"[red]{row['status']}[/]: {(row['error'] or '').replace('[', '(')}"
        table.add_row(str(row["nproc"]), str(row["global_batch"]), fmt_num(row["throughput"]),
                      f"{row['speedup']:.2f}x" if row["speedup"] is not None else "-",
                      f"{row['efficiency_pct']:.0f}%" if row["efficiency_pct"] is not None else "-",
                      fmt_num(row["step_time_ms_p50"]), _pct(row["comm_share_pct"]), _pct(row["comm_overlap_pct"]),
                      f"{row['peak_memory_per_rank_bytes'] / 2**30:.2f} GiB" if row["peak_memory_per_rank_bytes"] else "-",
                      ",".join(map(str, row["stragglers"])) or "-", status)
    console.print(table)
    summary_path = store.home / "scales" / f"{series}.json"
    console.print(escape(f"figure: {figure or 'not drawn (matplotlib missing or no run succeeded)'}; series summary: {summary_path}"))
    return 0 if all(has_result(r) for r in records) else 1
