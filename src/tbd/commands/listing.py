"""`tbd list`: workloads (built-in, from plugins, model families), flavors, frameworks, and what is installed."""

from __future__ import annotations

import importlib.util

from rich.markup import escape
from rich.table import Table

from tbd import registry
from tbd.commands import EXAMPLES
from tbd.errors import UsageError
from tbd.report.tables import make_console


def register(sub) -> None:
    p = sub.add_parser("list", help="list workloads, flavors and frameworks", formatter_class=EXAMPLES,
                       description="List workloads with their flavors and implementations, and which frameworks are installed.",
                       epilog="examples:\n  tbd list\n  tbd list --json")
    p.add_argument("--json", action="store_true", help="print workloads and frameworks as JSON")
    p.set_defaults(func=run)


def as_json() -> dict:
    workloads = []
    for name in registry.workload_names():
        spec = registry.get_spec(name)
        workloads.append({"name": name, "domain": spec.domain, "unit": spec.unit, "batch_unit": spec.batch_counts,
                          "flavors": {f.name: {"batch_size": f.batch_size} for f in spec.flavors.values()},
                          "frameworks": list(registry.implementations(name)), "precisions": list(spec.precisions or ()),
                          "data_format": spec.data_format or None})
    frameworks = [{"name": n, "installed": not registry.missing_modules(n), "missing": list(registry.missing_modules(n)),
                   "install": registry.framework(n).install} for n in registry.framework_names()]
    frameworks += [{"name": n, "installed": False, "unavailable": why} for n, why in registry.UNAVAILABLE_FRAMEWORKS.items()]
    return {"workloads": workloads, "frameworks": frameworks}


def run(args) -> int:
    if args.json:
        import json

        print(json.dumps(as_json(), indent=1))
        return 0
    console = make_console()
    table = Table(title="workloads", header_style="bold")
    for col in ("workload", "domain", "unit", "batch counts", "flavors (batch)", "frameworks", "from"):
        table.add_column(col)
    for name in registry.workload_names() + registry.plugin_names():
        try:
            spec, source = registry.get_spec(name), registry.source(name)
        except UsageError as exc:  # a plugin that does not load is listed with why, not a crash
            table.add_row(escape(name), "-", "-", "-", "-", "-", f"[red]{escape(str(exc))}[/]")
            continue
        flavors = ", ".join(f"{f.name} ({f.batch_size})" for f in spec.flavors.values())
        fws = ", ".join(f if registry.is_installed(f) else f"{f} [dim](not installed)[/]" for f in registry.implementations(name))
        table.add_row(escape(name), spec.domain, spec.unit, spec.batch_counts, flavors, fws, escape(source))
    for family in registry.FAMILIES:
        if family == "custom":
            continue
        example = f"{family}:{registry.family_example(family)}"
        spec = registry.get_spec(example)
        flavors = ", ".join(f"{f.name} ({f.batch_size})" for f in spec.flavors.values())
        absent = [m for m in spec.requires if importlib.util.find_spec(m) is None]
        where = f"{family} family" + (f" [dim](not installed: {escape(spec.install)})[/]" if absent else "")
        table.add_row(f"{family}:MODEL (e.g. {example})", spec.domain, spec.unit, spec.batch_counts, flavors,
                      ", ".join(registry.implementations(example)), where)
    console.print(table)
    console.print("[dim]also: a file's object, e.g. 'tbd run ./my_workloads.py:MyNet'; packages add workloads through the "
                  f"'{registry.ENTRY_POINT_GROUP}' entry point group (docs/api.md)[/]")
    readers = [n for n in registry.workload_names() if registry.get_spec(n).data_format]
    console.print(f"[dim]--data PATH (a dataset on disk in its real format, docs/data.md): {', '.join(readers)}[/]")
    fw = Table(title="frameworks", header_style="bold")
    for col in ("framework", "installed", "needs"):
        fw.add_column(col)
    for name in registry.framework_names():
        missing = registry.missing_modules(name)
        fw.add_row(name, "[green]yes[/]" if not missing else f"[red]no[/] (missing {', '.join(missing)})", escape(registry.framework(name).install))
    for name, why in registry.UNAVAILABLE_FRAMEWORKS.items():  # the paper's frameworks no supported Python can install
        fw.add_row(name, "[red]cannot be installed[/]", escape(why))
    console.print(fw)
    from tbd.metrics.devices import best_device, gpu_info

    gpu = gpu_info(0)
    console.print(f"best device here: [bold]{best_device()}[/]" + (f" ({gpu.get('name')}, driver {gpu.get('driver')})" if gpu else ""))
    return 0
