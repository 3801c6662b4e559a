"""tiny_mlp: a two-layer perceptron fitting random targets; one sample is one vector."""

from tbd.workloads.base import Flavor, WorkloadSpec

WIDTH = 32

SPEC = WorkloadSpec(
    name="tiny_mlp",
    domain="regression",
    dataset="random vectors and targets",
    description="two-layer perceptron, mean squared error, Adam",
    flavors={"tiny": Flavor("tiny", 16, "width 32, batch 16", {"width": WIDTH, "lr": 1e-2})},
    sample_unit="vectors",
    unit="vectors",
    units_per_sample=lambda flavor: 1.0,
    # Two matrix products of width x width, forward and backward: 3 x 2 x 2 x width^2.
    train_flops_per_sample=lambda flavor: 12.0 * flavor["width"] ** 2,
    flops_note="3 x 2 matmuls x 2 width^2",
)
