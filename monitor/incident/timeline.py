"""Every analysis `verify` read, from its start line to its end line, with its verdict (for `--report`).

`verify` keeps only findings: the analyses whose status was confirmed leave no trace, which is
what lets it check a million claims in little memory. The report's timeline needs every analysis,
so with `--report` (and only then) a `TimelineBook` rides along the same pass: per analysis a slot
in flat arrays (two times, a claim bitmask, its implied end, a symbol index), about 150 bytes with
the id, for at most `MAX_ANALYSES` analyses; the lines of any more are counted, not drawn, and the
page says so (counting those analyses would take the memory the bound saves).

The verdict of an analysis comes from what `verify` decided, never from a second look:
- a finding the repair plan repairs: `lost` (repairable now); one whose document holds another
  final status: `mismatch`; any other finding: `unrepairable` (the plan says why), or `lost`
  when there is no plan (an input failed: nothing is known to be unrepairable);
- no finding: `unsuccessful` when its last run's end lines imply `failed` (no alarm), `persisted`
  when they imply anything else, `running` when its last start line has no claim after it.

As `verify` judges, only an analysis' last run counts: a start line later than its claims so far
starts it afresh (files may come in any order; the lines' own times decide).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitor.config import Config
from monitor.reconcile.claims import Claim, StartLines, implied_status
from monitor.reconcile.findings import Finding
from monitor.scan.matcher import Event

MAX_ANALYSES = 200_000  # ~30 MB of slots; verify itself stays bounded by its findings
VERDICTS = ("persisted", "unsuccessful", "running", "lost", "mismatch", "unrepairable")
_ENDED_FAILED, _ENDED_OTHER = 1, 2  # what the last run's end lines imply (bits)
_NO_TIME = float("nan")


@dataclass(frozen=True, slots=True)
class Span:
    """One analysis on the timeline."""

    analysis_id: str
    symbol: str
    start: float  # its last start line's time, else its first claim's
    end: float | None  # its last end line's time; None: still running at the end of the log
    claims: tuple[str, ...]
    verdict: str
    document: str  # what MongoDB holds, as far as verify knows


class TimelineBook:
    """Fed the events and claims of verify's pass; `spans` once verify has decided."""

    def __init__(self, config: Config, limit: int = MAX_ANALYSES) -> None:
        self._starts = StartLines(config.reconcile.start_rules, config.reconcile.claims)
        self._claim_bits = {c.name: 1 << i for i, c in enumerate(config.reconcile.claims[:31])}
        self._limit = limit
        self._index: dict[str, int] = {}
        self._start, self._end = array("d"), array("d")
        self._bits, self._ended = array("L"), bytearray()
        self._symbol, self._symbols = array("H"), {"": 0}
        self.lines_past_bound = 0  # start lines and claims of analyses past `limit`
        self.first_time: float | None = None
        self.last_time: float | None = None

    def take(self, events: Iterable[Event], claims: Iterable[Claim]) -> None:
        """One tally's events (start lines, the range of time) and the claims made from them."""
        for event in events:
            if not event.timed:
                continue  # its time is the scan's, not the log's
            self._see(event.time)
            started = self._starts.analysis(event)
            if started is not None:
                self._started(started, event.time, event.captures.get("symbol", ""))
        for claim in claims:
            self._claimed(claim)

    def _see(self, when: float) -> None:
        self.first_time = when if self.first_time is None else min(self.first_time, when)
        self.last_time = when if self.last_time is None else max(self.last_time, when)

    def _slot(self, analysis_id: str) -> int | None:
        index = self._index.get(analysis_id)
        if index is None:
            if len(self._index) >= self._limit:
                self.lines_past_bound += 1
                return None
            index = self._index[analysis_id] = len(self._start)
            self._start.append(_NO_TIME)
            self._end.append(_NO_TIME)
            self._bits.append(0)
            self._ended.append(0)
            self._symbol.append(0)
        return index

    def _started(self, analysis_id: str, when: float, symbol: str) -> None:
        index = self._slot(analysis_id)
        if index is None:
            return
        start = self._start[index]
        if start == start and when <= start:  # an earlier run's start line (files out of order)
            return
        self._start[index] = when
        if not self._end[index] > when:  # no claim after this start: a new run, nothing ended yet
            self._end[index], self._bits[index], self._ended[index] = _NO_TIME, 0, 0
        if symbol:
            self._symbol[index] = self._symbols.setdefault(symbol, min(len(self._symbols), 0xFFFF))

    def _claimed(self, claim: Claim) -> None:
        index = self._slot(claim.analysis_id)
        if index is None:
            return
        start = self._start[index]
        if start == start and claim.logged_at <= start:
            return  # made before the last start line: an earlier run's
        end = self._end[index]
        self._end[index] = claim.logged_at if end != end else max(end, claim.logged_at)
        self._bits[index] |= self._claim_bits.get(claim.claim, 0)
        status = implied_status(claim.accept)
        self._ended[index] |= _ENDED_FAILED if status == "failed" else _ENDED_OTHER if status else 0

    def __len__(self) -> int:
        return len(self._index)

    def spans(self, findings: Sequence[Finding], plan: Mapping[str, Any] | None) -> list[Span]:
        """Every analysis, in the order first read, with verify's verdict."""
        found = {f.analysis_id: f for f in findings}
        repaired = None if plan is None else {r["analysis_id"] for r in plan.get("repairs", ())}
        names = {bit: name for name, bit in self._claim_bits.items()}
        symbols = {index: symbol for symbol, index in self._symbols.items()}
        tuples: dict[int, tuple[str, ...]] = {}  # one tuple per set of claims: a few, shared by all spans
        spans = []
        for analysis_id, index in self._index.items():
            start, end, bits = self._start[index], self._end[index], self._bits[index]
            claims = tuples.get(bits) or tuples.setdefault(bits, tuple(n for b, n in names.items() if bits & b))
            finding = found.get(analysis_id)
            repairable = None if repaired is None else analysis_id in repaired
            verdict, document = _verdict(finding, repairable, self._ended[index], bool(claims))
            spans.append(
                Span(
                    analysis_id,
                    symbols.get(self._symbol[index], ""),
                    start if start == start else end,
                    end if end == end else None,
                    claims,
                    verdict,
                    document,
                )
            )
        return spans


def _verdict(finding: Finding | None, repairable: bool | None, ended: int, claimed: bool) -> tuple[str, str]:
    """(verdict, what MongoDB holds as far as verify knows)."""
    if finding is not None:
        return finding_verdict(finding, repairable), holds(finding)
    if not claimed:
        return "running", "not checked: no claim in its last run yet"
    if ended & _ENDED_FAILED and not ended & _ENDED_OTHER:
        return "unsuccessful", "failed (confirmed)"
    return "persisted", "the status every claim expects (confirmed)"


def finding_verdict(finding: Finding, repairable: bool | None) -> str:
    """`lost` (the plan repairs it, or there is no plan: None), `mismatch` (MongoDB holds another
    final status) or `unrepairable` (the plan says why)."""
    if repairable:
        return "lost"
    status = (finding.mongo or {}).get("status")
    if finding.outcome == "status_mismatch" and status not in (None, "pending"):
        return "mismatch"
    return "lost" if repairable is None else "unrepairable"


def holds(finding: Finding) -> str:
    """What MongoDB holds for a finding, in words."""
    if finding.outcome == "invalid_id":
        return "never queried: not an ObjectId"
    if finding.mongo is None:
        return "no document" if finding.outcome == "not_found" else f"unknown ({finding.detail or finding.outcome})"
    return f"status={finding.mongo.get('status')!r}"
