"""PyTorch and JAX ResNet-50 are the same model: `pytest -q tests/test_resnet50_parity.py`.

Parameter counts come from shapes only (jax.eval_shape, torchvision's module), so no training
compute is needed; one forward pass with torchvision's weights copied into the Flax model checks
the architecture layer for layer (padding, strides, BatchNorm); the optimizer is checked against
torch.optim.SGD on a few tensors.
"""

from __future__ import annotations

from tbd import frameworks

import functools

import numpy as np
import pytest

from tbd.config import RunConfig
from tbd.errors import UsageError

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
jnp = pytest.importorskip("jax.numpy")

from tbd.frameworks.base import BuildContext  # noqa: E402
from tbd.workloads.resnet50 import jax_impl  # noqa: E402

TORCHVISION_RESNET50_PARAMS = 25_557_032


def _jax_counts(image_size: int, num_classes: int) -> tuple[int, int]:
    """(parameters, BatchNorm running-statistics entries) of the Flax model, from shapes only."""
    model = jax_impl.ResNet50(num_classes=num_classes)
    sample = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0), sample)
    size = lambda tree: sum(x.size for x in jax.tree_util.tree_leaves(tree))  # noqa: E731
    return size(shapes["params"]), size(shapes["batch_stats"])


def _torch_count(num_classes: int) -> int:
    return sum(p.numel() for p in torchvision.models.resnet50(num_classes=num_classes).parameters())


def test_both_frameworks_have_torchvisions_25557032_parameters_at_1000_classes():
    params, stats = _jax_counts(224, 1000)
    assert _torch_count(1000) == TORCHVISION_RESNET50_PARAMS
    assert params == TORCHVISION_RESNET50_PARAMS
    # Running mean and variance of every BatchNorm are model state, not parameters.
    assert stats == 2 * 26_560


def test_tiny_flavor_counts_are_equal():
    assert _jax_counts(32, 10)[0] == _torch_count(10)


def test_init_follows_torchvision_and_is_decided_by_the_key():
    ctx = BuildContext(hparams=dict(image_size=32, num_classes=10, lr=0.1, momentum=0.9, weight_decay=1e-4),
                       batch_size=2, device="cpu", precision="fp32", seed=0, flavor="tiny")
    params, stats = jax_impl.build(ctx).init(jax.random.PRNGKey(0))
    w = np.asarray(params["layer4_2"]["conv2"]["kernel"])  # (3, 3, 512, 512): std sqrt(2 / fan_out)
    assert abs(w.std() / np.sqrt(2.0 / (3 * 3 * 512)) - 1) < 0.01
    assert np.abs(np.asarray(params["fc"]["kernel"])).max() <= 1 / np.sqrt(2048)
    assert np.all(np.asarray(params["bn1"]["scale"]) == 1) and np.all(np.asarray(stats["bn1"]["var"]) == 1)
    again, _ = jax_impl.build(ctx).init(jax.random.PRNGKey(0))  # the seed decides the weights
    assert np.array_equal(np.asarray(again["conv1"]["kernel"]), np.asarray(params["conv1"]["kernel"]))


def _flax_from_torch(model) -> dict:
    """torchvision state dict -> Flax variables (OIHW -> HWIO kernels, (out, in) -> (in, out))."""
    params: dict = {}
    stats: dict = {}
    for name, t in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        parts = name.split(".")
        if parts[0].startswith("layer"):  # layer1.0.conv1.weight / layer1.0.downsample.1.bias
            scope = [f"{parts[0]}_{parts[1]}"]
            module = {"0": "downsample_conv", "1": "downsample_bn"}[parts[3]] if parts[2] == "downsample" else parts[2]
        else:
            scope, module = [], parts[0]
        leaf, value = parts[-1], t.detach().numpy()
        if value.ndim == 4:
            leaf, value = "kernel", value.transpose(2, 3, 1, 0)
        elif module == "fc" and leaf == "weight":
            leaf, value = "kernel", value.T
        elif leaf in ("running_mean", "running_var"):
            leaf = {"running_mean": "mean", "running_var": "var"}[leaf]
        elif leaf == "weight":
            leaf = "scale"
        target = stats if leaf in ("mean", "var") else params
        for key in [*scope, module]:
            target = target.setdefault(key, {})
        target[leaf] = jnp.asarray(value)
    return {"params": params, "batch_stats": stats}


def test_forward_matches_torchvision_with_the_same_weights():
    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=10)
    # 64 px leaves 2x2 maps in the last stage: BatchNorm over 2 images of 1x1 maps (32 px) turns
    # rounding differences into O(1) output differences, in any two implementations.
    images = torch.randn(2, 3, 64, 64)
    flax_model = jax_impl.ResNet50(num_classes=10)
    variables = _flax_from_torch(model)
    nhwc = jnp.asarray(images.numpy().transpose(0, 2, 3, 1))
    with torch.no_grad(), jax.default_matmul_precision("highest"):
        for train in (False, True):  # running statistics, then batch statistics (torch updates them)
            model.train(train)
            expected = model(images).numpy()
            got = flax_model.apply(variables, nhwc, train=train, mutable=["batch_stats"] if train else False)
            got = np.asarray(got[0] if train else got)
            np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_optimizer_is_torch_sgd_with_momentum_and_weight_decay():
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
    grads = [[rng.standard_normal(w.shape).astype(np.float32) for w in weights] for _ in range(3)]
    tparams = [torch.tensor(w, requires_grad=True) for w in weights]
    opt = torch.optim.SGD(tparams, lr=0.1, momentum=0.9, weight_decay=1e-4)
    tx = jax_impl.torch_sgd(0.1, 0.9, 1e-4)
    jparams = [jnp.asarray(w) for w in weights]
    state = tx.init(jparams)
    for g in grads:
        for p, gi in zip(tparams, g):
            p.grad = torch.tensor(gi)
        opt.step()
        updates, state = tx.update([jnp.asarray(gi) for gi in g], state, jparams)
        jparams = [p + u for p, u in zip(jparams, updates)]
    for t, j in zip(tparams, jparams):
        np.testing.assert_allclose(np.asarray(j), t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_fp16_with_jax_is_a_usage_error_naming_bf16():
    with pytest.raises(UsageError, match="bf16"):
        RunConfig(workload="resnet50", framework="jax", precision="fp16").validated()
    with pytest.raises(UsageError, match="bf16"):
        RunConfig(workload="resnet50", framework="jax", precision="fp16", device="cuda").validated()


def test_jax_session_compiles_the_step_once_and_frees_it_on_close():
    config = RunConfig(workload="resnet50", framework="jax", flavor="tiny", data_pool=2, isolate=False).validated()
    session = frameworks.open_session(config)
    try:
        times = session.run_steps(3)  # rotates through both pool batches
        assert len(times.seconds) == 3 and times.samples == [4.0, 4.0, 4.0]
        # An input committed differently on the first call would compile the step twice.
        assert session.step_fn._cache_size() == 1
        assert np.isfinite(session.last_loss())
        assert session.num_parameters == _torch_count(10)
        assert "block_until_ready" in session.info.method["timing"] and "XLA jit" in session.info.method["compile"]
        assert session.memory() == {}  # the CPU backend keeps no allocator statistics
    finally:
        session.close()
    assert session.state is None and session.batches == [] and session.step_fn is None
