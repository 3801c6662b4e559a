"""GPU bench of `tbd memory`: `PYTHONPATH=src python3 bench/memory_gpu.py --out $OUT` (`--smoke`: CPU, tiny).

Three checks, in one run (about 5 minutes on an H100):
1. agreement: for resnet50 and gpt, each category of tbd's breakdown against PyTorch's own
   memory profiler (torch.profiler with profile_memory/record_shapes/with_stack, then
   `prof._memory_profile()` and `MemoryProfileTimeline`) for the same step and batch;
2. max batch: the batch-size model's prediction for resnet50 against the real out-of-memory
   boundary, found by bisection with real training steps (the issue asks for within 5%);
3. the paper's finding redone: the share of feature maps in peak memory for every registered
   workload at its paper batch size and at half and twice it (time-boxed; what does not fit in
   the budget is listed as skipped).
Everything goes to OUT/memory_gpu.json (plus a PNG per profiled workload); a summary table is
printed last. Runs in this process; an OOM is caught and the allocator emptied before going on.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
import traceback
from pathlib import Path

import torch

from tbd import registry
from tbd.config import RunConfig
from tbd.memory import profiler, render
from tbd.results.memory_profile import fmt_bytes

# tbd category -> categories of torch.profiler._memory_profiler (None: what it could not tag).
THEIRS = {
    "weights": ["PARAMETER"], "gradients": ["GRADIENT"], "optimizer_state": ["OPTIMIZER_STATE"], "input_batch": ["INPUT"],
    "feature_maps": ["ACTIVATION"], "workspace": ["TEMPORARY", "AUTOGRAD_DETAIL"], "unattributed": [None],
}


class _Skipped(Exception):
    pass


def config_for(workload: str, device: str, flavor: str, batch: int | None, precision: str) -> RunConfig:
    return RunConfig(workload=workload, framework="torch", flavor=flavor, device=device, batch_size=batch,
                     precision=precision, data_pool=1, isolate=False).validated()


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def torch_profiler_breakdown(config: RunConfig) -> dict:
    """PyTorch's memory profiler on one step after one warm-up step: bytes per category at the
    step's peak and the largest each category reached."""
    from torch.profiler import ProfilerActivity, _memory_profiler as mp

    session = profiler_session = None
    try:
        from tbd.memory.torch_profile import open_registered

        session = open_registered(config)
        session.step()
        session.forget_loss()
        free(config.device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if config.device == "cuda" else [])
        with torch.profiler.profile(activities=activities, profile_memory=True, record_shapes=True, with_stack=True) as prof:
            session.step()
        if config.device == "cuda":
            torch.cuda.synchronize()
        timeline = mp.MemoryProfileTimeline(prof._memory_profile())
        device = "cuda:0" if config.device == "cuda" else "cpu"
        _, sizes = timeline._coalesce_timeline(device)
        names = {index + 1: (cat.name if cat is not None else None) for cat, index in mp._CATEGORY_TO_INDEX.items()}
        totals = [sum(row) for row in sizes]
        at = max(range(len(sizes)), key=totals.__getitem__)
        peak = {names[i]: int(sizes[at][i]) for i in names}
        largest = {names[i]: int(max(row[i] for row in sizes)) for i in names}
        profiler_session = {"peak_bytes": int(totals[at]), "at_peak": peak, "largest": largest}
    finally:
        if session is not None:
            session.close()
        del session
        free(config.device)
    return profiler_session


def agreement(ours: dict, theirs: dict) -> dict:
    """Per category: tbd's bytes and PyTorch's, at each tool's own peak and the largest over the
    step, with the ratio ours/theirs (1.0 is full agreement)."""
    out = {}
    tl = ours["timeline"]["categories"]
    for cat, keys in THEIRS.items():
        mine_peak = ours["peak"]["categories"][cat]
        mine_max = max(tl[cat]) if tl[cat] else mine_peak
        their_peak = sum(theirs["at_peak"].get(k, 0) for k in keys)
        their_max = sum(theirs["largest"].get(k, 0) for k in keys)
        out[cat] = {"tbd_at_peak": mine_peak, "torch_at_peak": their_peak, "tbd_largest": mine_max, "torch_largest": their_max,
                    "ratio_largest": (mine_max / their_max) if their_max else None}
    out["total"] = {"tbd_at_peak": ours["peak"]["allocated_bytes"], "torch_at_peak": theirs["peak_bytes"],
                    "ratio": ours["peak"]["allocated_bytes"] / theirs["peak_bytes"] if theirs["peak_bytes"] else None}
    return out


def fits(config: RunConfig, steps: int = 2) -> bool:
    """Does a real training run at this batch size survive `steps` steps?"""
    from tbd.memory.torch_profile import open_registered

    session = None
    try:
        session = open_registered(config)
        for _ in range(steps):
            session.step()
        if config.device == "cuda":
            torch.cuda.synchronize()
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        if session is not None:
            session.forget_loss()
            session.close()
        del session
        free(config.device)


def oom_boundary(config: RunConfig, start: int, limit_s: float, fits_fn=fits) -> dict:
    """Largest batch that runs: grow (or shrink) by 25% from `start` until the outcome flips,
    then bisect to within 1%."""
    t0, trials = time.time(), []

    def ok(b: int) -> bool:
        result = fits_fn(dataclasses.replace(config, batch_size=b))
        trials.append((b, result))
        return result

    lo = hi = None
    if ok(start):
        lo, b = start, int(start * 1.25) + 1
        while hi is None and time.time() - t0 < limit_s:
            lo, hi, b = (b, None, int(b * 1.25) + 1) if ok(b) else (lo, b, b)
    else:
        hi, b = start, int(start * 0.8)
        while lo is None and b >= 1 and time.time() - t0 < limit_s:
            lo, hi, b = (b, hi, b) if ok(b) else (None, b, int(b * 0.8))
    while lo is not None and hi is not None and hi - lo > max(1, lo // 100) and time.time() - t0 < limit_s:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    complete = lo is not None and hi is not None and hi - lo <= max(1, lo // 100)
    return {"largest_fitting": lo, "smallest_failing": hi, "trials": trials, "seconds": time.time() - t0, "complete": complete}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for memory_gpu.json and the plots")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny flavors, small batches: checks the script runs")
    ap.add_argument("--budget-s", type=float, default=330.0, help="wall-time budget for everything (default 330)")
    ap.add_argument("--parts", default="agreement,max-batch,feature-maps", help="which checks to run (comma list)")
    ap.add_argument("--workloads", default="", help="feature-map share for these workloads only (comma list; default all)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    smoke = args.smoke or not torch.cuda.is_available()
    device, flavor, precision = ("cpu", "tiny", "fp32") if smoke else ("cuda", "paper", "fp32")
    results: dict = {"device": torch.cuda.get_device_name(0) if not smoke else "cpu (smoke)", "torch": torch.__version__,
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "smoke": smoke, "precision": precision,
                     "agreement": {}, "max_batch": {}, "feature_map_share": {}, "skipped": []}
    if not smoke:
        results["gpu_total_bytes"] = torch.cuda.get_device_properties(0).total_memory
    names = registry.workload_names()

    def save() -> None:  # after every part, so a bench cut short keeps what it measured
        results["seconds"] = time.time() - t_start
        (out / "memory_gpu.json").write_text(json.dumps(results, indent=1, default=str))

    # 1. agreement with PyTorch's memory profiler
    parts = set(args.parts.split(","))
    for w in ("resnet50", "gpt") if "agreement" in parts else ():
        if w not in names or not registry.has_implementation(w, "torch"):
            results["skipped"].append(f"agreement {w}: not registered here")
            continue
        try:
            cfg = config_for(w, device, flavor, 2 if smoke else None, precision)
            ours = profiler.profile(cfg)
            render.save_plot([ours], out / f"{w}_b{cfg.batch_size}.png")
            theirs = torch_profiler_breakdown(cfg) if not (smoke and w == "resnet50") else None  # slow on a CPU
            if theirs is None:
                results["skipped"].append(f"agreement {w}: torch profiler skipped in the smoke run")
                continue
            results["agreement"][w] = {"batch_size": cfg.batch_size, "tbd": ours, "torch_profiler": theirs, "compare": agreement(ours, theirs)}
        except Exception as exc:
            results["agreement"][w] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        free(device)

    save()

    # 2. max batch: prediction against the real boundary (resnet50)
    try:
        if "max-batch" not in parts:
            raise _Skipped
        cfg = config_for("resnet50", device, flavor, None, "tf32" if not smoke else "fp32")
        fit_batches = [2, 4, 8] if smoke else [32, 64, 128]
        model, profs = profiler.fit_batch_model(cfg, fit_batches)
        memory = 2 * 2**30 if smoke else None  # the CPU has no device memory: size a 2 GiB device
        limit, note = profiler.budget(profs[0], memory)
        predicted = model.max_batch(limit)
        entry = {"fit": model.to_dict(), "budget_bytes": limit, "budget_note": note, "predicted": predicted}
        if smoke:  # no out-of-memory error to find on the CPU: check the search on a pretend device
            fake = oom_boundary(cfg, 30, 10, fits_fn=lambda c: c.batch_size <= 37)
            assert fake["largest_fitting"] == 37 and fake["smallest_failing"] == 38, fake
            entry["boundary"] = None
        else:
            boundary = oom_boundary(cfg, max(128, int(predicted * 0.9)), limit_s=150)
            entry["boundary"] = boundary
            if boundary["largest_fitting"]:
                entry["error_pct"] = 100.0 * (predicted - boundary["largest_fitting"]) / boundary["largest_fitting"]
                entry["within_5pct"] = abs(entry["error_pct"]) <= 5.0 and boundary["complete"]
        results["max_batch"]["resnet50"] = entry
    except _Skipped:
        pass
    except Exception as exc:
        results["max_batch"]["resnet50"] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    free(device)

    save()

    # 3. feature-map share: every workload at its paper batch first, then at half and twice it
    torch_names = [w for w in names if registry.has_implementation(w, "torch")] if "feature-maps" in parts else []
    if args.workloads:
        torch_names = [w for w in torch_names if w in args.workloads.split(",")]
    results["skipped"] += [f"feature maps {w}: no torch implementation" for w in names if not registry.has_implementation(w, "torch")]
    if smoke and not args.workloads:  # the CPU smoke run only checks the code path
        torch_names = [w for w in torch_names if w in ("resnet50", "gpt")]
    paper = {}
    for w in torch_names:
        try:
            paper[w] = registry.get_spec(w).flavor(flavor).batch_size
        except Exception as exc:  # a workload without this flavor
            results["skipped"].append(f"feature maps {w}: {exc}")
    torch_names = [w for w in torch_names if w in paper]
    passes = [{w: paper[w] for w in torch_names}, {w: max(1, paper[w] // 2) for w in torch_names}, {w: paper[w] * 2 for w in torch_names}]
    for batches in passes[:1] if smoke else passes:
        for w, b in batches.items():
            rows = results["feature_map_share"].setdefault(w, [])
            if time.time() - t_start > args.budget_s:
                results["skipped"].append(f"feature maps {w} b={b}: time budget used up")
                continue
            try:
                prof = profiler.profile(config_for(w, device, flavor, b, precision))
                fm_max = max(prof["timeline"]["categories"]["feature_maps"] or [0])
                rows.append({"batch_size": b, "status": prof["status"], "peak_allocated_bytes": prof["peak"]["allocated_bytes"],
                             "peak_phase": prof["peak"]["phase"], "peak_op": prof["peak"].get("op"),
                             "feature_maps_at_peak_pct": prof["peak"]["shares_pct"]["feature_maps"],
                             "feature_maps_largest_bytes": fm_max, "feature_maps_largest_pct_of_peak": 100.0 * fm_max / max(1, prof["peak"]["allocated_bytes"]),
                             "categories": prof["peak"]["categories"]})
            except Exception as exc:
                rows.append({"batch_size": b, "status": "error", "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            free(device)
            save()
    for rows in results["feature_map_share"].values():
        rows.sort(key=lambda r: r["batch_size"])

    save()
    print_summary(results)
    return 0


def print_summary(results: dict) -> None:
    print(f"\n== tbd memory bench on {results['device']} (torch {results['torch']}, {results['date']}, {results['seconds']:.0f} s)")
    for w, a in results["agreement"].items():
        if "error" in a:
            print(f"agreement {w}: ERROR {a['error']}")
            continue
        print(f"agreement with torch.profiler memory profile, {w} batch {a['batch_size']} (largest over the step, tbd / torch):")
        for cat, c in a["compare"].items():
            if cat == "total":
                print(f"  {'peak total':<16} {fmt_bytes(c['tbd_at_peak']):>11} / {fmt_bytes(c['torch_at_peak']):>11}  ratio {c['ratio']:.3f}"
                      f"  (allocator max {fmt_bytes(a['tbd']['allocator'].get('peak_allocated_bytes'))})")
            else:
                ratio = f"{c['ratio_largest']:.3f}" if c["ratio_largest"] is not None else "-"
                print(f"  {cat:<16} {fmt_bytes(c['tbd_largest']):>11} / {fmt_bytes(c['torch_largest']):>11}  ratio {ratio}")
    for w, m in results["max_batch"].items():
        if "error" in m:
            print(f"max batch {w}: ERROR {m['error']}")
        elif m.get("boundary") and "error_pct" in m:
            b = m["boundary"]
            print(f"max batch {w}: predicted {m['predicted']}, real boundary {b['largest_fitting']} (fails at {b['smallest_failing']}), "
                  f"error {m['error_pct']:+.1f}% -> {'PASS' if m['within_5pct'] else 'FAIL'} (5%)")
        else:
            print(f"max batch {w}: predicted {m['predicted']} for {fmt_bytes(m['budget_bytes'])} (smoke: no boundary search)")
    print("feature maps, largest over the step as % of the allocated peak (peak phase):")
    for w, rows in results["feature_map_share"].items():
        cells = [f"b={r['batch_size']}: {r['feature_maps_largest_pct_of_peak']:.0f}% ({r['peak_phase']})" if r["status"] == "ok"
                 else f"b={r['batch_size']}: {r['status']}" for r in rows]
        print(f"  {w:<14} " + "   ".join(cells))
        for r in rows:  # say why, so a failure on the GPU can be fixed from the log alone
            if r["status"] == "error":
                print(f"    b={r['batch_size']} error: {r.get('error', '')[:200]}")
    for s in results["skipped"]:
        print(f"skipped: {s}")


if __name__ == "__main__":
    sys.exit(main())
