"""Faults of the results store: it cannot take a run (a file, read-only, damaged, full), a save
cut short, a failure after measuring, unreadable rows, a damaged database file, concurrent first
use, prefix lookups, read commands on a file. docs/faults.md says what tbd promises for each."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest
from faults_kit import SRC, cli, on_small_disk, one_error_line, preexec_small_disk, stored_runs
from sweep_fakes import fake_record

from tbd import cli as tbd_cli
from tbd.config import RunConfig
from tbd.results.record import SCHEMA_VERSION
from tbd.results.store import Store

RUN = ("run", "resnet50", "--device", "cpu", "--max-steps", "2")


def damage_pages(db: Path, seed: int = 0) -> None:
    """Random bytes over every page of the database but the first (the header stays valid)."""
    data = bytearray(db.read_bytes())
    rng = random.Random(seed)
    page = 4096
    for start in range(page, len(data), page):
        for i in range(start + 100, min(start + page, len(data)), 7):
            data[i] = rng.randrange(256)
    db.write_bytes(bytes(data))


def no_temp_files(home: Path) -> bool:
    return not [p for p in home.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tbd-probe")]


# ---- a store that cannot take a run: one line, exit 2, nothing measured --------------------


@pytest.mark.parametrize("command", [RUN, ("sweep", "--workloads", "resnet50", "--frameworks", "torch", "--devices", "cpu", "--batch-sizes", "2"),
                                     ("scale", "resnet50", "--nproc", "1", "--device", "cpu", "--max-steps", "2")])
@pytest.mark.parametrize("home_kind", ["file", "/dev/null"])
def test_a_home_that_is_a_file_fails_before_measuring(command, home_kind, tmp_path, launches, capsys):
    home = tmp_path / "a-file" if home_kind == "file" else Path("/dev/null")
    if home_kind == "file":
        home.write_text("not a folder")
    code = tbd_cli.main([*command, "--home", str(home)])
    err = capsys.readouterr().err
    assert code == 2 and "is a file, not a folder" in err, err
    assert launches == []  # nothing was measured


def test_memory_with_a_file_home_fails_before_profiling(tmp_path, monkeypatch, capsys):
    import tbd.memory.profiler

    profiled = []
    monkeypatch.setattr(tbd.memory.profiler, "profile", lambda *a, **k: profiled.append(a))
    home = tmp_path / "a-file"
    home.write_text("x")
    code = tbd_cli.main(["memory", "gpt", "--device", "cpu", "--home", str(home)])
    assert code == 2 and "is a file, not a folder" in capsys.readouterr().err
    assert profiled == []


def test_a_damaged_store_fails_before_measuring(tbd_home, launches, capsys):
    stored_runs(tbd_home)
    damage_pages(tbd_home / "tbd.sqlite")
    code = tbd_cli.main(list(RUN))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "--check --quarantine" in err and ("damaged" in err or "not a readable database" in err)
    assert launches == []


def test_a_read_only_store_fails_before_measuring(read_only_store):
    home, wrap = read_only_store
    before = sorted(p.name for p in (home / "runs").iterdir())
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": SRC, "TBD_INJECT_FAULT": "error"}
    import subprocess

    def tbd(*args):
        return subprocess.run(wrap([sys.executable, "-m", "tbd.cli", *args, "--home", str(home)]), capture_output=True, text=True, env=env, timeout=300)

    line = one_error_line(tbd(*RUN))
    assert "cannot take runs" in line or "read-only" in line
    assert sorted(p.name for p in (home / "runs").iterdir()) == before
    # Analyzing stores the analysis with the run: the same check, before analyzing.
    line = one_error_line(tbd("analyze", "latest"))
    assert "cannot take runs" in line or "read-only" in line


INNER = """
import json, subprocess, sys
from pathlib import Path
home = Path(sys.argv[1])
out = subprocess.run(sys.argv[2:], capture_output=True, text=True)
rows = None
try:
    import sqlite3
    rows = sqlite3.connect(home / "tbd.sqlite").execute("SELECT count(*) FROM runs").fetchone()[0]
except Exception as exc:
    rows = str(exc)
files = sorted(p.name for p in (home / "runs").iterdir()) if (home / "runs").is_dir() else []
print(json.dumps({"rc": out.returncode, "stderr": out.stderr, "rows": rows, "files": files}))
"""


def _on_small_disk(tmp_path: Path, size_kib: int, fill: bool, argv: list[str]) -> dict:
    """Run a command against a store with two runs on a small (and maybe full) disk; return what
    the store held afterwards (the disk goes away with the command)."""
    seed = tmp_path / "seed-store"
    stored_runs(seed)
    disk = tmp_path / "disk"
    disk.mkdir()
    home = disk / "home"
    inner = tmp_path / "inner.py"
    inner.write_text(INNER)
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "200", "TBD_INJECT_FAULT": "error"}
    command = [sys.executable, str(inner), str(home), sys.executable, "-m", "tbd.cli", *argv, "--home", str(home)]
    import shutil
    import subprocess

    if preexec_small_disk(1) is None:  # a real small disk (tmpfs in a private mount namespace)
        out = subprocess.run(on_small_disk(disk, size_kib, fill, command, setup=f"cp -r {seed} {home};"),
                             capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    else:  # a file-size limit stands in: every write beyond it fails
        shutil.copytree(seed, home)
        out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path, preexec_fn=preexec_small_disk(16 * 1024))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("fill", [False, True], ids=["nearly-full", "full"])
def test_a_full_disk_fails_before_measuring_and_leaves_nothing(fill, tmp_path):
    result = _on_small_disk(tmp_path, 2048, fill, list(RUN))
    assert result["rc"] == 2, result
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result["stderr"], result
    assert "full" in lines[0] or "cannot take runs" in lines[0]
    assert result["rows"] == 2 and len(result["files"]) == 2, result  # the store as it was: no temp file, no half a run


def test_a_huge_batch_is_refused_before_anything_runs(tbd_home, launches, capsys):
    code = tbd_cli.main(["sweep", "--workloads", "resnet50", "--frameworks", "torch", "--devices", "cpu", "--batch-sizes", "4,99999999999999999999"])
    err = capsys.readouterr().err
    assert code == 2 and "batch size" in err and err.count("\n") == 1, err
    assert launches == [] and not (tbd_home / "runs").exists()


# ---- a save is whole or finished later; a record the store cannot take is kept -------------


SAVE_BIG = """
import sys
sys.path.insert(0, {sweep!r})
from sweep_fakes import fake_record
from tbd.cli import main
import tbd.commands.run


def launch(config, progress=None):
    # The disk fills up while the run measures (after the store passed its check).
    if {fill_file!r}:
        with open({fill_file!r}, "wb") as f:
            try:
                while True:
                    f.write(b"\\0" * 2**20)
                    f.flush()
            except OSError:
                pass
    else:  # no small disk to fill here: a file-size limit makes every write beyond 4 kB fail
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return fake_record(config, extras={{"notes": "x" * 100_000}})


tbd.commands.run.launch = launch
sys.exit(main(["run", "resnet50", "--device", "cpu", "--home", {home!r}]))
"""


def test_a_disk_that_fills_during_the_run_leaves_no_temp_file_and_keeps_the_record(tmp_path):
    """The store passes the check, then the disk fills while the run measures: the save leaves
    no temporary file, and the record is saved elsewhere with a line saying where."""
    disk = tmp_path / "disk"
    disk.mkdir()
    home = disk / "home"
    seed = tmp_path / "seed-store"
    stored_runs(seed)
    real_disk = preexec_small_disk(1) is None
    script = tmp_path / "save_big.py"
    script.write_text(SAVE_BIG.format(sweep=str(Path(__file__).parents[1] / "sweep"), home=str(home),
                                      fill_file=str(disk / "filler") if real_disk else ""))
    inner = tmp_path / "inner.py"
    inner.write_text(INNER)
    command = [sys.executable, str(inner), str(home), sys.executable, str(script)]
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "200"}
    import shutil
    import subprocess

    if real_disk:
        command = on_small_disk(disk, 24 * 1024, False, command, setup=f"cp -r {seed} {home};")
    else:
        shutil.copytree(seed, home)
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["rc"] == 1, result
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tbd: error: the run finished but"), result["stderr"]
    assert not [f for f in result["files"] if f.endswith(".tmp") or f.startswith(".tbd-probe")], result["files"]
    if real_disk:  # saved outside the full disk, and the line says where
        rescued = Path(lines[0].split("saved as ", 1)[1].split(": once", 1)[0])
        assert rescued.parent == tmp_path and json.loads(rescued.read_text())["notes"] == "x" * 100_000
    else:  # every write fails: it says so, loudly
        assert "could not be saved anywhere" in lines[0]


def test_a_save_cut_short_is_finished_at_the_next_start(tbd_home, launches, capsys):
    """What a kill in the middle of a save leaves: a record file without its row, a row without
    its file, a temporary file. The next command that stores runs finishes or removes them."""
    a, b = stored_runs(tbd_home)
    orphan = fake_record(RunConfig("resnet50", device="cpu", batch_size=7))
    (tbd_home / "runs" / f"{orphan['id']}.json").write_text(json.dumps(orphan.to_dict()))  # the row never went in
    (tbd_home / "runs" / f"{b['id']}.json").unlink()  # the file copy never went in
    stale = tbd_home / "runs" / f".{a['id']}.json.123.tmp"
    stale.write_text('{"half": ')
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert tbd_cli.main(list(RUN)) == 0
    ids = {r["id"] for r in Store().list()}
    assert {a["id"], b["id"], orphan["id"]} <= ids and len(ids) == 4
    assert json.loads((tbd_home / "runs" / f"{b['id']}.json").read_text())["id"] == b["id"]
    assert no_temp_files(tbd_home)


def test_a_store_damaged_during_the_run_keeps_the_record_and_says_where(tbd_home, monkeypatch, capsys):
    stored_runs(tbd_home)

    def launch(config, progress=None):  # the database file is overwritten while the run measures
        (tbd_home / "tbd.sqlite").write_bytes(b"not a database any more " * 200)
        return fake_record(config)

    import tbd.commands.run

    monkeypatch.setattr(tbd.commands.run, "launch", launch)
    code = tbd_cli.main(list(RUN))
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "the run finished but" in err, err
    path = Path(err.split("saved as ", 1)[1].split(" and ", 1)[0])
    assert path.parent == tbd_home / "runs" and json.loads(path.read_text())["status"] == "ok"
    # The fix the messages name: move the database aside, rebuild it from the run files.
    assert tbd_cli.main(["results", "--check", "--quarantine"]) == 0
    capsys.readouterr()
    ids = {r["id"] for r in Store().list()}
    assert path.stem in ids and len(ids) == 3


def test_a_store_gone_during_the_run_saves_the_record_elsewhere(tbd_home, tmp_path, monkeypatch, capsys):
    tbd_home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    def launch(config, progress=None):  # the store's folder is replaced by a file meanwhile
        import shutil

        shutil.rmtree(tbd_home)
        tbd_home.write_text("oops")
        return fake_record(config)

    import tbd.commands.run

    monkeypatch.setattr(tbd.commands.run, "launch", launch)
    code = tbd_cli.main(list(RUN))
    err = capsys.readouterr().err.strip()
    assert code == 1 and "the run finished but" in err and err.count("\n") == 0, err
    [rescued] = list(work.glob("tbd-rescued-*.json"))
    assert str(rescued) in err and json.loads(rescued.read_text())["status"] == "ok"


# ---- unreadable rows, a damaged database file ---------------------------------------------


def _store_with_broken_rows(home: Path) -> tuple[dict[str, dict], list[str]]:
    """Sweeps A and B of batches 1-4, runs created in that order; three rows broken: A1 truncated
    JSON (its file copy intact), B2 '{}' (its copy gone too), B4 (the newest) a record whose
    config lacks fields (its copy unreadable). Returns ({label: record}, broken labels)."""
    store = Store(home)
    runs = {}
    for i, (name, b) in enumerate((n, b) for n in "AB" for b in (1, 2, 3, 4)):
        r = fake_record(RunConfig("resnet50", device="cpu", batch_size=b))
        r["created_at"] = f"2026-01-01T00:00:{i:02d}+00:00"
        r["sweep"] = {"id": f"id-{name}", "name": name, "point": b}
        store.save(r)
        runs[f"{name}{b}"] = r
    store.save_sweep("id-A", "A", {})
    store.save_sweep("id-B", "B", {})
    with sqlite3.connect(home / "tbd.sqlite") as conn:
        conn.execute("UPDATE sweeps SET created_at = '2999-01-01' WHERE id = 'id-B'")  # B is the newest sweep
        text = conn.execute("SELECT record FROM runs WHERE id = ?", (runs["A1"]["id"],)).fetchone()[0]
        conn.execute("UPDATE runs SET record = ? WHERE id = ?", (text[: len(text) // 2], runs["A1"]["id"]))
        conn.execute("UPDATE runs SET record = '{}' WHERE id = ?", (runs["B2"]["id"],))
        conn.execute("UPDATE runs SET record = ? WHERE id = ?", (json.dumps({"id": runs["B4"]["id"], "config": {}}), runs["B4"]["id"]))
    (home / "runs" / f"{runs['B2']['id']}.json").unlink()
    (home / "runs" / f"{runs['B4']['id']}.json").write_text("{")
    return runs, ["A1", "B2", "B4"]


@pytest.mark.parametrize("command,named", [
    (["results"], "A1 B2 B4"), (["export", "--format", "csv"], "A1 B2 B4"), (["export", "--format", "json"], "A1 B2 B4"),
    (["report"], "B2 B4"), (["compare", "A", "B"], "A1 B2 B4"), (["results", "show", "latest"], "B4"),
])
def test_unreadable_rows_are_skipped_with_one_warning(command, named, tbd_home, tmp_path, capsys):
    runs, broken = _store_with_broken_rows(tbd_home)
    if command[0] == "report":
        command = command + ["--output", str(tmp_path / "r.html")]
    code = tbd_cli.main(command)
    out, err = capsys.readouterr()
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("tbd: warning:")]
    assert len(warnings) == 1 and "Traceback" not in err, err
    assert all(runs[label]["id"] in warnings[0] for label in named.split()) and "tbd results --check" in warnings[0]
    if command[0] == "compare":
        assert "resnet50/torch/tiny/cpu/bs3" in out  # the readable points are compared


def test_results_check_lists_and_quarantines_unreadable_rows(tbd_home, capsys):
    runs, broken = _store_with_broken_rows(tbd_home)
    assert tbd_cli.main(["results", "--check"]) == 1
    out = capsys.readouterr().out
    assert all(f"unreadable run {runs[label]['id']}" in out for label in broken), out
    assert tbd_cli.main(["results", "--check", "--quarantine"]) == 0
    out = capsys.readouterr().out
    assert f"restored run {runs['A1']['id']} from its file copy" in out  # its file copy was intact
    assert (tbd_home / "quarantine" / f"{runs['B2']['id']}.row.txt").read_text() == "{}"
    assert (tbd_home / "quarantine" / f"{runs['B4']['id']}.json").read_text() == "{"
    assert {r["id"] for r in Store().list()} == {r["id"] for label, r in runs.items() if label not in ("B2", "B4")}
    assert tbd_cli.main(["results", "--check"]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_results_check_rewrites_an_unreadable_file_copy_from_its_row_and_lists_one_without(tbd_home, capsys):
    kept, orphan = stored_runs(tbd_home, 2)
    (tbd_home / "runs" / f"{kept['id']}.json").write_text('{"broken":')
    with sqlite3.connect(tbd_home / "tbd.sqlite") as conn:
        conn.execute("DELETE FROM runs WHERE id = ?", (orphan["id"],))
    (tbd_home / "runs" / f"{orphan['id']}.json").write_text("{")
    assert tbd_cli.main(["results", "--check"]) == 1  # the file without a row stays a problem
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert f"rewrote the unreadable file copy {tbd_home / 'runs' / kept['id']}.json (not JSON" in out and "from its database row" in out, out
    assert f"unreadable file {tbd_home / 'runs' / orphan['id']}.json" in out and "the database has no row of this run" in out, out
    assert json.loads((tbd_home / "runs" / f"{kept['id']}.json").read_text())["id"] == kept["id"]
    # The rebuild that --quarantine makes of the files keeps the run whose copy was rewritten.
    (tbd_home / "tbd.sqlite").unlink()
    assert tbd_cli.main(["results", "--check", "--quarantine"]) == 0
    assert "rebuilt the database from 1 run file(s)" in capsys.readouterr().out
    assert [r["id"] for r in Store().list()] == [kept["id"]]


@pytest.mark.parametrize("command", [["results"], ["results", "show", "latest"], ["report"], ["compare", "A", "B"], ["export"]])
def test_a_damaged_database_is_one_line_naming_the_fix(command, tbd_home):
    records = stored_runs(tbd_home, 3)
    damage_pages(tbd_home / "tbd.sqlite")
    command = [records[0]["id"] if c == "A" else records[1]["id"] if c == "B" else c for c in command]
    line = one_error_line(cli(*command))
    assert "tbd results --check --quarantine" in line
    fixed = cli("results", "--check", "--quarantine")
    assert fixed.returncode == 0 and "rebuilt the database from 3 run file(s)" in fixed.stdout, fixed.stdout + fixed.stderr
    assert {r["id"] for r in Store().list()} == {r["id"] for r in records}
    assert list((tbd_home / "quarantine").glob("*tbd.sqlite"))  # the damaged file is kept, aside


# ---- concurrency, lookups, read commands ------------------------------------------------


def test_first_use_of_a_new_store_by_many_at_once(tmp_path, monkeypatch):
    """Schema creation and migration under concurrency (threads, each with its own connection, as
    separate processes have). Every statement is slowed down a little
    (a slow disk) so that the openings overlap; none may fail."""
    real_connect = sqlite3.connect

    class SlowConnection(sqlite3.Connection):
        def execute(self, *args, **kwargs):
            time.sleep(0.003)
            return super().execute(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real_connect(*a, **{**k, "factory": SlowConnection}))
    for trial in range(3):
        home = tmp_path / f"store-{trial}"
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        def first_use(i: int) -> None:
            barrier.wait()
            try:
                Store(home).save_sweep(f"s{i}", f"sweep-{i}", {})
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=first_use, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], errors
        assert len(Store(home).sweeps()) == 8


def test_prefix_lookups_take_percent_and_underscore_literally(tbd_home, capsys):
    store = Store()
    for name in ("s1", "s2"):
        for b in (4, 8):
            r = fake_record(RunConfig("resnet50", device="cpu", batch_size=b))
            r["sweep"] = {"id": f"id_{name}", "name": name, "point": b}
            store.save(r)
        store.save_sweep(f"id_{name}", name, {})
    assert store.sweeps("%") == [] and store.sweeps("_") == [] and store.sweeps("id%") == []
    assert [s["name"] for s in store.sweeps("id_s1")] == ["s1"]
    code = tbd_cli.main(["compare", "%", "_"])
    assert code == 2 and "neither a file, a sweep nor a run" in capsys.readouterr().err
    for prefix in ("%", "_", "2%"):
        with pytest.raises(Exception, match="no run"):
            store.get(prefix)


@pytest.mark.parametrize("command", [["results"], ["results", "show", "latest"], ["report"], ["export"], ["compare", "a", "b"], ["results", "--check"]])
def test_read_commands_on_a_file_home_say_so(command, tmp_path):
    home = tmp_path / "a-file"
    home.write_text("x")
    line = one_error_line(cli(*command, "--home", str(home)))
    assert "is a file, not a folder" in line


def test_reading_an_older_store_writes_nothing(tbd_home):
    """Readers must work on a store they cannot write (a read-only copy of an older one): only
    commands that store runs bring its tables up to date."""
    stored_runs(tbd_home)
    with sqlite3.connect(tbd_home / "tbd.sqlite") as conn:  # the layout before sweep claims existed
        conn.execute("DROP TABLE claims")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    before = (tbd_home / "tbd.sqlite").read_bytes()
    assert len(Store().list()) == 2 and Store().sweeps() == []
    assert (tbd_home / "tbd.sqlite").read_bytes() == before
    Store().prepare()
    with sqlite3.connect(tbd_home / "tbd.sqlite") as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        assert conn.execute("SELECT count(*) FROM claims").fetchone()[0] == 0
