"""`tbd export --format csv|json|parquet`: stored runs for other tools."""

from __future__ import annotations

import sys
from pathlib import Path

from tbd.commands import EXAMPLES, add_home
from tbd.errors import UsageError
from tbd.results.export import to_csv, to_json, to_parquet
from tbd.results.store import Store


def register(sub) -> None:
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
        _check_output(Path(args.output))
        try:
            to_parquet(records, args.output)
        except OSError as exc:
            raise UsageError(f"cannot write {args.output} ({exc.strerror or exc}); choose another --output") from None
        print(f"wrote {len(records)} runs to {args.output}", file=sys.stderr)
        return 0
    text = to_csv(records) if args.format == "csv" else to_json(records)
    if args.output:
        path = Path(args.output)
        _check_output(path)
        try:
            path.write_text(text)
        except OSError as exc:
            raise UsageError(f"cannot write {path} ({exc.strerror or exc}); choose another --output") from None
        print(f"wrote {len(records)} runs to {path}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _check_output(path: Path) -> None:
    if path.is_dir():
        raise UsageError(f"--output {path} is a folder; name a file in it, e.g. --output {path / 'runs.csv'}")
    if not path.parent.exists():
        raise UsageError(f"folder {path.parent} does not exist; create it or choose another --output")
