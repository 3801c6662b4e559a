"""A3C with the TensorFlow learner: `pytest -q -m tf tests/workloads/test_a3c_tf.py`.

The TF learner computes torch's loss and gradients on a real rollout, and a round of updates
moves the policy and publishes exactly the learner's weights (in torch's layout) to the actors.
Runs the real Pong emulator and starts actor processes (needs the rl extra).
"""

from __future__ import annotations

import pytest

from tests.conftest import require_tf

pytestmark = pytest.mark.tf
tf = require_tf()
pytest.importorskip("gymnasium")
pytest.importorskip("ale_py")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tbd import frameworks  # noqa: E402
from tbd.config import RunConfig  # noqa: E402
from tbd.errors import UsageError  # noqa: E402
from tbd.workloads.a3c import torch_impl as a3c  # noqa: E402
from tbd.workloads.a3c.spec import FLAVORS  # noqa: E402


def test_tf_learner_loss_and_gradients_are_torchs_on_a_real_rollout():
    from tbd.workloads.a3c import tf_impl

    hp = dict(FLAVORS["tiny"].hparams)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the actor processes
    try:
        policy = a3c.Policy(hp["num_actions"])
        actor = a3c.Actor(0, hp, seed=0, shared_params=[p.detach() for p in policy.parameters()])
        for _ in range(3):  # a few rollouts in, so the screens are not all the first one
            _, obs, actions, returns = actor.play()
        loss, _ = a3c.rollout_loss(actor.model, hp, obs, actions, returns)
        loss.backward()
    finally:
        torch.set_num_threads(threads)
    model = tf_impl.Policy(hp["num_actions"])
    model(obs.numpy()[:1])
    for variable, p in zip(model.trainable_variables, actor.model.parameters()):  # torch's weights, in Keras' layout
        value = p.detach().numpy()
        variable.assign(value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T if value.ndim == 2 else value)
    with tf.GradientTape() as tape:
        tf_loss = tf_impl.a3c_loss(model, hp, obs.numpy(), np.array(actions, np.int32), np.array(returns, np.float32))
    grads = tape.gradient(tf_loss, model.trainable_variables)
    assert float(tf_loss) == pytest.approx(loss.item(), rel=1e-4, abs=1e-4)
    for variable, grad, p in zip(model.trainable_variables, grads, actor.model.parameters()):
        np.testing.assert_allclose(tf_impl.torch_layout(grad), p.grad.numpy(), rtol=2e-3, atol=2e-5, err_msg=variable.path)


def test_tf_learner_round_updates_and_publishes_the_policy():
    from tbd.workloads.a3c import tf_impl

    config = RunConfig(workload="a3c", framework="tf", flavor="tiny", isolate=False, data_pool=1).validated()
    session = frameworks.open_session(config)
    try:
        before = [v.numpy() for v in session.model.trainable_variables]
        times = session.run_steps(2)
        after = session.model.trainable_variables
        assert all((b != a.numpy()).any() for b, a in zip(before, after)), "a parameter tensor did not move"
        # The actors read exactly the learner's weights, in torch's layout and order.
        shared = session.extras["shared"]
        assert [tuple(t.shape) for t in shared] == [tuple(p.shape) for p in a3c.Policy(config.resolved_hparams()["num_actions"]).parameters()]
        assert all(np.array_equal(t.numpy(), tf_impl.torch_layout(v)) for t, v in zip(shared, after))
        n, hp = config.batch_size, config.resolved_hparams()
        assert times.units == [n * hp["t_max"] * hp["frameskip"]] * 2
        acct = session.info.method["a3c"]
        assert acct["rounds"] == 2 and acct["updates"] == 2 * n and "tensorflow learner" in acct["update_rule"].lower()
        assert np.isfinite(session.last_loss())
        pool = session.extras["actors"]["pool"]
    finally:
        session.close()
    assert not any(p.is_alive() for p in pool.procs), "actor processes outlived the session"


def test_tf_learner_refuses_hogwild():
    config = RunConfig(workload="a3c", framework="tf", flavor="tiny", isolate=False, hparams={"update_rule": "hogwild"}).validated()
    with pytest.raises(UsageError, match="update_rule=learner"):
        frameworks.open_session(config)
