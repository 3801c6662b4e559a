"""The results store: an embedded SQLite database plus one JSON file per run.

Location: `$TBD_HOME` if set (or `--home`), else `$XDG_DATA_HOME/tbd`, else `~/.local/share/tbd`.
Layout: `tbd.sqlite` (table `runs`, one row per run with the headline columns and the whole
record as JSON) and `runs/<id>.json`. Each save is atomic: the JSON file is written to a
temporary name and renamed, and the row goes in within one transaction, so an interrupt leaves
either the whole run or nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from tbd.errors import UsageError
from tbd.results.record import SCHEMA_VERSION, RunRecord, as_dict

_COLUMNS = ("id", "created_at", "workload", "framework", "flavor", "device", "batch_size", "precision", "status")


def default_home() -> Path:
    if os.environ.get("TBD_HOME"):
        return Path(os.environ["TBD_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tbd"


class Store:
    def __init__(self, home: str | Path | None = None):
        self.home = Path(home).expanduser() if home else default_home()
        self.db_path = self.home / "tbd.sqlite"
        self.runs_dir = self.home / "runs"

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if not create and not self.db_path.exists():
            return None
        try:
            if create:
                self.runs_dir.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, timeout=30)
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, created_at TEXT, workload TEXT, framework TEXT,"
                " flavor TEXT, device TEXT, batch_size INTEGER, precision TEXT, status TEXT, record TEXT NOT NULL)"
            )
            # Sweeps (tbd.sweep): a `sweep` column on runs (added to stores made before it) and a
            # table of sweep definitions, so `tbd report NAME` and resume can find a sweep's runs.
            if "sweep" not in {r[1] for r in conn.execute("PRAGMA table_info(runs)")}:
                with conn:
                    conn.execute("ALTER TABLE runs ADD COLUMN sweep TEXT")
            conn.execute("CREATE TABLE IF NOT EXISTS sweeps (id TEXT PRIMARY KEY, name TEXT, created_at TEXT, spec TEXT, summary TEXT)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None or (create and int(row[0]) < SCHEMA_VERSION):  # older rows are upgraded as they are read
                with conn:
                    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise UsageError(f"results store {self.db_path} has schema {row[0]}, newer than this tbd ({SCHEMA_VERSION}); upgrade tbd or use another --home")
            return conn
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"results store {self.db_path} is not a readable database ({exc}); move it aside or set TBD_HOME to another folder") from None
        except OSError as exc:
            raise UsageError(f"cannot open results store in {self.home} ({exc.strerror}); set TBD_HOME to a writable folder") from None

    def save(self, record: RunRecord | dict[str, Any]) -> Path:
        record = as_dict(record)
        conn = self._connect(create=True)
        path = self.runs_dir / f"{record['id']}.json"
        tmp = path.with_suffix(".json.tmp")
        text = json.dumps(record, indent=1, default=_jsonable)
        tmp.write_text(text)
        os.replace(tmp, path)
        cfg = record["config"]
        with conn:
            conn.execute(
                f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}, sweep, record) VALUES ({', '.join('?' * (len(_COLUMNS) + 2))})",
                (record["id"], record["created_at"], cfg["workload"], cfg["framework"], cfg["flavor"], cfg["device"],
                 cfg["batch_size"], cfg["precision"], record["status"],
                 (record.get("sweep") or {}).get("id"), text),
            )
        conn.close()
        return path

    def list(self, limit: int | None = None, **filters: Any) -> list[dict[str, Any]]:
        conn = self._connect(create=False)
        if conn is None:
            return []
        where = " AND ".join(f"{k} = ?" for k in filters if filters[k] is not None)
        args = [v for v in filters.values() if v is not None]
        sql = "SELECT record FROM runs" + (f" WHERE {where}" if where else "") + " ORDER BY created_at DESC, id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        try:
            rows = conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"results store {self.db_path} cannot be read ({exc}); move it aside or set TBD_HOME") from None
        finally:
            conn.close()
        return [as_dict(json.loads(r[0])) for r in rows]

    def save_sweep(self, sweep_id: str, name: str, spec: dict[str, Any], summary: dict[str, Any] | None = None) -> None:
        """Record (or update) a sweep's definition; its runs carry `sweep_id` in the `sweep` column."""
        conn = self._connect(create=True)
        with conn:
            old = conn.execute("SELECT created_at FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
            created = old[0] if old else _now()
            conn.execute("INSERT OR REPLACE INTO sweeps VALUES (?, ?, ?, ?, ?)",
                         (sweep_id, name, created, json.dumps(spec, default=_jsonable), json.dumps(summary or {}, default=_jsonable)))
        conn.close()

    def sweeps(self, name_or_id: str | None = None) -> list[dict[str, Any]]:
        """Sweeps, newest first; with `name_or_id`, those whose name or id (or id prefix) matches."""
        conn = self._connect(create=False)
        if conn is None:
            return []
        try:
            sql = "SELECT id, name, created_at, spec, summary FROM sweeps"
            args: tuple = ()
            if name_or_id:
                sql += " WHERE name = ? OR id LIKE ?"
                args = (name_or_id, name_or_id.replace("%", "") + "%")
            rows = conn.execute(sql + " ORDER BY created_at DESC, id DESC", args).fetchall()
        finally:
            conn.close()
        return [{"id": r[0], "name": r[1], "created_at": r[2], "spec": json.loads(r[3] or "{}"), "summary": json.loads(r[4] or "{}")} for r in rows]

    def get(self, run_id: str) -> dict[str, Any]:
        """A run by id or unique id prefix; 'latest' is the newest run."""
        conn = self._connect(create=False)
        if conn is None:
            raise UsageError(f"no runs stored in {self.home} yet; run 'tbd run resnet50' first")
        try:
            if run_id == "latest":
                rows = conn.execute("SELECT id, record FROM runs ORDER BY created_at DESC, id DESC LIMIT 1").fetchall()
            else:
                rows = conn.execute("SELECT id, record FROM runs WHERE id LIKE ? ORDER BY id", (run_id.replace("%", "") + "%",)).fetchall()
        finally:
            conn.close()
        exact = [r for r in rows if r[0] == run_id]
        rows = exact or rows
        if not rows:
            raise UsageError(f"no run '{run_id}' in {self.home}; 'tbd results' lists the stored runs")
        if len(rows) > 1:
            raise UsageError(f"run id '{run_id}' is ambiguous ({len(rows)} runs start with it); give more characters")
        return as_dict(json.loads(rows[0][1]))


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
