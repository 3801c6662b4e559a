"""Leave one workload out on a calibration log (CPU, < 5 s): the time-model constants fitted from a workload's own pairs
take the value the other pairs give. `PYTHONPATH=src python3 bench/calibration_holdout.py docs/data/calibration_2026-11-29_h200_all.jsonl`."""
import json
import statistics
import sys
import tbd.analysis.recommend as R
from tbd.analysis.verify import _re_estimate_logged
rows = [json.loads(line) for line in open(sys.argv[1])]
# constant -> (workloads it came from, value without them)
HELD = {"K_NORM_CHANNELS_LAST_LOW_PRECISION": ({"resnet50"}, 1.0),
        "HOST_PER_SAMPLE_SHARE": ({"faster_rcnn"}, 0.0),
        "HOST_CORE_YIELD": ({"a3c"}, 1.0)}
FUSION_WITHOUT = {"gpt": 0.38, "transformer": 0.48}  # the cut the other one alone gives
def err(e, m): return abs(e - m) / abs(m) * 100
def terr(e, m): return abs((100 + e) / (100 + m) - 1) * 100
res = []
for i, r in enumerate(rows):
    saved = {k: getattr(R, k) for k in list(HELD) + ["FUSION_CUT"]}
    for k, (ws, v) in HELD.items():
        if r["workload"] in ws:
            setattr(R, k, v)
    if r["workload"] in FUSION_WITHOUT:
        R.FUSION_CUT = FUSION_WITHOUT[r["workload"]]
    n = _re_estimate_logged(r)
    for k, v in saved.items():
        setattr(R, k, v)
    res.append(("old" if i < 13 else "new", r["workload"], r["action"], n, r["measured_gain_pct"]))
    measured = r["measured_gain_pct"]
    print(f"{res[-1][0]} {r['workload']:12s} {r['action']:28s} held-out {n:+7.1f} measured {measured:+7.1f} error {err(n, measured):5.0f}%")
for part in ("old", "new", None):
    xs = [x for x in res if part is None or x[0] == part]
    print(part or "all", len(xs), "held-out median err %.0f%%, throughput %.0f%%" % (
        statistics.median(err(x[3], x[4]) for x in xs), statistics.median(terr(x[3], x[4]) for x in xs)))
