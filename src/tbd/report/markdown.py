"""`tbd export --format markdown`: a short GitHub-flavoured table of runs for a pull request.

Built from the export's rows (`tbd.results.export.flat_row`), with the numbers written as the
terminal tables write them (`tbd.report.fmt.fmt_num`: thousands separated, never 6.796e+04).
"""

from __future__ import annotations

from typing import Any

from tbd.report.fmt import fmt_num
from tbd.results.export import flat_row

# What the throughput and CI columns are (docs/metrics.md says which runs use the window rate).
THROUGHPUT_NOTE = ("throughput: the median step throughput, or the window rate (the steady window's units over its time) "
                   "where marked (window); 95% CI of that figure")


def to_markdown(records: list[dict[str, Any]]) -> str:
    """One row per run: the run, flavor, device, batch with its unit, precision, throughput with its CI, status."""
    lines = ["| run | flavor | device | batch | precision | throughput | 95% CI | status |", "|---|---|---|---:|---|---:|---:|---|"]
    rows = [flat_row(r) for r in records]
    for row in rows:
        thr = f"{fmt_num(row['throughput'])} {row['throughput_unit']}" if row["throughput"] is not None and row["throughput_unit"] else "-"
        thr += " (window)" if row["throughput_statistic"] == "window" and thr != "-" else ""
        ci = f"±{row['throughput_ci95_half_width_pct']:.1f}%" if row["throughput_ci95_half_width_pct"] is not None and row["throughput"] else "-"
        status = row["status"] + (f" ({row['error_kind']})" if row["status"] == "failed" and row["error_kind"] else "")
        run = f"{row['workload']}/{row['framework']}" + (" +compile" if row["compile"] else "") + (" +channels_last" if row["channels_last"] else "")
        run += f" x{row['nproc']}" if (row["nproc"] or 1) > 1 else ""
        batch = f"{row['batch_size']} {row['batch_unit']}" if row["batch_unit"] else row["batch_size"]
        lines.append(f"| {_md(run)} | {_md(row['flavor'])} | {_md(row['device'])} | {_md(batch)} | {_md(row['precision'])} | {_md(thr)} | {ci} "
                     f"| {_md(status)} |")
    revisions = sorted({str(row["code_revision"])[:10] for row in rows if row["code_revision"]})
    if rows:
        lines.append("")
        lines.append((f"tbd code revision: {', '.join(revisions)}; " if revisions else "") + f"{THROUGHPUT_NOTE}; status 'ok' = CI within its target.")
    return "\n".join(lines) + "\n"


def _md(value: Any) -> str:
    return str(value if value is not None else "-").replace("|", "\\|").replace("\n", " ")
