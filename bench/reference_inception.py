"""Reference for inception_v3: torchvision's Inception-v3 in a plain training loop.

    python3 bench/reference_inception.py --out $OUT       # on a GPU machine (about a minute)
    python3 bench/reference_inception.py --smoke          # CPU check of the script, tiny sizes

Setting (REFERENCE_NUMBERS.md): torchvision `inception_v3(aux_logits=False)`, batch 256, 299 px,
1000 classes, bf16 autocast, channels_last, eager, SGD (lr 0.1, momentum 0.9, wd 1e-4, foreach),
synthetic data resident on the GPU. Method: warm-up steps (cuDNN autotuning), then a timed window
with a CUDA event after every step and one host sync at the end; the result is batch / median
step time. Compare with, in the same GPU call:

    PYTHONPATH=src python3 -m tbd.cli run inception_v3 --device cuda --flavor paper -b 256 \
        --precision bf16 --channels-last

Imports only torch and torchvision (no tbd), so it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision


def measure(batch: int, size: int, classes: int, warmup: int, steps: int, device: str) -> dict:
    torch.manual_seed(0)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=classes)
    model = model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=True)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=device, generator=g)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    for _ in range(warmup):
        step()
    seconds = []
    if device == "cuda":
        torch.cuda.synchronize()
        events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
        events[0].record()
        for i in range(steps):
            loss = step()
            events[i + 1].record()
        events[-1].synchronize()
        seconds = [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(steps)]
    else:  # CPU ops are synchronous: a host clock per step is exact
        for _ in range(steps):
            t0 = time.perf_counter()
            loss = step()
            seconds.append(time.perf_counter() - t0)
    median = statistics.median(seconds)
    return {
        "img_per_s": batch / median,
        "step_ms_median": median * 1e3,
        "img_per_s_window_mean": batch * steps / sum(seconds),
        "step_s": seconds,
        "final_loss": float(loss),
        "peak_allocated_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-out", help="folder for reference_inception.json")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, to check the script")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 256; 2 with --smoke)")
    args = ap.parse_args()
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible; run with --smoke for a CPU check")
    batch = args.batch or (2 if args.smoke else 256)
    size, classes = (75, 10) if args.smoke else (299, 1000)
    warmup, steps = (1, 3) if args.smoke else (15, 40)

    result = measure(batch, size, classes, warmup, steps, device)
    result.update({
        "implementation": "torchvision inception_v3(aux_logits=False), eager",
        "setting": {"batch": batch, "image_size": size, "num_classes": classes, "precision": "bf16 autocast",
                    "memory_format": "channels_last", "optimizer": "SGD lr 0.1 momentum 0.9 wd 1e-4 foreach",
                    "warmup_steps": warmup, "timed_steps": steps,
                    "timing": "CUDA event per step, median" if device == "cuda" else "host clock per step, median"},
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    })
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reference_inception.json").write_text(json.dumps(result, indent=1))
    print(f"\nInception-v3 reference (torchvision, no aux), batch {batch}, {size} px, bf16, channels_last, eager — {result['device']}")
    print(f"  {'img/s (median step)':24s} {result['img_per_s']:10.1f}")
    print(f"  {'step ms (median)':24s} {result['step_ms_median']:10.2f}")
    print(f"  {'img/s (window mean)':24s} {result['img_per_s_window_mean']:10.1f}")
    print(json.dumps({"img_per_s": result["img_per_s"]}))


if __name__ == "__main__":
    main()
