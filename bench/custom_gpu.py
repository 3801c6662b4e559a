"""Your own model through tbd, and what the harness costs: timm's vit_base_patch16_224 and
transformers' bert-base-uncased at bf16, each measured three ways in one process.

    PYTHONPATH=src python3 bench/custom_gpu.py --home /tmp/tbd-custom   # on a GPU, about 5 minutes
    PYTHONPATH=src python3 bench/custom_gpu.py --smoke                  # CPU check (tiny models)
    tbd report --home /tmp/tbd-custom                                   # the runs beside the suite

For each model (random weights, nothing downloaded):
- plain: a hand-written loop over the model, optimizer, batch and loss that tbd's session built
  (zero_grad, bf16 autocast, backward, optimizer step), warm-up steps, then N steps between two
  device synchronizations: the reference rate, no tbd code in the timed loop;
- tbd.run: `tbd.run("timm:vit_base_patch16_224", precision="bf16", ...)` in this process
  (isolate=False): the harness's loop (CUDA events per step, chunked syncs, warm-up detection);
- tbd.measure: the plain loop's step function given to `tbd.measure` (the custom-step path);
then plain again (the better of the two plain rates is the reference, so clock drift does not
flatter tbd). Harness cost = 1 - rate / plain rate; the issue's bar is at most 1%.
The tbd.run and tbd.measure records are stored (`--home`), so `tbd report` shows them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import tbd
from tbd.config import RunConfig
from tbd.frameworks import open_session

GPU = [
    dict(workload="timm:vit_base_patch16_224", batch_size=128, hparams={}),
    dict(workload="hf:bert-base-uncased", batch_size=32, hparams={"seq_len": 512}),
]
SMOKE = [
    dict(workload="timm:resnet18", batch_size=2, hparams={"image_size": 32, "num_classes": 10}),
    dict(workload="hf:bert-base-uncased", batch_size=2,
         hparams={"seq_len": 32, "hf_config": {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}}),
]


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def plain_step(session):
    """One training step written by hand over the session's model, optimizer, batch and loss."""
    model, optimizer, loss_of, batch = session.model, session.optimizer, session.task.loss, session.batches[0]
    dtype = torch.bfloat16 if session.config.precision == "bf16" else None

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(session.device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_of(model, batch)
        loss.backward()
        optimizer.step()
        return loss

    return step


def plain_rate(config: RunConfig, warmup: int, steps: int) -> dict:
    session = open_session(config)
    try:
        step = plain_step(session)
        for _ in range(warmup):
            step()
        synchronize(config.device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(config.device)
        seconds = time.perf_counter() - start
        return {"samples_per_s": steps * config.batch_size / seconds, "step_ms": seconds / steps * 1e3, "steps": steps}
    finally:
        session.close()


def measured_step(config: RunConfig, home: str | None, budget: dict) -> dict:
    session = open_session(config)
    try:
        r = tbd.measure(plain_step(session), samples_per_step=config.batch_size, device=config.device, framework="torch",
                        precision=config.precision, name=f"plain {config.workload}", count_flops=True, home=home, **budget)
    finally:
        session.close()
    return {"samples_per_s": r.samples_per_s, "ci_pct": r.ci_pct, "mfu_pct": r.mfu_pct, "id": r.id, "status": r.status, "error": r.error}


def compare(case: dict, device: str, precision: str, home: str | None, warmup: int, steps: int, budget: dict) -> dict:
    config = RunConfig(workload=case["workload"], device=device, precision=precision, batch_size=case["batch_size"],
                       hparams=case["hparams"], isolate=False).validated()
    out: dict = {"workload": case["workload"], "batch_size": case["batch_size"], "precision": precision, "hparams": case["hparams"]}
    out["plain_1"] = plain_rate(config, warmup, steps)
    r = tbd.run(case["workload"], device=device, precision=precision, batch_size=case["batch_size"], hparams=case["hparams"],
                isolate=False, home=home, **{"max_time_s": budget["max_time_s"], "min_window_s": budget["min_window_s"]})
    out["tbd_run"] = {"samples_per_s": r.samples_per_s, "ci_pct": r.ci_pct, "mfu_pct": r.mfu_pct, "id": r.id, "status": r.status,
                      "flops_per_sample": r.metrics.get("model_flops_per_sample"), "error": r.error}
    out["tbd_measure"] = measured_step(config, home, budget)
    out["plain_2"] = plain_rate(config, warmup, steps)
    plain = max(out["plain_1"]["samples_per_s"], out["plain_2"]["samples_per_s"])
    for key in ("tbd_run", "tbd_measure"):
        rate = out[key]["samples_per_s"]
        out[key]["harness_cost_pct"] = (1 - rate / plain) * 100 if rate else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU: checks the script, numbers mean nothing")
    parser.add_argument("--home", help="results store for the tbd.run / tbd.measure records (default: tbd's)")
    parser.add_argument("--out", help="also write the comparison as JSON here")
    args = parser.parse_args(argv)
    if args.smoke:
        cases, device, precision, warmup, steps = SMOKE, "cpu", "fp32", 2, 5
        budget = dict(max_time_s=5.0, min_window_s=0.5, max_steps=30)
    else:
        if not torch.cuda.is_available():
            sys.exit("no GPU visible: run with --smoke for a CPU check")
        cases, device, precision, warmup, steps = GPU, "cuda", "bf16", 10, 50
        budget = dict(max_time_s=60.0, min_window_s=3.0, max_steps=300)
    results = []
    for case in cases:
        row = compare(case, device, precision, args.home, warmup, steps, budget)
        results.append(row)
        plain = max(row["plain_1"]["samples_per_s"], row["plain_2"]["samples_per_s"])
        print(f"{row['workload']:<28} plain {plain:10.1f} samples/s | tbd.run {row['tbd_run']['samples_per_s'] or 0:10.1f} "
              f"(cost {row['tbd_run']['harness_cost_pct'] or 0:+.2f}%, MFU {row['tbd_run']['mfu_pct'] or 0:.1f}%) | "
              f"tbd.measure {row['tbd_measure']['samples_per_s'] or 0:10.1f} (cost {row['tbd_measure']['harness_cost_pct'] or 0:+.2f}%)",
              flush=True)
    ok = all(r[k]["status"] == "ok" for r in results for k in ("tbd_run", "tbd_measure"))
    within = all((r[k]["harness_cost_pct"] or 0) <= 1.0 for r in results for k in ("tbd_run", "tbd_measure"))
    summary = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__, "results": results,
               "all_ok": ok, "harness_cost_within_1pct": within}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1, default=str)
    print(f"all runs ok: {ok}; harness cost within 1%: {within}" + (" (smoke: CPU numbers are noise)" if args.smoke else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
