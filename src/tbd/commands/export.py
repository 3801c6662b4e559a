"""`tbd export --format csv|parquet|markdown|json`: stored runs for other tools and for people.

CSV, Parquet and Markdown have the fixed columns of `tbd.results.export.COLUMNS` (docs/output.md);
JSON has the whole records.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tbd.commands import EXAMPLES, add_home
from tbd.commands.results import no_runs
from tbd.errors import UsageError
from tbd.report.markdown import to_markdown
from tbd.results.export import to_csv, to_json, to_parquet
from tbd.results.store import Store
from tbd.sweep.engine import sweep_records


def register(sub) -> None:
    e = sub.add_parser("export", help="export stored runs as CSV, Parquet, Markdown or JSON", formatter_class=EXAMPLES,
                       description="Export stored runs. CSV and Parquet have one row per run with a fixed set of columns "
                                   "(the same whatever the runs; docs/output.md lists them; Parquet typed); Markdown is a "
                                   "short table for a pull request; JSON has the whole records. Where no stored run matches, "
                                   "it says so and writes nothing (exit 2).",
                       epilog="examples:\n  tbd export --format csv\n  tbd export --format parquet --output runs.parquet --sweep nightly\n"
                              "  tbd export --format markdown --sweep nightly\n  tbd export --format json --output runs.json --workload resnet50")
    e.add_argument("--format", default="csv", choices=("csv", "parquet", "markdown", "json"),
                   help="csv (default), parquet (typed; needs pyarrow and --output), markdown (a table for people), or json (whole records)")
    e.add_argument("--output", "-o", help="file to write (default: standard output)")
    e.add_argument("--workload", help="only runs of this workload")
    e.add_argument("--framework", help="only runs of this framework")
    e.add_argument("--sweep", help="only runs of this sweep (id, or name: the newest sweep of that name)")
    add_home(e)
    e.set_defaults(func=export)


def export(args) -> int:
    store = Store(args.home)
    if args.sweep:  # every run of that sweep (the newest of that name), probes included
        found = sweep_records(store, args.sweep)
        if not found:
            raise UsageError(f"no sweep '{args.sweep}' in {store.home}; 'tbd report' or 'tbd sweep --dry-run' show sweep names")
        records = [r for r in store.list(sweep=found[0]["id"]) if (args.workload in (None, r["config"]["workload"]))
                   and (args.framework in (None, r["config"]["framework"]))]
    else:
        records = store.list(workload=args.workload, framework=args.framework)
    if not records:  # nothing to export: say so (as `tbd results` does) rather than write an empty file
        raise UsageError(no_runs(store, sweep=args.sweep, workload=args.workload, framework=args.framework))
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
    text = {"csv": to_csv, "markdown": to_markdown, "json": to_json}[args.format](records)
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
