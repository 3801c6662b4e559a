"""`tbd tune` results for people: the trail as rows, Markdown, an HTML section and two figures
(a waterfall of the kept gains of one tuning; the speedup of each tuned workload).

Everything reads the stored record (kind 'tune', its trail under `tune`), so `tbd report` shows
tunings from any store, and `tbd tune --markdown FILE` writes the same view of a fresh one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tbd.report.fmt import fmt_num


def is_tune(record: dict[str, Any]) -> bool:
    return record.get("kind") == "tune" and isinstance(record.get("tune"), dict)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f}%"


def expected_cell(trial: dict[str, Any]) -> str:
    return "baseline" if trial["step"] == 0 else ("not estimated" if trial["expected_gain_pct"] is None else f"+{trial['expected_gain_pct']:.0f}%")


def measured_cell(trial: dict[str, Any]) -> str:
    if trial["measured_gain_pct"] is None:
        return "-"
    ci = trial.get("gain_ci95_pct")
    return f"{pct(trial['measured_gain_pct'])} [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else f"{pct(trial['measured_gain_pct'])} (no CI)"


def trail_rows(tune: dict[str, Any]) -> list[list[str]]:
    """#, change, expected gain, measured gain [95% CI], throughput, kept, why, run id."""
    rows = []
    for t in tune["trail"]:
        kept = "start" if t["step"] == 0 else ("yes" if t["kept"] else "no")
        rows.append([str(t["step"]), t["change"], expected_cell(t), measured_cell(t), fmt_num(t["throughput"]) if t["throughput"] else "-",
                     kept, t["why"], t["run_id"] or "-"])
    return rows


TRAIL_HEADERS = ["#", "change", "expected gain", "measured gain [95% CI]", "throughput", "kept", "why", "run"]


def headline(record: dict[str, Any]) -> str:
    tune = record["tune"]
    start, best = tune["start_config"], tune["best_config"]
    device = (record.get("environment") or {}).get("device_name") or start["device"]
    head = f"{start['workload']}/{start['framework']}/{start['flavor']} on {device}"
    if tune.get("speedup") is None:
        return f"{head}: {tune['stopped']}"
    ci = tune.get("speedup_ci95")
    ci_text = f" (95% CI {ci[0]:.2f}x-{ci[1]:.2f}x)" if ci else ""
    return (f"{head}: {tune['speedup']:.2f}x{ci_text}, {fmt_num(tune['baseline_throughput'])} -> {fmt_num(tune['best_throughput'])} "
            f"{tune['unit']}/s; start {describe(start)}, best {describe(best)}")


def describe(config: dict[str, Any]) -> str:
    parts = [f"batch {config['batch_size']}", config["precision"]]
    parts += ["channels_last"] if config.get("channels_last") else []
    parts += ["compile"] if config.get("compile") else []
    parts += [f"{k}={v}" for k, v in sorted((config.get("options") or {}).items())]
    if (config.get("nproc_per_node") or 1) * (config.get("nnodes") or 1) > 1:
        parts.append(f"DDP buckets {config.get('ddp_bucket_mb'):g} MiB")
    return ", ".join(parts)


def markdown(record: dict[str, Any], figure_path: str | None = None) -> str:
    tune = record["tune"]

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [f"## tbd tune: {cell(headline(record))}", "",
             f"Budget {tune['budget_s']:g} s, used {tune['elapsed_s']:.0f} s; stopped: {cell(tune['stopped'])}.",
             f"Kept when the 95% CI of the gain lies above 0 and the gain is at least {tune['min_gain_pct']:g}%.", ""]
    lines += ["| " + " | ".join(TRAIL_HEADERS) + " |", "|" + "---|" * len(TRAIL_HEADERS)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in trail_rows(tune)]
    if tune["left_out"]:
        lines += ["", "Levers not tried: " + "; ".join(f"{k} ({cell(v)})" for k, v in tune["left_out"].items()) + "."]
    for note in tune.get("notes") or []:
        lines.append(f"Note: {cell(note)}")
    if tune.get("command"):
        lines += ["", "Best configuration:", "", "```sh", tune["command"], "```", "", "```toml", tune["toml"].rstrip(), "```"]
    if figure_path:
        lines += ["", f"![gains of the kept changes]({figure_path})"]
    return "\n".join(lines) + "\n"


# ---- figures ------------------------------------------------------------------------------


def waterfall(record: dict[str, Any]):
    """The start's throughput, each kept change as a step up (with the 95% CI of its gain), and
    the tuned throughput; None when nothing was measured."""
    from tbd.report.plots import _plt

    tune = record["tune"]
    if not tune.get("baseline_throughput"):
        return None
    kept = [t for t in tune["trail"][1:] if t["kept"] and t["throughput"]]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * (len(kept) + 2)), 3.6))
    labels, level = ["start"], tune["baseline_throughput"]
    ax.bar(0, level, color="tab:blue")
    ax.text(0, level, fmt_num(level), ha="center", va="bottom", fontsize=7)
    for i, t in enumerate(kept, 1):
        low, high = t.get("gain_ci95_pct") or (t["measured_gain_pct"], t["measured_gain_pct"])
        ax.bar(i, t["throughput"] - level, bottom=level, color="tab:green")
        below, above = t["throughput"] - level * (1 + low / 100), level * (1 + high / 100) - t["throughput"]
        ax.errorbar(i, t["throughput"], yerr=[[max(0.0, below)], [max(0.0, above)]], color="black", capsize=3, lw=0.8)
        ax.text(i, (level + t["throughput"]) / 2, f"{t['measured_gain_pct']:+.0f}%", ha="center", va="center", fontsize=7,
                color="white", weight="bold")
        labels.append(t["change"])
        level = t["throughput"]
    n = len(kept) + 1
    ax.bar(n, tune["best_throughput"], color="navy")
    ax.text(n, tune["best_throughput"], f"{tune['speedup']:.2f}x", ha="center", va="bottom", fontsize=8, weight="bold")
    labels.append("tuned")
    ax.set_xticks(range(n + 1), labels, rotation=25, ha="right", fontsize=7)
    ax.set_ylabel(f"{tune['unit']}/s (median, steady window)")
    rejected = len([t for t in tune["trail"][1:] if not t["kept"]])
    ax.set_title(f"{tune['start_config']['workload']}: gains of the kept changes ({rejected} measured and not kept)", fontsize=9)
    ax.set_ylim(0, max(tune["best_throughput"], level) * 1.15)
    fig.tight_layout()
    return fig


def speedups(records: list[dict[str, Any]]):
    """One bar per tuning: tuned / start throughput with its 95% CI, a line at 1x. A tuning whose
    budget ended before any change was measured has no bar, only a note (not a 1.00x)."""
    rows = [r for r in records if is_tune(r) and r["tune"].get("speedup")]
    if not rows:
        return None
    from tbd.report.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(rows) + 1.3))
    tried = [len(r["tune"].get("trail") or []) > 1 for r in rows]
    ratios = [r["tune"]["speedup"] if t else 0.0 for r, t in zip(rows, tried)]
    cis = [(r["tune"].get("speedup_ci95") or [s, s]) if t else [0.0, 0.0] for r, s, t in zip(rows, ratios, tried)]
    ax.barh(range(len(rows)), ratios, xerr=[[s - c[0] for s, c in zip(ratios, cis)], [c[1] - s for s, c in zip(ratios, cis)]],
            capsize=3, color="tab:green", edgecolor="black", linewidth=0.4)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(range(len(rows)), [f"{r['tune']['start_config']['workload']}/{r['tune']['start_config']['framework']}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    for i, (s, c, t) in enumerate(zip(ratios, cis, tried)):
        ax.text(max(s, c[1], 1.0), i, f"  {s:.2f}x" if t else "  no change measured in the budget", va="center", fontsize=7)
    ax.set_xlim(0, max([c[1] for c in cis] + [2.0]) * 1.2)
    ax.set_xlabel("tuned throughput / starting throughput (95% bootstrap CI)")
    fig.tight_layout()
    return fig


def html_section(records: list[dict[str, Any]], folder: Path) -> str:
    """The report's tuning section: per tuning its headline, waterfall, trail and answer."""
    from tbd.report.html import e, figure, table

    tunings = [r for r in records if is_tune(r)]
    if not tunings:
        return ""
    parts = []
    if len(tunings) > 1:
        parts.append(figure(speedups(tunings), folder, "tune_speedups", "speedup of each tuning over its starting configuration"))
    for r in tunings:
        tune = r["tune"]
        parts.append(f"<div class='diag'><p><b>{e(headline(r))}</b> <span class='note'>({e(r['id'])})</span></p>"
                     f"<p class='note'>stopped: {e(tune['stopped'])}; budget {tune['budget_s']:g} s, used {tune['elapsed_s']:.0f} s</p>")
        parts.append(figure(waterfall(r), folder, f"tune_{r['id']}", "throughput after each kept change, with the 95% CI of its gain"))
        parts.append(table(TRAIL_HEADERS, [[e(c) for c in row] for row in trail_rows(tune)], {0, 2, 3, 4}))
        if tune.get("left_out"):
            parts.append("<p class='note'>not tried: " + e("; ".join(f"{k} ({v})" for k, v in tune["left_out"].items())) + "</p>")
        if tune.get("command"):
            parts.append(f"<p>best configuration:</p><pre>{e(tune['command'])}</pre><pre>{e(tune['toml'])}</pre>")
        parts.append("</div>")
    return "".join(parts)
