"""The paper's framework comparison on today's GPU: PyTorch eager, torch.compile and JAX side by
side for every workload that has a JAX implementation, through tbd's own runs (`launch`: one
child process per run, as `tbd run` does).

    PYTHONPATH=src python3 bench/frameworks_gpu.py --out OUT                 # paper flavors, bf16, on the GPU
    PYTHONPATH=src python3 bench/frameworks_gpu.py --out OUT --batch-scale 4 # the same at 4x the paper batch
    PYTHONPATH=src python3 bench/frameworks_gpu.py --smoke                   # tiny flavors on the CPU (checks the script)

Per workload and variant: throughput, MFU, peak device memory, GPU utilization (NVML), compile
count and compile seconds (JAX's jit; torch.compile's first steps show in the warm-up), and the
JAX / torch.compile and JAX / eager throughput ratios. Writes OUT/frameworks_gpu.json (records
without raw samples) and prints the table last.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

# (label, framework, --compile): the three ways of running one workload that the table compares.
VARIANTS = (("torch eager", "torch", False), ("torch.compile", "torch", True), ("jax", "jax", False))


def plan(args, registry) -> list[dict]:
    device, flavor = ("cpu", "tiny") if args.smoke else ("cuda", "paper")
    names = [w for w in (args.workloads.split(",") if args.workloads else registry.workload_names()) if w]
    points = []
    for name in names:
        spec = registry.get_spec(name)
        if not all(registry.has_implementation(name, fw) for _, fw, _ in VARIANTS):
            continue  # the comparison needs every variant
        precision = args.precision if spec.precisions is None or args.precision in spec.precisions else "fp32"
        batch = spec.flavor(flavor).batch_size * args.batch_scale
        for label, framework, compiled in VARIANTS:
            points.append(dict(label=label, config=dict(
                workload=name, framework=framework, flavor=flavor, device=device, precision=precision, compile=compiled,
                batch_size=batch, channels_last=spec.convolutional and device == "cuda" and registry.framework(framework).capabilities.channels_last,
                max_time_s=args.max_time, max_steps=args.max_steps)))
    return points


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--workloads", default="", help="comma list (default: every workload with a JAX implementation)")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--batch-scale", type=int, default=1, help="multiply each paper batch size (the large-batch table)")
    ap.add_argument("--max-time", type=float, default=20.0)
    ap.add_argument("--max-steps", type=int, default=400)
    ap.add_argument("--smoke", action="store_true", help="tiny flavors, fp32, on the CPU, a few steps")
    args = ap.parse_args()
    if args.smoke:
        args.precision, args.max_time, args.max_steps = "fp32", 10.0, 6
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TBD_HOME", str(out / "tbd-home"))

    from tbd import registry
    from tbd.config import RunConfig
    from tbd.harness.launcher import launch
    from tbd.results.store import Store

    store = Store()
    rows, records = [], []
    for point in plan(args, registry):
        t0 = time.time()
        config = RunConfig(**point["config"]).validated()
        record = launch(config)
        store.save(record)
        m, mem, err = record.get("metrics") or {}, record.get("memory") or {}, record.get("error") or {}
        unit = (record.get("workload") or {}).get("unit", "samples")
        rows.append(dict(workload=config.workload, variant=point["label"], batch=config.batch_size, unit=unit,
                         throughput=m.get(f"{unit}_per_s"), mfu=m.get("mfu_pct"), peak=mem.get("peak_allocated_bytes"),
                         gpu_util=m.get("gpu_util_nvml_pct"), compiles=m.get("compile_count"), compile_s=m.get("compile_s"),
                         recompiles=m.get("recompiles_after_first_pass"), warmup=m.get("warmup_steps"),
                         status=record["status"] if not err else f"{err.get('kind')}: {err.get('message', '')[:80]}"))
        slim = {k: v for k, v in record.to_dict().items() if k != "samples"}
        slim["wall_s"], slim["variant"] = time.time() - t0, point["label"]
        records.append(slim)
        (out / "frameworks_gpu.json").write_text(json.dumps(records, indent=1, default=str))
        r = rows[-1]
        print(f"[{time.time() - t0:5.0f} s] {r['workload']} {r['variant']}: {r['throughput'] or 0:,.1f} {unit}/s, MFU {r['mfu']}, "
              f"compiles {r['compiles']}, {r['status']}", flush=True)
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    fmt = lambda v, spec="{:.1f}": "-" if v is None else spec.format(v)  # noqa: E731
    print(f"\n{'workload':13s} {'variant':14s} {'batch':>6s} {'throughput':>24s} {'MFU%':>6s} {'peak GiB':>8s} "
          f"{'GPU%':>5s} {'compiles':>8s} {'compile s':>9s} {'vs eager':>8s} {'vs compile':>10s}  status")
    by_workload: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_workload.setdefault(r["workload"], {})[r["variant"]] = r
    for r in rows:
        base = by_workload[r["workload"]]
        ratio = lambda other: (r["throughput"] / base[other]["throughput"]  # noqa: E731
                               if r["throughput"] and other in base and base[other]["throughput"] else None)
        compiles = "-" if r["compiles"] is None else f"{r['compiles']}" + (f" (+{r['recompiles']})" if r["recompiles"] else "")
        print(f"{r['workload']:13s} {r['variant']:14s} {r['batch']:>6d} {fmt(r['throughput'], '{:,.1f}') + ' ' + r['unit'] + '/s':>24s} "
              f"{fmt(r['mfu']):>6s} {fmt(r['peak'] and r['peak'] / 2**30):>8s} {fmt(r['gpu_util'], '{:.0f}'):>5s} {compiles:>8s} "
              f"{fmt(r['compile_s']):>9s} {fmt(ratio('torch eager'), '{:.2f}x'):>8s} {fmt(ratio('torch.compile'), '{:.2f}x'):>10s}  {r['status']}")


if __name__ == "__main__":
    main()
