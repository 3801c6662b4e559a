"""Nsight Compute: the kernel-time weighting of its CSV, and a clear error where ncu is missing."""

import pytest

from tbd.analysis.ncu import require_ncu, summarize_csv
from tbd.errors import UsageError

CSV = '''==PROF== Connected to process 1234
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","gpu__time_duration.sum","sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active","sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active","sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active","dram__throughput.avg.pct_of_peak_sustained_elapsed"
"","","","","","","","","","","","nsecond","%","%","%","%"
"0","1234","python3","host","sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n","1","7","(384, 1, 1)","(132, 1, 1)","0","9.0","3,000","0","60","5","20"
"1","1234","python3","host","void at::native::vectorized_elementwise_kernel<4>","1","7","(128, 1, 1)","(4096, 1, 1)","0","9.0","1,000","0","0","20","80"
'''


def test_weighting_by_kernel_time():
    out = summarize_csv(CSV)
    assert out["kernels"] == 2 and out["duration_unit"] == "nsecond"
    assert out["tensor_pipe_pct"] == pytest.approx((3000 * 60 + 1000 * 0) / 4000)  # max(hmma, gmma) per kernel
    assert out["fma_pipe_pct"] == pytest.approx((3000 * 5 + 1000 * 20) / 4000)
    assert out["dram_throughput_pct"] == pytest.approx(35.0)
    assert out["top"][0]["share_pct"] == pytest.approx(75.0)


def test_empty_ncu_output_is_reported():
    assert "no kernel" in summarize_csv("==PROF== Disconnected\n")["error"]


def test_missing_ncu_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UsageError, match="ncu"):
        require_ncu("cuda")


@pytest.mark.parametrize("name", __import__("tbd.registry").registry.framework_names())
def test_profiler_range_exists_exactly_where_ncu_is_offered(name):
    """A plugin without `Capabilities.ncu` needs no `profiler_range`: asking for it is the same
    one-line usage error as --ncu, before its session module (and framework) is imported."""
    import importlib.util
    from pathlib import Path

    from tbd import registry

    plugin = registry.framework(name)
    source = Path(importlib.util.find_spec(f"{plugin.package}.session").origin).read_text()
    assert ("def profiler_range(" in source) == plugin.capabilities.ncu
    if not plugin.capabilities.ncu:
        with pytest.raises(UsageError, match="--ncu is not available"):
            plugin.profiler_range(True)
