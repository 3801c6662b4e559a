"""Variable-length workloads draw the same lengths in every framework for the same seed
(tbd.workloads.draws), so tokens/s and audio seconds/s compare like for like: each framework's
resident batches hold the same sentences and utterances."""

from __future__ import annotations

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
