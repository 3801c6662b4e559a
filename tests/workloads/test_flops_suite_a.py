"""Analytic FLOPs of inception_v3, faster_rcnn and wgan against torch's FlopCounterMode, and the
run options that need care (bf16 autocast and channels_last through wgan's double backward).

    .venv/bin/python -m pytest -q tests/workloads/test_flops_suite_a.py

Each check measures one full training step (forward and backward) of the tiny flavor, or of a
small configuration, and asks the spec's count to be within 10% of what the counter saw.
"""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from tbd import registry  # noqa: E402
from tbd.config import RunConfig  # noqa: E402
from tbd.frameworks.base import BuildContext  # noqa: E402
from tbd.workloads.base import Flavor  # noqa: E402

TOLERANCE = 0.10


class _NoModuleTracking:
    """FlopCounterMode attributes FLOPs to modules with backward hooks, which autograd.grad
    (wgan's gradient penalty) rejects; counting only the global total needs no module tracker."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def count_flops(fn) -> float:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracking()
    with counter:
        fn()
    return float(counter.get_total_flops())


def build_task(workload: str, hparams: dict, batch_size: int):
    impl = registry.load_implementation(workload, "torch")
    torch.manual_seed(0)
    ctx = BuildContext(hparams=hparams, batch_size=batch_size, device="cpu", precision="fp32", seed=0, flavor="tiny")
    task = impl.build(ctx)
    batch = task.make_batch(torch.Generator().manual_seed(0), torch.device("cpu"))
    return task, batch


def assert_close(analytic: float, counted: float) -> None:
    assert counted > 0
    assert abs(analytic - counted) / counted <= TOLERANCE, f"analytic {analytic:.4g} vs counted {counted:.4g} FLOPs"


def test_inception_v3_flops_match_the_counter():
    spec = registry.get_spec("inception_v3")
    flavor = spec.flavor("tiny")
    task, batch = build_task("inception_v3", dict(flavor.hparams), 2)
    counted = count_flops(lambda: task.loss(task.model, batch).backward())
    assert_close(spec.train_flops_per_sample(flavor) * 2, counted)


def test_inception_v3_paper_count_is_the_known_size():
    # 5.7 G multiply-adds per 299 px image forward is Inception-v3's published cost.
    from tbd.workloads.inception_v3.spec import forward_flops

    assert forward_flops(299, 1000) / 2 == pytest.approx(5.71e9, rel=0.01)


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_faster_rcnn_flops_match_the_counter(backbone):
    """Counted at the padded size the transform really fed the backbone and the RoIs the box head
    really got; RoIAlign and NMS are torchvision ops the counter does not see (nor does the spec)."""
    from tbd.workloads.faster_rcnn.spec import count_step

    spec = registry.get_spec("faster_rcnn")
    hp = {**spec.flavor("tiny").hparams, "backbone": backbone}
    task, batch = build_task("faster_rcnn", hp, 2)
    seen = {}

    def record(key):
        def hook(module, args):
            seen[key] = args[0].shape

        return hook

    task.model.backbone.register_forward_pre_hook(record("images"))
    task.model.roi_heads.box_head.register_forward_pre_hook(record("rois"))
    counted = count_flops(lambda: task.loss(task.model, batch).backward())
    n, _, h, w = seen["images"]
    assert h % 32 == 0 and w % 32 == 0 and min(h, w) >= hp["min_size"]
    assert seen["rois"][0] == n * hp["rois_per_image"]
    assert_close(n * count_step(Flavor("x", n, "", hp), h, w, hp["rois_per_image"]).train, counted)


def test_faster_rcnn_paper_image_and_data():
    from tbd.workloads.faster_rcnn.spec import nominal_size
    from tbd.workloads.faster_rcnn.torch_impl import make_images

    paper = registry.get_spec("faster_rcnn").flavor("paper")
    assert nominal_size(paper) == (608, 800)  # 375x500 scaled by 1.6 to 600x800, padded to 32
    images, targets = make_images(torch.Generator().manual_seed(3), torch.device("cpu"), dict(paper.hparams), 2)
    again, _ = make_images(torch.Generator().manual_seed(3), torch.device("cpu"), dict(paper.hparams), 2)
    assert all(torch.equal(a, b) for a, b in zip(images, again))  # reproducible by seed
    for image, target in zip(images, targets):
        _, h, w = image.shape
        assert max(h, w) == 500 and 281 <= min(h, w) <= 375
        boxes, labels = target["boxes"], target["labels"]
        assert 1 <= len(boxes) <= 5 and len(labels) == len(boxes)
        assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
        assert bool((boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all() and (boxes >= 0).all())
        assert bool(((labels >= 1) & (labels <= 20)).all())


def test_faster_rcnn_longest_inputs_are_the_largest_image_every_draw():
    # `tbd memory faster_rcnn --max-batch` sizes batches this way: drawn sizes pad a batch to
    # 640 x 896 or 640 x 1024 by chance, and the figure must hold for the larger.
    from tbd.workloads.faster_rcnn.spec import resized_size
    from tbd.workloads.faster_rcnn.torch_impl import make_images

    spec = registry.get_spec("faster_rcnn")
    hp = dict(spec.flavor("paper").hparams)
    longest = {**hp, **spec.longest_inputs(hp)}
    assert longest["image_short"] == (300, 300)  # 600 x 1000 after the transform: min_size and max_size at once
    pixels = {short: resized_size(hp, short, hp["image_long"]) for short in range(hp["image_short"][0], hp["image_short"][1] + 1)}
    assert max(h * w for h, w in pixels.values()) == resized_size(hp, 300, hp["image_long"])[0] * resized_size(hp, 300, hp["image_long"])[1]
    for seed in range(4):
        images, _ = make_images(torch.Generator().manual_seed(seed), torch.device("cpu"), longest, 3)
        assert {tuple(sorted(image.shape[1:])) for image in images} == {(300, 500)}


def _session(task, precision: str = "fp32"):
    """The parts of a TorchSession a custom train_step uses."""
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    return SimpleNamespace(model=task.model, optimizer=task.make_optimizer(task.model), autocast=autocast, scaler=None,
                           config=SimpleNamespace(compile=False, device="cpu", options={}), info=SimpleNamespace(method={}))


def test_wgan_flops_match_the_counter():
    """One whole step: 5 critic iterations with the gradient penalty's double backward, then the
    generator iteration; per real image consumed."""
    spec = registry.get_spec("wgan")
    flavor = spec.flavor("tiny")
    task, batch = build_task("wgan", dict(flavor.hparams), 8)
    images = task.units(batch)
    assert images == flavor["n_critic"] * 8 == task.samples(batch)
    session = _session(task)
    counted = count_flops(lambda: task.train_step(session, batch))
    assert_close(spec.train_flops_per_sample(flavor) * images, counted)


def test_wgan_step_trains_both_networks_under_bf16_and_channels_last():
    spec = registry.get_spec("wgan")
    task, batch = build_task("wgan", dict(spec.flavor("tiny").hparams), 8)
    task.model.to(memory_format=torch.channels_last)
    batch = tuple(t.contiguous(memory_format=torch.channels_last) for t in batch)
    session = _session(task, "bf16")
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    loss = task.train_step(session, batch)
    assert math.isfinite(float(loss))
    changed = {k.split(".")[0] for k, v in task.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"generator", "critic"}
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in task.model.parameters())


# bf16 convolutions are slow on a CPU: Inception (plain torchvision) is checked in fp32 only.
@pytest.mark.parametrize("workload,precision", [("inception_v3", "fp32"), ("faster_rcnn", "bf16")])
def test_channels_last_through_the_adapter(workload, precision):
    from tbd.harness.runner import losses_on_fixed_batch

    config = RunConfig(workload=workload, flavor="tiny", precision=precision, channels_last=True, isolate=False).validated()
    losses = losses_on_fixed_batch(config, 2)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


def test_wgan_rejects_sizes_its_blocks_cannot_reach():
    from tbd.errors import UsageError
    from tbd.workloads.wgan.spec import check_sizes

    hp = dict(registry.get_spec("wgan").flavor("paper").hparams)
    check_sizes(hp)
    with pytest.raises(UsageError, match="g_mults"):
        check_sizes({**hp, "image_size": 32})
