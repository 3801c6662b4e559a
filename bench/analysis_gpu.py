"""The paper's utilization findings redone with tbd: GPU (trace and NVML), FLOP and CPU
utilization of every workload of the suite, RNN workloads against image ones, and a long steady
run where trace-based GPU utilization is checked against NVML's.

    cd repo && PYTHONPATH=src python3 bench/analysis_gpu.py --out $OUT        # on a GPU, ~5 min
    PYTHONPATH=src python3 bench/analysis_gpu.py --smoke --out /tmp/ana-smoke  # on a CPU, tiny sizes

For each registered workload with a PyTorch implementation (missing ones are skipped and said
so): one profiled run of its paper flavor (fp32 by default, the paper's setting) through the
harness in a child process, then `tbd.analysis.analyze.analyze` on the stored record. Then
resnet50 at batch 128 (bf16, channels_last) for --long-time seconds, profiled; and, in this
process, a matched window: N steps traced (CUDA activity only, to keep the trace small) while
NVML is sampled over the same steps. Writes OUT/analysis_gpu.json, OUT/analysis_gpu.png and the
run store under OUT/tbd-home (traces included); prints a summary table last. Needs no `rich`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from tbd.results.record import MEASURED  # statuses of a run with a throughput (converged or not)

RNN = ("seq2seq", "deepspeech2")
IMAGE = ("resnet50", "inception_v3", "faster_rcnn", "wgan")
BUDGET_S = 270  # stop starting suite runs after this, to keep the whole bench under ~7 minutes
RUN_TIMEOUT_S = 150  # a run that reports nothing for this long is stopped, with the stack where it stalled


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--workloads", default="", help="comma list (default: all registered)")
    ap.add_argument("--precision", default="fp32", help="precision of the suite runs (default fp32, as the paper)")
    ap.add_argument("--max-time", type=float, default=8.0, help="measurement budget per suite run, s")
    ap.add_argument("--long-time", type=float, default=30.0, help="length of the long steady run, s")
    ap.add_argument("--skip-long", action="store_true", help="suite runs only (no long steady run)")
    ap.add_argument("--smoke", action="store_true", help="tiny flavors on the CPU")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["TBD_HOME"] = str(out / "tbd-home")  # the runs' children write their traces there

    from tbd import registry
    from tbd.results.store import Store

    store = Store()
    started = time.time()
    device, flavor = ("cpu", "tiny") if args.smoke else ("cuda", "paper")
    max_time = 2.0 if args.smoke else args.max_time
    names = [w for w in (args.workloads.split(",") if args.workloads else registry.workload_names()) if w]
    if args.smoke and not args.workloads:
        names = [n for n in ("resnet50", "seq2seq") if n in names]
    suite = []
    for name in names:
        if time.time() - started > BUDGET_S:
            suite.append({"workload": name, "status": "skipped", "reason": "time budget of the bench spent"})
            continue
        suite.append(profiled_run(store, name, dict(flavor=flavor, device=device, precision=args.precision if device == "cuda" else "fp32",
                                                     max_time_s=max_time, max_steps=400)))
        print(f"[{time.time() - started:5.0f} s] {name}: {suite[-1].get('status')} {suite[-1].get('reason', '')}", flush=True)
        (out / "analysis_gpu.json").write_text(json.dumps({"device": device, "suite": suite, "partial": True}, indent=1, default=str))
    long_batch = 8 if args.smoke else 128
    long_cfg = dict(flavor=flavor, device=device, batch_size=long_batch, precision="bf16" if device == "cuda" else "fp32",
                    channels_last=device == "cuda", max_time_s=5.0 if args.smoke else args.long_time, max_steps=100000, target_ci_pct=0.01)
    long = {"status": "skipped"} if args.skip_long else profiled_run(store, "resnet50", long_cfg)
    if not args.skip_long:
        long["matched_window"] = matched_window(store, long_cfg, 5 if args.smoke else None, long)
    print(f"[{time.time() - started:5.0f} s] long run: {long.get('status')}", flush=True)
    result = {"device": device, "flavor": flavor, "suite": suite, "long_run": long, "environment": _environment(store, suite + [long]),
              "elapsed_s": time.time() - started, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (out / "analysis_gpu.json").write_text(json.dumps(result, indent=1, default=str))
    figure = plot(suite, out / "analysis_gpu.png", f"{flavor} flavors on {device}")
    print_table(suite, long, figure)


def profiled_run(store, workload: str, point: dict) -> dict:
    from tbd import registry
    from tbd.analysis.analyze import analyze
    from tbd.config import RunConfig
    from tbd.errors import UsageError
    from tbd.harness.launcher import run_isolated

    try:
        config = RunConfig(workload=workload, framework="torch", profile=True, **point).validated()
    except UsageError as exc:  # no torch implementation here, a dependency missing: skip, say why
        return {"workload": workload, "status": "skipped", "reason": str(exc)}
    record = run_isolated(config, timeout_s=RUN_TIMEOUT_S)
    store.save(record)
    row = {"workload": workload, "run_id": record["id"], "status": record["status"], "batch_size": config.batch_size,
           "precision": config.precision, "domain": registry.get_spec(workload).domain}
    if record["status"] not in MEASURED:
        row["reason"] = (record.get("error") or {}).get("message", "")[:300]
        row["stacks"] = (record.get("error") or {}).get("stacks", "")[:4000]
        return row
    try:
        a = analyze(record, store.home)
    except Exception as exc:  # keep the run's own numbers even if its analysis fails
        row["reason"] = f"analysis failed: {exc}"[:200]
        a = None
    met = record["metrics"]
    row.update({"samples_per_s": met.get("samples_per_s"), "step_ms": met.get("step_time_ms_p50"),
                "trace_error": (record.get("analysis") or {}).get("error")})
    if a:
        u, k = a["utilization"], a.get("kernels") or {}
        row.update({k2: u.get(k2) for k2 in ("gpu_util_trace_pct", "gpu_util_nvml_pct", "gpu_util_nvml_trace_window_pct", "mfu_pct",
                                               "mfu_of_busy_time_pct", "tensor_core_share_pct", "cpu_util_pct", "cpu_cores_busy", "host_busy_trace_pct",
                                               "gpu_util_nvml_trace_window_note", "trace_vs_nvml_note")})
        row["kernel_classes_pct"] = {c: v["share_pct"] for c, v in (k.get("classes") or {}).items()}
        row["kernels_in_trace"] = k.get("kernels")
        row["top_kernels"] = [{"name": t["short"], "class": t["class"], "share_pct": t["share_pct"]} for t in (k.get("top_kernels") or [])[:5]]
        row["gpu_idle_not_waiting_pct"] = (a.get("host") or {}).get("gpu_idle_not_waiting_pct")
        row["diagnosis"] = a["diagnosis"]["label"]
        row["evidence"] = a["diagnosis"]["evidence"]
        row["recommendations"] = [(r["action"], r["expected_gain_pct"]) for r in a["recommendations"][:3]]
        row["stability"] = a["stability"].get("verdict")
        record.setdefault("analysis", {})["report"] = a
        store.save(record)
    return row


def matched_window(store, point: dict, steps: int | None, long: dict) -> dict:
    """Trace utilization and NVML utilization over the very same steps (in this process)."""
    try:
        from tbd import frameworks
        from tbd.harness.profiling import trace_session as profile_session
        from tbd.config import RunConfig

        config = RunConfig(workload="resnet50", framework="torch", **{**point, "max_time_s": 1.0}).validated()
        session = frameworks.open_session(config)
        session.run_steps(15)  # warm-up: cuDNN autotuning and allocator growth
        step_ms = long.get("step_ms") or 50.0
        n = steps or max(20, min(150, int(3000 / step_ms)))
        res = profile_session(session, config, "matched-window", steps=n, home=store.home, host=False)
        session.close()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    trace, summary = res.get("trace") or {}, res.get("summary") or {}
    dev = summary.get("device") or {}
    return {"steps": n, "window_s": trace.get("window_wall_s"), "gpu_util_trace_pct": dev.get("gpu_util_trace_pct"),
            "gpu_util_nvml_pct": trace.get("window_nvml_util_pct"), "nvml_samples": trace.get("window_nvml_samples"),
            "error": res.get("error") or res.get("summary_error")}


def _environment(store, rows) -> dict:
    run = next((r for r in rows if r.get("run_id")), None)
    if not run:
        return {}
    env = store.get(run["run_id"]).get("environment") or {}
    return {"device_name": env.get("device_name"), "gpu": env.get("gpu"), "libraries": env.get("libraries"),
            "cpu": env.get("cpu"), "cpu_cores": env.get("cpu_cores")}


def plot(suite: list[dict], path: Path, what: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"no figure ({exc})"
    rows = [r for r in suite if r.get("status") in MEASURED]
    if not rows:
        return "no figure (no successful run)"
    series = (("gpu_util_trace_pct", "GPU util (trace)"), ("gpu_util_nvml_pct", "GPU util (NVML)"),
              ("mfu_pct", "FLOP util (MFU)"), ("cpu_util_pct", "CPU util (% of all cores)"))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(rows)), 4.2))
    width = 0.8 / len(series)
    for i, (key, label) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(rows))]
        ax.bar(xs, [r.get(key) or 0 for r in rows], width, label=label)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["workload"] + (" (RNN)" if r["workload"] in RNN else "") for r in rows], rotation=20, ha="right")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.set_title(f"utilization by workload, {what} ({rows[0].get('precision')})")
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def _n(x, fmt="{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def print_table(suite: list[dict], long: dict, figure: str) -> None:
    head = (f"{'workload':<14}{'batch':>6}{'samples/s':>11}{'GPU trace%':>11}{'NVML same%':>11}{'GPU NVML%':>10}{'MFU%':>7}{'TC%':>6}{'CPU%':>7}"
            "  diagnosis")
    print("\n" + head + "\n" + "-" * len(head))
    for r in suite:
        if r.get("status") not in MEASURED:
            print(f"{r['workload']:<14}  {r.get('status')}: {r.get('reason', '')[:90]}")
            continue
        print(f"{r['workload']:<14}{r['batch_size']:>6}{_n(r.get('samples_per_s')):>11}{_n(r.get('gpu_util_trace_pct')):>11}"
              f"{_n(r.get('gpu_util_nvml_trace_window_pct')):>11}{_n(r.get('gpu_util_nvml_pct')):>10}"
              f"{_n(r.get('mfu_pct')):>7}{_n(r.get('tensor_core_share_pct'), '{:.0f}'):>6}{_n(r.get('cpu_util_pct')):>7}  {r.get('diagnosis', '-')}")
        for note in (r.get("gpu_util_nvml_trace_window_note"), r.get("trace_vs_nvml_note")):  # issue 15: within 5 points, or why not
            if note:
                print(f"{'':<14}  {note}")
    ok = [r for r in suite if r.get("status") in MEASURED and r.get("gpu_util_trace_pct") is not None]
    rnn = [r["gpu_util_trace_pct"] for r in ok if r["workload"] in RNN]
    img = [r["gpu_util_trace_pct"] for r in ok if r["workload"] in IMAGE]
    if rnn and img:
        print(f"RNN workloads mean GPU util (trace) {sum(rnn) / len(rnn):.1f}% vs image workloads {sum(img) / len(img):.1f}% "
              f"(ratio {sum(img) / len(img) / max(sum(rnn) / len(rnn), 1e-9):.2f}x; the paper: 2-3x)")
    m = long.get("matched_window") or {}
    print(f"long run resnet50 b{long.get('batch_size')} {long.get('precision')}: {long.get('status')}; trace util {_n(long.get('gpu_util_trace_pct'))}% "
          f"(5 steps) vs NVML {_n(long.get('gpu_util_nvml_pct'))}% (steady window); matched window of {m.get('steps')} steps: "
          f"trace {_n(m.get('gpu_util_trace_pct'))}% vs NVML {_n(m.get('gpu_util_nvml_pct'))}% ({m.get('nvml_samples')} samples)"
          + (f" error: {m['error']}" if m.get("error") else ""))
    print(f"figure: {figure}")


if __name__ == "__main__":
    main()
