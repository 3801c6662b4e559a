"""wgan's PyTorch options layer_norm=ops and mean_pool=reshape compute the critic of the default
(nn.GroupNorm(1, C), F.avg_pool2d) with the same parameters: the critic's outputs, the gradient
penalty and the critic's weight gradients through the double backward agree (tiny flavor, CPU).

    .venv/bin/python -m pytest -q tests/workloads/test_wgan_torch_options.py
"""

from __future__ import annotations

import contextlib

import pytest

torch = pytest.importorskip("torch")

from tbd import registry  # noqa: E402
from tbd.config import RunConfig  # noqa: E402
from tbd.errors import UsageError  # noqa: E402
from tbd.workloads.wgan import torch_impl  # noqa: E402

HP = registry.get_spec("wgan").flavor("tiny").hparams
BATCH = 4


def critic(norm: str, pool: str, reference=None):
    torch.manual_seed(0)
    net = torch_impl.Critic(HP["dim"], tuple(HP["d_mults"]), norm, pool)
    if reference is not None:
        net.load_state_dict(reference.state_dict())  # the same parameter names and shapes
    return net


def penalty_step(net, channels_last: bool, autocast: bool) -> dict:
    """The implementation's critic loss (E[D(fake)] - E[D(real)] + 10 GP) on fixed inputs, and
    the critic's weight gradients of it (double backward through the penalty)."""
    g = torch.Generator().manual_seed(1)
    size = HP["image_size"]
    real, fake = (torch.rand(BATCH, 3, size, size, generator=g) * 2 - 1 for _ in range(2))
    eps = torch.rand(BATCH, 1, 1, 1, generator=g)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        real, fake = (t.contiguous(memory_format=torch.channels_last) for t in (real, fake))
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast else contextlib.nullcontext
    with cast():
        d_real, d_fake = net(torch.cat([real, fake])).float().chunk(2)
        d_hat = net(x_hat).float()
    (grad,) = torch.autograd.grad(d_hat.sum(), x_hat, create_graph=True)
    gp = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    loss = d_fake.mean() - d_real.mean() + HP["gp_weight"] * gp
    loss.backward(inputs=list(net.parameters()))
    return {"out": torch.cat([d_real, d_fake]).detach(), "input_grad": grad.detach(), "gp": gp.detach(),
            "weight_grads": {n: p.grad.detach().clone() for n, p in net.named_parameters()}}


def assert_agree(a: dict, b: dict, rtol: float, atol: float) -> None:
    torch.testing.assert_close(a["out"], b["out"], rtol=rtol, atol=atol)
    torch.testing.assert_close(a["input_grad"], b["input_grad"], rtol=rtol, atol=atol)
    torch.testing.assert_close(a["gp"], b["gp"], rtol=rtol, atol=atol)
    assert a["weight_grads"].keys() == b["weight_grads"].keys()
    for name, ga in a["weight_grads"].items():
        gb = b["weight_grads"][name]
        # gradients are compared relative to their tensor's scale (bf16 rounds each element)
        scale = float(ga.abs().max()) or 1.0
        torch.testing.assert_close(ga / scale, gb / scale, rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


VARIANTS = [("ops", "avg_pool2d"), ("group_norm", "reshape"), ("ops", "reshape")]


@pytest.mark.parametrize("norm,pool", VARIANTS)
def test_variant_is_the_default_function_in_fp32(norm, pool):
    default = critic("group_norm", "avg_pool2d")
    variant = critic(norm, pool, reference=default)
    assert sum(p.numel() for p in variant.parameters()) == sum(p.numel() for p in default.parameters())
    assert_agree(penalty_step(default, False, False), penalty_step(variant, False, False), rtol=1e-4, atol=1e-5)


def test_variant_agrees_under_bf16_autocast_and_channels_last():
    """The session's setting on a GPU (bf16 autocast, channels_last): agreement within bf16 rounding."""
    default = critic("group_norm", "avg_pool2d")
    variant = critic("ops", "reshape", reference=default)
    # measured: 0.5% of each gradient's scale; a 10% change of one norm weight fails this
    assert_agree(penalty_step(default, True, True), penalty_step(variant, True, True), rtol=0.02, atol=0.02)


def test_options_reach_the_model_and_bad_values_are_refused():
    impl = registry.load_implementation("wgan", "torch")
    from tbd.frameworks.base import BuildContext

    ctx = BuildContext(hparams=dict(HP), batch_size=2, device="cpu", precision="fp32", seed=0, flavor="tiny",
                       options={"layer_norm": "ops", "mean_pool": "reshape"})
    block = impl.build(ctx).model.critic.blocks[0]
    assert isinstance(block.ln1, torch_impl.ChannelLayerNorm) and block.pool is torch_impl.mean_pool_reshape
    with pytest.raises(UsageError, match="layer_norm"):
        RunConfig(workload="wgan", flavor="tiny", options={"layer_norm": "fast"}).validated()


# --option gradient_penalty=func: the critic's loss as one torch.func function of its parameters.

def penalty_inputs(channels_last: bool = False, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    size = HP["image_size"]
    real, fake = (torch.rand(BATCH, 3, size, size, generator=g) * 2 - 1 for _ in range(2))
    if channels_last:
        real, fake = (t.contiguous(memory_format=torch.channels_last) for t in (real, fake))
    return real, fake, torch.rand(BATCH, 1, 1, 1, generator=g)


def loss_and_grads(net, loss_fn) -> dict:
    """loss_fn(params) -> the critic loss; the loss and the critic's weight gradients of it."""
    params = dict(net.named_parameters())
    loss = loss_fn(params)
    loss.backward(inputs=list(params.values()))
    grads = {n: p.grad.detach().clone() for n, p in params.items()}
    for p in params.values():
        p.grad = None
    return {"loss": loss.detach(), "weight_grads": grads}


def assert_same_loss_and_grads(a: dict, b: dict, rtol: float, atol: float) -> None:
    torch.testing.assert_close(a["loss"], b["loss"], rtol=rtol, atol=atol)
    assert a["weight_grads"].keys() == b["weight_grads"].keys()
    for name, ga in a["weight_grads"].items():
        scale = float(ga.abs().max()) or 1.0
        torch.testing.assert_close(ga / scale, b["weight_grads"][name] / scale, rtol=rtol, atol=atol,
                                   msg=lambda m, n=name: f"{n}: {m}")


def autograd_reference(net, inputs, cast=contextlib.nullcontext, scaler=None) -> dict:
    return loss_and_grads(net, lambda _: torch_impl.critic_loss_autograd(net, *inputs, HP["gp_weight"], cast, scaler))


@pytest.mark.parametrize("norm,pool", [("group_norm", "avg_pool2d"), ("ops", "reshape")])
def test_func_penalty_is_the_autograd_loss_and_gradients_in_fp32(norm, pool):
    net = critic(norm, pool)
    inputs = penalty_inputs()
    func_loss = torch_impl.critic_loss_function(net, HP["gp_weight"])
    assert_same_loss_and_grads(autograd_reference(net, inputs), loss_and_grads(net, lambda p: func_loss(p, *inputs)),
                               rtol=1e-5, atol=1e-6)


def test_func_penalty_with_a_grad_scaler_scale_is_the_autograd_one():
    """The fp16 path's plumbing: the inner gradient of the scaled sum, divided back (in fp32 here,
    so the scale changes nothing but rounding)."""
    net = critic("group_norm", "avg_pool2d")
    inputs = penalty_inputs()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scale = scaler.scale(torch.ones(()))
    func_loss = torch_impl.critic_loss_function(net, HP["gp_weight"])
    assert_same_loss_and_grads(autograd_reference(net, inputs, scaler=scaler),
                               loss_and_grads(net, lambda p: func_loss(p, *inputs, scale)), rtol=1e-5, atol=1e-6)


def test_func_penalty_agrees_under_bf16_autocast_and_channels_last():
    net = critic("group_norm", "avg_pool2d").to(memory_format=torch.channels_last)
    inputs = penalty_inputs(channels_last=True)
    cast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    func_loss = torch_impl.critic_loss_function(net, HP["gp_weight"], cast)
    # measured: the same loss; weight gradients within 0.3% of each tensor's scale (bf16 rounding)
    assert_same_loss_and_grads(autograd_reference(net, inputs, cast), loss_and_grads(net, lambda p: func_loss(p, *inputs)),
                               rtol=0.02, atol=0.02)


def test_func_penalty_compiles_to_one_graph_without_recompiling():
    """Dynamo captures the whole critic loss, the penalty's inner gradient included, in one graph
    (fullgraph), AOTAutograd differentiates it for the weight gradients, and new inputs and
    updated weights reuse that graph. Backend aot_eager: the capture and differentiation that
    --compile relies on, without Inductor's code generation (a minute and a half on 2 busy cores;
    `tbd run wgan --flavor tiny --option gradient_penalty=func --compile` runs it)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    net = critic("group_norm", "avg_pool2d")
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(torch_impl.critic_loss_function(net, HP["gp_weight"]), backend=counter, fullgraph=True)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    for seed in (1, 2, 3):
        inputs = penalty_inputs(seed=seed)
        expected = autograd_reference(net, inputs)
        got = loss_and_grads(net, lambda p: compiled(p, *inputs))
        assert_same_loss_and_grads(expected, got, rtol=1e-5, atol=1e-6)
        for name, p in net.named_parameters():  # an update in place, as the optimizer's
            p.grad = got["weight_grads"][name]
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert counter.frame_count == 1, f"{counter.frame_count} compilations for 3 calls of the same shapes"
    torch._dynamo.reset()


def test_func_penalty_option_runs_the_same_training_steps():
    """The harness's session with gradient_penalty=func reports the default's losses (the same
    seeds, batches and noise; fp32 eager)."""
    from tbd import frameworks

    losses = {}
    for penalty in ("autograd", "func"):
        config = RunConfig(workload="wgan", framework="torch", flavor="tiny", device="cpu", batch_size=BATCH, precision="fp32",
                           options={"gradient_penalty": penalty}, isolate=False, data_pool=1).validated()
        session = frameworks.open_session(config)
        losses[penalty] = []
        for _ in range(2):
            session.run_steps(1)
            losses[penalty].append(session.last_loss())
        session.close()
    assert losses["func"] == pytest.approx(losses["autograd"], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(("option", "compiled", "device", "by_func"), [
    ("auto", True, "cuda", True), ("auto", False, "cuda", False), ("auto", True, "cpu", False),
    ("func", False, "cpu", True), ("func", True, "cuda", True), ("autograd", True, "cuda", False)])
def test_auto_penalty_is_func_only_compiled_on_a_gpu(option, compiled, device, by_func):
    """The default (auto): func where it compiles the whole critic loss on a GPU (2x faster a
    step on an H200), autograd eager (as fast there) and on the CPU (compiled func was slower)."""
    assert torch_impl.penalty_by_func(option, compiled, device) is by_func


def test_default_penalty_is_auto():
    config = RunConfig(workload="wgan", framework="torch", flavor="tiny", device="cpu").validated()
    assert "gradient_penalty" not in config.options
    from tbd.frameworks.torch import PLUGIN

    assert PLUGIN.capabilities.option_values["gradient_penalty"][0] == "auto"


def test_gradient_penalty_bad_value_lists_the_valid_ones():
    with pytest.raises(UsageError, match=r"gradient_penalty=double is not one of auto, autograd, func"):
        RunConfig(workload="wgan", flavor="tiny", options={"gradient_penalty": "double"}).validated()
