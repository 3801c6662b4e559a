"""`tbd report [SWEEP or RUNS...] [--output report.html]`: one self-contained HTML report.

    tbd report                      # the newest sweep (or the newest runs when there is no sweep)
    tbd report quick --output quick.html
    tbd report 20261125-1701 20261125-1702 baseline.json

The page embeds its figures (no network, no script); PNG and SVG copies go beside it, in
`<stem>-plots/`. Default output: $TBD_HOME/reports/<name>/report.html.
"""

from __future__ import annotations

import re
from pathlib import Path

from rich.markup import escape

from tbd.commands import EXAMPLES, add_home
from tbd.commands.options import positive_int
from tbd.errors import UsageError
from tbd.report.compare import resolve
from tbd.report.tables import make_console
from tbd.results.store import Store


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="write one self-contained HTML report of a sweep or runs", formatter_class=EXAMPLES,
        description="Write an HTML report (throughput vs batch size, utilization, memory, step times and every step of each "
                    "run, environment, diagnoses) that opens offline; figures also saved as PNG and SVG beside it. "
                    "Given two sweeps or runs (A B), it also compares B with A: ratios with 95% CIs and a figure.",
        epilog="examples:\n  tbd report\n  tbd report quick --output quick.html\n  tbd report RUN_A RUN_B\n"
               "  tbd report nightly-old nightly-new   (with a comparison section)",
    )
    p.add_argument("targets", nargs="*", metavar="SWEEP_OR_RUN", help="sweep names or ids, run ids or prefixes, baseline files (default: the newest sweep)")
    p.add_argument("--output", "-o", help="the HTML file to write (default: $TBD_HOME/reports/<name>/report.html)")
    p.add_argument("--title", help="the report's title")
    p.add_argument("--limit", type=positive_int, default=50, help="without targets and sweeps: the newest this many runs (default: 50)")
    add_home(p)
    p.set_defaults(func=run)


def gather_sides(store: Store, targets: list[str], limit: int = 50) -> tuple[str, str, list[dict], dict | None]:
    """(name, description, records) for the targets, or the newest sweep, or the newest runs; and
    with two targets, their comparison ({desc_a, a, desc_b, b})."""
    if not targets:
        sweeps = store.sweeps()
        if sweeps:
            targets = [sweeps[0]["name"]]
        else:
            records = store.list(limit=limit)
            if not records:
                raise UsageError(f"no runs stored in {store.home} yet; run 'tbd sweep --preset quick' or 'tbd run resnet50' first")
            return "latest-runs", f"the newest {len(records)} runs", records, None
    records, descs, sides = [], [], []
    for t in targets:
        desc, recs = resolve(store, t)
        recs = recs + trial_runs(store, recs)
        descs.append(desc)
        sides.append(recs)
        records += recs
    seen, unique = set(), []
    for r in records:  # a run named twice (by id and through its sweep) appears once
        if r["id"] not in seen:
            seen.add(r["id"])
            unique.append(r)
    name = targets[0] if len(targets) == 1 else f"{targets[0]}-and-{len(targets) - 1}-more"
    comparison = {"desc_a": descs[0], "a": sides[0], "desc_b": descs[1], "b": sides[1]} if len(targets) == 2 else None
    return name, "; ".join(descs), unique, comparison


def trial_runs(store: Store, records: list[dict]) -> list[dict]:
    """The runs a `tbd tune` record's trail measured (those still in the store)."""
    ids = {t["run_id"] for r in records if r.get("kind") == "tune" for t in (r.get("tune") or {}).get("trail", []) if t.get("run_id")}
    return store.records(ids) if ids else []


def run(args) -> int:
    from tbd.report.html import write_report

    store = Store(args.home)
    name, desc, records, comparison = gather_sides(store, args.targets, args.limit)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name).stem if Path(name).is_file() else name).strip("-") or "report"
    output = Path(args.output) if args.output else store.home / "reports" / slug / "report.html"
    if output.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--output should name an .html file, got '{output}'; e.g. --output report.html")
    if args.output and not output.parent.exists():
        raise UsageError(f"folder {output.parent} does not exist; create it or choose another --output")
    try:
        path = write_report(records, output, args.title or f"tbd report: {name}", subtitle=f"{desc}.", comparison=comparison)
    except OSError as exc:
        raise UsageError(f"cannot write the report to {output} ({exc.strerror or exc}); choose another --output") from None
    make_console().print(f"report of {len(records)} runs: {escape(str(path.resolve()))}", soft_wrap=True)  # a path stays one line to copy
    return 0
