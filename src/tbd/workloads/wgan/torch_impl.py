"""WGAN-GP in PyTorch: residual generator and critic for 64x64 images, two Adam optimizers.

`tbd run wgan --flavor tiny` exercises it. One harness step is one generator iteration with
its `n_critic` critic iterations before it (Gulrajani et al., "Improved Training of Wasserstein
GANs", 2017, Algorithm 1); each critic iteration takes its own real batch, so a step consumes
n_critic x batch real images (the step's units and samples). The loss reported is the critic's,
averaged over the step's critic iterations: E[D(fake)] - E[D(real)] + lambda * GP.

The networks follow the paper's "ResNet 64x64" design: the generator goes from a 4x4 map up by
residual blocks with nearest-neighbour upsampling and BatchNorm; the critic comes down by residual
blocks with mean pooling and layer normalization (no BatchNorm: the gradient penalty is per
sample). GroupNorm with one group is that layer norm (statistics over C, H, W, a scale and shift
per channel). Where a 1x1 convolution commutes with the resampling (the shortcuts), it runs at
the lower resolution: the same function for a quarter of the work.

The gradient penalty differentiates the critic's gradient (double backward). Two ways to write
it, `--option gradient_penalty=auto|autograd|func` (auto, the default: func under --compile on
a GPU, autograd otherwise):
- autograd: torch.autograd.grad(create_graph=True) w.r.t. the interpolated images, then the
  critic's update backward through it. It runs eagerly, op by op (about 10,000 kernels a paper
  step on a GPU); with --compile only the generator would be compiled, because compiled graphs
  do not support autograd.grad's double backward.
- func: the critic's loss as one pure function of its parameters (torch.func.functional_call),
  the penalty's input gradient by torch.func.grad, which computes it as ordinary ops that
  Dynamo traces. With --compile that whole function is compiled (fullgraph=True, and the
  generator as before): the forward graph holds the inner gradient, AOTAutograd derives its
  backward (the weight gradients, outer loss.backward(inputs=...)), and Inductor fuses both.
  It compiles to one graph and does not recompile across steps; the same loss and weight
  gradients as autograd in fp32, within bf16 rounding under autocast. The fp16 GradScaler path
  passes the scale as a tensor (the inner gradient of the scaled sum, divided back, as autograd
  does). On an H200 (bench/wgan_torch_gpu.py, 2026-11-30, paper flavor, bf16) compiled func
  ran a step in 135.7 ms against autograd's 268.7 ms (reduce-overhead: 111.3 ms); eager, the
  two ran alike (269.6 ms). On the CPU (tiny flavor, 2 cores) func eager was no faster, and
  compiled func took 246 s to compile and 902 ms a step against eager autograd's 190-210 ms,
  hence auto. The generator step's critic pass stays eager either way.
Under --compile, `--option compile_mode` applies to both compiled functions; each critic
iteration starts a new CUDA-graph step (torch.compiler.cudagraph_mark_step_begin) for
reduce-overhead, and its loss is copied out of the graph's memory.

Two run options pick how the critic computes the same function (same parameters), because its
double backward is most of the step and its cost depends on the ops' backward formulas:
`--option layer_norm=group_norm|ops` (nn.GroupNorm(1, C), or its statistics and per-channel
affine as plain tensor ops) and `--option mean_pool=avg_pool2d|reshape` (F.avg_pool2d(x, 2), or
the mean over 2x2 windows of a reshaped view). Defaults: group_norm, avg_pool2d.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from tbd.errors import UsageError
from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch.session import TorchTask, compile_mode
from tbd.workloads.wgan.spec import check_sizes


class UpBlock(nn.Module):
    """BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3, plus a 1x1-conv-then-upsample shortcut."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x):
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + F.interpolate(self.shortcut(x), scale_factor=2.0, mode="nearest")


class ChannelLayerNorm(nn.Module):
    """nn.GroupNorm(1, C) as plain ops: mean and variance over (C, H, W) in fp32, then one
    multiply-add with a per-sample, per-channel scale and shift. The same parameters (`weight`,
    `bias`, C each) and function; its backward and double backward are autograd's formulas of
    these few ops instead of GroupNorm's composite double backward."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        var, mean = torch.var_mean(x.float(), dim=(1, 2, 3), keepdim=True, correction=0)
        scale = self.weight.view(1, -1, 1, 1) * torch.rsqrt(var + self.eps)  # (B, C, 1, 1)
        return torch.addcmul(self.bias.view(1, -1, 1, 1) - mean * scale, x, scale)  # fp32, as GroupNorm under autocast


def layer_norm(channels: int, kind: str) -> nn.Module:
    return ChannelLayerNorm(channels) if kind == "ops" else nn.GroupNorm(1, channels)


def mean_pool_reshape(x):
    """2x2 mean pooling as the mean over the window axes of a view: backward is one broadcast
    divide (no avg_pool2d backward kernel). A channels_last tensor is viewed as (B, H, W, C), so
    the result (and the gradients) stay channels_last with C innermost."""
    b, c, h, w = x.shape
    if c > 1 and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).view(b, h // 2, 2, w // 2, 2, c).mean(dim=(2, 4)).permute(0, 3, 1, 2)
    return x.reshape(b, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))


def mean_pool_avg(x):
    return F.avg_pool2d(x, 2)


MEAN_POOLS = {"avg_pool2d": mean_pool_avg, "reshape": mean_pool_reshape}


class DownBlock(nn.Module):
    """LN-ReLU-conv3x3-LN-ReLU-conv3x3-meanpool, plus a meanpool-then-1x1-conv shortcut."""

    def __init__(self, c_in: int, c_out: int, norm: str = "group_norm", pool: str = "avg_pool2d"):
        super().__init__()
        self.ln1, self.conv1 = layer_norm(c_in, norm), nn.Conv2d(c_in, c_in, 3, padding=1)
        self.ln2, self.conv2 = layer_norm(c_in, norm), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)
        self.pool = MEAN_POOLS[pool]

    def forward(self, x):
        h = self.conv1(F.relu(self.ln1(x)))
        h = self.pool(self.conv2(F.relu(self.ln2(h))))
        return h + self.shortcut(self.pool(x))


class Generator(nn.Module):
    def __init__(self, noise_dim: int, dim: int, mults: tuple[int, ...]):
        super().__init__()
        self.c0 = mults[0] * dim
        self.fc = nn.Linear(noise_dim, 4 * 4 * self.c0)
        self.blocks = nn.Sequential(*(UpBlock(a * dim, b * dim) for a, b in zip(mults, mults[1:])))
        self.bn, self.out = nn.BatchNorm2d(mults[-1] * dim), nn.Conv2d(mults[-1] * dim, 3, 3, padding=1)

    def forward(self, z):  # (B, noise_dim) -> (B, 3, S, S) in [-1, 1]
        h = self.fc(z).view(z.shape[0], self.c0, 4, 4)
        if self.out.weight.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)
        return torch.tanh(self.out(F.relu(self.bn(self.blocks(h)))))


class Critic(nn.Module):
    def __init__(self, dim: int, mults: tuple[int, ...], norm: str = "group_norm", pool: str = "avg_pool2d"):
        super().__init__()
        self.inp = nn.Conv2d(3, mults[0] * dim, 3, padding=1)
        self.blocks = nn.Sequential(*(DownBlock(a * dim, b * dim, norm, pool) for a, b in zip(mults, mults[1:])))
        self.fc = nn.Linear(4 * 4 * mults[-1] * dim, 1)

    def forward(self, x):  # (B, 3, S, S) -> (B,)
        return self.fc(self.blocks(self.inp(x)).flatten(1)).squeeze(1)


class WGAN(nn.Module):
    """Holds both networks so the adapter moves, casts and counts them together."""

    def __init__(self, hp: dict, norm: str = "group_norm", pool: str = "avg_pool2d"):
        super().__init__()
        self.generator = Generator(hp["noise_dim"], hp["dim"], tuple(hp["g_mults"]))
        self.critic = Critic(hp["dim"], tuple(hp["d_mults"]), norm, pool)


def from_host(host: dict, ctx: BuildContext, device: torch.device):
    """A loader's n_critic x B uint8 images (B, S, S, 3) as n_critic real batches (B, 3, S, S) in [-1, 1]."""
    images = host["images"].to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1)
    return tuple(images.chunk(ctx.hparams["n_critic"]))


def critic_options(options) -> tuple[str, str]:
    """The options layer_norm and mean_pool (their values are checked before the run)."""
    return options.get("layer_norm", "group_norm"), options.get("mean_pool", "avg_pool2d")


def wasserstein_loss(d_real, d_fake, grad, lam: float):
    """E[D(fake)] - E[D(real)] + lam * E[(||grad D(x_hat)|| - 1)^2]."""
    gp = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    return d_fake.mean() - d_real.mean() + lam * gp


def critic_loss_autograd(D, real, fake, eps, lam: float, autocast=contextlib.nullcontext, scaler=None):
    """The critic's loss with the penalty's input gradient by torch.autograd.grad(create_graph=True):
    the critic update's backward is then a double backward, run op by op (eager only)."""
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    with autocast():
        d_real, d_fake = D(torch.cat([real, fake])).float().chunk(2)  # one pass: per-sample norms
        d_hat = D(x_hat).float()
    # The penalty's gradient w.r.t. the inputs, kept in the graph (create_graph) so the
    # critic's update differentiates through it. Taken outside autocast, scaled under fp16,
    # as in PyTorch's AMP recipe for gradient penalties.
    if scaler is None:
        (grad,) = torch.autograd.grad(d_hat.sum(), x_hat, create_graph=True)
    else:
        (grad,) = torch.autograd.grad(scaler.scale(d_hat.sum()), x_hat, create_graph=True)
        grad = grad / scaler.get_scale()
    return wasserstein_loss(d_real, d_fake, grad, lam)


def critic_loss_function(D: nn.Module, lam: float, autocast=contextlib.nullcontext):
    """The critic's loss as a pure function loss(params, real, fake, eps, scale) of the critic's
    parameters (a name -> tensor dict, e.g. dict(D.named_parameters())), for
    --option gradient_penalty=func. The penalty's input gradient is torch.func.grad of the
    critic's output sum, computed by functorch's transform as ordinary ops, which torch.compile
    traces into the same graph as the loss (Dynamo and AOTAutograd then differentiate that graph for
    the weight gradients; torch.autograd.grad(create_graph=True) cannot be compiled). `scale` is
    the GradScaler's scale as a tensor (fp16) or None: the inner gradient is taken of the scaled
    sum and divided back, as in critic_loss_autograd."""

    def critic(params, x):
        with autocast():
            return torch.func.functional_call(D, params, (x,)).float()

    def loss(params, real, fake, eps, scale=None):
        x_hat = eps * real + (1 - eps) * fake
        d_real, d_fake = critic(params, torch.cat([real, fake])).chunk(2)

        def scaled_sum(x):  # critic() autocasts the forward; func.grad's backward runs after it, outside autocast
            total = critic(params, x).sum()
            return total if scale is None else total * scale

        grad = torch.func.grad(scaled_sum)(x_hat)
        if scale is not None:
            grad = grad / scale
        return wasserstein_loss(d_real, d_fake, grad, lam)

    return loss


def penalty_by_func(option: str, compiled: bool, device: str) -> bool:
    """Whether the critic's loss is critic_loss_function's (gradient_penalty=func, or auto under
    --compile on a GPU: the one place it was measured faster) rather than autograd's."""
    return option == "func" or (option == "auto" and compiled and device == "cuda")


def build(ctx: BuildContext) -> TorchTask:
    hp = ctx.hparams
    check_sizes(hp)
    n, size, n_critic, noise_dim, lam = ctx.batch_size, hp["image_size"], hp["n_critic"], hp["noise_dim"], hp["gp_weight"]
    model = WGAN(hp, *critic_options(ctx.options))
    penalty = ctx.options.get("gradient_penalty", "auto")
    state: dict = {}

    def make_batch(gen: torch.Generator, device: torch.device):
        # n_critic real batches (B, 3, S, S) in [-1, 1], as ImageNet 64x64 pixels scaled for tanh.
        return tuple(torch.rand(n, 3, size, size, generator=gen, device=device) * 2 - 1 for _ in range(n_critic))

    def make_optimizer(m: WGAN):
        # Adam lr 1e-4, betas (0, 0.9) for both networks (the WGAN-GP paper's); the adapter
        # reports the generator's, the critic's lives here.
        if not isinstance(m, WGAN):  # wrapped by DistributedDataParallel: its gradient sync needs its forward
            raise UsageError("wgan's two-network step runs in one process; data-parallel WGAN-GP is not implemented, "
                             "run it without --nproc-per-node/--nnodes")
        adam = dict(lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), foreach=True)
        state["opt_d"] = torch.optim.Adam(m.critic.parameters(), **adam)
        state["g_params"] = list(m.generator.parameters())
        state["d_params"] = list(m.critic.parameters())
        return torch.optim.Adam(m.generator.parameters(), **adam)

    def generator_for(session) -> nn.Module:
        if "G" not in state:
            g = session.model.generator
            if session.config.compile:
                g = torch.compile(g, **compile_mode(session.config.options))
                session.info.method["compile"] = (
                    f"torch.compile ({compile_mode(session.config.options) or 'default mode'}) of the generator; critic eager "
                    "(gradient penalty by autograd.grad(create_graph=True): double backward, not compilable)")
            state["G"] = g
        return state["G"]

    def critic_loss_for(session):
        """gradient_penalty=func: the critic's loss function, compiled once under --compile
        (fullgraph: the penalty's inner gradient in the same graph as the loss)."""
        if "critic_loss" not in state:
            fn = critic_loss_function(session.model.critic, lam, session.autocast)
            if session.config.compile:
                fn = torch.compile(fn, fullgraph=True, **compile_mode(session.config.options))
                session.info.method["compile"] = (
                    f"torch.compile ({compile_mode(session.config.options) or 'default mode'}) of the generator and of the critic's "
                    "loss as one function of its parameters (fullgraph; gradient penalty by torch.func.grad traced "
                    "into it, weight gradients by its compiled backward); the generator step's critic pass eager")
            state["critic_loss"] = fn
        return state["critic_loss"]

    def backward(session, loss, inputs, opt) -> None:
        # backward(inputs=...) computes only that network's gradients (no weight gradients of
        # the critic in the generator step, no gradient w.r.t. the interpolated images).
        if session.scaler is not None:
            session.scaler.scale(loss).backward(inputs=inputs)
            session.scaler.step(opt)
            session.scaler.update()
        else:
            loss.backward(inputs=inputs)
            opt.step()

    def interpolation_inputs(G, real, autocast=contextlib.nullcontext):
        """A fake batch from fresh noise (no gradient) and the per-sample mixing weights of x_hat."""
        with torch.no_grad(), autocast():
            fake = G(torch.randn(n, noise_dim, device=real.device)).to(real.dtype)
        return fake, torch.rand(n, 1, 1, 1, device=real.device)

    def critic_loss(G, D, real, autocast=contextlib.nullcontext, scaler=None, func_loss=None):
        """The critic's loss on a real batch: the penalty by autograd, or by func_loss (a
        critic_loss_function, possibly compiled) where one is given."""
        fake, eps = interpolation_inputs(G, real, autocast)
        if func_loss is None:
            return critic_loss_autograd(D, real, fake, eps, lam, autocast, scaler)
        # The scale as a tensor: no host sync, and no recompilation when it changes.
        scale = None if scaler is None else scaler.scale(torch.ones((), device=real.device))
        return func_loss(dict(D.named_parameters()), real, fake, eps, scale)

    def loss(m: WGAN, batch):
        """The critic's loss on the first real batch (for tools that want one forward + loss)."""
        func_loss = critic_loss_function(m.critic, lam) if penalty_by_func(penalty, compiled=False, device="") else None
        return critic_loss(m.generator, m.critic, batch[0], func_loss=func_loss)

    def train_step(session, batch):
        G, D = generator_for(session), session.model.critic
        func_loss = critic_loss_for(session) if penalty_by_func(penalty, session.config.compile, session.config.device) else None
        opt_d, opt_g = state["opt_d"], session.optimizer
        losses = []
        for real in batch:  # n_critic critic iterations, a fresh real batch each
            if session.config.compile:  # under CUDA graphs (reduce-overhead), each critic iteration is a new replay
                torch.compiler.cudagraph_mark_step_begin()
            opt_d.zero_grad(set_to_none=True)
            loss_d = critic_loss(G, D, real, session.autocast, session.scaler, func_loss)
            backward(session, loss_d, state["d_params"], opt_d)
            # Under --compile a copy: a CUDA graph's output is overwritten by its next replay.
            losses.append(loss_d.detach().clone() if session.config.compile else loss_d.detach())
        if session.config.compile:
            torch.compiler.cudagraph_mark_step_begin()
        opt_g.zero_grad(set_to_none=True)
        with session.autocast():
            loss_g = -D(G(torch.randn(n, noise_dim, device=batch[0].device))).float().mean()
        backward(session, loss_g, state["g_params"], opt_g)
        return torch.stack(losses).mean()

    def images(batch) -> float:
        return float(sum(real.shape[0] for real in batch))

    return TorchTask(
        model=model, make_optimizer=make_optimizer, make_batch=make_batch, loss=loss, units=images, samples=images,
        train_step=train_step, extra={"state": state},
    )
