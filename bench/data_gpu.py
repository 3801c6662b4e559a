"""How many CPU cores does a GPU need to stay fed? ResNet-50 from JPEGs on disk vs synthetic data.

    PYTHONPATH=src python3 bench/data_gpu.py --out DIR            # one GPU, about 4 minutes
    PYTHONPATH=src python3 bench/data_gpu.py --out DIR --device cpu --quick   # smoke test

Generates an ImageNet-style folder of JPEGs on this machine (10,000 images of about 500x375 by
default, written by a process pool), then measures with tbd's harness (`tbd run --data`):
- resnet50 paper flavor, batch 256, bf16, channels_last, on synthetic data (the ceiling);
- the same from the JPEG folder with 1, 4, 8 and 16 loader workers, decoding on the CPU (PIL
  in the workers) and on the GPU (workers read bytes; nvJPEG decodes the batch, crop, resize
  and flip on the device);
- for each loader setting, the loader alone (`tbd data bench`): images/s to the device.
Each point prints one line; everything goes to DIR/data_gpu.json. The goal checked: GPU
decoding at >= 90% of the synthetic throughput with 16 workers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def write_images(job: tuple[str, int, int, int, int, int]) -> int:
    """Worker: images [start, stop) of the folder, class i % classes; returns bytes written."""
    from tbd.data.images import save_jpeg, synthetic_picture

    root, start, stop, classes, width, height = job
    written = 0
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        w, h = (max(32, int(v * rng.uniform(0.7, 1.3))) for v in (width, height))
        if rng.random() < 0.3:
            w, h = h, w
        path = Path(root) / f"n{i % classes:08d}" / f"img_{i:07d}.JPEG"
        save_jpeg(synthetic_picture(rng, w, h, i), path)
        written += path.stat().st_size
    return written


def make_folder(root: Path, images: int, classes: int, size: tuple[int, int], procs: int) -> dict:
    for c in range(classes):
        (root / f"n{c:08d}").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    step = max(1, images // (procs * 8))
    jobs = [(str(root), s, min(images, s + step), classes, *size) for s in range(0, images, step)]
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        total = sum(pool.map(write_images, jobs))
    return {"images": images, "classes": classes, "mean_kib": total / images / 1024, "nominal_size": list(size),
            "generate_s": time.perf_counter() - t0}


def run_point(base: dict, **fields) -> dict:
    from tbd.config import RunConfig
    from tbd.harness.runner import execute

    config = RunConfig(**{**base, **fields}).validated()
    record = execute(config)
    m = record.metrics or {}
    return {"images_per_s": m.get("images_per_s"), "ci95_half_width_pct": m.get("throughput_ci95_half_width_pct"),
            "throughput_method": (record.method or {}).get("throughput"), "status": record.status, "step_ms_p50": m.get("step_time_ms_p50"),
            "input_stall_device_pct": m.get("input_stall_device_pct"), "input_wait_host_pct": m.get("input_wait_host_pct"),
            "cpu_cores_busy": m.get("cpu_cores_busy"), "gpu_util_nvml_pct": m.get("gpu_util_nvml_pct"),
            "data_skipped_samples": m.get("data_skipped_samples"),
            "error": (record.error or {}).get("message") if record.status == "failed" else None}


def loader_point(base: dict, seconds: float, **fields) -> dict:
    """The loader alone for about `seconds`: images/s to the device."""
    from tbd import registry
    from tbd.config import RunConfig

    config = RunConfig(**{**base, **fields}).validated()
    spec = registry.get_spec(config.workload)
    plugin = registry.framework(config.framework)
    feed, _, sync = plugin.open_loader(config, spec, registry.load_implementation(config.workload, config.framework), config.batch_size)
    try:
        for _ in range(2):
            feed.next()
        sync()
        before, t0 = feed.samples, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            feed.next()
        sync()
        return {"loader_images_per_s": (feed.samples - before) / (time.perf_counter() - t0)}
    finally:
        feed.close()


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:
        return None


def _cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def _shm_gib() -> float | None:
    """Shared memory the loader's workers hand batches through (a small /dev/shm breaks them)."""
    try:
        st = os.statvfs("/dev/shm")
        return st.f_bsize * st.f_blocks / 2**30
    except OSError:
        return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny flavor, 64 small images, workers 0 and 1 (a smoke test)")
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--workers", default="1,4,8,16")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--max-time", type=float, default=8.0, help="steady seconds per training point")
    p.add_argument("--loader-time", type=float, default=3.0, help="seconds per loader-only point")
    p.add_argument("--data", help="an existing ImageNet-style folder instead of generating one")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    import torch

    quick = args.quick
    flavor, batch = ("tiny", 8) if quick else ("paper", args.batch_size)
    workers = [0, 1] if quick else [int(w) for w in args.workers.split(",")]
    data = Path(args.data) if args.data else out / "jpeg-folder"
    dataset = {"path": str(data)}
    if not args.data:
        if data.exists():
            import shutil

            shutil.rmtree(data)
        images = 64 if quick else args.images
        dataset = make_folder(data, images, 4 if quick else 100, (96, 80) if quick else (500, 375), max(1, min(cores, 16)))
        print(f"dataset: {dataset['images']} JPEGs, {dataset['mean_kib']:.0f} KiB each on average, written in {dataset['generate_s']:.1f} s", flush=True)
    base = dict(workload="resnet50", flavor=flavor, device=args.device, batch_size=batch, precision=args.precision if not quick else "fp32",
                channels_last=True, compile=args.compile, max_time_s=args.max_time, max_steps=400, min_timed_steps=5,
                target_ci_pct=2.0, isolate=False)
    result = {
        "bench": "data_gpu", "date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor(),
        "torch": torch.__version__, "torchvision": _version("torchvision"), "pillow": _version("PIL"), "cpu_cores": cores,
        "cpu": _cpu_model(), "python": sys.version.split()[0], "dev_shm_gib": _shm_gib(),
        "config": {k: v for k, v in base.items() if k != "isolate"}, "dataset": dataset, "points": [],
    }
    t_all = time.perf_counter()
    print(f"{result['device']}, torch {result['torch']}, torchvision {result['torchvision']}, {cores} CPU cores ({result['cpu']}), "
          f"/dev/shm {result['dev_shm_gib'] or 0:.0f} GiB", flush=True)

    def record(point: dict) -> None:
        result["points"].append(point)
        (out / "data_gpu.json").write_text(json.dumps(result, indent=2))
        rate = point.get("images_per_s")
        loader = point.get("loader_images_per_s")
        print(f"{point['data']:9} decode={point.get('decode', '-'):3} workers={point.get('workers', '-')!s:>2}: "
              f"train {rate or 0:8.1f} img/s" + (f" +-{point['ci95_half_width_pct']:.1f}%" if point.get("ci95_half_width_pct") is not None else "")
              + (f", loader alone {loader:8.1f} img/s" if loader else "")
              + (f", device idle for input {point['input_stall_device_pct']:.1f}%" if point.get("input_stall_device_pct") is not None else "")
              + f" [{point.get('status')}]" + (f" error: {point['error']}" if point.get("error") else ""), flush=True)

    record({"data": "synthetic", **run_point(base)})
    decodes = ["cpu", "gpu"] if args.device == "cuda" else ["cpu"]
    for decode in decodes:
        for w in workers:
            fields = dict(data=str(data), workers=w, decode=decode, prefetch=4 if decode == "gpu" else 2)
            point = {"data": "jpeg", "decode": decode, "workers": w}
            try:
                point.update(loader_point(base, args.loader_time, **fields))
                point.update(run_point(base, **fields))
            except Exception as exc:  # one failed point is a result, not the end of the bench
                point.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:300])
            record(point)
    synthetic = result["points"][0]["images_per_s"] or 0
    for point in result["points"][1:]:
        point["share_of_synthetic_pct"] = (point.get("images_per_s") or 0) / synthetic * 100 if synthetic else None
    best_gpu = [p for p in result["points"] if p.get("decode") == "gpu" and p.get("workers") == max(workers)]
    result["goal"] = {"gpu_decode_share_of_synthetic_pct": best_gpu[0]["share_of_synthetic_pct"] if best_gpu else None, "target_pct": 90}
    result["total_s"] = time.perf_counter() - t_all
    (out / "data_gpu.json").write_text(json.dumps(result, indent=2))
    if best_gpu:
        print(f"goal: GPU decode with {max(workers)} workers at {result['goal']['gpu_decode_share_of_synthetic_pct']:.1f}% of synthetic (target >= 90%)")
    print(f"total {result['total_s']:.0f} s; results in {out / 'data_gpu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
