"""Batch-size model: memory = fixed + per_sample x batch, fitted to a few small batches, and the
largest batch that fits a memory budget. `tbd memory resnet50 --max-batch --memory 16GiB`.

Peak memory of a training step is, to a good approximation, affine in the batch size: weights,
gradients and optimizer state do not depend on it; feature maps, the input batch and most
workspace grow with it. The fit is ordinary least squares on (batch, peak bytes) pairs; with
three or more points the residuals say how far from affine the workload is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from tbd.errors import UsageError


@dataclass
class BatchModel:
    fixed_bytes: float  # memory at batch size 0 (weights, gradients, optimizer state, ...)
    per_sample_bytes: float  # added memory per sample of the batch
    points: list[tuple[int, int]]  # (batch size, measured peak bytes) the fit used
    max_residual_pct: float  # largest |measured - fitted| / measured over the points

    def predict(self, batch: float) -> float:
        return self.fixed_bytes + self.per_sample_bytes * batch

    def max_batch(self, budget_bytes: float) -> int:
        """Largest batch size whose predicted peak fits `budget_bytes` (0 when not even one does)."""
        if self.per_sample_bytes <= 0:
            raise UsageError("memory did not grow with the batch size in the measured runs; measure larger batches (--fit-batches)")
        # (the small epsilon keeps an exact fit from losing a sample to float rounding)
        return max(0, math.floor((budget_bytes - self.fixed_bytes) / self.per_sample_bytes + 1e-9))

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
