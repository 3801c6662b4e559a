"""A3C with a JAX learner: the torch implementation's actor processes play, JAX computes and applies.

`tbd run a3c --framework jax --flavor tiny` exercises it on the CPU (needs `pip install 'tbd[rl]'`;
the actors are torch's, so torch too). The design is in `spec.py`; this is its learner rule with
the learner in JAX. The actor processes are `torch_impl.ActorPool`'s, unchanged: each copies the
published weights into its local torch policy, plays t_max agent steps in its emulator on the
CPU (the batch-1 acting forwards), computes the n-step returns, and hands the rollout
(observations, actions, returns) to the learner through shared memory. The learner computes the
A3C loss of each rollout and its gradients in JAX, clips them (norm 40) and applies the paper's
RMSProp, one jitted update per rollout as it arrives, then publishes the weights to the shared
CPU copy the actors read at the start of their next rollout.

The same algorithm as torch's learner rule: there, an actor computes its gradient with the
weights it played with -- every actor of a round starts from the same published weights, since
the next round starts after all updates -- and the learner applies the gradients in arrival
order. Here the learner computes each gradient at those round-start weights (kept while the
round's updates move the current ones), so gradients and updates are torch's. Hogwild (lock-free
updates of a shared CPU model by the actors) has no JAX counterpart: update_rule 'hogwild' is
refused. The policy's parameters keep torch's names and layouts (OIHW convolutions, (out, in)
linear weights, NCHW activations), so publishing is a copy per tensor.
"""

from __future__ import annotations

import math
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tbd.errors import UsageError
from tbd.frameworks.base import BuildContext
from tbd.frameworks.jax.session import JaxTask, TrainState
from tbd.workloads.a3c.spec import CONVS, HIDDEN, SCREEN, STACK, feature_size
from tbd.workloads.common_jax import torch_like_init

# torch's Policy.parameters() order, as (Flax name, torch shape): the order actors read them in.
def param_shapes(num_actions: int) -> list[tuple[str, tuple[int, ...]]]:
    (c1, k1, _), (c2, k2, _) = CONVS
    return [
        ("conv1_weight", (c1, STACK, k1, k1)), ("conv1_bias", (c1,)),
        ("conv2_weight", (c2, c1, k2, k2)), ("conv2_bias", (c2,)),
        ("fc_weight", (HIDDEN, feature_size())), ("fc_bias", (HIDDEN,)),
        ("pi_weight", (num_actions, HIDDEN)), ("pi_bias", (num_actions,)),
        ("v_weight", (1, HIDDEN)), ("v_bias", (1,)),
    ]


class Policy(nn.Module):
    """torch_impl.Policy with torch's parameter layouts: conv 16 8x8/4, conv 32 4x4/2, fc 256, two heads."""

    num_actions: int

    @nn.compact
    def __call__(self, obs):
        """obs (B, 4, 84, 84) uint8 -> logits (B, A), values (B,)."""
        p = {name: self.param(name, nn.initializers.zeros, shape, jnp.float32) for name, shape in param_shapes(self.num_actions)}
        x = obs.astype(jnp.float32) / 255.0
        for i, (_, _, stride) in enumerate(CONVS):
            w, b = p[f"conv{i + 1}_weight"], p[f"conv{i + 1}_bias"]
            x = jax.lax.conv_general_dilated(x, w, (stride, stride), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))
            x = nn.relu(x + b[None, :, None, None])
        x = nn.relu(x.reshape(x.shape[0], -1) @ p["fc_weight"].T + p["fc_bias"])  # torch's (C, H, W) flattening
        return x @ p["pi_weight"].T + p["pi_bias"], (x @ p["v_weight"].T + p["v_bias"])[:, 0]


def a3c_loss(model: Policy, hp: dict, params, obs, actions, returns):
    """torch_impl.rollout_loss: policy gradient with n-step advantages, value_coef x 0.5 x squared
    advantages, minus entropy_coef x entropy, summed over the rollout."""
    logits, values = model.apply({"params": params}, obs)
    log_probs = jax.nn.log_softmax(logits, -1)
    entropy = -(jnp.exp(log_probs) * log_probs).sum(-1)
    advantages = returns - values
    chosen = jnp.take_along_axis(log_probs, actions[:, None], 1)[:, 0]
    policy_loss = -(chosen * jax.lax.stop_gradient(advantages)).sum()
    value_loss = 0.5 * (advantages**2).sum()
    return policy_loss + hp["value_coef"] * value_loss - hp["entropy_coef"] * entropy.sum()


def paper_rmsprop(hp: dict) -> optax.GradientTransformation:
    """Clip to norm 40, then the A3C paper's RMSProp (torch_impl.rmsprop_update): statistics from
    zero, eps inside the square root, no momentum."""
    return optax.chain(optax.clip_by_global_norm(hp["max_grad_norm"]),
                       optax.rmsprop(hp["lr"], decay=hp["rms_decay"], eps=hp["rms_eps"], eps_in_sqrt=True))


def build(ctx: BuildContext) -> JaxTask:
    import torch

    from tbd.workloads.a3c import torch_impl

    hp, n = dict(ctx.hparams), ctx.batch_size
    if ctx.precision in ("bf16", "fp16"):
        raise UsageError(f"a3c's actors run in fp32 on the CPU; drop --precision {ctx.precision}")
    if hp["update_rule"] not in ("auto", "learner"):
        raise UsageError(f"a3c in JAX has a learner only (Hogwild updates a shared torch model); set update_rule=learner or auto, not {hp['update_rule']!r}")
    model, t_max = Policy(hp["num_actions"]), hp["t_max"]
    optimizer = paper_rmsprop(hp)
    names = [name for name, _ in param_shapes(hp["num_actions"])]
    # What actors read (torch's parameter order) and where they leave their rollouts.
    shared = [torch.zeros(shape).share_memory_() for _, shape in param_shapes(hp["num_actions"])]
    obs_slots = torch.zeros(n, t_max, STACK, SCREEN, SCREEN, dtype=torch.uint8).share_memory_()
    action_return_slots = torch.zeros(n, 2, t_max).share_memory_()
    # Started by the first step, not here: tools build a task only to trace it.
    actors: dict[str, torch_impl.ActorPool] = {}
    acct = torch_impl.Accounting(n, hp, ctx.device, learner=True, role=(
        f"JAX learner on {ctx.device}: actors (torch, CPU) send rollouts, the learner computes each one's gradients at the "
        "round's starting weights and applies them as they arrive, then publishes the weights"))

    def init(rng):
        def rule(names_, shape):  # torch's default for Conv2d and Linear: U(+-1/sqrt(fan_in)), weight and bias alike
            fan_in = math.prod(dict(param_shapes(hp["num_actions"]))[names_[-1].replace("_bias", "_weight")][1:])
            return "uniform", 1.0 / math.sqrt(fan_in)

        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, STACK, SCREEN, SCREEN), jnp.uint8))
        return torch_like_init(shapes["params"], rule, rng), {}

    def update(state: TrainState, round_params, rollout):
        """One actor's rollout: gradients at the round's starting weights, applied to the current ones."""
        obs, actions, returns = rollout
        loss, grads = jax.value_and_grad(lambda p: a3c_loss(model, hp, p, obs, actions, returns))(round_params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), opt_state, state.model_state, state.rng), loss

    # Not donated: the round's starting weights are read by every update of the round.
    update_fn = jax.jit(update)

    def publish(params) -> None:
        host = jax.device_get(params)
        for tensor, name in zip(shared, names):
            tensor.numpy()[...] = host[name]  # a view of the shared memory

    def rollout_on(device, index: int):
        actions, returns = action_return_slots[index]
        return jax.device_put((obs_slots[index].numpy(), actions.numpy().astype(np.int32), returns.numpy()), device)

    def host_step(session, state: TrainState, batch):
        if "pool" not in actors:
            publish(state.params)
            actors["pool"] = torch_impl.ActorPool(n, hp, ctx.seed, shared, slots=[(obs_slots[i], action_return_slots[i]) for i in range(n)])
        round_params, losses = state.params, []

        def on_result(index: int, stats: dict) -> None:
            nonlocal state
            state, loss = update_fn(state, round_params, rollout_on(session.device, index))
            publish(state.params)  # waits for the update, as torch's learner's copy does
            losses.append(loss)
            acct.add(stats)

        t0 = time.perf_counter()
        actors["pool"].round(on_result)
        acct.round_s += time.perf_counter() - t0
        acct.rounds += 1
        session.info.method["a3c"] = acct.summary()
        return state, np.float32(np.mean(jax.device_get(losses)))  # on the host: no extra XLA program

    def lower(session):
        """The learner's update for one rollout (what XLA compiles; the acting runs in torch)."""
        device = session.device
        rollout = jax.device_put((np.zeros((t_max, STACK, SCREEN, SCREEN), np.uint8), np.zeros(t_max, np.int32),
                                  np.zeros(t_max, np.float32)), device)
        return update_fn.lower(session.state, session.state.params, rollout)

    def close() -> None:
        if "pool" in actors:
            actors.pop("pool").close()

    frames = float(n * t_max * hp["frameskip"])
    return JaxTask(
        init=init,
        loss=lambda *a, **k: (jnp.zeros(()), {}),  # unused: host_step computes each rollout's loss
        optimizer=optimizer,
        make_batch=lambda key, device: jax.device_put(np.zeros(1, np.float32), device),  # data come from the emulators
        units=lambda batch: frames,
        samples=lambda batch: float(n * t_max),
        host_step=host_step,
        lower=lower,
        close=close,
        extra={"model": model, "actors": actors, "shared": shared, "accounting": acct},
    )
