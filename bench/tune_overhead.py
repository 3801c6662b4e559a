"""Where a `tbd tune` trial's wall time goes: one trial per workload through the tuner's own backend
(`tbd.analysis.tune.StoreBackend`: a child process through the harness, traced, then the trace
digested for recommendations), split into phases from the child's `method.phases` and the
parent's clock.

    PYTHONPATH=src python3 bench/tune_overhead.py --out OUT --device cpu --flavor tiny --workloads gpt,resnet50 --max-time 1   # ~1 min on 2 cores
    PYTHONPATH=src python3 bench/tune_overhead.py --out OUT --device cuda --flavor paper --max-time 3                          # ~6 min on one H200

Phases: start-up (process spawn, interpreter and tbd imports, up to `execute`), environment
(versions, host facts), build (framework import, model and data), step 0 (compiles, allocates),
warm-up (steps MSER excluded), window (timed steady steps), measure overhead (the rest of the
measurement loop: syncs, probes), trace (the traced steps, profiler stop and export), teardown (closing
the session, the record back to the parent), store (save, trace moved), digest (`tbd analyze`
of the trace: what a kept trial costs on top). Writes OUT/tune_overhead.json and prints one line
per workload.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parent.parent / "src")
PHASES = ("startup", "environment", "build", "step0", "warmup", "window", "measure_overhead", "trace", "teardown", "store", "digest")


def breakdown(record: dict, began: float, returned: float, stored: float, digested: float) -> dict:
    """Seconds per phase of one trial (None where the record does not say)."""
    phases = (record.get("method") or {}).get("phases") or {}
    metrics = record.get("metrics") or {}
    out = dict.fromkeys(PHASES)
    out.update(store=stored - returned, digest=digested - stored, total=digested - began)
    if "started_at" not in phases:
        return out
    out["startup"] = phases["started_at"] - began
    out["environment"], out["build"] = phases.get("environment_s"), phases.get("build_s")
    out["step0"], out["warmup"], out["window"] = metrics.get("compile_time_s"), metrics.get("warmup_time_s"), metrics.get("steady_window_s")
    stepped = sum(v or 0.0 for v in (out["step0"], out["warmup"], out["window"]))
    out["measure_overhead"] = (phases.get("measure_s") or 0.0) - stepped
    out["trace"] = phases.get("trace_s")
    child_end = phases["started_at"] + sum(v for k, v in phases.items() if k.endswith("_s"))
    out["teardown"] = returned - child_end
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-out/tune_overhead")
    ap.add_argument("--workloads", default="resnet50,gpt,transformer,wgan")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--flavor", default="paper")
    ap.add_argument("--max-time", type=float, default=3.0)
    args = ap.parse_args()
    sys.path.insert(0, SRC)
    import dataclasses

    from tbd.analysis import tune
    from tbd.config import RunConfig
    from tbd.results.store import Store

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out / "store")
    store.prepare()
    backend = tune.StoreBackend(store, profile=True)
    rows = []
    for workload in [w for w in args.workloads.split(",") if w]:
        config = dataclasses.replace(RunConfig(workload=workload, flavor=args.flavor, device=args.device).validated(),
                                     max_time_s=args.max_time)
        began = time.time()
        record = backend.measure(config, None)
        stored = time.time()
        returned = stored - backend.last_store_s
        backend.recommend(record)
        digested = time.time()
        row = {"workload": workload, "status": record["status"], "run_id": record["id"],
               "seconds": breakdown(record, began, returned, stored, digested)}
        rows.append(row)
        s = row["seconds"]
        print(f"{workload:12s} {record['status']:12s} total {s['total']:6.1f} s: "
              + ", ".join(f"{k} {v:.1f}" for k, v in s.items() if k != "total" and v is not None), flush=True)
        (out / "tune_overhead.json").write_text(json.dumps({"device": args.device, "flavor": args.flavor, "max_time_s": args.max_time,
                                                            "rows": rows}, indent=1))
    print(f"wrote {out}/tune_overhead.json")


if __name__ == "__main__":
    main()
