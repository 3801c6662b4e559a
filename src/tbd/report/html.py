"""One self-contained HTML report of runs: `tbd report SWEEP --output report.html` exercises it.

The file needs nothing else to be read: CSS inline, figures embedded as base64 PNG, no script
and no network. The same figures are written beside it as PNG and SVG (`<stem>-plots/`).
Sections: summary, (given two sweeps or runs: the comparison of B with A, ratios with CIs and
a figure), throughput vs batch size (bars where a workload has one batch size; axes from zero),
utilization, memory (saying what is and is not measured on each device), step-time
distributions, every step of each run (compile and warm-up visible), runs, environment (with
RAM, OS, threads and load), diagnoses; and where `tbd tune` records are among them, a tuning
section (report/tune.py: waterfall of the kept gains, the trail, the answer). Points that did not converge are drawn hollow or hatched
and their status coloured. Records may lack the optional parts (memory_profile, analysis): each
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
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td:first-child{white-space:nowrap}.ok{color:#1a7f37}.failed{color:#c62828}.skipped{color:#9a6700}
.unconverged{color:#b25e00;font-weight:600}.insufficient{color:#8e24aa;font-weight:600}
img{max-width:100%;height:auto;border:1px solid #eee}.note{color:#5b6472;font-size:13px}
.diag{border-left:4px solid #1f3b5c;padding:4px 12px;margin:8px 0;background:#f7f9fc}
"""

SECTIONS = (("summary", "Summary"), ("throughput", "Throughput vs batch size"), ("utilization", "GPU, FLOP and CPU utilization"),
            ("memory", "Memory breakdown"), ("step-times", "Step-time distributions"), ("step-series", "Every step of each run"),
            ("runs", "Runs"), ("environment", "Environment"), ("diagnoses", "Diagnoses"))
COMPARISON = ("comparison", "Comparison: B against A")
TUNING = ("tuning", "Tuning (tbd tune)")
ENVIRONMENTS = ("environments", "Environments compared")


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
    best = plots.fastest(records, plots.config_key)
    counts = defaultdict(int)
    for r in records:
        counts[r["status"]] += 1
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    rows = []
    for k, r in sorted(best.items()):
        if r is None:  # no run long enough for a CI: which batch is fastest is not measurable
            short = [x for x in records if plots.measured(x) and plots.config_key(x) == k]
            why = (f"{len(short)} max-batch probe(s): they say which batch fits" if all((x.get("sweep") or {}).get("probe") for x in short)
                   else f"{len(short)} run(s) too short for a CI; raise --max-time")
            rows.append([e(k), "-", f"not measurable <span class='note'>({e(why)})</span>", "-", "-"])
            continue
        rows.append([e(k), e(r["config"]["batch_size"]), f"{fmt_num(headline(r)['throughput'])} {e(headline(r)['unit'])}/s"
                     + ("" if r["status"] == "ok" else f" <span class='{e(r['status'])}'>({e(r['status'])})</span>"),
                     e(fmt_num(headline(r)["mfu_pct"])), e(fmt_bytes(headline(r)["peak_bytes"]))])
    return (f"<p>{len(records)} runs: {e(text)}.</p>"
            + table(["configuration", "best batch", "throughput (median)", "MFU %", "peak memory"], rows, {1, 2, 3, 4}))


def runs_table(records: list[dict[str, Any]]) -> str:
    rows = []
    for r in sorted(records, key=lambda r: (r["config"]["workload"], r["config"]["framework"], r["config"]["precision"], r["config"]["batch_size"])):
        h = headline(r)
        ci = f" ±{h['ci_pct']:.1f}%" if h["ci_pct"] is not None and has_result(r) else ""
        framework = h["framework"] + (" +compile" if h["compile"] else "") + (" +channels_last" if h["channels_last"] else "")
        rows.append([e(r["id"]), e(h["workload"]), e(framework), e(h["flavor"]), e(h["device"]),
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
    rows += conditions_rows(records, envs)
    note = "" if len(envs) == 1 else f"<p class='note'>{len(envs)} different environments: compare numbers across them with care.</p>"
    return note + table(["fact"] + [f"environment {i + 1}" for i in range(len(envs))], rows)


def conditions_rows(records: list[dict[str, Any]], envs: list[dict[str, str]]) -> list[list[str]]:
    """RAM, OS, threads and load of the runs of each environment (load as a range: it varies)."""
    groups: list[list[dict]] = [[] for _ in envs]
    for r in records:
        facts = environment_facts(r)
        if facts in envs:
            groups[envs.index(facts)].append(r)

    def spread(values: list[float], fmt: str) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        lo, hi = min(values), max(values)
        return format(lo, fmt) if lo == hi else f"{format(lo, fmt)} - {format(hi, fmt)}"

    out = []
    for name, read, fmt in (
        ("RAM", lambda r: (r.get("environment") or {}).get("ram_bytes"), None),
        ("OS", lambda r: (r.get("environment") or {}).get("platform"), None),
        ("CPU cores", lambda r: (r.get("environment") or {}).get("cpu_cores"), None),
        ("intra-op threads", lambda r: _cond(r).get("intra_op_threads"), None),
        ("load average (1 min, before runs)", lambda r: ((_cond(r).get("before") or {}).get("load_avg") or [None])[0], ".1f"),
        ("other processes' CPU use (cores)", lambda r: _cond(r).get("others_cpu_cores"), ".2f"),
        ("runs with noise warnings", None, None),
    ):
        cells = []
        for group in groups:
            if read is None:
                noisy = sum(bool(((r.get("method") or {}).get("noise") or {}).get("noisy")) for r in group)
                cells.append(f"{noisy} of {len(group)}")
            elif fmt:
                cells.append(spread([read(r) for r in group], fmt))
            else:
                values = sorted({str(fmt_bytes(v) if name == "RAM" else v) for r in group if (v := read(r)) is not None})
                cells.append(", ".join(values) or "-")
        if any(c not in ("-", "") for c in cells):
            out.append([e(name)] + [e(c) for c in cells])
    return out


def _cond(r: dict[str, Any]) -> dict[str, Any]:
    return (r.get("environment") or {}).get("conditions") or {}


def memory_note(records: list[dict[str, Any]]) -> str:
    """What the memory chart measures for these runs, and what it does not."""
    sources = {plots.memory_categories(r)[0] for r in records if has_result(r)}
    notes = {
        "memory profiler": "by category from <code>tbd memory</code>'s profile of one step: weights, gradients, optimizer state, "
                           "input batch, feature maps, workspace, allocator cache, framework overhead.",
        "device allocator": "from the GPU allocator: tensors allocated at the peak, the allocator's cache above them, and the rest of "
                            "what NVML attributes to the process (CUDA context, libraries). No split by category: "
                            "<code>tbd memory</code> gives one.",
        "host process": "on the CPU only the process's peak resident memory (RSS) is measured: it includes the Python "
                        "interpreter and the framework's libraries, and is not split into weights, gradients or feature maps "
                        "(<code>tbd memory WORKLOAD --device cpu</code> does that for one step).",
    }
    parts = [f"<li><b>{e(src)}</b>: {notes[src]}</li>" for src in sorted(sources) if src in notes]
    return f"<p class='note'>What each bar measures:</p><ul class='note'>{''.join(parts)}</ul>" if parts else ""


def comparison_section(comparison: dict[str, Any], folder: Path) -> str:
    """B against A: the ratio of median throughputs of each paired point with its 95% CI."""
    from tbd.report import compare as cmp

    pairs, across, lonely = cmp.pair_up(comparison["a"], comparison["b"])
    rows = []
    for p in pairs:
        ci = f"{p.ci_low:.3f} - {p.ci_high:.3f}" if p.ci_low == p.ci_low else "n/a"
        if not p.converged:
            verdict = f"<span class='unconverged'>not converged ({e(p.unconverged_sides)}): no verdict</span>"
        elif p.ci_low == p.ci_low and p.ci_high < 1:
            verdict = "<span class='failed'>B slower (CI excludes 1)</span>"
        elif p.ci_low == p.ci_low and p.ci_low > 1:
            verdict = "<span class='ok'>B faster (CI excludes 1)</span>"
        else:
            verdict = "within noise"
        ha, hb = headline(p.a), headline(p.b)
        rows.append([e(p.label), f"{fmt_num(ha['throughput'])} {e(ha['unit'])}/s", f"{fmt_num(hb['throughput'])} {e(hb['unit'])}/s",
                     f"{p.ratio:.3f}", e(ci), verdict])
    head = (f"<p>A = {e(comparison['desc_a'])}<br>B = {e(comparison['desc_b'])}"
            + (f"<br>compared across: {e(', '.join(across))}" if across else "") + "</p>")
    warnings = cmp.environment_warnings(comparison["a"], comparison["b"])
    from tbd.harness.noise import compare_conditions

    warnings += compare_conditions([p.a for p in pairs], [p.b for p in pairs])
    notes = "".join(f"<p class='note'>unpaired: {e(x)}</p>" for x in lonely) + "".join(f"<p class='note'>differs: {e(w)}</p>" for w in warnings)
    if not pairs:
        return head + "<p class='note'>A and B have no measured runs of the same configuration.</p>" + notes
    return (head + table(["point", "A", "B", "B / A", "95% CI", "verdict"], rows, {1, 2, 3, 4})
            + figure(plots.comparison(pairs), folder, "comparison", "throughput ratio B / A with 95% bootstrap CIs") + notes)


def verdict_cell(p) -> str:
    if not p.converged:
        return f"<span class='unconverged'>not converged ({e(p.unconverged_sides)}): no verdict</span>"
    if p.ci_low == p.ci_low and p.ci_high < 1:
        return "<span class='failed'>slower (CI excludes 1)</span>"
    if p.ci_low == p.ci_low and p.ci_low > 1:
        return "<span class='ok'>faster (CI excludes 1)</span>"
    return "within noise"


def environments_section(found, folder: Path) -> str:
    """The same configurations run in several Python environments (tbd sweep --python ...): each
    environment's throughput against the baseline's, with 95% bootstrap CIs of the ratio."""
    described = table(["environment", "interpreter", "Python", "framework"],
                      [[e(label) + (" (baseline)" if label == found.baseline else ""), e(d["interpreter"]), e(d["Python"]), e(d["framework"])]
                       for label, d in found.environments.items()])
    rows = []
    for p in found.pairs:
        ha, hb = headline(p.a), headline(p.b)
        ci = f"{p.ci_low:.3f} - {p.ci_high:.3f}" if p.ci_low == p.ci_low else "n/a"
        rows.append([e(p.label), f"{fmt_num(ha['throughput'])} {e(ha['unit'])}/s", f"{fmt_num(hb['throughput'])} {e(hb['unit'])}/s",
                     f"{p.ratio:.3f}", e(ci), verdict_cell(p)])
    notes = "".join(f"<p class='note'>unpaired: {e(x)}</p>" for x in found.lonely)
    head = (f"<p>Same workload and settings, run in each environment; ratio = environment / {e(found.baseline)} of median "
            "throughput, 95% CI from a bootstrap over the steady per-step rates (as <code>tbd compare</code>).</p>")
    if not found.pairs:
        return head + described + "<p class='note'>No configuration was measured in two environments.</p>" + notes
    return (head + described + table(["point: environment / baseline", "baseline", "environment", "ratio", "95% CI", "verdict"], rows, {1, 2, 3, 4})
            + figure(plots.comparison(found.pairs), folder, "environments", "throughput ratio environment / baseline with 95% bootstrap CIs")
            + notes)


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


def write_report(records: list[dict[str, Any]], output: Path, title: str, subtitle: str = "",
                 comparison: dict[str, Any] | None = None) -> Path:
    """Write the report and its figures; return the HTML path. `comparison` ({desc_a, a, desc_b, b}:
    descriptions and records of two sweeps or runs) adds the section comparing B with A."""
    from tbd.report import tune as tune_report

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    folder = output.parent / f"{output.stem}-plots"
    tunings = [r for r in records if tune_report.is_tune(r)]
    records = [r for r in records if not tune_report.is_tune(r)]  # a tuning repeats its best run: shown once, in its section
    body = {
        "summary": summary(records),
        "throughput": figure(plots.throughput_vs_batch(records), folder, "throughput_vs_batch", "throughput vs batch size"),
        "utilization": figure(plots.utilization(records), folder, "utilization", "GPU, FLOP and CPU utilization") + utilization_table(records),
        "memory": figure(plots.memory_breakdown(records), folder, "memory", "memory at the peak, by category") + memory_note(records),
        "step-times": figure(plots.step_times(records), folder, "step_times", "steady-state step times"),
        "step-series": figure(plots.step_series(records), folder, "step_series",
                              "every step in order: step 0 (compilation) black, other excluded warm-up steps grey, timed steps blue "
                              "(orange when not converged), a change of regime as a red line"),
        "runs": runs_table(records),
        "environment": environment(records),
        "diagnoses": diagnoses(records),
    }
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    shown = SECTIONS
    if comparison is not None:
        body[COMPARISON[0]] = comparison_section(comparison, folder)
        shown = (SECTIONS[0], COMPARISON, *SECTIONS[1:])
    if tunings:
        body[TUNING[0]] = tune_report.html_section(tunings, folder)
        shown = (shown[0], TUNING, *shown[1:])
    from tbd.report.compare import across_environments

    found = across_environments(records)
    if found is not None:  # runs of several Python environments: compared right after the summary
        body[ENVIRONMENTS[0]] = environments_section(found, folder)
        shown = (shown[0], ENVIRONMENTS, *shown[1:])
    nav = "".join(f"<a href='#{sid}'>{e(name)}</a>" for sid, name in shown)
    sections = "".join(f"<section id='{sid}'><h2>{e(name)}</h2>{body[sid]}</section>" for sid, name in shown)
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><link rel='icon' href='data:,'><style>{CSS}</style></head><body>"
            f"<header><h1>{e(title)}</h1><p>{e(subtitle)} generated {now} by tbd</p></header><nav>{nav}</nav>"
            f"<main>{sections}</main></body></html>")
    output.write_text(page, encoding="utf-8")
    return output
