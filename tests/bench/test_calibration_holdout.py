"""bench/calibration_holdout.py reads the calibration logs under docs/data as one, in the order
given, and leaves each workload's own fitted constants out of its pairs' estimates."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "docs" / "data"
LOGS = ["calibration_2026-11-29_h200_all.jsonl", "calibration_2026-11-30_h200.jsonl", "calibration_2026-11-30b_h200.jsonl",
        "calibration_2026-11-30c_h200.jsonl", "calibration_2026-11-30d_h200.jsonl"]


def test_the_logs_given_together_read_as_their_concatenation(tmp_path, capsys, load_bench):
    holdout = load_bench("calibration_holdout")
    joined = tmp_path / "all.jsonl"
    joined.write_text("".join((DATA / name).read_text() for name in LOGS))
    holdout.main([str(DATA / name) for name in LOGS])
    separate = capsys.readouterr().out
    holdout.main([str(joined)])
    assert capsys.readouterr().out == separate
    assert separate.splitlines()[-1].startswith("all 51 held-out median err")
    # held out: resnet50's channels_last pair loses the constant fitted from resnet50 (estimate
    # +72% in sample, +15% without it); gpt's bf16 pair, which no fitted constant touches, is unchanged
    from tbd.analysis.verify import _re_estimate_logged

    rows = [json.loads(line) for line in (DATA / LOGS[0]).read_text().splitlines()]
    channels_last = next(r for r in rows if r["workload"] == "resnet50" and r["action"].startswith("channels_last"))
    assert holdout.held_out_estimate(channels_last) < 0.5 * _re_estimate_logged(channels_last)
    bf16 = next(r for r in rows if r["workload"] == "gpt" and r["action"].startswith("precision"))
    assert holdout.held_out_estimate(bf16) == _re_estimate_logged(bf16)
