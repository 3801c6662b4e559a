"""Faster R-CNN in JAX: torchvision's `fasterrcnn` with a ResNet-FPN backbone in Flax, SGD.

`tbd run faster_rcnn --framework jax --flavor tiny` exercises it on the CPU. The model is the one
`torch_impl.py` builds (torchvision's `FasterRCNN` on `resnet_fpn_backbone`), written out:
- the transform: normalize with ImageNet's mean and std, bilinear resize (align_corners=False)
  of each image to a short side of `min_size` (long side at most `max_size`), boxes scaled with
  it, zero padding to a multiple of `pad_multiple`;
- ResNet body with frozen BatchNorm (statistics set from one forward pass of random images, as
  `torch_impl.calibrate_frozen_bn` does) and the stem plus the first stages frozen
  (`trainable_layers`, torchvision's rule); FPN (1x1 laterals, nearest top-down, 3x3 outputs, a
  stride-2 "pool" level); torchvision's initializations (Kaiming-normal fan-out in the body,
  Kaiming-uniform a=1 in the FPN, N(0, 0.01) in the RPN head, torch's default in the box head);
- RPN: anchors of sizes 32-512 (one per level) at ratios 0.5, 1, 2; the 3x3 conv head; the 2000
  best-scoring anchors per level decoded, clipped, small boxes dropped, NMS at IoU 0.7 per level,
  the 2000 best kept; anchors matched at IoU 0.7 / 0.3 with the low-quality matches, 256 sampled
  per image (half positive at most); BCE and smooth L1 (beta 1/9) losses;
- box head: the ground-truth boxes added to the proposals, matched at IoU 0.5, `rois_per_image`
  sampled per image (a quarter positive at most), MultiScaleRoIAlign (7x7, sampling ratio 2,
  aligned=False, levels by the FPN paper's heuristic), TwoMLPHead (1024) and the predictor;
  cross-entropy and smooth L1 (beta 1/9) on the class's box, box coder weights (10, 10, 5, 5);
- SGD with momentum and weight decay on the trained parameters only, lr warmed up linearly.
The loss is the sum of the four losses, as torch's.

Static shapes, so XLA compiles the step once per padded image shape:
- torch's variable-length lists (proposals that survive NMS, sampled anchors and RoIs) are fixed
  counts with validity masks: min(2000, anchors of the level) candidates per level, 2000
  proposals per image (fewer survivors are masked), exactly `rois_per_image` RoI slots (empty
  slots, when there are not enough proposals, are masked out of the losses as torch leaves them
  out) and a 0/1 mask over the anchors for the RPN sample. Random subsets are drawn by
  uniform random keys and `top_k` (torch: `randperm`): the same distribution.
- NMS is torchvision's greedy NMS, exactly: the candidates sorted by score are processed in
  tiles of `NMS_TILE`; a box is dropped if a kept box before it (earlier tiles, then its own
  tile, iterated to the fixed point) overlaps it by more than the threshold at the same level.
- RoIAlign gathers, for each RoI, the four neighbours of each of its 14 x 14 sampling points at
  its own FPN level from one array of all levels, and weights them bilinearly as torchvision's
  kernel does (points beyond [-1, size] count as zero).
- images: each batch is drawn at raw size into a canvas of the padded shape (top left, zeros
  around) with its raw and resized sizes; the step normalizes, resizes and masks the padding.
  The canvas is the resized batch padded to `pad_multiple`: the flavors only ever enlarge images,
  so the raw image fits in it; hyperparameters that would shrink an image are refused.

Differences from torch that remain: the flattening order of the 7x7x256 RoI features into the
first box-head layer (NHWC here, CHW in torch: the same layer with its inputs permuted) and the
random streams. Each batch has one orientation, so a flavor's batches pad to at most four shapes
(two widths, two orientations), each compiled once.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tbd.errors import UsageError
from tbd.frameworks.base import BuildContext
from tbd.frameworks.jax.session import JaxTask, compute_dtype
from tbd.workloads.common_jax import host_generator, leaf_names
from tbd.workloads.faster_rcnn.spec import BOX_HIDDEN, FPN_CHANNELS, NUM_ANCHORS, RESNETS, ROI_POOL
from tbd.workloads.image_jax import torch_sgd

# torchvision's FasterRCNN defaults, as torch_impl uses them.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
ANCHOR_SIZES = (32, 64, 128, 256, 512)  # one per FPN level "0".."3", "pool"
ASPECT_RATIOS = (0.5, 1.0, 2.0)
RPN_TOP_N = 2000  # candidates per level before NMS, and proposals kept after it (training)
RPN_NMS_IOU = 0.7
RPN_FG_IOU, RPN_BG_IOU = 0.7, 0.3
RPN_SAMPLES, RPN_POSITIVE_FRACTION = 256, 0.5
BOX_FG_IOU = BOX_BG_IOU = 0.5
BOX_POSITIVE_FRACTION = 0.25
BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # the RPN's are (1, 1, 1, 1)
BBOX_CLIP = math.log(1000.0 / 16)
SMOOTH_L1_BETA = 1.0 / 9
MIN_BOX_SIZE = 1e-3
ROI_SAMPLING = 2  # sampling points per bin and axis
CANONICAL_SCALE, CANONICAL_LEVEL = 224, 4
K_MIN = 2  # level "0" has stride 4 = 2^2
BN_EPS = 1e-5
# NMS processes the sorted candidates in tiles of this many boxes (a while loop inside each):
# at the paper size (8,400 candidates) 17 tiles and about 2 loop iterations per tile.
NMS_TILE = 512

F32 = jnp.float32


# -- model ---------------------------------------------------------------------------------------

class FrozenBatchNorm(nn.Module):
    """torchvision's FrozenBatchNorm2d with weight 1 and bias 0: y = (x - mean) / sqrt(var + eps),
    the statistics in the "frozen_bn" collection. `calibrate=True` first sets them to the
    statistics of its own input (torch's unbiased variance), as torch_impl calibrates."""

    @nn.compact
    def __call__(self, x, calibrate: bool = False):
        c = x.shape[-1]
        mean = self.variable("frozen_bn", "mean", jnp.zeros, (c,), F32)
        var = self.variable("frozen_bn", "var", jnp.ones, (c,), F32)
        if calibrate:
            xf = x.astype(F32)
            mean.value = xf.mean(axis=(0, 1, 2))
            var.value = xf.var(axis=(0, 1, 2), ddof=1)
        scale = jax.lax.rsqrt(var.value + BN_EPS)
        return x * scale.astype(x.dtype) + (-mean.value * scale).astype(x.dtype)


def _conv(features: int, k: int, stride: int, dtype: Any, name: str, bias: bool = False) -> nn.Conv:
    # Explicit symmetric padding k // 2, as torch's (Flax's 'SAME' pads asymmetrically at stride 2).
    p = k // 2
    return nn.Conv(features, (k, k), (stride, stride), padding=((p, p), (p, p)), use_bias=bias,
                   dtype=dtype, param_dtype=F32, name=name)


class Block(nn.Module):
    """torchvision's BasicBlock (two 3x3) or Bottleneck (1x1-3x3-1x1, stride in the 3x3)."""

    kind: str
    width: int
    stride: int
    project: bool  # 1x1 projection shortcut
    dtype: Any = F32

    @nn.compact
    def __call__(self, x, calibrate: bool = False):
        bn = lambda name: (lambda y: FrozenBatchNorm(name=name)(y, calibrate))  # noqa: E731
        if self.kind == "basic":
            out = nn.relu(bn("bn1")(_conv(self.width, 3, self.stride, self.dtype, "conv1")(x)))
            out = bn("bn2")(_conv(self.width, 3, 1, self.dtype, "conv2")(out))
            c_out = self.width
        else:
            out = nn.relu(bn("bn1")(_conv(self.width, 1, 1, self.dtype, "conv1")(x)))
            out = nn.relu(bn("bn2")(_conv(self.width, 3, self.stride, self.dtype, "conv2")(out)))
            c_out = self.width * 4
            out = bn("bn3")(_conv(c_out, 1, 1, self.dtype, "conv3")(out))
        if self.project:
            x = bn("downsample_bn")(_conv(c_out, 1, self.stride, self.dtype, "downsample_conv")(x))
        return nn.relu(out + x)


class ResNetBody(nn.Module):
    """torchvision's ResNet without pooling and classifier: the outputs of layer1..layer4."""

    backbone: str
    dtype: Any = F32

    @nn.compact
    def __call__(self, x, calibrate: bool = False):
        kind, blocks = RESNETS[self.backbone]
        expansion = 4 if kind == "bottleneck" else 1
        x = _conv(64, 7, 2, self.dtype, "conv1")(x)
        x = nn.relu(FrozenBatchNorm(name="bn1")(x, calibrate))
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))  # pads with -inf, as torch
        c, outputs = 64, []
        for stage, n in enumerate(blocks, start=1):
            width = 64 * 2 ** (stage - 1)
            for b in range(n):
                stride = 2 if (b == 0 and stage > 1) else 1
                x = Block(kind, width, stride, project=stride != 1 or c != width * expansion, dtype=self.dtype,
                          name=f"layer{stage}_{b}")(x, calibrate)
                c = width * expansion
            outputs.append(x)
        return outputs


def _nearest_resize(x, hw: tuple[int, int]):
    """F.interpolate(mode="nearest") to size hw: source index floor(dst * in / out)."""
    for axis, out in zip((1, 2), hw):
        n = x.shape[axis]
        idx = np.minimum(np.floor(np.arange(out) * np.float32(n / out)).astype(np.int32), n - 1)
        x = jnp.take(x, idx, axis=axis)
    return x


class FPN(nn.Module):
    """torchvision's FeaturePyramidNetwork with LastLevelMaxPool: levels "0".."3" and "pool"."""

    dtype: Any = F32

    @nn.compact
    def __call__(self, feats):
        inner = [_conv(FPN_CHANNELS, 1, 1, self.dtype, f"inner{i}", bias=True) for i in range(len(feats))]
        layer = [_conv(FPN_CHANNELS, 3, 1, self.dtype, f"layer{i}", bias=True) for i in range(len(feats))]
        last = inner[-1](feats[-1])
        results = [layer[-1](last)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = inner[i](feats[i])
            last = lateral + _nearest_resize(last, lateral.shape[1:3])
            results.insert(0, layer[i](last))
        results.append(results[-1][:, ::2, ::2, :])  # max_pool2d(kernel 1, stride 2)
        return results


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 objectness (A) and box deltas (4A), shared by every level."""

    dtype: Any = F32

    @nn.compact
    def __call__(self, feats):
        conv = _conv(FPN_CHANNELS, 3, 1, self.dtype, "conv", bias=True)
        cls = _conv(NUM_ANCHORS, 1, 1, self.dtype, "cls_logits", bias=True)
        bbox = _conv(4 * NUM_ANCHORS, 1, 1, self.dtype, "bbox_pred", bias=True)
        out = []
        for f in feats:
            t = nn.relu(conv(f))
            out.append((cls(t), bbox(t)))
        return out


class BoxHead(nn.Module):
    """TwoMLPHead and FastRCNNPredictor: (M, 7, 7, C) RoI features -> class logits, box deltas."""

    num_classes: int
    dtype: Any = F32

    @nn.compact
    def __call__(self, pooled):
        dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=F32, name=name)  # noqa: E731
        x = pooled.reshape(pooled.shape[0], -1)
        x = nn.relu(dense(BOX_HIDDEN, "fc6")(x))
        x = nn.relu(dense(BOX_HIDDEN, "fc7")(x))
        return dense(self.num_classes, "cls_score")(x), dense(4 * self.num_classes, "bbox_pred")(x)


class FasterRCNN(nn.Module):
    backbone: str
    num_classes: int
    dtype: Any = F32

    def setup(self):
        self.body = ResNetBody(self.backbone, self.dtype)
        self.fpn = FPN(self.dtype)
        self.rpn_head = RPNHead(self.dtype)
        self.box_head = BoxHead(self.num_classes, self.dtype)

    def __call__(self, images):
        """Every layer once (for `init` and parameter shapes)."""
        feats = self.features(images)
        rpn = self.rpn(feats)
        return feats, rpn, self.box_head(jnp.zeros((1, ROI_POOL, ROI_POOL, FPN_CHANNELS), self.dtype))

    def features(self, images):
        return self.fpn(self.body(images.astype(self.dtype)))

    def rpn(self, feats):
        return self.rpn_head(feats)

    def boxes(self, pooled):
        return self.box_head(pooled.astype(self.dtype))

    def calibrate(self, images):
        return self.body(images, calibrate=True)


def is_frozen(names: tuple[str, ...], trainable_layers: int) -> bool:
    """torchvision's rule: of the body, only the last `trainable_layers` of (conv1, layer1..4) train."""
    if names[0] != "body":
        return False
    if names[1] == "conv1":
        return trainable_layers < 5
    stage = int(names[1][len("layer")])
    return stage <= 4 - trainable_layers


def init_params(shapes, rng: np.random.Generator):
    """fp32 parameters shaped like `shapes`, initialized as torchvision initializes them; drawn
    with NumPy on the host (a jitted draw of the 28M-60M numbers compiles and runs for seconds on
    a CPU). Flax kernels are (kh, kw, in, out) and (in, out)."""

    def leaf(path, x):
        names, shape = leaf_names(path), tuple(x.shape)
        part, kind = names[0], names[-1]
        if part == "box_head":  # nn.Linear's default: weight and bias U(+-1/sqrt(fan_in))
            fan_in = shapes["box_head"][names[1]]["kernel"].shape[0]
            bound = 1.0 / math.sqrt(fan_in)
            return rng.uniform(-bound, bound, shape).astype(np.float32)
        if kind == "bias":
            return np.zeros(shape, np.float32)
        if part == "body":  # kaiming_normal_(mode="fan_out", nonlinearity="relu")
            std = math.sqrt(2.0 / (shape[0] * shape[1] * shape[3]))
        elif part == "fpn":  # kaiming_uniform_(a=1): U(+-sqrt(3 / fan_in))
            bound = math.sqrt(3.0 / (shape[0] * shape[1] * shape[2]))
            return rng.uniform(-bound, bound, shape).astype(np.float32)
        elif part == "rpn_head":
            std = 0.01
        else:
            raise ValueError(f"no initialization for {'/'.join(names)}")
        return rng.standard_normal(shape, np.float32) * np.float32(std)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


# -- boxes ---------------------------------------------------------------------------------------

def box_iou(a, b):
    """(M, 4) x (N, 4) boxes (x1, y1, x2, y2) -> (M, N) IoU, as torchvision's box_iou."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = jnp.maximum(a[:, None, :2], b[None, :, :2])
    rb = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = jnp.clip(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def encode(gt, ref, weights):
    """torchvision's BoxCoder.encode: gt boxes relative to reference boxes, both (..., 4)."""
    wx, wy, ww, wh = weights
    rw, rh = ref[..., 2] - ref[..., 0], ref[..., 3] - ref[..., 1]
    rx, ry = ref[..., 0] + 0.5 * rw, ref[..., 1] + 0.5 * rh
    gw, gh = gt[..., 2] - gt[..., 0], gt[..., 3] - gt[..., 1]
    gx, gy = gt[..., 0] + 0.5 * gw, gt[..., 1] + 0.5 * gh
    return jnp.stack([wx * (gx - rx) / rw, wy * (gy - ry) / rh, ww * jnp.log(gw / rw), wh * jnp.log(gh / rh)], axis=-1)


def decode(deltas, ref, weights):
    """torchvision's BoxCoder.decode (width and height deltas clipped at log(1000/16))."""
    wx, wy, ww, wh = weights
    rw, rh = ref[..., 2] - ref[..., 0], ref[..., 3] - ref[..., 1]
    rx, ry = ref[..., 0] + 0.5 * rw, ref[..., 1] + 0.5 * rh
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw = jnp.minimum(deltas[..., 2] / ww, BBOX_CLIP)
    dh = jnp.minimum(deltas[..., 3] / wh, BBOX_CLIP)
    cx, cy = dx * rw + rx, dy * rh + ry
    half_w, half_h = 0.5 * jnp.exp(dw) * rw, 0.5 * jnp.exp(dh) * rh
    return jnp.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


def match(iou, gt_valid, high: float, low: float, low_quality: bool):
    """torchvision's Matcher over (G, N) IoUs: the matched gt per column, -1 below `low`, -2
    between; with `low_quality`, columns that are some gt's best match keep their best gt.
    Rows of padding gts (gt_valid False) never match."""
    iou = jnp.where(gt_valid[:, None], iou, -1.0)
    best, all_matches = iou.max(axis=0), iou.argmax(axis=0)
    matches = jnp.where(best < low, -1, jnp.where(best < high, -2, all_matches))
    if low_quality:
        best_per_gt = iou.max(axis=1, keepdims=True)
        is_best = ((iou == best_per_gt) & gt_valid[:, None]).any(axis=0)
        matches = jnp.where(is_best, all_matches, matches)
    return matches


def smooth_l1(x, y):
    d = jnp.abs(x - y)
    return jnp.where(d < SMOOTH_L1_BETA, 0.5 * d * d / SMOOTH_L1_BETA, d - 0.5 * SMOOTH_L1_BETA)


# -- anchors and the transform -------------------------------------------------------------------

def anchors_for(canvas: tuple[int, int], grids: list[tuple[int, int]]) -> list[np.ndarray]:
    """torchvision's AnchorGenerator for a padded image of size `canvas` and level grids
    `grids`: per level, (H * W * A, 4) anchors, position-major, in float32 as torch computes them."""
    out = []
    for size, (gh, gw) in zip(ANCHOR_SIZES, grids):
        h_ratios = np.sqrt(np.asarray(ASPECT_RATIOS, np.float32))
        ws, hs = (1 / h_ratios) * np.float32(size), h_ratios * np.float32(size)
        base = np.round(np.stack([-ws, -hs, ws, hs], axis=1) / 2)
        sy, sx = canvas[0] // gh, canvas[1] // gw
        yy, xx = np.meshgrid(np.arange(gh) * sy, np.arange(gw) * sx, indexing="ij")
        shifts = np.stack([xx.ravel(), yy.ravel(), xx.ravel(), yy.ravel()], axis=1).astype(np.float32)
        out.append((shifts[:, None, :] + base[None]).reshape(-1, 4).astype(np.float32))
    return out


def _resize_axis(n: int, in_size, out_size):
    """Source rows (or columns) and weights of a bilinear resize (align_corners=False) from
    `in_size` to `out_size` on an axis of `n` slots; slots past `out_size` get weight 0."""
    d = jnp.arange(n, dtype=F32)
    src = jnp.maximum((d + 0.5) * (in_size.astype(F32) / out_size.astype(F32)) - 0.5, 0.0)
    i0 = jnp.minimum(src.astype(jnp.int32), in_size - 1)
    i1 = jnp.where(i0 < in_size - 1, i0 + 1, i0)
    l1 = src - i0
    inside = d < out_size
    return i0, i1, jnp.where(inside, 1.0 - l1, 0.0), jnp.where(inside, l1, 0.0)


def transform(images, raw_hw, new_hw):
    """GeneralizedRCNNTransform on canvases: normalize, resize each image from its raw size (top
    left of its canvas) to its new size, zeros beyond it (the padding)."""
    x = (images - jnp.asarray(IMAGE_MEAN, F32)) / jnp.asarray(IMAGE_STD, F32)

    def one(img, raw, new):
        r0, r1, a0, a1 = _resize_axis(img.shape[0], raw[0], new[0])
        rows = img[r0] * a0[:, None, None] + img[r1] * a1[:, None, None]
        c0, c1, b0, b1 = _resize_axis(img.shape[1], raw[1], new[1])
        return rows[:, c0] * b0[None, :, None] + rows[:, c1] * b1[None, :, None]

    return jax.vmap(one)(x, raw_hw, new_hw)


# -- region proposals ----------------------------------------------------------------------------

def nms(boxes, levels, valid, threshold: float, tile: int = NMS_TILE):
    """Greedy NMS over boxes sorted by descending score: keep[i] unless a kept box before it at
    the same level overlaps it by IoU > threshold (torchvision's batched_nms, levels as classes).
    Tile by tile: suppression by the kept boxes of earlier tiles at once, then inside the tile
    the rule iterated to its fixed point (which is the greedy result)."""
    k = boxes.shape[0]
    pad = -k % tile
    boxes = jnp.pad(boxes, ((0, pad), (0, 0)))
    levels = jnp.pad(levels, (0, pad), constant_values=-1)
    keep = jnp.pad(valid, (0, pad))
    position = jnp.arange(k + pad)
    upper = jnp.arange(tile)[:, None] < jnp.arange(tile)[None, :]  # i before j

    def tile_step(t, keep):
        start = t * tile
        tb = jax.lax.dynamic_slice_in_dim(boxes, start, tile)
        tl = jax.lax.dynamic_slice_in_dim(levels, start, tile)
        tk = jax.lax.dynamic_slice_in_dim(keep, start, tile)
        earlier = keep & (position < start)
        hit = (box_iou(boxes, tb) > threshold) & (levels[:, None] == tl[None, :]) & earlier[:, None]
        tk = tk & ~hit.any(axis=0)
        inside = (box_iou(tb, tb) > threshold) & (tl[:, None] == tl[None, :]) & upper

        def again(carry):
            x, _ = carry
            new = tk & ~(inside & x[:, None]).any(axis=0)
            return new, (new != x).any()

        x, _ = jax.lax.while_loop(lambda c: c[1], again, (tk, jnp.array(True)))
        return jax.lax.dynamic_update_slice_in_dim(keep, x, start, axis=0)

    return jax.lax.fori_loop(0, (k + pad) // tile, tile_step, keep)[:k]


def propose(logits, deltas, anchors, level_sizes: list[int], image_hw):
    """RegionProposalNetwork.filter_proposals for one image: (RPN_TOP_N or fewer, 4) proposals
    in descending score order and their validity (NMS survivors)."""
    idx, levels, start = [], [], 0
    for lvl, n in enumerate(level_sizes):
        _, top = jax.lax.top_k(logits[start:start + n], min(RPN_TOP_N, n))
        idx.append(top + start)
        levels.append(np.full(top.shape[0], lvl, np.int32))
        start += n
    idx = jnp.concatenate(idx)
    levels = jnp.asarray(np.concatenate(levels))
    boxes = decode(deltas[idx], anchors[idx], (1.0, 1.0, 1.0, 1.0))
    h, w = image_hw[0].astype(F32), image_hw[1].astype(F32)
    boxes = jnp.stack([jnp.clip(boxes[:, 0], 0, w), jnp.clip(boxes[:, 1], 0, h),
                       jnp.clip(boxes[:, 2], 0, w), jnp.clip(boxes[:, 3], 0, h)], axis=1)
    scores = jax.nn.sigmoid(logits[idx])
    valid = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIZE) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIZE)
    order = jnp.argsort(-jnp.where(valid, scores, -1.0))
    boxes, levels, valid = boxes[order], levels[order], valid[order]
    keep = nms(boxes, levels, valid, RPN_NMS_IOU)
    first = jnp.argsort((~keep).astype(jnp.int32), stable=True)[:min(RPN_TOP_N, keep.shape[0])]  # survivors, by score
    return boxes[first], keep[first]


def _top_random(candidates, count: int, key):
    """`count` indices of `candidates` (a mask) in random order, candidates first."""
    u = jax.random.uniform(key, candidates.shape)
    return jax.lax.top_k(jnp.where(candidates, u, -1.0), min(count, candidates.shape[0]))[1]


def _sampled(labels, total: int, positive_fraction: float, key):
    """BalancedPositiveNegativeSampler's draw: (positive indices, negative indices, how many of
    each to keep): min(#positive, total * fraction) random positives, then negatives up to `total`."""
    positive, negative = labels >= 1, labels == 0
    k_pos, k_neg = jax.random.split(key)
    quota = int(total * positive_fraction)
    n_pos = jnp.minimum(positive.sum(), quota)
    n_neg = jnp.minimum(negative.sum(), total - n_pos)
    return _top_random(positive, quota, k_pos), _top_random(negative, total, k_neg), n_pos, n_neg


def sample_mask(labels, total: int, positive_fraction: float, key):
    """The sampler as masks over `labels` (1 positive, 0 negative, -1 ignored)."""
    pos_idx, neg_idx, n_pos, n_neg = _sampled(labels, total, positive_fraction, key)
    zeros = jnp.zeros(labels.shape, bool)
    pos = zeros.at[pos_idx].set(jnp.arange(pos_idx.shape[0]) < n_pos)
    neg = zeros.at[neg_idx].set(jnp.arange(neg_idx.shape[0]) < n_neg)
    return pos, neg


def sample_slots(labels, total: int, positive_fraction: float, key):
    """The same sampler as `total` index slots: the positives first, then the negatives; slots
    left over when there are too few candidates are invalid."""
    pos_idx, neg_idx, n_pos, n_neg = _sampled(labels, total, positive_fraction, key)
    slot = jnp.arange(total)
    idx = jnp.where(slot < n_pos, pos_idx[jnp.clip(slot, 0, pos_idx.shape[0] - 1)],
                    neg_idx[jnp.clip(slot - n_pos, 0, neg_idx.shape[0] - 1)])
    return idx, slot < n_pos + n_neg


# -- RoIAlign ------------------------------------------------------------------------------------

def _bilinear_axis(coord, size):
    """torchvision's roi_align bilinear_interpolate along one axis: the two neighbours, their
    weights, and whether the point lies outside [-1, size] (then it counts as zero)."""
    outside = (coord < -1.0) | (coord > size)
    c = jnp.maximum(coord, 0.0)
    low = c.astype(jnp.int32)
    edge = low >= size - 1
    high = jnp.where(edge, size - 1, low + 1)
    low = jnp.where(edge, size - 1, low)
    frac = jnp.where(edge, 0.0, c - low)
    return low, high, 1.0 - frac, frac, outside


def roi_align(feats, boxes):
    """MultiScaleRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio=2) for one image: features
    (per level (H, W, C)) and (R, 4) boxes in image coordinates -> (R, 7, 7, C), fp32. Each box
    is pooled at its level floor(4 + log2(sqrt(area) / 224) + 1e-6), clamped to 2..5."""
    heights = np.array([f.shape[0] for f in feats], np.int32)
    widths = np.array([f.shape[1] for f in feats], np.int32)
    offsets = np.concatenate([[0], np.cumsum(heights * widths)[:-1]]).astype(np.int32)
    # fp32 whatever the compute dtype, as torch's autocast runs roi_align: the backward's
    # scatter-add of many overlapping samples then also accumulates in fp32.
    flat = jnp.concatenate([f.reshape(-1, f.shape[-1]) for f in feats]).astype(F32)  # (sum H*W, C)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    target = jnp.floor(CANONICAL_LEVEL + jnp.log2(jnp.sqrt(area) / CANONICAL_SCALE) + 1e-6)
    level = (jnp.clip(target, K_MIN, K_MIN + len(feats) - 1) - K_MIN).astype(jnp.int32)
    scale = jnp.exp2(-(level + K_MIN).astype(F32))
    h, w = jnp.asarray(heights)[level][:, None], jnp.asarray(widths)[level][:, None]
    x1, y1, x2, y2 = (boxes[:, i] * scale for i in range(4))
    roi_w, roi_h = jnp.maximum(x2 - x1, 1.0), jnp.maximum(y2 - y1, 1.0)
    bin_w, bin_h = roi_w / ROI_POOL, roi_h / ROI_POOL
    bins = jnp.repeat(jnp.arange(ROI_POOL, dtype=F32), ROI_SAMPLING)  # (14,): bin of each sample
    sub = jnp.tile(jnp.arange(ROI_SAMPLING, dtype=F32) + 0.5, ROI_POOL)  # (14,): its place in the bin
    ys = y1[:, None] + bins * bin_h[:, None] + sub * (bin_h / ROI_SAMPLING)[:, None]  # (R, 14)
    xs = x1[:, None] + bins * bin_w[:, None] + sub * (bin_w / ROI_SAMPLING)[:, None]
    y_lo, y_hi, wy_lo, wy_hi, y_out = _bilinear_axis(ys, h)
    x_lo, x_hi, wx_lo, wx_hi, x_out = _bilinear_axis(xs, w)
    rows = jnp.stack([y_lo, y_hi], -1)[:, :, None, :, None]  # (R, 14, 1, 2, 1)
    cols = jnp.stack([x_lo, x_hi], -1)[:, None, :, None, :]  # (R, 1, 14, 1, 2)
    index = jnp.asarray(offsets)[level][:, None, None, None, None] + rows * w[:, :, None, None, None] + cols
    weight = jnp.stack([wy_lo, wy_hi], -1)[:, :, None, :, None] * jnp.stack([wx_lo, wx_hi], -1)[:, None, :, None, :]
    weight = jnp.where((y_out[:, :, None] | x_out[:, None, :])[..., None, None], 0.0, weight)
    values = flat[index]  # (R, 14, 14, 2, 2, C)
    points = (values * weight[..., None]).sum(axis=(3, 4))  # (R, 14, 14, C)
    r, c = boxes.shape[0], flat.shape[-1]
    return points.reshape(r, ROI_POOL, ROI_SAMPLING, ROI_POOL, ROI_SAMPLING, c).mean(axis=(2, 4))


# -- the loss ------------------------------------------------------------------------------------

def detection_losses(model: FasterRCNN, variables, batch, rng, rois_per_image: int) -> dict[str, jax.Array]:
    """torchvision's four training losses for one batch, under torchvision's names."""
    images, raw_hw, new_hw, gt_boxes, gt_labels = batch
    n = images.shape[0]
    x = transform(images, raw_hw, new_hw)
    ratio = (new_hw / raw_hw).astype(F32)  # resize_boxes: (new / old) per axis
    gt = gt_boxes * jnp.stack([ratio[:, 1], ratio[:, 0], ratio[:, 1], ratio[:, 0]], axis=1)[:, None, :]
    gt_valid = gt_labels > 0

    feats = model.apply(variables, x, method=FasterRCNN.features)
    heads = model.apply(variables, feats, method=FasterRCNN.rpn)
    logits = jnp.concatenate([o.reshape(n, -1) for o, _ in heads], axis=1).astype(F32)  # (N, A): (H, W, anchor) order
    deltas = jnp.concatenate([d.reshape(n, -1, 4) for _, d in heads], axis=1).astype(F32)
    level_anchors = anchors_for(x.shape[1:3], [f.shape[1:3] for f in feats])
    anchors = jnp.asarray(np.concatenate(level_anchors))
    k_rpn, k_roi = jax.random.split(rng)

    # RPN: proposals (no gradient), anchor targets, sampled losses normalized over the batch.
    level_sizes = [len(a) for a in level_anchors]
    proposals, proposal_valid = jax.vmap(lambda lg, dl, hw: propose(lg, dl, anchors, level_sizes, hw))(
        jax.lax.stop_gradient(logits), jax.lax.stop_gradient(deltas), new_hw)

    def rpn_targets(gt, valid, key):
        matches = match(box_iou(gt, anchors), valid, RPN_FG_IOU, RPN_BG_IOU, low_quality=True)
        labels = jnp.where(matches >= 0, 1, jnp.where(matches == -1, 0, -1))
        pos, neg = sample_mask(labels, RPN_SAMPLES, RPN_POSITIVE_FRACTION, key)
        return pos, neg, encode(gt[jnp.maximum(matches, 0)], anchors, (1.0, 1.0, 1.0, 1.0))

    pos, neg, targets = jax.vmap(rpn_targets)(gt, gt_valid, jax.random.split(k_rpn, n))
    sampled = pos | neg
    rpn_count = jnp.maximum(sampled.sum(), 1)
    objectness = optax.sigmoid_binary_cross_entropy(logits, pos.astype(F32))
    loss_objectness = jnp.where(sampled, objectness, 0.0).sum() / rpn_count
    loss_rpn_box = jnp.where(pos[..., None], smooth_l1(deltas, targets), 0.0).sum() / rpn_count

    # Box head: ground truth added to the proposals, matched and sampled; RoIAlign; losses.
    def roi_targets(proposals, proposal_valid, gt, gt_labels, valid, key):
        boxes = jnp.concatenate([proposals, gt])
        usable = jnp.concatenate([proposal_valid, valid])
        boxes = jnp.where(usable[:, None], boxes, jnp.array([0.0, 0.0, 1.0, 1.0]))  # finite codes for the unused
        matches = match(box_iou(gt, boxes), valid, BOX_FG_IOU, BOX_BG_IOU, low_quality=False)
        labels = jnp.where(matches >= 0, gt_labels[jnp.maximum(matches, 0)], jnp.where(matches == -1, 0, -1))
        labels = jnp.where(usable, labels, -1)
        idx, slot_valid = sample_slots(labels, rois_per_image, BOX_POSITIVE_FRACTION, key)
        rois = boxes[idx]
        return rois, labels[idx], encode(gt[jnp.maximum(matches[idx], 0)], rois, BOX_CODER_WEIGHTS), slot_valid

    rois, labels, targets, slot_valid = jax.vmap(roi_targets)(
        jax.lax.stop_gradient(proposals), proposal_valid, gt, gt_labels, gt_valid, jax.random.split(k_roi, n))
    pooled = jax.vmap(roi_align)(feats[:-1], rois)  # (N, R, 7, 7, C)
    class_logits, box_deltas = model.apply(variables, pooled.reshape(-1, *pooled.shape[2:]), method=FasterRCNN.boxes)
    class_logits, box_deltas = class_logits.astype(F32), box_deltas.astype(F32).reshape(-1, model.num_classes, 4)
    labels, targets, slot_valid = labels.reshape(-1), targets.reshape(-1, 4), slot_valid.reshape(-1)
    roi_count = jnp.maximum(slot_valid.sum(), 1)
    ce = optax.softmax_cross_entropy_with_integer_labels(class_logits, jnp.maximum(labels, 0))
    loss_classifier = jnp.where(slot_valid, ce, 0.0).sum() / roi_count
    class_deltas = jnp.take_along_axis(box_deltas, jnp.maximum(labels, 0)[:, None, None], axis=1)[:, 0]
    positive = slot_valid & (labels > 0)
    loss_box = jnp.where(positive[:, None], smooth_l1(class_deltas, targets), 0.0).sum() / roi_count
    return {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box,
            "loss_classifier": loss_classifier, "loss_box_reg": loss_box}


# -- data ----------------------------------------------------------------------------------------

def resized_hw(hp, h: int, w: int) -> tuple[int, int]:
    """The size the transform resizes an (h, w) image to (torch: floor of size x scale)."""
    scale = min(hp["min_size"] / min(h, w), hp["max_size"] / max(h, w))
    return int(math.floor(h * scale)), int(math.floor(w * scale))


def check_sizes(hp) -> None:
    """The canvas holds the raw image: every image of the flavor must be enlarged, not shrunk."""
    lo, hi = hp["image_short"]
    for short in (lo, hi):
        for h, w in ((short, hp["image_long"]), (hp["image_long"], short)):
            nh, nw = resized_hw(hp, h, w)
            if nh < h or nw < w:
                raise UsageError(
                    f"faster_rcnn in JAX resizes images up only; images {h}x{w} would shrink to {nh}x{nw} "
                    f"(min_size {hp['min_size']}, max_size {hp['max_size']}): raise min_size/max_size or lower image sizes")


def make_images(rng: np.random.Generator, hp, n: int):
    """torch_impl.make_images' distribution, drawn with NumPy: VOC-like images of one orientation
    (landscape with probability 0.7), 1 to max_boxes boxes with sides 10-90% of the image's.
    Returns (canvases (n, H, W, 3) with each image at the top left, raw (h, w), resized (h, w),
    boxes (n, max_boxes, 4) in raw coordinates, labels (n, max_boxes), 0 for padding)."""
    lo, hi = hp["image_short"]
    long, g, m = hp["image_long"], hp["max_boxes"], hp["pad_multiple"]
    landscape = rng.random() < 0.7
    shorts = rng.integers(lo, hi + 1, n)
    raw = np.array([(s, long) if landscape else (long, s) for s in shorts], np.int32)
    new = np.array([resized_hw(hp, int(h), int(w)) for h, w in raw], np.int32)
    canvas = [-(-int(max(new[:, i].max(), raw[:, i].max())) // m) * m for i in (0, 1)]
    images = np.zeros((n, *canvas, 3), np.float32)
    boxes = np.tile(np.array([0.0, 0.0, 1.0, 1.0], np.float32), (n, g, 1))  # padding: a harmless box
    labels = np.zeros((n, g), np.int32)
    for i, (h, w) in enumerate(raw):
        images[i, :h, :w] = rng.random((h, w, 3), dtype=np.float32)
        k = int(rng.integers(1, g + 1))
        size = (0.1 + 0.8 * rng.random((k, 2))) * np.array([w, h])
        corner = rng.random((k, 2)) * (np.array([w, h]) - size)
        boxes[i, :k] = np.concatenate([corner, corner + size], axis=1)
        labels[i, :k] = rng.integers(1, hp["num_classes"], k)
    return images, raw, new, boxes, labels


# -- the task ------------------------------------------------------------------------------------

def build(ctx: BuildContext) -> JaxTask:
    hp, n = dict(ctx.hparams), ctx.batch_size
    if hp["backbone"] not in RESNETS:
        raise UsageError(f"faster_rcnn backbone '{hp['backbone']}' is not one of {', '.join(RESNETS)}; pick one of them")
    if not 0 <= hp["trainable_layers"] <= 5:
        raise UsageError(f"faster_rcnn trainable_layers must be 0..5, got {hp['trainable_layers']}")
    check_sizes(hp)
    model = FasterRCNN(hp["backbone"], hp["num_classes"], compute_dtype(ctx.precision))
    fp32_model = FasterRCNN(hp["backbone"], hp["num_classes"])  # calibration runs in fp32, as torch's
    trainable = hp["trainable_layers"]

    def frozen_tree(params):
        return jax.tree_util.tree_map_with_path(lambda path, _: is_frozen(leaf_names(path), trainable), params)

    def init(rng):
        sample = jax.ShapeDtypeStruct((1, 64, 64, 3), F32)
        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), sample)
        k_params, k_images = jax.random.split(rng)
        params = jax.device_put(init_params(shapes["params"], host_generator(k_params)))
        # FrozenBatchNorm's statistics from one forward of random normalized images (torch_impl's
        # calibrate_frozen_bn): each layer normalizes what reaches it.
        images = (jax.random.uniform(k_images, (2, 128, 128, 3)) - jnp.asarray(IMAGE_MEAN)) / jnp.asarray(IMAGE_STD)
        calibrate = jax.jit(lambda p, s, x: fp32_model.apply({"params": p, "frozen_bn": s}, x, method=FasterRCNN.calibrate,
                                                            mutable=["frozen_bn"])[1]["frozen_bn"])
        stats = calibrate(params, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["frozen_bn"]), images)
        return params, stats

    def loss(params, frozen_bn, batch, rng, train=True):
        # Frozen layers: no gradient flows into them (and none is computed), as requires_grad=False.
        params = jax.tree_util.tree_map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen_tree(params))
        losses = detection_losses(model, {"params": params, "frozen_bn": frozen_bn}, batch, rng, hp["rois_per_image"])
        return sum(losses.values()), frozen_bn

    lr = hp["lr"]
    if hp["warmup_steps"] > 0:  # torch's LinearLR from warmup_factor to 1, stepped after each update
        lr = optax.linear_schedule(lr * hp["warmup_factor"], lr, hp["warmup_steps"])
    # Only the trained parameters have an optimizer (and momentum buffers), as in torch.
    optimizer = optax.multi_transform(
        {"train": torch_sgd(lr, hp["momentum"], hp["weight_decay"]), "frozen": optax.set_to_zero()},
        lambda params: jax.tree_util.tree_map(lambda f: "frozen" if f else "train", frozen_tree(params)))

    def make_batch(key, device):
        return jax.device_put(make_images(host_generator(key), hp, n), device)

    return JaxTask(init=init, loss=loss, optimizer=optimizer, make_batch=make_batch, extra={"model": model})
