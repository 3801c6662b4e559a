"""Device facts, peak-FLOP table, NVML sampling and host utilization; no framework imports."""
