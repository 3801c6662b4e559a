"""GPT-2 124M training speed on one GPU: tbd's gpt against transformers' GPT2LMHeadModel.

    PYTHONPATH=src python3 bench/gpt_gpu.py --out results/   # on a GPU machine, about 5 minutes
    PYTHONPATH=src python3 bench/gpt_gpu.py --smoke          # CPU check of the script (tiny sizes)

Setting (issue 3): batch 16 x 1024 tokens, bf16 autocast, fused AdamW, synthetic tokens on the
GPU. Jobs, each in its own child process (an OOM or a crash stays there, and every variant
compiles from a clean state), in this order of importance:
- hf_sdpa: transformers GPT2LMHeadModel from GPT2Config() defaults (no download; dropout 0.1),
  attn_implementation="sdpa", eager, the baseline of the 2x requirement
- tbd_compile: tbd's gpt `paper` flavor through TorchSession with --compile (the default)
- tbd_compile_cudnn: the same with the cuDNN attention kernel first (sdpa_backend=cudnn)
- tbd_1.3b_eager: the 1.3b flavor (8 x 2048 tokens) trains a few steps eagerly: peak memory;
  on OOM the batch is halved and the failure recorded
- tbd_autotune_cudnn: compile mode max-autotune-no-cudagraphs with cuDNN attention (slow to
  compile: capped at 150 s)
- hf_sdpa_dropout0: transformers with dropout 0, like tbd's flavors (the like-for-like ratio)
- tbd_eager: tbd's gpt without compile (REFERENCE_NUMBERS.md has a minimal GPT's eager rate)
Jobs not started within --budget-s are reported as skipped.
Timing: after warm-up steps (compilation included), a window of steps each bracketed by CUDA
events with one host synchronization at the end; tokens/s from the median step. MFU uses
6N + 12LdT FLOPs per token (tbd.workloads.gpt.spec) and 989 TFLOP/s (H100/H200 SXM dense bf16).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

PEAK_BF16 = 989e12  # H100 / H200 SXM dense bf16, NVIDIA datasheets (REFERENCE_NUMBERS.md)
HERE = Path(__file__).resolve()

# name -> what the job runs; the order is the order of importance under the time budget
JOBS = {
    "hf_sdpa": dict(kind="hf", dropout=None),
    "tbd_compile": dict(kind="tbd", flavor="paper", compile=True, options={}),
    "tbd_compile_cudnn": dict(kind="tbd", flavor="paper", compile=True, options={"sdpa_backend": "cudnn"}),
    "tbd_1.3b_eager": dict(kind="tbd", flavor="1.3b", compile=False, options={}, warmup=3, steps=5, halve_on_oom=True),
    # GEMM autotuning (Triton templates with fused epilogues) and coordinate-descent tuning of
    # the other kernels: may be fastest, surely slowest to compile, so capped
    "tbd_autotune_cudnn": dict(kind="tbd", flavor="paper", compile=True, max_s=150,
                               options={"compile_mode": "max-autotune-no-cudagraphs", "sdpa_backend": "cudnn"}),
    "hf_sdpa_dropout0": dict(kind="hf", dropout=0.0),
    "tbd_eager": dict(kind="tbd", flavor="paper", compile=False, options={}),
}


# ----------------------------------------------------------------------------- one job (child)
def _median_rate(step_s: list[float], tokens_per_step: float) -> dict:
    med = statistics.median(step_s)
    return {"step_ms_median": med * 1e3, "step_ms_min": min(step_s) * 1e3, "tokens_per_s": tokens_per_step / med, "steps_timed": len(step_s)}


def run_hf(job: dict, smoke: bool, warmup: int, steps: int) -> dict:
    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    device = "cpu" if smoke else "cuda"
    shape = dict(n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=512) if smoke else {}
    if job["dropout"] is not None:
        shape.update(resid_pdrop=job["dropout"], embd_pdrop=job["dropout"], attn_pdrop=job["dropout"])
    config = GPT2Config(**shape)
    try:
        model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    except (AttributeError, TypeError):  # other transformers versions
        config._attn_implementation = "sdpa"
        model = GPT2LMHeadModel(config)
    model = model.to(device).train()
    batch, T = (4, 64) if smoke else (16, 1024)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, **({"fused": True} if device == "cuda" else {}))
    gen = torch.Generator(device=device).manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (batch, T), device=device, generator=gen)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss  # shifts labels inside
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    times = _time_steps(step, steps, device, torch)
    out = _median_rate(times, batch * T)
    n = sum(p.numel() for p in model.parameters())
    d, L = config.n_embd, config.n_layer
    flops_per_token = 6.0 * (12 * L * d * d + config.vocab_size * d) + 12.0 * L * d * T
    out.update(
        attn_implementation=getattr(model.config, "_attn_implementation", None), transformers_version=transformers.__version__,
        num_parameters=n, flops_per_token=flops_per_token, dropout=config.resid_pdrop,
        loss=float(step().detach()), peak_alloc_bytes=torch.cuda.max_memory_allocated() if device == "cuda" else None,
    )
    return out


def _time_steps(step, n: int, device: str, torch) -> list[float]:
    if device == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
        events[0].record()
        for i in range(n):
            step()
            events[i + 1].record()
        events[-1].synchronize()
        return [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(n)]
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def run_tbd(job: dict, smoke: bool, warmup: int, steps: int) -> dict:
    import torch

    from tbd import registry
    from tbd.config import RunConfig
    from tbd.frameworks import open_session
    from tbd.workloads.gpt.spec import train_flops_per_token

    flavor = "tiny" if smoke else job["flavor"]
    spec = registry.get_spec("gpt")
    batch = spec.flavor(flavor).batch_size
    failures = []
    while True:
        config = RunConfig(
            workload="gpt", flavor=flavor, device="cpu" if smoke else "cuda", precision="bf16", batch_size=batch,
            compile=job["compile"] and not smoke, options=dict(job["options"]), isolate=False,
        ).validated()
        session = None
        try:
            session = open_session(config)
            session.run_steps(job.get("warmup", warmup))
            times = session.run_steps(job.get("steps", steps)).seconds
            break
        except torch.OutOfMemoryError as exc:
            failures.append({"batch_size": batch, "error": f"out of memory at batch size {batch}: {str(exc).splitlines()[0][:200]}"})
        session = None  # outside the except block, so the traceback no longer holds the tensors
        gc.collect()
        torch.cuda.empty_cache()
        if not job.get("halve_on_oom") or batch == 1:
            return {"error": failures[-1]["error"], "oom": failures}
        batch //= 2
    hp = config.resolved_hparams()
    T = hp["block_size"]
    out = _median_rate(times, batch * T)
    out.update(
        flavor=flavor, batch_size=batch, block_size=T, flops_per_token=train_flops_per_token(hp), oom=failures,
        num_parameters=session.num_parameters, method=session.info.method, loss=session.last_loss(), **session.memory(),
    )
    session.close()
    return out


def child(name: str, smoke: bool, warmup: int, steps: int) -> None:
    job = JOBS[name]
    t0 = time.perf_counter()
    try:
        result = (run_hf if job["kind"] == "hf" else run_tbd)(job, smoke, warmup, steps)
    except ModuleNotFoundError as exc:
        result = {"skipped": f"{exc.name} is not installed"}
    result["job_s"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(result, default=str), flush=True)


# ----------------------------------------------------------------------------- parent
def environment(smoke: bool) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    if not smoke and torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name(0)
        env["driver_cuda"] = torch.version.cuda
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    return env


def run_job(name: str, args, budget_left: float) -> dict:
    cmd = [sys.executable, str(HERE), "--job", name, "--warmup", str(args.warmup), "--steps", str(args.steps)] + (["--smoke"] if args.smoke else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(10.0, budget_left), env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {budget_left:.0f} s (time budget)"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)[:400]}"}
    return json.loads(lines[-1][len("RESULT "):])


def summarize(results: dict, smoke: bool) -> list[str]:
    base = results.get("hf_sdpa", {}).get("tokens_per_s")
    rows = [f"{'job':<20} {'tokens/s':>10} {'step ms':>8} {'MFU %':>6} {'x HF':>6} {'peak GiB':>8}  note"]
    for name, r in results.items():
        if "tokens_per_s" not in r:
            rows.append(f"{name:<20} {'-':>10} {'-':>8} {'-':>6} {'-':>6} {'-':>8}  {r.get('skipped') or r.get('error')}")
            continue
        mfu = r["tokens_per_s"] * r["flops_per_token"] / PEAK_BF16 * 100
        r["mfu_pct"] = None if smoke else mfu
        r["ratio_to_hf_sdpa"] = r["tokens_per_s"] / base if base else None
        peak = r.get("peak_alloc_bytes") or r.get("peak_allocated_bytes")
        note = f"batch {r['batch_size']} x {r['block_size']}" if "batch_size" in r else f"dropout {r.get('dropout')}, attn {r.get('attn_implementation')}"
        if r.get("oom"):
            note += f"; OOM first at batch {r['oom'][0]['batch_size']}"
        rows.append(
            f"{name:<20} {r['tokens_per_s']:>10,.0f} {r['step_ms_median']:>8.1f} {mfu if not smoke else float('nan'):>6.1f} "
            f"{(r['ratio_to_hf_sdpa'] or float('nan')):>6.2f} {(peak or 0) / 2**30:>8.1f}  {note}"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="folder for gpt_gpu.json")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, no compile: checks the script")
    ap.add_argument("--only", help="comma-separated jobs (default: all): " + ", ".join(JOBS))
    ap.add_argument("--budget-s", type=float, default=330.0, help="stop starting jobs after this many seconds (default: 330)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: 10; 2 with --smoke)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 30; 3 with --smoke)")
    ap.add_argument("--job", help=argparse.SUPPRESS)  # internal: run one job in this (child) process
    args = ap.parse_args()
    args.warmup = args.warmup if args.warmup is not None else (2 if args.smoke else 10)
    args.steps = args.steps if args.steps is not None else (3 if args.smoke else 30)
    if args.job:
        return child(args.job, args.smoke, args.warmup, args.steps)

    names = args.only.split(",") if args.only else list(JOBS)
    bad = [n for n in names if n not in JOBS]
    if bad:
        sys.exit(f"unknown job {bad[0]!r}; choose from: {', '.join(JOBS)}")
    start = time.perf_counter()
    results = {}
    for name in names:
        left = args.budget_s - (time.perf_counter() - start)
        if left < 20:
            results[name] = {"skipped": "time budget spent"}
            continue
        results[name] = run_job(name, args, min(left, JOBS[name].get("max_s", left)))
        r = results[name]
        outcome = f"{r['tokens_per_s']:,.0f} tokens/s" if "tokens_per_s" in r else str(r.get("skipped") or r.get("error"))
        print(f"[{time.perf_counter() - start:5.0f} s] {name}: {outcome}", flush=True)
    rows = summarize(results, args.smoke)
    report = {"environment": environment(args.smoke), "setting": "GPT-2 124M, batch 16 x 1024, bf16 autocast, fused AdamW, synthetic tokens",
              "peak_flops": PEAK_BF16, "flops_convention": "6N + 12LdT per token (N: matmul weights)", "smoke": args.smoke,
              "wall_s": time.perf_counter() - start, "results": results}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpt_gpu.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"\n{report['environment']}\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
