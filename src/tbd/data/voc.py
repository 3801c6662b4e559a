"""Pascal VOC for faster_rcnn: `VOC2007/{JPEGImages,Annotations,ImageSets/Main/trainval.txt}`.

Every annotation is parsed at the check (VOC's are small: 5,011 files in VOC2007 trainval), so
a missing or broken one fails before the run, and the image sizes give the aspect-ratio groups
without opening an image. Each sample: the image at its own size (uint8 HWC), flipped with
p=0.5 with its boxes; the model's transform resizes it to a short side of `min_size` (at most
`max_size`) and pads the batch to its shape grid, exactly as the synthetic batches are. Batches
hold images of one orientation (landscape or portrait), as torchvision's GroupedBatchSampler
does, so padding to the batch's largest image stays small. Difficult objects are left out.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tbd.data.base import Dataset, bad_data, existing_dir, spread
from tbd.data.images import check_image, read_rgb, save_jpeg, synthetic_picture

CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
           "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
LAYOUT = "a Pascal VOC folder (JPEGImages/, Annotations/, ImageSets/Main/trainval.txt)"


def voc_root(path: str | Path, workload: str = "faster_rcnn") -> Path:
    root = existing_dir(path, workload, LAYOUT)
    for sub in ("VOC2007", "VOC2012", "VOCdevkit/VOC2007", "VOCdevkit/VOC2012"):
        if (root / sub / "JPEGImages").is_dir():
            return root / sub
    return root


def parse_annotation(path: Path, num_classes: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(width, height, boxes (k, 4) as x1, y1, x2, y2 in pixels, labels (k,)) of one XML file."""
    try:
        tree = ET.parse(path).getroot()
        size = tree.find("size")
        width, height = int(size.findtext("width")), int(size.findtext("height"))
        boxes, labels = [], []
        for obj in tree.iter("object"):
            if obj.findtext("difficult", "0").strip() == "1":
                continue
            name = obj.findtext("name", "").strip()
            if name not in CLASSES:
                raise ValueError(f"unknown class '{name}' (VOC has {', '.join(CLASSES[:3])}, ...)")
            bb = obj.find("bndbox")
            x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            if not (x2 > x1 and y2 > y1):
                raise ValueError(f"empty box {x1:g},{y1:g},{x2:g},{y2:g} for {name}")
            boxes.append((x1 - 1, y1 - 1, x2, y2))  # VOC counts pixels from 1, inclusive
            # Class index + 1 (0 is background); a flavor with fewer classes folds them (smoke tests).
            labels.append(1 + CLASSES.index(name) % (num_classes - 1))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as exc:
        raise bad_data(path, f"is not a readable VOC annotation ({type(exc).__name__}: {exc})", "fix or remove it and its line in the image set") from None
    return width, height, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)


class VOCDetection(Dataset):
    format = "voc"
    jpeg = True

    def __init__(self, path, batch_size: int, seed: int = 0, num_classes: int = 21, workload: str = "faster_rcnn"):
        super().__init__(path, batch_size, seed)
        root = self.root = voc_root(path, workload)
        for sub in ("JPEGImages", "Annotations"):
            if not (root / sub).is_dir():
                raise bad_data(root, f"has no {sub}/ folder", f"{workload} reads {LAYOUT}")
        split = next((root / "ImageSets" / "Main" / f"{s}.txt" for s in ("trainval", "train") if (root / "ImageSets" / "Main" / f"{s}.txt").is_file()), None)
        if split is None:
            raise bad_data(root, "has no ImageSets/Main/trainval.txt (nor train.txt)", f"{workload} reads {LAYOUT}")
        ids = [line.split()[0] for line in split.read_text().splitlines() if line.strip()]
        if not ids:
            raise bad_data(split, "lists no images", "list the training image ids, one per line")
        images, notes = set(os.listdir(root / "JPEGImages")), set(os.listdir(root / "Annotations"))
        self.ids, self.sizes, self.boxes, self.labels = [], [], [], []
        no_objects = 0
        for image_id in ids:
            if f"{image_id}.jpg" not in images:
                raise bad_data(root / "JPEGImages" / f"{image_id}.jpg", f"is missing (listed in {split.name})", "add the image or remove its line")
            if f"{image_id}.xml" not in notes:
                raise bad_data(root / "Annotations" / f"{image_id}.xml", f"missing annotation for image {image_id} (listed in {split.name})",
                               "add the annotation or remove the image's line")
            width, height, boxes, labels = parse_annotation(root / "Annotations" / f"{image_id}.xml", num_classes)
            if len(boxes) == 0:
                no_objects += 1  # only difficult objects: nothing to train on
                continue
            self.ids.append(image_id)
            self.sizes.append((width, height))
            self.boxes.append(boxes)
            self.labels.append(labels)
        if not self.ids:
            raise bad_data(split, "lists no image with a (non-difficult) object", "check the annotations")
        for i in spread(len(self.ids)):
            check_image(self.image_path(i), jpeg=True)
        self.facts.update(samples=len(self.ids), split=split.name, mean_pixels=float(np.mean([w * h for w, h in self.sizes])))
        if no_objects:
            self.notes.append(f"{no_objects} image(s) with only difficult objects left out")

    def image_path(self, index: int) -> Path:
        return self.root / "JPEGImages" / f"{self.ids[index]}.jpg"

    def __len__(self) -> int:
        return len(self.ids)

    def name_of(self, index: int) -> str:
        return str(self.image_path(index))

    def plan(self, epoch: int) -> list[list[int]]:
        """Shuffled batches of one orientation each (aspect-ratio grouping)."""
        rng = self.rng(epoch)
        order = rng.permutation(len(self))
        batches = []
        for landscape in (True, False):
            group = [int(i) for i in order if (self.sizes[i][0] >= self.sizes[i][1]) == landscape]
            batches += [group[k : k + self.batch_size] for k in range(0, len(group) - self.batch_size + 1, self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        pixels = np.array(read_rgb(self.image_path(index)), dtype=np.uint8)  # a writable copy
        boxes = self.boxes[index].copy()
        if rng.random() < 0.5:
            width = pixels.shape[1]
            pixels = np.ascontiguousarray(pixels[:, ::-1])
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
        return {"image": pixels, "boxes": boxes, "labels": self.labels[index].copy()}

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {k: [s[key] for s in samples] for k, key in (("images", "image"), ("boxes", "boxes"), ("labels", "labels"))}


def make(out: Path, size: int, rng: np.random.Generator, num_classes: int = 21, long_side: int = 500, short: tuple[int, int] = (281, 375)) -> dict[str, Any]:
    """`size` VOC-sized JPEGs (70% landscape) with 1-5 boxes each, their XML annotations and
    ImageSets/Main/trainval.txt, under out/VOC2007."""
    root = out / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(size):
        image_id = f"{i:06d}"
        s = int(rng.integers(short[0], short[1] + 1))
        w, h = (long_side, s) if rng.random() < 0.7 else (s, long_side)
        save_jpeg(synthetic_picture(rng, w, h, i), root / "JPEGImages" / f"{image_id}.jpg")
        objects = []
        for _ in range(int(rng.integers(1, 6))):
            bw, bh = int(w * rng.uniform(0.1, 0.9)), int(h * rng.uniform(0.1, 0.9))
            x1, y1 = int(rng.integers(1, w - bw + 1)), int(rng.integers(1, h - bh + 1))
            name = CLASSES[int(rng.integers(0, min(len(CLASSES), num_classes - 1)))]
            objects.append(f"  <object><name>{name}</name><difficult>0</difficult>"
                           f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x1 + bw}</xmax><ymax>{y1 + bh}</ymax></bndbox></object>")
        xml = (f"<annotation>\n  <folder>VOC2007</folder><filename>{image_id}.jpg</filename>\n"
               f"  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>\n" + "\n".join(objects) + "\n</annotation>\n")
        (root / "Annotations" / f"{image_id}.xml").write_text(xml)
        ids.append(image_id)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    return {"images": size}
