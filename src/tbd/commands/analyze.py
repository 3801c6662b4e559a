"""`tbd analyze RUN [--verify] [--ncu] [--json]`: what limits a run and what to do about it.

RUN is a run id, a unique prefix of one, or 'latest'. The analysis is printed and stored with
the run (the record's `analysis.report`). Bad input (no such run, a trace that cannot be read,
--ncu without Nsight Compute) is one line on stderr, exit code 2, and nothing is changed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tbd.analysis.analyze import analyze
from tbd.commands import EXAMPLES, add_home
from tbd.errors import UsageError
from tbd.report.tables import fmt_num, make_console
from tbd.results.store import Store


def register(sub) -> None:
    p = sub.add_parser(
        "analyze", help="utilization, kernel breakdown, diagnosis and recommendations for a run", formatter_class=EXAMPLES,
        description="Analyze a stored run: GPU utilization (trace and NVML), FLOP and CPU utilization, kernel classes, host side, "
                    "step-time stability, the class of bottleneck and ranked recommendations. Runs recorded with --profile get "
                    "kernel-level analysis.",
        epilog="examples:\n  tbd run resnet50 --profile && tbd analyze latest\n  tbd analyze 20261125-1701 --verify\n"
               "  tbd analyze latest --verify all   # every applicable recommendation\n"
               "  tbd analyze latest --verify 1 --repeat 3   # the top one, 3 pairs of runs, median and range\n"
               "  tbd analyze --calibration         # expected against measured gains of every verified recommendation\n"
               "  tbd analyze latest --ncu      # needs Nsight Compute on PATH and a GPU\n  tbd analyze latest --json",
    )
    p.add_argument("run_id", metavar="RUN", nargs="?", help="a run id, a unique prefix of one, or 'latest'")
    p.add_argument("--verify", nargs="?", const="2", metavar="N|all",
                   help="rerun with the top N applicable recommendations (default 2, or all), report and log the measured gains")
    p.add_argument("--repeat", type=int, default=1, metavar="R",
                   help="with --verify: measure each change R times, each against a fresh run of the unchanged configuration "
                        "just before it; the gain is the median, shown with its range (host-bound runs drift between sessions)")
    p.add_argument("--calibration", action="store_true", help="show every verified recommendation in the store: expected against measured gain")
    p.add_argument("--ncu", action="store_true", help="add Nsight Compute tensor/FMA pipe utilization (reruns a few steps under ncu)")
    p.add_argument("--json", action="store_true", help="print the analysis as JSON instead of tables")
    add_home(p)
    p.set_defaults(func=run)


def verify_count(text: str | None) -> int | None:
    if text == "all":
        return None
    try:
        count = int(text)
    except (TypeError, ValueError):
        raise UsageError(f"--verify takes a number of recommendations or 'all', got '{text}'") from None
    if count < 1:
        raise UsageError(f"--verify needs at least 1 recommendation, got {count}")
    return count


def run(args) -> int:
    store = Store(args.home)
    if args.calibration:
        return show_calibration(store, args.json)
    if not args.run_id:
        raise UsageError("give a run to analyze (a run id or 'latest'), or --calibration")
    count = verify_count(args.verify) if args.verify else None
    if args.repeat != 1 and not args.verify:
        raise UsageError("--repeat goes with --verify: tbd analyze RUN --verify --repeat 3")
    if args.repeat < 1:
        raise UsageError(f"--repeat needs at least 1 measurement of each change, got {args.repeat}")
    if args.ncu:
        from tbd.analysis.ncu import require_ncu

        require_ncu(None)
    record = store.get(args.run_id)
    store.prepare()  # the analysis is stored with the run: a store that cannot take it fails here, before analyzing
    config = None
    if args.ncu or args.verify:
        from tbd.config import RunConfig

        config = RunConfig.from_dict(dict(record["config"]))
    if args.ncu:
        from tbd.analysis.ncu import require_ncu, run_ncu

        require_ncu(config.device)
        config.validated()
    analysis = analyze(record, store.home)  # raises before anything is written
    console = make_console()
    if args.ncu:
        record.setdefault("analysis", {})["ncu"] = run_ncu(config)
        analysis = analyze(record, store.home)
    if args.verify:
        from tbd.analysis.verify import nothing_to_verify, pick, verify

        # Not a usage error: the run is fine, there is just no run option to measure (exit 0).
        # Under --json these lines go to stderr so that stdout stays one JSON document.
        def say(line: str) -> None:
            if args.json:
                print(line, file=sys.stderr)
            else:
                console.print(escape(line), soft_wrap=True)

        if pick(analysis["recommendations"], count):
            say(f"verifying: rerunning with the top {'applicable' if count is None else count} recommendation(s) ...")
        else:
            say(nothing_to_verify(record))
        analysis["verify"] = verify(record, analysis, store, count=count, repeat=args.repeat)
    record.setdefault("analysis", {})["report"] = analysis
    store.save(record)
    if args.json:
        print(json.dumps(analysis, indent=1, default=str))
        return 0
    print_analysis(record, analysis, console, store.home)
    return 0


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}%"


def print_analysis(record: dict[str, Any], a: dict[str, Any], console: Console, home) -> None:
    cfg = record["config"]
    console.print(f"[bold]analysis of run {record['id']}[/]: {cfg['workload']}/{cfg['framework']}/{cfg['flavor']} on {cfg['device']}"
                  f" ({escape(str((record.get('environment') or {}).get('device_name', '')))}), batch {cfg['batch_size']}, {cfg['precision']}")
    for note in a["notes"]:
        console.print(f"[yellow]note:[/] {escape(note)}")
    u = a["utilization"]
    t = Table(title="utilization", header_style="bold")
    for col in ("measure", "value", "how it is measured"):
        t.add_column(col)
    t.add_row("GPU compute utilization (trace)", _pct(u["gpu_util_trace_pct"]), "union of kernel intervals / profiled window")
    t.add_row("GPU utilization (NVML)", u.get("gpu_util_nvml_note") or _pct(u["gpu_util_nvml_pct"]), "NVML counter, mean over the steady window")
    if u.get("gpu_util_nvml_trace_window_pct") is not None or u.get("gpu_util_nvml_trace_window_note"):
        t.add_row("GPU utilization (NVML, profiled window)", u.get("gpu_util_nvml_trace_window_note") or _pct(u["gpu_util_nvml_trace_window_pct"]),
                  "NVML counter during the traced steps")
    if u.get("trace_vs_nvml_note"):
        console.print(f"[yellow]note:[/] {escape(u['trace_vs_nvml_note'])}")
    source = f" ({u['peak_source']})" if u["peak_source"] else ""
    t.add_row(f"FLOP utilization ({u['peak_precision']} peak)", _pct(u["mfu_pct"]), "model FLOPs / step time / peak" + source)
    if u.get("mfu_of_busy_time_pct") is not None:
        t.add_row("FLOP utilization while kernels run", _pct(u["mfu_of_busy_time_pct"]), "MFU / trace utilization")
    for prec, val in (u.get("flop_util_by_precision_pct") or {}).items():
        if prec != u["peak_precision"]:
            t.add_row(f"  vs {prec} peak", _pct(val), "same model FLOP/s against another precision's peak")
    t.add_row("tensor-core share of kernel time", _pct(u["tensor_core_share_pct"]), "kernel-name heuristics")
    if u.get("ncu_tensor_pipe_pct") is not None or u.get("ncu_fma_pipe_pct") is not None:
        t.add_row("tensor / FMA pipe (ncu)", f"{_pct(u['ncu_tensor_pipe_pct'])} / {_pct(u['ncu_fma_pipe_pct'])}", "hardware counters, weighted by kernel time")
    cpu_busy = f"; {fmt_num(u['cpu_cores_busy'])} cores busy" if u.get("cpu_cores_busy") is not None else ""
    t.add_row("CPU utilization (process)", u.get("cpu_util_note") or _pct(u["cpu_util_pct"]), f"CPU time / (cores x steady window){cpu_busy}")
    if u.get("cpu_util_trace_window_pct") is not None or u.get("cpu_util_trace_window_note"):
        t.add_row("CPU utilization (profiled window)", u.get("cpu_util_trace_window_note") or _pct(u["cpu_util_trace_window_pct"]),
                  "same, over the traced steps (profiler overhead included)")
    facts = a.get("facts") or {}
    if facts.get("input_wait_how"):  # a run on a dataset on disk (docs/data.md)
        t.add_row("waiting for input", _pct(facts.get("input_wait_pct")), f"{facts['input_wait_how']}, share of the steady window (measured every step)")
    console.print(t)
    k = a.get("kernels")
    if k:
        kt = Table(title=f"kernel time by class ({k['kernels']} kernels, {fmt_num(k['kernel_time_ms'])} ms)", header_style="bold")
        for col, j in (("class", "left"), ("time ms", "right"), ("share", "right"), ("count", "right")):
            kt.add_column(col, justify=j)
        for cls, row in k["classes"].items():
            kt.add_row(cls, fmt_num(row["time_ms"]), _pct(row["share_pct"]), str(row["count"]))
        console.print(kt)
        top = Table(title="top kernels", header_style="bold")
        columns = (("kernel", "left"), ("class", "left"), ("TC", "center"), ("time ms", "right"), ("share", "right"),
                   ("count", "right"), ("mean us", "right"))
        for col, j in columns:
            top.add_column(col, justify=j, overflow="fold")
        for r in k["top_kernels"]:
            top.add_row(escape(r["short"]), r["class"], "yes" if r["tensor_cores"] else "", fmt_num(r["time_ms"]), _pct(r["share_pct"]),
                        str(r["count"]), fmt_num(r["mean_us"]))
        console.print(top)
    h = a.get("host")
    if h:
        ht = Table(title="host side (profiled window)", header_style="bold")
        ht.add_column("measure")
        ht.add_column("value", justify="right")
        ht.add_row("host busy (ops, launches; syncs excluded)", _pct(h["busy_pct"]))
        ht.add_row("host waiting for the device", _pct(h["sync_wait_pct"]))
        if "gpu_idle_not_waiting_pct" in h:
            ht.add_row("GPU idle while the host is not waiting (launch-bound)", _pct(h["gpu_idle_not_waiting_pct"]))
            ht.add_row("GPU idle while the host runs ops", _pct(h["gpu_idle_host_busy_pct"]))
        ht.add_row("waiting for input", _pct(h["input_wait_pct"]) + ("" if h["input_spans"] else " (no data-loading spans)"))
        ht.add_row("host ops per step", fmt_num(h.get("ops_per_step")))
        console.print(ht)
        if cfg["device"] == "cpu" and h["op_classes"]:
            ot = Table(title="CPU op self time by class", header_style="bold")
            for col, j in (("class", "left"), ("time ms", "right"), ("share", "right")):
                ot.add_column(col, justify=j)
            for cls, row in h["op_classes"].items():
                ot.add_row(cls, fmt_num(row["time_ms"]), _pct(row["share_pct"]))
            console.print(ot)
    s = a["stability"]
    if s.get("steps"):
        console.print(f"[bold]step-time stability[/] ({s['steps']} steady steps, median {fmt_num(s['median_ms'])} ms): {escape(s['verdict'])}")
    d = a["diagnosis"]
    console.print(f"[bold]diagnosis: [magenta]{d['label']}[/][/] — {escape(d['evidence'])}")
    for sec in d["secondary"]:
        console.print(f"  also {sec['label']}: {escape(sec['evidence'])}")
    for note in d["notes"]:
        console.print(f"  [dim]{escape(note)}[/]")
    recs = a["recommendations"]
    if recs:
        rt = Table(title="recommendations (expected gains are estimates with their range; --verify measures the top two)", header_style="bold")
        for col, j in (("#", "right"), ("action", "left"), ("expected gain", "right"), ("basis", "left"), ("how", "left")):
            rt.add_column(col, justify=j, overflow="fold")
        for r in recs:
            how = r["how"] + (f" [dim](verify applies {r['apply']})[/]" if r["apply"] else "")
            low, high = r.get("expected_gain_range_pct") or (r["expected_gain_pct"], r["expected_gain_pct"])
            rt.add_row(str(r["rank"]), escape(r["action"]), f"+{r['expected_gain_pct']:.0f}% (+{low:.0f}..+{high:.0f}%)", escape(r["basis"]), how)
        console.print(rt)
    else:
        console.print("no recommendation applies")
    for v in _as_list(a.get("verify")):
        if v.get("measured_gain_pct") is not None:
            spread = v.get("measured_gain_range_pct")
            runs = (f"median of {len(v['measured_gains_pct'])} pairs of runs, {spread[0]:+.1f}% to {spread[1]:+.1f}%; "
                    if spread else "")
            console.print(f"[bold]verify[/]: {escape(v['action'])}: expected +{v['expected_gain_pct']:.0f}%, measured {v['measured_gain_pct']:+.1f}% "
                          f"({runs}{fmt_num(v['throughput_before'])} -> {fmt_num(v['throughput_after'])} {v['unit'].replace('_', ' ')}/s, run {v['run_id']})")
        elif v.get("not_measurable"):
            console.print(f"[bold]verify[/]: {escape(v['action'])}: {escape(v['not_measurable'])}")
        else:
            console.print(f"[bold]verify[/]: {escape(v['action'])}: rerun {v['run_id']} failed: {escape(str(v.get('error')))}")
        if v.get("note"):
            console.print(f"  [dim]{escape(v['note'])}[/]")
    if a.get("trace"):
        console.print(f"trace: {escape(a['trace']['file'])} (open in https://ui.perfetto.dev or chrome://tracing)")
    console.print(f"analysis stored with run {record['id']} ('tbd results show {record['id']} --json')")


def _as_list(value) -> list[dict[str, Any]]:
    """Verify results: a list, or one dict in analyses stored before --verify took a count."""
    return value if isinstance(value, list) else [value] if value else []


def show_calibration(store: Store, as_json: bool) -> int:
    from tbd.analysis.verify import calibration

    rows, summary = calibration(store)
    if as_json:
        print(json.dumps({"pairs": rows, "summary": summary}, indent=1))
        return 0
    console = make_console()
    if not rows:
        console.print(f"no verified recommendation in {store.home} yet; run 'tbd analyze RUN --verify'")
        return 0
    t = Table(title="verified recommendations: expected against measured gain", header_style="bold")
    t.add_column("workload", no_wrap=True)
    t.add_column("device")
    t.add_column("prec.", no_wrap=True)
    t.add_column("batch", no_wrap=True)
    t.add_column("action", overflow="fold")
    for col in ("expected", "now", "measured"):  # the figures the table is for: never cut
        t.add_column(col, no_wrap=True, justify="right")
    for r in rows:
        now = r.get("expected_now_pct")
        t.add_row(r["workload"], escape(str(r.get("device_name") or r["device"])), r["precision"], str(r["batch_size"]), escape(r["action"]),
                  f"+{r['expected_gain_pct']:.0f}%", "-" if now is None else f"+{now:.0f}%", f"{r['measured_gain_pct']:+.0f}%")
    console.print(t)
    console.print(f"{summary['pairs']} pairs; median |expected - measured| as a share of the measured gain: "
                  f"{_pct_or_dash(summary['median_abs_error_pct_of_measured'])} as logged, "
                  f"{_pct_or_dash(summary['median_abs_error_now_pct_of_measured'])} with the current model "
                  "('now': the current model's estimate of the same change from the same run's facts); "
                  f"median |expected / measured throughput - 1|: {_pct_or_dash(summary['median_throughput_error_pct'])} as logged, "
                  f"{_pct_or_dash(summary['median_throughput_error_now_pct'])} now")
    return 0


def _pct_or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"
