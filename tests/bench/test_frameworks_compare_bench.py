"""bench/frameworks_compare_gpu.py's resume rule: which earlier results stand, and --retrace (a
point measured before its batch was traced runs again, so its ratio gets its line from a trace)."""

from __future__ import annotations


def test_which_earlier_results_stand(load_bench):
    done = load_bench("frameworks_compare_gpu").done
    measured, traced = {"row": {"status": "ok"}}, {"row": {"status": "ok"}, "trace": {"kernels_per_step": 900}}
    failed = {"row": {"status": "failed"}}
    assert not done({}, retry_failed=False)
    assert done(measured, retry_failed=False) and done(failed, retry_failed=False)
    assert not done(failed, retry_failed=True)
    # --retrace: an untraced result runs again only where this call traces its batch
    assert not done(measured, retry_failed=False, retrace=True, traced=True)
    assert done(measured, retry_failed=False, retrace=True, traced=False)
    assert done(traced, retry_failed=False, retrace=True, traced=True)
    assert done(failed, retry_failed=False, retrace=True, traced=True)  # a failure is not retried for a trace
