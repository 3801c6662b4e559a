"""Markdown tables for docs/frameworks.md from bench/frameworks_compare_gpu.py's results.

    PYTHONPATH=src python3 bench/frameworks_table.py --in OUT                      # every section
    PYTHONPATH=src python3 bench/frameworks_table.py --in A.json --in B.json --section throughput

`--in` takes result files (frameworks_compare.json) or folders holding one; several are merged
(a later one wins for the same point). Sections:
- environment: card, driver, versions, dates: the line under the results heading;
- throughput: per batch (paper, large), each framework's throughput (MFU) and JAX's ratios;
- reference: tbd's JAX against the plain Flax loops, with the goal (>= 1.0x);
- details: per run: MFU, peak memory, GPU utilization, compile time and count, status;
- traces: per run at the traced batch: kernels per step and GPU time per step by kind;
- explanations: one line per JAX / PyTorch ratio, from the two traces (what the slower one
  spends its extra time on).
A run whose throughput did not converge is marked `*` (its CI is wider than the target).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

RESULT_FILE = "frameworks_compare.json"
LABELS = {"eager": "PyTorch eager", "compile": "torch.compile", "jax": "JAX", "ref": "plain Flax"}
KINDS = ("paper", "large")
MEASURED = ("ok", "unconverged", "insufficient")
SECTIONS = ("environment", "throughput", "reference", "details", "traces", "explanations")
# Trace digest fields: the four kinds of GPU time per step, as the tables name them.
TIME_KINDS = (("idle_ms", "GPU idle between kernels"), ("elementwise_fusion_ms", "element-wise/fusion kernels"),
              ("gemm_conv_attention_ms", "GEMM/conv/attention kernels"), ("copies_ms", "memory copies"))


def load(paths: list[str | Path]) -> dict[str, Any]:
    data: dict[str, Any] = {"points": {}, "skipped": {}, "calls": []}
    for p in map(Path, paths):
        path = p / RESULT_FILE if p.is_dir() else p
        if not path.exists():
            raise SystemExit(f"no results at {path}; give a frameworks_compare.json or the --out folder that holds one")
        old = json.loads(path.read_text())
        data["points"].update(old.get("points", {}))
        data["skipped"].update(old.get("skipped", {}))
        data["calls"] += old.get("calls", [])
    return data


def ordered(data: dict[str, Any]) -> list[str]:
    """Point keys by workload (first seen), batch kind, then framework."""
    names = workloads(data)
    variants = list(LABELS)
    return sorted(data["points"], key=lambda k: (names.index(k.split("/")[0]), KINDS.index(k.split("/")[1]), variants.index(k.split("/")[2])))


def rows(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: data["points"][k]["row"] for k in ordered(data) if data["points"][k].get("row")}


def workloads(data: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for key in list(data["points"]) + list(data["skipped"]):
        w = key.split("/")[0]
        if w not in seen:
            seen.append(w)
    return seen


def measured(r: dict[str, Any] | None) -> bool:
    return bool(r) and r.get("status") in MEASURED and bool(r.get("throughput"))


def _n(v: float | None, spec: str = "{:,.0f}") -> str:
    return "-" if v is None else spec.format(v)


def cell(r: dict[str, Any] | None, skipped: str | None) -> str:
    """A throughput cell: value (MFU), '*' when not converged; else why there is none."""
    if r is None:
        return f"— ({skipped})" if skipped else "not run"
    if not measured(r):
        return f"{r.get('status')}: {(r.get('error') or '')[:60]}"
    mark = "" if r["status"] == "ok" else "*"
    mfu = f" ({r['mfu_pct']:.1f}%)" if r.get("mfu_pct") is not None else ""
    return f"{_fmt_throughput(r['throughput'])}{mfu}{mark}"


def _fmt_throughput(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    return a["throughput"] / b["throughput"] if measured(a) and measured(b) else None


def environment(data: dict[str, Any]) -> str:
    recs = [r["record"] for r in data["points"].values() if r.get("record")]
    if not recs:
        return "no tbd run in these results"
    env = recs[0].get("environment") or {}
    gpu = env.get("gpu") or {}
    versions = {}
    for rec in recs:
        libs = (rec.get("environment") or {}).get("libraries") or {}
        for name in ("torch", "jax", "jaxlib", "flax", "optax", "triton"):
            if libs.get(name):
                versions[name] = libs[name]
        # The framework's own version string also names its CUDA build (torch's '+cu130').
        framework_version = (rec.get("environment") or {}).get("framework_version") or ""
        if framework_version.startswith(f"{versions.get('torch')}+"):
            versions["torch"] = framework_version
    dates = sorted({(rec.get("created_at") or "")[:10] for rec in recs if rec.get("created_at")})
    date = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}" if dates else "?"
    device = gpu.get("name") or env.get("device_name") or env.get("cpu") or "?"
    memory = f" ({gpu['memory_total_bytes'] / 2**20:,.0f} MiB)" if gpu.get("memory_total_bytes") else ""
    driver = f", driver {gpu['driver']}" if gpu.get("driver") else ""
    libs = ", ".join(f"{k} {v}" for k, v in versions.items())
    # Runs resumed across machines (a one-GPU and a two-GPU host, say) differ in their host's cores.
    cores = sorted({(rec.get("environment") or {}).get("cpu_cores") for rec in recs} - {None}) or ["?"]
    cores_text = f"{cores[0]} CPU cores" if len(cores) == 1 else f"{' or '.join(map(str, cores))} CPU cores (runs on {len(cores)} machines)"
    return f"{device}{memory}{driver}, {cores_text}; {libs}; tbd {env.get('tbd_version', '?')}; {date}"


def throughput_table(data: dict[str, Any], kind: str) -> str:
    rs, skipped = rows(data), data["skipped"]
    out = [f"| workload ({kind} batch) | PyTorch eager | torch.compile | JAX | JAX / eager | JAX / compile |",
           "|---|---|---|---|---|---|"]
    any_row = False
    for w in workloads(data):
        get = {v: rs.get(f"{w}/{kind}/{v}") for v in ("eager", "compile", "jax")}
        if not any(get.values()) and not any(k.startswith(f"{w}/{kind}/") for k in skipped):
            continue
        any_row = True
        first = next((r for r in get.values() if r), None)
        unit = (first or {}).get("unit") or "samples"
        batch = f"{first['batch']:,} {first.get('batch_unit') or ''}".strip() if first and first.get("batch") else "-"
        cells = [cell(get[v], skipped.get(f"{w}/{kind}/{v}")) for v in ("eager", "compile", "jax")]
        ratios = [_n(ratio(get["jax"], get[v]), "{:.2f}x") for v in ("eager", "compile")]
        out.append(f"| {w} ({batch}; {unit}/s) | " + " | ".join(cells + ratios) + " |")
    if not any_row:
        return f"(no {kind}-batch runs in these results)"
    return "\n".join(out) + ("\n\nThroughput: over the steady steps, the median per-step rate, or the window's units over its time where "
                             "steps differ in size (each record's `method.throughput` says which; docs/metrics.md); "
                             "in brackets MFU (model FLOPs / the GPU's dense peak at the "
                             "run's precision); `*` not converged (95% CI wider than the target).")


def reference_table(data: dict[str, Any]) -> str:
    rs = rows(data)
    out = ["| model | batch | parameters | plain Flax loop | same, synced every step | tbd JAX | tbd / plain | goal (>= 1.0x) |",
           "|---|---|---|---|---|---|---|---|"]
    found = False
    for key, ref in rs.items():
        if ref["variant"] != "ref":
            continue
        found = True
        tbd = rs.get(key.rsplit("/", 1)[0] + "/jax")
        q = ratio(tbd, ref)
        mfu = ""
        if measured(tbd) and measured(ref) and tbd.get("mfu_pct"):
            mfu = f" (MFU {tbd['mfu_pct'] * ref['throughput'] / tbd['throughput']:.1f}%)"
        tbd_cell = cell(tbd, data["skipped"].get(key.rsplit("/", 1)[0] + "/jax"))
        ref_cell = f"{_fmt_throughput(ref['throughput'])} {ref['unit']}/s{mfu}" if measured(ref) else f"{ref.get('status')}: {ref.get('error')}"
        verdict = "-" if q is None else ("met" if q >= 1.0 else "not met")
        p_ref, p_tbd = ref.get("params"), (tbd or {}).get("params")
        params = _n(p_ref, "{:,}") if p_ref == p_tbd or p_tbd is None else f"{_n(p_ref, '{:,}')} (tbd: {_n(p_tbd, '{:,}')})"
        synced = ((data["points"][key].get("reference") or {}).get("synced_per_step_throughput"))
        synced_cell = f"{_fmt_throughput(synced)} ({synced / ref['throughput']:.3f}x)" if synced and measured(ref) else "-"
        out.append(f"| {ref['workload']} | {ref['batch']:,} | {params} | {ref_cell} | {synced_cell} | {tbd_cell} | {_n(q, '{:.3f}x')} | {verdict} |")
    if not found:
        return "(no plain Flax reference in these results)"
    return "\n".join(out) + ("\n\nBoth on the same GPU in the same call, one after the other; the plain loop's figure is the median of three "
                             "timed windows; 'synced every step' is one more window that waits for each step before dispatching the next "
                             "(what a host sync per step costs; tbd's JAX session did so in the runs of 2026-11-29; it now keeps one step in flight).")


def details_table(data: dict[str, Any]) -> str:
    out = ["| workload | batch | framework | throughput | MFU % | peak GiB | GPU util % (NVML) | compile s | first step s | compiles | status |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in rows(data).items():
        if r["variant"] == "ref":
            continue
        compiles = _n(r.get("compile_count"), "{:d}") + (f" (+{r['recompiles']} late)" if r.get("recompiles") else "")
        status = r.get("status") or "-"
        if r.get("ci_pct") is not None:
            status += f" (CI ±{r['ci_pct']:.2f}%)"
        if r.get("error"):
            status += f": {r['error'][:80]}"
        tp = f"{_fmt_throughput(r['throughput'])} {r['unit']}/s" if r.get("throughput") else "-"
        out.append(f"| {r['workload']} | {_n(r.get('batch'), '{:,}')} | {LABELS[r['variant']]} | {tp} | {_n(r.get('mfu_pct'), '{:.1f}')} | "
                   f"{_n(r.get('peak_gib'), '{:.1f}')} | {_n(r.get('gpu_util_nvml_pct'), '{:.0f}')} | {_n(r.get('compile_s'), '{:.1f}')} | "
                   f"{_n(r.get('first_step_s'), '{:.1f}')} | {compiles} | {status} |")
    if len(out) == 2:
        return "(no tbd runs in these results)"
    return "\n".join(out) + ("\n\ncompile s: JAX's tracing, lowering and XLA compilation (jax.monitoring); torch.compile's first step and "
                             "warm-up steps (Dynamo, AOTAutograd, Inductor, Triton; an upper bound); eager compiles nothing. "
                             "first step: step 0 as timed (compilation and autotuning included).")


def traces_table(data: dict[str, Any]) -> str:
    out = ["| workload | batch | framework | timed step ms | traced step ms | kernels / step | GEMM/conv/attn ms | element-wise/fusion ms | "
           "copies ms | GPU idle ms | tensor-core share % | top kernel (share) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    found = False
    for key in ordered(data):
        result = data["points"][key]
        t, r = result.get("trace"), result.get("row") or {}
        if not t:
            continue
        found = True
        if t.get("error"):
            out.append(f"| {r['workload']} | {_n(r.get('batch'), '{:,}')} | {LABELS[r['variant']]} | {_n(r.get('step_ms'), '{:.2f}')} | "
                       f"{t['error'][:80]} |" + " |" * 7)
            continue
        top = t["top_kernels"][0] if t.get("top_kernels") else None
        top_s = f"{top['name'][:48]} ({top['share_pct']:.0f}%)" if top else "-"
        out.append(f"| {r['workload']} | {_n(r.get('batch'), '{:,}')} | {LABELS[r['variant']]} | {_n(r.get('step_ms'), '{:.2f}')} | {t['step_ms']:.2f} | "
                   f"{t['kernels_per_step']:,.0f} | "
                   f"{t['gemm_conv_attention_ms']:.2f} | {t['elementwise_fusion_ms']:.2f} | {t['copies_ms']:.2f} | {t['idle_ms']:.2f} | "
                   f"{_n(t.get('tensor_core_share_pct'), '{:.0f}')} | {top_s.replace('|', '/')} |")
    if not found:
        return "(no traced runs in these results)"
    return "\n".join(out) + ("\n\ntimed step: the run's median step without the profiler; the other columns per step over the traced "
                             "steps (after the timed ones, under the profiler, which adds host time per launch): kernel time summed by kind "
                             "(tbd.analysis.kernels classes: element-wise/fusion also holds normalization, reductions and the optimizer), "
                             "GPU idle = traced window minus the union of kernel intervals.")


def explain(workload: str, kind: str, data: dict[str, Any]) -> list[str]:
    """One line per JAX / PyTorch ratio of a workload at a batch, from the traces."""
    points = data["points"]
    jax = points.get(f"{workload}/{kind}/jax") or {}
    lines = []
    for v in ("eager", "compile"):
        other = points.get(f"{workload}/{kind}/{v}") or {}
        q = ratio(jax.get("row"), other.get("row"))
        if q is None:
            continue
        head = f"- {workload} ({kind} batch {jax['row']['batch']:,}): JAX {q:.2f}x {LABELS[v]}"
        tj, tt = jax.get("trace"), other.get("trace")
        if not tj or not tt:
            lines.append(f"{head}; no trace of both runs at this batch (the bench's --profile {kind} traces them)")
            continue
        if tj.get("error") or tt.get("error"):
            lines.append(f"{head}; no kernel figures: {tj.get('error') or tt.get('error')}")
            continue
        faster, slower = ((tj, "JAX"), (tt, LABELS[v])) if q >= 1 else ((tt, LABELS[v]), (tj, "JAX"))
        (f, fname), (s, sname) = faster, slower
        gap = s["step_ms"] - f["step_ms"]
        if gap <= 0 and abs(q - 1) >= 0.03:
            # The profiler's host overhead differs between frameworks: its steps can order them
            # the other way round from the timed ones, and then they explain nothing.
            lines.append(f"{head}; the traced steps order them the other way ({sname} {s['step_ms']:.1f} vs {fname} "
                         f"{f['step_ms']:.1f} ms under the profiler; timed {jax['row']['step_ms']:.1f} ms JAX vs "
                         f"{other['row']['step_ms']:.1f} ms): no attribution from these traces")
            continue
        diffs = {name: s[field] - f[field] for field, name in TIME_KINDS}
        field, name = max(TIME_KINDS, key=lambda fn: s[fn[0]] - f[fn[0]])
        kernels = f"kernels/step {s['kernels_per_step']:,.0f} ({sname}) vs {f['kernels_per_step']:,.0f}"
        if abs(q - 1) < 0.03:
            lines.append(f"{head}: even (traced steps {tj['step_ms']:.1f} vs {tt['step_ms']:.1f} ms; GEMM/conv/attn "
                         f"{tj['gemm_conv_attention_ms']:.1f} vs {tt['gemm_conv_attention_ms']:.1f} ms; {kernels})")
            continue
        others = ", ".join(f"{n} {d:+.1f}" for n, d in diffs.items() if n != name and abs(d) >= 0.05 * max(abs(gap), 1e-9))
        lines.append(f"{head}: {sname} takes {gap:.1f} ms/step more in the trace ({s['step_ms']:.1f} vs {f['step_ms']:.1f}), "
                     f"mostly {name} ({s[field]:.1f} ms/step in {sname}, {f[field]:.1f} in {fname})"
                     f"{'; ' + others if others else ''}; {kernels}")
    return lines


def explanations(data: dict[str, Any]) -> str:
    lines = [line for kind in KINDS for w in workloads(data) for line in explain(w, kind, data)]
    if not lines:
        return "(no JAX / PyTorch pair in these results)"
    return "\n".join(lines) + ("\n\nFrom the traced steps: the slower framework's extra milliseconds per step split by kind "
                               "(idle, element-wise/fusion, GEMM/conv/attention, copies); the largest is named first.")


def render(data: dict[str, Any], sections=SECTIONS) -> str:
    parts = []
    for s in sections:
        if s == "environment":
            parts.append(environment(data))
        elif s == "throughput":
            parts += [throughput_table(data, k) for k in KINDS]
        elif s == "reference":
            parts.append(reference_table(data))
        elif s == "details":
            parts.append(details_table(data))
        elif s == "traces":
            parts.append(traces_table(data))
        elif s == "explanations":
            parts.append(explanations(data))
    return "\n\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--in", dest="inputs", action="append", required=True, help="frameworks_compare.json or its folder (repeatable)")
    ap.add_argument("--section", action="append", choices=SECTIONS, help="default: all")
    args = ap.parse_args()
    print(render(load(args.inputs), args.section or SECTIONS))


if __name__ == "__main__":
    main()
