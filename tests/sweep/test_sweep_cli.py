"""`tbd sweep` end to end: a real tiny sweep, bad files, and a sweep killed mid-point that resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tbd.cli import main
from tbd.results.store import Store

HERE = Path(__file__).parent


def test_real_tiny_sweep_then_report_export_and_compare(tbd_home, tmp_path, capsys):
    argv = ["sweep", "--workloads", "resnet50", "--frameworks", "torch", "--devices", "cpu", "--batch-sizes", "2",
            "--max-steps", "2", "--in-process", "--name", "e2e"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "sweep e2e" in out and "1 run, 0 already done" in out
    [record] = Store().list()
    # two steps leave one timed step: a throughput, but no CI (status insufficient, never "±0.0%")
    assert record["status"] == "insufficient" and record["sweep"]["name"] == "e2e" and record["config"]["batch_size"] == 2
    assert main(argv) == 0 and "0 run, 1 already done" in capsys.readouterr().out  # resumed, nothing reran
    html = tmp_path / "r.html"
    assert main(["report", "e2e", "--output", str(html)]) == 0
    assert str(html.resolve()) in capsys.readouterr().out and "throughput_vs_batch" in html.read_text()
    csv = tmp_path / "e2e.csv"
    assert main(["export", "--sweep", "e2e", "--output", str(csv)]) == 0
    assert csv.read_text().count("\n") == 2  # header + the one run
    assert main(["compare", "e2e", record["id"], "--fail-if-slower", "5"]) == 0  # a run against itself: ratio 1
    assert "no point of B is more than 5% slower" in capsys.readouterr().out
    # the ratio from the JSON form: the table's columns fold on a narrow console (80 here, no terminal)
    assert main(["compare", "e2e", record["id"], "--json"]) == 0
    [pair] = json.loads(capsys.readouterr().out)["pairs"]
    assert pair["ratio"] == 1.0 and pair["a_id"] == pair["b_id"] == record["id"]


def test_bad_sweep_file_is_one_line_exit_2(tbd_home, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('workloads = ["resnet50"]\nbatch_size = [4]\n')
    assert main(["sweep", "--file", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tbd: error: {bad}:2: key 'batch_size' is unknown (did you mean: batch_sizes") and "valid keys: name" in err
    assert "\n" not in err
    assert main(["sweep", "--file", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read sweep file" in capsys.readouterr().err


def test_a_misspelled_axis_value_is_one_line_exit_2_before_anything_runs(tbd_home, capsys):
    for flag, value in (("--precisions", "fp32,fp46"), ("--devices", "cpu,tpu"), ("--flavors", "tiny,tinyy")):
        assert main(["sweep", "--workloads", "gpt", "--frameworks", "torch", "--devices", "cpu", flag, value]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("tbd: error: unknown ") and "; valid: " in err and err.count("\n") == 1
    assert Store().sweeps() == [] and Store().list() == []


def test_max_batch_probes_say_whether_they_fit_and_the_bound_is_not_a_memory_limit(tbd_home, capsys, monkeypatch):
    """A probe's few steps say whether a batch fits, not how fast it trains: no throughput on its
    line; where --max-batch stopped the search, the answer says so."""
    from sweep_fakes import FakeLauncher

    from tbd.harness import launcher

    monkeypatch.setattr(launcher, "launch", FakeLauncher(oom_above=20))
    argv = ["sweep", "--workloads", "resnet50", "--frameworks", "torch", "--devices", "cpu", "--batch-sizes", "4", "--in-process"]
    assert main([*argv, "--max-batch", "64", "--name", "oom"]) == 0
    out = capsys.readouterr().out
    assert "batch 8 (max-batch probe): fits (peak 1.0 GiB)" in out and "batch 32 (max-batch probe): oom: out of memory" in out
    assert "images/s" not in out and "largest batch that fits, resnet50/torch/tiny cpu fp32: 20\n" in out
    monkeypatch.setattr(launcher, "launch", FakeLauncher())
    assert main([*argv, "--max-batch", "16", "--name", "bound"]) == 0
    out = capsys.readouterr().out
    assert "largest batch that fits, resnet50/torch/tiny cpu fp32: 16 or more (bounded by --max-batch 16)" in out and "images/s" not in out


# A sweep in a child interpreter whose launcher is a slow fake, so it can be killed mid-point.
CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {here!r})
    from sweep_fakes import FakeLauncher
    import tbd.harness.launcher as launcher

    class Slow(FakeLauncher):
        def __call__(self, config, progress=None):
            time.sleep({delay})
            return super().__call__(config, progress)

    launcher.launch = Slow()
    from tbd.cli import main
    sys.exit(main(["sweep", "--workloads", "resnet50", "--frameworks", "torch", "--devices", "cpu",
                   "--batch-sizes", "2,3,4,5", "--name", "killme"]))
""")


def _child(delay: float) -> subprocess.Popen:
    code = CHILD.format(here=str(HERE), delay=delay)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})


def test_killed_sweep_keeps_finished_points_and_resumes(tbd_home):
    child = _child(delay=1.5)
    deadline = time.monotonic() + 60
    try:
        while not Store().list() and time.monotonic() < deadline:
            assert child.poll() is None, child.stdout.read()
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)  # mid-point: the next point is in flight
        child.wait(timeout=30)
    before = {r["id"]: r for r in Store().list()}
    assert 1 <= len(before) < 4 and all(r["status"] == "ok" for r in before.values())
    rerun = _child(delay=0)
    out, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out
    assert f"{4 - len(before)} run, {len(before)} already done" in out
    after = Store().list()
    assert sorted(r["config"]["batch_size"] for r in after) == [2, 3, 4, 5]
    assert all(r["id"] in {a["id"] for a in after} for r in before.values())  # finished points kept as they were
