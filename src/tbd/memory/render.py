"""Tables, JSON and plots of memory profiles, written by `tbd memory resnet50`.

Tables use rich where it is installed and plain text otherwise (the GPU bench machine may lack
rich); plots use matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any

from tbd.memory.max_batch import ERROR, FITS, OOM
from tbd.results.memory_profile import ALLOCATED_KEYS, COLORS, KEYS, LABELS, MEANINGS, fmt_bytes


def breakdown_rows(prof: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    peak = prof["peak"]
    cats, total = peak["categories"], peak["allocated_bytes"] or 1
    rows = []
    for k in KEYS:
        share = f"{100.0 * cats[k] / total:.1f}%" if k in ALLOCATED_KEYS else f"+{100.0 * cats[k] / total:.1f}%"
        rows.append((LABELS[k], fmt_bytes(cats[k]), share, MEANINGS[k]))
    rows.append(("allocated at the peak", fmt_bytes(peak["allocated_bytes"]), "100.0%", "sum of the categories above the line"))
    rows.append(("device total", fmt_bytes(peak["device_bytes"]), "", "allocated + allocator cache + framework/context"))
    return rows


def title(prof: dict[str, Any]) -> str:
    where = f" at the peak ({prof['peak']['phase']}, {prof['peak']['op']})" if prof["peak"].get("phase") else ""
    return f"memory of {prof.get('workload')} ({prof['framework']}, {prof['device']}, batch {prof['batch_size']}, {prof['precision']}){where}"


def print_profile(prof: dict[str, Any], console=None, layers: int = 15) -> None:
    try:
        from rich.table import Table
    except ImportError:
        print(plain_text(prof, layers))
        return
    from tbd.report.tables import make_console

    console = console or make_console()
    if prof["status"] != "ok":
        console.print(f"[red]{prof['error']}[/]")
    t = Table(title=title(prof), header_style="bold")
    for col, justify in (("category", "left"), ("bytes", "right"), ("share", "right"), ("what it is", "left")):
        t.add_column(col, justify=justify)
    for i, row in enumerate(breakdown_rows(prof)):
        t.add_row(*row, end_section=i in (len(ALLOCATED_KEYS) - 1, len(KEYS) - 1))
    console.print(t)
    if prof["layers"]:
        lt = Table(title=f"feature maps by layer (largest first; {len(prof['layers'])} layers)", header_style="bold")
        for col, justify in (("layer", "left"), ("type", "left"), ("bytes", "right"), ("share of feature maps", "right")):
            lt.add_column(col, justify=justify)
        fm = sum(r["bytes"] for r in prof["layers"]) or 1
        for r in prof["layers"][:layers]:
            lt.add_row(r["layer"], r["type"], fmt_bytes(r["bytes"]), f"{100.0 * r['bytes'] / fm:.1f}%")
        if len(prof["layers"]) > layers:
            lt.add_row(f"... {len(prof['layers']) - layers} more", "", fmt_bytes(sum(r["bytes"] for r in prof["layers"][layers:])), "")
        console.print(lt)
    for note in prof["method"].get("estimated", []):
        console.print(f"[dim]estimated: {note}[/]")


def plain_text(prof: dict[str, Any], layers: int = 15) -> str:
    lines = [title(prof)] + ([f"ERROR: {prof['error']}"] if prof.get("error") else [])
    lines += [f"  {name:<24} {size:>12} {share:>8}" for name, size, share, _ in breakdown_rows(prof)]
    lines += [f"  layer {r['layer']:<40} {fmt_bytes(r['bytes']):>12}" for r in prof["layers"][:layers]]
    return "\n".join(lines)


def save_json(prof: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(prof, indent=1, default=str))
    return path


def save_plot(profiles: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = plot(profiles)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(profiles: list[dict[str, Any]]):
    """The figure of `save_plot`. Left: stacked bars of the peak by category (one bar per profile, e.g. per batch size).
    Right: memory by category over the step of the first profile, each phase (forward, backward,
    optimizer) named, the peak marked in black. One legend lists every category drawn in either
    panel with its colour, and the peak marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    gib = 2.0**30
    fig, (bars, line) = plt.subplots(1, 2, figsize=(13, 5.4), gridspec_kw={"width_ratios": [1, 2.2]})
    several = len({p["framework"] for p in profiles}) > 1
    labels = [f"b={p['batch_size']}" + (f" {p['framework']}" if several else "") + ("" if p["status"] == "ok" else " (OOM)") for p in profiles]
    drawn: set[str] = set()
    bottom = [0.0] * len(profiles)
    for k in KEYS:
        values = [max(0, p["peak"]["categories"][k]) / gib for p in profiles]
        if any(values):
            bars.bar(range(len(profiles)), values, bottom=bottom, color=COLORS[k])
            bottom = [b + v for b, v in zip(bottom, values)]
            drawn.add(k)
    bars.set_xticks(range(len(profiles)), labels)  # positions, so equal labels stay separate bars
    bars.set_ylabel("GiB at the step's peak")
    bars.set_title("peak by category")

    first = profiles[0]
    tl = first["timeline"]
    xs = list(range(len(tl["phase"])))
    series = [(k, [max(0, v) / gib for v in tl["categories"][k]]) for k in ALLOCATED_KEYS if any(tl["categories"].get(k, []))]
    peak_handle = []
    if series:
        line.stackplot(xs, *[s for _, s in series], colors=[COLORS[k] for k, _ in series])
        drawn |= {k for k, _ in series}
        top = max(sum(v) for v in zip(*[s for _, s in series])) or 1.0
        line.set_ylim(0, top * 1.18)  # room above the curve for the phase names
        _name_phases(line, tl["phase"], top * 1.16)
        peak_x = tl["index"].index(first["peak"]["index"]) if first["peak"].get("index") in tl["index"] else None
        if peak_x is not None:
            peak_y = sum(s[peak_x] for _, s in series)
            line.axvline(peak_x, color="black", lw=1.2, ls="--")
            line.plot([peak_x], [peak_y], marker="v", color="black", markersize=9, zorder=5)
            peak_handle = [Line2D([], [], color="black", ls="--", marker="v", label=f"peak of the step ({peak_y:.3g} GiB)")]
    line.set_xlabel(first["timeline"].get("axis", "point of the step"))
    line.set_ylabel("GiB allocated")
    line.set_title(f"one training step, batch {first['batch_size']} ({first['framework']}, {first['device']})")
    handles = [Patch(color=COLORS[k], label=LABELS[k]) for k in KEYS if k in drawn] + peak_handle
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(f"tbd memory {first.get('workload')}")
    fig.tight_layout(rect=(0, 0.1 if len(handles) > 6 else 0.06, 1, 1))
    return fig


def _name_phases(ax, phases: list[str], y: float) -> None:
    """A dotted line where each phase begins and its name: over the phase when it is wide enough,
    else beside it with an arrow, staggered so that short phases at one end (the optimizer step,
    the end of the step) are all named and do not cover each other."""
    starts = [i for i, phase in enumerate(phases) if i == 0 or phase != phases[i - 1]]
    narrow = 0
    for n, i in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(phases)
        ax.axvline(i, color="black", lw=0.6, ls=":")
        if end - i > 0.12 * len(phases):
            ax.text((i + end) / 2, y, phases[i], fontsize=8, va="top", ha="center")
            continue
        left_half = (i + end) / 2 < len(phases) / 2
        ax.annotate(phases[i], ((i + end) / 2, y * 0.9), xytext=(18 if left_half else -18, -13 * narrow - 4), textcoords="offset points",
                    fontsize=8, va="top", ha="left" if left_half else "right",
                    arrowprops={"arrowstyle": "-", "color": "gray", "lw": 0.6},
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1})
        narrow += 1


# Where a convolution's scratch was this large a share of the peak, the scratch-free line overshot
# under PyTorch's default allocator (wgan fp32 on an H200, 34%: 2,478 predicted, out of memory with
# 5.6 GiB reserved but unallocated); at 16-18% (faster_rcnn fp32) it held, at -1.9%.
LARGE_SCRATCH_SHARE = 0.25


def scratch_note(measured: list[dict[str, Any]]) -> list[str]:
    """One line where the line left a convolution's scratch out of some fit batches' peaks
    (profiler.model_bytes says why), with how much of the peak that was; none otherwise."""
    left_out = [m for m in measured if m.get("status") == "ok" and m.get("allocated_bytes") and m["model_bytes"] < m["allocated_bytes"]]
    if not left_out:
        return []
    share = max(1 - m["model_bytes"] / m["allocated_bytes"] for m in left_out)
    lines = [f"fitted on the tensors held between ops at batches {', '.join(str(m['batch_size']) for m in left_out)}: the peak is inside a "
             f"convolution, whose scratch (up to {share:.0%} of the peak) cuDNN's autotuner shrinks when memory is short"]
    if share >= LARGE_SCRATCH_SHARE:
        lines.append("scratch this large leaves the allocator's cache in pieces as it is freed, and the line assumes none: under the default "
                     "allocator the boundary can lie below the prediction (confirm it, or use --expandable-segments)")
    return lines


def print_batch_model(result: dict[str, Any], console=None) -> None:
    lines = [
        f"batch-size model from batches {', '.join(str(b) for b, _ in result['points'])}: "
        f"{fmt_bytes(result['fixed_bytes'])} fixed + {fmt_bytes(result['per_sample_bytes'])} per sample "
        f"(fit within {result['max_residual_pct']:.1f}% of the measured peaks)",
        *([f"headroom for the largest tensor (one contiguous block the allocator must find): "
           f"{fmt_bytes(result['headroom_fixed_bytes'])} + {fmt_bytes(result['headroom_per_sample_bytes'])} per sample"]
          if result.get("headroom_fixed_bytes") or result.get("headroom_per_sample_bytes") else []),
        *scratch_note(result.get("measured") or []),
        f"memory budget: {fmt_bytes(result['budget_bytes'])} ({result['budget_note']})",
        f"predicted largest batch that fits: {result['max_batch']}",
    ]
    if console is not None:
        for line in lines:
            console.print(line)
    else:
        print("\n".join(lines))


# One line per probe of the confirming search, printed as each probe ends, so a `tbd memory`
# stopped from outside (bench/max_batch_gpu.py at its budget) leaves its bracket so far in its log.
# The wording is fixed: PROBE_LINE reads it back.
PROBE_WORDS = {FITS: "fits", OOM: "out of memory", ERROR: "failed"}
PROBE_LINE = re.compile(r"^probe: batch (\d+) (fits|out of memory|failed) \(([\d.]+) s\)", re.MULTILINE)


def probe_line(probe: dict[str, Any]) -> str:
    """`probe: batch 2724 fits (61.2 s)`; a failure adds its reason on the same line."""
    line = f"probe: batch {probe['batch_size']} {PROBE_WORDS[probe['outcome']]} ({probe['seconds']:.1f} s)"
    why = " ".join(probe.get("error", "").split())  # one line, whatever the message
    return f"{line}: {why}" if why else line


# A probe's start, printed as it begins: a search stopped mid-probe leaves which batch was running
# and since when (a probe that trains can take five minutes; one that runs out of memory, two).
PROBE_START = re.compile(r"^probing batch (\d+) \(started (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\) \.\.\.$", re.MULTILINE)


def probe_start_line(batch: int, started: datetime.datetime) -> str:
    """`probing batch 2478 (started 2026-12-01T02:05:13Z) ...`"""
    return f"probing batch {batch} (started {started.astimezone(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}) ..."


def read_probe_in_flight(text: str) -> dict[str, Any] | None:
    """The probe a log's search had started and not ended (batch_size, started as a UTC
    datetime), or None where every started probe has its `probe_line`."""
    starts = list(PROBE_START.finditer(text))
    if not starts:
        return None
    last = starts[-1]
    if any(int(m.group(1)) == int(last.group(1)) for m in PROBE_LINE.finditer(text, last.end())):
        return None
    started = datetime.datetime.strptime(last.group(2), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    return {"batch_size": int(last.group(1)), "started": started}


def read_probe_lines(text: str) -> list[dict[str, Any]]:
    """The probes (batch_size, outcome, seconds) of the `probe_line`s in a log, in order."""
    outcome = {words: key for key, words in PROBE_WORDS.items()}
    return [{"batch_size": int(batch), "outcome": outcome[words], "seconds": float(seconds)}
            for batch, words, seconds in PROBE_LINE.findall(text)]


def print_confirmed(result: dict[str, Any], console) -> None:
    """The confirmed largest batch beside the prediction."""
    fits, fails = result.get("largest_fitting"), result.get("smallest_failing")
    error = result.get("prediction_error_pct")
    line = f"confirmed largest batch that trains: {fits if fits is not None else 'none'}"
    if fails is not None:
        line += f" (batch {fails} runs out of memory)"
    if error is not None:
        line += f"; the prediction was off by {error:+.1f}%"
    console.print(line)
    given = f" (and {len(result['known'])} given from an earlier search)" if result.get("known") else ""
    console.print(f"search: {len(result['probes'])} probes{given}, {result['stopped']}; allocator: {result['allocator_setting']}")
    known = " ".join(f"--known-{kind} {batch}" for kind, batch in (("fit", fits), ("oom", fails)) if batch is not None)
    if result.get("bounded_by_time") and known:  # a search cut short goes on from its answers, not from the start
        console.print(f"to go on from here: the same command with {known} --confirm-only "
                      "(the fit is skipped; a longer --confirm-time leaves room for more probes)")
