"""Terminal output of the one-shot commands: rich tables for people, JSON for machines."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # rich costs 40 ms to import: only the table output pays for it
    from rich.console import Console

    from monitor.config import Rule

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "success": "green", "info": "cyan"}


@dataclass(frozen=True)
class RuleCount:
    rule: str
    severity: str
    count: int
    last_timestamp: float | None


@dataclass(frozen=True)
class ScanSummary:
    """What `monitor scan` found, in the shape `--format json` prints."""

    files: list[str]
    rules: list[RuleCount]
    lines: int
    bytes: int
    oversized_lines: int
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2)


def print_rules(rules: list[Rule], out: TextIO = sys.stdout) -> None:
    from rich.table import Table

    table = Table(title=f"{len(rules)} rules", title_justify="left")
    for column in ("rule", "severity", "pattern", "labels", "examples"):
        table.add_column(column, overflow="fold")
    for rule in rules:
        labels = ", ".join(f"{k}: {'|'.join(v)}" for k, v in rule.labels.items())
        style = SEVERITY_STYLE.get(rule.severity.value, "")
        table.add_row(rule.name, f"[{style}]{rule.severity.value}[/]", rule.pattern, labels, str(len(rule.examples)))
    _console(out).print(table)


def print_scan(summary: ScanSummary, out: TextIO = sys.stdout) -> None:
    from rich.table import Table

    table = Table(
        title=f"{summary.lines} lines, {summary.bytes} bytes in {len(summary.files)} file(s)", title_justify="left"
    )
    table.add_column("rule")
    table.add_column("severity")
    table.add_column("count", justify="right")
    table.add_column("last seen")
    for row in summary.rules:
        style = SEVERITY_STYLE.get(row.severity, "")
        table.add_row(
            row.rule,
            f"[{style}]{row.severity}[/]",
            str(row.count),
            _format_time(row.last_timestamp) if row.count else "",
        )
    console = _console(out)
    console.print(table)
    if summary.oversized_lines:
        console.print(f"[yellow]{summary.oversized_lines} oversized line(s): only their first bytes were matched[/]")


def _format_time(value: float | None) -> str:
    if not value:
        return ""
    return datetime.fromtimestamp(value, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def _console(out: TextIO) -> Console:
    from rich.console import Console

    # Wide enough that a pipe or a file still gets whole rows.
    return Console(file=out, width=None if out.isatty() else 200, highlight=False)
