"""Datasets on disk for JAX sessions (`tbd run WORKLOAD --framework jax --data PATH`).

JAX has no loader of its own in its core; the well-kept one of its ecosystem, grain, is not a
dependency of tbd, so the PyTorch `DataLoader` feeds JAX arrays (the way JAX's own examples
load data): the same loader as the PyTorch plugin's (`tbd.frameworks.torch.data.make_loader`,
worker processes started with spawn, since JAX does not survive a fork), whose host batches
the workload's `from_host` (its jax_impl) puts on the device. JAX steps are synchronized one by
one, so the time a step waits for its batch is also the time the device is idle for it.
"""

from __future__ import annotations

from typing import Any

from tbd.data import recipes
from tbd.data.base import samples_in
from tbd.errors import UsageError


def _torch_loader():
    try:
        from tbd.frameworks.torch import data as torch_data
    except ImportError:
        raise UsageError("--data with JAX reads through PyTorch's DataLoader: pip install 'tbd[torch]'") from None
    return torch_data


class Feed:
    """Device batches, one per `next()`, with the files skipped in them."""

    def __init__(self, loader, convert):
        self.iterator, self.convert = iter(loader), convert
        self.samples = 0
        self.last: Any = None  # the last batch handed out (tbd data bench waits for its transfer)

    def next(self) -> tuple[Any, list[str]]:
        host = next(self.iterator)
        skipped = host.pop("skipped", [])
        self.samples += samples_in(host)
        self.last = self.convert(_numpy(host))
        return self.last, skipped

    def close(self) -> None:
        shutdown = getattr(self.iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self.iterator = None


def _numpy(value: Any) -> Any:
    if hasattr(value, "numpy") and callable(value.numpy):
        return value.numpy()
    if isinstance(value, list):
        return [_numpy(v) for v in value]
    if isinstance(value, dict):
        return {k: _numpy(v) for k, v in value.items()}
    return value


def open_feed(config, spec, from_host, ctx, device) -> tuple[Feed, dict[str, Any]]:
    torch_data = _torch_loader()
    dataset = recipes.open_dataset(spec, config.data, ctx.hparams, ctx.batch_size, config.seed, config.decode)
    loader = torch_data.make_loader(dataset, config.workers, config.prefetch, pin=False, context="spawn" if config.workers else None)
    feed = Feed(loader, lambda host: from_host(host, ctx, device))
    method = recipes.feed_method(
        dataset,
        loader=f"torch.utils.data.DataLoader feeding JAX arrays, {config.workers} worker process(es) (spawned), prefetch {config.prefetch}",
        decode="CPU: in the loader's workers (PIL)",
        feed="batches taken from the loader in the training thread and put on the device (jax.device_put)")
    return feed, method


def open_loader(config, spec, impl, ctx):
    """The feed alone (tbd data bench)."""
    import jax

    from tbd.frameworks.jax.session import _device

    device = _device(config.device)
    feed, method = open_feed(config, spec, impl.from_host, ctx, device)
    return feed, method, lambda: jax.block_until_ready(feed.last)
