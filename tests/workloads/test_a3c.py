"""A3C learns and counts right: updates change the policy, frames and rewards add up.

`pytest -q tests/workloads/test_a3c.py`. Replaces the generic "loss falls on a fixed batch" check
(an RL loss moves with the policy's own data, so the fixed-batch loss check does not apply). Runs the real Pong
emulator; one test plays a whole episode in-process, the others start actor processes.
"""

from __future__ import annotations

from tbd import frameworks

import importlib.util

import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("ale_py")

import torch  # noqa: E402

from tbd import registry  # noqa: E402
from tbd.config import RunConfig  # noqa: E402
from tbd.errors import UsageError  # noqa: E402
from tbd.workloads.a3c import torch_impl as a3c  # noqa: E402
from tbd.workloads.a3c.spec import FLAVORS  # noqa: E402


@pytest.fixture
def one_thread():
    """Actors run single-threaded (as in their processes); batch-1 convolutions on 2 threads
    of a busy machine are many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_actor_accounting_over_a_whole_pong_episode(one_thread):
    hp = dict(FLAVORS["tiny"].hparams)
    t_max, skip = hp["t_max"], hp["frameskip"]
    torch.manual_seed(0)
    policy = a3c.Policy(hp["num_actions"])
    actor = a3c.Actor(0, hp, seed=0, shared_params=[p.detach() for p in policy.parameters()])
    episode_rewards: list[float] = []
    finished = []
    for _ in range(120):  # a Pong episode of an untrained policy is about 800-1100 agent steps
        stats = actor.rollout()
        assert stats["agent_steps"] == t_max and stats["frames"] == t_max * skip
        assert set(stats["rewards"]) <= {-1.0, 0.0, 1.0}
        ended = sum(stats["dones"])
        # The emulator stops repeating an action when the game ends: up to skip - 1 frames short.
        assert t_max * skip - (skip - 1) * ended <= stats["emulator_frames"] <= t_max * skip
        assert all(g is not None and torch.isfinite(g).all() for g in actor.grads())
        for reward, done in zip(stats["rewards"], stats["dones"]):
            episode_rewards.append(reward)
            if done:
                finished.append(list(episode_rewards))
                episode_rewards.clear()
        assert [r for r, _ in stats["episodes"]] == [sum(e) for e in finished[len(finished) - len(stats["episodes"]):]]
        assert stats["partial_return"] == sum(episode_rewards)
        if finished:
            break
    assert finished, "no Pong episode finished within 2400 agent steps"
    points = finished[0]
    # Pong ends when one side has 21 points; every point is a reward of +1 or -1.
    assert max(points.count(1.0), points.count(-1.0)) == 21
    assert min(points.count(1.0), points.count(-1.0)) < 21


@pytest.mark.parametrize("rule", ["hogwild", "learner"])
def test_a_round_of_updates_changes_the_shared_policy(rule):
    config = RunConfig(workload="a3c", flavor="tiny", isolate=False, data_pool=1, hparams={"update_rule": rule}).validated()
    session = frameworks.open_session(config)
    pool = session.task.extra["pool"]
    try:
        before = [p.detach().clone() for p in session.model.parameters()]
        times = session.run_steps(2)
        after = [p.detach().clone() for p in session.model.parameters()]
        changed = sum(int((a != b).any()) for a, b in zip(before, after))
        assert changed == len(before), f"only {changed} of {len(before)} parameter tensors moved"
        n, hp = config.batch_size, config.resolved_hparams()
        frames_per_step = n * hp["t_max"] * hp["frameskip"]
        assert times.units == [frames_per_step] * 2 and times.samples == [n * hp["t_max"]] * 2
        acct = session.info.method["a3c"]
        assert acct["rounds"] == 2 and acct["updates"] == 2 * n
        assert acct["frames_nominal"] == 2 * frames_per_step and acct["agent_steps"] == 2 * n * hp["t_max"]
        assert 0 < acct["frames_emulator"] <= acct["frames_nominal"]
        assert rule in acct["update_rule"].lower()
        assert torch.isfinite(torch.tensor(session.last_loss()))
    finally:
        session.close()
    assert not any(p.is_alive() for p in pool.procs), "actor processes outlived the session"


def test_a3c_without_the_rl_extra_names_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ale_py" else real(name, *a))
    with pytest.raises(UsageError, match=r"pip install 'tbd\[rl\]'"):
        registry.check_runnable("a3c", "torch")


def test_a3c_rejects_half_precision_before_starting_actors():
    with pytest.raises(UsageError, match="drop --precision bf16"):
        RunConfig(workload="a3c", flavor="tiny", isolate=False, precision="bf16").validated()


# -- the JAX learner -----------------------------------------------------------------------------

def test_jax_learner_loss_and_gradients_are_torchs_on_a_real_rollout(one_thread):
    jax = pytest.importorskip("jax")
    import numpy as np

    from tbd.workloads.a3c import jax_impl

    hp = dict(FLAVORS["tiny"].hparams)
    torch.manual_seed(0)
    policy = a3c.Policy(hp["num_actions"])
    actor = a3c.Actor(0, hp, seed=0, shared_params=[p.detach() for p in policy.parameters()])
    for _ in range(3):  # a few rollouts in, so the screens are not all the first one
        _, obs, actions, returns = actor.play()
    loss, _ = a3c.rollout_loss(actor.model, hp, obs, actions, returns)
    loss.backward()
    params = {name: p.detach().numpy() for (name, _), p in zip(jax_impl.param_shapes(hp["num_actions"]), actor.model.parameters())}
    loss_of = lambda p: jax_impl.a3c_loss(jax_impl.Policy(hp["num_actions"]), hp, p, obs.numpy(), np.array(actions), np.array(returns, np.float32))  # noqa: E731
    with jax.default_matmul_precision("highest"):
        jax_loss, grads = jax.value_and_grad(loss_of)(params)
    assert float(jax_loss) == pytest.approx(loss.item(), rel=1e-4, abs=1e-4)
    for (name, _), p in zip(jax_impl.param_shapes(hp["num_actions"]), actor.model.parameters()):
        np.testing.assert_allclose(np.asarray(grads[name]), p.grad.numpy(), rtol=2e-3, atol=2e-5, err_msg=name)


def test_jax_learner_round_updates_and_publishes_the_policy():
    jax = pytest.importorskip("jax")
    import numpy as np

    from tbd.workloads.a3c import jax_impl

    config = RunConfig(workload="a3c", framework="jax", flavor="tiny", isolate=False, data_pool=1).validated()
    session = frameworks.open_session(config)
    try:
        before = jax.device_get(session.state.params)
        times = session.run_steps(2)
        after = jax.device_get(session.state.params)
        assert all((before[k] != after[k]).any() for k in before), "a parameter tensor did not move"
        # The actors read exactly the learner's weights.
        names = [name for name, _ in jax_impl.param_shapes(config.resolved_hparams()["num_actions"])]
        assert all(np.array_equal(t.numpy(), after[k]) for t, k in zip(session.extra["shared"], names))
        n, hp = config.batch_size, config.resolved_hparams()
        assert times.units == [n * hp["t_max"] * hp["frameskip"]] * 2
        acct = session.info.method["a3c"]
        assert acct["rounds"] == 2 and acct["updates"] == 2 * n and "jax learner" in acct["update_rule"].lower()
        assert session.compile_count == 1  # the learner's update, once
        assert np.isfinite(session.last_loss())
        pool = session.extra["actors"]["pool"]
    finally:
        session.close()
    assert not any(p.is_alive() for p in pool.procs), "actor processes outlived the session"


def test_jax_learner_refuses_hogwild():
    pytest.importorskip("jax")
    config = RunConfig(workload="a3c", framework="jax", flavor="tiny", isolate=False, hparams={"update_rule": "hogwild"}).validated()
    with pytest.raises(UsageError, match="update_rule=learner"):
        frameworks.open_session(config)


def test_only_the_first_reset_is_seeded_and_episodes_stay_reproducible():
    """A seeded reset reloads the game (about 20x an unseeded one), which made every round with an
    episode end several times slower: only the first reset seeds. Two games from the same seed
    still play the same episodes, across an episode's end."""
    from tbd.workloads.a3c.atari import AtariGame

    games = [AtariGame("Pong", 4, seed=7) for _ in range(2)]
    seeds = []
    original = games[0].env.reset
    games[0].env.reset = lambda **kw: (seeds.append(kw.get("seed")), original(**kw))[1]
    screens = [[g.reset()] for g in games]
    for _ in range(2):  # two episodes ended by reset, then a few steps into the next
        for g, trail in zip(games, screens):
            for _ in range(30):
                trail.append(g.step(0)[0])
            trail.append(g.reset())
    assert seeds == [7, None, None]
    assert all((a == b).all() for a, b in zip(*screens))
    assert games[0].frame_number == 2 * 30 * 4  # frames over every episode, not since the last reset

