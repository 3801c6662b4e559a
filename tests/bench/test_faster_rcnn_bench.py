"""bench/faster_rcnn_gpu.py's interleaved pairs on the CPU (tiny flavor): a window that fails (a
loss gone NaN, as on an H200 on 2026-12-01) ends the pairs and keeps those measured before it."""

from __future__ import annotations

import pytest


@pytest.mark.slow  # three pairs of 1 s windows and a tiny Faster R-CNN: about 15 s on 2 cores
def test_a_failed_window_ends_the_pairs_and_keeps_those_before_it(load_bench, monkeypatch):
    bench = load_bench("faster_rcnn_gpu")
    from tbd import registry
    from tbd.config import RunConfig
    from tbd.errors import RunFailure
    from tbd.harness import measure as measure_module

    real, calls = measure_module.measure, []

    def measure(session, config, *args, **kwargs):
        calls.append(config.max_time_s)
        if len(calls) == 4:  # the discarded first window, pair 1's and pair 2's, then pair 3's fails
            raise RunFailure("loss became nan at step 41; try a lower learning rate or another precision", kind="nan")
        return real(session, config, *args, **kwargs)

    monkeypatch.setattr(measure_module, "measure", measure)
    hp = dict(registry.get_spec("faster_rcnn").flavor("tiny").hparams)
    config = RunConfig(workload="faster_rcnn", flavor="tiny", device="cpu", batch_size=2, max_time_s=10, max_steps=20, target_ci_pct=3.0).validated()
    result = bench.interleaved(config, hp, pairs=5, window_s=1.0, cudnn_tf32=True)
    assert len(result["pairs"]) == 2 and result["stopped"].startswith("pair 3: RunFailure: loss became nan")
    assert result["x_plain_median"] > 0 and result["x_plain_ci95"][0] <= result["x_plain_median"] <= result["x_plain_ci95"][1]
    assert result["gpu_events_per_step"] == {"plain": None, "tbd": None}  # no GPU to count on
