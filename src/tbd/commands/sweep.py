"""`tbd sweep`: many isolated runs from flags, a TOML file or a preset, resumable.

    tbd sweep --preset quick
    tbd sweep --workloads resnet50 --frameworks torch,jax --batch-sizes 4,8,16 --precisions fp32,bf16 --devices cpu
    tbd sweep --file sweep.toml --max-time 20
    tbd sweep --workloads resnet50 --flavors paper --devices cuda --max-batch 4096

Flags override what the file or preset sets. The progress bar shows the point in flight, its
steps, and an ETA from the mean time of the points run so far.

Resuming: the same sweep (same plan, name, code revision and library versions) run again runs
only its missing points. Another --name, a new commit, uncommitted edits or new library
versions start a new sweep that measures every point. `--resume ID` continues a given sweep
whatever the code, with its own stored plan and name (other plan options are refused); `--rerun`
measures every point again.
"""

from __future__ import annotations

import copy
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tbd.commands import EXAMPLES, add_home
from tbd.commands.options import positive_float, positive_int, seed_int
from tbd.errors import UsageError
from tbd.report.tables import fmt_bytes, fmt_num, make_console, print_records, status_text
from tbd.results.record import has_result, headline
from tbd.results.store import Store
from tbd.sweep import spec as sweep_spec
from tbd.sweep.engine import SweepRunner


def register(sub) -> None:
    p = sub.add_parser(
        "sweep", help="run many configurations (batch sizes, frameworks, precisions, ...)", formatter_class=EXAMPLES,
        description="Run every point of workloads x frameworks x flavors x devices x precisions x compile x batch sizes, "
                    "each isolated and stored as it finishes. Running the same sweep again (same name, code revision "
                    "and library versions) resumes it; another name or new code measures every point again. "
                    "After an out-of-memory, larger batches of that line are skipped.",
        epilog="examples:\n  tbd sweep --preset quick\n"
               "  tbd sweep --workloads resnet50 --frameworks torch,jax --batch-sizes 4,8,16 --precisions fp32,bf16 --devices cpu\n"
               "  tbd sweep --file sweep.toml --max-time 20\n"
               "  tbd sweep --workloads resnet50 --flavors paper --devices cuda --max-batch 4096\n"
               "  tbd sweep --workloads resnet50,gpt --python current,torch211 --devices cuda   (environments compared in 'tbd report')\n"
               "sweep files: see docs/sweeps.md",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--file", help="a sweep file (TOML; format in docs/sweeps.md)")
    src.add_argument("--preset", help="quick (tiny flavors, minutes), paper (the paper's batch-size sweeps) or frameworks "
                                          "(every workload in every installed framework)")
    p.add_argument("--name", help="the sweep's name (default: the preset's, the file's stem, or sweep-<id>)")
    p.add_argument("--workloads", help="comma-separated workloads, or * for all (default: all)")
    p.add_argument("--frameworks", help="comma-separated frameworks, or * for every installed one (default: *)")
    p.add_argument("--flavors", help="comma-separated flavors (default: tiny)")
    p.add_argument("--devices", help="comma-separated devices: cpu, cuda, auto (default: auto)")
    p.add_argument("--precisions", help="comma-separated precisions: fp32, tf32, bf16, fp16 (default: fp32)")
    p.add_argument("--batch-sizes", help="comma-separated batch sizes (default: each flavor's)")
    p.add_argument("--compile", help="off, on or off,on: torch.compile as an axis (default: off)")
    p.add_argument("--python", metavar="WHERE,...", help="interpreters as an axis: current, environment names (tbd env list) or paths, "
                   "e.g. current,torch211 (default: current; docs/environments.md)")
    p.add_argument("--channels-last", action="store_true", default=None, help="NHWC memory format where the workload supports it")
    p.add_argument("--max-batch", nargs="?", type=positive_int, const=65536, metavar="BOUND",
                   help="find the largest batch that fits by bisection (short runs), up to BOUND (default 65536)")
    p.add_argument("--max-steps", type=positive_int, help="step budget per point including warm-up")
    p.add_argument("--max-time", type=positive_float, help="time budget per point in seconds")
    p.add_argument("--target-ci", type=positive_float, help="stop a point once its 95%% CI is within +-this %%")
    p.add_argument("--min-timed-steps", type=positive_int, help="at least this many steady steps per point")
    p.add_argument("--seed", type=seed_int, help="random seed (default: 0)")
    p.add_argument("--in-process", action="store_true", help="run points in this process (faster start; a crash ends the sweep)")
    p.add_argument("--retry-failed", action="store_true", help="on resume, run again the points that failed (other than OOM)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--rerun", action="store_true", help="measure every point again, even those this sweep already has")
    again.add_argument("--resume", metavar="ID", help="continue the sweep with this id (or id prefix): its own plan and name, even if the code or libraries "
                                                     "changed (other plan options are refused)")
    p.add_argument("--dry-run", action="store_true", help="list the points and exit")
    p.add_argument("--wide", action="store_true", help="the final table with every column and full ids")
    add_home(p)
    p.set_defaults(func=run)


PLAN_FLAGS = ("file", "preset", "workloads", "frameworks", "flavors", "devices", "precisions", "python", "batch_sizes", "compile",
              "channels_last", "max_batch", "max_steps", "max_time", "target_ci", "min_timed_steps", "seed")


def spec_from_args(args, base: sweep_spec.SweepSpec | None = None) -> sweep_spec.SweepSpec:
    """The sweep the flags describe: over the file, the preset, `base` (a resumed sweep's own
    definition) or the defaults."""
    if args.file:
        spec = sweep_spec.load_file(args.file)
    elif args.preset:
        spec = sweep_spec.load_preset(args.preset)
    else:
        spec = copy.deepcopy(base) if base else sweep_spec.SweepSpec()  # the flags change a copy: base stays as stored
    names = sweep_spec.split_names
    for key in ("workloads", "frameworks", "flavors", "devices", "precisions", "python"):
        value = getattr(args, key)
        if value is not None:
            items = names(value)
            if not items:
                raise UsageError(f"--{key} needs at least one name, e.g. --{key} {getattr(sweep_spec.SweepSpec(), key)[0]}")
            setattr(spec, key, items)
    if args.batch_sizes is not None:
        spec.batch_sizes, spec.batch_sizes_per_workload, spec.batch_scale = sweep_spec.parse_int_list(args.batch_sizes, "--batch-sizes"), {}, None
    if args.compile is not None:
        spec.compile = sweep_spec.parse_bool_list(args.compile, "--compile")
    if args.channels_last:
        spec.channels_last = True
    if args.max_batch is not None:
        spec.max_batch = args.max_batch
    for flag, key in (("max_steps", "max_steps"), ("max_time", "max_time"), ("target_ci", "target_ci"),
                      ("min_timed_steps", "min_timed_steps"), ("seed", "seed")):
        if getattr(args, flag) is not None:
            spec.budget[key] = getattr(args, flag)
    if args.in_process:
        spec.isolate = False
    if args.name:
        spec.name = args.name
    return spec


def run(args) -> int:
    store = Store(args.home)
    console = make_console(args.wide)
    if args.resume:
        old = _stored_sweep(store, args.resume)
        plan = sweep_spec.plan(_resumed_spec(old, args), home=args.home)
        plan = _resumed(old, plan, console)
    else:
        plan = sweep_spec.plan(spec_from_args(args), home=args.home)
        _say_if_measured_before(store, plan, console)
    for note in plan.notes:
        console.print(f"[dim]not run: {escape(note)}[/]")
    if not plan.lines:
        gpu_missing = any("no NVIDIA GPU is visible" in note for note in plan.notes)
        raise UsageError("this sweep has no point that can run here (see 'not run' above)"
                         + ("; no NVIDIA GPU is visible here: run it on a GPU machine or use --devices cpu" if gpu_missing
                            else "; check the workloads, frameworks and devices"))
    what = "max-batch search on" if plan.spec.max_batch else f"{plan.num_points} points in"
    name = escape(plan.name)
    console.print(f"sweep [bold]{name}[/] (id {plan.sweep_id}): {what} {len(plan.lines)} line(s); results in {escape(str(store.home))}")
    if args.dry_run:
        for line in plan.lines:
            console.print(f"  {escape(line.label)}: batch {', '.join(map(str, line.batches))}")
        return 0
    store.prepare()  # a store that cannot take the runs fails here, before anything is measured
    result = execute(plan, store, console, retry_failed=args.retry_failed, rerun=args.rerun, wide=args.wide)
    measured = [r for r in result.records if has_result(r)]
    loose = [r for r in measured if r["status"] != "ok"]
    if plan.spec.max_batch:  # probes answer "fits?": how fast they ran is no measurement (a few steps)
        ooms = sum(1 for r in result.records if r["status"] == "failed" and (r.get("error") or {}).get("kind") == "oom")
        console.print(f"sweep [bold]{escape(plan.name)}[/]: {result.ran} probes run, {result.resumed} already done; {len(measured)} fit, "
                      f"{ooms} out of memory, {result.failed - ooms} failed otherwise")
    else:
        console.print(f"sweep [bold]{escape(plan.name)}[/]: {result.ran} run, {result.resumed} already done, {result.skipped} skipped, "
                      f"{result.failed} failed; {len(measured)} points with results"
                      + (f", {len(loose)} of them not converged (raise --max-time)" if loose else ""))
    for label, batch in result.max_batch.items():
        bound = result.max_batch_bound.get(label)
        if bound is not None:  # the bound stopped the search, not memory
            flag = "--max-batch" if args.max_batch else "max_batch ="
            by = f"{flag} {bound}" if bound == plan.spec.max_batch else f"{bound} actors, the most this host's cores run"
            answer = f"{batch} or more (bounded by {by})"
        else:
            answer = str(batch) if batch else "none (even the smallest failed)"
        console.print(f"largest batch that fits, {escape(label)}: [bold]{escape(answer)}[/]", soft_wrap=True)
        if label in result.max_batch_notes:
            console.print(f"  {escape(result.max_batch_notes[label])}")
    console.print(f"next: tbd report {name}   |   tbd compare {name} OTHER")
    # Out-of-memory is an outcome a sweep expects; other failures make the exit status 1.
    broken = [r for r in result.records if r["status"] == "failed" and (r.get("error") or {}).get("kind") not in ("oom",)]
    return 1 if broken else 0


def _say_if_measured_before(store: Store, plan, console) -> None:
    """A sweep of this name measured with other code or libraries: say that this one starts afresh."""
    older = [s for s in store.sweeps(plan.name) if s["name"] == plan.name and s["id"] != plan.sweep_id]
    if older:
        what = _identity_change((older[0].get("summary") or {}).get("identity") or {}, plan.identity) or "with another plan"
        console.print(f"[dim]sweep {plan.name} was measured before (id {older[0]['id']}) {what}: measuring every point again; "
                      f"'--resume {older[0]['id']}' continues that one instead[/]")


def _identity_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """How the code or the libraries changed between two identities; '' where they did not. A
    library on one side only came with a framework of one plan, not with an upgrade."""
    if not old:
        return "by an older tbd"
    changes = []
    src_old, src_new = old.get("source") or {}, new.get("source") or {}
    if src_old != src_new:
        changes.append(f"at code {str(src_old.get('commit'))[:8]}{'+dirty' if src_old.get('dirty') else ''}")
    libs_old, libs_new = old.get("libraries") or {}, new.get("libraries") or {}
    changes += [f"with {k} {libs_old[k]}" for k in sorted(set(libs_old) & set(libs_new)) if libs_old[k] != libs_new[k]]
    return ", ".join(changes)


def _stored_sweep(store: Store, target: str) -> dict[str, Any]:
    """The stored sweep `--resume` names (an id or id prefix)."""
    found = [s for s in store.sweeps(target) if s["id"].startswith(target)]
    if len(found) != 1:
        raise UsageError(f"no sweep with id '{target}' in {store.home}" if not found else
                         f"sweep id '{target}' is ambiguous ({len(found)} sweeps start with it); give more characters")
    return found[0]


def _resumed_spec(old: dict[str, Any], args) -> sweep_spec.SweepSpec:
    """What `--resume` runs: the stored sweep's own definition. Plan options given with it must
    describe that same sweep: a resumed sweep never takes another plan (nor another name)."""
    stored = sweep_spec.SweepSpec.from_dict(old["spec"]) if old.get("spec") else None
    given = [flag for flag in PLAN_FLAGS if getattr(args, flag) not in (None, False)]
    if stored is None and not given:  # a row an older tbd wrote without its definition
        raise UsageError(f"sweep {old['id']} has no stored definition (an older tbd made it); give its plan with --resume "
                         f"(the --file or flags it ran with)")
    new_sweep = "leave out --resume and give a new --name to start a new sweep"
    if args.name and args.name != old["name"]:
        raise UsageError(f"sweep {old['id']} is named '{old['name']}' and keeps that name; drop --name to continue it, or {new_sweep} "
                         f"named '{args.name}'")
    spec = spec_from_args(args, base=stored)
    differ = stored.differences(spec) if stored is not None else []
    if differ:
        raise UsageError(f"sweep {old['id']} ({old['name']}) was defined with other {', '.join(differ)}; '--resume {old['id']}' alone "
                         f"continues its own plan, or {new_sweep} with this one")
    spec.name = old["name"]
    return spec


def _resumed(old: dict[str, Any], plan, console):
    """The plan, continuing the stored sweep `old` instead of a new one."""
    summary = old.get("summary") or {}
    if summary.get("plan_hash") and summary["plan_hash"] != plan.plan_hash:  # same definition, expanded by other code or on another machine
        console.print(f"[yellow]warning:[/] sweep {old['id']} expands into other points here (new code or another device); "
                      f"points not in it are run, its other points are kept")
    change = _identity_change(summary.get("identity") or {}, plan.identity)
    if change:
        console.print(f"[yellow]warning:[/] resuming sweep {old['id']}, measured {change}; its points and the new ones may differ for that reason")
    plan.sweep_id = old["id"]
    return plan


def execute(plan, store: Store, console, retry_failed: bool = False, launch=None, rerun: bool = False, wide: bool = False):
    """Run the plan under a progress bar (points done / total, ETA); print one line per point."""
    total = None if plan.spec.max_batch else plan.num_points
    columns = (TextColumn("[bold]sweep[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA {task.fields[eta]}"),
               TimeElapsedColumn(), TextColumn("{task.fields[current]}"))
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("sweep", total=total, eta="-", current="")

        def on_step(p: dict) -> None:
            bar.update(task, current=f"{state['label']}: step {p['steps']}/{p['max_steps']}")

        state: dict[str, Any] = {"label": ""}

        def on_point(event: str, record: dict | None, info: dict) -> None:
            state["label"] = info["label"]
            eta = _fmt_eta(info.get("eta_s"))
            if event in ("start", "waiting"):  # waiting: another runner of this sweep holds the line
                bar.update(task, current=escape(f"{info['label']}: {info.get('note') or 'starting'}"), eta=eta)
                return
            bar.update(task, advance=1, eta=eta)
            console.print(_point_line(event, record, info), soft_wrap=True)  # one line a point, however narrow the console

        runner = SweepRunner(plan, store, launch=launch, retry_failed=retry_failed, rerun=rerun, on_point=on_point, on_step=on_step)
        result = runner.run()
    if result.records and not plan.spec.max_batch:  # a probe's line already said whether it fit
        print_records([r for r in result.records if r["status"] != "skipped"][-40:], title=escape(f"sweep {plan.name}"), console=console, wide=wide)
    return result


def _point_line(event: str, record: dict, info: dict) -> str:
    h = headline(record)
    tag = {"resumed": "[dim]done before[/]", "skipped": "[yellow]skipped[/]"}.get(event, "")
    if has_result(record) and info.get("probe"):  # a few steps: whether the batch fits, not how fast it trains
        body = "[green]fits[/]" + (f" (peak {fmt_bytes(h['peak_bytes'])})" if h["peak_bytes"] else "")
    elif has_result(record):
        ci = f" ±{h['ci_pct']:.1f}%" if h["ci_pct"] is not None else ""
        body = f"{fmt_num(h['throughput'])} {h['unit']}/s{ci} {status_text(h['status'])}"
    elif record["status"] == "skipped":
        body = f"[yellow]skipped[/]: {escape((record.get('error') or {}).get('message', ''))}"
    else:
        err = record.get("error") or {}
        body = f"[red]{escape(str(err.get('kind')))}[/]: {escape(str(err.get('message', '')))}"
    index = escape(f"[{info['index']}]")
    return f"  {index} {escape(info['label'])}: {body} {tag}".rstrip()


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
