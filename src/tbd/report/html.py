"""One self-contained HTML report of runs: `tbd report SWEEP --output report.html` exercises it.

The file needs nothing else to be read: CSS inline, figures embedded as base64 PNG, no script
and no network. The same figures are written beside it as PNG and SVG (`<stem>-plots/`).
Sections: summary, throughput vs batch size, utilization, memory, step times, runs,
environment, diagnoses. Records may lack the optional parts (memory_profile, analysis): each
section then says what is missing and which command adds it.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections import defaultdict
from pathlib import Path
from typing import Any

from tbd.report import plots
from tbd.report.compare import environment_facts
from tbd.report.fmt import fmt_bytes, fmt_num
from tbd.results.record import has_result, headline

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1f3b5c;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:24px}
header p{margin:0;opacity:.85}nav{padding:8px 32px;background:#e4e9f0}nav a{margin-right:14px;color:#1f3b5c}
main{padding:8px 32px 40px}section{background:#fff;border:1px solid #dde2ea;border-radius:8px;margin:16px 0;padding:12px 20px}
h2{font-size:18px;margin:6px 0 10px;color:#1f3b5c}table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border-bottom:1px solid #e6e9ef;padding:4px 10px;text-align:left;vertical-align:top}th{background:#f0f3f7}
td.num{text-align:right;font-variant-numeric:tabular-nums}.ok{color:#1a7f37}.failed{color:#c62828}.skipped{color:#9a6700}
.unconverged{color:#b25e00;font-weight:600}.insufficient{color:#8e24aa;font-weight:600}
img{max-width:100%;height:auto;border:1px solid #eee}.note{color:#5b6472;font-size:13px}
.diag{border-left:4px solid #1f3b5c;padding:4px 12px;margin:8px 0;background:#f7f9fc}
"""

SECTIONS = (("summary", "Summary"), ("throughput", "Throughput vs batch size"), ("utilization", "GPU, FLOP and CPU utilization"),
            ("memory", "Memory breakdown"), ("step-times", "Step-time distributions"), ("runs", "Runs"),
            ("environment", "Environment"), ("diagnoses", "Diagnoses"))


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def table(headers: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td class='num'>{c}</td>" if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(fig, folder: Path, name: str, caption: str) -> str:
    if fig is None:
        return f"<p class='note'>{e(caption)}: nothing to plot in these runs.</p>"
    png = plots.save(fig, folder, name)
    data = base64.b64encode(png).decode()
    return (f"<figure><img alt='{e(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption class='note'>{e(caption)} (also <a href='{e(folder.name)}/{name}.svg'>SVG</a>, "
            f"<a href='{e(folder.name)}/{name}.png'>PNG</a>)</figcaption></figure>")


def status_cell(r: dict[str, Any]) -> str:
    err = r.get("error") or {}
    if r["status"] == "ok":
        return "<span class='ok'>ok</span>"
    if has_result(r):  # measured, but the CI did not reach its target (or there is none)
        reason = ((r.get("method") or {}).get("convergence") or {}).get("reason", "")
        return f"<span class='{e(r['status'])}'>{e(r['status'])}</span> <span class='note'>{e(reason)}</span>"
    kind = "" if err.get("kind") in (None, r["status"]) else f"{err['kind']}: "
    message = (err.get("message") or "").removeprefix(f"{r['status']}: ")
    return f"<span class='{e(r['status'])}'>{e(r['status'])}</span> {e(kind)}{e(message)}"


def summary(records: list[dict[str, Any]]) -> str:
    best: dict[str, dict] = {}
    for r in records:
        if has_result(r):
            k = f"{r['config']['workload']}/{r['config']['framework']} {r['config']['precision']} {r['config']['device']}"
            if k not in best or headline(r)["throughput"] > headline(best[k])["throughput"]:
                best[k] = r
    counts = defaultdict(int)
    for r in records:
        counts[r["status"]] += 1
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    rows = [[e(k), e(r["config"]["batch_size"]), f"{fmt_num(headline(r)['throughput'])} {e(headline(r)['unit'])}/s"
             + ("" if r["status"] == "ok" else f" <span class='{e(r['status'])}'>({e(r['status'])})</span>"),
             e(fmt_num(headline(r)["mfu_pct"])), e(fmt_bytes(headline(r)["peak_bytes"]))] for k, r in sorted(best.items())]
    return (f"<p>{len(records)} runs: {e(text)}.</p>"
            + table(["configuration", "best batch", "throughput (median)", "MFU %", "peak memory"], rows, {1, 2, 3, 4}))


def runs_table(records: list[dict[str, Any]]) -> str:
    rows = []
    for r in sorted(records, key=lambda r: (r["config"]["workload"], r["config"]["framework"], r["config"]["precision"], r["config"]["batch_size"])):
        h = headline(r)
        ci = f" ±{h['ci_pct']:.1f}%" if h["ci_pct"] is not None and has_result(r) else ""
        rows.append([e(r["id"]), e(h["workload"]), e(h["framework"] + (" +compile" if h["compile"] else "")), e(h["flavor"]), e(h["device"]),
                     e(h["batch_size"]), e(h["precision"]), f"{fmt_num(h['throughput'])} {e(h['unit'])}/s{ci}" if h["throughput"] else "-",
                     e(fmt_num(h["step_time_ms_p50"])), e(fmt_bytes(h["peak_bytes"])), status_cell(r)])
    return table(["id", "workload", "framework", "flavor", "device", "batch", "precision", "throughput (±95% CI)", "step p50 ms",
                  "peak memory", "status"], rows, {5, 7, 8, 9})


def environment(records: list[dict[str, Any]]) -> str:
    """One column per distinct environment, one row per fact."""
    envs: list[dict[str, str]] = []
    for r in records:
        facts = environment_facts(r)
        if facts and facts not in envs:
            envs.append(facts)
    if not envs:
        return "<p class='note'>These runs carry no environment.</p>"
    keys = list(dict.fromkeys(k for f in envs for k in f))
    rows = [[e(k)] + [e(f.get(k, "-")) for f in envs] for k in keys]
    note = "" if len(envs) == 1 else f"<p class='note'>{len(envs)} different environments: compare numbers across them with care.</p>"
    return note + table(["fact"] + [f"environment {i + 1}" for i in range(len(envs))], rows)


def diagnoses(records: list[dict[str, Any]]) -> str:
    parts = []
    for r in records:
        a = r.get("analysis")
        if not a:
            continue
        parts.append(f"<div class='diag'><b>{e(plots.run_label(r))}</b> <span class='note'>({e(r['id'])})</span>{render_analysis(a)}</div>")
    if not parts:
        return "<p class='note'>No analysis ran for these runs; add one with <code>tbd run ... --profile</code> or <code>tbd analyze RUN</code>.</p>"
    return "".join(parts)


def render_analysis(a: Any) -> str:
    """Analysis records are read tolerantly: headline strings first, lists as bullets, numbers as a table."""
    if not isinstance(a, dict):
        return f"<p>{e(a)}</p>"
    out = []
    for key in ("diagnosis", "bottleneck", "verdict", "class", "summary"):
        v = a.get(key)
        if isinstance(v, str):
            out.append(f"<p><b>{e(key)}:</b> {e(v)}</p>")
        elif isinstance(v, dict):
            out.append(render_analysis(v))
    for key, v in a.items():
        if isinstance(v, list) and v:
            items = []
            for item in v[:10]:
                if isinstance(item, dict):
                    text = next((item[k] for k in ("title", "action", "message", "text", "name", "recommendation") if isinstance(item.get(k), str)), "")
                    rest = ", ".join(f"{k} {fmt_num(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x}"
                                     for k, x in item.items() if not isinstance(x, (dict, list)) and x != text)
                    items.append(f"<li>{e(text)} <span class='note'>{e(rest)}</span></li>")
                else:
                    items.append(f"<li>{e(item)}</li>")
            out.append(f"<p><b>{e(key)}</b></p><ul>{''.join(items)}</ul>")
    nums = [(k, v) for k, v in a.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if nums:
        out.append(table(["measure", "value"], [[e(k), e(fmt_num(v))] for k, v in nums[:16]], {1}))
    return "".join(out) or f"<pre>{e(a)}</pre>"


def utilization_table(records: list[dict[str, Any]]) -> str:
    rows = plots.utilization_rows(records)
    if not rows:
        return ""
    names = list(rows[0][1])
    body = [[e(label)] + [e(fmt_num(v)) if v is not None else "n/a" for v in vals.values()] for label, vals in rows]
    return table(["fastest run"] + names, body, set(range(1, len(names) + 1))) + (
        "<p class='note'>GPU util from a trace is the fraction of the window with a kernel running (needs --profile); "
        "NVML's counter is a coarser sample of the same. MFU = model FLOPs / step time / device peak; n/a where the peak "
        "is unknown (e.g. CPUs).</p>")


def write_report(records: list[dict[str, Any]], output: Path, title: str, subtitle: str = "") -> Path:
    """Write the report and its figures; return the HTML path."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    folder = output.parent / f"{output.stem}-plots"
    body = {
        "summary": summary(records),
        "throughput": figure(plots.throughput_vs_batch(records), folder, "throughput_vs_batch", "throughput vs batch size"),
        "utilization": figure(plots.utilization(records), folder, "utilization", "GPU, FLOP and CPU utilization") + utilization_table(records),
        "memory": figure(plots.memory_breakdown(records), folder, "memory", "memory at the peak, by category"),
        "step-times": figure(plots.step_times(records), folder, "step_times", "steady-state step times"),
        "runs": runs_table(records),
        "environment": environment(records),
        "diagnoses": diagnoses(records),
    }
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f"<a href='#{sid}'>{e(name)}</a>" for sid, name in SECTIONS)
    sections = "".join(f"<section id='{sid}'><h2>{e(name)}</h2>{body[sid]}</section>" for sid, name in SECTIONS)
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><link rel='icon' href='data:,'><style>{CSS}</style></head><body>"
            f"<header><h1>{e(title)}</h1><p>{e(subtitle)} generated {now} by tbd</p></header><nav>{nav}</nav>"
            f"<main>{sections}</main></body></html>")
    output.write_text(page, encoding="utf-8")
    return output
