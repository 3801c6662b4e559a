"""The results store: an embedded SQLite database plus one JSON file per run.

Location: `$TBD_HOME` if set (or `--home`), else `$XDG_DATA_HOME/tbd`, else `~/.local/share/tbd`.
Layout: `tbd.sqlite` (tables `runs`, one row per run with the headline columns and the whole
record as JSON; `sweeps`; `claims`, the sweep lines a runner is working on; `meta`),
`runs/<id>.json` (a copy of each record, from which a damaged database can be rebuilt) and
`quarantine/` (what `tbd results --check --quarantine` moved aside).

What survives which fault (docs/faults.md says it for users; tests/faults/ checks it):
- The commands that store runs call `prepare()` before measuring: the store must be a folder,
  on a disk that is not (nearly) full, writable, and its database sound. Otherwise one line
  (exit 2) and nothing is measured.
- `save()` writes the JSON copy (a temporary name, flushed, renamed) and then the row (one
  transaction). A JSON file in `runs/` without its row is a save cut short (a kill, a full disk):
  `prepare()` finishes it by adding the row, removes leftover temporary files, and writes the
  JSON copy of a row that has none. When the row cannot be written the record stays in `runs/`
  (or, when that fails too, in the first writable of the current folder, the temp folder and the
  home folder) and `StoreError` says where: a finished measurement is never lost silently.
- Readers skip rows they cannot parse, with one warning naming them; a damaged database file is
  one line that names the fix. Schema changes run in one write transaction (BEGIN IMMEDIATE),
  so processes opening a new store at once do not race.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tbd.errors import StoreError, TbdError, UsageError
from tbd.results.record import SCHEMA_VERSION, STATUSES, RunRecord, as_dict

_COLUMNS = ("id", "created_at", "workload", "framework", "flavor", "device", "batch_size", "precision", "status")
_FILTERS = ("workload", "framework", "flavor", "device", "status", "sweep")
_TABLES = {"meta", "runs", "sweeps", "claims"}
REQUIRED_CONFIG = ("workload", "framework", "flavor", "device", "batch_size", "precision")
MIN_FREE_BYTES = 16 * 2**20  # a record is tens of KiB, a memory profile some hundreds: far below this
PROBE_BYTES = 64 * 2**10  # written and removed by prepare(): read-only folders, quotas, full disks
STALE_TMP_S = 60.0  # a temporary file this old belongs to no live save (a save takes milliseconds)
CLAIM_STALE_S = 6 * 3600.0  # a claim from another machine not refreshed for this long is abandoned


class NoSuchRun(UsageError):
    """No stored run has that id (or id prefix)."""


def default_home() -> Path:
    if os.environ.get("TBD_HOME"):
        return Path(os.environ["TBD_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tbd"


def _stderr_warning(message: str) -> None:
    sys.stderr.write(f"tbd: warning: {message}\n")


class Store:
    def __init__(self, home: str | Path | None = None, warn: Callable[[str], None] | None = None):
        self.home = Path(home).expanduser() if home else default_home()
        self.db_path = self.home / "tbd.sqlite"
        self.runs_dir = self.home / "runs"
        self.quarantine_dir = self.home / "quarantine"
        self.warn = warn or _stderr_warning
        self.unreadable: dict[str, str] = {}  # id -> why, of the rows readers skipped
        self._warned: set[str] = set()

    # ---- opening -------------------------------------------------------------------------
    def _fix_hint(self) -> str:
        home = "" if self.home == default_home() else f" --home {self.home}"
        return f"'tbd results --check --quarantine{home}' moves it aside and rebuilds it from the run files in {self.runs_dir}"

    def _db_error(self, exc: BaseException) -> UsageError:
        text = _one_line(str(exc))
        if "locked" in text or "busy" in text:
            return UsageError(f"results store {self.db_path} stayed locked by another tbd for 30 s; try again when it is done")
        if "readonly" in text or "read-only" in text:
            return UsageError(f"results store {self.db_path} is read-only ({text}); fix its permissions or set TBD_HOME to a writable folder")
        if "full" in text:
            return UsageError(f"the disk of results store {self.home} is full ({text}); free some space or set TBD_HOME to a folder on another disk")
        return UsageError(f"results store {self.db_path} is not a readable database ({text}); {self._fix_hint()}, or set TBD_HOME to another folder")

    def _check_folder(self) -> None:
        if self.home.exists() and not self.home.is_dir():
            raise UsageError(f"results store {self.home} is a file, not a folder; give --home (or TBD_HOME) a folder, which tbd creates if needed")

    def _open(self, write: bool) -> sqlite3.Connection | None:
        """A connection with the current schema; None for a reader when there is no database yet."""
        self._check_folder()
        if not write and not self.db_path.exists():
            return None
        try:
            if write:
                self.runs_dir.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        except OSError as exc:
            raise UsageError(f"cannot open results store in {self.home} ({_why(exc)}); set TBD_HOME to a writable folder") from None
        except sqlite3.DatabaseError as exc:
            raise self._db_error(exc) from None
        try:
            self._migrate(conn, write)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._db_error(exc) from None
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _connection(self, write: bool = False) -> Iterator[sqlite3.Connection | None]:
        conn = self._open(write)
        try:
            yield conn
        except sqlite3.DatabaseError as exc:
            raise self._db_error(exc) from None
        finally:
            if conn is not None:
                conn.close()

    def _migrate(self, conn: sqlite3.Connection, write: bool = True) -> None:
        """Bring the tables up to date. Checked without writing first (a reader of a store that has
        what reading needs writes nothing: the store may be read-only); the change itself runs
        under the write lock and checks again, so concurrent first opens do not collide."""
        if self._schema_current(conn, write):
            return
        with _transaction(conn):
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, created_at TEXT, workload TEXT, framework TEXT,"
                " flavor TEXT, device TEXT, batch_size INTEGER, precision TEXT, status TEXT, record TEXT NOT NULL, sweep TEXT)"
            )
            # Stores made before sweeps existed lack the column.
            if "sweep" not in {r[1] for r in conn.execute("PRAGMA table_info(runs)")}:
                conn.execute("ALTER TABLE runs ADD COLUMN sweep TEXT")
            conn.execute("CREATE TABLE IF NOT EXISTS sweeps (id TEXT PRIMARY KEY, name TEXT, created_at TEXT, spec TEXT, summary TEXT)")
            conn.execute("CREATE TABLE IF NOT EXISTS claims (sweep TEXT, item TEXT, owner TEXT, host TEXT, pid INTEGER,"
                         " started REAL, refreshed REAL, PRIMARY KEY (sweep, item))")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is not None and int(row[0]) > SCHEMA_VERSION:
                raise self._newer(row[0])
            # Older rows are upgraded as they are read.
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _schema_current(self, conn: sqlite3.Connection, write: bool) -> bool:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        needed = _TABLES if write else _TABLES - {"claims"}  # claims are for writers (sweep runners)
        if not needed <= tables or "sweep" not in {r[1] for r in conn.execute("PRAGMA table_info(runs)")}:
            return False
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise self._newer(row[0])
        # Readers upgrade older rows as they read them; writers record the version they write.
        return row is not None and (not write or int(row[0]) == SCHEMA_VERSION)

    def _newer(self, version: str) -> UsageError:
        return UsageError(f"results store {self.db_path} has schema {version}, newer than this tbd ({SCHEMA_VERSION}); upgrade tbd or use another --home")

    # ---- before a run: can the store take it? -------------------------------------------
    def prepare(self) -> "Store":
        """Check that the store can take a run before one starts (one UsageError naming the fix
        otherwise, so a bad store costs no measurement), and finish or remove half-written saves."""
        self._check_folder()
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create results store {self.home} ({_why(exc)}); set TBD_HOME (or --home) to a writable folder") from None
        free = shutil.disk_usage(self.home).free
        if free < MIN_FREE_BYTES:
            raise UsageError(f"the disk of results store {self.home} is nearly full ({free / 2**20:.1f} MiB free, tbd wants "
                             f"{MIN_FREE_BYTES // 2**20} MiB); free some space or set TBD_HOME to a folder on another disk")
        probe = self.runs_dir / f".tbd-probe-{os.getpid()}"
        try:
            _write_synced(probe, b"\0" * PROBE_BYTES)
        except OSError as exc:
            raise UsageError(f"results store {self.home} cannot take runs: writing in {self.runs_dir} fails ({_why(exc)}); "
                             "fix its permissions or free space, or set TBD_HOME to a writable folder") from None
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
        with self._connection(write=True) as conn:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise UsageError(f"results store {self.db_path} is damaged ({_one_line(problems[0])}); {self._fix_hint()}")
            with _transaction(conn):  # the database itself takes a write (read-only file, full disk)
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('last_opened', ?)", (_now(),))
            self._repair(conn)
        return self

    def _repair(self, conn: sqlite3.Connection) -> list[str]:
        """Finish saves cut short: add the rows of JSON files that have none, write the JSON of
        rows that have none, remove stale temporary files. Safe while other processes save."""
        done: list[str] = []
        files = {p.name[: -len(".json")]: p for p in self.runs_dir.glob("*.json") if not p.name.startswith(".")}
        ids = {r[0] for r in conn.execute("SELECT id FROM runs")}
        for run_id in sorted(set(files) - ids):
            done.append(self._import_file(conn, files[run_id]))
        for run_id in sorted(ids - set(files)):
            row = conn.execute("SELECT record FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row and _parse(row[0])[0] is not None:
                with contextlib.suppress(OSError):
                    _write_new(self.runs_dir / f"{run_id}.json", row[0])
                    done.append(f"wrote the missing file copy of run {run_id}")
        now = time.time()
        for p in self.runs_dir.iterdir():
            if p.name.endswith(".tmp") or p.name.startswith(".tbd-probe-"):
                with contextlib.suppress(OSError):
                    if now - p.stat().st_mtime > STALE_TMP_S:
                        p.unlink()
                        done.append(f"removed the leftover temporary file {p.name}")
        return done

    def _import_file(self, conn: sqlite3.Connection, path: Path) -> str:
        record, why = _read_copy(path)
        if record is None:
            target = self._move_aside(path, path.name)
            return f"moved the unreadable file {path.name} ({why}) to {target}"
        with _transaction(conn):
            conn.execute(f"INSERT OR IGNORE INTO runs ({', '.join(_COLUMNS)}, sweep, record) VALUES ({', '.join('?' * (len(_COLUMNS) + 2))})",
                         _row(record, _dumps(record)))
            sweep = record.get("sweep") or {}
            if sweep.get("id"):  # a rebuilt database gets its sweeps back from the records
                conn.execute("INSERT OR IGNORE INTO sweeps VALUES (?, ?, ?, '{}', '{}')", (sweep["id"], sweep.get("name") or sweep["id"], record["created_at"]))
        return f"added run {record['id']} from its file"

    def _move_aside(self, path: Path, name: str) -> Path:
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        target = self.quarantine_dir / name
        if target.exists():
            target = self.quarantine_dir / f"{_stamp()}-{name}"
        os.replace(path, target)
        return target

    # ---- writing -------------------------------------------------------------------------
    def save(self, record: RunRecord | dict[str, Any]) -> Path:
        """Store a record: its JSON copy, then its row. Raises StoreError (saying where the record
        went instead) when the row cannot be written; never loses the record silently."""
        record = as_dict(record)
        text = _dumps(record)
        path = self.runs_dir / f"{record['id']}.json"
        copy_error = row_error = None
        try:
            self._check_folder()
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            _write_replace(path, text)
        except (OSError, TbdError) as exc:
            copy_error = exc
        try:
            with self._connection(write=True) as conn, _transaction(conn):
                conn.execute(f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}, sweep, record) VALUES ({', '.join('?' * (len(_COLUMNS) + 2))})",
                             _row(record, text))
        except (sqlite3.Error, OSError, OverflowError, TbdError) as exc:
            row_error = exc
        if row_error is None:
            if copy_error is not None:
                self.warn(f"run {record['id']} is stored, but its file copy {path} could not be written ({_why(copy_error)}); "
                          "tbd writes it at its next start")
            return path
        why = _why(row_error)
        if copy_error is None:
            raise StoreError(f"the run finished but results store {self.db_path} could not take it ({why}); its record is saved as {path} "
                             "and tbd adds it to the database when it next starts with a working store ('tbd results --check' tells)")
        rescued = _rescue(record["id"], text)
        if rescued is None:
            raise StoreError(f"the run finished but its record could not be saved anywhere ({why}; {_why(copy_error)}); free some space "
                             "or fix the store's permissions and run it again")
        raise StoreError(f"the run finished but results store {self.home} could not take it ({why}); its record is saved as {rescued}: "
                         f"once the store works, move it into {self.runs_dir} and tbd adds it")

    def save_sweep(self, sweep_id: str, name: str, spec: dict[str, Any], summary: dict[str, Any] | None = None) -> None:
        """Record (or update) a sweep's definition; its runs carry `sweep_id` in the `sweep` column."""
        with self._connection(write=True) as conn, _transaction(conn):
            old = conn.execute("SELECT created_at FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
            created = old[0] if old else _now()
            conn.execute("INSERT OR REPLACE INTO sweeps VALUES (?, ?, ?, ?, ?)",
                         (sweep_id, name, created, _dumps(spec, indent=None), _dumps(summary or {}, indent=None)))

    # ---- claims: concurrent sweep runners share the work ---------------------------------
    def claim(self, sweep_id: str, item: str, owner: str) -> dict[str, Any] | None:
        """Take `item` of a sweep for `owner`: None when taken (or already ours), else the live
        holder {owner, host, pid}. Claims of processes that died are taken over."""
        host, pid = socket.gethostname(), os.getpid()
        with self._connection(write=True) as conn, _transaction(conn):
            row = conn.execute("SELECT owner, host, pid, started, refreshed FROM claims WHERE sweep = ? AND item = ?", (sweep_id, item)).fetchone()
            if row and row[0] != owner and _claim_alive(*row[1:]):
                return {"owner": row[0], "host": row[1], "pid": row[2]}
            conn.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?, ?)", (sweep_id, item, owner, host, pid, _process_started(pid), time.time()))
        return None

    def release(self, sweep_id: str, item: str, owner: str) -> None:
        with self._connection(write=True) as conn, _transaction(conn):
            conn.execute("DELETE FROM claims WHERE sweep = ? AND item = ? AND owner = ?", (sweep_id, item, owner))

    # ---- reading -------------------------------------------------------------------------
    def list(self, limit: int | None = None, **filters: Any) -> list[dict[str, Any]]:
        """Readable records, newest first (unreadable rows skipped with one warning)."""
        bad = [k for k in filters if k not in _FILTERS]
        if bad:
            raise ValueError(f"unknown filter {bad[0]}")
        where = " AND ".join(f"{k} = ?" for k in filters if filters[k] is not None)
        args = [v for v in filters.values() if v is not None]
        # created_at has whole seconds: runs of one second are ordered as they were stored (rowid), not by their random ids
        sql = "SELECT id, record FROM runs" + (f" WHERE {where}" if where else "") + " ORDER BY created_at DESC, rowid DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._connection() as conn:
            rows = conn.execute(sql, args).fetchall() if conn is not None else []
        return self._readable(rows)

    def ids(self, sweep: str | None = None) -> set[str]:
        """Ids of the stored runs (of one sweep): cheap, for noticing runs stored by others."""
        with self._connection() as conn:
            if conn is None:
                return set()
            sql, args = ("SELECT id FROM runs WHERE sweep = ?", (sweep,)) if sweep else ("SELECT id FROM runs", ())
            return {r[0] for r in conn.execute(sql, args)}

    def records(self, ids: set[str] | list[str]) -> list[dict[str, Any]]:
        """The readable records of these ids, newest first."""
        ids, rows = sorted(ids), []
        with self._connection() as conn:
            for i in range(0, len(ids) if conn is not None else 0, 500):
                chunk = ids[i : i + 500]
                rows += conn.execute(f"SELECT id, record FROM runs WHERE id IN ({', '.join('?' * len(chunk))})", chunk).fetchall()
        records = self._readable(rows)
        return sorted(records, key=lambda r: (r["created_at"], r["id"]), reverse=True)

    def sweeps(self, name_or_id: str | None = None) -> list[dict[str, Any]]:
        """Sweeps, newest first; with `name_or_id`, those whose name or id (or id prefix) matches."""
        sql, args = "SELECT id, name, created_at, spec, summary FROM sweeps", ()
        if name_or_id:
            sql += " WHERE name = ? OR substr(id, 1, ?) = ?"  # a literal prefix: '%' and '_' are characters here
            args = (name_or_id, len(name_or_id), name_or_id)
        with self._connection() as conn:
            rows = conn.execute(sql + " ORDER BY created_at DESC, id DESC", args).fetchall() if conn is not None else []
        return [{"id": r[0], "name": r[1], "created_at": r[2], "spec": _loads_or_empty(r[3]), "summary": _loads_or_empty(r[4])} for r in rows]

    def get(self, run_id: str) -> dict[str, Any]:
        """A run by id or unique id prefix; 'latest' is the newest readable run."""
        with self._connection() as conn:
            if conn is None:
                raise NoSuchRun(f"no runs stored in {self.home} yet; run 'tbd run resnet50' first")
            if run_id == "latest":
                for row in conn.execute("SELECT id, record FROM runs ORDER BY created_at DESC, rowid DESC"):
                    found = self._readable([row])
                    if found:
                        return found[0]
                rows = []
            else:
                rows = conn.execute("SELECT id, record FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id", (len(run_id), run_id)).fetchall()
            if not rows:  # before saying "no such run": is it the database that lost it?
                problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
                if problems != ["ok"]:
                    raise UsageError(f"results store {self.db_path} is damaged ({_one_line(problems[0])}); {self._fix_hint()}")
        exact = [r for r in rows if r[0] == run_id]
        rows = exact or rows
        if not rows:
            raise NoSuchRun(f"no run '{run_id}' in {self.home}; 'tbd results' lists the stored runs")
        if len(rows) > 1:
            raise UsageError(f"run id '{run_id}' is ambiguous ({len(rows)} runs start with it); give more characters")
        record, why = _parse(rows[0][1])
        if record is None:
            raise UsageError(f"run {rows[0][0]} in {self.home} cannot be read ({why}); 'tbd results --check --quarantine' moves it aside")
        return record

    def _readable(self, rows: list[tuple[str, str]]) -> list[dict[str, Any]]:
        out, skipped = [], []
        for run_id, text in rows:
            record, why = _parse(text)
            if record is None:
                self.unreadable[run_id] = why
                skipped.append(run_id)
            else:
                out.append(record)
        new = [i for i in skipped if i not in self._warned]
        if new:
            self._warned.update(new)
            if _collected is not None:  # a command gathers them into one warning at its end
                _collected.setdefault(self.db_path, [])
                _collected[self.db_path] += [i for i in new if i not in _collected[self.db_path]]
            else:
                self.warn(_unreadable_warning(self.db_path, new))
        return out

    # ---- tbd results --check -------------------------------------------------------------
    def check(self, quarantine: bool = False) -> dict[str, Any]:
        """What is wrong with the store, and with `quarantine`, fix it: unreadable rows are
        restored from their file copy or moved to quarantine/, a damaged database file is moved
        there and rebuilt from runs/*.json, half-written saves are finished.
        A file copy in runs/ that cannot be read is rewritten from its run's readable row (without
        --quarantine too: the row is the same record, so nothing is lost); the others are listed.
        Returns {database, runs, unreadable: {id: why}, unreadable_files: {name: why}, pending: [...], actions: [...]}."""
        self._check_folder()
        report: dict[str, Any] = {"database": "missing", "runs": 0, "unreadable": {}, "unreadable_files": {}, "pending": [], "actions": []}
        if self.runs_dir.is_dir():
            report["pending"] = sorted(p.name for p in self.runs_dir.iterdir() if p.name.endswith(".tmp"))
        if not self.db_path.exists():
            if quarantine and self.runs_dir.is_dir():
                report["actions"] += self._rebuild()
            return report
        try:
            conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
            try:
                problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} if problems == ["ok"] else set()
                rows = conn.execute("SELECT id, record FROM runs").fetchall() if "runs" in tables else []
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if problems != ["ok"]:
            report["database"] = f"damaged ({_one_line(problems[0])})"
            if quarantine:
                moved = []
                for suffix in ("", "-journal", "-wal", "-shm"):
                    p = Path(f"{self.db_path}{suffix}")
                    if p.exists():
                        moved.append(self._move_aside(p, f"{_stamp()}-{p.name}"))
                report["actions"].append(f"moved the damaged database to {moved[0]}")
                report["actions"] += self._rebuild()
            return report
        report["database"] = "ok"
        report["runs"] = len(rows)
        for run_id, text in rows:
            if _parse(text)[0] is None:
                report["unreadable"][run_id] = _parse(text)[1]
        if self.runs_dir.is_dir():
            self._check_copies(dict(rows), report)
        if quarantine:
            with self._connection(write=True) as conn:
                for run_id, why in report["unreadable"].items():
                    report["actions"].append(self._fix_row(conn, run_id, why))
                report["actions"] += self._repair(conn)
        return report

    def _check_copies(self, row_texts: dict[str, str], report: dict[str, Any]) -> None:
        """The JSON copies in runs/: an unreadable one is rewritten from its run's readable row or
        listed; a readable one without a row is a save cut short (pending)."""
        for path in sorted(p for p in self.runs_dir.glob("*.json") if not p.name.startswith(".")):
            run_id = path.name[: -len(".json")]
            record, why = _read_copy(path)
            if record is not None:
                if run_id not in row_texts:
                    report["pending"].append(path.name)
                continue
            if run_id in row_texts and run_id not in report["unreadable"]:
                try:
                    _write_replace(path, row_texts[run_id])
                except OSError as exc:
                    report["unreadable_files"][path.name] = f"{why}; rewriting it from its database row failed: {_why(exc)}"
                else:
                    report["actions"].append(f"rewrote the unreadable file copy {path} ({why}) from its database row")
                continue
            report["unreadable_files"][path.name] = why + ("" if run_id in row_texts else "; the database has no row of this run")

    def _fix_row(self, conn: sqlite3.Connection, run_id: str, why: str) -> str:
        copy = self.runs_dir / f"{run_id}.json"
        record = _read_copy(copy)[0] if copy.exists() else None
        if record is not None:
            with _transaction(conn):
                conn.execute(f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}, sweep, record) VALUES ({', '.join('?' * (len(_COLUMNS) + 2))})",
                             _row(record, _dumps(record)))
            return f"restored run {run_id} from its file copy ({why})"
        text = conn.execute("SELECT record FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        target = self.quarantine_dir / f"{run_id}.row.txt"
        _write_replace(target, text if isinstance(text, str) else repr(text))
        if copy.exists():
            self._move_aside(copy, copy.name)
        with _transaction(conn):
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        return f"moved unreadable run {run_id} ({why}) to {target}"

    def _rebuild(self) -> list[str]:
        """A new database from the JSON copies in runs/ (prepare() adds every file without a row)."""
        with self._connection(write=True) as conn:
            done = self._repair(conn)
        added = sum(a.startswith("added run") for a in done)
        return [f"rebuilt the database from {added} run file(s) in {self.runs_dir}"] + [a for a in done if not a.startswith("added run")]


# ---- one warning per command ------------------------------------------------------------

_collected: dict[Path, list[str]] | None = None


@contextlib.contextmanager
def one_warning(emit: Callable[[str], None] = _stderr_warning) -> Iterator[None]:
    """Within this block, the unreadable rows that readers skip are reported once, at its end
    (the `tbd` command wraps every command in it), however many queries met them."""
    global _collected
    outer, _collected = _collected, {}
    try:
        yield
    finally:
        found, _collected = _collected, outer
        for db, ids in found.items():
            emit(_unreadable_warning(db, ids))


def _unreadable_warning(db: Path, ids: list[str]) -> str:
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    return (f"skipped {len(ids)} unreadable run(s) in {db}: {shown}; "
            "'tbd results --check' lists them and 'tbd results --check --quarantine' moves them aside")


# ---- helpers ---------------------------------------------------------------------------


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction holding the write lock from its start (BEGIN IMMEDIATE)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _row(record: dict[str, Any], text: str) -> tuple:
    cfg = record["config"]
    return (record["id"], record["created_at"], cfg["workload"], cfg["framework"], cfg["flavor"], cfg["device"],
            cfg["batch_size"], cfg["precision"], record["status"], (record.get("sweep") or {}).get("id"), text)


def _parse(text: Any) -> tuple[dict[str, Any] | None, str]:
    """(record, '') for a readable stored record, else (None, why)."""
    try:
        record = as_dict(json.loads(text))
    except (TypeError, ValueError, RecursionError) as exc:
        return None, (f"not JSON: {exc}" if isinstance(exc, json.JSONDecodeError) else str(exc))[:120]
    cfg = record["config"]
    missing = [k for k in REQUIRED_CONFIG if k not in cfg]
    if missing:
        return None, f"its config has no {missing[0]}"
    if record.get("status") not in STATUSES or not isinstance(record.get("created_at"), str) or not isinstance(record["id"], str):
        return None, "no valid status, id or created_at"
    return record, ""


def _read_copy(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(record, '') when a file of runs/ holds the readable record of the run it is named after, else (None, why)."""
    try:
        record, why = _parse(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        return None, _why(exc)
    if record is not None and record["id"] != path.name[: -len(".json")]:
        return None, f"its id is {record['id']!r}"
    return record, why


def _finite(value: Any) -> Any:
    """NaN and infinities as null: the store and its exports stay strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _dumps(value: Any, indent: int | None = 1) -> str:
    try:
        return json.dumps(value, indent=indent, default=_jsonable, allow_nan=False)
    except ValueError:  # a NaN or infinity somewhere (a metric of a run cut short)
        return json.dumps(_finite(json.loads(json.dumps(value, default=_jsonable))), indent=indent, allow_nan=False)


def _loads_or_empty(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_replace(path: Path, text: str) -> None:
    """Write a whole file or nothing: a temporary name, flushed, renamed; never left behind."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        _write_synced(tmp, text.encode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _write_new(path: Path, text: str) -> None:
    """Like _write_replace, but leaves an existing file alone (a concurrent save wins)."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        _write_synced(tmp, text.encode())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _rescue(run_id: str, text: str) -> Path | None:
    """Somewhere safe for a record the store could not take: the first folder that takes it."""
    for folder in (Path.cwd(), Path(tempfile.gettempdir()), Path.home()):
        path = folder / f"tbd-rescued-{run_id}.json"
        try:
            _write_replace(path, text)
            return path
        except OSError:
            continue
    return None


def _process_started(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _claim_alive(host: str, pid: int, started: float | None, refreshed: float) -> bool:
    """Is the holder of a claim still at work? On this machine: its process exists (and is the
    same process, not a reused pid). Elsewhere: it refreshed the claim recently."""
    if host != socket.gethostname():
        return time.time() - (refreshed or 0) < CLAIM_STALE_S
    now_started = _process_started(pid)
    return now_started is not None and (started is None or abs(now_started - started) < 1.0)


def _why(exc: BaseException) -> str:
    return _one_line(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)


def _one_line(text: str, limit: int = 160) -> str:
    """Messages stay one line: SQLite's reports span several."""
    text = " ".join(text.replace("*** in database main ***", "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _stamp() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
