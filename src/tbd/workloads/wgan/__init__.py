"""wgan: framework-neutral spec (spec.py) and the PyTorch implementation (torch_impl.py)."""
