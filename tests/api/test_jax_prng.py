"""`--option prng`: the JAX train step's random bits (dropout masks) from threefry, JAX's default,
or from XLA's RngBitGenerator keys; parameters and data stay threefry's."""

from __future__ import annotations

import pytest

pytest.importorskip("jax")

from tbd import frameworks  # noqa: E402
from tbd.config import RunConfig  # noqa: E402
from tbd.errors import UsageError  # noqa: E402


def losses(prng: str, steps: int = 2) -> list[float]:
    # transformer's tiny flavor with the paper flavor's dropout, so the step's key decides its masks
    config = RunConfig(workload="transformer", framework="jax", flavor="tiny", device="cpu", data_pool=1, isolate=False,
                       hparams={"dropout": 0.1}, options={"prng": prng}).validated()
    session = frameworks.open_session(config)
    try:
        out = []
        for _ in range(steps):
            session.run_steps(1)
            out.append(float(session.last_loss()))
        return out
    finally:
        session.close()


def test_rbg_keys_train_reproducibly_with_their_own_dropout_masks():
    threefry, rbg = losses("threefry"), losses("rbg")
    assert rbg == losses("rbg")  # the same seed, the same masks
    assert all(abs(x) < 1e3 for x in rbg)
    # The same parameters and batch, other dropout masks: the first losses differ, but little.
    assert rbg[0] != threefry[0] and rbg[0] == pytest.approx(threefry[0], rel=0.05)


def test_every_prng_the_plugin_lists_makes_a_step_key():
    import jax

    from tbd.frameworks.jax import PLUGIN
    from tbd.frameworks.jax.session import step_key_of

    for impl in PLUGIN.capabilities.option_values["prng"]:
        assert step_key_of(jax.random.PRNGKey(0), impl) is not None


def test_unknown_prng_lists_the_valid_ones():
    with pytest.raises(UsageError, match=r"prng=philox is not one of threefry, rbg, unsafe_rbg"):
        RunConfig(workload="transformer", framework="jax", flavor="tiny", options={"prng": "philox"}).validated()
