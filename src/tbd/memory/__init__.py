"""Where training memory goes: `tbd memory resnet50` (see docs/memory.md).

Framework-neutral parts (categories, batch-size model, reports) import no framework; the
PyTorch and JAX profilers (`torch_profile`, `jax_profile`) are imported only when asked for.
"""
