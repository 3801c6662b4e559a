"""Faster R-CNN in TensorFlow: torchvision's `FasterRCNN` on a ResNet-FPN backbone, rebuilt in TF ops.

`tbd run faster_rcnn --framework tf --flavor tiny` exercises it. TensorFlow has no maintained
Faster R-CNN with torchvision's design (the TF Model Garden's differs in heads, sampling and
defaults), so this file writes torchvision's, part by part, with TensorFlow ops:
- backbone: torchvision's ResNet (18/34: basic blocks, 50/101: bottlenecks, v1.5) in NHWC,
  frozen BatchNorm (statistics as constants; set from one forward pass of random images, as the
  torch implementation calibrates them, since no ImageNet weights are downloaded), the stem and
  the first `5 - trainable_layers` stages frozen; FPN (1x1 lateral and 3x3 output convolutions
  on stages 1-4, nearest 2x top-down, a stride-2 "pool" level);
- RPN: the shared 3x3 head with objectness and box outputs, anchors of sizes 32-512 (one per
  level) and ratios 0.5, 1, 2; proposals as torchvision makes them in training (top 2000 per
  level, decoded, clipped, NMS 0.7 per level, 2000 kept); anchors matched at IoU 0.7 / 0.3 with
  the low-quality matches, 256 sampled per image, half positive at most;
- box head: proposals plus ground-truth boxes matched at IoU 0.5, `rois_per_image` sampled a
  quarter positive at most, RoIAlign to 7x7 (FPN level by box scale, sampling ratio 2) written
  with `tf.image.crop_and_resize` -- TensorFlow has no RoIAlign op; a 14x14 bilinear crop at
  torchvision's sample points, averaged 2x2, is its `roi_align(aligned=False)` except at the
  image border, where crop_and_resize reads zeros and roi_align clamps --, two 1024-wide fully
  connected layers, class and per-class box outputs;
- losses as torchvision's: binary cross-entropy and smooth L1 (beta 1/9) for the RPN, cross-
  entropy and smooth L1 for the box head, summed; SGD with torch's coupled weight decay and the
  linear warm-up of the torch implementation.
Initialization as torchvision's: Kaiming-normal (fan-out) ResNet convolutions, FPN convolutions
Kaiming-uniform (a=1) with zero bias, RPN head N(0, 0.01), the box head's linear layers torch's
default. The trainable parameters are torchvision's, and so are all parameters (the frozen
convolutions included); BatchNorm's frozen statistics are buffers in torch and constants here.

Images: drawn as in torch (VOC sizes, one orientation per batch, 1-5 boxes), then resized to
`min_size` / `max_size` and normalized as torchvision's transform does -- but when the batch is
drawn, on the host, not inside the timed step (a few element-wise passes over the images); the
batch is padded to a multiple of `pad_multiple` and each image's size kept for clipping.
Proposal selection and sampling have data-dependent shapes, which XLA cannot compile: the step
is a tf.function graph, and --compile is refused for this workload.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tbd.errors import UsageError
from tbd.frameworks.base import BuildContext
from tbd.frameworks.tf.session import TfTask, to_device
from tbd.workloads.common_tf import dense, kaiming_normal_fan_out
from tbd.workloads.faster_rcnn.spec import BOX_HIDDEN, FPN_CHANNELS, RESNETS, ROI_POOL

MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)  # torchvision's transform
ANCHOR_SIZES, ASPECT_RATIOS = (32, 64, 128, 256, 512), (0.5, 1.0, 2.0)
RPN_PRE_NMS, RPN_POST_NMS, RPN_NMS, RPN_FG, RPN_BG, RPN_SAMPLES, RPN_POSITIVE = 2000, 2000, 0.7, 0.7, 0.3, 256, 0.5
ROI_FG, ROI_POSITIVE, ROI_WEIGHTS = 0.5, 0.25, (10.0, 10.0, 5.0, 5.0)
BBOX_CLIP = math.log(1000.0 / 16)
SMOOTH_L1_BETA = 1.0 / 9


class FrozenBatchNorm(layers.Layer):
    """torchvision's FrozenBatchNorm2d (weight 1, bias 0): y = (x - mean) / sqrt(var + eps). Its
    statistics are set from its own input while `calibrating` is on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calibrating = False

    def build(self, shape):
        self.mean = self.add_weight(shape=(shape[-1],), initializer="zeros", trainable=False, name="mean")
        self.var = self.add_weight(shape=(shape[-1],), initializer="ones", trainable=False, name="var")

    def call(self, x):
        if self.calibrating:
            mean, var = tf.nn.moments(tf.cast(x, tf.float32), axes=(0, 1, 2))
            self.mean.assign(mean)
            self.var.assign(var * tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32) / tf.cast(tf.size(x) // tf.shape(x)[-1] - 1, tf.float32))
        scale = tf.math.rsqrt(tf.cast(self.var, tf.float32) + 1e-5)
        return tf.cast((tf.cast(x, tf.float32) - self.mean) * scale, x.dtype)


def _conv_bn(x, filters, kernel, stride, name, trainable, relu=True):
    pad = kernel // 2
    if pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    conv = layers.Conv2D(filters, kernel, strides=stride, use_bias=False, kernel_initializer=kaiming_normal_fan_out(), name=f"{name}_conv")
    conv.trainable = trainable
    x = FrozenBatchNorm(name=f"{name}_bn")(conv(x))
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def resnet_fpn(hp) -> keras.Model:
    """torchvision's resnet_fpn_backbone: images (B, H, W, 3) -> P2..P5 and the pool level."""
    kind, blocks = RESNETS[hp["backbone"]]
    expansion = 4 if kind == "bottleneck" else 1
    trainable = hp["trainable_layers"]
    images = keras.Input((None, None, 3), name="images")
    x = _conv_bn(images, 64, 7, 2, "conv1", trainable == 5)
    x = layers.MaxPooling2D(3, 2, name="maxpool")(layers.ZeroPadding2D(1, name="maxpool_pad")(x))  # after ReLU: zero padding = torch's
    stages, c = [], 64
    for stage, n in enumerate(blocks, start=1):
        width, train = 64 * 2 ** (stage - 1), stage > 4 - trainable
        for b in range(n):
            stride, name = (2 if (b == 0 and stage > 1) else 1), f"layer{stage}_{b}"
            if kind == "basic":
                out = _conv_bn(_conv_bn(x, width, 3, stride, f"{name}_1", train), width, 3, 1, f"{name}_2", train, relu=False)
            else:
                out = _conv_bn(x, width, 1, 1, f"{name}_1", train)
                out = _conv_bn(out, width, 3, stride, f"{name}_2", train)
                out = _conv_bn(out, width * expansion, 1, 1, f"{name}_3", train, relu=False)
            shortcut = _conv_bn(x, width * expansion, 1, stride, f"{name}_down", train, relu=False) if (stride == 2 or c != width * expansion) else x
            x, c = layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([out, shortcut])), width * expansion
        stages.append(x)
    # FPN: kaiming_uniform(a=1) weights, zero biases
    fpn_init = keras.initializers.VarianceScaling(1.0, "fan_in", "uniform")
    lateral = [layers.Conv2D(FPN_CHANNELS, 1, kernel_initializer=fpn_init, name=f"fpn_inner{i}") for i in range(4)]
    output = [layers.Conv2D(FPN_CHANNELS, 3, padding="same", kernel_initializer=fpn_init, name=f"fpn_layer{i}") for i in range(4)]
    inner = lateral[3](stages[3])
    results = [output[3](inner)]
    for i in (2, 1, 0):  # padded to a multiple of 32, every level is exactly twice the next: nearest = repeat
        up = layers.UpSampling2D(2, interpolation="nearest", name=f"fpn_up{i}")(inner)
        inner = layers.Add(name=f"fpn_add{i}")([lateral[i](stages[i]), up])
        results.insert(0, output[i](inner))
    results.append(layers.MaxPooling2D(1, 2, name="fpn_pool")(results[-1]))  # LastLevelMaxPool: kernel 1, stride 2
    return keras.Model(images, results, name="backbone")


class FasterRCNN(keras.Model):
    def __init__(self, hp, **kwargs):
        super().__init__(**kwargs)
        self.backbone = resnet_fpn(hp)
        a, normal = len(ASPECT_RATIOS), keras.initializers.RandomNormal(0.0, 0.01)
        self.rpn_conv = layers.Conv2D(FPN_CHANNELS, 3, padding="same", activation="relu", kernel_initializer=normal, name="rpn_conv")
        self.rpn_cls = layers.Conv2D(a, 1, kernel_initializer=normal, name="rpn_cls_logits")
        self.rpn_bbox = layers.Conv2D(4 * a, 1, kernel_initializer=normal, name="rpn_bbox_pred")
        flat = FPN_CHANNELS * ROI_POOL * ROI_POOL
        self.fc6, self.fc7 = dense(BOX_HIDDEN, flat, name="fc6"), dense(BOX_HIDDEN, BOX_HIDDEN, name="fc7")
        self.cls_score = dense(hp["num_classes"], BOX_HIDDEN, name="cls_score")
        self.bbox_pred = dense(4 * hp["num_classes"], BOX_HIDDEN, name="bbox_pred")


# -- boxes (x1, y1, x2, y2) ----------------------------------------------------------------------

def iou(a, b):
    """(N, 4), (M, 4) -> (N, M)."""
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    lt = tf.maximum(a[:, None, :2], b[None, :, :2])
    rb = tf.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = tf.reduce_prod(tf.maximum(rb - lt, 0.0), -1)
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def encode(gt, ref, weights=(1.0, 1.0, 1.0, 1.0)):
    wx, wy, ww, wh = weights
    rw, rh = ref[:, 2] - ref[:, 0], ref[:, 3] - ref[:, 1]
    rx, ry = ref[:, 0] + 0.5 * rw, ref[:, 1] + 0.5 * rh
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gx, gy = gt[:, 0] + 0.5 * gw, gt[:, 1] + 0.5 * gh
    return tf.stack([wx * (gx - rx) / rw, wy * (gy - ry) / rh, ww * tf.math.log(gw / rw), wh * tf.math.log(gh / rh)], -1)


def decode(deltas, ref, weights=(1.0, 1.0, 1.0, 1.0)):
    wx, wy, ww, wh = weights
    rw, rh = ref[:, 2] - ref[:, 0], ref[:, 3] - ref[:, 1]
    rx, ry = ref[:, 0] + 0.5 * rw, ref[:, 1] + 0.5 * rh
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw, dh = tf.minimum(deltas[:, 2] / ww, BBOX_CLIP), tf.minimum(deltas[:, 3] / wh, BBOX_CLIP)
    cx, cy, w, h = dx * rw + rx, dy * rh + ry, tf.exp(dw) * rw, tf.exp(dh) * rh
    return tf.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)


def anchors_for(feature, image_hw, size: int):
    """torchvision's AnchorGenerator for one level: (H W A, 4), location-major."""
    h, w = tf.shape(feature)[1], tf.shape(feature)[2]
    stride_y, stride_x = image_hw[0] // h, image_hw[1] // w
    ratios = tf.constant(ASPECT_RATIOS, tf.float32)
    hr = tf.sqrt(ratios)
    ws, hs = size / hr, size * hr
    base = tf.round(tf.stack([-ws, -hs, ws, hs], -1) / 2)  # (A, 4)
    ys, xs = tf.meshgrid(tf.range(h) * stride_y, tf.range(w) * stride_x, indexing="ij")
    xs, ys = tf.cast(tf.reshape(xs, [-1]), tf.float32), tf.cast(tf.reshape(ys, [-1]), tf.float32)
    shifts = tf.stack([xs, ys, xs, ys], -1)  # (H W, 4)
    return tf.reshape(shifts[:, None, :] + base[None], (-1, 4))


def match(quality, fg: float, bg: float, low_quality: bool):
    """torchvision's Matcher on an IoU matrix (gt, anchors): the matched gt per anchor, -1 below
    `bg`, -2 between; with `low_quality`, each gt's best anchors are matched whatever their IoU."""
    best = tf.reduce_max(quality, 0)
    matches = tf.argmax(quality, 0, output_type=tf.int32)
    out = tf.where(best < bg, -1, tf.where(best < fg, -2, matches))
    if low_quality:
        best_per_gt = tf.reduce_max(quality, 1, keepdims=True)
        is_best = tf.reduce_any(quality == best_per_gt, 0)
        out = tf.where(is_best, matches, out)
    return out


def sample(labels, count: int, positive_fraction: float, noise):
    """BalancedPositiveNegativeSampler: indices of up to count x fraction positives (labels > 0)
    and negatives (== 0) to fill `count`, drawn at random."""
    pos, neg = labels > 0, tf.equal(labels, 0)
    n_pos = tf.minimum(tf.reduce_sum(tf.cast(pos, tf.int32)), int(count * positive_fraction))
    n_neg = tf.minimum(tf.reduce_sum(tf.cast(neg, tf.int32)), count - n_pos)
    u = noise.uniform(tf.shape(labels))
    pick = lambda mask, k: tf.math.top_k(tf.where(mask, u, -1.0), k).indices  # noqa: E731
    return pick(pos, n_pos), pick(neg, n_neg)


def smooth_l1(x, y):
    d = tf.abs(x - y)
    return tf.reduce_sum(tf.where(d < SMOOTH_L1_BETA, 0.5 * d**2 / SMOOTH_L1_BETA, d - 0.5 * SMOOTH_L1_BETA))


def roi_align(levels, image_hw, boxes, batch_index):
    """MultiScaleRoIAlign (7x7, sampling ratio 2, aligned=False) over P2..P5 with crop_and_resize:
    each box on its FPN level (k = floor(4 + log2(sqrt(area) / 224)), clamped to 2..5), 14x14
    bilinear samples at roi_align's sample points, averaged 2x2."""
    k = tf.floor(4.0 + tf.math.log(tf.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) / 224.0 + 1e-6) / math.log(2.0))
    level = tf.cast(tf.clip_by_value(k, 2.0, 5.0), tf.int32) - 2
    out = tf.zeros((tf.shape(boxes)[0], ROI_POOL, ROI_POOL, FPN_CHANNELS), levels[0].dtype)
    grid = 2 * ROI_POOL
    for i, feature in enumerate(levels[:4]):
        fh, fw = tf.shape(feature)[1], tf.shape(feature)[2]
        scale = tf.cast(fh, tf.float32) / tf.cast(image_hw[0], tf.float32)
        b = boxes * scale
        w, h = tf.maximum(b[:, 2] - b[:, 0], 1.0), tf.maximum(b[:, 3] - b[:, 1], 1.0)
        # first and last sample points of the 14x14 grid, in the normalized coordinates crop_and_resize takes
        y1, x1 = (b[:, 1] + 0.5 * h / grid) / tf.cast(fh - 1, tf.float32), (b[:, 0] + 0.5 * w / grid) / tf.cast(fw - 1, tf.float32)
        y2, x2 = (b[:, 1] + h - 0.5 * h / grid) / tf.cast(fh - 1, tf.float32), (b[:, 0] + w - 0.5 * w / grid) / tf.cast(fw - 1, tf.float32)
        crops = tf.image.crop_and_resize(tf.cast(feature, tf.float32), tf.stack([y1, x1, y2, x2], -1), batch_index, (grid, grid))
        pooled = tf.cast(tf.nn.avg_pool2d(crops, 2, 2, "VALID"), out.dtype)
        out = tf.where((level == i)[:, None, None, None], pooled, out)
    return out


def detection_loss(model: FasterRCNN, images, gt_boxes, gt_labels, sizes, hp, noise, training: bool):
    """The sum of torchvision's four training losses for one padded batch."""
    n = images.shape[0]
    image_hw = tf.shape(images)[1:3]
    levels = model.backbone(images, training=training)
    # RPN head on every level; objectness and deltas in anchor order (level, location, ratio)
    anchors, logits, deltas, per_level = [], [], [], []
    for feature, size in zip(levels, ANCHOR_SIZES):
        t = model.rpn_conv(feature)
        logits.append(tf.reshape(tf.cast(model.rpn_cls(t), tf.float32), (n, -1)))
        deltas.append(tf.reshape(tf.cast(model.rpn_bbox(t), tf.float32), (n, -1, 4)))
        anchors.append(anchors_for(feature, image_hw, size))
        per_level.append(tf.shape(anchors[-1])[0])
    all_anchors, all_logits, all_deltas = tf.concat(anchors, 0), tf.concat(logits, 1), tf.concat(deltas, 1)
    rpn_obj, rpn_box, rpn_count, rois, roi_labels, roi_targets, roi_index = [], [], 0, [], [], [], []
    for i in range(n):
        valid = gt_labels[i] > 0
        boxes, labels = tf.boolean_mask(gt_boxes[i], valid), tf.boolean_mask(gt_labels[i], valid)
        h_i, w_i = tf.cast(sizes[i, 0], tf.float32), tf.cast(sizes[i, 1], tf.float32)
        # proposals (no gradient): top 2000 per level, decoded, clipped, NMS per level, 2000 kept
        props, scores, offset = [], [], 0
        for lvl, count in enumerate(per_level):
            lvl_logits = tf.stop_gradient(all_logits[i, offset:offset + count])
            top = tf.math.top_k(lvl_logits, tf.minimum(RPN_PRE_NMS, count))
            level_deltas = tf.stop_gradient(tf.gather(all_deltas[i, offset:offset + count], top.indices))
            box = decode(level_deltas, tf.gather(all_anchors[offset:offset + count], top.indices))
            box = tf.stack([tf.clip_by_value(box[:, 0], 0.0, w_i), tf.clip_by_value(box[:, 1], 0.0, h_i),
                            tf.clip_by_value(box[:, 2], 0.0, w_i), tf.clip_by_value(box[:, 3], 0.0, h_i)], -1)
            keep = ((box[:, 2] - box[:, 0]) >= 1e-3) & ((box[:, 3] - box[:, 1]) >= 1e-3)
            box, score = tf.boolean_mask(box, keep), tf.boolean_mask(top.values, keep)
            # NMS per level: boxes of different levels moved apart so they never overlap
            kept = tf.image.non_max_suppression(box + tf.cast(lvl, tf.float32) * 1e5, score, RPN_POST_NMS, RPN_NMS)
            props.append(tf.gather(box, kept))
            scores.append(tf.gather(score, kept))
            offset += count
        props, scores = tf.concat(props, 0), tf.concat(scores, 0)
        props = tf.gather(props, tf.math.top_k(scores, tf.minimum(RPN_POST_NMS, tf.shape(scores)[0])).indices)
        # RPN targets: anchors matched at 0.7 / 0.3 with low-quality matches, 256 sampled
        quality = iou(boxes, all_anchors)
        matched = match(quality, RPN_FG, RPN_BG, low_quality=True)
        anchor_labels = tf.where(matched >= 0, 1, tf.where(matched == -1, 0, -1))
        pos, neg = sample(anchor_labels, RPN_SAMPLES, RPN_POSITIVE, noise)
        chosen = tf.concat([pos, neg], 0)
        target = tf.concat([tf.ones_like(pos, tf.float32), tf.zeros_like(neg, tf.float32)], 0)
        rpn_obj.append(tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=tf.gather(all_logits[i], chosen)))
        reg = encode(tf.gather(boxes, tf.gather(matched, pos)), tf.gather(all_anchors, pos))
        rpn_box.append(smooth_l1(tf.gather(all_deltas[i], pos), reg))
        rpn_count += tf.shape(chosen)[0]
        # box head targets: proposals and the gt boxes, matched at 0.5, rois_per_image sampled
        candidates = tf.concat([props, boxes], 0)
        matched = match(iou(boxes, candidates), ROI_FG, ROI_FG, low_quality=False)
        cand_labels = tf.where(matched >= 0, tf.gather(labels, tf.maximum(matched, 0)), 0)
        pos, neg = sample(cand_labels, hp["rois_per_image"], ROI_POSITIVE, noise)
        chosen = tf.concat([pos, neg], 0)
        chosen_boxes = tf.gather(candidates, chosen)
        rois.append(chosen_boxes)
        roi_labels.append(tf.gather(cand_labels, chosen))
        targets = encode(tf.gather(boxes, tf.maximum(tf.gather(matched, chosen), 0)), chosen_boxes, ROI_WEIGHTS)
        roi_targets.append(targets)
        roi_index.append(tf.fill(tf.shape(chosen), i))
    rpn_count = tf.cast(rpn_count, tf.float32)
    loss_objectness = tf.reduce_sum(tf.concat(rpn_obj, 0)) / rpn_count
    loss_rpn_box = tf.add_n(rpn_box) / rpn_count
    boxes, labels, targets = tf.stop_gradient(tf.concat(rois, 0)), tf.concat(roi_labels, 0), tf.concat(roi_targets, 0)
    feats = roi_align(levels, image_hw, boxes, tf.concat(roi_index, 0))
    x = tf.reshape(feats, (tf.shape(feats)[0], -1))
    x = tf.nn.relu(model.fc7(tf.nn.relu(model.fc6(x))))
    class_logits, box_deltas = tf.cast(model.cls_score(x), tf.float32), tf.cast(model.bbox_pred(x), tf.float32)
    loss_classifier = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=class_logits))
    positive = labels > 0
    per_class = tf.reshape(box_deltas, (tf.shape(box_deltas)[0], -1, 4))
    chosen = tf.gather(tf.boolean_mask(per_class, positive), tf.boolean_mask(labels, positive), batch_dims=1)
    loss_box_reg = smooth_l1(chosen, tf.boolean_mask(targets, positive)) / tf.cast(tf.shape(labels)[0], tf.float32)
    return loss_objectness + loss_rpn_box + loss_classifier + loss_box_reg


def make_images(rng: np.random.Generator, hp, n: int):
    """torch_impl.make_images' VOC-like images and boxes, as `transformed` makes any batch."""
    lo, hi = hp["image_short"]
    landscape = rng.random() < 0.7  # most VOC images are landscape
    shorts = rng.integers(lo, hi + 1, n)
    images, all_boxes, all_labels = [], [], []
    for short in shorts:
        h, w = (int(short), hp["image_long"]) if landscape else (hp["image_long"], int(short))
        images.append(rng.random((h, w, 3), dtype=np.float32))  # in [0, 1]
        k = int(rng.integers(1, hp["max_boxes"] + 1))
        size = (0.1 + 0.8 * rng.random((k, 2), dtype=np.float32)) * np.array([w, h], np.float32)
        corner = rng.random((k, 2), dtype=np.float32) * (np.array([w, h], np.float32) - size)
        all_boxes.append(np.concatenate([corner, corner + size], 1))  # (k, 4) as x1, y1, x2, y2
        all_labels.append(rng.integers(1, hp["num_classes"], k))  # 0 is background
    return transformed(images, all_boxes, all_labels, hp)


def transformed(images, boxes, labels, hp):
    """Images (HWC in [0, 1]) at their own sizes with their boxes (x1, y1, x2, y2 in pixels) and
    labels, resized, normalized and padded as torchvision's transform does: (images (n, H, W,
    3), boxes (n, max_boxes, 4), labels (n, max_boxes) with 0 in the padding rows, sizes (n, 2)
    of the resized images); an image with more than `max_boxes` boxes widens the two."""
    n, width = len(images), max(hp["max_boxes"], *(len(b) for b in boxes))
    resized, all_boxes, all_labels, sizes = [], np.zeros((n, width, 4), np.float32), np.zeros((n, width), np.int32), []
    for i, (image, box, label) in enumerate(zip(images, boxes, labels)):
        h, w = image.shape[:2]
        scale = min(hp["min_size"] / min(h, w), hp["max_size"] / max(h, w))
        nh, nw = int(h * scale), int(w * scale)
        resized.append(tf.image.resize((image - MEAN) / STD, (nh, nw)).numpy())
        all_boxes[i, : len(box)] = box * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
        all_labels[i, : len(label)] = label
        sizes.append((nh, nw))
    m = hp["pad_multiple"]
    H, W = (-(-max(s[0] for s in sizes) // m) * m, -(-max(s[1] for s in sizes) // m) * m)
    out = np.zeros((n, H, W, 3), np.float32)
    for i, img in enumerate(resized):
        out[i, : img.shape[0], : img.shape[1]] = img
    return out, all_boxes, all_labels, np.asarray(sizes, np.int32)


def from_host(host: dict, ctx: BuildContext, device: str):
    """A loader's VOC batch (uint8 HWC images at their own sizes, boxes, labels) made as the
    synthetic batches are (`transformed`), on the device."""
    images = [img.astype(np.float32) / 255 for img in host["images"]]
    return to_device(transformed(images, host["boxes"], host["labels"], ctx.hparams), device)


def calibrate_frozen_bn(model: FasterRCNN, rng: np.random.Generator, size: int = 128) -> None:
    """Each frozen BatchNorm's statistics from its own input, for random images normalized as the
    transform normalizes them (the torch implementation's calibration; no weights are downloaded)."""
    norms = [layer for layer in model.backbone.layers if isinstance(layer, FrozenBatchNorm)]
    for layer in norms:
        layer.calibrating = True
    try:
        model.backbone((rng.random((2, size, size, 3), dtype=np.float32) - MEAN) / STD, training=False)
    finally:
        for layer in norms:
            layer.calibrating = False


class WarmupLinear(keras.optimizers.schedules.LearningRateSchedule):
    """torch's LinearLR(start_factor, total_iters) stepped after each update: lr x (f + (1 - f) min(k, W) / W)."""

    def __init__(self, lr: float, factor: float, steps: int):
        self.lr, self.factor, self.steps = lr, factor, steps

    def __call__(self, iteration):
        done = tf.minimum(tf.cast(iteration, tf.float32), float(self.steps)) / max(1, self.steps)
        return self.lr * (self.factor + (1.0 - self.factor) * done) if self.steps > 0 else tf.constant(self.lr)

    def get_config(self):
        return {"lr": self.lr, "factor": self.factor, "steps": self.steps}


def build(ctx: BuildContext) -> TfTask:
    hp, n = ctx.hparams, ctx.batch_size
    if hp["backbone"] not in RESNETS:
        raise UsageError(f"faster_rcnn backbone '{hp['backbone']}' is not one of {', '.join(RESNETS)}; pick one of them")
    model = FasterRCNN(hp, name="faster_rcnn")
    model.rpn_conv.build((None, None, None, FPN_CHANNELS))
    model.rpn_cls.build((None, None, None, FPN_CHANNELS))
    model.rpn_bbox.build((None, None, None, FPN_CHANNELS))
    model.fc6.build((None, FPN_CHANNELS * ROI_POOL * ROI_POOL))
    for layer in (model.fc7, model.cls_score, model.bbox_pred):
        layer.build((None, BOX_HIDDEN))
    calibrate_frozen_bn(model, np.random.default_rng(ctx.seed))
    noise = tf.random.Generator.from_seed(ctx.seed)  # the samplers' draws

    def loss(model, batch, training):
        return detection_loss(model, *batch, hp, noise, training)

    schedule = WarmupLinear(hp["lr"], hp["warmup_factor"], hp["warmup_steps"])
    return TfTask(model=model, optimizer=keras.optimizers.SGD(learning_rate=schedule, momentum=hp["momentum"]),
                  make_batch=lambda rng: make_images(rng, hp, n), loss=loss, coupled_weight_decay=hp["weight_decay"],
                  xla_compatible=False)
