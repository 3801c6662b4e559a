"""Variable-length workloads draw the same lengths in every framework for the same seed
(tbd.workloads.draws), so tokens/s and audio seconds/s compare like for like: each framework's
resident batches hold the same sentences and utterances."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")

from tbd import registry  # noqa: E402
from tbd.frameworks.base import BuildContext  # noqa: E402


def _ctx(workload: str, seed: int) -> BuildContext:
    spec = registry.get_spec(workload)
    return BuildContext(hparams=dict(spec.flavor("tiny").hparams), batch_size=spec.flavor("tiny").batch_size,
                        device="cpu", precision="fp32", seed=seed, flavor="tiny")


def _units(task, batches) -> list[float]:
    return [float(task.units(b)) for b in batches]


@pytest.mark.parametrize("workload", ["seq2seq", "transformer", "deepspeech2"])
def test_torch_and_jax_draw_the_same_lengths(workload):
    torch_impl = registry.load_implementation(workload, "torch")
    jax_impl = registry.load_implementation(workload, "jax")
    torch_task, jax_task = torch_impl.build(_ctx(workload, 3)), jax_impl.build(_ctx(workload, 3))
    gen = torch.Generator().manual_seed(0)
    keys = jax.random.split(jax.random.PRNGKey(7), 3)  # other keys than torch's: only the lengths must agree
    torch_units = _units(torch_task, [torch_task.make_batch(gen, torch.device("cpu")) for _ in range(3)])
    jax_units = _units(jax_task, [jax_task.make_batch(k, jax.devices("cpu")[0]) for k in keys])
    assert np.allclose(torch_units, jax_units), (torch_units, jax_units)
    assert len(set(torch_units)) > 1  # the batches differ from each other (bucketed lengths)
    other_seed = torch_impl.build(_ctx(workload, 4))
    assert _units(other_seed, [other_seed.make_batch(gen, torch.device("cpu")) for _ in range(3)]) != torch_units


def test_a_pool_takes_evenly_spaced_quantiles_and_the_same_seeds_at_every_size():
    from tbd.workloads.draws import shape_draws

    def first(pool, n):
        draws = shape_draws("seq2seq", 0, pool)
        return [next(draws) for _ in range(n)]

    assert [d.quantile for d in first(1, 2)] == [0.5, 0.5]
    assert [d.quantile for d in first(2, 4)] == [0.25, 0.75, 0.25, 0.75]
    assert [d.quantile for d in first(4, 4)] == [0.125, 0.375, 0.625, 0.875]
    assert [d.seed for d in first(1, 3)] == [d.seed for d in first(4, 3)]  # the lengths' seeds do not depend on the pool
    with pytest.raises(ValueError, match="at least one batch"):
        next(shape_draws("seq2seq", 0, 0))


def _resident(workload: str, flavor: str, size: int, seed: int, pool: int = 2):
    """The lengths of a session's resident batches, as every framework draws them."""
    import itertools
    import random

    from tbd.workloads.deepspeech2 import data as ds2
    from tbd.workloads.draws import shape_draws
    from tbd.workloads.text_data import LengthModel, draw_bucketed_batch

    hp = dict(registry.get_spec(workload).flavor(flavor).hparams)
    draws = list(itertools.islice(shape_draws(workload, seed, pool), pool))
    if workload == "deepspeech2":
        return [ds2.bucketed_batch(np.random.default_rng(d.seed), size, hp, d.quantile) for d in draws]
    unit = {"seq2seq": "batch_size", "transformer": "max_tokens"}[workload]
    return [draw_bucketed_batch(random.Random(d.seed), LengthModel.from_hparams(hp), **{unit: size}, quantile=d.quantile) for d in draws]


def _spread(values) -> float:
    return max(values) / min(values) - 1


def test_resident_batches_stand_for_the_lengths_at_every_batch_size():
    """Drawn at random, seq2seq's two resident batches averaged 51 tokens a pair at batch 128 and
    86 at 512 (seed 0): a batch-size comparison of tokens/s measured the draw. At the pool's
    quantiles they hold about the corpus' mean at every size and seed."""
    from tbd.workloads.text_data import expected_tokens_per_pair

    mean_tokens = expected_tokens_per_pair(dict(registry.get_spec("seq2seq").flavor("paper").hparams))
    for seed in (0, 1):
        per_pair = [np.mean([s + t for batch in _resident("seq2seq", "paper", size, seed) for s, t in batch]) for size in (128, 512, 2048)]
        assert _spread(per_pair) < 0.05, per_pair
        assert all(abs(p / mean_tokens - 1) < 0.05 for p in per_pair), (per_pair, mean_tokens)
        # transformer's budget batches: the padded lengths (attention's cost) agree across budgets
        longest = [np.mean([max(max(p) for p in batch) for batch in _resident("transformer", "paper", size, seed)]) for size in (4096, 16384, 65536)]
        assert _spread(longest) < 0.1, longest
        seconds = [np.mean(_resident("deepspeech2", "paper", size, seed)) for size in (8, 32, 128)]
        assert _spread(seconds) < 0.03, seconds


@pytest.mark.parametrize("workload", ["seq2seq", "deepspeech2"])
def test_a_session_gives_its_pool_size_to_the_draws(workload):
    """BuildContext carries RunConfig.data_pool: two resident batches are the lower and upper
    quartiles' buckets (fewer units, then more), one is the median's."""
    from tbd.config import RunConfig

    config = RunConfig(workload=workload, framework="torch", flavor="tiny", device="cpu", data_pool=2)
    assert BuildContext.for_run(config, 4).data_pool == 2
    task = registry.load_implementation(workload, "torch").build(BuildContext.for_run(config, 4))
    gen = torch.Generator().manual_seed(0)
    lower, upper = _units(task, [task.make_batch(gen, torch.device("cpu")) for _ in range(2)])
    assert lower < upper
    median = registry.load_implementation(workload, "torch").build(BuildContext.for_run(dataclasses.replace(config, data_pool=1), 4))
    assert lower <= _units(median, [median.make_batch(gen, torch.device("cpu"))])[0] <= upper


@pytest.mark.parametrize("workload,says_lengths", [("seq2seq", True), ("resnet50", False)])
def test_the_record_says_how_the_lengths_were_drawn(workload, says_lengths, tbd_home):
    """Records made before and after the quantile draws are told apart by their method."""
    from tbd.config import RunConfig
    from tbd.harness.runner import execute
    from tbd.workloads.draws import RESIDENT_LENGTHS

    record = execute(RunConfig(workload=workload, framework="torch", flavor="tiny", max_steps=3, isolate=False).validated())
    data = record["method"]["data"]
    assert data.startswith("synthetic, 2 batch(es) resident on the device, rotated")
    assert (RESIDENT_LENGTHS in data) == says_lengths, data
