"""`tbd demo`: every installed workload x framework once, on the best device present, then the
table and an HTML report. `make demo` runs it.
"""

from __future__ import annotations

from tbd import registry
from tbd.commands import EXAMPLES, add_home
from tbd.commands.options import positive_float
from tbd.commands.run import measure_and_store
from tbd.config import RunConfig
from tbd.errors import UsageError
from tbd.metrics.devices import best_device
from tbd.report.tables import make_console, print_records
from tbd.results.record import has_result
from tbd.results.store import Store


def register(sub) -> None:
    d = sub.add_parser(
        "demo", help="the quick benchmark on the best device present", formatter_class=EXAMPLES,
        description="Run every installed workload x framework once (tiny flavor on the CPU, paper flavor on a GPU) and print a table.",
        epilog="examples:\n  tbd demo\n  tbd demo --max-time 10",
    )
    d.add_argument("--max-time", type=positive_float, default=20.0, help="time budget per run in seconds (default: 20)")
    d.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    add_home(d)
    d.set_defaults(func=demo)


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
    return 0 if all(has_result(r) for r in records) else 1
