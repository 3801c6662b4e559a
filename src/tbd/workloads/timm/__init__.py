"""`timm:MODEL`: any model of timm (PyTorch Image Models) as an image-classification workload."""
