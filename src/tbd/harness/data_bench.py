"""`tbd data bench`: the loader's throughput alone, with no model, so it can be set beside the
training throughput of the same workload (a loader slower than training makes the run
input-bound; the GPU bench bench/data_gpu.py sets both side by side).

Method: open the framework's feed over the dataset (the same loader, workers, prefetch and
decoding as `tbd run --data`), take `warmup` batches (worker start-up, first decode), then time
`batches` more to the device, with one device sync at the end.
"""

from __future__ import annotations

import time
from typing import Any

from tbd import registry, topology


def bench_loader(config, batches: int = 50, warmup: int = 5) -> dict[str, Any]:
    spec = registry.get_spec(config.workload)
    plugin = registry.framework(config.framework)
    impl = registry.load_implementation(config.workload, config.framework)
    t0 = time.perf_counter()
    feed, method, sync = plugin.open_loader(config, spec, impl, topology.local_share(config.batch_size, 1))
    try:
        for _ in range(warmup):
            feed.next()
        sync()
        ready_s = time.perf_counter() - t0
        before = feed.samples
        start = time.perf_counter()
        for _ in range(batches):
            feed.next()
        sync()
        seconds = time.perf_counter() - start
    finally:
        feed.close()
    samples = feed.samples - before
    return {
        "workload": config.workload, "framework": config.framework, "flavor": config.flavor, "device": config.device,
        "batch_size": config.batch_size, "workers": config.workers, "prefetch": config.prefetch, "decode": config.decode,
        "batches": batches, "seconds": seconds, "batches_per_s": batches / seconds,
        f"{spec.sample_unit.replace(' ', '_')}_per_s": samples / seconds, "startup_s": ready_s,
        "method": {**method, "bench": f"{warmup} warm-up batch(es), then {batches} timed to the device (one sync at the end)"},
    }
