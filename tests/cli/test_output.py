"""Output that fits a terminal: widths (80/120, $COLUMNS, --wide), --json listings, --version, a
closed pipe, help texts that match behaviour, and the demo's choice of precision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "sweep"))
from sweep_fakes import fake_record  # noqa: E402

from tbd.cli import main  # noqa: E402
from tbd.config import RunConfig  # noqa: E402
from tbd.results.store import Store  # noqa: E402


@pytest.fixture
def stored(tbd_home):
    """Runs of every status, including a distributed run and a memory profile."""
    store = Store()
    records = []
    for i, (workload, batch, status) in enumerate([("resnet50", 2, "ok"), ("resnet50", 4, "unconverged"), ("inception_v3", 8, "insufficient"),
                                                   ("resnet50", 64, "failed"), ("gpt", 2, "ok")]):
        r = fake_record(RunConfig(workload, batch_size=batch, nproc_per_node=2 if i == 4 else 1), oom_above=32, seed=i)
        if status != "failed":
            r["status"] = status
            r["method"] = {"convergence": {"status": status, "reason": f"reason {i}"}}
        if status == "insufficient":
            r["metrics"]["throughput_ci95_half_width_pct"] = None
        r["id"] = f"20261129-0101{i:02d}-abcde{i}"
        store.save(r)
        records.append(r)
    memory = fake_record(RunConfig("resnet50", batch_size=16), seed=9)
    memory["kind"], memory["metrics"], memory["id"] = "memory", {}, "20261129-010110-fffff0"
    store.save(memory)
    return records


@pytest.mark.parametrize("columns", [80, 120])
def test_results_fit_the_width(stored, capsys, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["results"]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("2026")]
    assert len(table) == 6 and all(len(line) <= columns for line in table)  # one line per run, no folding
    assert "20261129-010100 " in out and "abcde0" not in out  # short ids, unique among those listed
    assert "no CI" in out and "±0.0%" not in out and "unconverged" in out and "insufficient" in out
    assert "resnet50/torch x2" not in out and "gpt/torch x2" in out
    [memory_row] = [line for line in table if line.startswith("20261129-010110")]
    assert "memory" in memory_row  # a memory profile, not a run without a throughput
    assert "oom" in out  # the failed run's kind, its message below the table


def test_wide_shows_everything_and_json_lists(stored, capsys):
    assert main(["results", "--wide"]) == 0
    out = capsys.readouterr().out
    assert "20261129-010100-abcde0" in out and "flavor" in out and "device" in out
    assert main(["results", "--json", "--limit", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and {"id", "status", "throughput", "unit", "ci_pct", "converged"} <= set(rows[0])


@pytest.mark.parametrize("columns", [80, 120])
def test_channels_last_and_compile_are_marked_in_the_run_label(tbd_home, capsys, monkeypatch, columns):
    """Runs that differ only in --channels-last (or --compile) must not look the same (docs/output.md)."""
    monkeypatch.setenv("COLUMNS", str(columns))
    for i, flags in enumerate(({}, {"channels_last": True}, {"compile": True, "channels_last": True})):
        r = fake_record(RunConfig("resnet50", batch_size=4, **flags), seed=i)
        r["id"] = f"20261129-0101{i:02d}-abcde{i}"
        Store().save(r)
    for argv in (["results"], ["results", "--wide"]):
        assert main(argv) == 0
        rows = {line.split()[0][:15]: line for line in capsys.readouterr().out.splitlines() if line.startswith("2026")}
        assert "+c" not in rows["20261129-010100"] and "resnet50/torch +cl " in rows["20261129-010101"]
        assert "resnet50/torch +c +cl " in rows["20261129-010102"]
    assert main(["export", "--format", "markdown"]) == 0
    assert "| resnet50/torch +compile +channels_last |" in capsys.readouterr().out


def test_version_and_closed_pipe(stored, tbd_home):
    env = {**os.environ, "TBD_HOME": str(tbd_home), "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-m", "tbd.cli", "--version"], capture_output=True, text=True, env=env)
    assert out.stdout.startswith("tbd ") and out.returncode == 0
    piped = subprocess.run(f"'{sys.executable}' -m tbd.cli results show {stored[0]['id']} --json | head -3", shell=True,
                           capture_output=True, text=True, env=env)
    assert piped.stdout.count("\n") == 3 and "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr


def test_help_texts_match_behaviour(capsys):
    for argv, words in ((["export", "--help"], ("parquet", "markdown")), (["scale", "--help"], ("batch per process",)),
                        (["run", "--help"], ("1.3b", "350m", "paper", "tiny", "compilation"))):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split()).lower()
        assert all(w in text for w in words), (argv, words)


def test_demo_picks_a_precision_each_workload_supports(monkeypatch):
    from tbd.commands.demo import demo_config
    from tbd.metrics import devices

    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    assert demo_config("a3c", "torch", "paper", "cuda", 5).precision == "tf32"  # a3c refuses bf16
    assert demo_config("resnet50", "torch", "paper", "cuda", 5).precision == "bf16"
    assert demo_config("resnet50", "torch", "tiny", "cpu", 5).precision == "fp32"


def test_demo_names_the_extra_that_installs_a_missing_framework(tbd_home, capsys, monkeypatch):
    # "pip install 'tbd[tf]'" printed through rich lost its "[tf]" as a markup tag
    from tbd import registry

    monkeypatch.setattr(registry, "workload_names", lambda: ["resnet50"])
    monkeypatch.setattr(registry, "implementations", lambda workload: ["tf"])
    monkeypatch.setattr(registry, "is_installed", lambda framework: False)
    main(["demo", "--device", "cpu"])
    assert "skipping resnet50/tf: tf is not installed (pip install 'tbd[tf]')" in capsys.readouterr().out


def test_list_json_and_no_color(capsys, monkeypatch):
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    a3c = next(w for w in data["workloads"] if w["name"] == "a3c")
    assert "bf16" not in a3c["precisions"] and {"torch"} <= set(a3c["frameworks"]) and data["frameworks"]
    from tbd.report.tables import make_console

    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")
    console = make_console()
    with console.capture() as cap:
        console.print("[red]failed[/]")
    assert "\x1b[31m" not in cap.get() and "failed" in cap.get()
