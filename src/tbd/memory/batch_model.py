"""Batch-size model: memory = fixed + per_sample x batch, fitted to a few small batches, and the
largest batch that fits a memory budget. `tbd memory resnet50 --max-batch --memory 16GiB`.

Peak memory of a training step is, to a good approximation, affine in the batch size: weights,
gradients and optimizer state do not depend on it; feature maps, the input batch and most
workspace grow with it. The fit is ordinary least squares on (batch, peak bytes) pairs; with
three or more points the residuals say how far from affine the workload is.

The allocated peak is not all a batch needs: a caching allocator must also find the step's
largest tensor as one contiguous free block, and near the limit the memory left is in pieces
(gpt bf16 on an H200: the allocated-peak line said 171, the real boundary was 137, where the
50k-vocabulary fp32 logits, 196 MiB a sample, could not be placed with 48 GiB free in
fragments). So the model keeps a headroom of one largest tensor made in the backward pass
(profiler.headroom_tensor_bytes says why not a forward one), fitted on the same batches: a batch
fits when fixed + per_sample x b + largest(b) <= budget. On that H200 this gives 137
for gpt (confirmed 137) and moves resnet50's prediction by 2% (its largest tensor is a few MiB
a sample against 147 MiB of peak).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from tbd.errors import UsageError


@dataclass
class BatchModel:
    fixed_bytes: float  # memory at batch size 0 (weights, gradients, optimizer state, ...)
    per_sample_bytes: float  # added memory per sample of the batch
    points: list[tuple[int, int]]  # (batch size, measured peak bytes) the fit used
    max_residual_pct: float  # largest |measured - fitted| / measured over the points
    # Headroom for the largest single tensor (a contiguous block the allocator must find), a line
    # through the largest tensors of the two largest fit batches; 0 where not measured.
    headroom_fixed_bytes: float = 0.0
    headroom_per_sample_bytes: float = 0.0

    def predict(self, batch: float) -> float:
        """The allocated peak of one training step at `batch`."""
        return self.fixed_bytes + self.per_sample_bytes * batch

    def required(self, batch: float) -> float:
        """What a step at `batch` needs from the device: its peak plus the largest-tensor headroom."""
        return self.predict(batch) + self.headroom_fixed_bytes + self.headroom_per_sample_bytes * batch

    def max_batch(self, budget_bytes: float) -> int:
        """Largest batch size whose required memory fits `budget_bytes` (0 when not even one does)."""
        per_sample = self.per_sample_bytes + self.headroom_per_sample_bytes
        if self.per_sample_bytes <= 0:
            raise UsageError("memory did not grow with the batch size in the measured runs; measure larger batches (--fit-batches)")
        # (the small epsilon keeps an exact fit from losing a sample to float rounding)
        return max(0, math.floor((budget_bytes - self.fixed_bytes - self.headroom_fixed_bytes) / per_sample + 1e-9))

    def with_headroom(self, largest: list[tuple[int, float]]) -> BatchModel:
        """This model with the largest-tensor headroom from (batch, largest tensor bytes) pairs."""
        largest = sorted((b, m) for b, m in largest if m)
        if not largest:
            return self
        (b1, m1), (b2, m2) = largest[-2] if len(largest) > 1 else largest[-1], largest[-1]
        slope = max(0.0, (m2 - m1) / (b2 - b1)) if b2 != b1 else 0.0
        return replace(self, headroom_fixed_bytes=float(m2 - slope * b2), headroom_per_sample_bytes=float(slope))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit(points: list[tuple[int, float]]) -> BatchModel:
    """Least-squares line through (batch size, peak bytes); needs two distinct batch sizes."""
    if len({b for b, _ in points}) < 2:
        raise UsageError("the batch-size model needs peaks at two or more different batch sizes; give --fit-batches like 2,4,8")
    n = len(points)
    mean_b = sum(b for b, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    sxx = sum((b - mean_b) ** 2 for b, _ in points)
    sxy = sum((b - mean_b) * (m - mean_m) for b, m in points)
    slope = sxy / sxx
    intercept = mean_m - slope * mean_b
    resid = max(abs(m - (intercept + slope * b)) / m for b, m in points if m) if points else 0.0
    return BatchModel(float(intercept), float(slope), [(int(b), int(m)) for b, m in points], 100.0 * resid)


def default_fit_batches(batch_size: int, min_batch: int = 1) -> list[int]:
    """Three batches up to the run's batch size: b/4, b/2, b (at least 1, 2, 4), none below the
    flavor's smallest batch."""
    b = max(4 * min_batch, batch_size)
    return sorted({max(min_batch, b // 4), max(2 * min_batch, b // 2), b})


def parse_batches(text: str) -> list[int]:
    try:
        values = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UsageError(f"cannot read batch sizes '{text}'; write them like 2,4,8") from None
    if len(values) < 2 or values[0] < 1:
        raise UsageError(f"--fit-batches needs two or more positive batch sizes, got '{text}'; try 2,4,8")
    return values
