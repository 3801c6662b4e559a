"""Scaling over process counts: the rows `tbd scale` prints and stores, and its figure.

`tbd scale resnet50 --nproc 1,2 --device cpu` and `bench/scale_gpu.py` use them. Speedup and
efficiency are against the one-process run of the same set (docs/distributed.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tbd.results.record import has_result


def scaling_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per record (sorted by processes): throughput, speedup and efficiency vs n = 1."""
    rows = []
    for r in records:
        cfg, met = r["config"], r.get("metrics") or {}
        unit = (r.get("workload") or {}).get("unit", "samples")
        n = cfg.get("nproc_per_node", 1) * cfg.get("nnodes", 1)
        memory = r.get("memory") or {}
        rows.append({"id": r["id"], "nproc": n, "global_batch": cfg["batch_size"], "unit": unit, "status": r["status"],
                     "throughput": met.get(f"{unit}_per_s") if has_result(r) else None,
                     "step_time_ms_p50": met.get("step_time_ms_p50"),
                     # communication (measured from a short per-rank trace; None for one process or unprofiled runs)
                     "comm_ms_per_step": met.get("comm_ms_per_step"), "comm_share_pct": met.get("comm_share_pct"),
                     "comm_wait_ms_per_step": met.get("comm_wait_ms_per_step"),
                     "comm_overlap_pct": met.get("comm_overlap_pct"), "exposed_comm_ms_per_step": met.get("exposed_comm_ms_per_step"),
                     "peak_memory_per_rank_bytes": memory.get("peak_allocated_bytes") or memory.get("host_peak_rss_bytes"),
                     "stragglers": (r.get("distributed") or {}).get("stragglers", []),
                     "error": (r.get("error") or {}).get("message")})
    rows.sort(key=lambda row: row["nproc"])
    base = next((row for row in rows if row["nproc"] == 1 and row["throughput"]), None)
    for row in rows:
        ok = base is not None and row["throughput"] is not None
        row["speedup"] = row["throughput"] / base["throughput"] if ok else None
        row["efficiency_pct"] = row["speedup"] / row["nproc"] * 100.0 if ok else None
    return rows



def plot_scaling(rows: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Throughput vs processes (with the linear ideal from n = 1) and efficiency; None without
    matplotlib or without any successful run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ok = [r for r in rows if r["throughput"] is not None]
    if not ok:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    ns = [r["nproc"] for r in ok]
    left.plot(ns, [r["throughput"] for r in ok], "o-", label="measured")
    base = next((r for r in ok if r["nproc"] == 1), None)
    if base:
        left.plot(ns, [base["throughput"] * n for n in ns], "--", color="gray", label="linear (n x T1)")
    left.set_xlabel("processes")
    left.set_ylabel(f"{ok[0]['unit']}/s (global)")
    left.set_xticks(ns)
    left.legend()
    left.grid(alpha=0.3)
    eff = [r for r in ok if r["efficiency_pct"] is not None]
    right.bar([str(r["nproc"]) for r in eff], [r["efficiency_pct"] for r in eff], color="tab:blue")
    right.axhline(100, color="gray", linestyle="--")
    right.set_xlabel("processes")
    right.set_ylabel("efficiency vs linear (%)")
    right.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
