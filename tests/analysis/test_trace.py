"""Trace parsing: a real torch.profiler trace of a tiny CPU run, and hand-built traces in the
shapes torch.profiler (Kineto) and jax.profiler write for a GPU, with known answers."""

import gzip
import json
import types

import pytest

from tbd.analysis.summary import summarize
from tbd.analysis.trace import WINDOW_NAME, load_trace
from tbd.errors import UsageError


def _write(path, data):
    with gzip.open(path, "wt") as f:
        json.dump(data, f)
    return path


def _x(name, ts, dur, cat, pid=1, tid=1, **args):
    return {"ph": "X", "name": name, "ts": ts, "dur": dur, "cat": cat, "pid": pid, "tid": tid, "args": args}


def kineto_gpu_trace():
    """Window 0-1000 us. Kernels: GEMM 100-400 (stream 7) and an elementwise kernel 300-500
    (stream 8, overlapping), an optimizer-step kernel 800-900, a memcpy 950-960. The host is
    busy in ops 0-300 and 600-800 and waits in cudaDeviceSynchronize 900-1000."""
    ev = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "python"}},
        _x(WINDOW_NAME, 0, 1000, "user_annotation"),
        _x("aten::mm", 0, 300, "cpu_op"),
        _x("cudaLaunchKernel", 50, 10, "cuda_runtime", correlation=1),
        _x("cudaLaunchKernel", 60, 10, "cuda_runtime", correlation=2),
        _x("Optimizer.step#SGD.step", 600, 200, "user_annotation"),
        _x("aten::add_", 600, 200, "cpu_op"),
        _x("cudaLaunchKernel", 650, 10, "cuda_runtime", correlation=3),
        _x("cudaDeviceSynchronize", 900, 100, "cuda_runtime"),
        _x("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64", 100, 300, "kernel", pid=0, tid=7, stream=7, correlation=1),
        _x("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float> >", 300, 200, "kernel", pid=0, tid=8, stream=8, correlation=2),
        # a plain elementwise kernel, but launched inside Optimizer.step: optimizer time
        _x("void at::native::vectorized_elementwise_kernel<4, at::native::AUnaryFunctor<float> >", 800, 100, "kernel", pid=0, tid=7, stream=7, correlation=3),
        _x("Memcpy DtoD (Device -> Device)", 950, 10, "gpu_memcpy", pid=0, tid=7, stream=7),
        _x("gpu annotation that repeats kernel time", 100, 800, "gpu_user_annotation", pid=0, tid=7),
    ]
    return {"schemaVersion": 1, "deviceProperties": [], "traceEvents": ev}


def test_kineto_gpu_trace_numbers(tmp_path):
    trace = load_trace(_write(tmp_path / "t.json.gz", kineto_gpu_trace()))
    assert trace.source == "torch" and trace.has_window_marker and trace.window == (0.0, 1000.0)
    s = summarize(trace, steps=1)
    dev, host = s["device"], s["host"]
    assert dev["kernels"] == 3 and dev["device_events"] == 4
    assert dev["gpu_util_trace_pct"] == pytest.approx(50.0)  # 100-500 and 800-900 of 1000
    assert dev["device_busy_pct"] == pytest.approx(51.0)  # plus the memcpy
    classes = dev["classes"]
    assert classes["matmul/conv"]["time_ms"] == pytest.approx(0.3)
    assert classes["optimizer"]["count"] == 1 and classes["elementwise"]["count"] == 1
    assert classes["memcpy/memset"]["time_ms"] == pytest.approx(0.01)
    assert dev["tensor_core_share_pct"] == pytest.approx(300 / 610 * 100)
    assert dev["optimizer_kind"] == "per-parameter"
    # Host busy 0-300 and 600-800 (ops contain their launches); waits 900-1000.
    assert host["busy_pct"] == pytest.approx(50.0)
    assert host["sync_wait_pct"] == pytest.approx(10.0)
    # GPU idle: 0-100, 500-800, 900-1000; minus the sync wait: 0-100 and 500-800 = 40%.
    assert host["gpu_idle_not_waiting_pct"] == pytest.approx(40.0)
    # ... of which the host ran ops during 0-100 and 600-800.
    assert host["gpu_idle_host_busy_pct"] == pytest.approx(30.0)
    assert host["input_wait_pct"] == 0.0
    assert "_kernel_union" not in dev


def test_kernel_time_by_grid_fill(tmp_path):
    """CUPTI's "blocks per SM" in torch's traces: kernel time by how much of the GPU a grid covers."""
    data = kineto_gpu_trace()
    fills = iter([8.0, 0.5, 0.1])  # the GEMM fills the GPU; the add half of it; the optimizer kernel a tenth
    for e in data["traceEvents"]:
        if e.get("cat") == "kernel":
            e["args"]["blocks per SM"] = next(fills)
    s = summarize(load_trace(_write(tmp_path / "t.json.gz", data)), steps=1)
    assert s["device"]["kernel_fill_share_pct"] == pytest.approx({"under_quarter": 100 / 6, "quarter_to_one": 200 / 6, "one_or_more": 300 / 6})
    # without grid sizes (JAX's traces, older torch): no figure rather than a made-up one
    assert summarize(load_trace(_write(tmp_path / "u.json.gz", kineto_gpu_trace())), steps=1)["device"]["kernel_fill_share_pct"] is None


def xla_gpu_trace():
    """jax.profiler's layout: a /device:GPU:0 process with a stream thread (kernels) and an
    'XLA Ops' thread (the same time again, to be skipped), and a /host:CPU process."""
    ev = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 11, "args": {"name": "Stream #14(Compute)"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 12, "args": {"name": "XLA Ops"}},
        {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}},
        {"ph": "M", "name": "thread_name", "pid": 2, "tid": 21, "args": {"name": "python"}},
        _x(WINDOW_NAME, 0, 200, "", pid=2, tid=21),
        _x("$jax_adapter.py:99 run_steps", 0, 200, "", pid=2, tid=21),
        _x("PjitFunction(train_step)", 0, 20, "", pid=2, tid=21),
        _x("gemm_fusion_dot_1", 20, 100, "", pid=1, tid=11, long_name="%gemm_fusion_dot.1 = bf16[64,64]{1,0} fusion(...)"),
        _x("loop_add_fusion", 120, 30, "", pid=1, tid=11),
        _x("MemcpyD2H", 150, 10, "", pid=1, tid=11),
        _x("dot.1", 20, 100, "", pid=1, tid=12),
    ]
    return {"displayTimeUnit": "ns", "traceEvents": ev}


def test_xla_gpu_trace(tmp_path):
    trace = load_trace(_write(tmp_path / "j.trace.json.gz", xla_gpu_trace()))
    assert trace.source == "jax"
    s = summarize(trace, steps=2)
    dev = s["device"]
    assert dev["kernels"] == 2 and dev["device_events"] == 3  # the XLA Ops duplicate is skipped
    assert dev["gpu_util_trace_pct"] == pytest.approx(65.0)  # 20-150 of 200
    assert dev["classes"]["matmul/conv"]["share_pct"] == pytest.approx(100 / 140 * 100)
    assert dev["tensor_core_share_pct"] > 0  # bf16 in XLA's long name
    assert s["host"]["busy_pct"] == pytest.approx(10.0)  # the Python frame spans, it is not work


def test_broken_and_foreign_traces(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_trace(tmp_path / "missing.json.gz")
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(gzip.compress(b'{"traceEvents": [')[:-5])
    with pytest.raises(UsageError, match="cannot be read"):
        load_trace(bad)
    notrace = tmp_path / "x.json"
    notrace.write_text('{"hello": 1}')
    with pytest.raises(UsageError, match="not a Chrome"):
        load_trace(notrace)
    # A valid trace without tbd's window marker: the window is the span of its events.
    data = kineto_gpu_trace()
    data["traceEvents"] = [e for e in data["traceEvents"] if e.get("name") != WINDOW_NAME]
    trace = load_trace(_write(tmp_path / "nowin.json.gz", data))
    assert not trace.has_window_marker and trace.window == (0.0, 1000.0)


def test_real_torch_profiler_trace_of_a_tiny_cpu_run(tmp_path):
    torch = pytest.importorskip("torch")
    from tbd.frameworks.torch import trace as torch_trace
    from tbd.frameworks.base import StepTimes

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))

    def run_steps(n):
        for _ in range(n):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return StepTimes([0.01] * n, [4.0] * n, [4.0] * n)

    session = types.SimpleNamespace(device=torch.device("cpu"), run_steps=run_steps)
    path = tmp_path / "real.json.gz"
    info = torch_trace.capture(session, 3, path)
    assert info["profiler"].startswith("torch.profiler") and len(info["step_s"]) == 3
    trace = load_trace(path)
    assert trace.source == "torch" and trace.has_window_marker and not trace.device
    s = summarize(trace, steps=3)
    assert s["device"] is None
    host = s["host"]
    assert 0 < host["busy_pct"] <= 100.0
    classes = host["op_classes"]
    for cls in ("matmul/conv", "normalization", "optimizer"):
        assert cls in classes, classes
    assert host["optimizer_kind"] == "foreach"
    assert host["ops_per_step"] > 10
    assert sum(r["share_pct"] for r in classes.values()) == pytest.approx(100.0)


def test_facts_share_the_kernels_by_class_in_count_as_well_as_in_time(tmp_path):
    """The calibration log keeps both: where the host paces a step, launches count, not their time."""
    from tbd.analysis.analyze import facts
    from tbd.analysis.verify import CALIBRATION_FACTS

    s = summarize(load_trace(_write(tmp_path / "t.json.gz", kineto_gpu_trace())), steps=1)
    record = {"id": "r1", "status": "ok", "metrics": {}, "environment": {}, "memory": {},
              "config": {"workload": "resnet50", "framework": "torch", "flavor": "paper", "device": "cuda", "precision": "bf16", "batch_size": 32}}
    f = facts(record, s, {}, None)
    # a GEMM of 300 us, an add of 200 us, an optimizer kernel of 100 us and a copy of 10 us: a quarter of the launches each
    assert f["class_count_share"] == pytest.approx(dict.fromkeys(("matmul/conv", "elementwise", "optimizer", "memcpy/memset"), 25.0))
    assert f["class_share"]["matmul/conv"] == pytest.approx(300 / 610 * 100)  # in time: the copy counts too
    assert "class_count_share" in CALIBRATION_FACTS
