"""`tbd report`: one self-contained HTML file with every section, figures beside it."""

from __future__ import annotations

import re

from sweep_fakes import fake_record

from tbd.cli import main
from tbd.config import RunConfig
from tbd.report.html import SECTIONS, write_report
from tbd.results.record import RunRecord
from tbd.results.store import Store


def report_records() -> list[dict]:
    """A sweep's worth of records: two lines over batch sizes, an OOM, a skip, GPU runs with
    the optional parts (memory profile, analysis) and one without them."""
    records = []
    for precision in ("fp32", "bf16"):
        for b in (4, 8, 16, 32):
            records.append(fake_record(RunConfig("resnet50", precision=precision, batch_size=b), oom_above=16 if precision == "fp32" else None))
    skipped = RunRecord(id="skip-1", config=RunConfig("resnet50", batch_size=64).to_dict())
    skipped.update(status="skipped", error={"kind": "skipped", "message": "skipped: batch 32 of this line ran out of memory"})
    records.append(skipped)
    profile = {"categories": {"weights": 100 * 2**20, "gradients": 100 * 2**20, "optimizer_state": 100 * 2**20,
                              "feature_maps": 2000 * 2**20, "workspace": 50 * 2**20, "unattributed": 3 * 2**20}}
    analysis = {"diagnosis": "host/launch-bound", "gpu_util_trace_pct": 61.5,
                "recommendations": [{"title": "use CUDA graphs or torch.compile", "expected_gain_pct": 30}]}
    records.append(fake_record(RunConfig("inception_v3", device="cuda", precision="bf16", batch_size=64), rate=2000,
                               extras={"memory_profile": profile, "analysis": analysis}))
    records.append(fake_record(RunConfig("inception_v3", device="cuda", precision="bf16", batch_size=128), rate=2500))
    return records


def test_report_has_every_section_and_needs_nothing_else(tmp_path):
    path = write_report(report_records(), tmp_path / "out" / "report.html", "test report", "fake runs.")
    text = path.read_text()
    for sid, name in SECTIONS:
        assert f"<section id='{sid}'>" in text and name in text
    # Self-contained: no script, nothing fetched from a network, every image inline.
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", text)
    images = re.findall(r"<img [^>]*src='([^']*)'", text)
    assert len(images) == 5 and all(src.startswith("data:image/png;base64,") for src in images)
    for name in ("throughput_vs_batch", "utilization", "memory", "step_times", "step_series"):
        assert (tmp_path / "out" / "report-plots" / f"{name}.png").stat().st_size > 1000
        assert (tmp_path / "out" / "report-plots" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    assert "host/launch-bound" in text and "use CUDA graphs" in text  # the diagnosis
    assert "batch 32 of this line ran out of memory" in text and "oom: out of memory" in text
    assert "Fake CPU" in text and "2.14.1" in text  # the environment table
    assert "host process</b>: on the CPU only the process's peak resident memory" in text  # what the memory chart does not measure
    assert "comparison" not in text.lower().split("<main>")[0]  # one set of runs: no comparison section


def test_report_marks_unconverged_runs_and_shows_conditions(tmp_path):
    records = report_records()
    loose = records[1]
    loose["status"] = "unconverged"
    loose["method"] = {"convergence": {"status": "unconverged", "reason": "CI +-6.2% when the budget ran out"}}
    for r in records:
        r["environment"].update(ram_bytes=16 * 2**30, platform="Linux-6.1")
        r["environment"]["conditions"] = {"intra_op_threads": 2, "others_cpu_cores": 1.2, "before": {"load_avg": [3.4, 3, 3]}}
    text = write_report(records, tmp_path / "r.html", "t").read_text()
    assert "<span class='unconverged'>unconverged</span>" in text and "CI +-6.2% when the budget ran out" in text
    assert "(unconverged)" in text  # the summary says its best point did not converge
    for row in ("RAM", "16.0 GiB", "Linux-6.1", "intra-op threads", "load average (1 min, before runs)", "3.4", "runs with noise warnings"):
        assert row in text, row


def test_the_summary_never_picks_a_best_batch_from_runs_too_short_for_a_ci(tmp_path):
    records = report_records()[:4]  # resnet50 fp32 at 4, 8, 16 and an OOM at 32
    records[2]["status"] = "insufficient"  # the fastest, from one steady step: not rankable
    text = write_report(records, tmp_path / "r.html", "t").read_text()
    summary = text.split("<section id='summary'>")[1].split("</section>")[0]
    assert "<td class='num'>16</td>" not in summary and "(insufficient)" not in summary and "images/s" in summary
    for r in records[:3]:
        r["status"] = "insufficient"
    records[0]["sweep"] = records[1]["sweep"] = records[2]["sweep"] = {"probe": True}
    summary = write_report(records, tmp_path / "r.html", "t").read_text().split("<section id='summary'>")[1].split("</section>")[0]
    assert "not measurable" in summary and "max-batch probe(s)" in summary and "images/s" not in summary


def test_plots_draw_bars_for_one_batch_size_and_start_at_zero():
    from tbd.report import plots

    one = [fake_record(RunConfig("gpt", batch_size=2)), fake_record(RunConfig("gpt", batch_size=2, precision="bf16"))]
    fig = plots.throughput_vs_batch(one)
    ax = fig.axes[0]
    assert len(ax.patches) == 2 and not [line for line in ax.lines if line.get_marker() == "o"]  # two bars, no lone dots
    assert ax.get_ylim()[0] == 0
    many = plots.throughput_vs_batch(report_records())
    assert all(a.get_ylim()[0] == 0 for a in many.axes if a.get_visible())


def test_report_of_two_sweeps_compares_them(tbd_home, tmp_path, capsys):
    store = Store()
    for name, rate in (("old", 100.0), ("new", 130.0)):
        for b in (4, 8):
            r = fake_record(RunConfig("resnet50", batch_size=b), rate=rate)
            r["sweep"] = {"id": f"id-{name}", "name": name, "point": b}
            store.save(r)
        store.save_sweep(f"id-{name}", name, {})
    out = tmp_path / "cmp.html"
    assert main(["report", "old", "new", "--output", str(out)]) == 0
    text = out.read_text()
    assert "<section id='comparison'>" in text and "A = sweep old" in text and "B faster (CI excludes 1)" in text
    assert (tmp_path / "cmp-plots" / "comparison.png").stat().st_size > 1000


def test_report_without_optional_parts_says_what_is_missing(tmp_path):
    records = [fake_record(RunConfig("resnet50", batch_size=4))]
    text = write_report(records, tmp_path / "r.html", "t").read_text()
    assert "No analysis ran for these runs" in text
    failed_only = [RunRecord(id="x", config=RunConfig("resnet50", batch_size=4).to_dict())]
    failed_only[0]["error"] = {"kind": "crash", "message": "boom"}
    text = write_report(failed_only, tmp_path / "f.html", "t").read_text()
    assert "nothing to plot" in text and "boom" in text


def test_report_command_defaults_to_the_newest_sweep(tbd_home, capsys):
    store = Store()
    for r in report_records()[:4]:
        r["sweep"] = {"id": "sid", "name": "mine", "point": 1}
        store.save(r)
    store.save_sweep("sid", "mine", {})
    assert main(["report"]) == 0
    out = capsys.readouterr().out
    path = tbd_home / "reports" / "mine" / "report.html"
    assert str(path) in out and path.exists()
    assert main(["report", "--output", "r.txt"]) == 2
