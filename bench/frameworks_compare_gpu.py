"""The paper's framework comparison on today's GPU: PyTorch eager, torch.compile and JAX side by
side for every workload, at the paper's batch and at a large one, through tbd's own runs, with
plain Flax loops as the reference for tbd's JAX numbers and a kernel trace of each run.

    PYTHONPATH=src python3 bench/frameworks_compare_gpu.py --out OUT --plan        # the points and their estimated time
    PYTHONPATH=src python3 bench/frameworks_compare_gpu.py --out OUT --deadline 500 # what fits in 500 s; run again to go on
    PYTHONPATH=src python3 bench/frameworks_compare_gpu.py --out OUT --workloads gpt,resnet50 --batches paper --frameworks jax,ref
    PYTHONPATH=src python3 bench/frameworks_compare_gpu.py --out OUT --quick        # tiny flavors on the CPU (checks the script)

Per workload (`--workloads`, default all, in the order below), batch (`--batches paper,large`)
and framework (`--frameworks eager,compile,jax,ref`): one `tbd run` (a child process, as the CLI
launches it; precision bf16, NHWC/channels_last for convolutions) that reports throughput, MFU,
peak device memory, GPU utilization (NVML), compile count and time, and whether the throughput
converged (the record's status: 'ok' = 95% CI within the target, 'unconverged' = a budget ran
out first). At the `--profile` batch (default: paper) the run also traces `--profile-steps`
steady steps after the timed ones (tbd run --profile), and the bench keeps a digest of the
trace: kernels per step and GPU time per step by kind (GEMM/conv/attention, element-wise and
fusions, copies, idle), from which bench/frameworks_table.py writes one line per ratio.
`ref` is bench/flax_reference.py's plain Flax loop (gpt at the paper batch, resnet50 at its large
batch of 256), run on the same GPU right after tbd's JAX run of the same workload and batch.

Results: OUT/frameworks_compare.json, rewritten after each run, so a call killed at its time
limit keeps what finished. A second call with the same --out (or --resume FILE, e.g. the JSON a
first call brought back) skips what is there and runs the rest; `--deadline S` starts a job (one
workload at one batch: its frameworks one after the other on one GPU) only when its estimated
time fits. Records and traces go to the tbd store in --home (default /tmp/tbd-frameworks-home),
not into OUT. `--gpus N` runs N jobs at once, one per GPU of the host (CUDA_VISIBLE_DEVICES).
Tables: bench/frameworks_table.py --in OUT; figure: bench/frameworks_figure.py --in OUT --out PNG.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/, also when loaded by path (the tests)
import children  # noqa: E402

BENCH = Path(__file__).resolve().parent
SRC = BENCH.parent / "src"
RESULT_FILE = "frameworks_compare.json"

# (name on the command line, label in the tables, tbd framework, torch.compile)
VARIANTS = (("eager", "torch eager", "torch", False), ("compile", "torch.compile", "torch", True), ("jax", "jax", "jax", False))
REFERENCE = ("ref", "flax reference")
KIND_ORDER = ("paper", "large")
# Workloads in the order they run (the goals' first: gpt's MFU, resnet50 against torch.compile).
WORKLOADS = ("gpt", "resnet50", "inception_v3", "transformer", "seq2seq", "wgan", "deepspeech2", "faster_rcnn", "a3c")
# The large batch: a modern one, 4-8x the paper's, that fits an H200 in every framework (the
# paper-batch runs of 2026-11-29 peaked at 0.7-16 GB). resnet50's is the reference's 256.
# a3c's batch is its actor processes, bounded by the CPU cores: no large point.
LARGE_BATCH = {"resnet50": 256, "inception_v3": 256, "gpt": 64, "transformer": 32768, "seq2seq": 1024, "wgan": 256,
               "deepspeech2": 32, "faster_rcnn": 8, "a3c": None}
# Where the plain Flax loop runs: (workload, batch kind) -> the reference model.
REFERENCES = {("gpt", "paper"): "gpt", ("resnet50", "large"): "resnet50"}
# Jobs (a workload at a batch) run in this order: the goals' first (gpt 124M's MFU and the
# references, resnet50 at 256 against torch.compile), then every paper batch, then the large ones.
FIRST_JOBS = (("gpt", "paper"), ("resnet50", "large"), ("resnet50", "paper"))
# Time budget of the steady window (s) and the CI target (%): long enough for the noisy
# launch-bound runs to converge; faster_rcnn's image sizes vary batch to batch (as its own bench).
MAX_TIME_S = {"deepspeech2": 30.0, "wgan": 30.0, "faster_rcnn": 30.0}
DEFAULT_MAX_TIME_S = 20.0
# Runs tbd refuses, with its reason (said before the run instead of failing in it).
REFUSED = {("a3c", "compile"): "a3c's actors run eager on the CPU: tbd refuses --compile for it"}
TARGET_CI_PCT = {"faster_rcnn": 3.0}

# Estimates for the plan and the deadline, from the H200 runs of 2026-11-29 where there were
# some, guesses elsewhere: (first step incl. compilation, s; step at the paper batch, ms).
FIRST_STEP_S = {
    ("gpt", "eager"): (3, 42), ("gpt", "compile"): (25, 32), ("gpt", "jax"): (18, 34),
    ("resnet50", "eager"): (6, 22), ("resnet50", "compile"): (35, 21), ("resnet50", "jax"): (12, 11),
    ("inception_v3", "eager"): (17, 43), ("inception_v3", "compile"): (105, 49), ("inception_v3", "jax"): (26, 18),
    ("transformer", "eager"): (5, 34), ("transformer", "compile"): (46, 22), ("transformer", "jax"): (67, 18),
    ("seq2seq", "eager"): (3, 61), ("seq2seq", "compile"): (25, 66), ("seq2seq", "jax"): (25, 8),
    ("wgan", "eager"): (5, 290), ("wgan", "compile"): (40, 280), ("wgan", "jax"): (60, 200),
    ("deepspeech2", "eager"): (8, 380), ("deepspeech2", "compile"): (60, 380), ("deepspeech2", "jax"): (70, 300),
    ("faster_rcnn", "eager"): (15, 70), ("faster_rcnn", "compile"): (150, 70), ("faster_rcnn", "jax"): (120, 70),
    ("a3c", "eager"): (5, 60), ("a3c", "compile"): (30, 60), ("a3c", "jax"): (20, 60),
}
STARTUP_S = {"torch": 8.0, "jax": 7.0, "ref": 6.0}  # child process, imports, model and data on the device
PROFILE_S = 6.0  # profiler start/stop, trace export and parsing


@dataclass
class Point:
    key: str  # workload/kind/variant: the point's name in the results
    workload: str
    kind: str  # paper | large
    variant: str  # eager | compile | jax | ref
    label: str
    config: dict[str, Any] | None = None  # tbd's RunConfig fields
    reference: dict[str, Any] | None = None  # flax_reference.run_reference's arguments
    estimate_s: float = 0.0


@dataclass
class Job:
    """One workload at one batch: its points run one after another on one GPU."""

    workload: str
    kind: str
    points: list[Point] = field(default_factory=list)


# -- the plan ---------------------------------------------------------------------------------------


def plan(args, registry) -> tuple[list[Job], dict[str, str]]:
    """(jobs to run, {point key: why it is skipped}) for the selected workloads, batches and frameworks."""
    device, flavor = ("cpu", "tiny") if args.quick else ("cuda", "paper")
    kinds = [k for k in args.batches.split(",") if k]
    wanted = [v for v in args.frameworks.split(",") if v]
    for k in kinds:
        if k not in ("paper", "large"):
            raise SystemExit(f"unknown batch kind {k!r}; use --batches paper,large")
    for v in wanted:
        if v not in [n for n, *_ in VARIANTS] + [REFERENCE[0]]:
            raise SystemExit(f"unknown framework {v!r}; use --frameworks eager,compile,jax,ref")
    names = [w for w in (args.workloads.split(",") if args.workloads else WORKLOADS) if w]
    unknown = [w for w in names if w not in registry.workload_names()]
    if unknown:
        raise SystemExit(f"unknown workload {unknown[0]!r}; known: {', '.join(registry.workload_names())}")
    large = dict(LARGE_BATCH, **_overrides(args.large_batch))
    jobs, skipped = [], {}
    for name in names:
        spec = registry.get_spec(name)
        base = spec.flavor(flavor).batch_size
        precision = _precision(spec, args.precision, device)
        for kind in kinds:
            if kind == "paper":
                batch = base
            elif args.quick:
                batch = base * 2
            else:
                batch = large.get(name)
            job = Job(name, kind)
            for variant, label, framework, compiled in VARIANTS:
                key = f"{name}/{kind}/{variant}"
                if variant not in wanted:
                    continue
                why = REFUSED.get((name, variant)) or _why_not(name, framework, batch, registry)
                if why:
                    skipped[key] = why
                    continue
                profile = args.profile in (kind, "both")
                config = dict(workload=name, framework=framework, flavor=flavor, device=device, precision=precision,
                              compile=compiled, batch_size=batch, seed=0,
                              channels_last=bool(spec.convolutional and device == "cuda" and registry.framework(framework).capabilities.channels_last),
                              max_time_s=args.max_time or MAX_TIME_S.get(name, DEFAULT_MAX_TIME_S), max_steps=args.max_steps,
                              target_ci_pct=TARGET_CI_PCT.get(name, 1.0), profile=profile,
                              profile_steps=args.profile_steps if profile else None, data_pool=args.data_pool)
                if args.quick:
                    config.update(max_time_s=2.0, max_steps=8, min_timed_steps=3, min_window_s=0.0, target_ci_pct=50.0)
                point = Point(key, name, kind, variant, label, config=config)
                job.points.append(point)
                if variant == "jax" and REFERENCE[0] in wanted and (name, kind) in REFERENCES:
                    hp = spec.flavor(flavor).hparams
                    job.points.append(Point(f"{name}/{kind}/{REFERENCE[0]}", name, kind, REFERENCE[0], REFERENCE[1], reference=dict(
                        model=REFERENCES[(name, kind)], batch=batch, device=device, precision=precision, quick=args.quick, sizes=dict(hp))))
            if REFERENCE[0] in wanted and (name, kind) in REFERENCES and "jax" not in wanted:
                skipped[f"{name}/{kind}/{REFERENCE[0]}"] = "the reference runs only beside tbd's JAX run (add jax to --frameworks)"
            for p in job.points:
                p.estimate_s = estimate_s(p)
            if job.points:
                jobs.append(job)
    rank = {job: i for i, job in enumerate(FIRST_JOBS)}
    jobs.sort(key=lambda j: (rank.get((j.workload, j.kind), len(rank)), KIND_ORDER.index(j.kind), names.index(j.workload)))
    return jobs, skipped


def _overrides(text: str) -> dict[str, int]:
    out = {}
    for item in filter(None, (text or "").split(",")):
        name, _, value = item.partition("=")
        out[name.strip()] = int(value)
    return out


def _precision(spec, wanted: str, device: str) -> str:
    if device == "cpu":
        return "fp32"
    if spec.precisions is None or wanted in spec.precisions:
        return wanted
    return "tf32" if "tf32" in spec.precisions else spec.precisions[0]  # a3c: fp32/tf32 only


def _why_not(workload: str, framework: str, batch: int | None, registry) -> str | None:
    if batch is None:
        return "no large batch: its batch is the actor processes, bounded by the CPU cores"
    if not registry.has_implementation(workload, framework):
        return f"no {framework} implementation of {workload} is registered (registry.has_implementation)"
    if workload == "a3c" and not (importlib.util.find_spec("gymnasium") and importlib.util.find_spec("ale_py")):
        return "a3c needs gymnasium and ale-py (Atari Pong), not installed here"
    return None


def estimate_s(p: Point) -> float:
    """Rough seconds one point takes, for the plan and the deadline."""
    if p.reference:
        quick = p.reference["quick"]
        return 30.0 if quick else STARTUP_S["ref"] + (40.0 if p.workload == "gpt" else 25.0) + 3 * 2.0 + 3.0
    c = p.config
    if c["device"] == "cpu":
        return 60.0 if c["compile"] else 20.0
    first, step_ms = FIRST_STEP_S.get((p.workload, p.variant), (30, 100))
    if p.kind == "large":
        from tbd import registry

        paper = registry.get_spec(p.workload).flavor("paper").batch_size
        step_ms *= max(1.0, 0.7 * c["batch_size"] / paper)  # larger batches run more efficiently
    window = min(c["max_time_s"], 1.5 * max(3.0, 25 * step_ms / 1e3))
    profile = PROFILE_S + (c["profile_steps"] or 5) * step_ms / 1e3 if c["profile"] else 0.0
    return STARTUP_S[c["framework"]] + first + window * 1.3 + profile


# -- results ----------------------------------------------------------------------------------------


def load_results(paths: list[Path]) -> dict[str, Any]:
    """Merge earlier result files (later ones win for the same point)."""
    data: dict[str, Any] = {"points": {}, "skipped": {}, "calls": []}
    for path in paths:
        if not path.exists():
            continue
        try:
            old = json.loads(path.read_text())
        except ValueError:
            print(f"warning: {path} is not JSON; ignored", flush=True)
            continue
        data["points"].update(old.get("points", {}))
        data["skipped"].update(old.get("skipped", {}))
        # the same call met again (a resumed file that is also the --out file, or its copy): once
        data["calls"] += [c for c in old.get("calls", []) if c not in data["calls"]]
    return data


def done(result: dict[str, Any], retry_failed: bool, retrace: bool = False, traced: bool = False) -> bool:
    """Whether a point's earlier result stands: measured (or failed, unless `retry_failed`), and
    with `retrace` traced where this call's --profile traces it (a point measured before its batch
    was traced is run again, so its ratio gets its line from the traces)."""
    status = (result.get("row") or {}).get("status")
    if status is None or (retry_failed and status not in ("ok", "unconverged", "insufficient")):
        return False
    return not (retrace and traced and status in ("ok", "unconverged") and not result.get("trace"))


class Results:
    """The results file, rewritten (atomically) after every point."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path, self.data, self.lock = path, data, threading.Lock()

    def add(self, key: str, result: dict[str, Any]) -> None:
        with self.lock:
            self.data["points"][key] = result
            self.data["skipped"].pop(key, None)
            self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)


# -- running ----------------------------------------------------------------------------------------


def run_jobs(jobs: list[Job], results: Results, args, started: float) -> list[str]:
    """Run the jobs on `args.gpus` GPUs, each job's points in order on one GPU; a job starts only
    when its estimate fits before the deadline. Returns the keys left for a later call."""
    queue, left, lock = list(jobs), [], threading.Lock()
    scale = calibration(results.data)

    def slot(gpu: int) -> None:
        while True:
            with lock:
                job = next((j for j in queue if fits(sum(p.estimate_s for p in j.points) * scale, started, args.deadline)), None)
                if job is None:
                    return
                queue.remove(job)
            for point in job.points:
                if not fits(point.estimate_s * scale, started, args.deadline, grace=args.grace):
                    with lock:
                        left.append(point.key)
                    continue
                result = run_point(point, gpu, args, started)
                if result is None:  # killed at the hard deadline: left for the next call
                    with lock:
                        left.append(point.key)
                    continue
                results.add(point.key, result)
                print(line(result), flush=True)
                if point.variant == REFERENCE[0]:
                    print(reference_verdict(point, results.data), flush=True)

    threads = [threading.Thread(target=slot, args=(gpu,), daemon=True) for gpu in range(args.gpus)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return left + [p.key for j in queue for p in j.points]


def calibration(data: dict[str, Any]) -> float:
    """Actual / estimated seconds over the points already run (0.5-2): corrects the estimates."""
    pairs = [(r.get("wall_s"), r.get("estimate_s")) for r in data["points"].values()]
    pairs = [(a, e) for a, e in pairs if a and e]
    if len(pairs) < 3:
        return 1.0
    return min(2.0, max(0.5, sum(a for a, _ in pairs) / sum(e for _, e in pairs)))


def fits(estimate: float, started: float, deadline: float | None, grace: float = 0.0) -> bool:
    return deadline is None or time.time() - started + estimate <= deadline + grace


def run_point(point: Point, gpu: int, args, started: float) -> dict[str, Any] | None:
    """One point in a worker process (its own process group, so the deadline can stop it whole)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
               TBD_HOME=str(args.home), PYTHONUNBUFFERED="1")
    if args.gpus > 1:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(max(1, (os.cpu_count() or 1) // args.gpus)))
    with tempfile.TemporaryDirectory(prefix="tbd-fw-") as tmp:
        spec, out = Path(tmp) / "point.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps(point.__dict__))
        t0 = time.time()
        # Its own process group (the deadline stops it whole); it ends with this process (lifeline).
        proc = children.start([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec), "--result", str(out),
                               "--parent", str(os.getpid())], env=env)
        hard = None if args.deadline is None else max(10.0, started + args.deadline + args.hard_grace - time.time())
        if children.wait_or_stop(proc, hard) is None:  # the worker and the run's child stopped with it
            print(f"[{time.time() - started:5.0f} s] {point.key}: stopped at the deadline after {time.time() - t0:.0f} s; "
                  "left for the next call", flush=True)
            return None
        if out.exists():
            result = json.loads(out.read_text())
        else:
            result = {"key": point.key, "point": point.__dict__, "row": dict(
                _row_base(point), status="failed", error=f"worker exited with code {proc.returncode} and wrote no result")}
    result["wall_s"], result["estimate_s"], result["gpu"] = time.time() - t0, point.estimate_s, gpu
    result["row"]["wall_s"] = result["wall_s"]
    result["finished_at_s"] = time.time() - started
    return result


def line(result: dict[str, Any]) -> str:
    r = result["row"]
    tp = f"{r['throughput']:,.1f} {r['unit']}/s" if r.get("throughput") else "-"
    extra = []
    for name, fmt in (("mfu_pct", "MFU {:.1f}%"), ("peak_gib", "peak {:.1f} GiB"), ("gpu_util_nvml_pct", "GPU {:.0f}%"),
                      ("compile_s", "compile {:.1f} s"), ("ci_pct", "CI ±{:.2f}%")):
        if r.get(name) is not None:
            extra.append(fmt.format(r[name]))
    t = result.get("trace") or {}
    if t.get("kernels_per_step") is not None:
        extra.append(f"{t['kernels_per_step']:.0f} kernels/step, idle {t['idle_ms']:.1f} ms/step")
    err = f" ({r['error'][:160]})" if r.get("error") else ""
    return f"[{result.get('finished_at_s', 0):5.0f} s] {r['key']} b{r['batch']}: {tp} {', '.join(extra)} [{r['status']}]{err} ({result['wall_s']:.0f} s)"


def reference_verdict(point: Point, data: dict[str, Any]) -> str:
    """tbd's JAX throughput over the plain Flax loop's, measured just before on the same GPU."""
    ref = data["points"][point.key]["row"]
    tbd = (data["points"].get(point.key.rsplit("/", 1)[0] + "/jax") or {}).get("row") or {}
    if not ref.get("throughput") or not tbd.get("throughput"):
        return f"  {point.workload} b{ref.get('batch')}: no ratio (plain Flax: {ref.get('status')}, tbd JAX: {tbd.get('status')})"
    q = tbd["throughput"] / ref["throughput"]
    return (f"  {point.workload} b{ref['batch']}: tbd JAX / plain Flax = {q:.3f}x ({tbd['throughput']:,.1f} vs {ref['throughput']:,.1f} "
            f"{ref['unit']}/s; goal >= 1.0x: {'met' if q >= 1.0 else 'NOT met'})")


# -- the worker: one point ------------------------------------------------------------------------


def worker(point_file: Path, result_file: Path, parent: int | None) -> None:
    if parent:  # a bench killed at a device's time limit must not leave a run on the GPU
        from tbd.harness.lifeline import end_with_parent

        end_with_parent(parent)
    point = Point(**json.loads(point_file.read_text()))
    if point.reference:
        result = reference_point(point)
    else:
        result = tbd_point(point)
    result_file.write_text(json.dumps(result, default=str))


def tbd_point(point: Point) -> dict[str, Any]:
    from tbd.config import RunConfig
    from tbd.errors import UsageError
    from tbd.harness.launcher import run_isolated
    from tbd.results.store import Store

    try:
        config = RunConfig(**point.config).validated()
    except UsageError as exc:
        return {"key": point.key, "point": point.__dict__, "row": dict(_row_base(point), status="usage error", error=str(exc))}
    store = Store()
    record = run_isolated(config, timeout_s=420.0)  # nothing heard for 7 min: a stalled run
    if config.profile:
        from tbd.analysis.capture import after_launch

        after_launch(record, config, store)
    store.save(record)
    rec = {k: v for k, v in record.to_dict().items() if k != "samples"}
    return {"key": point.key, "point": point.__dict__, "row": row(point, rec), "trace": trace_digest(rec), "record": rec}


def reference_point(point: Point) -> dict[str, Any]:
    sys.path.insert(0, str(BENCH))
    import flax_reference

    ref = point.reference
    try:
        out = flax_reference.run_reference(ref["model"], ref["batch"], ref["device"], ref["precision"], ref["quick"], sizes=ref["sizes"])
    except Exception as exc:  # noqa: BLE001 - a failed reference is a result to report, not a crash of the bench
        return {"key": point.key, "point": point.__dict__, "row": dict(_row_base(point), status="failed", error=f"{type(exc).__name__}: {exc}"[:500])}
    status = "ok" if out["loss_finite"] else "failed"
    r = dict(_row_base(point), batch=ref["batch"], unit=out["unit"], throughput=out["throughput"], status=status,
             first_step_s=out["first_step_s"], step_ms=out["step_ms"], params=out["params"], spread_pct=out["spread_pct"],
             error=None if status == "ok" else f"loss {out['loss']}")
    return {"key": point.key, "point": point.__dict__, "row": r, "reference": out}


def _row_base(point: Point) -> dict[str, Any]:
    return {"key": point.key, "workload": point.workload, "kind": point.kind, "variant": point.variant, "label": point.label,
            "batch": (point.config or point.reference or {}).get("batch_size") or (point.reference or {}).get("batch"),
            "unit": None, "throughput": None, "status": None, "error": None}


def row(point: Point, rec: dict[str, Any]) -> dict[str, Any]:
    """The figures the tables show, from a run's record."""
    m, mem, err = rec.get("metrics") or {}, rec.get("memory") or {}, rec.get("error") or {}
    w = rec.get("workload") or {}
    unit = w.get("unit", "samples")
    first, warm = m.get("compile_time_s"), m.get("warmup_time_s")
    compiled = point.config["compile"]
    # Compile time: JAX's own count (tracing, lowering, XLA); torch.compile's shows as step 0 and
    # the warm-up steps (Dynamo, AOTAutograd, Inductor, Triton, recompilations); eager compiles nothing.
    compile_s = m.get("compile_s") if m.get("compile_s") is not None else ((first or 0.0) + (warm or 0.0) if compiled and first is not None else None)
    conv = (rec.get("method") or {}).get("convergence") or {}
    peak = mem.get("peak_allocated_bytes")
    return dict(_row_base(point), unit=unit, batch_unit=w.get("batch_unit"), throughput=m.get(f"{unit}_per_s"),
                samples_per_s=m.get("samples_per_s"), ci_pct=m.get("throughput_ci95_half_width_pct"), status=rec.get("status"),
                convergence=conv.get("reason"), mfu_pct=m.get("mfu_pct"), peak_gib=peak / 2**30 if peak else None,
                gpu_util_nvml_pct=m.get("gpu_util_nvml_pct"), cpu_cores_busy=m.get("cpu_cores_busy"), step_ms=m.get("step_time_ms_p50"),
                first_step_s=first, warmup_s=warm, compile_s=compile_s, compile_count=m.get("compile_count"),
                recompiles=m.get("recompiles_after_first_pass"), timed_steps=m.get("timed_steps"),
                params=w.get("num_parameters"), run_id=rec.get("id"),
                error=f"{err.get('kind')}: {err.get('message', '')}"[:500] if err else None)


# What each trace class counts as, in the tables' four kinds of GPU time.
TRACE_KINDS = {"gemm_conv_attention": ("matmul/conv", "attention"),
               "elementwise_fusion": ("elementwise", "normalization", "reduction", "optimizer", "other"),
               "copies": ("memcpy/memset",), "communication": ("communication",)}


def trace_digest(rec: dict[str, Any]) -> dict[str, Any] | None:
    """Per step of the traced window: kernels, GPU time by kind, idle time; the top kernels."""
    analysis = rec.get("analysis") or {}
    if not analysis:
        return None
    summary, trace = analysis.get("summary") or {}, analysis.get("trace") or {}
    device = summary.get("device")
    if not device or not trace.get("steps"):
        return {"error": analysis.get("error") or analysis.get("summary_error") or "the trace holds no device activity"}
    steps = trace["steps"]
    classes = device.get("classes") or {}
    out: dict[str, Any] = {"steps": steps, "source": summary.get("source"), "step_ms": summary["window_ms"] / steps,
                           "kernels_per_step": device["kernels"] / steps, "idle_ms": device["idle_ms"] / steps,
                           "gpu_util_trace_pct": device.get("gpu_util_trace_pct"),
                           "tensor_core_share_pct": device.get("tensor_core_share_pct"),
                           "gpu_idle_not_waiting_pct": (summary.get("host") or {}).get("gpu_idle_not_waiting_pct"),
                           "host_busy_pct": (summary.get("host") or {}).get("busy_pct")}
    for name, members in TRACE_KINDS.items():
        out[f"{name}_ms"] = sum((classes.get(c) or {}).get("time_ms", 0.0) for c in members) / steps
    out["classes_ms_per_step"] = {c: v["time_ms"] / steps for c, v in classes.items()}
    out["top_kernels"] = [{"name": k["short"], "class": k["class"], "share_pct": k["share_pct"], "mean_us": k["mean_us"],
                           "per_step": k["count"] / steps} for k in (device.get("top_kernels") or [])[:5]]
    return out


# -- main -------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-out/frameworks", help="folder of frameworks_compare.json (default: bench-out/frameworks)")
    ap.add_argument("--home", help="tbd store for the records and traces (default: /tmp/tbd-frameworks-home, outside --out)")
    ap.add_argument("--workloads", default="", help=f"comma list (default: {','.join(WORKLOADS)})")
    ap.add_argument("--batches", default="paper,large", help="paper, large or both (default)")
    ap.add_argument("--frameworks", default="eager,compile,jax,ref", help="eager, compile (torch.compile), jax, ref (plain Flax)")
    ap.add_argument("--large-batch", default="", help="override large batches, e.g. gpt=32,seq2seq=512")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--max-time", type=float, help="steady-window budget of every run, s (default: 20, 30 for the slow-step workloads)")
    ap.add_argument("--max-steps", type=int, default=5000)
    ap.add_argument("--data-pool", type=int, default=2, help="resident batches per run (tbd's default 2; 1 compiles variable-length workloads once)")
    ap.add_argument("--profile", choices=("paper", "large", "both", "none"), default="paper", help="which batch's runs trace (default: paper)")
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--deadline", type=float, help="seconds: start a job only if its estimate fits; stop runs still going past it")
    ap.add_argument("--grace", type=float, default=20.0, help="a point's estimate may overrun the deadline by this much")
    ap.add_argument("--hard-grace", type=float, default=40.0, help="runs still going this long after the deadline are stopped")
    ap.add_argument("--gpus", type=int, default=1, help="jobs at once, one per GPU of this host")
    ap.add_argument("--resume", action="append", default=[], help="an earlier frameworks_compare.json to continue (repeatable)")
    ap.add_argument("--retry-failed", action="store_true", help="run again the points that failed before")
    ap.add_argument("--retrace", action="store_true", help="run again the measured points that have no trace where --profile traces them")
    ap.add_argument("--plan", action="store_true", help="print the points and their estimated time; run nothing")
    ap.add_argument("--quick", "--smoke", action="store_true", help="tiny flavors, fp32, on the CPU, a few steps (checks the script)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--parent", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(Path(args.worker), Path(args.result), args.parent)
        return
    started = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.home = Path(args.home or "/tmp/tbd-frameworks-home")
    sys.path.insert(0, str(SRC))
    from tbd import registry

    jobs, skipped = plan(args, registry)
    results = Results(out / RESULT_FILE, load_results([Path(p) for p in args.resume] + [out / RESULT_FILE]))
    before = len(results.data["points"])
    jobs = [Job(j.workload, j.kind, [p for p in j.points if not done(results.data["points"].get(p.key, {}), args.retry_failed,
                                                                   args.retrace, bool((p.config or {}).get("profile")))])
            for j in jobs]
    jobs = [j for j in jobs if j.points]
    scale = calibration(results.data)
    total = sum(p.estimate_s for j in jobs for p in j.points) * scale
    print(f"{sum(len(j.points) for j in jobs)} runs in {len(jobs)} jobs to do ({before} done before), estimated {total:.0f} s"
          f"{f' (x{scale:.2f} from earlier runs)' if scale != 1.0 else ''} on {args.gpus} GPU(s)"
          f"{f', deadline {args.deadline:.0f} s' if args.deadline else ''}; store {args.home}", flush=True)
    for j in jobs:
        print(f"  {j.workload:12s} {j.kind:5s} " + ", ".join(f"{p.variant} ~{p.estimate_s * scale:.0f} s" for p in j.points), flush=True)
    for key, why in skipped.items():
        print(f"  skip {key}: {why}", flush=True)
    if args.plan:
        return
    results.data["skipped"].update({k: v for k, v in skipped.items() if k not in results.data["points"]})
    call = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:], "gpus": args.gpus, "deadline": args.deadline}
    results.data["calls"].append(call)
    results.save()
    left = run_jobs(jobs, results, args, started)
    call.update(elapsed_s=time.time() - started, left=left)
    results.save()
    sys.path.insert(0, str(BENCH))
    import frameworks_table

    print()
    print(frameworks_table.render(results.data, sections=("throughput", "reference", "details", "traces", "explanations")))
    if left:
        print(f"\nleft for the next call ({len(left)}): {', '.join(left)}")
        print(f"run the same command again with --resume {out / RESULT_FILE} (or the same --out) to continue")
    print(f"\n{time.time() - started:.0f} s; results in {out / RESULT_FILE}")


if __name__ == "__main__":
    main()
