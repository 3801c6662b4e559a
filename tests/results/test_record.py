"""The typed run record: one constructor per outcome, a round trip through JSON, and records of
schema version 1 (written before the record was typed) read back and upgraded, also from a store."""

import json
import sqlite3
from pathlib import Path

import pytest

from tbd.config import RunConfig
from tbd.results.record import SCHEMA_VERSION, RunRecord, headline
from tbd.results.store import Store

V1 = Path(__file__).with_name("record_v1.json")


def test_outcome_constructors_say_what_happened():
    config = RunConfig("resnet50", batch_size=4)
    assert RunRecord.failed(config, "crash", "killed by SIGKILL").error == {"kind": "crash", "message": "killed by SIGKILL"}
    oom = RunRecord.oom(config, "out of memory at batch size 4", run_id="r1")
    assert (oom.id, oom.status, oom.error["kind"]) == ("r1", "failed", "oom")
    skipped = RunRecord.skipped(config, "batch 2 ran out of memory")
    assert skipped.status == "skipped" and skipped.error["kind"] == "skipped"
    started = RunRecord.for_run(config.validated(), spec=__import__("tbd.registry").registry.get_spec("resnet50"))
    assert started.status == "failed" and started.workload["batch_unit"] == "images"  # failed until it succeeds
    assert started.succeed().status == "ok" and started.error is None
    started.method = {"convergence": {"status": "unconverged"}}
    assert started.succeed().status == "unconverged"  # the measurement's verdict is the status


def _old_ok(timed_steps, ci, stop):
    data = json.loads(V1.read_text())
    data["metrics"] = {**data["metrics"], "timed_steps": timed_steps, "throughput_ci95_half_width_pct": ci}
    data["method"] = {**data["method"], "stop_reason": stop}
    data["config"] = {**data["config"], "min_timed_steps": 5, "max_steps": 300}
    return RunRecord.from_dict({**data, "schema_version": 2})


def test_old_ok_records_get_a_convergence_verdict():
    """Records stored before the verdict existed say whether they converged, from their own facts."""
    single = _old_ok(1, 0.0, "time budget reached (5 s; CI +-inf%)")
    assert single.status == "insufficient" and single.metrics["throughput_ci95_half_width_pct"] is None  # never "±0.0%"
    loose = _old_ok(40, 14.6, "time budget reached (5 s; CI +-14.60%)")
    assert loose.status == "unconverged" and loose.method["convergence"]["ci_pct"] == 14.6
    tight = _old_ok(40, 0.8, "95% CI of median throughput within +-1.0% (0.80%)")
    assert tight.status == "ok" and headline(tight)["converged"]


def test_json_round_trip_keeps_every_field_and_unknown_keys():
    record = RunRecord.failed(RunConfig("gpt", batch_size=2), "nan", "loss became nan")
    record.sweep = {"id": "s1", "point": 3}
    record["note_from_a_newer_tbd"] = {"x": 1}
    back = RunRecord.from_json(record.to_json())
    assert back == record and back.to_dict() == record.to_dict()
    assert "analysis" not in back.to_dict()  # optional parts are left out when absent


def test_version_1_record_is_read_and_upgraded():
    data = json.loads(V1.read_text())
    record = RunRecord.from_dict(data)
    assert record.schema_version == SCHEMA_VERSION == 3
    assert record.kind == "run" and record.workload["batch_unit"] == "images"
    assert record.metrics["images_per_s"] == 20.0 and record.samples["chunk_ends"] == [1, 2, 6]
    assert headline(record.to_dict())["throughput"] == 20.0
    memory_v1 = {**data, "memory_profile": {"status": "ok"}}
    assert RunRecord.from_dict(memory_v1).kind == "memory"


def test_newer_or_broken_records_are_refused():
    with pytest.raises(ValueError, match="newer than this tbd"):
        RunRecord.from_dict({**json.loads(V1.read_text()), "schema_version": 99})
    with pytest.raises(ValueError, match="not a tbd run record"):
        RunRecord.from_dict({"hello": 1})


def test_store_reads_a_version_1_row(tmp_path):
    """A store written by tbd 0.1 (schema 1): its rows come back upgraded, and new runs go in."""
    store = Store(tmp_path)
    store.save(RunRecord.failed(RunConfig("resnet50", batch_size=8), "error", "x"))  # creates the tables
    data = json.loads(V1.read_text())
    conn = sqlite3.connect(tmp_path / "tbd.sqlite")
    with conn:
        conn.execute("INSERT INTO runs (id, created_at, workload, framework, flavor, device, batch_size, precision, status, record)"
                     " VALUES (?,?,?,?,?,?,?,?,?,?)", (data["id"], data["created_at"], "resnet50", "torch", "tiny", "cpu", 4, "fp32", "ok", json.dumps(data)))
    conn.close()
    old = store.get(data["id"][:12])
    assert old["schema_version"] == 3 and old["kind"] == "run" and old["workload"]["batch_unit"] == "images"
    assert {r["id"] for r in store.list()} == {data["id"], store.list()[0]["id"]}
