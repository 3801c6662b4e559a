"""Faster R-CNN R101-FPN training on one GPU: tbd against a plain torchvision loop, same call.

    PYTHONPATH=src python3 bench/faster_rcnn_gpu.py --out OUT     # on a GPU machine
    PYTHONPATH=src python3 bench/faster_rcnn_gpu.py --smoke       # CPU check of the script

Both train torchvision's FasterRCNN (ResNet-101 FPN, frozen BN, 21 classes, 128 RoIs per image)
with SGD at batch 2, fp32, on synthetic VOC-sized images (long side 500, short side 281-375, one
orientation per batch, 1-5 boxes), resized by the model to a short side of 600 (at most 1000):
- the plain loop as a user writes it: the model's default padding to multiples of 32, cuDNN's
  autotuner off (PyTorch's default), warm-up steps, then timed steps between two syncs;
- `tbd run faster_rcnn --flavor paper` (child process, its harness: padding to multiples of 128
  so a handful of shapes recur, autotuning on, stop at +-3% CI or 60 s).
The goals (issue 15): tbd's 95% CI within +-3%, at least 1.0x the plain loop, peak allocated at
batch 2 under 8 GiB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from tbd import registry
from tbd.config import RunConfig
from tbd.harness.launcher import launch
from tbd.workloads.faster_rcnn.torch_impl import make_images, make_model


def plain_loop(hp: dict, device: str, warmup: int, steps: int, batch: int, cudnn_tf32: bool = True) -> dict:
    """img/s of a plain training loop over freshly drawn batches (sizes vary step to step);
    `cudnn_tf32` is PyTorch's default (TF32 convolutions), False is true fp32 as tbd's fp32."""
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    torch.manual_seed(0)
    model = make_model({**hp, "pad_multiple": 32}, seed=0).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-5, momentum=0.9, weight_decay=1e-4, foreach=True)
    gen = torch.Generator(device=device).manual_seed(1)
    pool = [make_images(gen, torch.device(device), hp, batch) for _ in range(8)]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step(i: int) -> None:
        images, targets = pool[i % len(pool)]
        opt.zero_grad(set_to_none=True)
        loss = sum(model(images, targets).values())
        loss.backward()
        opt.step()

    for i in range(warmup):
        step(i)
    warmup_peak = None
    if device == "cuda":  # the timed steps' own peak, apart from the first steps' (algorithm choices, allocator growth)
        warmup_peak = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step(warmup + i)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return {"images_per_s": batch * len(times) / sum(times), "step_ms_median": statistics.median(times) * 1e3,
            "peak_allocated_bytes": max(peak, warmup_peak) if peak is not None else None, "steady_peak_allocated_bytes": peak,
            "warmup_peak_allocated_bytes": warmup_peak, "steps": steps, "cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_tf32": cudnn_tf32}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="folder for faster_rcnn_gpu.json")
    ap.add_argument("--smoke", action="store_true", help="tiny flavor on the CPU: checks the script")
    ap.add_argument("--max-time", type=float, default=60.0, help="tbd's time budget in seconds (default: 60)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "tf32"),
                    help="fp32: true fp32 on both sides; tf32: tbd at tf32 against the plain loop's defaults (TF32 convolutions)")
    args = ap.parse_args()
    device, flavor = ("cpu", "tiny") if args.smoke else ("cuda", "paper")
    hp = dict(registry.get_spec("faster_rcnn").flavor(flavor).hparams)
    batch = 2
    out: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__,
                 "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "batch": batch, "flavor": flavor}
    out["precision"] = args.precision
    out["plain"] = plain_loop(hp, device, warmup=3 if args.smoke else 10, steps=4 if args.smoke else 40, batch=batch,
                              cudnn_tf32=args.precision == "tf32")
    if device == "cuda":
        torch.cuda.empty_cache()
    config = RunConfig(workload="faster_rcnn", flavor=flavor, device=device, batch_size=batch,
                       precision=args.precision if device == "cuda" else "fp32",
                       max_time_s=10 if args.smoke else args.max_time, max_steps=20 if args.smoke else 2000, target_ci_pct=3.0).validated()
    record = launch(config)
    met, mem = record.get("metrics") or {}, record.get("memory") or {}
    out["tbd"] = {"status": record["status"], "error": (record.get("error") or {}).get("message"), "images_per_s": met.get("images_per_s"),
                  "ci_pct": met.get("throughput_ci95_half_width_pct"), "step_ms_median": met.get("step_time_ms_p50"),
                  "peak_allocated_bytes": mem.get("peak_allocated_bytes"), "steady_peak_allocated_bytes": mem.get("steady_peak_allocated_bytes"),
                  "warmup_peak_allocated_bytes": mem.get("warmup_peak_allocated_bytes"), "stop_reason": (record.get("method") or {}).get("stop_reason")}
    if out["tbd"]["images_per_s"]:
        out["tbd"]["x_plain"] = out["tbd"]["images_per_s"] / out["plain"]["images_per_s"]
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"faster_rcnn_gpu_{args.precision}.json").write_text(json.dumps(out, indent=1))
    gib = 2**30
    for name in ("plain", "tbd"):
        r = out[name]
        peak = f"{r['peak_allocated_bytes'] / gib:.1f} GiB" if r.get("peak_allocated_bytes") else "-"
        if r.get("steady_peak_allocated_bytes"):
            peak += f" (steady steps {r['steady_peak_allocated_bytes'] / gib:.1f} GiB)"
        ci = f" +-{r['ci_pct']:.1f}%" if r.get("ci_pct") is not None else ""
        print(f"{name:<6} {r.get('images_per_s') or 0:8.2f} img/s{ci}  step {r.get('step_ms_median') or 0:.1f} ms  peak {peak}")
    if out["tbd"].get("x_plain"):
        print(f"tbd / plain: {out['tbd']['x_plain']:.2f}x")


if __name__ == "__main__":
    main()
