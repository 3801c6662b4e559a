"""`tbd demo`: every installed workload x framework once, on the best device present, then one
table and an HTML report. `make demo` runs it.

Each workload runs at the fastest precision it and its framework support on the device (on a GPU
bf16, else tf32, else fp32; on the CPU fp32), and the demo says which: a3c, for one, trains in
fp32 or tf32 only.
"""

from __future__ import annotations

from rich.markup import escape

from tbd import registry
from tbd.commands import EXAMPLES, add_home
from tbd.commands.options import positive_float
from tbd.commands.run import measure_and_store
from tbd.config import RunConfig
from tbd.errors import UsageError
from tbd.metrics.devices import best_device
from tbd.report.tables import fmt_num, make_console, print_records, status_text
from tbd.results.record import has_result, headline
from tbd.results.store import Store


def register(sub) -> None:
    d = sub.add_parser(
        "demo", help="the quick benchmark on the best device present", formatter_class=EXAMPLES,
        description="Run every installed workload x framework once (tiny flavor on the CPU, paper flavor on a GPU), each at the "
                    "fastest precision it supports there (bf16, tf32, fp32 on a GPU; fp32 on the CPU), and print one table at the end.",
        epilog="examples:\n  tbd demo\n  tbd demo --max-time 10",
    )
    d.add_argument("--max-time", type=positive_float, default=20.0, help="time budget per run in seconds (default: 20)")
    d.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    d.add_argument("--wide", action="store_true", help="the table with every column and full ids")
    add_home(d)
    d.set_defaults(func=demo)


PREFERENCE = {"cuda": ("bf16", "tf32", "fp32"), "cpu": ("fp32",)}


def demo_config(workload: str, fw: str, flavor: str, device: str, max_time: float) -> RunConfig:
    """The demo's run of one pair: the first precision of PREFERENCE that the workload and the
    framework accept on the device (RunConfig.validated says), channels_last where it applies."""
    error = None
    for precision in PREFERENCE.get(device, ("fp32",)):
        try:
            return RunConfig(workload=workload, framework=fw, flavor=flavor, device=device, precision=precision,
                             channels_last=device == "cuda" and registry.get_spec(workload).convolutional
                             and registry.framework(fw).capabilities.channels_last,
                             max_time_s=max_time, max_steps=200).validated()
        except UsageError as exc:
            error = exc
    raise error or UsageError(f"no precision of {workload}/{fw} runs on {device}")


def _one_line(record: dict) -> str:
    h = headline(record)
    what = f"{h['workload']}/{h['framework']} {h['precision']}, batch {h['batch_size']}"
    if not has_result(record):
        return f"{what}: [red]{h['error_kind'] or 'failed'}[/] ({escape(h['error'] or '')})"
    return f"{what}: {fmt_num(h['throughput'])} {h['unit']}/s {status_text(h['status'])}"


def demo(args) -> int:
    store = Store(args.home)
    device = best_device() if args.device == "auto" else args.device
    flavor = "paper" if device == "cuda" else "tiny"
    console = make_console(args.wide)
    store.prepare()  # a store that cannot take the runs fails here, before anything is measured
    console.print(f"tbd demo: every installed workload x framework, {flavor} flavor on {device}")
    pairs = [(w, fw) for w in registry.workload_names() for fw in registry.implementations(w)]
    records = []
    for i, (workload, fw) in enumerate(pairs, 1):
        if not registry.is_installed(fw):
            console.print(f"[{i}/{len(pairs)}] skipping {workload}/{fw}: {fw} is not installed ({escape(registry.framework(fw).install)})")
            continue
        try:
            config = demo_config(workload, fw, flavor, device, args.max_time)
        except UsageError as exc:
            console.print(f"[{i}/{len(pairs)}] skipping {workload}/{fw}: {escape(str(exc))}")
            continue
        record = measure_and_store(config, store, console)
        records.append(record)
        console.print(f"[{i}/{len(pairs)}] {_one_line(record)}", highlight=False)
    print_records(records, title=f"tbd demo ({device}, {flavor} flavor)", console=console, wide=args.wide)
    console.print(f"results stored in {escape(str(store.home))} (tbd results; tbd export --format csv)")
    if records:  # the demo ends with the report of what it ran (tbd.report.html)
        try:
            from tbd.report.html import write_report

            report = write_report(records, store.home / "reports" / "demo" / "report.html", f"tbd demo ({device})",
                                  subtitle=f"every installed workload x framework, {flavor} flavor on {device}.")
            console.print(f"report: {escape(str(report.resolve()))}")
        except ImportError as exc:
            console.print(f"no report written ({exc}); install matplotlib: pip install 'tbd[plot]'")
    return 0 if all(has_result(r) for r in records) else 1
