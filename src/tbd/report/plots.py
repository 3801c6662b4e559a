"""The report's figures from run records: `tbd report SWEEP` exercises it.

Each function takes records and returns a matplotlib Figure (or None when the records hold
nothing to plot); `save` writes it as PNG and SVG and returns the PNG bytes for embedding.
matplotlib is imported lazily with the Agg backend: no display, no network.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from tbd.results import envs
from tbd.results.record import has_result, headline

# Memory categories in stacking order (bottom first); names as MEASUREMENT.md defines them.
CATEGORY_ORDER = ("host peak RSS", "allocated (tensors)", "weights", "parameters", "gradients", "optimizer_state", "feature_maps", "activations", "workspace",
                  "temporaries", "input", "input_batch", "allocator_cache", "framework_overhead", "other", "unattributed")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9, "svg.hashsalt": "tbd"})
    return plt


def series_label(r: dict[str, Any]) -> str:
    c = r["config"]
    extra = (" +compile" if c.get("compile") else "") + (" NHWC" if c.get("channels_last") else "")
    return (f"{c['framework']} {c['precision']} {c['device']}{extra}" + ("" if c.get("flavor") in (None, "tiny", "paper") else f" {c['flavor']}")
            + envs.tag(r))


def run_label(r: dict[str, Any]) -> str:
    c = r["config"]
    return f"{c['workload']}/{c['framework']} bs{c['batch_size']} {c['precision']}{envs.tag(r)}"


def measured(r: dict[str, Any]) -> bool:
    """A run with a throughput (a `tbd memory` record is ok but measures no throughput)."""
    return has_result(r) and headline(r)["throughput"] is not None


def fastest(records: list[dict[str, Any]], key) -> dict[str, dict[str, Any] | None]:
    """Per configuration (`key(record)`), its fastest measured run; None where every run it has
    is too short for a CI (status insufficient): their medians cannot be ranked."""
    best: dict[str, dict[str, Any] | None] = {}
    for r in records:
        if not measured(r):
            continue
        k = key(r)
        best.setdefault(k, None)
        if r["status"] != "insufficient" and (best[k] is None or headline(r)["throughput"] > headline(best[k])["throughput"]):
            best[k] = r
    return best


def throughput_vs_batch(records: list[dict[str, Any]]):
    """One panel per workload: median throughput (with its 95% CI) against batch size, a line
    per framework/precision/device; an x where a batch size ran out of memory. Points whose
    measurement did not converge are drawn hollow (and without error bars when they have no CI)."""
    by_workload: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_workload[r["config"]["workload"]].append(r)
    if not any(measured(r) for r in records):
        return None
    plt = _plt()
    names = [w for w in by_workload if any(measured(r) for r in by_workload[w])]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, w in zip(axes.flat, names):
        lines: dict[str, list[dict]] = defaultdict(list)
        for r in by_workload[w]:
            lines[series_label(r)].append(r)
        unit = next((headline(r)["unit"] for r in by_workload[w] if measured(r)), "samples")
        if len({r["config"]["batch_size"] for r in by_workload[w] if measured(r)}) == 1:
            _throughput_bars(ax, w, lines, unit)  # one batch size: bars, not a panel of single dots
            continue
        for label, rs in sorted(lines.items()):
            ok = sorted((r for r in rs if measured(r)), key=lambda r: r["config"]["batch_size"])
            if ok:
                x = [r["config"]["batch_size"] for r in ok]
                y = [headline(r)["throughput"] for r in ok]
                m = [r.get("metrics") or {} for r in ok]
                has_ci = [r["status"] != "insufficient" for r in ok]
                lo = [max(0.0, yi - (mi.get(f"{unit}_per_s_ci95_low") or yi)) if c else 0.0 for yi, mi, c in zip(y, m, has_ci)]
                hi = [max(0.0, (mi.get(f"{unit}_per_s_ci95_high") or yi) - yi) if c else 0.0 for yi, mi, c in zip(y, m, has_ci)]
                line = ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=label)
                color = line[0].get_color()
                loose = [(xi, yi) for xi, yi, r in zip(x, y, ok) if r["status"] != "ok"]
                if loose:  # not converged: hollow, so nobody reads it as a settled number
                    ax.scatter(*zip(*loose), s=70, facecolors="white", edgecolors=color, linewidths=1.5, zorder=3,
                               label=f"{label}: not converged")
            else:
                color = "gray"
            ooms = [r["config"]["batch_size"] for r in rs if (r.get("error") or {}).get("kind") == "oom"]
            if ooms and ok:
                ax.scatter(ooms, [max(y)] * len(ooms), marker="x", s=60, color=color, label=f"{label}: OOM")
        ax.set_xscale("log", base=2)
        sizes = sorted({r["config"]["batch_size"] for r in by_workload[w]})
        ax.set_xticks(sizes, [str(b) for b in sizes])  # the batch sizes run, not powers of two
        ax.minorticks_off()
        ax.set_title(w)
        ax.set_xlabel("batch size")
        ax.set_ylabel(f"{unit}/s (median, 95% CI)")
        ax.set_ylim(bottom=0)  # from zero: the eye reads heights as ratios
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def _ci_error(r: dict[str, Any], unit: str) -> tuple[float, float]:
    if r["status"] == "insufficient":
        return 0.0, 0.0
    m, y = r.get("metrics") or {}, headline(r)["throughput"]
    return max(0.0, y - (m.get(f"{unit}_per_s_ci95_low") or y)), max(0.0, (m.get(f"{unit}_per_s_ci95_high") or y) - y)


def _throughput_bars(ax, workload: str, lines: dict[str, list[dict]], unit: str) -> None:
    """One bar per configuration (its newest measured run) with its 95% CI; hatched when not converged."""
    rows = []
    for label, rs in sorted(lines.items()):
        measured = [r for r in rs if has_result(r)]
        if measured:
            rows.append((label, max(measured, key=lambda r: r["created_at"])))
    for i, (label, r) in enumerate(rows):
        lo, hi = _ci_error(r, unit)
        ax.bar(i, headline(r)["throughput"], yerr=[[lo], [hi]], capsize=4, color=f"C{i}",
               hatch=None if r["status"] == "ok" else "//", edgecolor="white" if r["status"] == "ok" else "black")
    ax.set_xticks(range(len(rows)), [label for label, _ in rows], rotation=15, ha="right", fontsize=7)
    batch = rows[0][1]["config"]["batch_size"] if rows else "?"
    ax.set_title(f"{workload} (batch {batch})")
    ax.set_ylabel(f"{unit}/s (median, 95% CI)")
    ax.set_ylim(bottom=0)
    if any(r["status"] != "ok" for _, r in rows):
        ax.text(0.99, 0.98, "hatched: not converged", transform=ax.transAxes, ha="right", va="top", fontsize=7)


def find_number(data: Any, must: tuple[str, ...], avoid: tuple[str, ...] = ()) -> float | None:
    """First number in a nested dict whose key path contains every word of `must` and none of
    `avoid` (tolerant reading of analysis records whose exact shape may grow)."""
    stack = [("", data)]
    while stack:
        path, value = stack.pop(0)
        if isinstance(value, dict):
            stack += [(f"{path}.{k}", v) for k, v in value.items()]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            p = path.lower()
            if all(w in p for w in must) and not any(w in p for w in avoid) and math.isfinite(value):
                return float(value)
    return None


def config_key(r: dict[str, Any]) -> str:
    """What a summary row stands for: workload/framework, precision, device (and interpreter)."""
    c = r["config"]
    return f"{c['workload']}/{c['framework']} {c['precision']} {c['device']}{envs.tag(r)}"


def utilization_rows(records: list[dict[str, Any]]) -> list[tuple[str, dict[str, float | None]]]:
    """Per workload x framework x precision x device: the utilizations of its fastest run."""
    newest: dict[str, dict] = {}
    for r in sorted((r for r in records if has_result(r)), key=lambda r: r["created_at"]):
        newest[config_key(r)] = r
    # a configuration with only runs too short to rank: its newest run
    best = {k: r or newest[k] for k, r in fastest([r for r in records if has_result(r)], config_key).items()}
    rows = []
    for key, r in best.items():
        m, a = r.get("metrics") or {}, r.get("analysis") or {}
        rows.append((f"{key} bs{r['config']['batch_size']}", {
            "GPU util, trace %": find_number(a, ("gpu", "util"), ("nvml",)),
            "GPU util, NVML %": m.get("gpu_util_nvml_pct"),
            "FLOP util (MFU) %": m.get("mfu_pct"),
            "CPU util %": m.get("cpu_util_pct"),
        }))
    return rows


def utilization(records: list[dict[str, Any]]):
    rows = utilization_rows(records)
    if not rows:
        return None
    plt = _plt()
    metrics = list(rows[0][1])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows) + 3), 3.6))
    width = 0.8 / len(metrics)
    x = np.arange(len(rows))
    for i, name in enumerate(metrics):
        vals = [row[name] for _, row in rows]
        heights = [v if v is not None else 0.0 for v in vals]
        bars = ax.bar(x + (i - (len(metrics) - 1) / 2) * width, heights, width, label=name)
        for bar, v in zip(bars, vals):
            if v is None:  # say "not measured" rather than draw a misleading zero
                ax.text(bar.get_x() + bar.get_width() / 2, 1, "n/a", ha="center", va="bottom", fontsize=6, rotation=90, color="gray")
    ax.set_xticks(x, [label for label, _ in rows], rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("percent")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7, ncol=len(metrics))
    ax.set_title("utilization (fastest run of each configuration)")
    fig.tight_layout()
    return fig


def memory_categories(record: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """(source, category -> bytes at the peak): the memory profiler's breakdown where the run has
    one (record["memory_profile"]), else layers of the allocator and process readings."""
    prof = record.get("memory_profile")
    if isinstance(prof, dict):
        for key in ("categories", "at_peak", "peak_breakdown", "breakdown", "by_category", "peak"):
            cats = prof.get(key)
            if isinstance(cats, dict):
                out = {k: float(v.get("bytes", 0) if isinstance(v, dict) else v) for k, v in cats.items()
                       if isinstance(v, (int, float)) or (isinstance(v, dict) and isinstance(v.get("bytes"), (int, float)))}
                if out:
                    return "memory profiler", out
    mem = record.get("memory") or {}
    alloc, reserved, process = mem.get("peak_allocated_bytes"), mem.get("peak_reserved_bytes"), mem.get("nvml_process_bytes")
    if alloc:
        out = {"allocated (tensors)": float(alloc)}
        if reserved and reserved > alloc:
            out["allocator_cache"] = float(reserved - alloc)
        if process and reserved and process > reserved:
            out["framework_overhead"] = float(process - reserved)
        return "device allocator", out
    if mem.get("host_peak_rss_bytes"):
        return "host process", {"host peak RSS": float(mem["host_peak_rss_bytes"])}
    return "none", {}


def memory_breakdown(records: list[dict[str, Any]], limit: int = 24):
    rows = [(run_label(r), *memory_categories(r)) for r in records if has_result(r)][:limit]
    rows = [row for row in rows if row[2]]
    if not rows:
        return None
    plt = _plt()
    cats = sorted({c for _, _, cs in rows for c in cs}, key=lambda c: (CATEGORY_ORDER.index(c) if c in CATEGORY_ORDER else 99, c))
    from tbd.results.memory_profile import COLORS

    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(rows) + 4.5), 3.8))
    bottom = np.zeros(len(rows))
    for c in cats:
        vals = np.array([cs.get(c, 0.0) for _, _, cs in rows]) / 2**20
        # A reading that is not split by category (host RSS, allocated tensors) is hatched grey, not a category colour.
        unsplit = c in ("host peak RSS", "allocated (tensors)")
        ax.bar(range(len(rows)), vals, bottom=bottom, label=c + (" (not split by category)" if unsplit else ""),
               color="0.75" if c == "host peak RSS" else "0.55" if unsplit else COLORS.get(c), hatch="//" if unsplit else None,
               edgecolor="white", linewidth=0.3)
        bottom += vals
    ax.set_xticks(range(len(rows)), [label for label, _, _ in rows], rotation=25, ha="right", fontsize=7)
    ax.set_ylabel("MiB at the peak")
    sources = sorted({s for _, s, _ in rows})
    ax.set_title(f"memory breakdown ({', '.join(sources)})")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # outside: it must not cover a bar
    fig.tight_layout()
    return fig


def step_times(records: list[dict[str, Any]], limit: int = 24):
    """Box plots of the steady-state step times of each run (raw samples, warm-up excluded)."""
    data, labels = [], []
    for r in records:
        if not has_result(r):
            continue
        t = (r.get("samples") or {}).get("step_s") or []
        start = int((r.get("metrics") or {}).get("warmup_steps") or 0)
        steady = t[start:] if start < len(t) else t
        if steady:
            data.append(np.asarray(steady) * 1e3)
            labels.append(run_label(r))
    if not data:
        return None
    data, labels = data[:limit], labels[:limit]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(data) + 3), 3.8))
    ax.boxplot(data, showfliers=True)
    for i, d in enumerate(data, 1):  # every raw sample, jittered, so short runs are honest
        ax.scatter(np.full(len(d), i) + np.linspace(-0.15, 0.15, len(d)), d, s=6, alpha=0.5, color="tab:blue")
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=25, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("step time, ms (steady steps)")
    ax.set_title("step-time distributions")
    fig.tight_layout()
    return fig


def step_series(records: list[dict[str, Any]], limit: int = 12):
    """Every step of each run in order (log scale): step 0 (compilation) and the other warm-up
    steps that were excluded in grey, timed steps in colour, a change of regime as a red line."""
    runs = [r for r in records if has_result(r) and (r.get("samples") or {}).get("step_s")][:limit]
    if not runs:
        return None
    plt = _plt()
    cols = min(3, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 2.6 * rows), squeeze=False)
    for ax, r in zip(axes.flat, runs):
        t = np.asarray(r["samples"]["step_s"], dtype=float) * 1e3
        start = int((r.get("metrics") or {}).get("warmup_steps") or 0)
        x = np.arange(len(t))
        ax.plot(x[:1], t[:1], "s", color="black", markersize=5, label="step 0 (compile)")
        if start > 1:
            ax.plot(x[1:start], t[1:start], "o", color="0.6", markersize=3, label="warm-up (excluded)")
        ax.plot(x[start:], t[start:], ".-", color="tab:blue" if r["status"] == "ok" else "tab:orange", markersize=3, lw=0.6,
                label=f"timed ({r['status']})")
        for cp in ((r.get("method") or {}).get("noise") or {}).get("change_points", []):
            ax.axvline(cp["step"], color="red", ls="--", lw=1, label="change of regime")
        ax.set_yscale("log")
        ax.set_title(run_label(r), fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel("ms", fontsize=7)
        ax.legend(fontsize=6, loc="upper right")
    for ax in list(axes.flat)[len(runs):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def comparison(pairs: list[Any]):
    """B/A throughput ratio per paired point with its 95% bootstrap CI, from zero, a line at 1;
    hatched where a side did not converge."""
    pairs = [p for p in pairs if not math.isnan(p.ratio)]
    if not pairs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(pairs) + 1.4))
    y = np.arange(len(pairs))
    lo = [p.ratio - p.ci_low if not math.isnan(p.ci_low) else 0.0 for p in pairs]
    hi = [p.ci_high - p.ratio if not math.isnan(p.ci_high) else 0.0 for p in pairs]
    colors = ["tab:gray" if not p.converged else "tab:green" if p.ci_low > 1 else "tab:red" if p.ci_high < 1 else "tab:gray" for p in pairs]
    ax.barh(y, [p.ratio for p in pairs], xerr=[lo, hi], capsize=3, color=colors,
            hatch=["" if p.converged else "//" for p in pairs], edgecolor="black", linewidth=0.4)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(y, [p.label for p in pairs], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, max(1.2, max(p.ratio + h for p, h in zip(pairs, hi)) * 1.05))
    ax.set_xlabel("throughput B / A (95% bootstrap CI); green: B faster, red: B slower, grey: within noise or not converged (hatched)")
    ax.xaxis.label.set_size(7)
    fig.tight_layout()
    return fig


def save(fig, folder: Path, name: str) -> bytes:
    """Write `name`.png and `name`.svg into folder; return the PNG bytes."""
    plt = _plt()
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    png = buf.getvalue()
    (folder / f"{name}.png").write_bytes(png)
    fig.savefig(folder / f"{name}.svg", format="svg")
    plt.close(fig)
    return png
