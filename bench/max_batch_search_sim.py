"""What a failing probe's shortfall saves the max-batch search (CPU, a few seconds):

    PYTHONPATH=src python3 bench/max_batch_search_sim.py

1. Simulation: wgan fp32's bracket on an H200 (1,794 trains, the prediction 2,478 fails), every
   true boundary from 1,800 to 2,470, a fitting probe 360 s and a failing one 140 s (the sixth
   set's figures), memory linear at 57.2 MiB a sample. The failing probe's message says what it
   lacked, short by 0 to 600 samples' worth (allocations later in the step it never reached).
   Seconds of probes to a 2% bracket, with the shortfall (`bytes_per_sample` given) and without
   (plain bisection).
2. Replay: every failing probe with the allocator's figures in docs/data/max_batch_*.json, where
   its row's line is known: the batch its shortfall points to (the failing batch less what it
   lacked, in samples of the line), against the row's final bracket (trains / fails / between:
   not known). A batch that fails means the message understated the need.
"""

from __future__ import annotations

import glob
import json
import math
import statistics
from pathlib import Path

from tbd.memory import max_batch

FIT_S, OOM_S = 360.0, 140.0
PER_SAMPLE = 57.2 * 2**20
KNOWN_FIT, PREDICTED = 1794, 2478


def device(true_max: int, unseen_samples: int, calls: list[int], bytes_per_sample: float = PER_SAMPLE):
    """A probe of a device where memory grows by `bytes_per_sample` a sample (the calls kept in
    `calls`): a failing probe says what it lacked as PyTorch does (tried to allocate, free),
    short by `unseen_samples` where later allocations of the step would have needed more."""
    def probe(batch: int):
        calls.append(batch)
        if batch <= true_max:
            return max_batch.FITS
        lacked = max(1, batch - true_max - unseen_samples) * bytes_per_sample
        return max_batch.OOM, f"tried to allocate {(lacked + 2**30) / 2**20:.2f} MiB, 1024.00 MiB free"
    return probe


def seconds(calls: list[int], true_max: int) -> float:
    return sum(FIT_S if b <= true_max else OOM_S for b in calls)


def simulate() -> None:
    print("| shortfall understated by | with it: mean s (max) | bisection: mean s (max) |")
    print("|---|---|---|")
    for unseen in (0, 20, 75, 150, 600):
        guided, plain = [], []
        for true_max in range(1800, 2471, 7):
            calls: list[int] = []
            max_batch.search(device(true_max, unseen, calls), PREDICTED, predicted=PREDICTED,
                             known={KNOWN_FIT: max_batch.FITS}, bytes_per_sample=PER_SAMPLE)
            guided.append(seconds(calls, true_max))
            calls = []
            max_batch.search(device(true_max, unseen, calls), PREDICTED, predicted=PREDICTED, known={KNOWN_FIT: max_batch.FITS})
            plain.append(seconds(calls, true_max))
        print(f"| {unseen} samples ({unseen * PER_SAMPLE / 2**30:.1f} GiB) | {statistics.mean(guided):,.0f} ({max(guided):,.0f}) "
              f"| {statistics.mean(plain):,.0f} ({max(plain):,.0f}) |")


def replay(folder: Path) -> None:
    print("\n| file | row | failing probe | lacked | the batch it points to | the row's bracket | that batch |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted(glob.glob(str(folder / "max_batch_*.json"))):
        data = json.loads(Path(path).read_text())
        for row in data.get("rows", []) if isinstance(data, dict) else []:
            per_sample = (row.get("per_sample_bytes") or 0) + (row.get("headroom_per_sample_bytes") or 0)
            fits, fails = row.get("confirmed"), row.get("first_failing")
            for probe in row.get("probes") or []:
                facts = max_batch.oom_facts(probe.get("error", ""))
                if probe["outcome"] != max_batch.OOM or not per_sample or not {"tried", "free"} <= facts.keys():
                    continue
                batch, lacked = probe["batch_size"], max(0, facts["tried"] - facts["free"])
                nxt = batch - math.ceil(lacked / per_sample)
                verdict = "trains" if fits and nxt <= fits else "fails" if fails and nxt >= fails else "not known"
                print(f"| {Path(path).name} | {row['workload']} {row['precision']} | {batch:,} | {lacked / 2**30:.2f} GiB | {nxt:,} "
                      f"| {fits:,} / {fails:,} | {verdict} |")


if __name__ == "__main__":
    simulate()
    replay(Path(__file__).resolve().parent.parent / "docs" / "data")
