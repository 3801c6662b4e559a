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


def test_environment_line_names_each_machines_cores(load_bench):
    """Results resumed across a one-GPU and a two-GPU host say both hosts' cores, not the first's."""
    environment = load_bench("frameworks_table").environment

    def point(cores, day):
        return {"record": {"created_at": f"2026-11-{day}T00:00:00", "environment": {
            "cpu_cores": cores, "gpu": {"name": "NVIDIA H200", "driver": "580"}, "libraries": {"torch": "2.11.0"}}}}

    one = environment({"points": {"a": point(16, 29), "b": point(16, 29)}})
    assert "16 CPU cores;" in one and one.endswith("2026-11-29")
    two = environment({"points": {"a": point(16, 29), "b": point(32, 30)}})
    assert "16 or 32 CPU cores (runs on 2 machines)" in two and two.endswith("2026-11-29 to 2026-11-30")
