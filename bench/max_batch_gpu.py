"""The largest batch of every suite workload on this GPU, predicted and confirmed (issue 15):

    PYTHONPATH=src python3 bench/max_batch_gpu.py --out $OUT --precisions bf16          # on a GPU
    PYTHONPATH=src python3 bench/max_batch_gpu.py --out /tmp/mb --smoke                 # CPU, tiny, no confirming

For each workload x precision, one `tbd memory W --device cuda --flavor paper --precision P
--max-batch` in a child process, exactly as a user runs it: the batch-size model fitted on b/4,
b/2 and b of the paper batch, its prediction, then the confirming search with real training
steps (each probe a child process of its own). Each row keeps the model's numbers, so the
prediction of the plain allocated-peak line (the model before the largest-tensor headroom) is
recomputed beside the revised one. Results go to OUT/max_batch_gpu.json (rewritten after every
row, so a call cut short keeps what it finished) and a table is printed last. A row stopped at
--budget keeps the bracket its probes had found (from the probe lines of its log), marked as a
search stopped before it narrowed to 2%, and the probe it was running, if any, with how long that
probe had run. A rerun into the same OUT resumes: a row measured before under the same settings
(fit batches, given answers, allocator) is kept and said to be; one that failed is measured again.

The `tbd memory` process keeps its CUDA context (a few hundred MiB) while its probes run, so a
confirmed figure is what fits beside it: at most a few tenths of a percent below what a lone
training process could use, on the safe side.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tbd.memory import max_batch, render

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/, also when loaded by path (the tests)
import children  # noqa: E402

# a3c is left out: its batch counts actor processes on the CPU, and the learner's GPU memory
# does not grow with them.
MIN_ROW_S = 30.0  # a row started gets at least this long, however little of --budget is left
SUITE = ("resnet50", "inception_v3", "gpt", "transformer", "seq2seq", "wgan", "deepspeech2", "faster_rcnn")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--workloads", default=",".join(SUITE))
    ap.add_argument("--precisions", default="bf16,fp32")
    ap.add_argument("--confirm-time", type=float, default=60.0, help="seconds each confirming search may take")
    ap.add_argument("--budget", type=float, default=540.0, help="the whole bench's seconds: a row still running then is stopped (its probes too), its row kept")
    ap.add_argument("--fit", action="append", default=[], metavar="W=B1,B2,B3",
                    help="fit batches for one workload (default: tbd's, b/4, b/2, b of the paper batch)")
    ap.add_argument("--known", action="append", default=[], metavar="W/P=FIT[:OOM]",
                    help="an earlier search's answers for one row, e.g. wgan/fp32=1627 or resnet50/bf16=3277:3408: "
                         "the row's search goes on from them (tbd memory's --known-fit and --known-oom)")
    ap.add_argument("--confirm-only", action="store_true",
                    help="rows given --known answers skip the fit and only go on with the search (tbd memory's --confirm-only): "
                         "where the fit takes as long as a probe (wgan and faster_rcnn fp32)")
    ap.add_argument("--expandable-segments", action="store_true",
                    help="confirm under the framework's allocator setting against fragmentation (tbd memory's --expandable-segments)")
    ap.add_argument("--home", help="tbd store of the rows' records and probes (default: a new folder under /tmp, outside --out, "
                                   "so that --out holds only the results and a log per row, and two benches at once keep apart)")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny flavor, no confirming: checks the script itself")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "max_batch_gpu.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    # A rerun into the same --out resumes: rows measured before under the same settings are kept,
    # and said to be; a row asked for under other settings (allocator, given answers) is measured.
    # Rows that failed or were skipped for time are measured again.
    done = {(r["workload"], r["precision"], json.dumps(r.get("settings"), sort_keys=True)) for r in rows if not ("error" in r or "skipped" in r)}
    env = {**os.environ, "TBD_HOME": args.home or tempfile.mkdtemp(prefix="tbd-max-batch-")}
    began = time.monotonic()
    for precision in args.precisions.split(","):
        for workload in args.workloads.split(","):
            if (workload, precision, json.dumps(row_settings(workload, precision, args), sort_keys=True)) in done:
                print(f"{workload} {precision}: kept from {path} (measured before under the same settings; a new --out measures it again)", flush=True)
                continue
            if time.monotonic() - began > args.budget - MIN_ROW_S:
                rows.append({"workload": workload, "precision": precision, "skipped": f"bench budget of {args.budget:g} s spent"})
                continue
            rows.append(one_row(workload, precision, args, env, deadline=began + args.budget))
            print(line(rows[-1]), flush=True)
            path.write_text(json.dumps({"rows": rows, "device": device_name()}, indent=1))
    path.write_text(json.dumps({"rows": rows, "device": device_name()}, indent=1))
    print("\n| workload | precision | predicted (line) | predicted (with headroom) | confirmed | first failing | error of the prediction |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(line(r, markdown=True))


def row_settings(workload: str, precision: str, args) -> dict:
    """What a row was measured under, beside its workload and precision: a rerun keeps a row only
    where these match."""
    fits = dict(f.split("=", 1) for f in args.fit)
    known = known_answers(args.known).get((workload, precision), {})
    return {"fit_batches": fits.get(workload), "known": known or None,
            "confirm_only": bool(getattr(args, "confirm_only", False) and known),
            "expandable_segments": bool(getattr(args, "expandable_segments", False)), "smoke": bool(args.smoke)}


def one_row(workload: str, precision: str, args, env: dict, deadline: float) -> dict:
    argv = [sys.executable, "-m", "tbd.cli", "memory", workload, "--max-batch", "--layers", "1", "--precision", precision]
    fits = dict(f.split("=", 1) for f in args.fit)
    argv += ["--fit-batches", fits[workload]] if workload in fits else []
    known = known_answers(args.known).get((workload, precision), {})
    argv += [arg for key in ("fit", "oom") if key in known for arg in (f"--known-{key}", str(known[key]))]
    argv += ["--confirm-only"] if getattr(args, "confirm_only", False) and known else []
    argv += ["--expandable-segments"] if getattr(args, "expandable_segments", False) else []
    argv += ["--device", "cpu", "--flavor", "tiny", "--memory", "2GiB", "--no-confirm"] if args.smoke else \
            ["--device", "cuda", "--flavor", "paper", "--confirm-time", f"{args.confirm_time:g}"]
    # The child's output goes to a log beside the results, so a row cut short still shows how far
    # it got; the child leads a process group of its own, so stopping it also stops its probes
    # (left running, they would hold GPU memory under the next row's search).
    log = Path(args.out) / "logs" / f"{workload}_{precision}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    timeout = max(MIN_ROW_S, min(args.confirm_time + 600, deadline - time.monotonic()))
    t0 = time.monotonic()
    with open(log, "w") as out:
        rc = children.wait_or_stop(children.start(argv, env=env, stdout=out, stderr=subprocess.STDOUT, text=True), timeout)
    row = {"workload": workload, "precision": precision, "settings": row_settings(workload, precision, args),
           "seconds": round(time.monotonic() - t0, 1), "rc": rc, "log": str(log)}
    text = log.read_text(errors="replace")
    cut = f"stopped after {timeout:.0f} s (the bench's --budget, or --confirm-time + 600 s)"
    # The probe the stop cut short has no verdict, but how long it ran without failing says something.
    if rc is None and (running := in_flight(text)):
        row["in_flight"] = running
        cut += f" while batch {running['batch_size']} had run {running['seconds']:.0f} s without a verdict"
    if rc is None and (bracket := probed_bracket(text, known)):
        probes = len(bracket["probes"])
        row.update(bracket, stopped=f"{cut} before the search narrowed to 2% (the bracket so far, {probes} probe{'s' * (probes != 1)})")
        return with_error_pct(row)
    if rc != 0:
        last = (text.strip().splitlines() or ["(no output)"])[-1][:300]
        row["error"] = f"{cut}; its last line: {last}" if rc is None else last
        return row
    record = newest_memory_record(Path(env["TBD_HOME"]))
    model = record["memory_profile"].get("batch_model") or {}
    if "error" in model:
        row["error"] = model["error"]
        return row
    if "fit_skipped" in model:  # --confirm-only: the search's answers, no prediction of this call's
        confirmed = model["confirmed"]
        row.update(predicted=None, fit_skipped=model["fit_skipped"], confirmed=confirmed.get("largest_fitting"),
                   first_failing=confirmed.get("smallest_failing"), probes=confirmed.get("probes"),
                   stopped=confirmed.get("stopped") or confirmed.get("skipped"), allocator=confirmed.get("allocator_setting"),
                   fragmentation=confirmed.get("fragmentation"))
        return row
    budget = model["budget_bytes"]
    row.update(fit_points=model["points"], fixed_bytes=model["fixed_bytes"], per_sample_bytes=model["per_sample_bytes"],
               headroom_fixed_bytes=model.get("headroom_fixed_bytes", 0), headroom_per_sample_bytes=model.get("headroom_per_sample_bytes", 0),
               measured=model.get("measured"), budget_bytes=budget, predicted=model["max_batch"],
               predicted_line=math.floor((budget - model["fixed_bytes"]) / model["per_sample_bytes"]))
    confirmed = model.get("confirmed") or {}
    row.update(confirmed=confirmed.get("largest_fitting"), first_failing=confirmed.get("smallest_failing"),
               probes=confirmed.get("probes"), stopped=confirmed.get("stopped") or confirmed.get("skipped"),
               allocator=confirmed.get("allocator_setting"), fragmentation=confirmed.get("fragmentation"))
    return with_error_pct(row)


def with_error_pct(row: dict) -> dict:
    """The predictions' errors against the confirmed batch: tbd's, and the plain line's where its
    numbers are known (a row stopped at the budget has its log only, not the stored model)."""
    if row["confirmed"] and row["predicted"] is not None:
        row["error_pct"] = round((row["predicted"] - row["confirmed"]) / row["confirmed"] * 100, 2)
    if row["confirmed"] and row.get("predicted_line") is not None:
        row["error_line_pct"] = round((row["predicted_line"] - row["confirmed"]) / row["confirmed"] * 100, 2)
    return row


def known_answers(specs: list[str]) -> dict[tuple[str, str], dict[str, int]]:
    """--known W/P=FIT[:OOM] options as {(workload, precision): {'fit': N, 'oom': M}}."""
    answers = {}
    for spec in specs:
        row, _, numbers = spec.partition("=")
        workload, _, precision = row.partition("/")
        fit, _, oom = numbers.partition(":")
        if not (workload and precision and fit.isdigit() and (not oom or oom.isdigit())):
            raise SystemExit(f"--known {spec}: write it as W/P=FIT or W/P=FIT:OOM, e.g. wgan/fp32=1627")
        answers[(workload, precision)] = {"fit": int(fit), **({"oom": int(oom)} if oom else {})}
    return answers


def probed_bracket(log_text: str, known: dict[str, int] | None = None) -> dict:
    """The prediction and the bracket so far of a `tbd memory --max-batch` stopped mid-search,
    from its log's probe lines and the answers it was given (`known`: 'fit', 'oom'); empty where
    no probe had ended."""
    probes = render.read_probe_lines(log_text)
    if not probes:
        return {}
    known = known or {}
    predicted = re.search(r"^predicted largest batch that fits: (\d+)", log_text, re.MULTILINE)
    fitting = [p["batch_size"] for p in probes if p["outcome"] == max_batch.FITS] + ([known["fit"]] if "fit" in known else [])
    failing = [p["batch_size"] for p in probes if p["outcome"] == max_batch.OOM] + ([known["oom"]] if "oom" in known else [])
    return {"predicted": int(predicted.group(1)) if predicted else None, "probes": probes,
            "confirmed": max(fitting, default=None), "first_failing": min(failing, default=None)}


def in_flight(log_text: str, now: datetime.datetime | None = None) -> dict | None:
    """The probe a stopped `tbd memory --max-batch` was running (batch_size, seconds it had run)."""
    running = render.read_probe_in_flight(log_text)
    if running is None:
        return None
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return {"batch_size": running["batch_size"], "seconds": round((now - running["started"]).total_seconds(), 1)}


def newest_memory_record(home: Path) -> dict:
    folder = home / "memory"
    newest = max(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
    profile = json.loads(newest.read_text())
    return {"memory_profile": profile}


def device_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "no GPU"


def line(r: dict, markdown: bool = False) -> str:
    if "skipped" in r or "error" in r:
        text = r.get("skipped") or r.get("error")
        return f"| {r['workload']} | {r['precision']} | {text} | | | | |" if markdown else f"{r['workload']:12s} {r['precision']:5s} {text}"
    shown = [f"{r['error_pct']:+.1f}%" + (f" (line {r['error_line_pct']:+.1f}%)" if r.get("error_line_pct") is not None else "")] \
        if r.get("error_pct") is not None else []
    # Why the search ended: where there is no error figure, and always for a row stopped at the
    # budget (its figures are a bracket wider than 2%).
    if r.get("stopped") and (not shown or r.get("rc") is None):
        shown.append(r["stopped"])
    err = "; ".join(shown)
    cells = [r["workload"], r["precision"], r.get("predicted_line"), r["predicted"], r.get("confirmed"), r.get("first_failing"), err]
    if markdown:
        return "| " + " | ".join("" if c is None else str(c) for c in cells) + " |"
    return f"{r['workload']:12s} {r['precision']:5s} line {r.get('predicted_line')} headroom {r['predicted']} confirmed {r.get('confirmed')} " \
           f"failing {r.get('first_failing')} {err} ({r['seconds']} s)"


if __name__ == "__main__":
    main()
