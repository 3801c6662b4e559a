"""bench/frameworks_compare_gpu.py's resume rule: which earlier results stand, and --retrace (a
point measured before its batch was traced runs again, so its ratio gets its line from a trace)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "frameworks_compare_gpu.py"


def _bench():
    spec = importlib.util.spec_from_file_location("frameworks_compare_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_which_earlier_results_stand():
    done = _bench().done
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
