"""`tbd tune WORKLOAD`: the fastest configuration of a workload on this machine, each step measured.

The search is `tbd.analysis.tune.search` (docs/tune.md); this command checks the input, runs it
with a progress bar, prints the trail and the answer (a `tbd run` command line and a sweep
file), and stores a record of kind 'tune' beside the trials' own runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tbd.commands import EXAMPLES
from tbd.commands.options import add_run_options, config_from_args
from tbd.errors import UsageError
from tbd.harness import launcher
from tbd.topology import world_size

TRIAL_MAX_TIME_S = 10.0  # steady seconds per trial unless --max-time says otherwise


def register(sub) -> None:
    p = sub.add_parser(
        "tune", help="find the fastest configuration of a workload here, each change measured", formatter_class=EXAMPLES,
        description="Start from the given configuration; repeatedly profile, diagnose, apply the most promising change "
                    "(precision, compile and its modes, channels_last, fused optimizers, batch size up to what fits, allocator, "
                    "cuDNN autotuning, threads, DDP buckets: what the framework offers), measure it in its own process and keep it "
                    "only if it helps beyond the 95% CI. Stops when nothing applicable is left or the budget ends. Each trial "
                    f"measures up to --max-time seconds (default here: {TRIAL_MAX_TIME_S:g}).",
        epilog="examples:\n  tbd tune resnet50 --device cuda --flavor paper --budget 10m\n"
               "  tbd tune gpt --device cuda --flavor paper --keep-semantics     # no batch or precision change\n"
               "  tbd tune transformer --device cuda --flavor paper --skip compile_mode --markdown tune.md\n"
               "  tbd tune resnet50 --flavor tiny --budget 2m                    # on the CPU",
    )
    p.add_argument("workload", help="workload name (see 'tbd list')")
    add_run_options(p)
    p.add_argument("--budget", default="10m", help="wall time for the whole search, like 10m, 90s or 1h (default: 10m)")
    p.add_argument("--keep-semantics", action="store_true",
                   help="leave out the levers that change the training math (batch size, precision)")
    p.add_argument("--skip", action="append", default=[], metavar="LEVER",
                   help="a lever not to try (repeatable, or a comma list: --skip compile,precision); an unknown name lists them")
    p.add_argument("--min-gain", type=float, default=1.0, metavar="PCT",
                   help="a change is kept when its gain's 95%% CI lies above 0 and the gain is at least this (default: 1)")
    p.add_argument("--no-profile", action="store_true", help="do not trace the trials: faster, but the levers are tried without estimates")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    p.add_argument("--markdown", metavar="FILE", help="also write the trail and the answer as Markdown, the waterfall figure beside it")
    p.set_defaults(func=run, max_time=TRIAL_MAX_TIME_S)


def run(args) -> int:
    from tbd.analysis import tune
    from tbd.report.tables import make_console
    from tbd.results.store import Store

    if args.in_process:
        raise UsageError("tbd tune runs each trial in its own process (so trials cannot affect each other); drop --in-process")
    if args.ncu:
        raise UsageError("tbd tune does not use Nsight Compute; drop --ncu (run 'tbd analyze RUN --ncu' on a trial instead)")
    if not 0 <= args.min_gain < 1000:
        raise UsageError(f"--min-gain is a percentage from 0, got {args.min_gain}; e.g. --min-gain 1")
    budget = tune.parse_budget(args.budget)
    markdown = _markdown_path(args.markdown) if args.markdown else None
    store = Store(args.home)
    config = dataclasses.replace(config_from_args(args, args.workload), profile=False, ncu=False, isolate=True)
    args.skip = [name for item in args.skip for name in item.split(",") if name]
    tune.check_skip(args.skip, config)
    store.prepare()  # a store that cannot take the trials fails here, before anything is measured
    batch_max = tune.confirmed_max_batch(store, config)
    console = make_console(getattr(args, "wide", False))
    if not args.json:
        console.print(f"tuning [bold]{escape(config.workload)}/{config.framework}/{escape(config.flavor)}[/] on {config.device} from "
                      f"{escape(_describe(config))}; budget {budget:g} s, each trial up to {config.max_time_s:g} s of steady steps"
                      + (f"; confirmed max batch {batch_max} (tbd memory)" if batch_max else ""))

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, transient=True, disable=args.json) as bar:
        task = bar.add_task("starting", total=config.max_steps, status="")

        def progress(p: dict) -> None:
            ci = f"CI ±{p['ci_pct']:.1f}%" if p["ci_pct"] != float("inf") else "warming up"
            bar.update(task, completed=p["steps"], status=ci)

        def on_start(trial) -> None:
            bar.reset(task, total=config.max_steps, status="starting")
            bar.update(task, description=f"#{trial.step} {trial.change}")

        def on_trial(trial) -> None:
            if not args.json:
                bar.console.print(_trial_line(trial, config))

        backend = tune.StoreBackend(store, profile=not args.no_profile, progress=progress)
        # each trial a fresh process, started ahead with the framework imported (launcher.warm_children)
        with launcher.warm_children(config.framework) if world_size(config) == 1 else contextlib.nullcontext():
            result = tune.search(config, backend, budget_s=budget, keep_semantics=args.keep_semantics, skip=tuple(args.skip),
                                 min_gain_pct=args.min_gain, batch_max=batch_max, on_trial=on_trial, on_start=on_start)
    result.notes += backend.notes
    best_record = store.get(result.best_run_id) if result.best_run_id else None
    method = {"budget_s": budget, "keep_semantics": args.keep_semantics, "skip": list(args.skip), "min_gain_pct": args.min_gain,
              "profile_each_trial": not args.no_profile, "confirmed_max_batch": batch_max,
              "trial": {"max_time_s": config.max_time_s, "target_ci_pct": config.target_ci_pct, "max_steps": config.max_steps}}
    record = tune.tune_record(result, best_record, method)
    store.save(record)
    stored = record.to_dict()
    if markdown is not None:
        _write_markdown(stored, markdown)
    code = 130 if result.interrupted else 0 if result.best_run_id else 1
    if args.json:
        print(json.dumps({"id": record.id, **stored["tune"]}, indent=1, default=str))
        return code
    print_result(stored, console)
    console.print(f"stored as [bold]{record.id}[/] (kind tune) in {escape(str(store.home))}; 'tbd report {record.id}' shows it with its trials"
                  + (f"; Markdown: {escape(str(markdown))}" if markdown else ""))
    return code


def _describe(config) -> str:
    from tbd.report.tune import describe

    return describe(config.to_dict())


def _trial_line(trial, config) -> str:
    from tbd.report.tune import expected_cell, measured_cell

    from tbd import registry
    from tbd.report.fmt import fmt_num

    t = dataclasses.asdict(trial)
    if trial.step == 0:
        what = f"{fmt_num(trial.throughput)} {registry.get_spec(config.workload).unit}/s" if trial.throughput else escape(trial.why)
        return f"  #0 start: {what} ({trial.seconds:.0f} s)"
    colour = "green" if trial.kept else "dim"
    return (f"  #{trial.step} [{colour}]{escape(trial.change)}[/]: expected {expected_cell(t)}, measured {measured_cell(t)} "
            f"({trial.seconds:.0f} s) - {escape(trial.why)}")


def print_result(record: dict, console) -> None:
    from tbd.report import tune as view

    tune = record["tune"]
    t = Table(title="tbd tune: the trail", header_style="bold")
    for col in view.TRAIL_HEADERS:
        t.add_column(col, overflow="fold", justify="right" if col in ("#", "expected gain", "throughput") else "left")
    for row in view.trail_rows(tune):
        t.add_row(*(escape(c) for c in row))
    console.print(t)
    if tune["left_out"]:
        console.print("[dim]not tried: " + escape("; ".join(f"{k} ({v})" for k, v in tune["left_out"].items())) + "[/]")
    for note in tune.get("notes") or []:
        console.print(f"[yellow]note:[/] {escape(note)}")
    console.print(f"stopped: {escape(tune['stopped'])} ({tune['elapsed_s']:.0f} s of {tune['budget_s']:g} s)")
    console.print(f"[bold]{escape(view.headline(record))}[/]")
    if tune.get("command"):
        console.print("best configuration, as a command line and as a sweep file ('tbd sweep --file tuned.toml'):")
        console.print(escape(tune["command"]), soft_wrap=True)
        console.print(escape(tune["toml"].rstrip()), soft_wrap=True)


def _markdown_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in (".md", ".markdown"):
        raise UsageError(f"--markdown should name a .md file, got '{text}'; e.g. --markdown tune.md")
    if not path.parent.exists():
        raise UsageError(f"folder {path.parent} does not exist; create it or choose another --markdown path")
    return path


def _write_markdown(record: dict, path: Path) -> None:
    from tbd.report import tune as view

    figure_name = None
    try:
        fig = view.waterfall(record)
        if fig is not None:
            from tbd.report.plots import save

            folder = path.parent / f"{path.stem}-plots"
            save(fig, folder, "waterfall")
            figure_name = f"{folder.name}/waterfall.png"
    except ImportError:  # matplotlib is the optional 'plot' extra: the text stands alone
        pass
    try:
        path.write_text(view.markdown(record, figure_name), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path} ({exc.strerror or exc}); the tuning is stored, 'tbd results show {record['id']}'") from None
