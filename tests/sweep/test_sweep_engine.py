"""The sweep engine with a fake launcher: OOM skipping, max-batch bisection, resume, the store."""

from __future__ import annotations

import sqlite3

import pytest

from sweep_fakes import FakeLauncher, fake_record

from tbd.config import RunConfig
from tbd.results.store import Store
from tbd.sweep import spec as sweep_spec
from tbd.sweep.engine import SweepRunner, sweep_records


def make_plan(**kw):
    spec = sweep_spec.SweepSpec(name=kw.pop("name", "t"), workloads=["resnet50"], frameworks=["torch"], devices=["cpu"], **kw)
    return sweep_spec.plan(spec)


def test_oom_skips_larger_batches_and_everything_is_stored(tbd_home):
    store = Store()
    plan = make_plan(batch_sizes=[4, 8, 16, 32], precisions=["fp32", "bf16"])
    fake = FakeLauncher(oom_above=8)
    result = SweepRunner(plan, store, launch=fake).run()
    # Per line: 4 and 8 run, 16 runs out of memory, 32 is skipped without running.
    assert sorted(c.batch_size for c in fake.calls) == [4, 4, 8, 8, 16, 16]
    assert result.ran == 6 and result.skipped == 2
    stored = store.list(sweep=plan.sweep_id)
    assert len(stored) == 8
    by_status = {(r["config"]["precision"], r["config"]["batch_size"]): r["status"] for r in stored}
    assert by_status[("fp32", 16)] == "failed" and by_status[("fp32", 32)] == "skipped"
    skipped = next(r for r in stored if r["status"] == "skipped")
    assert "batch 16" in skipped["error"]["message"]
    assert all(r["sweep"]["id"] == plan.sweep_id and r["sweep"]["name"] == "t" for r in stored)
    sweep, recs = sweep_records(store, "t")
    assert sweep["id"] == plan.sweep_id and len(recs) == 8


def test_running_the_same_sweep_again_resumes(tbd_home):
    store = Store()
    plan = make_plan(batch_sizes=[4, 8, 16])
    first = FakeLauncher(fail_at={8})
    SweepRunner(plan, store, launch=first).run()
    again = FakeLauncher()
    result = SweepRunner(make_plan(batch_sizes=[4, 8, 16]), store, launch=again).run()
    assert again.calls == [] and result.resumed == 3  # nothing reran
    retry = FakeLauncher()
    result = SweepRunner(make_plan(batch_sizes=[4, 8, 16]), store, launch=retry, retry_failed=True).run()
    assert [c.batch_size for c in retry.calls] == [8] and result.failed == 0
    # A bigger sweep of the same name runs only its new points... under a new id (the plan changed).
    bigger = FakeLauncher()
    SweepRunner(make_plan(batch_sizes=[4, 8, 16, 32]), store, launch=bigger).run()
    assert len(bigger.calls) == 4


def test_running_a_stored_sweep_keeps_its_definition(tbd_home):
    """The engine (and so tbd.sweep) writes a sweep's definition once: the same plan described
    otherwise (here its batch size given, not taken from the flavor) does not replace it."""
    store = Store()
    plan = make_plan()
    SweepRunner(plan, store, launch=FakeLauncher()).run()
    [before] = store.sweeps(plan.sweep_id)
    again = make_plan(batch_sizes=[plan.lines[0].batches[0]])
    assert again.sweep_id == plan.sweep_id and again.spec.to_dict() != plan.spec.to_dict()
    SweepRunner(again, store, launch=FakeLauncher()).run()
    [after] = store.sweeps(plan.sweep_id)
    assert after["spec"] == before["spec"] and after["summary"]["updated_at"] != before["summary"]["updated_at"]


def test_max_batch_bisects_to_the_largest_batch_that_fits(tbd_home):
    store = Store()
    plan = make_plan(batch_sizes=[4], max_batch=1000)
    fake = FakeLauncher(oom_above=37)
    result = SweepRunner(plan, store, launch=fake).run()
    assert list(result.max_batch.values()) == [37]
    tried = [c.batch_size for c in fake.calls]
    assert tried[:5] == [4, 8, 16, 32, 64] and len(tried) <= 12  # doubling, then a bisection
    assert all(c.max_steps <= 3 for c in fake.calls)  # probes are short runs
    assert all(r["sweep"]["probe"] for r in store.list(sweep=plan.sweep_id))
    # The bound is respected when nothing runs out of memory.
    result = SweepRunner(make_plan(batch_sizes=[4], max_batch=20), store, launch=FakeLauncher()).run()
    assert list(result.max_batch.values()) == [20]
    assert list(result.max_batch_bound.values()) == [20]  # the bound stopped it, not memory: larger may fit
    assert not SweepRunner(make_plan(batch_sizes=[4], max_batch=64), store, launch=FakeLauncher(oom_above=37)).run().max_batch_bound
    summary = store.sweeps(plan.sweep_id)[0]["summary"]
    assert list(summary["max_batch"].values()) == [37]


def test_a_cpu_max_batch_search_does_not_run_a_probe_the_hosts_free_memory_cannot_hold(tbd_home, monkeypatch):
    """The fake's probes peak at 1 GiB + 1 MiB a sample; with 4 GiB free (80% of it usable), a batch
    whose estimate passes 3.2 GiB is answered 'out of memory' without running, and the answer
    says it was bounded by the host, not by an OOM. The estimate follows the line through the
    largest two probes that fit: 2,252 samples reach 3.2 GiB (scaling 1,024's peak by the batch
    would have stopped below 2,048)."""
    import types

    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=4 * 2**30))
    store = Store()
    fake = FakeLauncher()
    result = SweepRunner(make_plan(batch_sizes=[4], max_batch=65536), store, launch=fake).run()
    tried = [c.batch_size for c in fake.calls]
    assert tried[:10] == [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048] and max(tried) <= 2252, tried
    (label, found), = result.max_batch.items()
    assert 2252 / 1.02 <= found <= 2252
    assert result.max_batch_notes[label].startswith("bounded by the host's free memory, not by an out-of-memory: batch ")
    assert "of host memory" in result.max_batch_notes[label] and "4.0 GiB free" in result.max_batch_notes[label]
    assert len(store.list()) == len(tried)  # a probe not run stores nothing


def test_the_host_memory_estimate_is_proportional_from_one_probe_and_linear_from_two():
    from tbd.sweep.engine import beyond_host_memory

    gib, mib = 2**30, 2**20
    one = {1024: 2 * gib}  # 2 GiB at 1,024: 4 GiB at 2,048, past 80% of 4 GiB
    assert beyond_host_memory(2048, one, available=4 * gib).startswith("batch 2048 not run: about 4.0 GiB")
    two = {512: gib + 512 * mib, 1024: 2 * gib}  # 1 GiB + 1 MiB a sample: 3 GiB at 2,048
    assert beyond_host_memory(2048, two, available=4 * gib) == ""
    assert beyond_host_memory(2300, two, available=4 * gib).startswith("batch 2300 not run")
    flat = {512: 2 * gib, 1024: 2 * gib}  # peaks that did not grow say nothing of the slope: proportional
    assert beyond_host_memory(2048, flat, available=4 * gib) != ""


def test_max_batch_probes_variable_length_workloads_at_their_longest_inputs(tbd_home):
    # as `tbd memory --max-batch` sizes them: every pair at the flavor's longest, so the answer
    # holds for any draw (a probe of drawn batches finds the boundary of the lengths it drew)
    spec = sweep_spec.SweepSpec(name="s", workloads=["seq2seq"], frameworks=["torch"], devices=["cpu"], batch_sizes=[4], max_batch=64)
    fake = FakeLauncher(oom_above=37)
    SweepRunner(sweep_spec.plan(spec), Store(), launch=fake).run()
    probes = [c for c in fake.calls if c.max_steps <= 3]
    assert probes and all(c.hparams.get("len_sigma") == 0.0 and c.hparams.get("mean_src_len") == c.resolved_hparams()["max_len"]
                          for c in probes)


def test_store_made_before_sweeps_gains_the_column(tmp_path):
    home = tmp_path / "old"
    home.mkdir()
    conn = sqlite3.connect(home / "tbd.sqlite")
    conn.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, created_at TEXT, workload TEXT, framework TEXT, flavor TEXT,"
                 " device TEXT, batch_size INTEGER, precision TEXT, status TEXT, record TEXT NOT NULL)")
    old = fake_record(RunConfig("resnet50", batch_size=4))
    conn.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)",
                 (old["id"], old["created_at"], "resnet50", "torch", "tiny", "cpu", 4, "fp32", "ok", old.to_json()))
    conn.commit()
    conn.close()
    store = Store(home)
    new = fake_record(RunConfig("resnet50", batch_size=8))
    new["sweep"] = {"id": "abc", "name": "n", "point": 1}
    store.save(new)
    assert {r["id"] for r in store.list()} == {old["id"], new["id"]}
    assert [r["id"] for r in store.list(sweep="abc")] == [new["id"]]


def test_a_batch_of_more_actors_than_the_host_can_run_is_refused_in_one_line(monkeypatch):
    """a3c's batch is actor processes on this host's cores: `tbd run a3c --batch-size 100000` ended in
    "Too many open files" after starting thousands; past 32 a core it is refused before a run, and a
    sweep's max-batch search stops there."""
    import os

    from tbd import registry
    from tbd.config import RunConfig
    from tbd.errors import UsageError

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert registry.get_spec("a3c").host_batch_limit() == 64 and registry.get_spec("resnet50").host_batch_limit() is None
    assert RunConfig("a3c", batch_size=64).validated().batch_size == 64
    with pytest.raises(UsageError, match=r"a3c's batch counts actor processes on this host's 2 cores: 100,000 is more than 32 a core.*--batch-size 64 or less"):
        RunConfig("a3c", batch_size=100_000).validated()
    fake = FakeLauncher()  # every batch fits
    plan = sweep_spec.plan(sweep_spec.SweepSpec(name="a", workloads=["a3c"], frameworks=["torch"], devices=["cpu"], batch_sizes=[2], max_batch=65536))
    result = SweepRunner(plan, Store(), launch=fake).run()
    assert max(c.batch_size for c in fake.calls) == 64 and list(result.max_batch.values()) == [64]
