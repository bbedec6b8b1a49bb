"""Claims: what a log line asserts about an analysis' status in MongoDB.

Plain data and pure functions: which events make which claim is configured
(`reconcile.claims` in config.yaml), and an id from the log is validated here
before anything else sees it. Only a 24-hex-digit ObjectId ever reaches a
query; anything else (the UUID of the in-memory fallback, a crafted line) is
an `invalid_id` outcome without a query.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from monitor.config import ClaimRule
from monitor.scan.matcher import Event

_OBJECT_ID = re.compile(r"[0-9a-f]{24}")
# Longer than any id the server makes (a 24-hex ObjectId, a 36-character UUID): a hostile or
# broken line could capture a megabyte as the "id"; it is kept as a prefix and its length.
MAX_ID_CHARS = 64
FINAL_STATUSES = ("completed", "failed")  # how an analysis ends; `cancelled` comes through the API
KEPT_ID_CHARS = 36


@dataclass(frozen=True, slots=True)
class Claim:
    """One analysis id and what the log says its persisted status must be."""

    analysis_id: str
    claim: str  # the configured claim's name: the `claim` label
    accept: tuple[str, ...]  # statuses that satisfy it
    logged_at: float  # the line's own timestamp
    stream: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.analysis_id, self.claim)


def is_object_id(value: str) -> bool:
    """A MongoDB ObjectId in its log form: exactly 24 lowercase hex digits."""
    return bool(_OBJECT_ID.fullmatch(value))


def bounded_id(analysis_id: str) -> str:
    """The id as captured, or for one longer than any real id, its head and length (never queried).

    >>> bounded_id("68f8741c3512a67997df93d2")
    '68f8741c3512a67997df93d2'
    >>> bounded_id("x" * 1_000_000)
    'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx… (1000000 characters)'
    """
    if len(analysis_id) <= MAX_ID_CHARS:
        return analysis_id
    return f"{analysis_id[:KEPT_ID_CHARS]}… ({len(analysis_id)} characters)"


def implied_status(accept: Iterable[str]) -> str | None:
    """The one final status a claim stands for, if it names one (`cancelled` aside).

    >>> implied_status(["failed", "cancelled"]), implied_status(["completed", "failed", "cancelled"])
    ('failed', None)
    """
    statuses = {s for s in accept if s != "cancelled"}
    return statuses.pop() if len(statuses) == 1 and next(iter(statuses)) in FINAL_STATUSES else None


class ClaimExtractor:
    """Turns scanned events into claims according to the configured claim rules."""

    def __init__(self, claim_rules: Iterable[ClaimRule]) -> None:
        self._by_rule: dict[str, list[ClaimRule]] = {}
        for claim_rule in claim_rules:
            self._by_rule.setdefault(claim_rule.rule, []).append(claim_rule)

    def __bool__(self) -> bool:
        return bool(self._by_rule)

    def claims(self, events: Iterable[Event], stream: str) -> list[Claim]:
        out = []
        for event in events:
            for claim_rule in self._by_rule.get(event.rule, ()):
                if any(event.captures.get(k) != v for k, v in claim_rule.when.items()):
                    continue
                analysis_id = bounded_id(event.captures.get(claim_rule.id_capture, ""))
                out.append(Claim(analysis_id, claim_rule.name, tuple(claim_rule.accept), event.time, stream))
        return out


class StartLines:
    """Which analysis a start line (a rule of `reconcile.start_rules`) names: its claims' id capture."""

    def __init__(self, start_rules: Iterable[str], claim_rules: Iterable[ClaimRule]) -> None:
        self._rules = set(start_rules)
        self._id_captures = {claim_rule.id_capture for claim_rule in claim_rules} or {"analysis_id"}

    def analysis(self, event: Event) -> str | None:
        """The analysis `event` says started (again), or None when it is no start line."""
        if event.rule not in self._rules:
            return None
        return next((bounded_id(event.captures[c]) for c in self._id_captures if c in event.captures), None)
