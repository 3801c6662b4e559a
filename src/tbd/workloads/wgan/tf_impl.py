"""WGAN-GP in TensorFlow: residual generator and critic (Keras 3 layers), two Adam optimizers.

`tbd run wgan --framework tf --flavor tiny` exercises it. The step is the torch one (spec.py):
one generator iteration after `n_critic` critic iterations, each on its own real batch; the
reported loss is the critic's E[D(fake)] - E[D(real)] + lambda GP averaged over them. The
networks are torch's layer for layer (same parameter count): generator from a 4x4 map up by
residual blocks (BatchNorm, nearest-neighbour upsampling, 1x1 shortcut at the lower
resolution), critic down by residual blocks with layer normalization (GroupNormalization with
one group: statistics over H, W, C, a scale and shift per channel, as torch's GroupNorm(1, C))
and 2x2 mean pooling; PyTorch's default initialization of every convolution and linear layer.
The generator's first map is laid out (4, 4, C) from its linear layer's output, torch's
(C, 4, 4): the same function up to a permutation of that layer's units.

The gradient penalty differentiates the critic's input gradient: a GradientTape inside the
critic's tape (double backward), traced into the step's tf.function like the rest, and under
--compile compiled by XLA with it. Under fp16 the penalty's inner gradient is taken of the
scaled sum and unscaled, and both optimizers scale their losses (as PyTorch's AMP recipe).
Multi-process runs are refused, as in torch: the two-network step is not data parallel.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tbd.errors import UsageError
from tbd.frameworks.base import BuildContext
from tbd.frameworks.tf.session import TfTask
from tbd.workloads.common_tf import conv2d, dense
from tbd.workloads.wgan.spec import check_sizes


def _conv(filters: int, k: int, c_in: int, name: str):
    """A k x k convolution padded k // 2 on each side (explicit, as torch's)."""
    conv = conv2d(filters, k, c_in, name=name)
    return keras.Sequential([layers.ZeroPadding2D(k // 2), conv], name=f"{name}_padded") if k > 1 else conv


def _mean_pool(x):  # 2x2 mean pooling: (B, H, W, C) -> (B, H/2, W/2, C)
    return tf.nn.avg_pool2d(x, 2, 2, "VALID")


def _upsample(x):  # nearest neighbour, 2x
    return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)


class UpBlock(layers.Layer):
    """BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3, plus a 1x1-conv-then-upsample shortcut."""

    def __init__(self, c_in: int, c_out: int, **kwargs):
        super().__init__(**kwargs)
        self.bn1 = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn1")
        self.bn2 = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn2")
        self.conv1, self.conv2 = _conv(c_out, 3, c_in, "conv1"), _conv(c_out, 3, c_out, "conv2")
        self.shortcut = _conv(c_out, 1, c_in, "shortcut")

    def call(self, x, training=False):
        h = _upsample(tf.nn.relu(self.bn1(x, training=training)))
        h = self.conv2(tf.nn.relu(self.bn2(self.conv1(h), training=training)))
        return h + _upsample(self.shortcut(x))


class DownBlock(layers.Layer):
    """LN-ReLU-conv3x3-LN-ReLU-conv3x3-meanpool, plus a meanpool-then-1x1-conv shortcut."""

    def __init__(self, c_in: int, c_out: int, **kwargs):
        super().__init__(**kwargs)
        self.ln1 = layers.GroupNormalization(groups=1, epsilon=1e-5, name="ln1")
        self.ln2 = layers.GroupNormalization(groups=1, epsilon=1e-5, name="ln2")
        self.conv1, self.conv2 = _conv(c_in, 3, c_in, "conv1"), _conv(c_out, 3, c_in, "conv2")
        self.shortcut = _conv(c_out, 1, c_in, "shortcut")

    def call(self, x):
        h = self.conv1(tf.nn.relu(self.ln1(x)))
        h = _mean_pool(self.conv2(tf.nn.relu(self.ln2(h))))
        return h + self.shortcut(_mean_pool(x))


class Generator(keras.Model):
    def __init__(self, noise_dim: int, dim: int, mults, **kwargs):
        super().__init__(**kwargs)
        self.c0 = mults[0] * dim
        self.fc = dense(4 * 4 * self.c0, noise_dim, name="fc")
        self.blocks = [UpBlock(a * dim, b * dim, name=f"up{i}") for i, (a, b) in enumerate(zip(mults, mults[1:]))]
        self.bn = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn")
        self.out = _conv(3, 3, mults[-1] * dim, "out")

    def call(self, z, training=False):  # (B, noise_dim) -> (B, S, S, 3) in [-1, 1]
        h = tf.reshape(self.fc(z), (-1, 4, 4, self.c0))
        for block in self.blocks:
            h = block(h, training=training)
        return tf.tanh(self.out(tf.nn.relu(self.bn(h, training=training))))


class Critic(keras.Model):
    def __init__(self, dim: int, mults, **kwargs):
        super().__init__(**kwargs)
        self.inp = _conv(mults[0] * dim, 3, 3, "inp")
        self.blocks = [DownBlock(a * dim, b * dim, name=f"down{i}") for i, (a, b) in enumerate(zip(mults, mults[1:]))]
        self.fc = dense(1, 4 * 4 * mults[-1] * dim, name="fc")

    def call(self, x):  # (B, S, S, 3) -> (B,)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        return self.fc(tf.reshape(h, (tf.shape(h)[0], -1)))[:, 0]


class WGAN(keras.Model):
    """Holds both networks so that the session counts them together."""

    def __init__(self, hp, **kwargs):
        super().__init__(**kwargs)
        self.generator = Generator(hp["noise_dim"], hp["dim"], tuple(hp["g_mults"]), name="generator")
        self.critic = Critic(hp["dim"], tuple(hp["d_mults"]), name="critic")


def from_host(host: dict, ctx: BuildContext, device: str):
    """A loader's n_critic x B uint8 images (B, S, S, 3) as the synthetic batch: n_critic real
    batches (B, S, S, 3) float32 in [-1, 1], scaled on the device (the copy stays uint8)."""
    with tf.device(device):
        images = tf.cast(tf.convert_to_tensor(host["images"]), tf.float32) / 127.5 - 1.0
        return tuple(tf.split(images, ctx.hparams["n_critic"]))


def build(ctx: BuildContext) -> TfTask:
    hp = ctx.hparams
    check_sizes(hp)
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
        raise UsageError("wgan's two-network step runs in one process; data-parallel WGAN-GP is not implemented, "
                         "run it without --nproc-per-node/--nnodes")
    n, size, n_critic, noise_dim, lam = ctx.batch_size, hp["image_size"], hp["n_critic"], hp["noise_dim"], hp["gp_weight"]
    model = WGAN(hp, name="wgan")
    G, D = model.generator, model.critic
    G(np.zeros((1, noise_dim), np.float32))  # creates the variables
    D(np.zeros((1, size, size, 3), np.float32))
    noise = tf.random.Generator.from_seed(ctx.seed)
    adam = lambda: keras.optimizers.Adam(learning_rate=hp["lr"], beta_1=hp["beta1"], beta_2=hp["beta2"], epsilon=1e-8)  # noqa: E731
    opt_d = keras.optimizers.LossScaleOptimizer(adam()) if ctx.precision == "fp16" else adam()
    opt_d.build(D.trainable_variables)

    def make_batch(rng: np.random.Generator):
        # n_critic real batches (B, S, S, 3) in [-1, 1], as ImageNet 64x64 pixels scaled for tanh.
        return tuple(rng.random((n, size, size, 3), dtype=np.float32) * 2 - 1 for _ in range(n_critic))

    def critic_loss(real):
        fake = tf.stop_gradient(tf.cast(G(noise.normal((n, noise_dim)), training=True), tf.float32))
        eps = noise.uniform((n, 1, 1, 1))
        x_hat = eps * real + (1 - eps) * fake
        with tf.GradientTape() as inner:
            inner.watch(x_hat)
            scaled_sum = opt_d.scale_loss(tf.reduce_sum(tf.cast(D(x_hat), tf.float32)))
        # The penalty's input gradient, unscaled; the outer tape differentiates through it.
        grad = tf.cast(inner.gradient(scaled_sum, x_hat), tf.float32) / opt_d.scale_loss(tf.constant(1.0))
        d_real, d_fake = tf.split(tf.cast(D(tf.concat([real, fake], 0)), tf.float32), 2)  # one pass: per-sample norms
        gp = tf.reduce_mean((tf.norm(tf.reshape(grad, (n, -1)), axis=1) - 1.0) ** 2)
        return tf.reduce_mean(d_fake) - tf.reduce_mean(d_real) + lam * gp

    def loss(model, batch, training):
        """The critic's loss on the first real batch (for tools that want one forward + loss)."""
        return critic_loss(batch[0])

    # One critic iteration, traced once and called n_critic times from the step (unrolled in
    # Python it would be traced, and its double backward built, n_critic times).
    @tf.function
    def critic_iteration(real):
        with tf.GradientTape() as tape:
            loss_d = critic_loss(real)
            scaled = opt_d.scale_loss(loss_d)
        opt_d.apply_gradients(zip(tape.gradient(scaled, D.trainable_variables), D.trainable_variables))
        return loss_d

    def train_step(session, batch):
        losses = [critic_iteration(real) for real in batch]  # n_critic iterations, a fresh real batch each
        opt_g = session.optimizer
        with tf.GradientTape() as tape:
            loss_g = -tf.reduce_mean(tf.cast(D(G(noise.normal((n, noise_dim)), training=True)), tf.float32))
            scaled = opt_g.scale_loss(loss_g)
        opt_g.apply_gradients(zip(tape.gradient(scaled, G.trainable_variables), G.trainable_variables))
        return tf.reduce_mean(tf.stack(losses))

    def images(batch) -> float:
        return float(sum(real.shape[0] for real in batch))

    return TfTask(model=model, optimizer=adam(), variables=G.trainable_variables, make_batch=make_batch, loss=loss,
                  units=images, samples=images, train_step=train_step, extra={"critic_optimizer": opt_d})
