"""WGAN-GP in JAX: the torch implementation's residual generator and critic, its own train step.

`tbd run wgan --framework jax --flavor tiny` exercises it on the CPU. One step is one generator
iteration with its `n_critic` critic iterations before it, each critic iteration on its own real
batch (Gulrajani et al. 2017, Algorithm 1), all in one jitted program: the step is the task's
own `train_step` (the critic's loop inside, an unrolled `lax.scan`), as torch's is `TorchTask.train_step`.
The loss reported is the critic's, E[D(fake)] - E[D(real)] + lambda * GP, averaged over the
step's critic iterations.

The networks are torch's layer for layer (same parameter count, torch's default init): the
generator goes up from a 4x4 map by residual blocks with nearest-neighbour upsampling and
BatchNorm (batch statistics, as torch's model in train mode: running statistics are updated by
every generator forward, the critic iterations' included); the critic comes down by residual
blocks with mean pooling and a one-group GroupNorm (layer norm over C, H, W with a scale and
shift per channel, eps 1e-5 as torch). The shortcuts' 1x1 convolutions run at the lower
resolution, as in torch. Two Adams (lr 1e-4, betas (0, 0.9), eps 1e-8 outside the square root,
as torch's) in one optax transformation that updates only the network whose gradients it gets.

The gradient penalty differentiates the critic's input gradient (`jax.grad` inside
`jax.value_and_grad`): XLA compiles the double backward like any other; nothing runs eagerly.
In bf16 the layers compute in bf16, the critic's outputs and the penalty's gradient are fp32.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tbd.errors import UsageError
from tbd.frameworks.base import BuildContext
from tbd.frameworks.jax.session import JaxTask, TrainState, compute_dtype
from tbd.workloads.common_jax import torch_default_rule, torch_like_init
from tbd.workloads.wgan.spec import check_sizes


def _conv(features: int, k: int, dtype: Any, name: str) -> nn.Conv:
    # Padding k // 2 on each side, explicit as torch's (Flax's 'SAME' could pad asymmetrically).
    return nn.Conv(features, (k, k), padding=((k // 2, k // 2), (k // 2, k // 2)), dtype=dtype, param_dtype=jnp.float32, name=name)


def _upsample(x):  # nearest neighbour, 2x: (B, H, W, C) -> (B, 2H, 2W, C)
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _mean_pool(x):  # 2x2 mean pooling: (B, H, W, C) -> (B, H/2, W/2, C)
    # A reshape and a mean rather than a pooling window: its gradients (and theirs, in the
    # penalty's double backward) are broadcasts and sums, not padded windows.
    B, H, W, C = x.shape
    return x.reshape(B, H // 2, 2, W // 2, 2, C).mean(axis=(2, 4))


class UpBlock(nn.Module):
    """BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3, plus a 1x1-conv-then-upsample shortcut."""

    c_out: int
    train: bool
    dtype: Any

    @nn.compact
    def __call__(self, x):
        # torch.nn.BatchNorm2d's numbers: momentum 0.1 (0.9 in Flax's convention), eps 1e-5.
        bn = lambda name: nn.BatchNorm(use_running_average=not self.train, momentum=0.9, epsilon=1e-5,  # noqa: E731
                                       dtype=self.dtype, param_dtype=jnp.float32, name=name)
        h = _upsample(nn.relu(bn("bn1")(x)))
        h = _conv(self.c_out, 3, self.dtype, "conv2")(nn.relu(bn("bn2")(_conv(self.c_out, 3, self.dtype, "conv1")(h))))
        return h + _upsample(_conv(self.c_out, 1, self.dtype, "shortcut")(x))


class LayerNorm2d(nn.Module):
    """torch's nn.GroupNorm(1, C): statistics over (H, W, C) per image, in fp32; a scale and a
    shift per channel (Flax's GroupNorm computes the same with a group axis more to trace)."""

    dtype: Any

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        x32 = x.astype(jnp.float32)
        mean = x32.mean(axis=(1, 2, 3), keepdims=True)
        var = jnp.square(x32 - mean).mean(axis=(1, 2, 3), keepdims=True)
        return ((x32 - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias).astype(self.dtype)


class DownBlock(nn.Module):
    """LN-ReLU-conv3x3-LN-ReLU-conv3x3-meanpool, plus a meanpool-then-1x1-conv shortcut."""

    c_out: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        c_in = x.shape[-1]
        ln = lambda name: LayerNorm2d(self.dtype, name=name)  # noqa: E731
        h = _conv(c_in, 3, self.dtype, "conv1")(nn.relu(ln("ln1")(x)))
        h = _mean_pool(_conv(self.c_out, 3, self.dtype, "conv2")(nn.relu(ln("ln2")(h))))
        return h + _conv(self.c_out, 1, self.dtype, "shortcut")(_mean_pool(x))


class Generator(nn.Module):
    noise_dim: int
    dim: int
    mults: tuple[int, ...]
    train: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z):  # (B, noise_dim) -> (B, S, S, 3) in [-1, 1]
        c0 = self.mults[0] * self.dim
        h = nn.Dense(4 * 4 * c0, dtype=self.dtype, param_dtype=jnp.float32, name="fc")(z).reshape(z.shape[0], 4, 4, c0)
        for i, m in enumerate(self.mults[1:]):
            h = UpBlock(m * self.dim, self.train, self.dtype, name=f"block{i}")(h)
        h = nn.BatchNorm(use_running_average=not self.train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                         param_dtype=jnp.float32, name="bn")(h)
        return jnp.tanh(_conv(3, 3, self.dtype, "out")(nn.relu(h)))


class Critic(nn.Module):
    dim: int
    mults: tuple[int, ...]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):  # (B, S, S, 3) -> (B,) in fp32
        h = _conv(self.mults[0] * self.dim, 3, self.dtype, "inp")(x)
        for i, m in enumerate(self.mults[1:]):
            h = DownBlock(m * self.dim, self.dtype, name=f"block{i}")(h)
        h = nn.Dense(1, dtype=self.dtype, param_dtype=jnp.float32, name="fc")(h.reshape(h.shape[0], -1))
        return h[:, 0].astype(jnp.float32)


def per_network(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """One `inner` optimizer per network of a {network: params} tree. `update` gets the gradients
    of some of the networks ({"critic": grads}) and steps only those, leaving the others' state
    (moments, step count) untouched, as two separate torch optimizers would."""

    def init(params):
        return {name: inner.init(p) for name, p in params.items()}

    def update(grads, state, params=None):
        state, out = dict(state), {}
        for name, g in grads.items():
            out[name], state[name] = inner.update(g, state[name], None if params is None else params[name])
        return out, state

    return optax.GradientTransformation(init, update)


def from_host(host: dict, ctx: BuildContext, device):
    """A loader's n_critic x B uint8 images (B, S, S, 3) as the synthetic batch: (n_critic, B, S, S, 3) in [-1, 1]."""
    images = jax.device_put(host["images"], device)
    n_critic = ctx.hparams["n_critic"]
    images = images.reshape(n_critic, images.shape[0] // n_critic, *images.shape[1:])
    return images.astype(jnp.float32) / 127.5 - 1.0


def build(ctx: BuildContext) -> JaxTask:
    hp = ctx.hparams
    check_sizes(hp)
    if jax.process_count() > 1:
        raise UsageError("wgan's two-network step runs in one process; data-parallel WGAN-GP is not implemented, "
                         "run it without --nproc-per-node/--nnodes")
    n, size, n_critic, noise_dim, lam = ctx.batch_size, hp["image_size"], hp["n_critic"], hp["noise_dim"], hp["gp_weight"]
    dtype = compute_dtype(ctx.precision)
    generator = Generator(noise_dim, hp["dim"], tuple(hp["g_mults"]), dtype=dtype)
    critic = Critic(hp["dim"], tuple(hp["d_mults"]), dtype=dtype)
    optimizer = per_network(optax.adam(hp["lr"], b1=hp["beta1"], b2=hp["beta2"], eps=1e-8))

    def init(rng):
        g = jax.eval_shape(generator.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, noise_dim), jnp.float32))
        d = jax.eval_shape(critic.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
        shapes = {"generator": g["params"], "critic": d["params"]}
        # BatchNorm running statistics as torch starts them: mean 0, variance 1.
        stats = jax.tree_util.tree_map_with_path(
            lambda path, x: (np.ones if path[-1].key == "var" else np.zeros)(x.shape, np.float32), g["batch_stats"])
        return torch_like_init(shapes, torch_default_rule(shapes), rng), stats

    def generate(g_params, g_stats, key, train=True):
        """Fake images (fp32) from fresh noise, and the generator's updated BatchNorm statistics."""
        z = jax.random.normal(key, (n, noise_dim), jnp.float32)
        variables = {"params": g_params, "batch_stats": g_stats}
        if not train:
            return generator.clone(train=False).apply(variables, z).astype(jnp.float32), g_stats
        fake, updates = generator.apply(variables, z, mutable=["batch_stats"])
        return fake.astype(jnp.float32), updates["batch_stats"]

    def critic_loss(d_params, real, fake, key):
        eps = jax.random.uniform(key, (n, 1, 1, 1), jnp.float32)
        x_hat = eps * real + (1 - eps) * fake
        d_real, d_fake = jnp.split(critic.apply({"params": d_params}, jnp.concatenate([real, fake])), 2)  # one pass
        # The critic's gradient w.r.t. the interpolates, differentiated again by the caller's grad.
        grad = jax.grad(lambda x: critic.apply({"params": d_params}, x).sum())(x_hat)
        gp = jnp.mean((jnp.sqrt(jnp.sum(grad.reshape(n, -1) ** 2, axis=1)) - 1) ** 2)
        return d_fake.mean() - d_real.mean() + lam * gp

    def loss(params, g_stats, batch, rng, train=True):
        """The critic's loss on the first real batch (for tools that want one forward + loss)."""
        k_z, k_eps = jax.random.split(rng)
        fake, g_stats = generate(params["generator"], g_stats, k_z, train)
        return critic_loss(params["critic"], batch[0], jax.lax.stop_gradient(fake), k_eps), g_stats

    def train_step(state: TrainState, batch):
        rng, k_critic, k_gen = jax.random.split(state.rng, 3)
        g_params = state.params["generator"]

        def critic_iteration(carry, xs):  # one critic update on its own real batch
            d_params, g_stats, opt_state = carry
            real, key = xs
            k_z, k_eps = jax.random.split(key)
            fake, g_stats = generate(g_params, g_stats, k_z)  # no gradient to the generator here
            loss_d, grads = jax.value_and_grad(critic_loss)(d_params, real, fake, k_eps)
            updates, opt_state = optimizer.update({"critic": grads}, opt_state, {"critic": d_params})
            return (optax.apply_updates(d_params, updates["critic"]), g_stats, opt_state), loss_d

        # Unrolled: on the CPU the unrolled step runs several times faster than XLA's loop and
        # compiles barely slower; XLA may also start the next iteration's generator forward early.
        (d_params, g_stats, opt_state), losses = jax.lax.scan(
            critic_iteration, (state.params["critic"], state.model_state, state.opt_state), (batch, jax.random.split(k_critic, n_critic)), unroll=True)

        def generator_loss(g):  # gradients w.r.t. the generator only: no critic weight gradients
            fake, stats = generate(g, g_stats, k_gen)
            return -critic.apply({"params": d_params}, fake).mean(), stats

        (_, g_stats), grads = jax.value_and_grad(generator_loss, has_aux=True)(g_params)
        updates, opt_state = optimizer.update({"generator": grads}, opt_state, {"generator": g_params})
        g_params = optax.apply_updates(g_params, updates["generator"])
        params = {"generator": g_params, "critic": d_params}
        return TrainState(params, opt_state, g_stats, rng), losses.mean()

    def make_batch(key, device):
        # n_critic real batches (n_critic, B, S, S, 3) in [-1, 1], as ImageNet 64x64 pixels scaled for tanh.
        with jax.default_device(device):
            return jax.random.uniform(key, (n_critic, n, size, size, 3), jnp.float32, -1.0, 1.0)

    def images(batch) -> float:
        return float(batch.shape[0] * batch.shape[1])

    return JaxTask(init=init, loss=loss, optimizer=optimizer, make_batch=make_batch, units=images, samples=images,
                   train_step=train_step, extra={"generator": generator, "critic": critic})
