"""Trustworthy verdicts on one GPU (issue 21): conditions recorded from NVML, noise caught.

    PYTHONPATH=src python3 bench/noise_gpu.py --out $OUT         # on the GPU machine (about 3 minutes)
    PYTHONPATH=src python3 bench/noise_gpu.py --smoke --out /tmp/x  # CPU check of the script (tiny flavor)

Three runs of resnet50 (paper flavor, bf16, channels_last, batch 128; tiny/fp32/batch 4 with
--smoke), each in its own child process as `tbd run` does it:
1. quiet: expected `ok` with no noise warning; its conditions show the GPU's SM/memory clocks,
   temperature, power and throttle reasons as NVML gives them;
2. contended: the same run while a second process runs matmuls on the same GPU for the middle
   part of the run (on the CPU: burns the CPUs); expected a noise warning (another process on the
   GPU and/or a change of regime in the step times) and, where the slowdown is large, a change
   point near where the hog started or stopped;
3. a 1-second budget with --compile: expected `unconverged` or `insufficient`, never "±0.0%",
   with the compile time reported.
Then `tbd compare`'s condition lines for quiet against contended. Writes OUT/noise_gpu.json and
prints a summary last. Needs no `rich`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HOG = """
import sys, time
device = sys.argv[1]; seconds = float(sys.argv[2]); delay = float(sys.argv[3])
time.sleep(delay)
end = time.time() + seconds
if device == "cuda":
    import torch
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    while time.time() < end:
        (a @ a).sum().item()
else:
    import multiprocessing as mp
    def burn(t):
        while time.time() < t: pass
    ps = [mp.Process(target=burn, args=(end,)) for _ in range(mp.cpu_count())]
    [p.start() for p in ps]; [p.join() for p in ps]
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny flavor: checks the script itself")
    ap.add_argument("--max-time", type=float, default=20.0, help="budget of the quiet and contended runs, s")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from tbd.config import RunConfig
    from tbd.harness.launcher import launch
    from tbd.harness.noise import compare_conditions
    from tbd.results.store import Store

    device = "cpu" if args.smoke else "cuda"
    base = dict(workload="resnet50", device=device, flavor="tiny" if args.smoke else "paper", batch_size=4 if args.smoke else 128,
                precision="fp32" if args.smoke else "bf16", channels_last=not args.smoke, max_steps=100000)
    store = Store(out / "tbd-home")
    results = {}

    def run(name: str, **over) -> dict:
        started = time.perf_counter()
        record = launch(RunConfig(**{**base, **over}).validated())
        store.save(record)
        m, method = record.get("metrics") or {}, record.get("method") or {}
        cond = (record.get("environment") or {}).get("conditions") or {}
        results[name] = {"id": record["id"], "status": record["status"], "wall_s": time.perf_counter() - started,
                         "throughput": m.get("images_per_s"), "ci_pct": m.get("throughput_ci95_half_width_pct"),
                         "compile_time_s": m.get("compile_time_s"), "warmup_time_s": m.get("warmup_time_s"),
                         "stop_reason": method.get("stop_reason"), "verdict": (method.get("convergence") or {}).get("reason"),
                         "noise": method.get("noise"), "conditions": cond, "error": record.get("error")}
        r = results[name]
        print(f"[{name}] {r['status']}: {r['throughput']} images/s CI {r['ci_pct']} | compile {r['compile_time_s']} s | "
              f"{len((r['noise'] or {}).get('warnings') or [])} noise warning(s)", flush=True)
        return record

    quiet = run("quiet", max_time_s=args.max_time)
    hog_s = args.max_time * 0.6
    hog = subprocess.Popen([sys.executable, "-c", HOG, device, str(hog_s), str(args.max_time * 0.4)])
    contended = run("contended", max_time_s=args.max_time)
    hog.wait()
    run("short-compiled", max_time_s=1.0, compile=not args.smoke, max_steps=100000)
    results["compare_conditions"] = compare_conditions([quiet], [contended])

    (out / "noise_gpu.json").write_text(json.dumps(results, indent=1, default=str))
    print("\n== summary ==")
    for name in ("quiet", "contended", "short-compiled"):
        r = results[name]
        ci = "no CI" if r["ci_pct"] is None else f"+-{r['ci_pct']:.2f}%"
        print(f"{name:<15} {r['status']:<13} {r['throughput'] or 0:10.1f} images/s {ci:>10}  compile {r['compile_time_s'] or 0:.2f} s")
        for w in (r["noise"] or {}).get("warnings") or []:
            print(f"{'':<15} noisy: {w}")
        gpu = (r["conditions"].get("after") or {}).get("gpu") or {}
        if gpu:
            print(f"{'':<15} GPU after: SM {gpu.get('sm_clock_mhz')} MHz (max {gpu.get('max_sm_clock_mhz')}), mem {gpu.get('mem_clock_mhz')} MHz, "
                  f"{gpu.get('temperature_c')} C, {gpu.get('power_w')} W, throttle {gpu.get('throttle_reasons')}, "
                  f"other processes {gpu.get('other_processes')}")
        print(f"{'':<15} others' CPU {r['conditions'].get('others_cpu_cores')} cores, threads {r['conditions'].get('intra_op_threads')}")
    for line in results["compare_conditions"]:
        print(f"compare: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
