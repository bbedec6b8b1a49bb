"""Findings: one per analysis whose status MongoDB does not hold, with every failed claim as evidence.

An analysis whose status was lost makes several claims (its `✅ …已更新到数据库`
line and its `完成，成功:` line); operators count analyses, not claims. So the
claims decided in one round are grouped by analysis: each analysis is one
finding, logged once as one JSON line (logger `monitor.findings`), counted once
in `analyses_not_persisted_total{outcome}`, and kept (the most recent N) for
`/findings`. A claim of the same analysis decided later joins its finding.

Everything here is bounded: findings kept, claims per finding, the length of
each value taken from a document, and the analyses remembered as counted.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from monitor.logs import Fields
from monitor.reconcile.claims import Claim

findings_log = logging.getLogger("monitor.findings")

# Gravest first: the finding's outcome is the gravest of its claims'.
GRAVITY = ("not_found", "status_mismatch", "invalid_id", "stuck", "error")
NOT_PERSISTED = ("status_mismatch", "not_found", "invalid_id")  # what `analyses_not_persisted_total` counts
MAX_CLAIMS_PER_FINDING = 8
MAX_VALUE_CHARS = 200  # of a document's field, e.g. a long error_message
REMEMBERED_ANALYSES = 10_000


@dataclass(frozen=True, slots=True)  # an incident's findings are many
class ClaimCheck:
    """One claim's part in a finding: what the log said and how the check ended."""

    claim: str
    outcome: str
    expected: list[str]
    logged_at: str
    stream: str = ""


@dataclass(frozen=True, slots=True)  # an incident's findings are many
class Finding:
    """One analysis whose status the log claims but MongoDB does not hold (or a stuck one)."""

    analysis_id: str
    outcome: str  # the gravest of its claims' outcomes
    claims: list[ClaimCheck]
    mongo: dict[str, Any] | None  # what the database holds (status fields), None if nothing
    checked_at: str
    detail: str = ""


@dataclass
class FindingBook:
    """The findings of one reconciler; the caller holds its lock around every call."""

    kept: int
    not_persisted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NOT_PERSISTED, 0))
    _findings: OrderedDict[str, Finding] = field(default_factory=OrderedDict)
    _counted: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _unpublished: list[str] = field(default_factory=list)
    _checked: tuple[float, str] = (float("nan"), "")

    def record(self, claim: Claim, outcome: str, document: dict | None, now: float, detail: str = "") -> None:
        check = ClaimCheck(claim.claim, outcome, list(claim.accept), iso(claim.logged_at), claim.stream)
        self.add(claim.analysis_id, check, document, now, detail)

    def add(self, analysis_id: str, check: ClaimCheck, document: dict | None, now: float, detail: str = "") -> None:
        existing = self._findings.pop(analysis_id, None)
        if existing is None:
            if now != self._checked[0]:  # one string for all the findings of a round
                self._checked = (now, iso(now))
            finding = Finding(analysis_id, check.outcome, [check], plain(document), self._checked[1], _short(detail))
            self._unpublished.append(analysis_id)
        else:
            finding = replace(
                existing,
                outcome=min(existing.outcome, check.outcome, key=GRAVITY.index),
                claims=[*existing.claims, check][:MAX_CLAIMS_PER_FINDING],
                mongo=plain(document) if document is not None else existing.mongo,
                detail=existing.detail or _short(detail),
            )
        self._findings[analysis_id] = finding
        while len(self._findings) > self.kept:
            self._findings.popitem(last=False)
        self._count(analysis_id, finding.outcome)

    def publish(self) -> None:
        """Log the findings made since the last call, each once, with every claim decided with it."""
        for analysis_id in self._unpublished:
            finding = self._findings.get(analysis_id)
            if finding is not None:
                findings_log.warning("finding %s", Fields(asdict(finding)))  # JSON log: its keys in the record
        self._unpublished.clear()

    def recent(self) -> list[Finding]:
        """Newest first."""
        return list(reversed(self._findings.values()))

    def in_order(self) -> list[Finding]:
        return list(self._findings.values())

    def _count(self, analysis_id: str, outcome: str) -> None:
        if outcome not in NOT_PERSISTED or analysis_id in self._counted:
            return
        self._counted[analysis_id] = None
        if len(self._counted) > REMEMBERED_ANALYSES:
            self._counted.popitem(last=False)
        self.not_persisted[outcome] = self.not_persisted.get(outcome, 0) + 1


def iso(timestamp: float) -> str:
    """UTC, whatever the zone of the host or the log: one finding reads the same everywhere."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def plain(document: dict[str, Any] | None) -> dict[str, Any] | None:
    """A document's status fields as short JSON-safe values (ObjectId, datetime -> str)."""
    if document is None:
        return None
    return {k: v if isinstance(v, int | float | bool | type(None)) else _short(str(v)) for k, v in document.items()}


def _short(text: str) -> str:
    return text if len(text) <= MAX_VALUE_CHARS else f"{text[:MAX_VALUE_CHARS]}… ({len(text)} characters)"
