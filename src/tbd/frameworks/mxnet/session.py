"""MXNet sessions: a hybridized Gluon block trained by gluon.Trainer, timed per step.

A workload's `mxnet_impl.build(ctx)` returns an `MxnetTask`; `open_session` turns it into an
`MxnetSession` (the plugin's `Session`). The block is hybridized with a static allocation and
static shapes, so each step runs one cached symbolic graph. MXNet's engine runs operators
asynchronously: each step is timed with the host clock up to `mx.nd.waitall()`, the one host
sync per step (as `block_until_ready` in the JAX plugin).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tbd.frameworks.base import BuildContext, SessionInfo, StepTimes
from tbd.metrics.conditions import intra_op_threads
from tbd.results.environment import cpu_model

# MXNet sizes its OpenMP pool when it is imported: set the thread count tbd uses for every CPU
# run (the usable CPUs, or the user's OMP_NUM_THREADS) before that.
_THREADS = intra_op_threads()
os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS["intra_op"]))

import mxnet as mx  # noqa: E402  (after the thread count above)
from mxnet import autograd, gluon  # noqa: E402

Batch = tuple[Any, ...]  # (data, label) NDArrays on the run's context


@dataclass
class MxnetTask:
    net: gluon.HybridBlock
    # The initializer of the weights that have none of their own (BatchNorm brings its own).
    initializer: mx.init.Initializer
    # Per-sample loss of one batch: (net, batch) -> NDArray of shape (batch,).
    loss: Callable[[gluon.HybridBlock, Batch], Any]
    # One synthetic batch on `ctx`, reproducible from the NumPy generator.
    make_batch: Callable[[Any, Any], Batch]
    optimizer: str = "sgd"
    optimizer_params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class MxnetSession:
    def __init__(self, config, spec, task: MxnetTask, ctx: BuildContext):
        import numpy as np

        self.config = config
        self.context = mx.cpu()
        self.task = task
        mx.random.seed(config.seed)
        rng = np.random.default_rng(config.seed)
        self.batches = [task.make_batch(rng, self.context) for _ in range(config.data_pool)]
        self.net = task.net
        self.net.initialize(task.initializer, ctx=self.context)
        self.net.hybridize(static_alloc=True, static_shape=True)
        self.net(self.batches[0][0]).wait_to_read()  # deferred shapes: known after one forward
        params = self.net.collect_params()
        self.num_parameters = int(sum(p.data().size for p in params.values() if p.grad_req != "null"))
        self.trainer = gluon.Trainer(params, task.optimizer, task.optimizer_params)
        self.batch_size = ctx.batch_size
        per_sample = spec.units_per_sample(config.resolved_flavor())
        self._units = [ctx.batch_size * per_sample] * len(self.batches)
        self._samples = [float(ctx.batch_size)] * len(self.batches)
        self._next = 0
        self._loss = None
        self.info = SessionInfo(
            device_name=cpu_model(),
            framework_version=mx.__version__,
            num_parameters=self.num_parameters,
            method={
                "timing": "host clock per step up to mx.nd.waitall() (one host sync per step)",
                "data": f"synthetic, {config.data_pool} batch(es) resident in memory, rotated",
                "compile": "Gluon hybridize(static_alloc=True, static_shape=True): one cached graph (always; --compile changes nothing)",
                "compile_flag": bool(config.compile),
                "precision": "fp32",
                "memory_format": "NCHW (Gluon's default)",
                "optimizer": f"gluon.Trainer {task.optimizer}",
                "intra_op_threads": int(os.environ["OMP_NUM_THREADS"]) if os.environ["OMP_NUM_THREADS"].isdigit() else None,
                "threads": {**_THREADS, "set_as": "OMP_NUM_THREADS before importing mxnet"},
                "mxnet_features": [f.name for f in mx.runtime.Features().values() if f.enabled][:40],
            },
        )

    def step(self) -> None:
        """One training step on the next batch of the pool (queued on MXNet's engine, not waited for)."""
        batch = self.batches[self._next]
        self._next = (self._next + 1) % len(self.batches)
        with autograd.record():
            loss = self.task.loss(self.net, batch)
        loss.backward()
        # The loss is per sample: step(batch) averages the summed gradients, as a mean loss would.
        self.trainer.step(self.batch_size)
        self._loss = loss

    def run_steps(self, n: int) -> StepTimes:
        seconds, units, samples = [], [], []
        for _ in range(n):
            units.append(self._units[self._next])
            samples.append(self._samples[self._next])
            t0 = time.perf_counter()
            self.step()
            mx.nd.waitall()
            seconds.append(time.perf_counter() - t0)
        return StepTimes(seconds, units, samples)

    def last_loss(self) -> float:
        return float(self._loss.mean().asscalar()) if self._loss is not None else float("nan")

    def forget_loss(self) -> None:
        self._loss = None

    def memory(self) -> dict[str, int | None]:
        return {}  # CPU only: the host's memory is read by the harness's probe

    def close(self) -> None:
        mx.nd.waitall()
        self.batches = []
        self._loss = None


def open_session(config, spec, impl, ctx: BuildContext) -> MxnetSession:
    return MxnetSession(config, spec, impl.build(ctx), ctx)
