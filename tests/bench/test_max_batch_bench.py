"""bench/max_batch_gpu.py keeps to its --budget: a `tbd memory` child still running when the budget
is spent is stopped with the probes it started (left running, they would hold GPU memory under the
next row), and its row says how far it got, from the child's log."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest


def test_a_row_past_the_budget_is_stopped_with_its_probes(tmp_path, monkeypatch, load_bench):
    bench = load_bench("max_batch_gpu")
    pid_file = tmp_path / "probe.pid"
    # Stands in for `python -m tbd.cli memory ...`: prints a line, starts a "probe" that would
    # outlive it, and waits far longer than the budget.
    fake = tmp_path / "fake_python"
    fake.write_text(f"#!/bin/sh\necho 'fitting batch 128'\nsleep 120 &\necho $! > {pid_file}\nsleep 120\n")
    fake.chmod(0o755)
    monkeypatch.setattr(bench.sys, "executable", str(fake))
    monkeypatch.setattr(bench, "MIN_ROW_S", 1.0)
    args = SimpleNamespace(out=str(tmp_path), fit=[], known=[], smoke=False, confirm_time=60.0)
    t0 = time.monotonic()
    row = bench.one_row("wgan", "bf16", args, dict(os.environ, TBD_HOME=str(tmp_path)), deadline=time.monotonic() + 1.5)
    assert time.monotonic() - t0 < 10
    assert row["rc"] is None and row["error"].startswith("stopped after") and "fitting batch 128" in row["error"]
    probe = int(pid_file.read_text())
    for _ in range(50):  # the killed probe may take a moment to be reaped by init
        try:
            os.kill(probe, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{probe}/stat").exists() and Path(f"/proc/{probe}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the probe {probe} is still running")


def test_a_row_stopped_mid_search_keeps_the_bracket_of_its_probe_lines(tmp_path, monkeypatch, load_bench):
    bench = load_bench("max_batch_gpu")
    log = ("fitting the batch-size model on batches 128, 256, 849 ...\n"
           "predicted largest batch that fits: 2724\n"
           "confirming with real training steps from batch 2724 (each probe a child process; at most 60 s) ...\n"
           "probe: batch 2724 out of memory (93.4 s)\n"
           "probe: batch 2669 fits (61.2 s)\n"
           "probe: batch 2565 fits (58.0 s)\n")
    assert bench.probed_bracket(log) == {
        "predicted": 2724, "confirmed": 2669, "first_failing": 2724,
        "probes": [{"batch_size": 2724, "outcome": "oom", "seconds": 93.4}, {"batch_size": 2669, "outcome": "fits", "seconds": 61.2},
                   {"batch_size": 2565, "outcome": "fits", "seconds": 58.0}]}
    assert bench.probed_bracket(log.split("probe:")[0]) == {}  # no probe ended: nothing to keep
    # answers given from an earlier search count in the bracket beside the probes
    given = bench.probed_bracket(log, {"fit": 2700, "oom": 2710})
    assert (given["confirmed"], given["first_failing"]) == (2700, 2710)

    # A child killed at the budget after two probes: its row has the bracket so far, and says
    # the search was stopped before it narrowed.
    fake = tmp_path / "fake_python"
    fake.write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for line in log.splitlines()[:5]) + "exec sleep 120\n")
    fake.chmod(0o755)
    monkeypatch.setattr(bench.sys, "executable", str(fake))
    monkeypatch.setattr(bench, "MIN_ROW_S", 1.0)
    args = SimpleNamespace(out=str(tmp_path), fit=[], known=[], smoke=False, confirm_time=60.0)
    row = bench.one_row("wgan", "bf16", args, dict(os.environ, TBD_HOME=str(tmp_path)), deadline=time.monotonic() + 1.5)
    assert row["rc"] is None and "error" not in row
    assert (row["predicted"], row["confirmed"], row["first_failing"], row["error_pct"]) == (2724, 2669, 2724, 2.06)
    assert "before the search narrowed to 2%" in row["stopped"]
    cells = bench.line(row, markdown=True).split(" | ")
    assert cells[4:6] == ["2669", "2724"] and cells[6].startswith("+2.1%; stopped after")


def test_known_answers_become_tbd_memory_options(load_bench):
    bench = load_bench("max_batch_gpu")
    assert bench.known_answers(["wgan/fp32=1627", "resnet50/bf16=3277:3408"]) == {
        ("wgan", "fp32"): {"fit": 1627}, ("resnet50", "bf16"): {"fit": 3277, "oom": 3408}}
    with pytest.raises(SystemExit, match="write it as W/P=FIT"):
        bench.known_answers(["wgan=1627"])


def test_confirm_only_rows_pass_it_on_and_keep_the_search_without_a_prediction(tmp_path, monkeypatch, load_bench):
    bench = load_bench("max_batch_gpu")
    argv_file, home = tmp_path / "argv", tmp_path / "home"
    (home / "memory").mkdir(parents=True)
    record = {"batch_model": {"fit_skipped": "--confirm-only: no fit", "confirmed": {
        "largest_fitting": 1692, "smallest_failing": 1725, "probes": [{"batch_size": 1725, "outcome": "oom", "seconds": 280.0}],
        "stopped": "bracket within 2%", "allocator_setting": "framework default"}}}
    (tmp_path / "record.json").write_text(json.dumps(record))
    # Stands in for `python -m tbd.cli memory ...`: keeps its arguments and stores a record as tbd would.
    fake = tmp_path / "fake_python"
    fake.write_text(f'#!/bin/sh\necho "$@" > {argv_file}\ncp {tmp_path / "record.json"} {home / "memory" / "r.json"}\n')
    fake.chmod(0o755)
    monkeypatch.setattr(bench.sys, "executable", str(fake))
    args = SimpleNamespace(out=str(tmp_path), fit=[], known=["wgan/fp32=1659"], smoke=False, confirm_time=500.0, confirm_only=True)
    row = bench.one_row("wgan", "fp32", args, dict(os.environ, TBD_HOME=str(home)), deadline=time.monotonic() + 30)
    assert "--known-fit 1659" in argv_file.read_text() and "--confirm-only" in argv_file.read_text()
    assert (row["predicted"], row["confirmed"], row["first_failing"]) == (None, 1692, 1725) and row["fit_skipped"]
    assert "error_pct" not in row and "1692" in bench.line(row)


def test_a_row_stopped_during_a_probe_says_how_long_that_probe_had_run(tmp_path, monkeypatch, load_bench):
    """A probe cut short has no verdict, but a probe that ran minutes past the point where the
    same batch failed under another setting says something: the row keeps its batch and time."""
    import datetime

    bench = load_bench("max_batch_gpu")
    started = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=300)).replace(microsecond=0)  # printed to the second
    from tbd.memory import render

    log = ("predicted largest batch that fits: 2478\n"
           "given from an earlier search: batch 1794 trains\n"
           f"{render.probe_start_line(2478, started)}\n")
    assert bench.in_flight(log, now=started + datetime.timedelta(seconds=412))["seconds"] == 412.0
    assert bench.in_flight(log + "probe: batch 2478 out of memory (141.8 s)\n") is None
    fake = tmp_path / "fake_python"
    fake.write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for line in log.splitlines()) + "exec sleep 120\n")
    fake.chmod(0o755)
    monkeypatch.setattr(bench.sys, "executable", str(fake))
    monkeypatch.setattr(bench, "MIN_ROW_S", 1.0)
    args = SimpleNamespace(out=str(tmp_path), fit=[], known=["wgan/fp32=1794"], smoke=False, confirm_time=60.0)
    row = bench.one_row("wgan", "fp32", args, dict(os.environ, TBD_HOME=str(tmp_path)), deadline=time.monotonic() + 1.5)
    assert row["rc"] is None and row["in_flight"]["batch_size"] == 2478 and 300 <= row["in_flight"]["seconds"] < 330
    assert "while batch 2478 had run 30" in row["error"]


def test_a_rerun_into_the_same_out_keeps_only_rows_of_the_same_settings(tmp_path, monkeypatch, capsys, load_bench):
    """Resuming keeps a row measured before only where it was measured under the same settings:
    the same row asked for under expandable segments, or with other given answers, is measured."""
    bench = load_bench("max_batch_gpu")
    measured = []

    def one_row(workload, precision, args, env, deadline):
        measured.append((workload, precision, args.expandable_segments))
        return {"workload": workload, "precision": precision, "settings": bench.row_settings(workload, precision, args),
                "predicted": 2478, "confirmed": 1794, "first_failing": 2478, "seconds": 1.0}

    monkeypatch.setattr(bench, "one_row", one_row)
    base = ["max_batch_gpu.py", "--out", str(tmp_path), "--home", str(tmp_path / "home"), "--workloads", "wgan", "--precisions", "fp32",
            "--known", "wgan/fp32=1794"]
    for extra in ([], [], ["--expandable-segments"], ["--known", "wgan/fp32=1794:2478"]):
        monkeypatch.setattr(bench.sys, "argv", base + extra)
        bench.main()
    assert measured == [("wgan", "fp32", False), ("wgan", "fp32", True), ("wgan", "fp32", False)]
    assert "wgan fp32: kept from" in capsys.readouterr().out
    rows = json.loads((tmp_path / "max_batch_gpu.json").read_text())["rows"]
    assert [r["settings"]["expandable_segments"] for r in rows] == [False, True, False]
    assert rows[2]["settings"]["known"] == {"fit": 1794, "oom": 2478}


def test_the_search_simulation_prints_both_searches_and_the_replay(capsys, load_bench):
    sim = load_bench("max_batch_search_sim")
    sim.simulate()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 0 samples")]
    exact = rows[0].split("|")
    assert float(exact[2].split()[0].replace(",", "")) < float(exact[3].split()[0].replace(",", ""))  # an exact shortfall saves time
    sim.replay(Path(__file__).resolve().parents[2] / "docs" / "data")
    assert "| transformer fp32 | 143,528 | 1.24 GiB | 142,241 |" in capsys.readouterr().out


def test_a_failing_probes_shortfall_places_the_next_probe(load_bench):
    from tbd.memory import max_batch

    sim = load_bench("max_batch_search_sim")
    per_sample = 57.2 * 2**20  # wgan fp32's line on an H200, with its headroom
    # 1794 known to train, the prediction 2478 fails lacking 178 samples' worth: the next probe is
    # there, and where it fits, 2% above it closes the bracket. Bisection took five probes, three fitting.
    calls: list[int] = []
    result = max_batch.search(sim.device(2300, 0, calls, per_sample), 2478, predicted=2478, known={1794: max_batch.FITS},
                              bytes_per_sample=per_sample)
    assert calls == [2478, 2300, 2346] and (result.largest_fitting, result.smallest_failing) == (2300, 2346)
    plain: list[int] = []
    max_batch.search(sim.device(2300, 0, plain, per_sample), 2478, predicted=2478, known={1794: max_batch.FITS})
    assert len(plain) == 5 and sum(b <= 2300 for b in plain) == 3
    # with no fit known, the walk down from a failing prediction jumps by the shortfall (gpt: 171 predicted, 136 trains)
    calls = []
    result = max_batch.search(sim.device(136, 0, calls, 2**30), 171, predicted=171, bytes_per_sample=2**30)
    assert calls == [171, 136, 138] and (result.largest_fitting, result.smallest_failing) == (136, 138)


@pytest.mark.parametrize("unseen_samples", [0, 20, 150, 600])
@pytest.mark.parametrize("true_max", [1800, 2100, 2440])
def test_a_shortfall_that_understates_the_need_still_brackets_the_boundary(true_max, unseen_samples, load_bench):
    from tbd.memory import max_batch

    sim = load_bench("max_batch_search_sim")
    per_sample = 57.2 * 2**20
    calls: list[int] = []
    result = max_batch.search(sim.device(true_max, unseen_samples, calls, per_sample), 2478, predicted=2478,
                              known={1794: max_batch.FITS}, bytes_per_sample=per_sample)
    fits, fails = result.largest_fitting, result.smallest_failing
    assert fits <= true_max < fails and fails - fits <= 0.02 * fits and result.stopped == "bracket within 2%"
    assert len(calls) == len(set(calls)) <= 10
    # a message without figures (or no line to read it with) leaves the plain bisection
    with_line, without = [], []
    max_batch.search(lambda b: with_line.append(b) or (max_batch.FITS if b <= true_max else max_batch.OOM), 2478, predicted=2478,
                     known={1794: max_batch.FITS}, bytes_per_sample=per_sample)
    max_batch.search(sim.device(true_max, unseen_samples, without, per_sample), 2478, predicted=2478, known={1794: max_batch.FITS})
    assert with_line == without
