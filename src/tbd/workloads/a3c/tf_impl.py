"""A3C with a TensorFlow learner: the torch implementation's actor processes play, TF computes and applies.

`tbd run a3c --framework tf --flavor tiny` exercises it on the CPU (needs `pip install 'tbd[rl]'`;
the actors are torch's, so torch too). The design is in `spec.py`; this is its learner rule
with the learner in TensorFlow, plugged in as the JAX learner is: the actor processes are
`torch_impl.ActorPool`'s, unchanged -- each copies the published weights into its local torch
policy, plays t_max agent steps in its emulator on the CPU, computes the n-step returns and
hands the rollout (observations, actions, returns) to the learner through shared memory. The
learner computes the A3C loss of each rollout and its gradients in one `tf.function` (XLA under
--compile), clips them (global norm 40) and applies the paper's RMSProp (Keras' RMSprop: squares
from zero, eps inside the square root, no momentum), one update per rollout as it arrives, then
publishes the weights to the shared CPU copy the actors read at the start of their next rollout.

As in torch and JAX, each gradient is taken at the weights the actors played with (the round's
starting weights, kept in a second copy of the policy while the round's updates move the
current one), so gradients and updates are torch's. Hogwild has no TF counterpart: update_rule
'hogwild' is refused. The policy computes exactly torch's: observations arrive NCHW and are
transposed to TensorFlow's NHWC, the conv features are flattened in torch's (C, H, W) order, and
publishing transposes each kernel to torch's layout (OIHW convolutions, (out, in) linear weights).
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from tbd.errors import UsageError
from tbd.frameworks.base import BuildContext
from tbd.frameworks.tf.session import TfTask
from tbd.workloads.a3c.spec import CONVS, HIDDEN, SCREEN, STACK, feature_size
from tbd.workloads.common_tf import conv2d, dense


class Policy(keras.Model):
    """torch_impl.Policy: conv 16 8x8/4, conv 32 4x4/2, fc 256, policy and value heads."""

    def __init__(self, num_actions: int, **kwargs):
        super().__init__(**kwargs)
        (c1, k1, s1), (c2, k2, s2) = CONVS
        self.conv1, self.conv2 = conv2d(c1, k1, STACK, stride=s1, name="conv1"), conv2d(c2, k2, c1, stride=s2, name="conv2")
        self.fc = dense(HIDDEN, feature_size(), name="fc")
        self.pi, self.v = dense(num_actions, HIDDEN, name="pi"), dense(1, HIDDEN, name="v")

    def call(self, obs):
        """obs (B, 4, 84, 84) uint8, torch's layout -> logits (B, A), values (B,)."""
        x = tf.transpose(tf.cast(obs, tf.float32) / 255.0, (0, 2, 3, 1))  # NHWC
        x = tf.nn.relu(self.conv2(tf.nn.relu(self.conv1(x))))
        x = tf.reshape(tf.transpose(x, (0, 3, 1, 2)), (tf.shape(x)[0], -1))  # torch's (C, H, W) flattening
        x = tf.nn.relu(self.fc(x))
        return self.pi(x), self.v(x)[:, 0]


def torch_layout(variable) -> np.ndarray:
    """A Keras kernel in torch's layout: (kh, kw, in, out) -> (out, in, kh, kw); (in, out) -> (out, in)."""
    value = variable.numpy() if hasattr(variable, "numpy") else np.asarray(variable)
    return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T if value.ndim == 2 else value


def a3c_loss(model: Policy, hp: dict, obs, actions, returns):
    """torch_impl.rollout_loss: policy gradient with n-step advantages, value_coef x 0.5 x squared
    advantages, minus entropy_coef x entropy, summed over the rollout."""
    logits, values = model(obs)
    log_probs = tf.nn.log_softmax(logits, -1)
    entropy = -tf.reduce_sum(tf.exp(log_probs) * log_probs, -1)
    advantages = returns - values
    chosen = tf.gather(log_probs, actions, batch_dims=1)
    policy_loss = -tf.reduce_sum(chosen * tf.stop_gradient(advantages))
    value_loss = 0.5 * tf.reduce_sum(advantages**2)
    return policy_loss + hp["value_coef"] * value_loss - hp["entropy_coef"] * tf.reduce_sum(entropy)


def build(ctx: BuildContext) -> TfTask:
    import torch

    from tbd.workloads.a3c import torch_impl

    hp, n = dict(ctx.hparams), ctx.batch_size
    if ctx.precision in ("bf16", "fp16"):
        raise UsageError(f"a3c's actors run in fp32 on the CPU; drop --precision {ctx.precision}")
    if hp["update_rule"] not in ("auto", "learner"):
        raise UsageError(f"a3c in TensorFlow has a learner only (Hogwild updates a shared torch model); set update_rule=learner or auto, "
                         f"not {hp['update_rule']!r}")
    t_max = hp["t_max"]
    policy, round_policy = Policy(hp["num_actions"], name="policy"), Policy(hp["num_actions"], name="round_policy")
    sample = np.zeros((1, STACK, SCREEN, SCREEN), np.uint8)
    policy(sample), round_policy(sample)  # creates the variables, in the same order
    optimizer = keras.optimizers.RMSprop(learning_rate=hp["lr"], rho=hp["rms_decay"], epsilon=hp["rms_eps"],
                                         global_clipnorm=hp["max_grad_norm"])
    # What actors read (torch's parameter order and shapes) and where they leave their rollouts.
    with torch.device("meta"):
        torch_shapes = [tuple(p.shape) for p in torch_impl.Policy(hp["num_actions"]).parameters()]
    shared = [torch.zeros(shape).share_memory_() for shape in torch_shapes]
    obs_slots = torch.zeros(n, t_max, STACK, SCREEN, SCREEN, dtype=torch.uint8).share_memory_()
    action_return_slots = torch.zeros(n, 2, t_max).share_memory_()
    actors: dict[str, torch_impl.ActorPool] = {}  # started by the first step: tools build a task only to trace it
    acct = torch_impl.Accounting(n, hp, ctx.device, learner=True, role=(
        f"TensorFlow learner on {ctx.device}: actors (torch, CPU) send rollouts, the learner computes each one's gradients at "
        "the round's starting weights and applies them as they arrive, then publishes the weights"))
    functions: dict = {}

    def update(obs, actions, returns):
        """One actor's rollout: gradients at the round's starting weights, applied to the current ones."""
        with tf.GradientTape() as tape:
            loss = a3c_loss(round_policy, hp, obs, actions, returns)
        grads = tape.gradient(loss, round_policy.trainable_variables)
        optimizer.apply_gradients(zip(grads, policy.trainable_variables))
        return loss

    def publish() -> None:
        for tensor, variable in zip(shared, policy.trainable_variables):
            tensor.numpy()[...] = torch_layout(variable)  # a view of the shared memory

    def host_step(session, batch):
        if not functions:
            functions["update"] = tf.function(update, jit_compile=bool(session.config.compile))
        if "pool" not in actors:
            publish()
            actors["pool"] = torch_impl.ActorPool(n, hp, ctx.seed, shared, slots=[(obs_slots[i], action_return_slots[i]) for i in range(n)])
        for current, start in zip(policy.trainable_variables, round_policy.trainable_variables):
            start.assign(current)
        losses = []

        def on_result(index: int, stats: dict) -> None:
            actions, returns = action_return_slots[index]
            with tf.device(session.device):
                losses.append(functions["update"](obs_slots[index].numpy(), actions.numpy().astype(np.int32), returns.numpy()))
            publish()  # reads the updated weights: waits for the update, as torch's learner's copy does
            acct.add(stats)

        t0 = time.perf_counter()
        actors["pool"].round(on_result)
        acct.round_s += time.perf_counter() - t0
        acct.rounds += 1
        session.info.method["a3c"] = acct.summary()
        return np.float32(np.mean([float(x) for x in losses]))

    def close() -> None:
        if "pool" in actors:
            actors.pop("pool").close()

    frames = float(n * t_max * hp["frameskip"])
    return TfTask(
        model=policy,
        optimizer=optimizer,
        make_batch=lambda rng: (np.zeros(1, np.float32),),  # data come from the emulators
        loss=lambda model, batch, training: tf.zeros(()),  # unused: host_step computes each rollout's loss
        units=lambda batch: frames,
        samples=lambda batch: float(n * t_max),
        host_step=host_step,
        close=close,
        extra={"round_policy": round_policy, "actors": actors, "shared": shared, "accounting": acct},
    )
