"""`tbd results [list | show RUN]`: the stored runs, or one run's whole record.

`--json` prints JSON in both forms (list: one headline object per run; show: the whole record);
`--wide` shows every column at full length.
"""

from __future__ import annotations

import json

from tbd.commands import EXAMPLES, add_home
from tbd.errors import UsageError
from tbd.report.tables import make_console, print_records
from tbd.results.record import headline
from tbd.results.store import Store


def register(sub) -> None:
    p = sub.add_parser("results", help="list stored runs or show one", formatter_class=EXAMPLES,
                       description="List stored runs (newest first) or show one run's whole record.",
                       epilog="examples:\n  tbd results\n  tbd results list --workload resnet50 --limit 5\n"
                              "  tbd results show latest\n  tbd results show 20261125-1701")
    p.add_argument("action", nargs="?", default="list", choices=("list", "show"), help="list (default) or show")
    p.add_argument("run_id", nargs="?", help="with show: a run id, a unique prefix of one, or 'latest'")
    p.add_argument("--workload", help="only runs of this workload")
    p.add_argument("--framework", help="only runs of this framework")
    p.add_argument("--limit", type=int, default=30, help="at most this many runs (default: 30)")
    p.add_argument("--json", action="store_true", help="print JSON: list gives each run's headline numbers, show the whole record")
    p.add_argument("--wide", action="store_true", help="every column, full ids, whatever the terminal width")
    add_home(p)
    p.set_defaults(func=results)


def results(args) -> int:
    store = Store(args.home)
    console = make_console(args.wide)
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
        console.print(f"no runs stored in {store.home}; try 'tbd run resnet50'")
        return 0
    print_records(records, title=f"tbd results ({store.home})", console=console, wide=args.wide)
    return 0
