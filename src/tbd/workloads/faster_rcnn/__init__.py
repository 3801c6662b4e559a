"""faster_rcnn: framework-neutral spec (spec.py) and the PyTorch implementation (torch_impl.py)."""
