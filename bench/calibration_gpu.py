"""Calibration of the recommendations' expected gains on this GPU (issue 15):

    PYTHONPATH=src python3 bench/calibration_gpu.py --out $OUT                 # on a GPU, ~8 minutes
    PYTHONPATH=src python3 bench/calibration_gpu.py --out /tmp/cal --smoke     # CPU, tiny flavors

For each suite workload, as a user would: `tbd run W --device cuda --flavor paper --profile`,
then `tbd analyze latest --verify N`, which reruns the top N recommendations a run option can
apply and logs each (expected, measured) pair with the facts the estimate came from in
`<store>/calibration.jsonl`. The store (OUT/tbd-home) comes back with the log; a table of the
pairs is printed last and written to OUT/calibration_gpu.json. The time model is revised from
these pairs (docs/analysis.md, "Calibration").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SUITE = ("resnet50", "inception_v3", "gpt", "transformer", "seq2seq", "wgan", "deepspeech2", "faster_rcnn")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--workloads", default=",".join(SUITE))
    ap.add_argument("--precision", default="fp32", help="the runs' precision (default fp32, the paper's)")
    ap.add_argument("--max-time", type=float, default=5.0, help="measurement budget of each run and rerun, s")
    ap.add_argument("--verify", default="2", help="recommendations to verify per workload: N or all")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure each verified change this many times, each against a fresh unchanged run (tbd analyze --repeat)")
    ap.add_argument("--budget", type=float, default=540.0, help="stop starting workloads after this many seconds")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny flavors")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TBD_HOME": str(out / "tbd-home")}
    device = ["--device", "cpu", "--flavor", "tiny"] if args.smoke else ["--device", "cuda", "--flavor", "paper"]
    began, rows = time.monotonic(), []
    for workload in args.workloads.split(","):
        if time.monotonic() - began > args.budget:
            rows.append({"workload": workload, "skipped": f"bench budget of {args.budget:g} s spent"})
            continue
        t0 = time.monotonic()
        run = tbd(["run", workload, *device, "--precision", args.precision, "--profile", "--max-time", f"{args.max_time:g}"], env)
        if run.returncode != 0:
            rows.append({"workload": workload, "error": tail(run)})
            print(f"{workload:12s} run failed: {rows[-1]['error']}", flush=True)
            continue
        analysis = tbd(["analyze", "latest", "--verify", args.verify, "--repeat", str(args.repeat)], env)
        rows.append({"workload": workload, "seconds": round(time.monotonic() - t0, 1), "rc": analysis.returncode,
                     **({"error": tail(analysis)} if analysis.returncode else {})})
        print(f"{workload:12s} {rows[-1]['seconds']} s rc {analysis.returncode}", flush=True)
    log = out / "tbd-home" / "calibration.jsonl"
    pairs = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    (out / "calibration_gpu.json").write_text(json.dumps({"workloads": rows, "pairs": pairs}, indent=1))
    print("\n| workload | action | expected % | measured % |\n|---|---|---|---|")
    for p in pairs:
        print(f"| {p['workload']} | {p['action']} | {p['expected_gain_pct']:+.0f} | {p['measured_gain_pct']:+.0f} |")
    summary = tbd(["analyze", "--calibration"], env)
    print(summary.stdout[-3000:])


def tbd(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tbd.cli", *argv], env=env, capture_output=True, text=True, timeout=900)


def tail(proc: subprocess.CompletedProcess) -> str:
    return (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["(no output)"])[-1][:300]


if __name__ == "__main__":
    main()
