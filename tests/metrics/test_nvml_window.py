"""NVML's utilization is shown only over windows it can describe, and a profiled GPU run traces
enough steps for its window to be one."""

from tbd.harness.profiling import choose_steps
from tbd.metrics.sampling import NVML_MIN_WINDOW_S, nvml_window_note


def test_short_windows_get_a_reason_instead_of_a_figure():
    assert nvml_window_note(0.4) == "window too short (400 ms < 3000 ms, a few NVML sample periods)"
    assert nvml_window_note(NVML_MIN_WINDOW_S) is None


def test_gpu_traces_span_the_nvml_window_and_cpu_traces_stay_short():
    for step_ms in (5.0, 32.7, 250.0, 4000.0):
        steps = choose_steps(step_ms, "cuda")
        assert steps >= 2 and (steps * step_ms >= NVML_MIN_WINDOW_S * 1e3 or steps == 200)
    assert choose_steps(20.0, "cpu") == 5 and choose_steps(2000.0, "cpu") == 2


def test_the_profiled_windows_cpu_share_needs_enough_clock_ticks():
    """A CPU run's traced steps spanned 18 ms and read "109.2%" of 2 cores: 4 ticks of 10 ms."""
    import time

    from tbd.metrics.sampling import CPU_MIN_WINDOW_S, HostMeter

    with HostMeter(gpu=False) as short:
        pass
    assert short.result["cpu_util_pct"] is None and short.result["cpu_cores_busy"] is None
    assert short.result["cpu_note"].startswith("window too short")
    with HostMeter(gpu=False) as long:
        end = time.perf_counter() + CPU_MIN_WINDOW_S * 1.5
        while time.perf_counter() < end:  # busy: one core's worth, give or take the machine's load
            pass
    assert long.result["cpu_util_pct"] is not None and "cpu_note" not in long.result
