"""Faster R-CNN R101-FPN training on one GPU: tbd against a plain torchvision loop, same call.

    PYTHONPATH=src python3 bench/faster_rcnn_gpu.py --out OUT     # on a GPU machine
    PYTHONPATH=src python3 bench/faster_rcnn_gpu.py --out OUT --rounds 3 --max-time 40   # ABABAB: ~5 min
    PYTHONPATH=src python3 bench/faster_rcnn_gpu.py --out OUT --precision tf32 --interleave 12 --window 8   # one process, ~4 min
    PYTHONPATH=src python3 bench/faster_rcnn_gpu.py --smoke       # CPU check of the script

Both train torchvision's FasterRCNN (ResNet-101 FPN, frozen BN, 21 classes, 128 RoIs per image)
with SGD at batch 2, fp32, on synthetic VOC-sized images (long side 500, short side 281-375, one
orientation per batch, 1-5 boxes), resized by the model to a short side of 600 (at most 1000):
- the plain loop as a user writes it: the model's default padding to multiples of 32, cuDNN's
  autotuner off (PyTorch's default), warm-up steps, then timed steps between two syncs;
- `tbd run faster_rcnn --flavor paper` (child process, its harness: padding to multiples of 128
  so a handful of shapes recur, autotuning on, stop at +-3% CI or 60 s).
With --rounds N the two alternate N times in the call (plain, tbd, plain, tbd, ...): the ratio of
each round and their median and range, so a ratio near 1.0x is read against the variation between
rounds on the same card (two single rounds the same day gave 1.01x and 0.95x).
With --interleave N, tbd's session and the plain loop share one process and alternate N pairs
of short windows (`interleaved`): three rounds on an H200 saw the plain loop itself move between
26.7 and 35.9 img/s from one round to the next, more than the ratio's distance from 1.0, so the
two sides must be measured close together in time for the ratio to mean anything.
The goals (issue 15): tbd's 95% CI within +-3%, at least 1.0x the plain loop, peak allocated at
batch 2 under 8 GiB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from tbd import registry
from tbd.config import RunConfig
from tbd.harness.launcher import launch
from tbd.workloads.faster_rcnn.torch_impl import make_images, make_model


class PlainLoop:
    """A plain training loop as a user writes it, built once: its model, SGD and a pool of 8 batches
    drawn once (sizes vary step to step). `cudnn_tf32` is PyTorch's default (TF32 convolutions),
    False is true fp32 as tbd's fp32; the autotuner stays off (PyTorch's default)."""

    def __init__(self, hp: dict, device: str, batch: int, cudnn_tf32: bool = True):
        self.device, self.batch, self.cudnn_tf32, self.i = device, batch, cudnn_tf32, 0
        torch.manual_seed(0)
        self.model = make_model({**hp, "pad_multiple": 32}, seed=0).to(device).train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(params, lr=1e-5, momentum=0.9, weight_decay=1e-4, foreach=True)
        gen = torch.Generator(device=device).manual_seed(1)
        self.pool = [make_images(gen, torch.device(device), hp, batch) for _ in range(8)]

    def flags(self) -> None:
        """Its process-wide cuDNN settings (set again before each window where tbd's session shares the process)."""
        torch.backends.cudnn.allow_tf32 = self.cudnn_tf32
        torch.backends.cudnn.benchmark = False

    def step(self) -> None:
        images, targets = self.pool[self.i % len(self.pool)]
        self.i += 1
        self.opt.zero_grad(set_to_none=True)
        loss = sum(self.model(images, targets).values())
        loss.backward()
        self.opt.step()

    def window(self, steps: int) -> float:
        """Seconds of `steps` steps between two syncs (none inside: the host queues ahead as a training loop does)."""
        self.flags()
        if self.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        if self.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def plain_loop(hp: dict, device: str, warmup: int, steps: int, batch: int, cudnn_tf32: bool = True) -> dict:
    """img/s of a plain training loop (`PlainLoop`) after `warmup` steps, with its peaks."""
    loop = PlainLoop(hp, device, batch, cudnn_tf32)
    loop.flags()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        loop.step()
    warmup_peak = None
    if device == "cuda":  # the timed steps' own peak, apart from the first steps' (algorithm choices, allocator growth)
        warmup_peak = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    seconds = loop.window(steps)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return {"images_per_s": batch * steps / seconds, "step_ms_mean": seconds / steps * 1e3,
            "peak_allocated_bytes": max(peak, warmup_peak) if peak is not None else None, "steady_peak_allocated_bytes": peak,
            "warmup_peak_allocated_bytes": warmup_peak, "steps": steps, "cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_tf32": cudnn_tf32}


def kernels_per_step(run, steps: int = 5) -> float | None:
    """GPU events (kernels, copies) per step over `steps` steps of `run(steps)`, from torch.profiler:
    what the host launched, the work of a step paced by its launches. None off a GPU."""
    if not torch.cuda.is_available():
        return None
    from torch.profiler import ProfilerActivity, profile

    try:  # a count for the record; a profiler that fails here must not cost the call its pairs
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            run(steps)
            torch.cuda.synchronize()
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA) / steps
    except Exception as e:  # noqa: BLE001
        print(f"kernels per step not counted: {type(e).__name__}: {e}", flush=True)
        return None


def interleaved(config: RunConfig, hp: dict, pairs: int, window_s: float, cudnn_tf32: bool) -> dict:
    """tbd and the plain loop in one process, in alternating windows of about `window_s` each
    (plain-tbd, then tbd-plain, ...), so that a change in the host's speed during the call falls on
    both alike. tbd's side is its session stepped by its own measurement loop
    (`tbd.harness.measure`: chunks, syncs, warm-up detection, its throughput statistic), as `tbd
    run` does in its child process. The ratio is the median of the pairs' ratios, with the
    distribution-free 95% CI of that median (`tbd.harness.stats.median_ci`)."""
    import dataclasses

    from tbd import frameworks
    from tbd.harness.measure import derive_metrics, measure
    from tbd.harness.stats import median_ci

    spec = registry.get_spec(config.workload)
    session = frameworks.open_session(config)
    tbd_flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    plain = PlainLoop(hp, config.device, config.batch_size, cudnn_tf32)
    window = dataclasses.replace(config, max_time_s=window_s, target_ci_pct=0.0)  # each tbd window runs its full time

    def tbd_window() -> float:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tbd_flags
        metrics, _ = derive_metrics(measure(session, window), window, spec, session.info.device_name, 1)
        return metrics["images_per_s"]

    def plain_window(steps: int) -> float:
        return config.batch_size * steps / plain.window(steps)

    try:
        plain_window(10)  # warm-up: first steps, algorithm choices, allocator growth
        tbd_window()  # its first pass (autotuning each padded shape), discarded
        steps = max(4, round(window_s * plain_window(10) / config.batch_size))

        def tbd_steps(n: int) -> None:
            torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tbd_flags
            session.run_steps(n)

        launched = {"plain": kernels_per_step(plain.window), "tbd": kernels_per_step(tbd_steps)}
        if launched["plain"]:
            print(f"GPU kernels and copies per step: plain {launched['plain']:.0f}, tbd {launched['tbd']:.0f}", flush=True)
        rows, stopped = [], None
        for k in range(pairs):
            order = ("plain", "tbd") if k % 2 == 0 else ("tbd", "plain")
            try:
                rates = {side: plain_window(steps) if side == "plain" else tbd_window() for side in order}
            except Exception as e:  # noqa: BLE001 - a failed window (a loss gone NaN) ends the pairs; those measured are kept
                stopped = f"pair {k + 1}: {type(e).__name__}: {e}"
                print(f"stopped at {stopped}", flush=True)
                break
            rows.append({"first": order[0], "plain_images_per_s": rates["plain"], "tbd_images_per_s": rates["tbd"],
                         "x_plain": rates["tbd"] / rates["plain"]})
            print(f"pair {k + 1} ({order[0]} first): plain {rates['plain']:.2f} img/s, tbd {rates['tbd']:.2f} img/s, "
                  f"tbd / plain {rows[-1]['x_plain']:.3f}x", flush=True)
    finally:
        session.close()
    ratio, low, high = median_ci([r["x_plain"] for r in rows]) if rows else (None, None, None)
    return {"pairs": rows, **({"stopped": stopped} if stopped else {}), "gpu_events_per_step": launched,
            "window_s": window_s, "plain_steps_per_window": steps, "x_plain_median": ratio, "x_plain_ci95": [low, high],
            "method": interleaved.__doc__.split("\n\n")[0].replace("\n", " ")}


def tbd_run(config: RunConfig) -> dict:
    """`tbd run faster_rcnn` as a user runs it (a child process and its harness)."""
    record = launch(config)
    met, mem = record.get("metrics") or {}, record.get("memory") or {}
    return {"status": record["status"], "error": (record.get("error") or {}).get("message"), "images_per_s": met.get("images_per_s"),
            "ci_pct": met.get("throughput_ci95_half_width_pct"), "step_ms_median": met.get("step_time_ms_p50"),
            "peak_allocated_bytes": mem.get("peak_allocated_bytes"), "steady_peak_allocated_bytes": mem.get("steady_peak_allocated_bytes"),
            "warmup_peak_allocated_bytes": mem.get("warmup_peak_allocated_bytes"), "stop_reason": (record.get("method") or {}).get("stop_reason")}


def print_round(number: int, plain: dict, tbd: dict) -> None:
    gib = 2**30
    for name, r in (("plain", plain), ("tbd", tbd)):
        peak = f"{r['peak_allocated_bytes'] / gib:.1f} GiB" if r.get("peak_allocated_bytes") else "-"
        if r.get("steady_peak_allocated_bytes"):
            peak += f" (steady steps {r['steady_peak_allocated_bytes'] / gib:.1f} GiB)"
        ci = f" +-{r['ci_pct']:.1f}%" if r.get("ci_pct") is not None else ""
        step = r.get("step_ms_median") or r.get("step_ms_mean") or 0
        print(f"round {number} {name:<6} {r.get('images_per_s') or 0:8.2f} img/s{ci}  step {step:.1f} ms  peak {peak}")
    if tbd.get("x_plain"):
        print(f"round {number} tbd / plain: {tbd['x_plain']:.3f}x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="folder for faster_rcnn_gpu.json")
    ap.add_argument("--smoke", action="store_true", help="tiny flavor on the CPU: checks the script")
    ap.add_argument("--max-time", type=float, default=60.0, help="tbd's time budget in seconds (default: 60)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "tf32"),
                    help="fp32: true fp32 on both sides; tf32: tbd at tf32 against the plain loop's defaults (TF32 convolutions)")
    ap.add_argument("--rounds", type=int, default=1, help="plain loop and tbd alternated this many times (default: 1)")
    ap.add_argument("--interleave", type=int, default=0, metavar="PAIRS",
                    help="instead of rounds: tbd's session and the plain loop in this process, PAIRS pairs of alternating windows")
    ap.add_argument("--window", type=float, default=8.0, help="seconds of each --interleave window (default: 8)")
    args = ap.parse_args()
    device, flavor = ("cpu", "tiny") if args.smoke else ("cuda", "paper")
    hp = dict(registry.get_spec("faster_rcnn").flavor(flavor).hparams)
    batch = 2
    out: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__,
                 "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "batch": batch, "flavor": flavor}
    out["precision"] = args.precision
    config = RunConfig(workload="faster_rcnn", flavor=flavor, device=device, batch_size=batch,
                       precision=args.precision if device == "cuda" else "fp32",
                       max_time_s=10 if args.smoke else args.max_time, max_steps=20 if args.smoke else 2000, target_ci_pct=3.0).validated()
    if args.interleave:
        result = interleaved(config, hp, args.interleave, 1.0 if args.smoke else args.window, cudnn_tf32=args.precision == "tf32")
        out["interleaved"] = result
        low, high = result["x_plain_ci95"]
        if result["pairs"]:
            print(f"tbd / plain over {len(result['pairs'])} interleaved pairs: median {result['x_plain_median']:.3f}x "
                  f"(95% CI {low:.3f}-{high:.3f}x)")
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"faster_rcnn_gpu_{args.precision}_interleaved.json").write_text(json.dumps(out, indent=1))
        sys.exit(1 if result.get("stopped") else 0)
    out["rounds"] = []
    for _ in range(args.rounds):
        plain = plain_loop(hp, device, warmup=3 if args.smoke else 10, steps=4 if args.smoke else 40, batch=batch,
                           cudnn_tf32=args.precision == "tf32")
        if device == "cuda":
            torch.cuda.empty_cache()
        tbd = tbd_run(config)
        if tbd["images_per_s"]:
            tbd["x_plain"] = tbd["images_per_s"] / plain["images_per_s"]
        out["rounds"].append({"plain": plain, "tbd": tbd})
        print_round(len(out["rounds"]), plain, tbd)
    out["plain"], out["tbd"] = out["rounds"][-1]["plain"], out["rounds"][-1]["tbd"]  # the single-round layout of earlier files
    ratios = [r["tbd"]["x_plain"] for r in out["rounds"] if r["tbd"].get("x_plain")]
    if ratios:
        out["x_plain_median"], out["x_plain_range"] = statistics.median(ratios), [min(ratios), max(ratios)]
        print(f"tbd / plain over {len(ratios)} round(s): median {out['x_plain_median']:.3f}x, range {min(ratios):.3f}-{max(ratios):.3f}x")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"faster_rcnn_gpu_{args.precision}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
