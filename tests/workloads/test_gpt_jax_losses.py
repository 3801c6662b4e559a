"""gpt's JAX loss variants (`--option loss=...`) are the same loss: `pytest -q tests/workloads/test_gpt_jax_losses.py`.

On a small gpt (one layer of the tiny flavor's width, 4 x 32 tokens) in fp32 on the CPU, the loss
and every parameter's gradient of `bf16_logits`, `fused`, `chunked` and `fused_linear` (chunks of 32 tokens, and
of 48, which falls back to 32: the largest divisor of the 128 tokens) equal the default's
(`fp32_logits`). All variants are differentiated in one jitted function: one compilation.
"""

from __future__ import annotations

import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

from tbd import registry  # noqa: E402
from tbd.errors import UsageError  # noqa: E402
from tbd.frameworks.base import BuildContext  # noqa: E402
from tbd.workloads.gpt import jax_impl  # noqa: E402

VARIANTS = (("fp32_logits", 32), ("bf16_logits", 32), ("fused", 32), ("chunked", 32), ("chunked", 48), ("fused_linear", 32),
            ("fused_linear", 48))


def _task(loss: str, chunk: int = 32, precision: str = "fp32"):
    hp = {**registry.get_spec("gpt").flavor("tiny").hparams, "layers": 1, "block_size": 32, "vocab": 256}
    ctx = BuildContext(hparams=hp, batch_size=4, device="cpu", precision=precision, seed=0, flavor="tiny",
                       options={"loss": loss, "loss_chunk": str(chunk)})
    return jax_impl.build(ctx)


@pytest.fixture(scope="module")
def results():
    tasks = [_task(loss, chunk) for loss, chunk in VARIANTS]
    params, model_state = tasks[0].init(jax.random.PRNGKey(0))
    batch = tasks[0].make_batch(jax.random.PRNGKey(1), jax.devices("cpu")[0])

    def all_variants(p):
        return [jax.value_and_grad(lambda q, t=t: t.loss(q, model_state, batch, None, True)[0])(p) for t in tasks]

    with jax.default_matmul_precision("highest"):
        return dict(zip(VARIANTS, jax.jit(all_variants)(params), strict=True))


@pytest.mark.parametrize("variant", VARIANTS[1:], ids=lambda v: f"{v[0]}-{v[1]}")
def test_variant_loss_and_gradients_equal_the_baseline(results, variant):
    base_loss, base_grads = results[VARIANTS[0]]
    loss, grads = results[variant]
    assert float(base_loss) > 4.0  # ln(256) = 5.5 at initialization: a real loss is compared
    assert abs(float(loss) - float(base_loss)) < 1e-5 * float(base_loss)
    leaves, base_leaves = jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(base_grads)
    assert len(leaves) == len(base_leaves) == 16  # every parameter of the one-layer model
    scale = max(float(jnp.max(jnp.abs(g))) for g in base_leaves)
    assert scale > 0
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(leaves, base_leaves, strict=True)) < 1e-5 * scale


def test_chunks_divide_the_tokens():
    assert jax_impl._chunk_size(128, 48) == 32  # the largest divisor not above 48
    assert jax_impl._chunk_size(16 * 1024, 4096) == 4096
    assert jax_impl._chunk_size(10, 4096) == 10


def test_bad_loss_options_name_the_fix():
    with pytest.raises(UsageError, match="bf16_logits, fp32_logits, fused, chunked, fused_linear"):
        _task("nope")
    with pytest.raises(UsageError, match="loss_chunk=4096"):
        _task("chunked", chunk=0)


def test_plugin_declares_the_impl_losses():
    from tbd.frameworks.jax import PLUGIN

    assert PLUGIN.capabilities.option_values["loss"] == jax_impl.LOSSES
