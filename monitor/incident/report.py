"""Output of the one-shot commands: rich tables for people, JSON for machines, and the
node_exporter textfile of `monitor scan --metrics-out`."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
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
        labels = ", ".join(f"{k}: {_label_values(v)}" for k, v in rule.labels.items())
        style = SEVERITY_STYLE.get(rule.severity.value, "")
        table.add_row(rule.name, f"[{style}]{rule.severity.value}[/]", rule.pattern, labels, str(len(rule.examples)))
    _console(out).print(table)


def _label_values(values: list[str] | int) -> str:
    """A label's listed values, or its cap: the first N distinct values seen, the rest "other"."""
    return "|".join(values) if isinstance(values, list) else f"first {values} values seen"


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


# -- `monitor scan --metrics-out`: node_exporter's textfile collector -------------------------

EventCounts = Mapping[tuple[str, tuple[tuple[str, str], ...]], float]  # (rule, capture labels) -> lines


def textfile_exposition(summary: ScanSummary, events: EventCounts, prefix: str, now: float | None = None) -> bytes:
    """What the scan found, as gauges: the counts in the files as they are now, not counters.

    A scan counts the files it is given, so after a rotation a count can fall (97 lines
    in `tradingagents.log`, then 35 in the new one): as a counter, Prometheus' `increase()`
    would take that for a reset and invent lines. As gauges, alerts read the value.
    """
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    severity = {row.rule: row.severity for row in summary.rules}
    matched = GaugeMetricFamily(
        f"{prefix}_log_lines_matched_in_files",
        "Lines of the scanned files matched per rule (a line matching two rules counts for each), "
        "as the files were at the scan; a gauge, not a counter.",
        labels=None,
    )
    for (rule, labels), value in sorted(events.items()):
        names = ["rule", "severity", *(n for n, _ in labels)]
        values = [rule, severity.get(rule, ""), *(v for _, v in labels)]
        matched.add_sample(matched.name, dict(zip(names, values, strict=True)), value)
    gauges = [
        matched,
        GaugeMetricFamily(f"{prefix}_log_scanned_lines", "Complete lines in the scanned files.", value=summary.lines),
        GaugeMetricFamily(
            f"{prefix}_log_scanned_files", "Files scanned (patterns expanded).", value=len(summary.files)
        ),
        GaugeMetricFamily(
            f"{prefix}_scan_errors",
            "Files that could not be read to the end, and patterns matching no file: their lines are missing.",
            value=len(summary.errors),
        ),
        GaugeMetricFamily(
            f"{prefix}_scan_timestamp_seconds",
            "When the scan ran (Unix time): alert when it is old.",
            value=time.time() if now is None else now,
        ),
    ]

    class _Scan:
        def collect(self) -> Iterator[GaugeMetricFamily]:
            yield from gauges

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scan())
    return generate_latest(registry)


def write_textfile(
    path: Path, summary: ScanSummary, events: EventCounts, prefix: str, now: float | None = None
) -> None:
    """Write the exposition atomically, as the textfile collector requires: a temporary file in the
    same directory (a name not ending in .prom, so the collector never reads it half written),
    then renamed over `path`; mode 0644 less the umask, as a shell's redirection would. OSError on failure."""
    data = textfile_exposition(summary, events, prefix, now)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
