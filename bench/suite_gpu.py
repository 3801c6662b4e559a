"""Every workload of the suite at its paper flavor on one GPU, through `tbd run` (child process
per run, as users run it), plus an impossible size that must come back as a recorded OOM.

    PYTHONPATH=src python3 bench/suite_gpu.py --out OUT [--workloads a,b] [--precisions bf16,fp32]
    PYTHONPATH=src python3 bench/suite_gpu.py --smoke     # tiny flavors on the CPU

Writes OUT/suite_gpu.json (whole records without raw samples) and prints a table last.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--workloads", default="", help="comma list (default: all registered)")
    ap.add_argument("--precisions", default="bf16")
    ap.add_argument("--max-time", type=float, default=8.0)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--oom-check", action="store_true", help="also run an impossible size (gpt 1.3b, batch 4096)")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TBD_HOME", str(out / "tbd-home"))

    from tbd import registry
    from tbd.config import RunConfig
    from tbd.harness.launcher import launch
    from tbd.results.store import Store

    store = Store()
    device, flavor = ("cpu", "tiny") if args.smoke else ("cuda", "paper")
    names = [w for w in (args.workloads.split(",") if args.workloads else registry.workload_names()) if w]
    plan = []
    for name in names:
        spec = registry.get_spec(name)
        for precision in args.precisions.split(","):
            if device == "cpu" and precision not in ("fp32", "bf16"):
                continue
            if spec.precisions is not None and precision not in spec.precisions:
                precision = "fp32"  # e.g. a3c: its small policy trains in fp32 only
            plan.append(dict(workload=name, framework="torch", flavor=flavor, device=device, precision=precision,
                             channels_last=spec.convolutional and device == "cuda", compile=args.compile,
                             max_time_s=args.max_time, max_steps=400))
    if args.oom_check and not args.smoke:
        plan.append(dict(workload="gpt", framework="torch", flavor="1.3b", device=device, precision="bf16",
                         batch_size=4096, max_time_s=5.0, max_steps=5))
    rows, records = [], []
    for point in plan:
        t0 = time.time()
        try:
            config = RunConfig(**point).validated()
        except Exception as exc:  # a workload missing a dependency here: say so, go on
            rows.append((point["workload"], point["precision"], None, "-", None, None, None, f"skipped: {exc}"))
            continue
        record = launch(config)
        store.save(record)
        m, mem = record.get("metrics") or {}, record.get("memory") or {}
        unit = (record.get("workload") or {}).get("unit", "samples")
        err = record.get("error") or {}
        rows.append((config.workload, config.precision, config.batch_size, unit, m.get(f"{unit}_per_s"), m.get("mfu_pct"),
                     mem.get("peak_allocated_bytes"), record["status"] if not err else f"{err.get('kind')}: {err.get('message', '')[:90]}"))
        slim = {k: v for k, v in record.items() if k != "samples"}
        slim["wall_s"] = time.time() - t0
        records.append(slim)
        (out / "suite_gpu.json").write_text(json.dumps(records, indent=1, default=str))
    print(f"\n{'workload':14s} {'prec':5s} {'batch':>6s} {'throughput':>22s} {'MFU%':>6s} {'peak GiB':>9s}  status")
    for w, p, b, unit, thr, mfu, peak, status in rows:
        thr_s = f"{thr:,.1f} {unit}/s" if thr else "-"
        print(f"{w:14s} {p:5s} {str(b):>6s} {thr_s:>22s} {('-' if mfu is None else f'{mfu:.1f}'):>6s} "
              f"{('-' if not peak else f'{peak / 2**30:.1f}'):>9s}  {status}")


if __name__ == "__main__":
    main()
