"""tbd's JAX GPT-2 124M with each way of computing its loss, and with XLA flags: which is fastest.

    PYTHONPATH=src python3 bench/gpt_jax_variants_gpu.py --out OUT                  # H200: batch 16, then 64 while time is left; < 4 min
    PYTHONPATH=src python3 bench/gpt_jax_variants_gpu.py --out OUT2 --batches 64    # batch 64's variants (< 4 min)
    PYTHONPATH=src python3 bench/gpt_jax_variants_gpu.py --out OUT --quick          # tiny flavor on the CPU (checks the script)

Variants (each the same loss, parameters and model FLOPs; `tests/workloads/test_gpt_jax_losses.py`
checks the losses and gradients equal on the CPU):
- `fp32_logits`: the baseline (logits cast to fp32, optax's cross-entropy; tbd's default until
  this bench's H200 run of 2026-11-29 made it `bf16_logits`);
- `fused`, `fused_linear`, `chunked`, `bf16_logits`: tbd's `--option loss=...`
  (src/tbd/workloads/gpt/jax_impl.py says what each does);
- `lhs`: the baseline loss with `XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true`
  (more flag sets: `--xla NAME=FLAGS`, e.g. `--xla 'nocmdbuf=--xla_gpu_enable_command_buffer='`).
`chunked` and `fused_linear` take chunks of 4096 tokens (tbd's default; `--loss-chunk` for all,
or a variant `fused_linear@8192`), e.g. `--variants fp32_logits,fused_linear,fused_linear@8192`.
Each (variant, batch) runs in its own child process (this script with --child), so XLA_FLAGS
apply from the start and the device's peak memory is that variant's own. The child builds the
run as `tbd run gpt --framework jax --flavor paper --device cuda --precision bf16 --option
loss=...` does (RunConfig -> frameworks.open_session: tbd's task, its jitted step with the state
donated, 2 synthetic batches resident and rotated), compiles the step once ahead of time (XLA's
memory analysis of it: temporaries), then times it with bench/flax_reference.py's `time_loop`:
after `--warmup` steps, `--windows` windows of equal step counts (each >= `--window-s`), steps
dispatched back to back and the whole state waited for (`block_until_ready`) at the window's
end; ms/step is the median window's (and one more window synced every step, kept apart). MFU: tbd's model FLOPs per sequence (the gpt spec, 6N +
12LdT per token) x sequences/s over tbd's peak for the device (tbd.metrics.peaks; bf16 dense).
`first_loss` is the first step's loss (same parameters and batch in every variant: they agree to
bf16's precision if the variants are the same loss).

Points run batch by batch (all variants at the first batch first) and are skipped, said so,
when their estimated time no longer fits `--deadline` seconds (default 225). Results:
OUT/gpt_jax_variants.json (rewritten after each point) and one printed line per point.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULT_FILE = "gpt_jax_variants.json"
GOAL_MFU_PCT = 45.0  # issue 13: tbd's JAX gpt 124M at 16 x 1024 tokens on an H200
LOSS_VARIANTS = ("fp32_logits", "fused", "fused_linear", "chunked", "bf16_logits")  # the most promising first
BASELINE = "fp32_logits"
CHUNKED = ("chunked", "fused_linear")  # the losses that take a chunk size (NAME@TOKENS)
# XLA flag sets (name -> XLA_FLAGS), run with the baseline loss. Flags that exist in jaxlib 0.10
# (an unknown flag aborts the child, which is then reported as failed).
XLA_VARIANTS = {"lhs": "--xla_gpu_enable_latency_hiding_scheduler=true"}
# Seconds a point takes on an H200 beyond its timed windows: child start, imports, the model and
# batches on the device, the step's compilation (tbd's JAX gpt: ~18 s at batch 16, 2026-11-29).
START_S = {"cuda": 30.0, "cpu": 15.0}


def child(args) -> None:
    """One variant at one batch in this process; its result as JSON on the last stdout line."""
    import jax

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (also when loaded by path, as in the tests)
    from flax_reference import Loop, time_loop

    from tbd import frameworks, registry
    from tbd.config import RunConfig
    from tbd.metrics.peaks import peak_flops

    quick = args.quick
    device, flavor, precision = ("cpu", "tiny", "fp32") if quick else ("cuda", "paper", "bf16")
    options = {"loss": args.loss}
    if args.loss_chunk:
        options["loss_chunk"] = str(args.loss_chunk)
    config = RunConfig(workload="gpt", framework="jax", flavor=flavor, batch_size=args.batch, device=device,
                       precision=precision, options=options, data_pool=2, isolate=False).validated()
    spec = registry.get_spec("gpt")
    t_start = time.perf_counter()
    session = frameworks.open_session(config)
    compiled = session.compiled_step()  # ahead of time: one compile, and XLA's memory analysis of the step
    compile_s = time.perf_counter() - t_start
    analysis = compiled.memory_analysis()
    temp_bytes = getattr(analysis, "temp_size_in_bytes", None) if analysis is not None else None
    tokens = args.batch * spec.units_per_sample(spec.flavor(flavor))
    # bench/flax_reference.py's timing, around tbd's compiled step (the state is donated to it)
    loop = Loop("gpt", compiled, session.state, session.batches, tokens, "tokens", session.num_parameters)
    session.state = None
    with jax.default_matmul_precision(session.precision):
        timing = time_loop(loop, warmup=args.warmup, window_s=args.window_s, windows=args.windows)
    steps = timing["steps_per_window"]
    step_s = timing["step_ms"] / 1e3
    flops_per_step = spec.train_flops_per_sample(spec.flavor(flavor)) * args.batch
    peak, peak_source = peak_flops(session.info.device_name if device == "cuda" else None, precision)
    memory = session.memory()
    result = {
        "loss_variant": args.loss, "batch": args.batch, "tokens_per_step": tokens, "device": session.info.device_name,
        "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS") or None, "options": options,
        "step_ms": 1e3 * step_s, "tokens_per_s": tokens / step_s,
        "window_step_ms": [1e3 * tokens / rate for rate in timing["window_throughputs"]], "steps_per_window": steps,
        "spread_pct": timing["spread_pct"], "synced_per_step_tokens_per_s": timing["synced_per_step_throughput"],
        "model_tflops_per_s": flops_per_step / step_s / 1e12,
        "mfu_pct": 100.0 * flops_per_step / step_s / peak if peak else None, "peak_source": peak_source,
        "peak_device_bytes": memory.get("peak_allocated_bytes"), "xla_temp_bytes": temp_bytes,
        "startup_and_compile_s": compile_s, "first_loss": timing["first_loss"], "last_loss": timing["loss"],
        "method": "tbd's JaxSession (RunConfig -> frameworks.open_session), its step compiled ahead of time, timed by "
                  f"bench/flax_reference.py's time_loop: {args.warmup} warm-up steps, median of {args.windows} windows of "
                  f"{steps} steps dispatched back to back between block_until_ready calls on the whole state",
    }
    print(json.dumps(result))


def _points(args) -> list[dict[str, Any]]:
    """(variant, batch) points, batch by batch; ValueError names an unknown variant and the valid ones."""
    xla = dict(XLA_VARIANTS)
    for item in args.xla:
        name, _, flags = item.partition("=")
        xla[name] = flags
    names = [*LOSS_VARIANTS, *xla] if args.variants == "all" else [v for v in args.variants.split(",") if v]
    points = []
    for batch in [int(b) for b in args.batches.split(",") if b]:
        for name in names:
            loss, _, chunk = name.partition("@")  # e.g. fused_linear@8192: that loss with chunks of 8192 tokens
            if loss in LOSS_VARIANTS and (not chunk or (loss in CHUNKED and chunk.isdigit() and int(chunk) > 0)):
                points.append({"variant": name, "batch": batch, "loss": loss, "xla_flags": None,
                               "loss_chunk": int(chunk) if chunk else (args.loss_chunk if loss in CHUNKED else 0)})
            elif name in xla:
                points.append({"variant": name, "batch": batch, "loss": BASELINE, "xla_flags": xla[name], "loss_chunk": 0})
            else:
                raise ValueError(f"unknown variant {name!r}; valid: {', '.join([*LOSS_VARIANTS, *xla])}, "
                                 f"{' or '.join(CHUNKED)}@TOKENS, or a flag set of --xla NAME=FLAGS")
    return points


def _first_estimate(args, device: str, batch: int, seen_s: dict[int, float]) -> float:
    """Seconds of the first point at `batch`: a smaller batch's point (x 1.2 for the larger
    compile), or START_S, plus its warm-up and windows (a step of ~2 ms per sequence on an H200)."""
    start = 1.2 * max(seen_s.values()) if seen_s else START_S[device]
    step_s = 0.05 if device == "cpu" else 0.0021 * batch
    return start + args.warmup * step_s + (args.windows + 1) * max(args.window_s, step_s * 5)  # + time_loop's synced window


def _line(r: dict[str, Any], base: dict[str, Any] | None) -> str:
    if r.get("status") != "ok":
        return f"{r['variant']:>12} batch {r['batch']:>3}: {r['status']} ({r.get('reason', '')})"
    mfu = f"MFU {r['mfu_pct']:.1f}%" if r["mfu_pct"] is not None else f"MFU not measurable here ({r['peak_source']})"
    gib = lambda b: f"{b / 2**30:.2f} GiB" if b else "n/a"  # noqa: E731
    speedup = f", {base['step_ms'] / r['step_ms']:.3f}x baseline" if base else ""
    return (f"{r['variant']:>12} batch {r['batch']:>3}: {r['step_ms']:8.2f} ms/step, {r['tokens_per_s']:>11,.0f} tokens/s, {mfu}, "
            f"peak {gib(r['peak_device_bytes'])} (XLA temp {gib(r['xla_temp_bytes'])}){speedup}, windows within "
            f"{r['spread_pct']:.1f}%, first loss {r['first_loss']:.4f}, start+compile {r['startup_and_compile_s']:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="folder for gpt_jax_variants.json")
    ap.add_argument("--batch", type=int, help="one batch (sequences of 1024 tokens); same as --batches N")
    ap.add_argument("--batches", default="16,64", help="comma-separated batches, run in this order (default 16,64)")
    ap.add_argument("--variants", default="all",
                    help=f"comma-separated: loss variants {', '.join(LOSS_VARIANTS)} ({' and '.join(CHUNKED)} also as NAME@TOKENS: "
                         f"chunks of TOKENS), XLA flag sets ({', '.join(XLA_VARIANTS)} and --xla names), run in this order; "
                         "default all: every loss variant, then every flag set")
    ap.add_argument("--xla", action="append", default=[], help="another flag set NAME=XLA_FLAGS (run with the baseline loss)")
    ap.add_argument("--loss-chunk", type=int, default=0, help="tokens per chunk of loss=chunked (default: tbd's 4096)")
    ap.add_argument("--deadline", type=float, default=225.0, help="seconds for the whole call; points that no longer fit are skipped")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--window-s", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true", help="tbd's tiny gpt in fp32 on the CPU, batch 4 (checks the script)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--loss", default=BASELINE, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.batch:
        args.batches = str(args.batch)
    if args.child:
        args.batch = int(args.batches.split(",")[0])
        return child(args)
    if not args.out:
        ap.error("--out DIR is required")
    if args.quick:
        args.batches = "4" if args.batches == "16,64" else args.batches
        args.window_s, args.windows, args.warmup = min(args.window_s, 0.2), min(args.windows, 2), min(args.warmup, 2)
    try:
        points = _points(args)
    except ValueError as e:
        ap.error(str(e))  # exit 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cpu" if args.quick else "cuda"
    t_begin = time.monotonic()
    results: list[dict[str, Any]] = []
    seen_s: dict[int, float] = {}  # batch -> longest point so far (s): the next points' estimate
    for point in points:
        batch = point["batch"]
        estimate = seen_s.get(batch) or _first_estimate(args, device, batch, seen_s)
        left = args.deadline - (time.monotonic() - t_begin)
        row: dict[str, Any] = dict(point)
        if estimate > left:
            row.update(status="skipped", reason=f"estimated {estimate:.0f} s, {max(left, 0):.0f} s left of --deadline {args.deadline:.0f}")
        else:
            env = dict(os.environ)
            if point["xla_flags"]:
                env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {point['xla_flags']}".strip()
            cmd = [sys.executable, __file__, "--child", "--loss", point["loss"], "--batches", str(batch),
                   "--warmup", str(args.warmup), "--windows", str(args.windows), "--window-s", str(args.window_s)]
            cmd += ["--quick"] if args.quick else []
            cmd += ["--loss-chunk", str(point["loss_chunk"])] if point["loss_chunk"] else []
            t0 = time.monotonic()
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=max(left, 1.0))
                last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
                if proc.returncode == 0 and last.startswith("{"):
                    row.update(status="ok", **json.loads(last))
                else:
                    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                    oom = "RESOURCE_EXHAUSTED" in proc.stderr or "out of memory" in proc.stderr.lower()
                    row.update(status="oom" if oom else "failed", reason=f"exit {proc.returncode}: {tail[-300:]}")
            except subprocess.TimeoutExpired:
                row.update(status="failed", reason=f"killed at the --deadline ({left:.0f} s left when it started)")
            took = time.monotonic() - t0
            row["child_s"] = took
            seen_s[batch] = max(seen_s.get(batch, 0.0), took)
            flags = f"XLA_FLAGS={shlex.quote(env['XLA_FLAGS'])} " if point["xla_flags"] else ""
            row["command"] = flags + shlex.join(["python3", os.path.relpath(cmd[1]), *cmd[2:]])  # one point again, by hand
        base = next((r for r in results if r["batch"] == batch and r["variant"] == BASELINE and r.get("status") == "ok"), None)
        if row.get("status") == "ok" and base is not None:
            row["speedup_vs_baseline"] = base["step_ms"] / row["step_ms"]
        results.append(row)
        print(_line(row, base if base is not row else None), flush=True)
        (out / RESULT_FILE).write_text(json.dumps({"deadline_s": args.deadline, "points": results}, indent=1))
    for batch in dict.fromkeys(r["batch"] for r in results):
        done = [r for r in results if r["batch"] == batch and r.get("status") == "ok"]
        if done:
            best = min(done, key=lambda r: r["step_ms"])
            mfu = f", MFU {best['mfu_pct']:.1f}% (issue 13's goal: >= {GOAL_MFU_PCT:.0f}%)" if best["mfu_pct"] is not None else ""
            print(f"fastest at batch {batch}: {best['variant']}, {best['step_ms']:.2f} ms/step{mfu}")
    print(f"{len(results)} points in {time.monotonic() - t_begin:.0f} s -> {out / RESULT_FILE}")


if __name__ == "__main__":
    main()
