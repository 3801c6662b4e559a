"""`custom:NAME` names the record of a step measured with `tbd.measure(step, ...)`: the step ran in
the user's process, so there is nothing to build and no implementation. The spec here only lets
stored records be read like any other (`tbd results`, reports); `tbd.measure` writes the unit,
FLOPs and batch it was given into the record itself.
"""

from __future__ import annotations

from tbd.workloads.base import Flavor, WorkloadSpec

EXAMPLE = "my_step"
FLAVOR = "custom"


def spec_for(name: str, unit: str = "samples", samples_per_step: int = 1, units_per_sample: float = 1.0,
             flops_per_sample: float | None = None) -> WorkloadSpec:
    flops_note = "given by the caller (flops_per_step / samples_per_step)" if flops_per_sample is not None else "not given"
    return WorkloadSpec(
        name=f"custom:{name}",
        domain="custom step (tbd.measure)",
        dataset="the caller's",
        description=f"{name}: a training step measured with tbd.measure in the caller's process",
        flavors={FLAVOR: Flavor(FLAVOR, samples_per_step, "as the caller defined it")},
        sample_unit="samples",
        unit=unit,
        units_per_sample=lambda flavor: units_per_sample,
        train_flops_per_sample=lambda flavor: flops_per_sample,
        flops_note=flops_note,
    )
