"""The terminal front end of the CLI: rich rendering of Arrow tables, stage reports and per-phase
progress bars (`RichOutput`, a pipeline.run.Output)."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

# Outside a terminal (logs, CI) rich would wrap tables at 80 columns; give them room instead.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

PHASES = {"read": "reading input files", "dedup": "deduplicating + sharding", "train": "training reference model",
          "score": "scoring documents", "tokenize": "counting tokens", "write": "writing shards"}


def _cell(value, pretty: bool = False) -> str:
    if pretty and isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, bytes):
        value = value[:40].decode("utf-8", "replace") + ("…" if len(value) > 40 else "")
    text = "" if value is None else str(value)
    return text if len(text) <= 80 else text[:79] + "…"


def print_arrow(table, title: str | None = None, max_rows: int = 100, pretty: bool = False) -> None:
    """An Arrow table as a rich table; `pretty`: thousands separators, numbers right-aligned."""
    from pyarrow import types
    numeric = [pretty and (types.is_integer(t) or types.is_floating(t)) for t in table.schema.types]
    out = Table(*(Column(name, overflow="fold", justify="right" if num else "left")
                  for name, num in zip(table.column_names, numeric)), title=title, header_style="bold")
    for row in table.slice(0, max_rows).to_pylist():
        out.add_row(*(_cell(v, pretty) for v in row.values()))
    console.print(out)
    if table.num_rows > max_rows:
        console.print(f"[dim]… {table.num_rows - max_rows} more rows[/dim]")


class RichOutput:
    """pipeline.run.Output on the terminal: a rule per section, a progress bar per phase, tables."""

    def section(self, title: str) -> None:
        console.rule(f"[bold]{title}")

    @contextmanager
    def progress(self) -> Iterator:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err_console) as bars:
            tasks: dict[str, int] = {}

            def report(phase: str, done: int, total: int | None, detail: str = "") -> None:
                if phase not in tasks:
                    tasks[phase] = bars.add_task(PHASES.get(phase, phase), total=total)
                bars.update(tasks[phase], completed=done, total=total,
                            description=f"{PHASES.get(phase, phase)} {detail}".rstrip())
            yield report

    def report(self, report) -> None:
        if report.rows:
            table = Table("what", Column("value", justify="right"), title=report.title or None, header_style="bold")
            for label, value in report.rows:
                table.add_row(label, _cell(value, pretty=True))
            console.print(table)
        for title, arrow in report.tables:
            print_arrow(arrow, title=title, max_rows=1000, pretty=True)
        for note in report.notes:
            console.print(note, highlight=False, markup=False)
