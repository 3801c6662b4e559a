"""`tbd results [list | show RUN] [--check [--quarantine]]`: the stored runs, one run's whole
record, or a check of the store itself.

`--json` prints JSON in both forms (list: one headline object per run; show: the whole record);
`--wide` shows every column at full length.
"""

from __future__ import annotations

import functools
import json

from rich.markup import escape

from tbd.commands import EXAMPLES, add_home
from tbd.commands.options import positive_int
from tbd.errors import UsageError
from tbd.report.tables import make_console, print_records
from tbd.results.record import headline
from tbd.results.store import Store


def register(sub) -> None:
    p = sub.add_parser("results", help="list stored runs or show one", formatter_class=EXAMPLES,
                       description="List stored runs (newest first) or show one run's whole record; --check checks the store.",
                       epilog="examples:\n  tbd results\n  tbd results list --workload resnet50 --limit 5\n"
                              "  tbd results show latest\n  tbd results show 20261125-1701\n"
                              "  tbd results --check\n  tbd results --check --quarantine")
    p.add_argument("action", nargs="?", default="list", choices=("list", "show"), help="list (default) or show")
    p.add_argument("run_id", nargs="?", help="with show: a run id, a unique prefix of one, or 'latest'")
    p.add_argument("--workload", help="only runs of this workload")
    p.add_argument("--framework", help="only runs of this framework")
    p.add_argument("--limit", type=positive_int, default=30, help="at most this many runs (default: 30)")
    p.add_argument("--json", action="store_true", help="print JSON: list gives each run's headline numbers, show the whole record")
    p.add_argument("--wide", action="store_true", help="every column, full ids, whatever the terminal width")
    p.add_argument("--check", action="store_true", help="check the store: damaged database, unreadable runs, half-written saves (docs/faults.md)")
    p.add_argument("--quarantine", action="store_true",
                   help="with --check: move unreadable runs (and a damaged database) to <store>/quarantine/ and rebuild from the run files")
    add_home(p)
    p.set_defaults(func=results)


def results(args) -> int:
    store = Store(args.home)
    console = make_console(args.wide)
    if args.action == "list" and args.run_id:  # `tbd results list show`: a word list does not take
        raise UsageError(f"unexpected argument '{args.run_id}'; usage: tbd results [list] [--workload W] [--framework F] [--limit N], "
                         "or tbd results show RUN")
    if args.quarantine and not args.check:
        raise UsageError("--quarantine goes with --check: tbd results --check --quarantine")
    if args.check:
        return check(store, console, args.quarantine)
    if args.action == "show":
        if not args.run_id:
            raise UsageError("'tbd results show' needs a run id; 'tbd results' lists them")
        record = store.get(args.run_id)
        if args.json:
            print(json.dumps(record, indent=1))
            return 0
        print_records([record], title=f"run {record['id']}", console=console, wide=args.wide)
        console.print_json(json.dumps({k: record[k] for k in ("config", "workload", "environment", "method", "metrics", "memory", "error")}, default=str))
        return 0
    records = store.list(limit=args.limit, workload=args.workload, framework=args.framework)
    if args.json:
        print(json.dumps([headline(r) for r in records], indent=1, default=str))
        return 0
    if not records:
        console.print(escape(no_runs(store, workload=args.workload, framework=args.framework)))
        return 0
    print_records(records, title=escape(f"tbd results ({store.home})"), console=console, wide=args.wide)
    return 0


def no_runs(store: Store, **filters: str | None) -> str:
    """The line for a query that found no run: none matches the filters given, or none is stored."""
    given = " ".join(f"--{name} {value}" for name, value in filters.items() if value)
    if given and store.list(limit=1):  # runs there are, but none of these
        return f"no stored run matches {given} in {store.home}; 'tbd results' lists them all"
    return f"no runs stored in {store.home}; try 'tbd run resnet50'"


def check(store: Store, console, quarantine: bool) -> int:
    """Exit 0 when the store is sound (or was made so), 1 when problems remain."""
    report = store.check(quarantine=quarantine)
    say = functools.partial(console.print, soft_wrap=True)  # whole lines: the paths in them stay copyable
    home = escape(str(store.home))
    database = "not created yet" if report["database"] == "missing" else report["database"]
    say(f"results store {home}: database {escape(database)}, {report['runs']} run(s)")
    for run_id, why in report["unreadable"].items():
        say(f"  [red]unreadable[/] run {escape(run_id)}: {escape(why)}")
    for name, why in report["unreadable_files"].items():
        say(f"  [red]unreadable file[/] {escape(str(store.runs_dir / name))}: {escape(why)}")
    for name in report["pending"]:
        say(f"  [yellow]half-written[/] {escape(name)} (finished or removed when tbd next stores a run)")
    for action in report["actions"]:
        say(f"  [green]done:[/] {escape(action)}")
    problems = report["database"] not in ("ok", "missing") or report["unreadable"] or report["unreadable_files"] or report["pending"]
    if problems and not quarantine:
        say("'tbd results --check --quarantine' moves unreadable runs aside (or rebuilds a damaged database from the run files)")
        return 1
    if not problems:
        say("[green]no problems left[/]" if report["actions"] else "[green]no problems found[/]")
    return 0
