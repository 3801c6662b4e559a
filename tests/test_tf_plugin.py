"""The TensorFlow plugin beyond the registry's generic tests: `pytest -q -m tf tests/test_tf_plugin.py`.

The record states graph or eager execution and XLA; mixed precision builds under Keras'
policy; a profiled run's tf.profiler trace is read by `tbd analyze`; the memory profile's exact
categories are the variables' sizes; two processes train through MultiWorkerMirroredStrategy
with the same per-rank record as torchrun runs.
"""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import require_tf, run_cli

pytestmark = pytest.mark.tf
tf = require_tf()

from tbd import frameworks  # noqa: E402
from tbd.config import RunConfig  # noqa: E402


def _config(**kw) -> RunConfig:
    return RunConfig(workload="gpt", framework="tf", flavor="tiny", isolate=False, data_pool=1, **kw).validated()


@pytest.mark.parametrize("options,compile_,expected", [
    ({}, False, "graph: the whole train step is one tf.function"),
    ({"execution": "eager"}, False, "eager (op by op)"),
    ({}, True, "graph: the whole train step is one tf.function, compiled by XLA (jit_compile=True)"),
])
def test_the_record_states_how_the_step_executes(options, compile_, expected):
    session = frameworks.open_session(_config(options=options, compile=compile_))
    try:
        losses = []
        for _ in range(3):
            session.run_steps(1)
            losses.append(session.last_loss())
        assert session.info.method["execution"] == expected
        assert session.info.method["tensor_float_32"] is False  # fp32 means no TF32
        assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
        assert session.trace_count == (0 if options else 1)  # traced once in graph mode, never in eager mode
    finally:
        session.close()


def test_bf16_builds_under_the_mixed_policy_with_fp32_variables():
    import keras

    session = frameworks.open_session(_config(precision="bf16"))
    try:
        session.run_steps(2)
        assert math.isfinite(session.last_loss())
        assert session.info.method["dtype_policy"] == "mixed_bfloat16"
        assert {v.dtype for v in session.model.trainable_variables} == {"float32"}
        assert session.model.blocks[0].qkv.compute_dtype == "bfloat16"
        assert keras.mixed_precision.dtype_policy().name == "float32"  # the global policy is restored
    finally:
        session.close()


def test_memory_profile_sizes_the_variables_exactly():
    from tbd.frameworks.tf.memory import profile

    prof = profile(_config(), warmup=1)
    cats, analytic = prof["peak"]["categories"], prof["analytic"]
    params = analytic["num_parameters"]
    assert cats["weights"] == cats["gradients"] == 4 * params  # fp32; gpt has no non-trainable variables
    assert 2 * 4 * params <= cats["optimizer_state"] <= 2 * 4 * params + 64  # AdamW's two moments and its counters
    assert any("not measurable here" in note for note in prof["method"]["estimated"])  # CPU: no allocator peak
    assert "not measurable here" in prof["peak"]["not_measured"]


def test_max_batch_on_the_cpu_says_the_peak_is_not_measurable_instead_of_asking_for_larger_batches(tmp_path):
    # a line through the exact categories alone grows by the input: larger batches would say no more
    out = run_cli("memory", "gpt", "--framework", "tf", "--device", "cpu", "--max-batch", "--memory", "4GiB", env={"TBD_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    said = " ".join(out.stdout.split())
    assert "no prediction: TensorFlow reports no allocator statistics for the CPU" in said and "run on a GPU" in said, said
    assert "--fit-batches" not in said and "fitting on batches 8" not in said, said


def test_profiled_run_is_analyzed(tmp_path):
    env = {"TBD_HOME": str(tmp_path)}
    out = run_cli("run", "gpt", "--framework", "tf", "--flavor", "tiny", "--device", "cpu", "--profile", "--max-steps", "6", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads(next((tmp_path / "runs").glob("*.json")).read_text())
    trace = record["analysis"]["trace"]
    assert trace["profiler"].startswith("tf.profiler") and (tmp_path / trace["path"]).exists()
    out = run_cli("analyze", "latest", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "host side" in out.stdout and "step-time stability" in out.stdout


def test_two_processes_train_through_multi_worker_mirrored_strategy(tmp_path):
    pytest.importorskip("torch")  # torchrun launches the ranks
    env = {"TBD_HOME": str(tmp_path)}
    out = run_cli("run", "gpt", "--framework", "tf", "--flavor", "tiny", "--device", "cpu", "--nproc-per-node", "2",
                  "--max-steps", "6", "--max-time", "60", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads(next((tmp_path / "runs").glob("*.json")).read_text())
    assert record["status"] in ("ok", "unconverged", "insufficient"), record["error"]
    assert record["method"]["distribution"].startswith("MultiWorkerMirroredStrategy (2 workers")
    ranks = record["distributed"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["step_time_ms_median"] > 0 for r in ranks)
