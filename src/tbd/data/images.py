"""Image folders: ImageNet's layout for the classifiers, any folder of images for WGAN.

Classifiers (resnet50, inception_v3): `DIR/CLASS/IMAGE.JPEG` (or `DIR/train/CLASS/...`), labels
in the sorted order of the class folders, as torchvision's ImageFolder. Each sample: random
resized crop (scale 0.08-1, aspect 3/4-4/3, torchvision's algorithm) to the flavor's image
size and a horizontal flip with p=0.5, as uint8 HWC; normalization (ImageNet mean and std)
happens on the device, so a quarter of the bytes cross PCIe. With GPU decoding the sample is
the file's bytes with its crop box and flip, and the framework decodes on the device.

WGAN: every image under DIR (any depth): shorter side resized to the image size, centre crop.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tbd.data.base import Dataset, bad_data, existing_dir, new_output_dir, spread
from tbd.errors import UsageError

JPEG_SUFFIXES = (".jpg", ".jpeg")
IMAGE_SUFFIXES = JPEG_SUFFIXES + (".png", ".bmp", ".webp")
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, applied on the device
STD = (0.229, 0.224, 0.225)


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise UsageError("reading images needs Pillow: pip install 'tbd[data]' (or pip install pillow)") from None
    return Image


def read_rgb(path: str | Path):
    """The decoded image (PIL, RGB); raises on a corrupt or truncated file."""
    Image = _pil()
    with Image.open(path) as img:
        img.load()  # decode now: a truncated file fails here, not later
        return img.convert("RGB") if img.mode != "RGB" else img.copy()


def check_image(path: str | Path, jpeg: bool) -> tuple[int, int]:
    """(width, height) of a file that decodes fully; else the one-line error naming it."""
    try:
        with open(path, "rb") as f:
            head = f.read(3)
        if jpeg and head[:2] != b"\xff\xd8":
            raise ValueError("not a JPEG (no start-of-image marker)")
        img = read_rgb(path)
        return img.size
    except UsageError:
        raise
    except Exception as exc:
        raise bad_data(path, f"does not decode ({type(exc).__name__}: {exc})", "remove or replace the file") from None


def crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random resized crop: torchvision's RandomResizedCrop parameters
    (10 tries at a random area and log-uniform aspect ratio, else the centre crop)."""
    area = width * height
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < RATIO[0]:
        w, h = width, int(round(width / RATIO[0]))
    elif in_ratio > RATIO[1]:
        h, w = height, int(round(height * RATIO[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def class_folders(path: str | Path, workload: str, command: str | None = None) -> tuple[Path, list[str], list[list[str]]]:
    """(root, class names, files per class) of an ImageNet-style folder; one-line errors.
    `workload` makes the format ('tbd data make WORKLOAD'); `command` names the reader when it is
    not the workload itself ('tbd data resize')."""
    layout = "an ImageNet-style folder of JPEGs (DIR/CLASS/IMAGE.JPEG)"
    reader = command or workload
    root = existing_dir(path, workload, layout, reader)
    if (root / "train").is_dir():
        root = root / "train"
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        loose = [e.name for e in os.scandir(root) if e.name.lower().endswith(IMAGE_SUFFIXES)]
        problem = f"holds {len(loose)} images but no class folders" if loose else "is empty (no class folders)"
        raise bad_data(root, problem, f"{reader} reads {layout} ('tbd data make {workload} --out DIR' writes one)")
    files = []
    for name in classes:
        found = sorted(e.name for e in os.scandir(root / name) if e.is_file() and e.name.lower().endswith(JPEG_SUFFIXES))
        if not found:
            raise bad_data(root / name, "class folder without JPEG files", f"remove the folder or add its images ({layout})")
        files.append(found)
    return root, classes, files


class ImageNetFolder(Dataset):
    format = "imagenet"
    jpeg = True

    def __init__(self, path, batch_size: int, seed: int = 0, image_size: int = 224, num_classes: int = 1000,
                 decode: str = "cpu", workload: str = "resnet50"):
        super().__init__(path, batch_size, seed)
        self.root, self.classes, per_class = class_folders(path, workload)
        self.files = [f"{c}/{f}" for c, names in zip(self.classes, per_class) for f in names]
        self.labels = np.array([i for i, names in enumerate(per_class) for _ in names], dtype=np.int64) % num_classes
        self.image_size, self.decode = image_size, decode
        sizes = [check_image(self.root / self.files[i], jpeg=True) for i in spread(len(self.files))]
        self.facts.update(samples=len(self.files), classes=len(self.classes), mean_pixels=float(np.mean([w * h for w, h in sizes])),
                          image_size=image_size, decode=decode)
        if len(self.classes) > num_classes:
            self.notes.append(f"{len(self.classes)} class folders folded onto the flavor's {num_classes} classes (label mod {num_classes})")

    def __len__(self) -> int:
        return len(self.files)

    def name_of(self, index: int) -> str:
        return str(self.root / self.files[index])

    def load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        path = self.root / self.files[index]
        flip = bool(rng.random() < 0.5)
        if self.decode == "gpu":  # bytes only: the device decodes; the crop needs only the header
            data = path.read_bytes()
            with _pil().open(io.BytesIO(data)) as img:
                if img.format != "JPEG":
                    raise ValueError(f"not a JPEG ({img.format})")
                width, height = img.size
            return {"jpeg": np.frombuffer(data, np.uint8), "crop": np.array(crop_box(width, height, rng), np.int32),
                    "flip": flip, "label": self.labels[index]}
        img = read_rgb(path)
        top, left, h, w = crop_box(img.width, img.height, rng)
        s = self.image_size
        img = img.resize((s, s), _pil().Resampling.BILINEAR, box=(left, top, left + w, top + h))
        pixels = np.asarray(img, dtype=np.uint8)
        return {"image": np.ascontiguousarray(pixels[:, ::-1]) if flip else pixels, "label": self.labels[index]}

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        labels = np.array([s["label"] for s in samples], dtype=np.int64)
        if self.decode == "gpu":  # the files back to back in one buffer: one transfer from a worker, not one per image
            return {"jpeg": np.concatenate([s["jpeg"] for s in samples]), "jpeg_sizes": np.array([len(s["jpeg"]) for s in samples], np.int64),
                    "crop": np.stack([s["crop"] for s in samples]), "flip": np.array([s["flip"] for s in samples]), "labels": labels,
                    "image_size": self.image_size}
        return {"images": np.stack([s["image"] for s in samples]), "labels": labels}  # (B, S, S, 3) uint8


class ImageFolderGAN(Dataset):
    """Every image under the folder, shorter side resized to `image_size`, centre-cropped;
    `batch_size` images per critic batch, `groups` critic batches per step."""

    format = "images"

    def __init__(self, path, batch_size: int, seed: int = 0, image_size: int = 64, groups: int = 1, workload: str = "wgan"):
        super().__init__(path, batch_size * groups, seed)
        root = existing_dir(path, workload, "a folder of images")
        self.root = root
        self.files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise bad_data(root, "holds no images (.jpg, .png, ...)", "give a folder of images")
        self.image_size = image_size
        sizes = [check_image(root / self.files[i], jpeg=False) for i in spread(len(self.files))]
        self.facts.update(samples=len(self.files), mean_pixels=float(np.mean([w * h for w, h in sizes])), image_size=image_size)

    def __len__(self) -> int:
        return len(self.files)

    def name_of(self, index: int) -> str:
        return str(self.root / self.files[index])

    def load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        img = read_rgb(self.root / self.files[index])
        s = self.image_size
        scale = s / min(img.size)
        w, h = max(s, round(img.width * scale)), max(s, round(img.height * scale))
        img = img.resize((w, h), _pil().Resampling.BILINEAR)
        left, top = (w - s) // 2, (h - s) // 2
        return {"image": np.asarray(img.crop((left, top, left + s, top + s)), dtype=np.uint8)}

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"images": np.stack([s["image"] for s in samples])}  # (groups x B, S, S, 3) uint8


# -- generated datasets (tbd data make) ----------------------------------------------------------


def synthetic_picture(rng: np.random.Generator, width: int, height: int, label: int = 0) -> np.ndarray:
    """A picture-like uint8 HWC image: a smooth colour gradient, a few shapes and noise, so JPEG
    encodes it at natural-photo sizes (flat noise would be far larger, flat colour far smaller)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, 3)
    slope = rng.uniform(-0.4, 0.4, (2, 3))
    img = base + x[..., None] * slope[0] + y[..., None] * slope[1]
    for _ in range(3 + label % 4):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.3) * min(width, height)
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        img[mask] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def save_jpeg(pixels: np.ndarray, path: Path, quality: int = 90) -> None:
    _pil().fromarray(pixels).save(path, "JPEG", quality=quality)


def make_imagenet(out: Path, size: int, rng: np.random.Generator, classes: int = 4, mean_size: tuple[int, int] = (500, 375)) -> dict[str, Any]:
    """`size` JPEGs in `classes` class folders, sizes scattered around `mean_size` (ImageNet's
    average is about 400x350, 500x375 the common camera size)."""
    out = out / "train"
    for c in range(classes):
        (out / f"n{c:08d}").mkdir(parents=True, exist_ok=True)
    for i in range(size):
        w, h = (max(16, int(v * rng.uniform(0.7, 1.3))) for v in mean_size)
        if rng.random() < 0.3:  # some portrait images
            w, h = h, w
        save_jpeg(synthetic_picture(rng, w, h, i % classes), out / f"n{i % classes:08d}" / f"img_{i:06d}.JPEG")
    return {"images": size, "classes": classes}


def make_image_folder(out: Path, size: int, rng: np.random.Generator, mean_size: tuple[int, int] = (96, 80)) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    for i in range(size):
        w, h = (max(16, int(v * rng.uniform(0.8, 1.2))) for v in mean_size)
        save_jpeg(synthetic_picture(rng, w, h, i), out / f"{i:06d}.jpg")
    return {"images": size}


# -- lower-resolution copies (tbd data resize; tbd analyze --verify of "store the images smaller") --


def _resize_one(job: tuple[str, str, int]) -> int:
    source, target, side = job
    try:
        img = read_rgb(source)
    except UsageError:
        raise
    except Exception as exc:  # one bad file stops the copy, named so it can be removed or replaced
        raise bad_data(source, f"does not decode ({type(exc).__name__}: {exc})",
                       "remove or replace the file, then rerun") from None
    scale = side / min(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), _pil().Resampling.BILINEAR)
    try:
        img.save(target, "JPEG", quality=90)
    except OSError as exc:
        raise UsageError(f"cannot write the resized copy of {source} ({exc.strerror or exc}); give --out a folder on a disk with room") from None
    return 1


def resized_copy(path: str | Path, out: str | Path, side: int, limit: int | None = None, workers: int | None = None) -> dict[str, Any]:
    """A copy of an ImageNet-style folder with every image's shorter side at most `side` px
    (JPEG quality 90), the same classes; `limit` images at most, taken evenly from the classes.
    All or nothing: the copy is written into a hidden folder beside `out` and renamed to `out`
    once every image is in it, so a failure leaves no half-copy to block a rerun."""
    import shutil
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    root, classes, per_class = class_folders(path, "resnet50", command="tbd data resize")
    existed = Path(out).expanduser().is_dir()
    out = new_output_dir(out)
    try:
        partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        raise UsageError(f"cannot write beside {out} ({exc.strerror or exc}); give --out a folder you can write") from None
    try:
        jobs = []
        per = None if limit is None else max(1, limit // len(classes))
        for name, files in zip(classes, per_class):
            (partial / name).mkdir()
            jobs += [(str(root / name / f), str(partial / name / f), side) for f in files[:per]]
        # Threads, not processes: Pillow lets go of the GIL while it decodes, resizes and encodes, and
        # a forked pool can deadlock in a process whose libraries run threads of their own (JAX's:
        # a CI run hung 600 s in the pool's join with JAX loaded beside it).
        with ThreadPoolExecutor(workers or max(1, len(os.sched_getaffinity(0)))) as pool:
            try:
                done = sum(pool.map(_resize_one, jobs))
            except BaseException:
                pool.shutdown(cancel_futures=True)  # the first bad file ends the copy: skip the images still queued
                raise
        partial.replace(out)  # onto the empty folder new_output_dir made (rename(2) replaces an empty directory)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if not existed:
            out.rmdir()  # new_output_dir made it, empty
        raise
    return {"images": done, "classes": len(classes), "side": side, "path": str(out)}
