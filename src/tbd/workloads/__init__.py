"""Workloads: one folder each, with a framework-neutral `spec.py` and one `<framework>_impl.py`
per framework. `tbd.registry` maps names to these folders and imports them lazily."""
