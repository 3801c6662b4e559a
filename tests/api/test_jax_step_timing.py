"""JAX steps are timed between consecutive completions with one step in flight; the first pass over
the resident batches (where each shape compiles) is timed step by step."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("jax")

from tbd import frameworks  # noqa: E402
from tbd.config import RunConfig  # noqa: E402


def test_step_times_add_up_to_the_wall_time_and_the_first_pass_is_timed_alone():
    import jax

    # A batch size no other test uses, and empty jit caches: another test of this process may have
    # compiled seq2seq's tiny step already, and a cached step would make the first pass cheap.
    jax.clear_caches()
    config = RunConfig(workload="seq2seq", framework="jax", flavor="tiny", batch_size=7, data_pool=2, isolate=False).validated()
    session = frameworks.open_session(config)
    try:
        first = session.run_steps(2)  # one compile per resident batch's shape, each in its own step
        assert len(first.seconds) == 2 and min(first.seconds) > 0
        t0 = time.perf_counter()
        steady = session.run_steps(8)
        wall = time.perf_counter() - t0
        assert len(steady.seconds) == len(steady.units) == 8
        assert min(steady.seconds) > 0
        # every moment of the call is some step's: the steps' times cover the call's wall time
        assert sum(steady.seconds) == pytest.approx(wall, rel=0.05)
        # and the steady steps are far cheaper than the first, which compiled (the second batch
        # may fall in the same length bucket as the first and need no compilation of its own)
        assert max(steady.seconds) < first.seconds[0]
    finally:
        session.close()
