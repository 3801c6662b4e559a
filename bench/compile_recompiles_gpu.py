"""torch.compile on the variable-length workloads: compile counts and steady step times.

    PYTHONPATH=src python3 bench/compile_recompiles_gpu.py --out OUT             # one H200: under 4 minutes
    PYTHONPATH=src python3 bench/compile_recompiles_gpu.py --out OUT --device cpu --quick   # smoke test

Runs deepspeech2 paper fp32 batch 8 eager and with --compile, and seq2seq and transformer paper
with --compile, each as one `tbd run` (a child process, as the CLI launches it) into OUT/home,
then prints one line per run and writes OUT/compile_recompiles.json: throughput, median step,
compile_count, compile_s, recompiles_after_first_pass and any recompilation_defect. A run past
its time limit is killed and reported as such. What to look for: deepspeech2 --compile with
recompiles_after_first_pass 0 and a median step near the eager one.
"""

from __future__ import annotations

import argparse
import json
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
    args = parser.parse_args()
    home = args.out / "home"
    home.mkdir(parents=True, exist_ok=True)
    flavor, budget, limit = ("tiny", "2", 120) if args.quick else ("paper", "15", 75)
    rows = []
    for label, workload, flags in RUNS:
        flags = [f for f in flags if not (args.quick and f in ("--batch-size", "8"))]
        before = set((home / "runs").glob("*.json")) if (home / "runs").exists() else set()
        cmd = [sys.executable, "-m", "tbd.cli", "run", workload, "--flavor", flavor, "--device", args.device,
               "--max-time", budget, "--home", str(home), *flags]
        started = time.perf_counter()
        try:
            subprocess.run(cmd, timeout=limit, capture_output=True, text=True)
            status = "done"
        except subprocess.TimeoutExpired:
            status = f"killed after {limit} s"
        wall = time.perf_counter() - started
        new = sorted(set((home / "runs").glob("*.json")) - before) if (home / "runs").exists() else []
        row = {"run": label, "status": status, "wall_s": round(wall, 1)}
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
