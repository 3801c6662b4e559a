"""`tbd compare A B`: side-by-side throughput with ratios, their 95% CIs, and regression checks.

    tbd compare 20261125-1701 20261125-1702
    tbd compare nightly-old nightly-new --fail-if-slower 5
    tbd compare --save-baseline base.json my-sweep      # later: tbd compare base.json my-sweep

Exit status: 0, or 1 when `--fail-if-slower PCT` finds a point of B slower than A by more than
PCT percent (the median ratio B/A below 1 - PCT/100; so PCT is below 100), or 2 for bad input.
Pairs where a side did not converge get no "faster/slower" verdict unless `--allow-unconverged`.
`--save-baseline FILE A` saves one thing, A, and replaces an existing FILE only with `--force`.
"""

from __future__ import annotations

import json
import math

from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tbd.commands import EXAMPLES, add_home
from tbd.commands.options import positive_float
from tbd.errors import UsageError
from tbd.harness.noise import compare_conditions
from tbd.report import compare as cmp
from tbd.report.tables import fmt_num, make_console
from tbd.results.record import headline
from tbd.results.store import Store


def register(sub) -> None:
    p = sub.add_parser(
        "compare", help="compare two runs, sweeps or a saved baseline", formatter_class=EXAMPLES,
        description="Pair the runs of A and B on their configuration and show B/A throughput ratios with 95% bootstrap CIs "
                    "from the raw per-step samples; warn where machines, versions or measuring conditions (load, other processes, "
                    "threads, clocks) differ; no verdict on pairs that did not converge. "
                    "Exit 1 when --fail-if-slower finds a regression.",
        epilog="examples:\n  tbd compare RUN_A RUN_B\n  tbd compare sweep-old sweep-new --fail-if-slower 5\n"
               "  tbd compare --save-baseline base.json my-sweep\n  tbd compare base.json my-sweep --fail-if-slower 3",
    )
    p.add_argument("a", metavar="A", help="baseline: run id or prefix, sweep name or id, or a baseline file")
    p.add_argument("b", metavar="B", nargs="?", help="candidate: same kinds as A")
    p.add_argument("--fail-if-slower", type=positive_float, metavar="PCT",
                   help="exit 1 if any point of B is more than PCT%% slower than A (B/A below 1 - PCT/100; 0 < PCT < 100)")
    p.add_argument("--allow-unconverged", action="store_true",
                   help="call differences significant even where a side did not converge (status unconverged or insufficient)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON (pairs, ratios, CIs, verdicts) instead of a table")
    p.add_argument("--wide", action="store_true", help="full-width table whatever the terminal")
    p.add_argument("--save-baseline", metavar="FILE", help="write A's records to FILE (JSON) for later comparisons, and exit (give A only)")
    p.add_argument("--force", action="store_true", help="with --save-baseline: replace FILE if it exists")
    add_home(p)
    p.set_defaults(func=run)


def _check_args(args) -> None:
    """Refuse what cannot mean anything before reading or writing anything."""
    if args.fail_if_slower is not None and args.fail_if_slower >= 100:
        # "PCT% slower" is B/A below 1 - PCT/100: at 100 or more no throughput could be that slow
        raise UsageError(f"--fail-if-slower takes a percentage below 100 (B/A below 1 - PCT/100), got {args.fail_if_slower:g}; "
                         "e.g. --fail-if-slower 5")
    if args.save_baseline and args.b:
        raise UsageError(f"--save-baseline saves one run or sweep, A; drop '{args.b}' (save each to its own file)")
    if args.force and not args.save_baseline:
        raise UsageError("--force only applies to --save-baseline FILE; drop it")


def run(args) -> int:
    _check_args(args)
    store = Store(args.home)
    console = make_console(args.wide)
    desc_a, recs_a = cmp.resolve(store, args.a)
    if args.save_baseline:
        path = cmp.save_baseline(args.save_baseline, desc_a, recs_a, replace=args.force)
        console.print(escape(f"saved {len(recs_a)} run(s) of {desc_a} as baseline {path}; compare with 'tbd compare {path} NEW'"))
        return 0
    if not args.b:
        raise UsageError("tbd compare needs two things to compare: tbd compare A B (or --save-baseline FILE A)")
    desc_b, recs_b = cmp.resolve(store, args.b)
    pairs, across, lonely = cmp.pair_up(recs_a, recs_b)
    if args.json:
        return _print_json(args, desc_a, desc_b, pairs, across, lonely, recs_a, recs_b)
    console.print(f"A = {escape(desc_a)}\nB = {escape(desc_b)}" + (f"\ncompared across: {', '.join(across)}" if across else ""))
    if not pairs:
        raise UsageError("A and B have no successful runs of the same configuration to compare; check both with 'tbd results'")
    table = Table(title="throughput, B / A", header_style="bold", box=box.SIMPLE_HEAD, padding=0, pad_edge=False, show_edge=False)
    for col, justify in (("point", "left"), ("A", "right"), ("B", "right"), ("B/A", "right"), ("95% CI", "right"), ("verdict", "left")):
        # the point key never folds or ellipsizes: rows of batch 2 and 4 must not look alike
        table.add_column(col, justify=justify, no_wrap=col != "verdict", overflow="fold", min_width=len(col))
    limit = 1.0 - args.fail_if_slower / 100.0 if args.fail_if_slower else None
    for p in pairs:
        ha, hb = headline(p.a), headline(p.b)
        ci = f"{p.ci_low:.3f}-{p.ci_high:.3f}" if not math.isnan(p.ci_low) else "n/a (too few samples)"
        verdict = _verdict(p, limit, args.allow_unconverged)
        table.add_row(escape(p.label), f"{fmt_num(ha['throughput'])} {ha['unit']}/s", f"{fmt_num(hb['throughput'])} {hb['unit']}/s",
                      f"{p.ratio:.3f}", ci, verdict)
    console.print(table)
    for line in lonely:
        console.print(f"[yellow]unpaired:[/] {escape(line)}")
    loose = [p for p in pairs if not p.converged]
    if loose and not args.allow_unconverged:
        console.print(f"[yellow]note:[/] {len(loose)} pair(s) include a run that did not converge; no difference is called "
                      "significant there (--allow-unconverged to judge them anyway; longer --max-time to converge)")
    for warning in cmp.environment_warnings(recs_a, recs_b):
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    paired_a, paired_b = [p.a for p in pairs], [p.b for p in pairs]
    for line in compare_conditions(paired_a, paired_b):  # load, other processes, threads, clocks
        console.print(f"[yellow]conditions:[/] {escape(line)}")
    if args.fail_if_slower:
        bad = cmp.regressions(pairs, args.fail_if_slower)
        if bad:
            console.print(f"[red]regression: {len(bad)} point(s) of B are more than {args.fail_if_slower:g}% slower than A[/]: "
                          + ", ".join(f"{escape(p.label)} ({(1 - p.ratio) * 100:.1f}% slower)" for p in bad))
            return 1
        console.print(f"[green]no point of B is more than {args.fail_if_slower:g}% slower than A[/]")
    return 0


def _verdict(p: cmp.Pair, limit: float | None, allow_unconverged: bool = False) -> str:
    if math.isnan(p.ratio):
        return ""
    if limit is not None and p.ratio < limit:
        return "[red]REGRESSION[/]" + ("" if p.converged else f" [yellow]({escape(p.unconverged_sides)})[/]")
    if not p.converged and not allow_unconverged:  # a CI from a run that did not settle says nothing
        return f"[yellow]not converged ({escape(p.unconverged_sides)}): no verdict[/]"
    if not math.isnan(p.ci_low) and p.ci_high < 1.0:
        return "slower (CI excludes 1)"
    if not math.isnan(p.ci_low) and p.ci_low > 1.0:
        return "faster (CI excludes 1)"
    return "within noise" if not math.isnan(p.ci_low) else ""


def _print_json(args, desc_a: str, desc_b: str, pairs, across, lonely, recs_a, recs_b) -> int:
    """The comparison as one JSON object; the exit code is the table's (1 on a regression)."""
    limit = 1.0 - args.fail_if_slower / 100.0 if args.fail_if_slower else None
    rows = []
    for p in pairs:
        ha, hb = headline(p.a), headline(p.b)
        rows.append({"point": p.label, "a_id": ha["id"], "b_id": hb["id"], "unit": ha["unit"], "a_per_s": ha["throughput"],
                     "b_per_s": hb["throughput"], "ratio": None if math.isnan(p.ratio) else p.ratio,
                     "ci95": None if math.isnan(p.ci_low) else [p.ci_low, p.ci_high], "converged": p.converged,
                     "verdict": Text.from_markup(_verdict(p, limit, args.allow_unconverged)).plain})
    bad = cmp.regressions(pairs, args.fail_if_slower) if args.fail_if_slower else []
    out = {"a": desc_a, "b": desc_b, "compared_across": across, "pairs": rows, "unpaired": lonely,
           "warnings": cmp.environment_warnings(recs_a, recs_b),
           "conditions": compare_conditions([p.a for p in pairs], [p.b for p in pairs]),
           "fail_if_slower_pct": args.fail_if_slower, "regressions": [p.label for p in bad]}
    print(json.dumps(out, indent=1, default=str))
    return 1 if bad else 0
