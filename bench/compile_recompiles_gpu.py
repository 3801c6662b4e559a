"""torch.compile on the variable-length workloads: compile counts and steady step times.

    PYTHONPATH=src python3 bench/compile_recompiles_gpu.py --out OUT             # one H200: 4-8 minutes (at most 17)
    PYTHONPATH=src python3 bench/compile_recompiles_gpu.py --out OUT --only transformer   # the runs whose label has it
    PYTHONPATH=src python3 bench/compile_recompiles_gpu.py --out OUT --device cpu --quick   # smoke test

Runs deepspeech2 paper fp32 batch 8 eager and with --compile, and seq2seq and transformer paper
with --compile, each as one `tbd run` (a child process, as the CLI launches it) into OUT/home,
then prints one line per run and writes OUT/compile_recompiles.json: throughput, median step,
compile_count, compile_s, recompiles_after_first_pass and any recompilation_defect. A run past
its time limit (--limit: 120 s eager, 300 s compiled; a cold inductor compile of the paper
transformer's 6+6 layers, forward and backward, may take a few minutes) is killed and reported
as such. Each compiled run logs Dynamo's recompilations and graph breaks (TORCH_LOGS) to
OUT/logs/LABEL.log, killed or not; `recompile_events` counts them ("Recompiling function"
lines, the first pass's included). What to look for: deepspeech2 --compile with
recompiles_after_first_pass 0 and a median step near the eager one; transformer --compile done,
with compile_count 1-2 and compile_s the bulk of its wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RUNS = (  # (label, workload, extra flags)
    ("deepspeech2 eager", "deepspeech2", ["--precision", "fp32", "--batch-size", "8"]),
    ("deepspeech2 compile", "deepspeech2", ["--precision", "fp32", "--batch-size", "8", "--compile"]),
    ("seq2seq compile", "seq2seq", ["--compile"]),
    ("transformer compile", "transformer", ["--compile"]),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny flavors, short budgets (a CPU smoke test)")
    parser.add_argument("--only", default="", help="run only the runs whose label contains this")
    parser.add_argument("--limit", type=float, default=300, help="seconds before a compiled run is killed (eager: 120)")
    args = parser.parse_args()
    home, logs = args.out / "home", args.out / "logs"
    home.mkdir(parents=True, exist_ok=True)
    logs.mkdir(exist_ok=True)
    flavor, budget = ("tiny", "2") if args.quick else ("paper", "15")
    rows = []
    for label, workload, flags in RUNS:
        if args.only not in label:
            continue
        compiled = "--compile" in flags
        limit = args.limit if compiled else 120
        flags = [f for f in flags if not (args.quick and f in ("--batch-size", "8"))]
        before = set((home / "runs").glob("*.json")) if (home / "runs").exists() else set()
        cmd = [sys.executable, "-m", "tbd.cli", "run", workload, "--flavor", flavor, "--device", args.device,
               "--max-time", budget, "--home", str(home), *flags]
        env = {**os.environ, "TORCH_LOGS": "recompiles,graph_breaks"} if compiled else None
        log = logs / f"{label.replace(' ', '_')}.log"
        started = time.perf_counter()
        with log.open("w") as out:  # the child's output, kept when it is killed too
            try:
                subprocess.run(cmd, timeout=limit, stdout=out, stderr=subprocess.STDOUT, env=env)
                status = "done"
            except subprocess.TimeoutExpired:
                status = f"killed after {limit:g} s"
        wall = time.perf_counter() - started
        new = sorted(set((home / "runs").glob("*.json")) - before) if (home / "runs").exists() else []
        row = {"run": label, "status": status, "wall_s": round(wall, 1)}
        if compiled:
            row["recompile_events"] = log.read_text(errors="replace").count("Recompiling function")
        if new:
            record = json.loads(new[-1].read_text())
            metrics, method = record.get("metrics") or {}, record.get("method") or {}
            unit = next((k for k in metrics if k.endswith("_per_s") and not k.startswith("samples")), None)
            row.update({"throughput": metrics.get(unit), "unit": unit, "step_ms_p50": metrics.get("step_time_ms_p50"),
                        "warmup_steps": metrics.get("warmup_steps"), "total_steps": metrics.get("total_steps"),
                        "compile_count": metrics.get("compile_count"), "compile_s": metrics.get("compile_s"),
                        "recompiles_after_first_pass": metrics.get("recompiles_after_first_pass"),
                        "recompilation_defect": method.get("recompilation_defect"), "record": new[-1].name})
        rows.append(row)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "record"), flush=True)
    (args.out / "compile_recompiles.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
