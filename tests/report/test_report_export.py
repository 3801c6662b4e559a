"""`tbd export`: the --sweep filter, and Parquet where pyarrow is installed (a one-line error otherwise)."""

from __future__ import annotations

import sys

import pytest
from sweep_fakes import fake_record

from tbd.cli import main
from tbd.config import RunConfig
from tbd.results.store import Store


def _store_two_sweeps():
    store = Store()
    for name, sizes in (("s1", (4, 8)), ("s2", (16,))):
        for b in sizes:
            r = fake_record(RunConfig("resnet50", batch_size=b))
            r["sweep"] = {"id": f"id-{name}", "name": name, "point": b}
            store.save(r)
        store.save_sweep(f"id-{name}", name, {})
    store.save(fake_record(RunConfig("resnet50", batch_size=2)))  # not in any sweep


def test_export_sweep_filter(tbd_home, tmp_path, capsys):
    _store_two_sweeps()
    out = tmp_path / "s1.csv"
    assert main(["export", "--sweep", "s1", "--output", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert len(rows) == 3 and sorted(r.split(",")[rows[0].split(",").index("batch_size")] for r in rows[1:]) == ["4", "8"]
    assert main(["export", "--sweep", "nope"]) == 2
    assert "no sweep 'nope'" in capsys.readouterr().err


def test_parquet_without_pyarrow_is_a_one_line_error(tbd_home, tmp_path, monkeypatch, capsys):
    _store_two_sweeps()
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    assert main(["export", "--format", "parquet", "--output", str(tmp_path / "r.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install pyarrow" in err and "\n" not in err
    assert main(["export", "--format", "parquet"]) == 2  # binary: needs --output
    assert "--output runs.parquet" in capsys.readouterr().err


def test_parquet_export_round_trips(tbd_home, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow not installed (pip install 'tbd[parquet]')")
    _store_two_sweeps()
    out = tmp_path / "r.parquet"
    assert main(["export", "--format", "parquet", "--sweep", "s2", "--output", str(out)]) == 0
    table = pq.read_table(out)
    assert table.num_rows == 1 and table.column("batch_size").to_pylist() == [16]


def test_export_has_a_fixed_schema_whatever_the_rows(tbd_home, tmp_path):
    """The same columns in the same order for a GPU run, a CPU run and a failed run, whichever are exported;
    throughput with its unit (not a column per unit); sweep name, code revision and host."""
    from tbd.results.export import COLUMN_NAMES

    store = Store()
    gpt = fake_record(RunConfig("gpt", batch_size=2))
    gpt["workload"]["unit"] = "tokens"
    gpt["metrics"]["tokens_per_s"] = gpt["metrics"].pop("images_per_s")
    gpt["sweep"] = {"id": "id-n", "name": "nightly", "point": 1}
    for r in (fake_record(RunConfig("resnet50", batch_size=4)), gpt, fake_record(RunConfig("resnet50", batch_size=64), oom_above=8)):
        store.save(r)
    import csv as csvmod

    for args in (["--workload", "gpt"], ["--workload", "resnet50"], []):  # a tokens run alone, image runs alone, all
        out = tmp_path / "x.csv"
        assert main(["export", *args, "--output", str(out)]) == 0
        assert tuple(out.read_text().splitlines()[0].split(",")) == COLUMN_NAMES
    rows = {r["workload"] + r["batch_size"]: r for r in csvmod.DictReader(out.open())}
    assert rows["gpt2"]["throughput_unit"] == "tokens/s" and rows["resnet504"]["throughput_unit"] == "images/s"
    assert rows["gpt2"]["sweep_name"] == "nightly" and rows["gpt2"]["code_revision"] == "abc" and rows["gpt2"]["host"] == "host-a"
    assert rows["resnet5064"]["throughput"] == "" and rows["resnet5064"]["error_kind"] == "oom"
    assert not any(c.endswith("_per_s") and c not in ("samples_per_s", "model_tflops_per_s") for c in COLUMN_NAMES)


def test_parquet_is_typed_even_when_empty(tbd_home, tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed (pip install 'tbd[parquet]')")
    import pyarrow.parquet as pq

    failed = fake_record(RunConfig("resnet50", batch_size=64), oom_above=8)  # every metric null
    Store().save(failed)
    out = tmp_path / "r.parquet"
    assert main(["export", "--format", "parquet", "--output", str(out)]) == 0
    schema = pq.read_table(out).schema
    assert schema.field("created_at").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("throughput").type == pa.float64() and schema.field("batch_size").type == pa.int64()
    assert schema.field("converged").type == pa.bool_()


def test_markdown_export_for_a_pull_request(tbd_home, capsys):
    _store_two_sweeps()
    assert main(["export", "--format", "markdown", "--sweep", "s1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| run | flavor | device | batch |") and len([line for line in out if line.startswith("| resnet50")]) == 2
    assert "images/s" in out[2] and "±2.0%" in out[2]


def test_markdown_numbers_read_like_the_results_table(tbd_home, capsys):
    """Thousands separated as `tbd results` writes them (never 6.796e+04), the flavor, and the batch
    with its unit, so a tiny run and a paper run do not look the same."""
    from tbd.report.fmt import fmt_num

    for flavor, rate in (("tiny", 1353.2), ("paper", 67960.4)):
        r = fake_record(RunConfig("transformer", flavor=flavor, batch_size=4096))
        r["workload"].update(unit="tokens", batch_unit="tokens")
        r["metrics"]["tokens_per_s"] = rate
        Store().save(r)
    assert main(["export", "--format", "markdown"]) == 0
    rows = {line.split("|")[2].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("| transformer")}
    assert "| 4096 tokens |" in rows["paper"] and "| 67,960 tokens/s |" in rows["paper"] and fmt_num(67960.4) == "67,960"
    assert "| 1,353 tokens/s |" in rows["tiny"] and "e+" not in "".join(rows.values())


def test_the_documented_schema_is_the_schema():
    from pathlib import Path

    from tbd.results.export import COLUMNS

    doc = (Path(__file__).parents[2] / "docs" / "output.md").read_text()
    rows = [line for line in doc.split("<!-- export-columns")[1].splitlines() if line.startswith("| `")]
    assert rows == [f"| `{n}` | {t} | {m} |" for n, t, m in COLUMNS]


def test_export_help_names_the_doc_that_lists_the_columns(capsys):
    from pathlib import Path

    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "docs/output.md lists them" in help_text and "docs/results.md" not in help_text
    assert "<!-- export-columns" in (Path(__file__).parents[2] / "docs" / "output.md").read_text()


def test_export_says_which_statistic_the_throughput_is(tbd_home, tmp_path, capsys):
    """Runs whose steps carry different work (transformer, seq2seq, ...) store the window rate: the
    CSV names the statistic per row and the Markdown footer does not call every figure a median."""
    import csv as csvmod

    windowed = fake_record(RunConfig("transformer", batch_size=160))
    windowed["method"] = {"throughput_statistic": "window"}
    median = fake_record(RunConfig("resnet50", batch_size=4))
    median["method"] = {"throughput_statistic": "median"}
    for r in (windowed, median):
        Store().save(r)
    out = tmp_path / "x.csv"
    assert main(["export", "--output", str(out)]) == 0
    rows = {r["workload"]: r for r in csvmod.DictReader(out.open())}
    assert rows["transformer"]["throughput_statistic"] == "window" and rows["resnet50"]["throughput_statistic"] == "median"
    capsys.readouterr()
    assert main(["export", "--format", "markdown"]) == 0
    text = capsys.readouterr().out
    [transformer] = [line for line in text.splitlines() if line.startswith("| transformer")]
    [resnet] = [line for line in text.splitlines() if line.startswith("| resnet50")]
    assert "(window)" in transformer and "(window)" not in resnet
    assert "median throughput" not in text and "window rate" in text.splitlines()[-1]


def test_export_of_no_matching_run_says_so_and_writes_nothing(tbd_home, tmp_path, capsys):
    """As `tbd results --workload nope` says, in one line; exit 2 and no (header-only) file."""
    out = tmp_path / "x.csv"
    assert main(["export", "--output", str(out)]) == 2  # an empty store
    assert capsys.readouterr().err.strip() == f"tbd: error: no runs stored in {tbd_home}; try 'tbd run resnet50'"
    Store().save(fake_record(RunConfig("resnet50", batch_size=4)))
    for args in (["--workload", "nope"], ["--format", "markdown", "--framework", "jax"], ["--format", "parquet", "--workload", "nope"]):
        assert main(["export", *args, "--output", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"tbd: error: no stored run matches --{args[-2].lstrip('-')} {args[-1]} in ") and "\n" not in err
        assert not out.exists()
    assert main(["results", "--workload", "nope"]) == 0
    assert "no stored run matches --workload nope in " in capsys.readouterr().out
