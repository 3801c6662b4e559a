"""Sweeps, max-batch bisection, compare and the HTML report on one GPU, in one go.

    PYTHONPATH=src python3 bench/sweep_gpu.py --out $OUT      # on the GPU machine (about 4-5 minutes)
    PYTHONPATH=src python3 bench/sweep_gpu.py --smoke --out /tmp/x   # CPU check of the script

What it checks where only a GPU can:
1. a batch-size sweep of ResNet-50 (paper flavor, torch, channels_last) in fp32 and bf16 over
   batch 32..256, each point an isolated child process, as `tbd sweep` runs it;
2. `--max-batch`: the largest bf16 batch that fits, found by doubling and bisection with short
   isolated probes, each OOM a real CUDA out-of-memory in its own process;
3. the fp32 vs bf16 comparison (ratios with bootstrap CIs) and the report with GPU records
   (NVML utilization, MFU, allocator memory layers): $OUT/report.html plus PNG/SVG.
Uses no rich (the GPU machine may lack it): the sweep engine, compare and report only.
Full results: $OUT/sweep_gpu.json. The summary table is printed last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tbd.results.record import MEASURED  # statuses of a run with a throughput (converged or not)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny flavor, in-process: checks the script itself")
    args = ap.parse_args()
    if args.smoke:
        sys.modules["rich"] = None  # prove this path imports without rich, as on the GPU machine
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from tbd.report import compare as cmp
    from tbd.report.html import write_report
    from tbd.results.store import Store
    from tbd.sweep import spec as sweep_spec
    from tbd.sweep.engine import SweepRunner, latest_per_point

    store = Store(out / "store")
    started = time.perf_counter()
    common = dict(workloads=["resnet50"], frameworks=["torch"], channels_last=True)
    if args.smoke:
        sweep = sweep_spec.SweepSpec(name="gpu-sweep", flavors=["tiny"], devices=["cpu"], precisions=["fp32", "bf16"],
                                     batch_sizes=[2, 4], budget={**sweep_spec.DEFAULT_BUDGET, "max_steps": 4, "max_time": 5},
                                     isolate=False, **common)
        probe = sweep_spec.SweepSpec(name="gpu-max-batch", flavors=["tiny"], devices=["cpu"], precisions=["bf16"], batch_sizes=[2],
                                     max_batch=8, budget={**sweep_spec.DEFAULT_BUDGET, "max_time": 5}, isolate=False, **common)
    else:
        sweep = sweep_spec.SweepSpec(name="gpu-sweep", flavors=["paper"], devices=["cuda"], precisions=["fp32", "bf16"],
                                     batch_sizes=[32, 64, 128, 256],
                                     budget={**sweep_spec.DEFAULT_BUDGET, "max_steps": 200, "max_time": 8, "target_ci": 2}, **common)
        probe = sweep_spec.SweepSpec(name="gpu-max-batch", flavors=["paper"], devices=["cuda"], precisions=["bf16"], batch_sizes=[256],
                                     max_batch=8192, budget={**sweep_spec.DEFAULT_BUDGET, "max_time": 20}, **common)

    def log(event, record, info):
        if event != "start":
            status = record["status"] if record["status"] not in MEASURED else f"{record['metrics'].get('images_per_s', 0):.1f} img/s ({record['status']})"
            print(f"[{time.perf_counter() - started:6.1f}s] {info['label']}: {status}"
                  + (f" ({record['error']['kind']})" if record.get("error") else ""), flush=True)

    sweep_plan = sweep_spec.plan(sweep)
    sweep_result = SweepRunner(sweep_plan, store, on_point=log).run()
    sweep_s = time.perf_counter() - started
    probe_plan = sweep_spec.plan(probe)
    probe_result = SweepRunner(probe_plan, store, on_point=log).run()
    probe_s = time.perf_counter() - started - sweep_s

    records = latest_per_point(sweep_result.records)
    fp32 = [r for r in records if r["config"]["precision"] == "fp32"]
    bf16 = [r for r in records if r["config"]["precision"] == "bf16"]
    pairs, across, _ = cmp.pair_up(fp32, bf16)
    report = write_report(records + latest_per_point(probe_result.records, probes=True), out / "report.html",
                          "tbd sweep on the GPU", subtitle="ResNet-50 batch sweep, fp32 vs bf16, and a max-batch search.")
    probes = [{"batch": r["config"]["batch_size"], "status": r["status"], "error_kind": (r.get("error") or {}).get("kind")}
              for r in probe_result.records]
    summary = {
        "sweep_points": [{"precision": r["config"]["precision"], "batch": r["config"]["batch_size"], "status": r["status"],
                          "images_per_s": (r.get("metrics") or {}).get("images_per_s"), "mfu_pct": (r.get("metrics") or {}).get("mfu_pct"),
                          "gpu_util_nvml_pct": (r.get("metrics") or {}).get("gpu_util_nvml_pct"),
                          "peak_allocated_bytes": (r.get("memory") or {}).get("peak_allocated_bytes"),
                          "error": (r.get("error") or {}).get("message")} for r in records],
        "bf16_over_fp32": [{"point": p.label, "ratio": p.ratio, "ci95": [p.ci_low, p.ci_high]} for p in pairs],
        "compared_across": across,
        "max_batch": probe_result.max_batch, "probes": probes,
        "seconds": {"sweep": sweep_s, "max_batch": probe_s}, "report": str(report),
        "environment": records[0]["environment"] if records else {},
    }
    (out / "sweep_gpu.json").write_text(json.dumps(summary, indent=1, default=str))

    print("\n== sweep (images/s, MFU %) ==")
    print(f"{'precision':>9} {'batch':>6} {'img/s':>10} {'MFU%':>6} {'NVML%':>6} {'peak alloc GiB':>14}  status")
    for p in summary["sweep_points"]:
        gib = p["peak_allocated_bytes"] / 2**30 if p["peak_allocated_bytes"] else float("nan")
        print(f"{p['precision']:>9} {p['batch']:>6} {p['images_per_s'] or 0:>10.1f} {p['mfu_pct'] or 0:>6.1f} "
              f"{p['gpu_util_nvml_pct'] or 0:>6.1f} {gib:>14.2f}  {p['status']}")
    for p in summary["bf16_over_fp32"]:
        print(f"bf16/fp32 {p['point']}: {p['ratio']:.3f} (95% CI {p['ci95'][0]:.3f}-{p['ci95'][1]:.3f})")
    print(f"max batch (bf16): {probe_result.max_batch} after {len(probes)} probes: "
          + ", ".join(f"{p['batch']}:{'ok' if p['status'] == 'ok' else p['error_kind']}" for p in probes))
    print(f"time: sweep {sweep_s:.0f} s, max-batch {probe_s:.0f} s; report {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
