"""Closing tables: every command ends with one."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from common.console import is_rank_zero, stdout_console


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def show_rows(title: str, rows: Sequence[dict], columns: Sequence[str] | None = None) -> None:
    if not is_rank_zero() or not rows:
        return
    columns = list(columns or rows[0].keys())
    table = Table(title=title)
    for c in columns:
        table.add_column(c.replace("_", " "), justify="left" if c == columns[0] else "right")
    for r in rows:
        table.add_row(*(_fmt(r.get(c, "")) for c in columns))
    stdout_console.print(table)


def show_pairs(title: str, pairs: Sequence[tuple[str, object]]) -> None:
    if not is_rank_zero():
        return
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for k, v in pairs:
        table.add_row(k, _fmt(v))
    stdout_console.print(table)
