"""`decode_on_device` (the `--decode gpu` crop/resize/flip, run here on the CPU) against the
version it replaced: the same pixels, with fewer and cheaper kernels on a GPU (bench/decode_gpu.py
measures those)."""

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from tbd.frameworks.torch import data as torch_data

S = 48  # output size: some crops below it (upscaled), most above (antialiased downscale)
ROUNDING = 1e-3  # of 255 levels: float32 sums of the same samples in another order


def jpeg_batch(seed: int, count: int = 10) -> dict:
    """A host batch as the loader gives it under --decode gpu: JPEG bytes of assorted sizes and
    orientations, crop boxes (some touching the bottom and right edges), flips."""
    rng = np.random.default_rng(seed)
    files, crops = [], []
    for i in range(count):
        height, width = (int(v) for v in rng.integers(40, 140, 2))
        yy, xx = np.mgrid[0:height, 0:width]
        picture = np.stack([xx * 255 / width, yy * 255 / height, 128 + 100 * np.sin(xx / 5.0 + i) * np.cos(yy / 3.0)], -1)
        buffer = io.BytesIO()
        Image.fromarray(picture.astype(np.uint8)).save(buffer, "JPEG", quality=90)
        files.append(np.frombuffer(buffer.getvalue(), np.uint8))
        h, w = int(rng.integers(10, height + 1)), int(rng.integers(10, width + 1))
        top, left = (height - h, width - w) if i % 3 == 0 else (int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)))
        crops.append([top, left, h, w])
    return {"jpeg": torch.from_numpy(np.concatenate(files)), "jpeg_sizes": torch.tensor([len(f) for f in files]),
            "crop": torch.tensor(crops, dtype=torch.int32), "flip": torch.from_numpy(rng.random(count) < 0.5),
            "labels": torch.arange(count), "image_size": S}


def previous_decode_on_device(host: dict) -> torch.Tensor:
    """The replaced computation, kept as the reference (CPU: float32): the uint8 images padded by
    PyTorch's generic nested-tensor path to the batch's largest height and width, converted, one
    roi_align, then flip and clamp. (B, 3, S, S)."""
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.ops import roi_align

    decoded = decode_jpeg(list(torch.split(host["jpeg"], host["jpeg_sizes"].tolist())), mode=ImageReadMode.RGB)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        padded = torch.nested.nested_tensor(decoded).to_padded_tensor(0).to(torch.float32)
    top, left, h, w = host["crop"].to(torch.float32).unbind(1)
    boxes = torch.stack([torch.arange(len(decoded), dtype=torch.float32), left, top, left + w, top + h], dim=1)
    out = roi_align(padded, boxes, output_size=(S, S), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return torch.where(host["flip"][:, None, None, None], out.flip(-1), out).clamp_(0, 255)


def new_images(host: dict) -> torch.Tensor:
    result = torch_data.decode_on_device(host, torch.device("cpu"))
    images = result["images"]
    assert images.shape == (len(host["labels"]), S, S, 3) and images.dtype == torch.float32
    assert images.permute(0, 3, 1, 2).is_contiguous()  # an NHWC view of NCHW memory, as the models take it
    assert torch.equal(result["labels"], host["labels"])
    return images.permute(0, 3, 1, 2)


def image_sizes(host: dict) -> list[tuple[int, int]]:
    """(height, width) of each JPEG of the batch, from its header."""
    files = torch.split(host["jpeg"], host["jpeg_sizes"].tolist())
    return [Image.open(io.BytesIO(f.numpy().tobytes())).size[::-1] for f in files]


@pytest.mark.parametrize("seed", [0, 1])
def test_same_pixels_as_the_replaced_decode(seed):
    """The previous result (to float32 rounding: the padded batch's shape differs, so roi_align's
    sums may round differently), except where the previous one read the padding: a crop
    reaching the bottom (right) edge of an image shorter (narrower) than the batch's largest
    blended zeros into its last output rows (columns); now the image's edge is repeated there, as
    roi_align did for the batch's largest image. Those pixels only get brighter."""
    host = jpeg_batch(seed)
    new, old = new_images(host), previous_decode_on_device(host)
    sizes = image_sizes(host)
    h_max, w_max = max(h for h, _ in sizes), max(w for _, w in sizes)
    leaked = 0
    for i, ((height, width), (top, left, h, w)) in enumerate(zip(sizes, host["crop"].tolist())):
        at_bottom, at_right = top + h == height < h_max, left + w == width < w_max
        if not (at_bottom or at_right):
            torch.testing.assert_close(new[i], old[i], rtol=0, atol=ROUNDING, msg=f"image {i}")
            continue
        leaked += 1
        assert (new[i] >= old[i] - ROUNDING).all() and float((new[i] - old[i]).max()) > 1
        # Output rows (columns) whose samples stay above (left of) the image's last pixel centre agree.
        rows = S - (-(-S // h) + 1) if at_bottom else S
        cols = S - (-(-S // w) + 1) if at_right else S
        unflipped_new, unflipped_old = (new[i].flip(-1), old[i].flip(-1)) if host["flip"][i] else (new[i], old[i])
        torch.testing.assert_close(unflipped_new[:, :rows, :cols], unflipped_old[:, :rows, :cols], rtol=0, atol=ROUNDING, msg=f"image {i}")
    assert 0 < leaked < len(sizes)  # the batch holds both kinds


@pytest.mark.parametrize("seed", [0, 1])
def test_crops_at_the_edge_match_torchvision_resized_crop(seed):
    """Against torchvision's RandomResizedCrop computation (crop, antialiased bilinear resize,
    flip) the area filter differs by a few levels where the texture is sharp (up to 12 of 255
    seen on these images, mean 0.2); with zeros at the edges the previous version was off by up
    to 144 levels on border pixels (mean 0.6)."""
    import torchvision.transforms.v2.functional as TF
    from torchvision.io import ImageReadMode, decode_jpeg

    host = jpeg_batch(seed)
    decoded = decode_jpeg(list(torch.split(host["jpeg"], host["jpeg_sizes"].tolist())), mode=ImageReadMode.RGB)
    reference = torch.stack([TF.resized_crop(img.float(), t, x, h, w, [S, S], antialias=True) for img, (t, x, h, w) in zip(decoded, host["crop"].tolist())])
    reference = torch.where(host["flip"][:, None, None, None], reference.flip(-1), reference)
    error = (new_images(host) - reference).abs()
    assert float(error.max()) < 16 and float(error.mean()) < 0.3


def test_groups_give_the_pixels_of_one_padded_batch(monkeypatch):
    """A batch too large for one padded tensor is padded in groups, smallest images first; an
    image's pixels do not depend on its batch mates, so they are the same either way."""
    host = jpeg_batch(2, count=12)
    whole = new_images(host)
    monkeypatch.setattr(torch_data, "PADDED_ELEMENTS_MAX", 3 * 141 * 141 * 3)  # about three images per group
    shapes = image_sizes(host)
    groups = torch_data.padded_groups(shapes)
    assert len(groups) > 2 and sorted(i for g in groups for i in g) == list(range(12))
    for g in groups:
        assert len(g) == 1 or 3 * len(g) * (max(shapes[i][0] for i in g) + 1) * (max(shapes[i][1] for i in g) + 1) <= torch_data.PADDED_ELEMENTS_MAX
    assert torch.equal(new_images(host), whole)
