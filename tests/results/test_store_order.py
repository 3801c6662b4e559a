"""'latest' and `tbd results` order runs by when they were stored: created_at has whole seconds,
and runs of one second (sweep points, a run and the next) must not be ordered by their random ids."""

import sys
from pathlib import Path

from tbd.config import RunConfig
from tbd.results.store import Store

sys.path.insert(0, str(Path(__file__).parents[1] / "sweep"))
from sweep_fakes import fake_record  # noqa: E402


def test_runs_of_one_second_are_newest_last_stored(tmp_path):
    store = Store(tmp_path)
    records = [fake_record(RunConfig(workload="resnet50", device="cpu", batch_size=b)) for b in (1, 2, 3, 4)]
    for record, suffix in zip(records, ("ffffff", "000000", "aaaaaa", "111111")):  # ids against the storing order
        record["id"] = "20261129-120000-" + suffix
        record["created_at"] = "2026-11-29T12:00:00+00:00"
        store.save(record)
    assert store.get("latest")["id"] == "20261129-120000-111111"
    assert [r["id"] for r in store.list()] == [r["id"] for r in reversed(records)]
