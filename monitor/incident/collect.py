"""`verify --report`: what verify's own pass collects for the HTML report, and the writing of it.

`ReportCollector` rides along verify's single pass over the logs: every tally's events and claims
go to the timeline (`TimelineBook`), its per-minute counts (the scanner made with `minutes=True`)
to `MinuteCounts`. Once verify has decided, `write` turns that, the findings, their evidence and
the repair plan into the page. Nothing here reads a log again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monitor.config import Config
from monitor.incident.html_report import VerifyResults, verify_page
from monitor.incident.page import ReportPathError, check_writable, write_page
from monitor.incident.series import MinuteCounts
from monitor.incident.timeline import TimelineBook
from monitor.logs import say
from monitor.reconcile.claims import Claim
from monitor.reconcile.findings import Finding
from monitor.scan.matcher import Matcher, Tally


def report_path_ok(path: Path) -> bool:
    """Whether the report can be written there; when not, said (before any long pass)."""
    try:
        check_writable(path)
    except ReportPathError as exc:
        say(str(exc))
        return False
    return True


def write_report(path: Path, header: Any, data: dict[str, Any]) -> bool:
    """Write a page; said either way (where it is, or why not)."""
    try:
        size = write_page(path, header, data)
    except ReportPathError as exc:
        say(str(exc))
        return False
    say(f"report {path}: {size:,} bytes; open it in a browser", level=logging.INFO, prefix="")
    return True


class ReportCollector:
    """The timeline and the per-minute counts of one verify run."""

    def __init__(self, config: Config, matcher: Matcher) -> None:
        self.config = config
        self.timeline = TimelineBook(config)
        self.minutes = MinuteCounts({rule.name: rule.severity.value for rule in matcher.rules})

    def take(self, tally: Tally, claims: Sequence[Claim]) -> None:
        self.timeline.take(tally.events, claims)
        self.minutes.add(tally.minutes)

    def write(
        self,
        path: Path,
        files: Sequence[Path],
        errors: Sequence[str],
        counts: tuple[int, int],
        findings: Sequence[Finding],
        plan: Mapping[str, Any] | None,
        plan_note: str,
        said: Mapping[str, Any] | None,
    ) -> bool:
        """`counts`: (claims, confirmed); `said`: what the logs say of each flagged analysis (its
        evidence lines), as verify read it for the plan."""
        results = VerifyResults(
            files=[str(p) for p in files],
            errors=list(errors),
            claims=counts[0],
            confirmed=counts[1],
            spans=self.timeline.spans(findings, plan),
            lines_past_bound=self.timeline.lines_past_bound,
            first_time=self.timeline.first_time,
            last_time=self.timeline.last_time,
            series=self.minutes.series(),
            findings=list(findings),
            plan=plan,
            plan_note=plan_note,
            evidence={analysis_id: story.evidence for analysis_id, story in (said or {}).items()},
        )
        return write_report(path, *verify_page(self.config, results))
