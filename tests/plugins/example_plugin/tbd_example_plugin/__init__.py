"""A workload laid out like tbd's built-ins: `spec.py` (framework-neutral) and `torch_impl.py`."""
