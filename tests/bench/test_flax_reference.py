"""bench/flax_reference.py, the plain Flax loops tbd's JAX numbers are held to on the GPU: the
same models as tbd's JAX resnet50 and gpt (parameter counts at the tiny and paper sizes), a train
step that traces for ResNet-50, and a GPT loop that trains and times on the CPU."""

from __future__ import annotations

import math

import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from tbd import registry  # noqa: E402


@pytest.fixture(scope="module")
def ref(load_bench):
    return load_bench("flax_reference")


def _tbd_params(workload: str, flavor: str) -> int:
    """Parameter count of tbd's JAX model, from shapes only."""
    from tbd.workloads.common_jax import param_count
    from tbd.workloads.gpt.jax_impl import GPT
    from tbd.workloads.resnet50.jax_impl import ResNet50

    hp = registry.get_spec(workload).flavor(flavor).hparams
    if workload == "resnet50":
        sample = jax.ShapeDtypeStruct((1, hp["image_size"], hp["image_size"], 3), jnp.float32)
        shapes = jax.eval_shape(lambda k, x: ResNet50(hp["num_classes"]).init(k, x, train=False), jax.random.PRNGKey(0), sample)
    else:
        sample = jax.ShapeDtypeStruct((1, hp["block_size"]), jnp.int32)
        shapes = jax.eval_shape(GPT(hp).init, jax.random.PRNGKey(0), sample)
    return param_count(shapes["params"])


@pytest.mark.parametrize("flavor", ["tiny", "paper"])
def test_reference_models_have_tbds_parameter_counts(ref, flavor):
    r = ref.RESNET50[flavor]
    resnet = ref.ResNet50(r["num_classes"])
    sample = jax.ShapeDtypeStruct((1, r["image_size"], r["image_size"], 3), jnp.float32)
    shapes = jax.eval_shape(lambda k, x: resnet.init(k, x, train=False), jax.random.PRNGKey(0), sample)
    shapes_resnet = shapes["params"]
    assert ref._count(shapes_resnet) == _tbd_params("resnet50", flavor)
    g = ref.GPT[flavor]
    gpt = ref.GPT2(g["layers"], g["d_model"], g["heads"], g["block_size"], g["vocab"], None)
    shapes = jax.eval_shape(gpt.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, g["block_size"]), jnp.int32))
    assert ref._count(shapes["params"]) == _tbd_params("gpt", flavor)
    if flavor == "paper":
        assert ref._count(shapes_resnet) == 25_557_032


def test_resnet50_step_traces_and_keeps_the_state_shapes(ref):
    init_state, train_step, make_batch = ref.resnet50_parts(2, 32, 10, jnp.float32)
    key = jax.random.PRNGKey(0)
    state = jax.eval_shape(init_state, key)  # traced, not compiled: a CPU compile of ResNet-50 takes long
    batch = jax.eval_shape(make_batch, key)
    new_state, loss = jax.eval_shape(train_step, state, batch)
    assert loss.shape == () and batch[0].shape == (2, 32, 32, 3)
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)


def test_gpt_loop_trains_and_times_on_the_cpu(ref):
    sizes = dict(layers=1, d_model=16, heads=2, block_size=8, vocab=32)
    result = ref.run_reference("gpt", batch=2, device="cpu", precision="fp32", quick=True, sizes=sizes, windows=2, warmup=1)
    assert result["params"] == (12 * 16 * 16 + 13 * 16) + 32 * 16 + 8 * 16 + 2 * 16  # one block, embeddings, final norm
    assert result["throughput"] > 0 and len(result["window_throughputs"]) == 2 and result["synced_per_step_throughput"] > 0
    assert result["unit"] == "tokens" and result["loss_finite"] and math.isfinite(result["step_ms"])
    assert result["sizes"]["attention"] == "xla"  # cuDNN's kernel only on a GPU in bf16
