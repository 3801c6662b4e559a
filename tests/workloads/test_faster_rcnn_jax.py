"""The parts of the JAX Faster R-CNN compute what torchvision's compute: `pytest -q tests/workloads/test_faster_rcnn_jax.py`.

Each part (`src/tbd/workloads/faster_rcnn/jax_impl.py`) against the torchvision function that
torch_impl's model runs, on small random inputs: the transform, anchors, the matcher, greedy
NMS (fixed-size, tiled) and MultiScaleRoIAlign (bilinear gathers). Parameter counts and FLOPs
are in test_jax_parity.py; training through the harness in test_registry_workloads.py.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jax.numpy as jnp  # noqa: E402
from torchvision.models.detection._utils import Matcher  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402
from torchvision.models.detection.transform import GeneralizedRCNNTransform  # noqa: E402
from torchvision.ops import MultiScaleRoIAlign, batched_nms, box_iou  # noqa: E402

from tbd import registry  # noqa: E402
from tbd.errors import UsageError  # noqa: E402
from tbd.frameworks.base import BuildContext  # noqa: E402
from tbd.workloads.faster_rcnn import jax_impl  # noqa: E402


def _boxes(rng, n, size, lo, hi):
    corner = rng.random((n, 2)) * size
    return np.concatenate([corner, corner + lo + rng.random((n, 2)) * (hi - lo)], axis=1).astype(np.float32)


def test_transform_resizes_and_pads_as_torchvision():
    hp = {"min_size": 96, "max_size": 160}
    transform = GeneralizedRCNNTransform(96, 160, jax_impl.IMAGE_MEAN, jax_impl.IMAGE_STD, size_divisible=32).train()
    images = [torch.rand(3, 80, 128), torch.rand(3, 128, 91)]
    targets = [{"boxes": torch.tensor([[3.0, 4.0, 50.0, 60.0]]), "labels": torch.tensor([1])} for _ in images]
    expected, expected_targets = transform(images, targets)
    raw = np.array([im.shape[1:] for im in images], np.int32)
    new = np.array([jax_impl.resized_hw(hp, *hw) for hw in raw], np.int32)
    assert [tuple(hw) for hw in new] == expected.image_sizes
    canvas = np.zeros((2, *expected.tensors.shape[2:], 3), np.float32)
    for i, im in enumerate(images):
        canvas[i, : im.shape[1], : im.shape[2]] = im.permute(1, 2, 0).numpy()
    got = jax.jit(jax_impl.transform)(jnp.asarray(canvas), jnp.asarray(raw), jnp.asarray(new))
    np.testing.assert_allclose(np.asarray(got), expected.tensors.permute(0, 2, 3, 1).numpy(), atol=1e-4)


def test_anchors_are_torchvisions():
    canvas, grids = (96, 160), [(24, 40), (12, 20), (6, 10), (3, 5), (2, 3)]
    generator = AnchorGenerator(tuple((s,) for s in jax_impl.ANCHOR_SIZES), (jax_impl.ASPECT_RATIOS,) * len(grids))
    expected = generator(ImageList(torch.zeros(1, 3, *canvas), [(96, 150)]), [torch.zeros(1, 1, *g) for g in grids])[0]
    assert np.array_equal(np.concatenate(jax_impl.anchors_for(canvas, grids)), expected.numpy())


@pytest.mark.parametrize("low_quality", [True, False])
def test_matcher_is_torchvisions_and_ignores_padding_boxes(low_quality):
    rng = np.random.default_rng(0)
    gt = _boxes(rng, 3, 60, 10, 50)
    proposals = _boxes(rng, 400, 80, 2, 60)
    high, low = (0.7, 0.3) if low_quality else (0.5, 0.5)
    expected = Matcher(high, low, low_quality)(box_iou(torch.tensor(gt), torch.tensor(proposals))).numpy()
    padded = np.concatenate([gt, [[0.0, 0.0, 1.0, 1.0]]]).astype(np.float32)  # a padding box after the real ones
    match = jax.jit(lambda g, p, v: jax_impl.match(jax_impl.box_iou(g, p), v, high, low, low_quality))
    got = match(jnp.asarray(padded), jnp.asarray(proposals), jnp.array([True, True, True, False]))
    assert np.array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("threshold", [0.7, 0.3])
def test_fixed_size_nms_keeps_what_torchvisions_batched_nms_keeps(threshold):
    # Clustered boxes, so suppression chains cross tiles and iterate inside them.
    rng = np.random.default_rng(1)
    n = 600
    centers = rng.random((12, 2)) * 100
    corner = centers[rng.integers(0, 12, n)] + rng.normal(0, 4, (n, 2))
    boxes = np.concatenate([corner, corner + 20 + rng.random((n, 2)) * 10], axis=1).astype(np.float32)
    scores = rng.random(n).astype(np.float32)
    levels = rng.integers(0, 3, n).astype(np.int32)
    valid = rng.random(n) > 0.1
    idx = np.nonzero(valid)[0]
    expected = idx[batched_nms(torch.tensor(boxes[idx]), torch.tensor(scores[idx]), torch.tensor(levels[idx]), threshold).numpy()]
    order = np.argsort(-scores)
    nms = jax.jit(lambda b, lv, v: jax_impl.nms(b, lv, v, threshold, tile=128))
    keep = np.asarray(nms(jnp.asarray(boxes[order]), jnp.asarray(levels[order]), jnp.asarray(valid[order])))
    assert 0 < keep.sum() < valid.sum()
    assert sorted(order[keep].tolist()) == sorted(expected.tolist())


def test_roi_align_is_multiscale_roi_align():
    rng = np.random.default_rng(2)
    canvas = (96, 160)
    feats = OrderedDict((str(i), torch.randn(2, 8, canvas[0] >> (i + 2), canvas[1] >> (i + 2))) for i in range(4))
    boxes = [np.minimum(_boxes(rng, 40, 140, 0.5, 150), [160, 96, 160, 96]).astype(np.float32) for _ in range(2)]
    expected = MultiScaleRoIAlign(list(feats), 7, 2)(feats, [torch.tensor(b) for b in boxes], [(96, 150)] * 2)
    levels = [jnp.asarray(f.permute(0, 2, 3, 1).numpy()) for f in feats.values()]
    got = jax.jit(jax.vmap(jax_impl.roi_align))(levels, jnp.asarray(np.stack(boxes)))
    np.testing.assert_allclose(np.asarray(got).reshape(-1, 7, 7, 8), expected.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_sampler_takes_torchvisions_counts():
    labels = jnp.asarray(np.r_[np.ones(10), np.zeros(300), -np.ones(50)].astype(np.int32))
    pos, neg = jax.jit(lambda lb, k: jax_impl.sample_mask(lb, 64, 0.5, k))(labels, jax.random.PRNGKey(0))
    assert int(pos.sum()) == 10 and int(neg.sum()) == 54  # all 10 positives, the rest negatives
    assert bool((labels[pos] == 1).all()) and bool((labels[neg] == 0).all())
    slots = jax.jit(lambda lb, k: jax_impl.sample_slots(lb, 32, 0.25, k))
    idx, valid = slots(jnp.asarray(np.r_[np.full(40, 3), np.zeros(5)].astype(np.int32)), jax.random.PRNGKey(1))
    idx, valid = np.asarray(idx), np.asarray(valid)
    assert (idx[:8] < 40).all() and (idx[8:13] >= 40).all() and valid[:13].all() and not valid[13:].any()  # 8 + all 5 negatives


def test_batches_pad_to_the_spec_grid():
    # Shapes only (no compilation): a paper run meets at most four padded shapes, each compiled once.
    hp = dict(registry.get_spec("faster_rcnn").flavor("paper").hparams)
    shapes = set()
    for seed in range(30):
        images, raw, new, boxes, labels = jax_impl.make_images(np.random.default_rng(seed), hp, 2)
        assert images.shape[1] % hp["pad_multiple"] == 0 and images.shape[2] % hp["pad_multiple"] == 0
        assert (new >= raw).all() and (new.max(axis=0) <= images.shape[1:3]).all()
        assert ((labels > 0).sum(axis=1) >= 1).all() and (boxes[..., 2:] <= raw[:, None, ::-1]).all()
        shapes.add(images.shape)
    assert shapes <= {(2, 640, 896, 3), (2, 640, 1024, 3), (2, 896, 640, 3), (2, 1024, 640, 3)} and len(shapes) >= 3


def test_sizes_that_would_shrink_images_are_refused():
    hp = {**registry.get_spec("faster_rcnn").flavor("tiny").hparams, "min_size": 64}
    with pytest.raises(UsageError, match="resizes images up only"):
        jax_impl.build(BuildContext(hparams=hp, batch_size=2, device="cpu", precision="fp32", seed=0, flavor="tiny"))
