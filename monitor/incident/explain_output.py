"""`monitor explain`'s table: what a person reads at a terminal, every value from the log escaped."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from monitor.config import Config
from monitor.incident.trail import (
    AMBIGUOUS,
    INVALID_ID,
    MAX_LINES_SHOWN,
    NO_CLAIM,
    NO_URL,
    NOT_FOUND,
    NOT_PERSISTED,
    Explanation,
)

# Control characters (C0, DEL, C1) from a log line must not drive the terminal.
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}


def _safe(text: str) -> str:
    return text.translate(_ESCAPES)


def print_table(report: Explanation, config: Config, files: Sequence[Path], out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=out, width=None if out.isatty() else 200, highlight=False)

    def say(text: str) -> None:
        console.print(Text(_safe(text)))

    trail = report.trail
    shown = len(trail.lines) + trail.not_shown
    say(f"analysis {report.analysis_id}: {shown} line(s) naming it in {len(files)} file(s)")
    if trail.lines:
        table = Table(title_justify="left")
        for column in ("file", "line", "rules", "text"):
            table.add_column(column, overflow="fold")
        half = MAX_LINES_SHOWN // 2
        for index, named in enumerate(trail.lines):
            if trail.not_shown and index == half:
                table.add_row("…", "", "", Text(f"{trail.not_shown} more line(s) naming it not shown"))
            table.add_row(
                Text(_safe(named.file)), str(named.line), Text(", ".join(named.rules)), Text(_safe(named.text))
            )
        console.print(table)
    if report.claims:
        table = Table(title="claims the log makes about it", title_justify="left")
        for column in ("claim", "first made at", "expected", "outcome"):
            table.add_column(column, overflow="fold")
        for first, judged in zip(trail.claims, report.claims, strict=True):
            where = f"{first.file}:{first.line}"
            table.add_row(first.claim, Text(_safe(where)), "|".join(first.expected), judged.outcome)
        console.print(table)
    say(_document_sentence(report, config))
    status = report.document.get("status") if report.document else None
    if trail.log_says == AMBIGUOUS:
        say("the log says the analysis ended both completed and failed in its last run: ambiguous, as `verify` says")
    elif trail.log_says and status == "pending":
        say(f"the log says the analysis ended: status should be {trail.log_says!r}; MongoDB still holds 'pending'")
    say(f"verdict: {_verdict_sentence(report)}")


def _document_sentence(report: Explanation, config: Config) -> str:
    if report.lookup == INVALID_ID:
        return "not a 24-hex-digit ObjectId (the in-memory fallback's UUID?): never looked up in MongoDB"
    if report.lookup == NO_URL:
        return (
            "no MongoDB URL: document not looked up "
            "(pass --mongo-url, or set mongodb.url, MONGODB_URL or MONGODB_URL_FILE)"
        )
    if report.lookup == NOT_FOUND:
        return f"MongoDB: no document with this _id in {config.mongodb.collection}"
    fields = ", ".join(f"{k}={v!r}" for k, v in (report.document or {}).items() if k != "_id")
    return f"MongoDB document: {fields}"


def _verdict_sentence(report: Explanation) -> str:
    if report.verdict == NOT_PERSISTED:
        failing = [f"{c.claim}: {c.outcome}" for c in report.claims if c.outcome != "confirmed"]
        return f"{NOT_PERSISTED} ({'; '.join(failing)})"
    if report.verdict != NO_CLAIM:
        return report.verdict
    last = report.trail.last
    if last is None:
        return f"{NO_CLAIM}: no line of these files names it"
    when = f" at {last.time}" if last.time else ""
    return f"{NO_CLAIM}: nothing says it ended (still running?); its last line is {last.file}:{last.line}{when}"
