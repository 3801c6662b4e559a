"""Framework adapters: each turns a workload's implementation into a `Session` the harness times."""
