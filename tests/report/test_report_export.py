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
