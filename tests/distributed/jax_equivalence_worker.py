"""JAX data parallelism through tbd.frameworks.jax.distributed: a tiny MLP, SGD, 5 steps.

Under torchrun (2 processes on the CPU, gloo collectives) each process holds half of a fixed
global batch and `globalize` lays state and batch over the global mesh; run directly it trains
on the whole batch in one process. Used by tests/distributed/test_distributed.py:
`python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed/jax_equivalence_worker.py OUT.npz`.
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np

GLOBAL_BATCH, STEPS = 8, 5


def main(out: str) -> None:
    config = types.SimpleNamespace(device="cpu", compile=False, batch_size=GLOBAL_BATCH)
    from tbd.frameworks.jax import distributed as jax_distributed

    comm = jax_distributed.setup(config) if "RANK" in os.environ else None
    import jax
    import jax.numpy as jnp

    from tbd import topology

    local = topology.local_share(config.batch_size, jax.process_count())
    rng = np.random.default_rng(123)
    x, y = rng.standard_normal((GLOBAL_BATCH, 6)).astype(np.float32), rng.standard_normal((GLOBAL_BATCH, 2)).astype(np.float32)
    lo = jax.process_index() * local
    device = jax.local_devices()[0]
    batch = jax.device_put((x[lo : lo + local], y[lo : lo + local]), device)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    params = jax.device_put({"w1": jax.random.normal(k1, (6, 16)) * 0.3, "w2": jax.random.normal(k2, (16, 2)) * 0.3}, device)
    initial = np.asarray(params["w1"])
    params, (batch,) = jax_distributed.globalize(params, [batch])

    def loss(p, b):
        return jnp.mean((jnp.tanh(b[0] @ p["w1"]) @ p["w2"] - b[1]) ** 2)  # mean over the global batch

    step = jax.jit(lambda p, b: jax.tree_util.tree_map(lambda w, g: w - 0.5 * g, p, jax.grad(loss)(p, b)))
    for _ in range(STEPS):
        params = step(params, batch)
    if jax.process_index() == 0:
        np.savez(out, processes=jax.process_count(), w1_initial=initial, **{k: np.asarray(v.addressable_shards[0].data) for k, v in params.items()})
    if comm is not None:
        comm.close()


if __name__ == "__main__":
    main(sys.argv[1])
