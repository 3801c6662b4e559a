"""`--decode gpu` on the device alone: the previous and the current `decode_on_device` on one batch
of JPEGs (nvJPEG decode, then crop, resize, flip), timed and their kernels counted.

    PYTHONPATH=src python3 bench/decode_gpu.py --out DIR            # one GPU, under a minute
    PYTHONPATH=src python3 bench/decode_gpu.py --out DIR --device cpu --quick   # smoke test

The batch: resnet50's (256 images, 224 output), JPEGs of about 500x375 (each side x0.7-1.3, 30%
portrait), written in memory as `bench/data_gpu.py` writes its folder, with tbd's crop boxes and
flips. Three variants run on it: nvJPEG alone ("decode"), the replaced version ("previous") and
the current one ("current"). For each: host and device (CUDA events) milliseconds per batch
(median of --repeats), and from torch.profiler the kernels per batch and their summed device
time, the launch count and time outside nvJPEG being the variant's minus "decode"'s. The two
outputs are compared: they should differ only on images whose crop reaches the bottom or right
edge of an image smaller than the batch's largest (the previous version blended zeros there).
One line per variant; DIR/decode_gpu.json holds everything, DIR/decode_gpu_kernels.txt the
profiler's kernel tables.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from tbd.data.images import crop_box, synthetic_picture
from tbd.frameworks.torch.data import decode_on_device


def jpeg_batch(batch: int, size: tuple[int, int], out_size: int, device: torch.device, seed: int = 0) -> dict:
    """The loader's host batch under --decode gpu (pinned on a GPU, as the DataLoader pins it)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    files, crops = [], []
    for i in range(batch):
        w, h = (max(32, int(v * rng.uniform(0.7, 1.3))) for v in size)
        if rng.random() < 0.3:
            w, h = h, w
        buffer = io.BytesIO()
        Image.fromarray(synthetic_picture(rng, w, h, i)).save(buffer, "JPEG", quality=90)
        files.append(np.frombuffer(buffer.getvalue(), np.uint8))
        crops.append(crop_box(w, h, rng))
    host = {"jpeg": torch.from_numpy(np.concatenate(files)), "jpeg_sizes": torch.tensor([len(f) for f in files]),
            "crop": torch.tensor(crops, dtype=torch.int32), "flip": torch.from_numpy(rng.random(batch) < 0.5),
            "labels": torch.arange(batch) % 1000}
    if device.type == "cuda":
        host = {k: v.pin_memory() for k, v in host.items()}
    return {**host, "image_size": out_size}


def previous_decode_on_device(host: dict, device: torch.device) -> dict:
    """The replaced version (tbd before this change), for the comparison."""
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.ops import roi_align

    files = list(torch.split(host["jpeg"], host["jpeg_sizes"].tolist()))
    decoded = decode_jpeg(files, mode=ImageReadMode.RGB, device=device)
    s = int(host["image_size"])
    dtype = torch.float16 if device.type == "cuda" and len(decoded) <= 2048 else torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        padded = torch.nested.nested_tensor(decoded).to_padded_tensor(0).to(dtype)
    top, left, h, w = host["crop"].to(device, non_blocking=True).to(dtype).unbind(1)
    index = torch.arange(len(decoded), device=device, dtype=dtype)
    boxes = torch.stack([index, left, top, left + w, top + h], dim=1)
    out = roi_align(padded, boxes, output_size=(s, s), spatial_scale=1.0, sampling_ratio=-1, aligned=True).float()
    flip = host["flip"].to(device, non_blocking=True)
    out = torch.where(flip[:, None, None, None], out.flip(-1), out).clamp_(0, 255)
    return {"images": out.permute(0, 2, 3, 1), "labels": host["labels"]}


def decode_only(host: dict, device: torch.device) -> dict:
    from torchvision.io import ImageReadMode, decode_jpeg

    return {"decoded": decode_jpeg(list(torch.split(host["jpeg"], host["jpeg_sizes"].tolist())), mode=ImageReadMode.RGB, device=device)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, host: dict, device: torch.device, repeats: int) -> dict:
    """Host and device milliseconds per batch (medians), after two warm-up calls."""
    for _ in range(2):
        fn(host, device)
    sync(device)
    host_ms, device_ms = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        fn(host, device)
        if device.type == "cuda":
            end.record()
        sync(device)
        host_ms.append((time.perf_counter() - t0) * 1e3)
        if device.type == "cuda":
            device_ms.append(start.elapsed_time(end))
    return {"host_ms_p50": statistics.median(host_ms), "device_ms_p50": statistics.median(device_ms) if device_ms else None}


def kernels(fn, host: dict, device: torch.device, calls: int) -> tuple[dict, str]:
    """Kernels per batch and their summed device milliseconds (torch.profiler), and the table."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    if device.type != "cuda":
        return {"kernels_per_batch": None, "kernel_ms_per_batch": None}, "not measurable here (no CUDA device)\n"
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn(host, device)
        sync(device)
    rows = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA and not e.key.startswith(("Memcpy", "Memset"))]
    self_us = lambda e: getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)  # noqa: E731
    table = "\n".join(f"{e.count / calls:8.1f} {self_us(e) / calls / 1e3:9.3f}  {e.key[:140]}" for e in sorted(rows, key=self_us, reverse=True))
    return ({"kernels_per_batch": sum(e.count for e in rows) / calls, "kernel_ms_per_batch": sum(self_us(e) for e in rows) / calls / 1e3},
            "launches/batch  ms/batch  kernel\n" + table + "\n")


def compare(host: dict, device: torch.device) -> dict:
    """The previous and current outputs on the same batch: where they differ, and by how much."""
    new = decode_on_device(host, device)["images"].float()
    old = previous_decode_on_device(host, device)["images"].float()
    differs = ((new - old).abs().flatten(1).amax(1) > 0.5).cpu()
    from torchvision.io import decode_jpeg

    shapes = [tuple(img.shape[1:]) for img in decode_jpeg(list(torch.split(host["jpeg"], host["jpeg_sizes"].tolist())))]
    h_max, w_max = max(h for h, _ in shapes), max(w for _, w in shapes)
    at_edge = torch.tensor([(t + h == sh < h_max) or (x + w == sw < w_max) for (sh, sw), (t, x, h, w) in zip(shapes, host["crop"].tolist())])
    return {"max_abs_diff": float((new - old).abs().max()), "mean_abs_diff": float((new - old).abs().mean()),
            "images_differing": int(differs.sum()), "images_at_a_padded_edge": int(at_edge.sum()),
            "differing_only_at_padded_edges": bool((differs <= at_edge).all()),
            "current_brighter_or_equal": bool(((new - old) > -0.5).all())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="16 small images, 3 repeats (a smoke test)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224, help="output side (resnet50: 224)")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; run with --device cpu --quick for a smoke test", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    batch, size, repeats = (16, (120, 90), 3) if args.quick else (args.batch_size, (500, 375), args.repeats)
    t0 = time.perf_counter()
    host = jpeg_batch(batch, size, 64 if args.quick else args.image_size, device)
    print(f"batch: {batch} JPEGs of about {size[0]}x{size[1]}, {host['jpeg'].numel() / batch / 1024:.0f} KiB each, "
          f"made in {time.perf_counter() - t0:.1f} s; {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"torch {torch.__version__}", flush=True)
    result: dict = {"device": args.device, "batch": batch, "nominal_size": list(size), "torch": torch.__version__, "variants": {}}
    tables = []
    for name, fn in (("decode", decode_only), ("previous", previous_decode_on_device), ("current", decode_on_device)):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        point = timed(fn, host, device, repeats)
        point["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        counted, table = kernels(fn, host, device, calls=3)
        point.update(counted)
        result["variants"][name] = point
        tables.append(f"== {name}\n{table}")
    base = result["variants"]["decode"]
    for name, point in result["variants"].items():
        extra = ""
        if name != "decode" and point["kernels_per_batch"] is not None:
            point["after_decode_kernels"] = point["kernels_per_batch"] - base["kernels_per_batch"]
            point["after_decode_kernel_ms"] = point["kernel_ms_per_batch"] - base["kernel_ms_per_batch"]
            extra = f"; after nvJPEG: {point['after_decode_kernels']:.0f} kernels, {point['after_decode_kernel_ms']:.2f} ms"
        counted = ("kernels: not measurable here (no CUDA device)" if point["kernels_per_batch"] is None
                   else f"{point['kernels_per_batch']:.0f} kernels, {point['kernel_ms_per_batch']:.2f} ms of kernels")
        device_ms = "-" if point["device_ms_p50"] is None else f"{point['device_ms_p50']:.2f}"
        memory = "" if point["peak_memory_gib"] is None else f", peak {point['peak_memory_gib']:.2f} GiB"
        print(f"{name:8}: host {point['host_ms_p50']:7.2f} ms, device {device_ms} ms per batch{memory}; {counted}{extra}", flush=True)
    result["comparison"] = compare(host, device)
    c = result["comparison"]
    print(f"previous vs current: max |diff| {c['max_abs_diff']:.2f}, mean {c['mean_abs_diff']:.4f} (of 255); "
          f"{c['images_differing']} image(s) differ, {c['images_at_a_padded_edge']} crop(s) reach a padded edge; "
          f"differences only there: {c['differing_only_at_padded_edges']}, current never darker: {c['current_brighter_or_equal']}")
    result["total_s"] = time.perf_counter() - t0
    (out / "decode_gpu.json").write_text(json.dumps(result, indent=2))
    (out / "decode_gpu_kernels.txt").write_text("\n".join(tables))
    print(f"total {result['total_s']:.0f} s; results in {out / 'decode_gpu.json'}, kernel tables in {out / 'decode_gpu_kernels.txt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
