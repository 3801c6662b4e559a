"""Leave one workload out on a calibration log (CPU, under 5 s): each pair is re-estimated with the
time-model constants that were fitted from its own workload's pairs set to what the other pairs
give, so the error says how the model does on a workload it was not fitted to.

    PYTHONPATH=src python3 bench/calibration_holdout.py docs/data/calibration_2026-11-29_h200_all.jsonl \
        docs/data/calibration_2026-11-30_h200.jsonl docs/data/calibration_2026-11-30b_h200.jsonl \
        docs/data/calibration_2026-11-30c_h200.jsonl

Several logs are read in the order given, as one.
"""

from __future__ import annotations

import json
import statistics
import sys

import tbd.analysis.recommend as model
from tbd.analysis.verify import _re_estimate_logged

# constant -> (the workloads it was fitted from, its value without them)
FITTED_FROM = {"K_NORM_CHANNELS_LAST_LOW_PRECISION": ({"resnet50"}, 1.0),
               "HOST_PER_SAMPLE_SHARE": ({"faster_rcnn"}, 0.0),
               "HOST_CORE_YIELD": ({"a3c"}, 1.0)}
FUSION_CUT_WITHOUT = {"gpt": 0.38, "transformer": 0.48}  # the cut the other of the two gives alone
# The log's parts, in order (docs/analysis.md): the first two tuning runs, the third, the fourth.
PARTS = (("first", 13), ("third", 17), ("fourth", 8))


def part_of(index: int) -> str:
    for name, size in PARTS:
        if index < size:
            return name
        index -= size
    return "later"


def gain_error_pct(expected: float, measured: float) -> float:
    return abs(expected - measured) / abs(measured) * 100


def throughput_error_pct(expected: float, measured: float) -> float:
    return abs((100 + expected) / (100 + measured) - 1) * 100


def held_out_estimate(row: dict) -> float:
    saved = {name: getattr(model, name) for name in [*FITTED_FROM, "FUSION_CUT"]}
    try:
        for name, (workloads, value) in FITTED_FROM.items():
            if row["workload"] in workloads:
                setattr(model, name, value)
        if row["workload"] in FUSION_CUT_WITHOUT:
            model.FUSION_CUT = FUSION_CUT_WITHOUT[row["workload"]]
        return _re_estimate_logged(row)
    finally:
        for name, value in saved.items():
            setattr(model, name, value)


def main(paths: list[str]) -> None:
    rows = [json.loads(line) for path in paths for line in open(path) if line.strip()]
    results = []  # (part, expected held out, measured)
    for i, row in enumerate(rows):
        part = part_of(i)
        expected, measured = held_out_estimate(row), row["measured_gain_pct"]
        results.append((part, expected, measured))
        print(f"{part} {row['workload']:12s} {row['action']:28s} held-out {expected:+7.1f} measured {measured:+7.1f} "
              f"error {gain_error_pct(expected, measured):5.0f}%")
    for part in (*(name for name, _ in PARTS), None):
        chosen = [r for r in results if part is None or r[0] == part]
        print(f"{part or 'all'} {len(chosen)} held-out median err {statistics.median(gain_error_pct(e, m) for _, e, m in chosen):.0f}%, "
              f"throughput {statistics.median(throughput_error_pct(e, m) for _, e, m in chosen):.0f}%")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: calibration_holdout.py LOG.jsonl [LOG.jsonl ...] (the calibration logs under docs/data/)")
    main(sys.argv[1:])
