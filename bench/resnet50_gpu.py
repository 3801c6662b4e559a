"""ResNet-50 training speed on one GPU: tbd against the public references, in one run.

    PYTHONPATH=src python3 bench/resnet50_gpu.py --out results/    # on a GPU machine
    PYTHONPATH=src python3 bench/resnet50_gpu.py --smoke           # CPU check of the script

Compares, at batch 256, bf16 autocast, channels_last, SGD, synthetic data on the GPU:
- timm `resnet50` and torchvision `resnet50` in a plain loop (the REFERENCE_NUMBERS setting),
  eager and torch.compile'd;
- `tbd run resnet50` (the whole harness, in process), eager and compiled;
- the harness's cost: tbd's measured window mean against a bare loop of the same session's
  steps (one sync at the end), alternated twice;
- JAX/Flax ResNet-50 through `tbd run --framework jax` (child process, so XLA gets the memory).
The reference loop is timed the same way as REFERENCE_NUMBERS.md: warm-up, then a window
between CUDA synchronizations.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tbd import frameworks


def reference_loop(make_model, batch: int, size: int, compile_: bool, warmup: int, steps: int, device: str) -> float:
    """img/s of a plain training loop: the public-implementation baseline."""
    model = make_model().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=True)
    fwd = torch.compile(model) if compile_ else model
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device, generator=g)
    dtype = torch.bfloat16

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.split(":")[0], dtype=dtype):
            loss = F.cross_entropy(fwd(x), y)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    rate = batch * steps / (time.perf_counter() - t0)
    model = opt = fwd = None  # drop the references (step() closes over them) before freeing
    _free(device)
    return rate


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _free(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def harness_overhead(config, rounds: int, steps: int) -> dict:
    """Harness window mean vs a bare loop over the same session (alternated)."""
    from tbd.harness.measure import measure
    from tbd.metrics.sampling import Probe

    session = frameworks.open_session(config)
    session.run_steps(15)  # warm-up (compile, cudnn autotune)
    probe = Probe(0 if config.device == "cuda" else None)
    bare, harnessed = [], []
    for _ in range(rounds):
        _sync(config.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            session.step()
        _sync(config.device)
        bare.append(config.batch_size * steps / (time.perf_counter() - t0))
        cfg = dataclasses.replace(config, max_steps=steps, target_ci_pct=0.0)
        m = measure(session, cfg, None, probe)
        harnessed.append(sum(m.units) / sum(m.step_s))
    probe.close()
    session.close()
    _free(config.device)
    b, h = sum(bare) / len(bare), sum(harnessed) / len(harnessed)
    return {"bare_img_per_s": bare, "harness_img_per_s": harnessed, "overhead_pct": (b - h) / b * 100.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, to check the script")
    ap.add_argument("--skip-jax", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TBD_HOME", str(out / "tbd-home"))

    from tbd.config import RunConfig
    from tbd.harness.launcher import launch
    from tbd.harness.runner import execute

    smoke = args.smoke
    device = "cpu" if smoke else "cuda"
    batch, size = (4, 32) if smoke else (256, 224)
    warmup, steps = (2, 3) if smoke else (20, 50)
    flavor = "tiny" if smoke else "paper"
    results: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
                     "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "batch": batch}
    try:
        import timm

        results["timm"] = timm.__version__
        makers = {"timm": lambda: timm.create_model("resnet50", num_classes=1000)}
    except ImportError:
        makers = {}
    import torchvision

    results["torchvision"] = torchvision.__version__
    makers["torchvision"] = lambda: torchvision.models.resnet50()
    rows = []
    for compile_ in (False, True):
        mode = "compiled" if compile_ else "eager"
        for name, make in makers.items():
            rate = reference_loop(make, batch, size, compile_, warmup, steps, device)
            rows.append((f"{name} {mode}", rate, None))
        cfg = RunConfig(workload="resnet50", framework="torch", flavor=flavor, device=device, batch_size=batch,
                        precision="bf16", compile=compile_, channels_last=True, isolate=False,
                        max_time_s=10 if smoke else 60, max_steps=8 if smoke else 400).validated()
        record = execute(cfg)
        m = record["metrics"]
        rows.append((f"tbd torch {mode}", m.get("images_per_s"), m.get("mfu_pct")))
        results[f"tbd_torch_{mode}"] = {k: record[k] for k in ("metrics", "method", "memory", "error", "status")}
        _free(device)
        if not compile_:
            results["harness_overhead"] = harness_overhead(dataclasses.replace(cfg, max_steps=10), 2, 4 if smoke else 60)
    if not args.skip_jax:
        jcfg = RunConfig(workload="resnet50", framework="jax", flavor=flavor, device=device, batch_size=batch,
                         precision="bf16", isolate=True, max_time_s=10 if smoke else 60, max_steps=8 if smoke else 400).validated()
        record = launch(jcfg)
        results["tbd_jax"] = {k: record[k] for k in ("metrics", "method", "memory", "error", "status", "environment")}
        m = record.get("metrics") or {}
        rows.append(("tbd jax (jit)", m.get("images_per_s"), m.get("mfu_pct")))
    results["rows"] = [{"name": n, "img_per_s": r, "mfu_pct": u} for n, r, u in rows]
    (out / "resnet50_gpu.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nResNet-50 training, batch {batch}, bf16, channels_last — {results['device']}, torch {results['torch']}")
    for n, r, u in rows:
        print(f"  {n:28s} {r if r is None else round(r, 1):>10} img/s   MFU {'-' if u is None else round(u, 1)}")
    print(f"  harness overhead vs bare loop: {results['harness_overhead']['overhead_pct']:.2f}%")


if __name__ == "__main__":
    main()
