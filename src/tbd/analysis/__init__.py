"""Performance analysis of training runs: traces, utilization, kernel classes, diagnosis and
recommendations.

`tbd run resnet50 --profile` then `tbd analyze latest` exercises it. Modules:
- capture (+ torch_trace, jax_trace): trace a few steady steps of a live session;
- trace: parse Chrome/Perfetto trace JSON of either profiler into device and host events;
- intervals, kernels, summary: interval unions, kernel classes, utilization and breakdowns;
- stability: jitter and periodic stalls from the run's raw step times;
- diagnose, recommend, verify: the class of bottleneck, ranked fixes, and measuring the top one;
- ncu: Nsight Compute pipe utilization; report: all of it for one stored run.
Nothing here imports a framework at module import time.
"""
