"""`tbd tune` on the CPU, for real: trials in child processes through the harness, a stored
record of kind 'tune', the Markdown trail and the report section. One short tuning (tiny gpt,
the batch-size lever only, a small budget) and the input errors, which run nothing."""

from __future__ import annotations

import json

import pytest

from tbd.cli import main
from tbd.results.store import Store


def test_tune_measures_stores_and_reports(tbd_home, tmp_path, capsys):
    markdown = tmp_path / "tune.md"
    code = main(["tune", "gpt", "--flavor", "tiny", "--device", "cpu", "--budget", "25s", "--max-time", "0.5", "--max-steps", "12",
                 "--no-profile", "--skip", "precision,compile", "--skip", "optimizer", "--skip", "threads",
                 "--markdown", str(markdown), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    baseline = out["trail"][0]
    assert baseline["kept"] and baseline["throughput"] > 0 and out["baseline_throughput"] == baseline["throughput"]
    assert all(t["lever"] == "batch_size" for t in out["trail"][1:])  # the only lever left
    assert out["left_out"]["compile"] == "--skip" and out["command"].startswith("tbd run gpt --framework torch --flavor tiny --device cpu")
    store = Store(tbd_home)
    record = store.get(out["id"])
    assert record["kind"] == "tune" and record["config"] == out["best_config"] and record["method"]["tune"]["budget_s"] == 25.0
    assert store.get(baseline["run_id"])["kind"] == "run"  # each trial is a stored run
    text = markdown.read_text()
    assert "| # | change | expected gain | measured gain [95% CI] |" in text and "```sh\ntbd run gpt" in text
    from tbd.commands.report import gather_sides
    from tbd.report.html import write_report

    _, _, records, _ = gather_sides(store, [out["id"]])
    assert baseline["run_id"] in {r["id"] for r in records}  # the report of a tuning brings its trials
    page = write_report(records, tmp_path / "report.html", "tune").read_text()
    assert "Tuning (tbd tune)" in page and "measured gain [95% CI]" in page and "<pre>tbd run gpt" in page
    assert "throughput after each kept change" in page  # the waterfall figure


@pytest.mark.parametrize("argv,message", [
    (["--budget", "soon"], "--budget takes a time like 10m"),
    (["--skip", "batch"], "--skip batch: no such lever (did you mean: batch_size"),
    (["--in-process"], "runs each trial in its own process"),
    (["--option", "optimizer=fast"], "optimizer=fast is not one of auto, fused, foreach, for-loop"),
    (["--markdown", "tune.txt"], "--markdown should name a .md file"),
])
def test_tune_input_errors_are_one_line_and_run_nothing(argv, message, tbd_home, capsys):
    assert main(["tune", "gpt", "--flavor", "tiny", "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not Store(tbd_home).list()
