"""Datasets on disk for PyTorch sessions (`tbd run WORKLOAD --data PATH`): a `DataLoader` over a
`tbd.data` dataset, and the feed that hands the session one device batch per step.

The loader: `--workers` processes decode and augment samples (`Dataset.__getitem__`) and
collate them (`Dataset.batch`, NumPy arrays turned into tensors without a copy); batches come
from one endless `BatchStream`, so epoch ends never drain the prefetch (`--prefetch` batches per
worker); on a GPU the loader pins them.

The feed, on a GPU: a thread takes pinned batches from the loader, copies them on a side CUDA
stream (non-blocking), decodes JPEGs there under `--decode gpu`, turns them into the workload's
batch (`from_host` of its torch_impl) and queues up to `--prefetch` ready batches, each with an
event. The training step makes its stream wait for that event only, so copies and decoding
overlap the previous step's kernels. On the CPU the feed is the loader itself.

GPU decoding: the workers read the file's bytes and its JPEG header (for the crop box) only;
`torchvision.io.decode_jpeg` decodes the whole batch on the device in one call (nvJPEG), and
each image is cropped, resized (bilinear, antialiased, as torchvision's RandomResizedCrop) and
flipped there, in about fifteen kernels per batch (`decode_on_device`; bench/decode_gpu.py
counts them), where the previous version took two or three per image:
- nvJPEG returns one contiguous (3, H, W) uint8 tensor per image. A nested tensor of them is one
  concatenation (batched copy kernels) and one conversion to the crop's dtype (half on a GPU),
  and its `to_padded_tensor` in that dtype is one CUDA kernel that writes every element of the
  padded batch once, image or zero. (The previous version padded the uint8 images: PyTorch's
  generic path, a fill and a copy per image and a stack, then converted the padded batch, so it
  wrote the padded batch three times and launched 2-3 kernels per image: 6.0 ms of the feed
  stream's kernels per resnet50 batch of 256 on an H200, competing with training's.)
- Each image's last row and column are repeated once past it (four small indexing kernels):
  roi_align's bilinear taps for a crop at the image's edge read there, and the zeros of the
  padding darkened such border pixels in every image but the batch's largest (whose edge
  roi_align itself repeats, at the padded batch's edge). So an image's pixels no longer depend
  on its batch mates' sizes.
- `roi_align` resizes all crops in one kernel; it reads only the crops, so the padding costs
  one write.
- Flip, conversion to float and clamp act on the small (B, 3, S, S) output. (roi_align cannot
  flip: a box with x1 > x2 gets no samples on the GPU and fails on the CPU.)
"""

from __future__ import annotations

import os
import queue
import threading
import warnings
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from tbd.data import recipes
from tbd.data.base import BatchStream, samples_in

STOP_POLL_S = 0.2  # how often a blocked feed thread checks whether the session closed
BATCH_TIMEOUT_S = 600.0  # no batch for this long: the loader hangs (a stuck file system, a wedged worker)


def to_tensors(value: Any) -> Any:
    """NumPy arrays (in dicts and lists) as tensors sharing their memory."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value if value.flags.writeable else value.copy())
    if isinstance(value, list):
        return [to_tensors(v) for v in value]
    if isinstance(value, dict):
        return {k: to_tensors(v) for k, v in value.items()}
    return value


class Collate:
    """The dataset's own collation, as tensors (a class, not a closure: workers may be spawned)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __call__(self, samples):
        return to_tensors(self.dataset.batch(samples))


def rank_shard() -> tuple[int, int]:
    """(rank, world size) under torchrun, so each rank reads its own share of the batches."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def make_loader(dataset, workers: int, prefetch: int, pin: bool, context: str | None = None) -> DataLoader:
    kwargs: dict[str, Any] = dict(batch_sampler=BatchStream(dataset, rank_shard()), collate_fn=Collate(dataset), num_workers=workers, pin_memory=pin)
    if workers > 0:
        kwargs.update(prefetch_factor=prefetch, multiprocessing_context=context, timeout=BATCH_TIMEOUT_S)
    return DataLoader(dataset, **kwargs)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor made here, copied without blocking: from pinned memory (a copy from pageable
    memory waits for the stream's queued work first)."""
    return (tensor.pin_memory() if device.type == "cuda" else tensor).to(device, non_blocking=True)


# The padded batch's elements per group: roi_align and the nested tensor's padding kernel index with
# 32-bit ints (overflow past 2**31), and a bound keeps the padded copy's memory in check (2 GiB in halves).
PADDED_ELEMENTS_MAX = 2**30


def padded_groups(shapes: list[tuple[int, int]]) -> list[list[int]]:
    """The batch's image indices in groups, each padded to its largest height and width (+1) with at
    most PADDED_ELEMENTS_MAX elements: the whole batch in order when it fits (ImageNet-sized images,
    batch 256: about a third of it), else smallest first, so large images share padding with each other."""
    def padded(h: int, w: int, n: int) -> int:
        return 3 * (h + 1) * (w + 1) * n

    everything = list(range(len(shapes)))
    if padded(max(h for h, _ in shapes), max(w for _, w in shapes), len(shapes)) <= PADDED_ELEMENTS_MAX:
        return [everything]
    groups: list[list[int]] = [[]]
    h_max = w_max = 0
    for i in sorted(everything, key=lambda i: shapes[i][0] * shapes[i][1]):
        h, w = shapes[i]
        if groups[-1] and padded(max(h_max, h), max(w_max, w), len(groups[-1]) + 1) > PADDED_ELEMENTS_MAX:
            groups.append([])
            h_max = w_max = 0
        groups[-1].append(i)
        h_max, w_max = max(h_max, h), max(w_max, w)
    return groups


def decode_on_device(host: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A batch of JPEG bytes with crop boxes and flips -> {"images": (B, S, S, 3) float in
    [0, 255] on the device (an NHWC view of NCHW memory), "labels"}.

    A handful of launches per batch, not a few per image (see the module docstring): nvJPEG decodes
    the batch; the images become one padded batch in the crop's dtype (a nested tensor: one
    concatenation, one conversion, one padding kernel), each image's edge repeated once past it;
    one `roi_align` resizes every crop (its
    adaptive sampling, ceil(crop / S) samples per output pixel per axis, averaged, is an area filter,
    so a downscale is antialiased as torchvision's RandomResizedCrop does); the flips and the clamp
    follow on the small (B, 3, S, S) output."""
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.ops import roi_align

    files = list(torch.split(host["jpeg"], host["jpeg_sizes"].tolist()))  # views of the one buffer, each contiguous
    decoded = decode_jpeg(files, mode=ImageReadMode.RGB, device=device)  # list of contiguous (3, H, W) uint8
    s, n = int(host["image_size"]), len(decoded)
    shapes = [(int(img.shape[1]), int(img.shape[2])) for img in decoded]
    # Halves hold 0-255, pixel edges and batch indices exactly up to 2048: half the padded batch's memory traffic.
    exact_in_half = n <= 2048 and max(max(h, w) for h, w in shapes) + 1 <= 2048
    dtype = torch.float16 if device.type == "cuda" and exact_in_half else torch.float32
    crop = host["crop"].to(torch.int64)  # (B, 4): top, left, h, w, on the host
    corners = torch.cat([crop[:, [1, 0]], crop[:, [1, 0]] + crop[:, [3, 2]]], dim=1)  # x1, y1, x2, y2 in pixel edges
    groups = padded_groups(shapes)
    out = None if len(groups) == 1 else torch.empty((n, 3, s, s), dtype=dtype, device=device)
    for group in groups:
        h_max, w_max = max(shapes[i][0] for i in group), max(shapes[i][1] for i in group)
        with warnings.catch_warnings():  # strided nested tensors are a "prototype"; the jagged layout allows one ragged dim, images have two
            warnings.simplefilter("ignore", UserWarning)
            padded = torch.nested.nested_tensor([decoded[i] for i in group]).to(dtype).to_padded_tensor(
                0.0, output_size=(len(group), 3, h_max + 1, w_max + 1))
        # A crop reaching an image's bottom or right edge samples up to half a pixel past its last pixel
        # centre, so bilinear taps read the row (column) after it: repeat the edge there, as roi_align
        # itself does at the padded batch's edge (else zeros darken the border pixels, by up to half
        # their value, three quarters at a corner, in every image but the batch's largest).
        b, h, h_last, w, w_last = to_device(torch.tensor([[j, shapes[i][0], shapes[i][0] - 1, shapes[i][1], shapes[i][1] - 1]
                                                          for j, i in enumerate(group)]).T.contiguous(), device)
        padded[b, :, :, w] = padded[b, :, :, w_last]
        padded[b, :, h] = padded[b, :, h_last]  # after the columns: the corner too
        index = torch.tensor(group)
        boxes = torch.cat([torch.arange(len(group))[:, None], corners[index]], dim=1).to(dtype)  # (batch index, x1, y1, x2, y2)
        boxes = to_device(boxes, device)
        resized = roi_align(padded, boxes, output_size=(s, s), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        if out is None:
            out = resized
        else:
            out[to_device(index, device)] = resized
    flip = host["flip"].to(device, non_blocking=True)[:, None, None, None]
    out = torch.where(flip, out.flip(-1), out).float().clamp_(0, 255)
    return {"images": out.permute(0, 2, 3, 1), "labels": host["labels"]}


def tensors_in(batch: Any):
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, (list, tuple)):
        for b in batch:
            yield from tensors_in(b)
    elif isinstance(batch, dict):
        for b in batch.values():
            yield from tensors_in(b)


class Feed:
    """Device batches, one per `next()`, with the files skipped in them."""

    def __init__(self, loader: DataLoader, convert, device: torch.device, depth: int):
        self.loader, self.convert, self.device = loader, convert, device
        self.iterator = iter(loader)
        self.samples = 0  # samples taken from the loader so far (tbd data bench counts them)
        self.thread = None
        if device.type == "cuda":
            # The feed's stream at a higher priority than training's (-1; the default is 0): its
            # decode and crop kernels are then scheduled as soon as queued, between the training
            # kernels, instead of waiting behind them until the step that needs the batch waits for
            # its event (GPU decode on an H200: the device idle for input 3-8% of the window with
            # both at the default priority).
            self.stream = torch.cuda.Stream(device, priority=-1)
            self.ready: queue.Queue = queue.Queue(maxsize=depth)
            self.closing = threading.Event()
            self.thread = threading.Thread(target=self._fill, name="tbd-feed", daemon=True)
            self.thread.start()

    def _prepare(self, host: dict[str, Any]) -> tuple[Any, list[str]]:
        skipped = host.pop("skipped", [])
        self.samples += samples_in(host)
        if "jpeg" in host:
            host = decode_on_device(host, self.device)
        return self.convert(host), skipped

    def _fill(self) -> None:
        """Feed thread: copy, decode and convert on the side stream, queue with an event."""
        try:
            with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
                while not self.closing.is_set():
                    batch, skipped = self._prepare(next(self.iterator))
                    done = torch.cuda.Event()
                    done.record(self.stream)
                    self._put((batch, skipped, done))
        except BaseException as exc:  # handed to the training thread, raised by next()
            self._put(exc)

    def _put(self, item) -> None:
        while not self.closing.is_set():
            try:
                self.ready.put(item, timeout=STOP_POLL_S)
                return
            except queue.Full:
                continue

    def next(self) -> tuple[Any, list[str]]:
        if self.thread is None:
            return self._prepare(next(self.iterator))
        try:
            item = self.ready.get(timeout=BATCH_TIMEOUT_S)
        except queue.Empty:
            raise RuntimeError(f"the data loader gave no batch in {BATCH_TIMEOUT_S:.0f} s; check the dataset's storage and --workers") from None
        if isinstance(item, BaseException):
            raise item
        batch, skipped, done = item
        current = torch.cuda.current_stream(self.device)
        current.wait_event(done)
        for t in tensors_in(batch):
            if t.is_cuda:
                t.record_stream(current)  # made on the side stream, freed after this stream used it
        return batch, skipped

    def close(self) -> None:
        if self.thread is not None:
            self.closing.set()
            while True:  # unblock a thread waiting to queue
                try:
                    self.ready.get_nowait()
                except queue.Empty:
                    break
            self.thread.join(timeout=10)
        shutdown = getattr(self.iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self.iterator = None


def open_feed(config, spec, from_host, ctx, device: torch.device, finish=lambda batch: batch) -> tuple[Feed, dict[str, Any]]:
    """The feed of a `--data` run and what the record says about it (`method.data`)."""
    dataset = recipes.open_dataset(spec, config.data, ctx.hparams, ctx.batch_size, config.seed, config.decode)
    pin = device.type == "cuda"
    loader = make_loader(dataset, config.workers, config.prefetch, pin)
    feed = Feed(loader, lambda host: finish(from_host(host, ctx, device)), device, config.prefetch)
    method = recipes.feed_method(
        dataset,
        loader=f"torch.utils.data.DataLoader, {config.workers} worker process(es), prefetch {config.prefetch}, "
               f"pinned memory {'on' if pin else 'off'}, one endless batch stream",
        decode=("GPU: torchvision.io.decode_jpeg (nvJPEG), crop/resize/flip on the device" if config.decode == "gpu"
                else "CPU: in the loader's workers (PIL)"),
        feed=("a thread copies (non-blocking, side CUDA stream at high priority) and prepares up to "
              f"{config.prefetch} batch(es) ahead; the step waits on an event" if device.type == "cuda"
              else "batches taken from the loader in the training thread"),
        input_wait=("host: time blocked taking the next ready batch; device: GPU idle from the previous step's end to the "
                    "batch being ready (CUDA events)" if device.type == "cuda" else "time blocked taking the next batch (host clock)"))
    return feed, method


def open_loader(config, spec, impl, ctx) -> tuple[Feed, dict[str, Any], Any]:
    """The feed alone (tbd data bench): batches on the device, no model."""
    device = torch.device(config.device)
    feed, method = open_feed(config, spec, impl.from_host, ctx, device)
    return feed, method, (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
