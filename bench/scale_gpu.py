"""Scaling over the GPUs of one machine: throughput and efficiency against linear, via tbd's
torchrun launcher (issue 7).

    PYTHONPATH=src python3 bench/scale_gpu.py --out results/   # on a GPU machine, under 8 minutes
    PYTHONPATH=src python3 bench/scale_gpu.py --smoke --out /tmp/scale   # CPU check (tiny sizes, gloo)

Jobs, in order of importance (a job not started within --budget-s is reported as skipped):
- resnet50 `paper`, bf16, channels_last, 64 images per GPU, on 1, 2, 4, ... N GPUs (DDP)
- gpt `paper` (GPT-2 124M), bf16, 8 x 1024 tokens per GPU, on 1 .. N GPUs (DDP)
- gpt `1.3b`, bf16, FSDP2 on all N GPUs, 4 x 2048 tokens per GPU (one run: memory per rank,
  throughput, MFU; its 1-GPU DDP equivalent would need the whole optimizer state on one GPU)
- transformer `paper`, bf16, on 1 .. N GPUs (DDP)
- gpt variants on 1 .. N GPUs: DDP buckets of 100 MiB (default 25), and torch.compile
N = torch.cuda.device_count(). Weak scaling: the batch per GPU is fixed, so the global batch is
n x that. Eager mode (no torch.compile) except gpt-compiled, so that each run's start stays short.
Every run goes through tbd.harness.launcher.launch (torchrun for n > 1, a child process for
n = 1) with the normal measurement method (warm-up detected, steady steps timed, the slowest
rank's step time, units summed over ranks). Efficiency E_n = T_n / (n x T_1).
Output: --out/scale_gpu.json (every record, and rows per workload), --out/scale_<workload>.png,
and a summary table printed last.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tbd.report.scaling import plot_scaling, scaling_rows  # noqa: E402  (no rich needed)
from tbd.config import RunConfig  # noqa: E402
from tbd.results.record import MEASURED  # noqa: E402
from tbd.harness.launcher import launch  # noqa: E402


def counts_up_to(n: int) -> list[int]:
    out = [c for c in (1, 2, 4, 8, 16) if c <= n]
    return out if n in out else out + [n]


def jobs(smoke: bool, n_gpus: int) -> list[tuple[str, dict, int, list[int]]]:
    """(label, RunConfig fields, batch per process, process counts)."""
    counts = counts_up_to(n_gpus)
    if smoke:
        tiny = dict(device="cpu", flavor="tiny", max_steps=4, max_time_s=10.0)
        return [("resnet50", dict(workload="resnet50", **tiny), 2, counts),
                ("gpt", dict(workload="gpt", **tiny), 2, counts),
                ("gpt-fsdp2", dict(workload="gpt", parallel="fsdp2", **tiny), 2, [n_gpus]),
                ("transformer", dict(workload="transformer", **tiny), 80, counts)]
    gpu = dict(device="cuda", precision="bf16", max_steps=120, max_time_s=8.0)
    return [("resnet50", dict(workload="resnet50", flavor="paper", channels_last=True, **gpu), 64, counts),
            ("gpt", dict(workload="gpt", flavor="paper", **gpu), 8, counts),
            # gpt variants against the plain DDP job above: larger gradient buckets, and compiled
            ("gpt-bucket100", dict(workload="gpt", flavor="paper", ddp_bucket_mb=100.0, **gpu), 8, counts),
            ("gpt-compiled", dict(workload="gpt", flavor="paper", compile=True, **gpu), 8, counts),
            ("gpt-1.3b-fsdp2", dict(workload="gpt", flavor="1.3b", parallel="fsdp2", **{**gpu, "max_steps": 40}), 4, [n_gpus]),
            ("transformer", dict(workload="transformer", flavor="paper", **gpu), None, counts),
            # not in the default set (--jobs): resnet50 off the launch-bound regime, compiled gpt with fewer graph splits
            ("resnet50-b256", dict(workload="resnet50", flavor="paper", channels_last=True, **gpu), 256, counts),
            ("gpt-compiled-bucket100", dict(workload="gpt", flavor="paper", compile=True, ddp_bucket_mb=100.0, **gpu), 8, counts)]
OPTIONAL_JOBS = ("resnet50-b256", "gpt-compiled-bucket100")


def run_one(fields: dict, per_proc: int | None, n: int) -> dict:
    base = RunConfig(**fields).validated()  # fills the flavor's batch size
    batch = (per_proc or base.batch_size) * n
    config = dataclasses.replace(base, nproc_per_node=n, batch_size=batch, profile=n > 1).validated()  # profile: comm share
    started = time.perf_counter()
    record = launch(config)
    record.setdefault("bench", {})["wall_s"] = time.perf_counter() - started
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results", help="folder for scale_gpu.json and the figures")
    parser.add_argument("--smoke", action="store_true", help="CPU check: tiny flavors, 2 processes with gloo")
    parser.add_argument("--jobs", default="", help="comma list of job labels to run (default: all)")
    parser.add_argument("--budget-s", type=float, default=360.0, help="start no job after this many seconds (default: 360)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        n_gpus = 2
    else:
        import torch

        n_gpus = torch.cuda.device_count()
        if n_gpus == 0:
            sys.exit("no GPU visible; use --smoke for the CPU check")
    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    for label, fields, per_proc, counts in jobs(args.smoke, n_gpus):
        if (label not in args.jobs.split(",")) if args.jobs else label in OPTIONAL_JOBS:
            continue
        records = []
        for n in counts:
            if time.perf_counter() - t0 > args.budget_s:
                print(f"[skip] {label} n={n}: budget of {args.budget_s:.0f} s spent", flush=True)
                continue
            record = run_one(fields, per_proc, n)
            status = record["status"] if record["status"] in MEASURED else f"failed: {(record.get('error') or {}).get('message')}"
            print(f"[done] {label} n={n}: {status} ({record['bench']['wall_s']:.0f} s)", flush=True)
            records.append(record)
        rows = scaling_rows(records) if records else []
        where = f"{n_gpus} x {'CPU process' if args.smoke else 'GPU'}"
        figure = plot_scaling(rows, out / f"scale_{label}.png", f"{label}: weak scaling on {where}") if rows else None
        results[label] = {"rows": rows, "figure": str(figure) if figure else None, "records": records}
        # Written after every job, so a run cut short still leaves what it measured.
        (out / "scale_gpu.json").write_text(json.dumps({"n_gpus": n_gpus, "smoke": args.smoke, "results": results}, indent=1, default=str))
    print(f"\nscaling on {n_gpus} {'CPU processes (smoke)' if args.smoke else 'GPUs'}; full results in {out / 'scale_gpu.json'}")
    print(f"{'job':<16}{'n':>3} {'global batch':>12} {'throughput/s':>18} {'speedup':>8} {'effic.':>7} {'step ms':>9} {'MFU %':>6} "
          f"{'peak mem/rank':>14} {'comm %':>7} {'overlap':>8}  status")
    for label, res in results.items():
        by_id = {r["id"]: r for r in res["records"]}
        for row in res["rows"]:
            rec = by_id[row["id"]]
            mfu = (rec.get("metrics") or {}).get("mfu_pct")
            peak = row["peak_memory_per_rank_bytes"]
            cells = [
                f"{row['throughput']:,.0f} {row['unit']}" if row["throughput"] else "-",
                f"{row['speedup']:.2f}x" if row["speedup"] else "-",
                f"{row['efficiency_pct']:.0f}%" if row["efficiency_pct"] else "-",
                f"{row['step_time_ms_p50']:.1f}" if row["step_time_ms_p50"] else "-",
                f"{mfu:.1f}" if mfu else "-",
                f"{peak / 2**30:.1f} GiB" if peak else "-",
                f"{row['comm_share_pct']:.0f}%" if row["comm_share_pct"] is not None else "-",
                f"{row['comm_overlap_pct']:.0f}%" if row["comm_overlap_pct"] is not None else "-",
                row["status"] if row["status"] in MEASURED else (row["error"] or "")[:60],
            ]
            print(f"{label:<16}{row['nproc']:>3} {row['global_batch']:>12} {cells[0]:>18} {cells[1]:>8} {cells[2]:>7} {cells[3]:>9} "
                  f"{cells[4]:>6} {cells[5]:>14} {cells[6]:>7} {cells[7]:>8}  {cells[8]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
