"""`tbd results [list | show RUN]` and `tbd export --format csv|json`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console

from tbd.commands import EXAMPLES, add_home
from tbd.errors import UsageError
from tbd.report.tables import make_console, print_records
from tbd.results.export import to_csv, to_json, to_parquet
from tbd.results.store import Store


def register(sub) -> None:
    p = sub.add_parser("results", help="list stored runs or show one", formatter_class=EXAMPLES,
                       description="List stored runs (newest first) or show one run's whole record.",
                       epilog="examples:\n  tbd results\n  tbd results list --workload resnet50 --limit 5\n  tbd results show latest\n  tbd results show 20261125-1701")
    p.add_argument("action", nargs="?", default="list", choices=("list", "show"), help="list (default) or show")
    p.add_argument("run_id", nargs="?", help="with show: a run id, a unique prefix of one, or 'latest'")
    p.add_argument("--workload", help="only runs of this workload")
    p.add_argument("--framework", help="only runs of this framework")
    p.add_argument("--limit", type=int, default=30, help="at most this many runs (default: 30)")
    p.add_argument("--json", action="store_true", help="with show: print the raw JSON record")
    add_home(p)
    p.set_defaults(func=results)

    e = sub.add_parser("export", help="export stored runs as CSV or JSON", formatter_class=EXAMPLES,
                       description="Export stored runs: CSV has one row per run with config and metrics; JSON has the whole records.",
                       epilog="examples:\n  tbd export --format csv\n  tbd export --format json --output runs.json --workload resnet50")
    e.add_argument("--format", default="csv", choices=("csv", "json", "parquet"), help="csv (default), json, or parquet (needs pyarrow and --output)")
    e.add_argument("--output", "-o", help="file to write (default: standard output)")
    e.add_argument("--workload", help="only runs of this workload")
    e.add_argument("--framework", help="only runs of this framework")
    e.add_argument("--sweep", help="only runs of this sweep (name or id)")
    add_home(e)
    e.set_defaults(func=export)


def results(args) -> int:
    store = Store(args.home)
    console = make_console()
    if args.action == "show":
        if not args.run_id:
            raise UsageError("'tbd results show' needs a run id; 'tbd results' lists them")
        record = store.get(args.run_id)
        if args.json:
            print(json.dumps(record, indent=1))
            return 0
        print_records([record], title=f"run {record['id']}", console=console)
        console.print_json(json.dumps({k: record[k] for k in ("config", "workload", "environment", "method", "metrics", "memory", "error")}, default=str))
        return 0
    records = store.list(limit=args.limit, workload=args.workload, framework=args.framework)
    if not records:
        console.print(f"no runs stored in {store.home}; try 'tbd run resnet50'")
        return 0
    print_records(records, title=f"tbd results ({store.home})", console=console)
    return 0


def export(args) -> int:
    store = Store(args.home)
    if args.sweep:  # every run of every sweep of that name (or with that id)
        sweeps = store.sweeps(args.sweep)
        if not sweeps:
            raise UsageError(f"no sweep '{args.sweep}' in {store.home}; 'tbd report' or 'tbd sweep --dry-run' show sweep names")
        records = [r for s in sweeps for r in store.list(workload=args.workload, framework=args.framework, sweep=s["id"])]
    else:
        records = store.list(workload=args.workload, framework=args.framework)
    if args.format == "parquet":
        if not args.output:
            raise UsageError("parquet is a binary format; give a file: --output runs.parquet")
        to_parquet(records, args.output)
        print(f"wrote {len(records)} runs to {args.output}", file=sys.stderr)
        return 0
    text = to_csv(records) if args.format == "csv" else to_json(records)
    if args.output:
        path = Path(args.output)
        if path.parent and not path.parent.exists():
            raise UsageError(f"folder {path.parent} does not exist; create it or choose another --output")
        path.write_text(text)
        print(f"wrote {len(records)} runs to {path}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
