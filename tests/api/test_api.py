"""The Python API: tbd.run from scripts without a main guard, `python -c` and stdin; tbd.measure on
a toy step (CI, stored record, MFU with given or counted FLOPs); tbd.results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tbd.results.record import MEASURED  # a run with a throughput, converged or not

import tbd
from tbd.errors import UsageError
from tbd.results.store import Store

SRC = str(Path(__file__).resolve().parents[2] / "src")
RUN_CODE = (
    "import tbd\n"
    "r = tbd.run('gpt', device='cpu', max_steps=4, max_time_s=20)\n"
    "print('RESULT', r.status, r.workload, r.id)\n"
)


def _python(args: list[str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


@pytest.mark.parametrize("how", ["script without a main guard", "python -c", "stdin"])
def test_run_from_a_script_without_main_guard_python_c_and_stdin(how, tmp_path, tbd_home):
    if how == "python -c":
        out = _python(["-c", RUN_CODE], tmp_path)
    elif how == "stdin":
        out = _python(["-"], tmp_path, stdin=RUN_CODE)
    else:
        (tmp_path / "bench_me.py").write_text(RUN_CODE)  # no `if __name__ == "__main__"`
        out = _python(["bench_me.py"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    assert len(lines) == 1, out.stdout  # the script ran once: the child did not import it again
    _, status, workload, run_id = lines[0].split()
    assert status in MEASURED and workload == "gpt"
    assert Store(tbd_home).get(run_id)["status"] == status  # stored like a CLI run


def test_run_result_is_typed_and_in_process(tbd_home):
    r = tbd.run("gpt", device="cpu", max_steps=4, isolate=False, store=False)
    assert isinstance(r, tbd.RunResult) and r.measured and r.throughput and r.stored_in is None
    assert r.unit == "tokens" and r.throughput == r.metrics["tokens_per_s"] > 0
    low, high = r.throughput_ci95
    assert low <= r.throughput <= high
    assert r.to_dict()["id"] == r.id and r.record["config"]["workload"] == "gpt"
    assert Store(tbd_home).list() == []  # store=False


def test_run_rejects_bad_input_with_one_line():
    with pytest.raises(UsageError, match="unknown run option 'max_stepz'"):
        tbd.run("gpt", device="cpu", max_stepz=3)
    with pytest.raises(UsageError, match="unknown workload 'gtp'"):
        tbd.run("gtp", device="cpu")
    with pytest.raises(UsageError, match="gpt has no Hugging Face config to set; --hf-config .* goes with hf:MODEL"):
        tbd.run("gpt", device="cpu", hf_config={"n_layer": 2})


def test_run_checks_hyperparameter_overrides_before_running(tbd_home):
    for hparams, message in (({"layers": -1}, "layers must be at least 1"), ({"layers": 0}, "layers must be at least 1"),
                             ({"lr": "abc"}, "lr takes a finite number"), ({"d_model": 2.5}, "d_model takes an integer"),
                             ({"lr": float("nan")}, "lr takes a finite number")):
        with pytest.raises(UsageError, match=message):
            tbd.run("gpt", device="cpu", hparams=hparams)
    with pytest.raises(UsageError, match="block_size must be at least 1"):
        tbd.run("gpt", device="cpu", seq_len=0)  # as the CLI's --seq-len 0
    with pytest.raises(UsageError, match="max-steps must be at least 2"):
        tbd.run("gpt", device="cpu", max_steps=1)  # step 0 compiles: one step measures nothing
    assert Store(tbd_home).list() == []  # nothing ran, nothing stored


def test_a_measured_but_unconverged_result_shows_its_throughput():
    from tbd.report.fmt import fmt_num

    r = tbd.run("gpt", device="cpu", max_steps=4, isolate=False, store=False)
    assert r.measured and not r.ok  # 3 timed steps at most: no CI target reached
    assert f"{fmt_num(r.throughput)} tokens/s" in repr(r) and r.status in repr(r)


def _toy_step(width: int = 64, batch: int = 8):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(width, width)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(batch, width), torch.randn(batch, width)

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


FAST = dict(device="cpu", max_time_s=10, min_window_s=0.3, min_timed_steps=10, target_ci_pct=5.0)


def test_measure_a_toy_step_with_given_flops(tbd_home):
    flops = 3 * 2 * 8 * 64 * 64  # forward + backward of one 64x64 matmul on 8 samples
    r = tbd.measure(_toy_step(), samples_per_step=8, flops_per_step=flops, peak_tflops=0.5, name="toy", **FAST)
    assert r.measured, r.error
    assert r.workload == "custom:toy" and r.record.workload["unit"] == "samples"
    assert r.metrics["timed_steps"] >= 10 and r.ci_pct is not None and r.throughput_ci95 is not None
    assert r.metrics["model_flops_per_sample"] == flops / 8
    assert r.mfu_pct == pytest.approx(flops / 8 * r.samples_per_s / 0.5e12 * 100)
    assert r.record.method["peak_flops"]["source"] == "given by the caller (peak_tflops)"
    assert r.record.method["warmup"]["excluded_steps"][0] == 0
    assert r.metrics["cpu_util_pct"] is not None or "window too short" in r.metrics["cpu_util_note"]
    # a CPU run has no energy counter: blank, and the record says why
    assert r.metrics["energy_j_per_sample"] is None and r.metrics["energy_note"].startswith("not measurable here"), r.metrics
    stored = Store(tbd_home).get(r.id)
    assert stored["config"]["workload"] == "custom:toy" and stored["metrics"]["mfu_pct"] == r.mfu_pct
    assert [x.id for x in tbd.results(workload="custom:toy")] == [r.id]


def test_measure_counts_flops_with_the_framework_counter():
    r = tbd.measure(_toy_step(), samples_per_step=8, count_flops=True, unit="rows", units_per_step=16, store=False, **FAST)
    assert r.measured, r.error
    # counted: the forward matmul and the weight gradient's (the input needs no gradient)
    assert r.metrics["model_flops_per_sample"] == 2 * 2 * 64 * 64
    assert "flop_counter" in r.record.method["flops"]
    assert r.unit == "rows" and r.throughput == pytest.approx(2 * r.samples_per_s, rel=0.05)


def test_measure_failures():
    with pytest.raises(UsageError, match="callable"):
        tbd.measure(42, samples_per_step=1)
    with pytest.raises(UsageError, match="samples_per_step"):
        tbd.measure(_toy_step(), samples_per_step=0)

    def broken():
        raise ValueError("shapes do not match")

    r = tbd.measure(broken, samples_per_step=1, framework="torch", store=False, **FAST)
    assert r.status == "failed" and "shapes do not match" in r.error["message"]
    r = tbd.measure(lambda: float("nan"), samples_per_step=1, framework="torch", store=False, **FAST)
    assert r.status == "failed" and r.error["kind"] == "nan"
    # what tbd.run refuses, tbd.measure refuses too, in one line and before stepping
    with pytest.raises(UsageError, match="name it, e.g. unit='tokens'"):
        tbd.measure(_toy_step(), samples_per_step=1, units_per_step=5, framework="torch")
    with pytest.raises(UsageError, match="precision fp16 needs a GPU"):
        tbd.measure(_toy_step(), samples_per_step=1, framework="torch", device="cpu", precision="fp16")
    with pytest.raises(UsageError, match="unknown device 'tpu'"):
        tbd.measure(_toy_step(), samples_per_step=1, framework="torch", device="tpu")
    with pytest.raises(UsageError, match="max_steps must be at least 2"):
        tbd.measure(_toy_step(), samples_per_step=1, framework="torch", device="cpu", max_steps=1)
    if not tbd_cuda_available():
        with pytest.raises(UsageError, match="no NVIDIA GPU is visible"):
            tbd.measure(_toy_step(), samples_per_step=1, framework="torch", device="cuda")


def tbd_cuda_available() -> bool:
    from tbd.metrics.devices import cuda_available

    return cuda_available()


def test_results_list_and_frame(tbd_home):
    tbd.measure(_toy_step(), samples_per_step=8, name="a", **FAST)
    assert [r.workload for r in tbd.results()] == ["custom:a"]
    with pytest.raises(UsageError, match="unknown results filter"):
        tbd.results(model="x")
    for limit in (0, -5, 1.5):
        with pytest.raises(UsageError, match="limit must be a positive integer"):
            tbd.results(limit)
    assert len(tbd.results(1)) == 1
    pandas = pytest.importorskip("pandas")
    frame = tbd.results(as_frame=True)
    assert isinstance(frame, pandas.DataFrame) and list(frame["workload"]) == ["custom:a"] and frame["throughput"][0] > 0


def test_sweep_and_memory_from_python(tbd_home):
    points = tbd.sweep("gpt", frameworks="torch", devices="cpu", batch_sizes=[2], max_steps=3, isolate=False, name="api")
    assert [(p.workload, p.config["batch_size"]) for p in points] == [("gpt", 2)] and points[0].status in MEASURED
    again = tbd.sweep("gpt", frameworks="torch", devices="cpu", batch_sizes=[2], max_steps=3, isolate=False, name="api")
    assert [p.id for p in again] == [p.id for p in points]  # resumed, not run again
    profile = tbd.memory("gpt", device="cpu")
    assert profile["status"] == "ok" and profile["peak"]["allocated_bytes"] > 0
    kinds = sorted(r.record.kind for r in tbd.results())
    assert kinds == ["memory", "run"] and "memory ok" in "".join(repr(r) for r in tbd.results())


def test_subpackages_stay_modules_and_api_functions():
    import tbd.results.store

    assert tbd.results.store.Store is Store and callable(tbd.results) and callable(tbd.sweep) and callable(tbd.memory)
    assert {"run", "measure", "sweep", "memory", "results", "RunResult"} <= set(dir(tbd))


def test_run_result_repr_writes_numbers_like_the_results_table():
    """Thousands separated as `tbd results` writes them (README's example), never 2.909e+05."""
    from tbd.api import RunResult
    from tbd.report.fmt import fmt_num
    from tbd.results.record import RunRecord

    record = RunRecord(id="20261201-0101-abc", config={"workload": "custom:step"}, status="ok", workload={"unit": "samples"},
                       metrics={"samples_per_s": 290912.4, "throughput_ci95_half_width_pct": 0.6, "mfu_pct": 41.0})
    text = repr(RunResult(record))
    assert "290,912 samples/s" in text and fmt_num(290912.4) == "290,912" and "e+" not in text
    record.metrics["samples_per_s"] = 54.23
    assert "54.2 samples/s" in repr(RunResult(record))
