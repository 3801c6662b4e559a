"""Terminal tables of run records (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tbd.report.fmt import fmt_bytes, fmt_num  # noqa: F401  (re-exported: callers import them from here)
from tbd.results.record import headline


def make_console() -> Console:
    """A console that keeps wide tables readable when output goes to a file or pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=180)


def results_table(records: list[dict[str, Any]], title: str = "tbd results") -> Table:
    table = Table(title=title, header_style="bold")
    for col, justify in (("id", "left"), ("workload", "left"), ("framework", "left"), ("flavor", "left"), ("device", "left"),
                         ("batch", "right"), ("precision", "left"), ("throughput (median ±95% CI)", "right"),
                         ("step p50 ms", "right"), ("MFU %", "right"), ("peak mem", "right"), ("status", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for record in records:
        h = headline(record)
        if h["status"] == "ok":
            thr = f"{fmt_num(h['throughput'])} {h['unit']}/s ±{h['ci_pct']:.1f}%" if h["throughput"] else "-"
            status = "[green]ok[/]"
        else:
            thr = "-"
            color = "yellow" if h["status"] == "skipped" else "red"  # skipped: a sweep point not run after an OOM
            error = str(h["error"] or "").removeprefix(f"{h['status']}: ")  # older skipped records said it twice
            status = f"[{color}]{_text(h['status'])}[/]: {_text(error)}"
        table.add_row(  # every stored string is escaped: a name is never read as markup
            _text(h["id"]), _text(h["workload"]), _text(h["framework"]) + (" +compile" if h["compile"] else ""), _text(h["flavor"]),
            _text(h["device"]), f"{h['batch_size']} {_text(h['batch_unit'])}", _text(h["precision"]), _text(thr), fmt_num(h["step_time_ms_p50"]),
            fmt_num(h["mfu_pct"]) if h["mfu_pct"] is not None else "-", fmt_bytes(h["peak_bytes"]), status,
        )
    return table


def _text(value: Any) -> str:
    return escape(str(value))


def print_records(records: list[dict[str, Any]], title: str = "tbd results", console: Console | None = None) -> None:
    (console or make_console()).print(results_table(records, title))
