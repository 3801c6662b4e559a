"""Hostile and broken input: non-finite and huge numbers, names that look like markup or are
huge, sweep files that are not text or nest too deeply, outputs that are folders, a memory record
in a report, the same sweep started twice at once."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest
from faults_kit import cli, one_error_line, stored_runs
from sweep_fakes import FakeLauncher, fake_record

from tbd import cli as tbd_cli
from tbd.config import RunConfig
from tbd.errors import UsageError
from tbd.results.store import Store

SWEEP = ["sweep", "--workloads", "resnet50", "--frameworks", "torch", "--devices", "cpu", "--batch-sizes", "2"]


def _main(args: list[str]) -> int:
    """`tbd ARGS` in this process; argparse's own errors exit through SystemExit."""
    try:
        return tbd_cli.main(args)
    except SystemExit as exc:
        return int(exc.code)


def _flat(text: str) -> str:
    """Text without spaces, line breaks and table borders: what a table cell says, however folded."""
    return "".join(ch for ch in text if not ch.isspace() and ch not in "│┃")


# ---- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    [*SWEEP, "--max-time", "nan", "--dry-run"], [*SWEEP, "--max-time", "inf", "--dry-run"], [*SWEEP, "--target-ci", "nan", "--dry-run"],
    ["run", "resnet50", "--device", "cpu", "--target-ci", "nan"],
    ["demo", "--max-time", "nan"],
    [*SWEEP, "--seed", str(10**20), "--dry-run"], ["run", "resnet50", "--device", "cpu", "--seed", str(10**20)],
    ["run", "resnet50", "--device", "cpu", "--seed", "-1"],
    ["results", "--limit", "-5"], ["results", "--limit", "0"], ["report", "--limit", "-1"],
])
def test_non_finite_huge_and_negative_numbers_are_refused(args, tbd_home, launches, capsys):
    assert _main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tbd: error:"), err
    flag = [a for a in args if a.startswith("--") and a not in ("--device", "--workloads", "--frameworks", "--devices", "--batch-sizes", "--dry-run")][0]
    assert f"argument {flag}:" in err  # the line names the option to fix
    assert launches == [] and not (tbd_home / "runs").exists()


def test_a_huge_seed_is_refused_by_the_config_itself():
    with pytest.raises(UsageError, match="seed"):
        RunConfig(workload="resnet50", device="cpu", seed=10**20).validated()


@pytest.mark.parametrize("line,key", [("max_time = nan", "budget.max_time"), ("max_time = inf", "budget.max_time"),
                                      ("target_ci = nan", "budget.target_ci"), ("seed = 100000000000000000000", "budget.seed"),
                                      ("seed = -1", "budget.seed")])
def test_non_finite_and_huge_numbers_in_a_sweep_file_name_the_key(line, key, tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(f'name = "s"\nworkloads = ["resnet50"]\nframeworks = ["torch"]\ndevices = ["cpu"]\n[budget]\n{line}\n')
    err = one_error_line(cli("sweep", "--file", str(f), "--dry-run"))
    assert f"s.toml:6: key '{key}'" in err


def test_stored_records_and_exports_are_strict_json(tbd_home):
    record = fake_record(RunConfig("resnet50", device="cpu", batch_size=4))
    record["metrics"]["throughput_ci95_half_width_pct"] = float("nan")
    record["metrics"]["images_per_s_ci95_high"] = float("inf")
    Store().save(record)

    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the output: not strict JSON"))

    strict((tbd_home / "runs" / f"{record['id']}.json").read_text())
    out = cli("export", "--format", "json")
    assert out.returncode == 0, out.stderr
    [row] = strict(out.stdout)
    assert row["metrics"]["throughput_ci95_half_width_pct"] is None and row["metrics"]["images_per_s_ci95_high"] is None


# ---- names --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x[/]", "[blink red]boo[/blink red]", "a\\[b]", "[/]"])
def test_names_that_look_like_markup_are_printed_as_they_are(name, tbd_home, launches, capsys):
    assert tbd_cli.main([*SWEEP, "--name", name, "--dry-run"]) == 0
    assert f"sweep {name} (id" in capsys.readouterr().out
    assert tbd_cli.main([*SWEEP, "--name", name]) == 0
    out = capsys.readouterr().out
    assert f"sweep {name}:" in out and f"next: tbd report {name}" in out


def test_a_home_that_looks_like_markup_works(tmp_path, launches, monkeypatch, capsys):
    home = tmp_path / "x[/]home[bold]"
    monkeypatch.setenv("TBD_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "400")  # the path unwrapped, however long pytest's tmp path is
    assert tbd_cli.main(["run", "resnet50", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"in {home} ('tbd results show" in out.replace("\n", "")
    assert tbd_cli.main(["results"]) == 0
    assert str(home) in capsys.readouterr().out.replace("\n", "")


def test_stored_strings_that_look_like_markup_are_printed_as_they_are(tbd_home, capsys, monkeypatch):
    from rich.console import Console

    import tbd.commands.results

    monkeypatch.setattr(tbd.commands.results, "make_console", lambda wide=False: Console(width=600))  # no cell folds
    record = fake_record(RunConfig("resnet50", device="cpu", batch_size=4))
    record["config"].update(flavor="[blink red]paper", precision="[bold]fp32[/bold]")  # e.g. a plugin's own names
    record["status"] = "failed"
    record["error"] = {"kind": "error", "message": "[enforce fail at alloc.cpp:1] [/] [blink]x"}
    Store().save(record)
    assert tbd_cli.main(["results"]) == 0
    out = _flat(capsys.readouterr().out)
    for text in ("[enforce fail at alloc.cpp:1] [/] [blink]x", "[blink red]paper", "[bold]fp32[/bold]"):
        assert _flat(text) in out


@pytest.mark.parametrize("length", [10_000, 100_000])
def test_a_huge_name_is_refused_at_once(length):
    started = time.monotonic()
    err = one_error_line(cli(*SWEEP, "--name", "n" * length, "--dry-run"))
    assert f"{length:,} characters long" in err and "at most 200" in err
    assert time.monotonic() - started < 30  # refused, not printed (that took minutes)


def test_a_huge_sweep_file_is_refused_at_once(tmp_path):
    f = tmp_path / "big.toml"
    f.write_text('name = "' + "n" * 10_000_000 + '"\nworkloads = ["resnet50"]\n')
    started = time.monotonic()
    err = one_error_line(cli("sweep", "--file", str(f), "--dry-run"))
    assert "a sweep file is a few lines of TOML" in err and time.monotonic() - started < 30


# ---- sweep files and outputs --------------------------------------------------------------


@pytest.mark.parametrize("content,words", [
    ('name = "caf\xe9"\n'.encode("latin-1"), "not UTF-8"),
    (bytes(range(256)) * 4, "not UTF-8"),
    (("a = " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nested too deeply"),
])
def test_sweep_files_that_cannot_be_read_are_one_line(content, words, tmp_path):
    f = tmp_path / "s.toml"
    f.write_bytes(content)
    assert words in one_error_line(cli("sweep", "--file", str(f), "--dry-run"))


def test_outputs_that_are_folders_or_nowhere_are_one_line(tbd_home, tmp_path):
    stored_runs(tbd_home)
    store = Store()
    store.save_sweep("id-s1", "s1", {})
    with sqlite3.connect(tbd_home / "tbd.sqlite") as conn:
        conn.execute("UPDATE runs SET sweep = 'id-s1'")
    assert "is a folder" in one_error_line(cli("export", "-o", str(tmp_path)))
    assert "does not exist" in one_error_line(cli("export", "--format", "parquet", "-o", "/nonexistent/x.parquet"))
    assert "is a folder" in one_error_line(cli("compare", "--save-baseline", str(tmp_path), "s1"))
    assert "does not exist" in one_error_line(cli("report", "-o", "/nonexistent/r.html"))


# ---- reports, tables, sweeps ---------------------------------------------------------------


@pytest.mark.slow
def test_report_with_a_memory_record(tbd_home, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert tbd_cli.main(["memory", "gpt", "--device", "cpu", "--batch-size", "1"]) == 0
    stored_runs(tbd_home)
    memory_id = next(r["id"] for r in Store().list() if r.get("kind") == "memory")  # (ids stored in one second sort randomly)
    for targets in ([], [memory_id]):  # the newest runs (the memory record among them), or it alone
        assert tbd_cli.main(["report", *targets, "--output", str(tmp_path / "r.html")]) == 0, capsys.readouterr().err
    assert "gpt" in (tmp_path / "r.html").read_text()


def test_a_skipped_point_says_skipped_once(tbd_home, monkeypatch, capsys):
    import tbd.harness.launcher

    monkeypatch.setattr(tbd.harness.launcher, "launch", FakeLauncher(oom_above=4))
    assert tbd_cli.main(["sweep", "--workloads", "resnet50", "--frameworks", "torch", "--devices", "cpu", "--batch-sizes", "4,8,16"]) == 0
    old = fake_record(RunConfig("resnet50", device="cpu", batch_size=32))  # as older tbd stored it
    old.update(status="skipped", error={"kind": "skipped", "message": "skipped: batch 8 of this line ran out of memory"})
    Store().save(old)
    capsys.readouterr()
    assert tbd_cli.main(["results"]) == 0
    out = capsys.readouterr().out
    assert _flat("skipped: batch 8 of this line ran out of memory") in _flat(out) and _flat("skipped: skipped") not in _flat(out)


def _plan(name="twice"):
    from tbd.sweep import spec as sweep_spec

    spec = sweep_spec.SweepSpec(name=name, workloads=["resnet50"], frameworks=["torch"], devices=["cpu"], precisions=["fp32", "bf16"],
                                batch_sizes=[2, 4])
    return sweep_spec.plan(spec)


def test_the_same_sweep_started_twice_at_once_runs_each_point_once(tbd_home):
    from tbd.sweep.engine import SweepRunner

    plan = _plan()
    calls: list[tuple] = []

    def slow_launch(config, progress=None):
        calls.append((config.precision, config.batch_size))
        time.sleep(0.3)
        return fake_record(config)

    runners = [SweepRunner(plan, Store(), launch=slow_launch) for _ in range(2)]
    for r in runners:
        r.poll_s = 0.1
    threads = [threading.Thread(target=r.run) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(calls) == sorted(set(calls)) and len(calls) == plan.num_points == 4  # every point once
    assert len(Store().list(sweep=plan.sweep_id)) == 4
    assert all(r.result.ran > 0 for r in runners)  # the work was shared
    assert all(len(r.result.records) == 4 for r in runners)  # each runner ends with the whole sweep


def test_a_line_claimed_by_a_runner_that_died_is_taken_over(tbd_home):
    from tbd.sweep.engine import SweepRunner

    plan = _plan("orphaned")
    store = Store()
    store.save_sweep(plan.sweep_id, plan.name, {})
    import socket

    with sqlite3.connect(tbd_home / "tbd.sqlite") as conn:  # a runner that was killed while holding every line
        for line in plan.lines:
            conn.execute("INSERT INTO claims VALUES (?, ?, 'dead', ?, 999999, 1.0, ?)", (plan.sweep_id, line.label, socket.gethostname(), time.time()))
    launch = FakeLauncher()
    result = SweepRunner(plan, store, launch=launch).run()
    assert result.ran == 4 and len(launch.calls) == 4
