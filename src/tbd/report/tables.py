"""Terminal tables of run records (rich), designed for 80 and 120 columns.

Width: the terminal's, or `$COLUMNS`, or 120 when output goes to a file or pipe; `wide=True`
(`--wide`) shows every column at full length whatever the width. Colour follows rich, which
honours `NO_COLOR` and drops colour when output is not a terminal.

The results table keeps what tells runs apart: a short id (the shortest prefix, at least the
date and time, that tells the listed runs apart; `tbd results show` takes any unique prefix), the
run (workload/framework, `+c` for compiled, `+cl` for channels-last, `xN` for N processes), batch, precision, throughput
with its 95% CI, and the status. Columns with one value for every row (flavor, device) move to
the caption; columns with no value (MFU on a CPU) are left out; error messages go below the table
so the rows stay one line each.
"""

from __future__ import annotations

import os
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from tbd.report.fmt import fmt_bytes, fmt_num  # noqa: F401  (re-exported: callers import them from here)
from tbd.harness.noise import machine_cause
from tbd.results.record import headline

PIPE_WIDTH = 120  # width of tables written to a file or pipe when $COLUMNS does not say
MIN_ID = 15  # 'YYYYMMDD-HHMMSS': the part of a run id a person reads
SHORT_UNITS = {"images": "img", "tokens": "tok", "frames": "frm", "audio_seconds": "audio-s", "samples": "smp"}  # under 100 columns
OPTIONAL_COLUMNS = ("compile s", "MFU %", "peak mem", "step ms")  # dropped in this order when a table is too wide
STATUS_STYLE = {"ok": "green", "unconverged": "yellow", "insufficient": "magenta", "failed": "red", "skipped": "dim"}


def make_console(wide: bool = False) -> Console:
    """A console sized to the terminal, `$COLUMNS`, or PIPE_WIDTH when writing to a pipe."""
    columns = os.environ.get("COLUMNS", "")
    if wide:
        return Console(width=max(int(columns) if columns.isdigit() else 0, 250))
    console = Console()
    if console.is_terminal or columns.isdigit():  # rich reads $COLUMNS itself
        return console
    return Console(width=PIPE_WIDTH)


def status_text(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'red')}]{status}[/]"


def short_ids(ids: list[str], minimum: int = MIN_ID) -> dict[str, str]:
    """Each id cut to the shortest prefix (at least `minimum` characters) unique among `ids`."""
    out = {}
    for run_id in ids:
        n = min(minimum, len(run_id))
        while n < len(run_id) and any(o != run_id and o.startswith(run_id[:n]) for o in ids):
            n += 1
        out[run_id] = run_id[:n]
    return out


def throughput_cell(h: dict[str, Any], with_unit: bool = True, short: bool = False) -> str:
    if h["kind"] == "memory":
        return "memory profile" if not short else "memory"
    if h["throughput"] is None:
        return "-"
    unit = SHORT_UNITS.get(h["unit"], h["unit"]) if short else h["unit"]
    return f"{fmt_num(h['throughput'])} {escape(unit)}/s" if with_unit else fmt_num(h["throughput"])


def ci_cell(h: dict[str, Any]) -> str:
    """The 95% CI half-width, coloured by convergence; never a CI where there is none."""
    if h["throughput"] is None or h["kind"] == "memory":
        return "-"
    if h["status"] == "insufficient" or h["ci_pct"] is None:
        return "[magenta]no CI[/]"
    return f"±{h['ci_pct']:.1f}%" if h["status"] == "ok" else f"[yellow]±{h['ci_pct']:.1f}%[/]"


def run_label(h: dict[str, Any]) -> str:
    # every stored string is escaped: a name is never read as markup
    return (escape(f"{h['workload']}/{h['framework']}") + (" +c" if h["compile"] else "") + (" +cl" if h.get("channels_last") else "")
            + (f" x{h['nproc']}" if h["nproc"] > 1 else "")
            + (" (tuned)" if h["kind"] == "tune" else "")
            + (escape(f" @{h['env']}") if h.get("env") else ""))


def results_table(records: list[dict[str, Any]], title: str | None = "tbd results", width: int = 120, wide: bool = False) -> tuple[Table, list[str]]:
    """(table, notes): the notes are the error messages and convergence remarks, one per line."""
    heads = [headline(r) for r in records]
    ids = {h["id"]: h["id"] for h in heads} if wide else short_ids([h["id"] for h in heads])
    units = {h["unit"] for h in heads if h["throughput"] is not None and h["kind"] != "memory"}
    one_unit = next(iter(units)) if len(units) == 1 else None
    thr_header = f"{one_unit}/s" if one_unit else "throughput"
    columns: list[tuple[str, str, Any]] = [
        ("id", "left", lambda h: escape(ids[h["id"]])),
        ("run", "left", run_label),
        ("flavor", "left", lambda h: escape(str(h["flavor"]))),
        ("device", "left", lambda h: escape(str(h["device"]))),
        ("batch", "right", lambda h: f"{h['batch_size']} {escape(h['batch_unit'])}" if wide or width >= 120 else str(h["batch_size"])),
        ("prec", "left", lambda h: escape(str(h["precision"]))),
        (thr_header, "right", lambda h: throughput_cell(h, with_unit=one_unit is None, short=width < 100 and not wide)),
        ("95% CI", "right", ci_cell),
        ("step ms", "right", lambda h: fmt_num(h["step_time_ms_p50"])),
        ("compile s", "right", lambda h: fmt_num(h["compile_time_s"]) if h["compile_time_s"] is not None else "-"),
        ("MFU %", "right", lambda h: fmt_num(h["mfu_pct"]) if h["mfu_pct"] is not None else "-"),
        ("peak mem", "right", lambda h: fmt_bytes(h["peak_bytes"])),
        ("status", "left", lambda h: status_text(h["status"]) + (f" ({escape(h['error_kind'])})" if h["status"] == "failed" and h["error_kind"] else "")),
    ]
    narrow: tuple[str, ...] = ()
    cells = {name: [fn(h) for h in heads] for name, _, fn in columns}
    caption = []
    for name in ("flavor", "device"):  # one value for every row: say it once, under the table
        if len(heads) > 1 and len(set(cells[name])) == 1 and not wide:
            caption.append(f"{name} {cells[name][0]}")
            narrow += (name,)
    batch_units = {h["batch_unit"] for h in heads}
    if not wide and width < 120 and len(batch_units) == 1:
        caption.append(f"batch in {next(iter(batch_units))}")
    keep = [(name, justify) for name, justify, _ in columns
            if name not in narrow and (wide or name in ("id", "status") or any(c not in ("-", "") for c in cells[name]))]
    # Too wide for the terminal: drop the optional columns, least needed first, until it fits.
    droppable = [] if wide else [c for c in OPTIONAL_COLUMNS if c in dict(keep)]
    while True:
        table = Table(title=title, header_style="bold", caption=", ".join(caption) or None, box=box.SIMPLE_HEAD, padding=0,
                      pad_edge=False, show_edge=False)
        for name, justify in keep:
            table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis", min_width=len(name))
        for i in range(len(heads)):
            table.add_row(*(cells[name][i] for name, _ in keep))
        if not droppable or _natural_width(table) <= width:
            return table, notes_for(records, ids)
        gone = droppable.pop(0)
        keep = [(name, justify) for name, justify in keep if name != gone]


def _natural_width(table: Table) -> int:
    console = Console(width=10_000)
    return Measurement.get(console, console.options, table).maximum


def notes_for(records: list[dict[str, Any]], ids: dict[str, str]) -> list[str]:
    """One short line per run that needs a word (why it failed or did not converge, what its step
    times show), then one line for the machine: how many runs ran while it was busy, and why."""
    notes, busy = [], {}
    for r in records:
        err = r.get("error") or {}
        method = r.get("method") or {}
        verdict = method.get("convergence") or {}
        if r["status"] in ("failed", "skipped") and err:
            message = str(err.get("message") or "").removeprefix(f"{r['status']}: ")  # older skipped records said it twice
            kind = err.get("kind") or ""
            why = f" ({escape(kind)})" if kind and kind != r["status"] else ""
            notes.append(f"{escape(ids[r['id']])}: {status_text(r['status'])}{why}: {escape(message)}")
        elif r["status"] in ("unconverged", "insufficient"):
            stop = method.get("stop_reason") or ""
            extra = f"; {stop}" if stop.startswith("no steady state") else ""
            notes.append(f"{ids[r['id']]}: {status_text(r['status'])}: {escape((verdict.get('reason') or '') + extra)}")
        noise = method.get("noise") or {}
        own = noise.get("run_warnings", [w for w in noise.get("warnings") or [] if w.startswith("step times")])
        if own:
            notes.append(f"{ids[r['id']]}: [yellow]noisy[/]: {escape('; '.join(own))}")
        for warning in noise.get("warnings") or []:
            if warning not in own:
                busy.setdefault(machine_cause(warning) or warning, set()).add(r["id"])
    if busy:
        runs = set().union(*busy.values())
        causes = "; ".join(f"{cause} ({len(ids_)} run(s))" for cause, ids_ in busy.items())
        notes.append(f"[yellow]busy machine[/] during {len(runs)} of {len(records)} run(s): {escape(causes)} ('tbd results show ID' has the numbers)")
    return notes


def print_records(records: list[dict[str, Any]], title: str | None = "tbd results", console: Console | None = None, wide: bool = False) -> None:
    console = console or make_console(wide)
    table, notes = results_table(records, title, width=console.width, wide=wide)
    console.print(table)
    for note in notes:
        console.print(f"  {note}", overflow="fold")
