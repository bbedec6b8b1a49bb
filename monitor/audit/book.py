"""The audit's book: what the live path counted per (stream, rule, minute), and what the audit found.

The live path (`monitor.run.pipeline`) records every tally here as it counts it;
the checkpoint keeps the book in the same cut as the offsets and counters, so
after any restart it holds exactly what the restored counters hold. It keeps,
per stream and for `retention_minutes` of the lines' own time:

- `counts`: lines matched, per (rule, minute);
- `sources`: the contents (`identity.source_of`) the lines of each minute came
  from: a minute is comparable only while every one of them is on disk;
- `live_from`: the first minute all of whose lines were read live (a first start
  at the end of the files, a reload of the rules or a lost checkpoint move it on);
- `blind_until`: minutes up to this one hold a line whose time is unknown;
- the audit's verdicts: minutes compared once, drifted lines reported, so a
  restart neither counts a minute twice nor reports a drift again.

Only the owner's lock (the follow loop's) guards it; everything handed out is a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from monitor.scan.matcher import Tally
from monitor.scan.minutes import UNTIMED

NEVER = -1  # blind_until of a stream with no untimed line


@dataclass(frozen=True)
class StreamView:
    """A copy of one stream's live side, taken with the files' extents under one lock hold."""

    stream: str
    counts: dict[tuple[str, int], int]
    sources: dict[int, frozenset[str]]
    live_from: int | None
    blind_until: int
    newest: int | None
    oldest: int | None  # the oldest minute kept (the retention window's start); None before a time


@dataclass(frozen=True)
class Drift:
    """Lines of one rule in one minute counted live (`live`) and found on disk now (`disk`)."""

    stream: str
    rule: str
    minute: int
    live: int
    disk: int

    @property
    def direction(self) -> str:
        return "over" if self.live > self.disk else "under"

    @property
    def lines(self) -> int:
        return abs(self.live - self.disk)


@dataclass
class _Stream:
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    sources: dict[int, set[str]] = field(default_factory=dict)
    live_from: int | None = None
    blind_until: int = NEVER
    newest: int | None = None
    compared: set[int] = field(default_factory=set)
    reported: dict[tuple[str, int, str], int] = field(default_factory=dict)


class AuditBook:
    """Per stream: live counts by minute, their sources, and the audit's verdicts, bounded in time."""

    def __init__(self, retention_minutes: int) -> None:
        self.retention_minutes = retention_minutes
        self._streams: dict[str, _Stream] = {}

    # -- the live path ---------------------------------------------------------------

    def record(self, stream: str, source: str, tally: Tally, newest: int | None) -> None:
        """A tally the live path just counted from a file of `stream` holding content `source`;
        `newest` is the minute of the newest timestamped line read of that file so far."""
        book = self._streams.setdefault(stream, _Stream())
        if book.live_from is None:
            if newest is None:
                return  # nothing with a time read yet: nothing to compare against either
            # Lines before the first one read now (skipped at a first start, or counted without a book)
            # may share its minute: the minutes after it are whole.
            timed = [minute for _, minute in tally.minutes if minute != UNTIMED]
            book.live_from = min(timed, default=newest) + 1
        for (rule, minute), lines in tally.minutes.items():
            if minute == UNTIMED:
                # Its time is that of a line read earlier, at the latest the newest minute known.
                book.blind_until = max(book.blind_until, book.newest if book.newest is not None else NEVER)
                continue
            book.counts[(rule, minute)] = book.counts.get((rule, minute), 0) + lines
            book.sources.setdefault(minute, set()).add(source)
        for minute in tally.blind:
            book.blind_until = max(book.blind_until, minute)
        if newest is not None and (book.newest is None or newest > book.newest):
            book.newest = newest  # a new minute: the oldest one leaves the book
            self._prune(book)

    def rules_changed(self) -> None:
        """New rules count from the next line on: minutes counted by the old ones cannot be compared."""
        for book in self._streams.values():
            book.counts.clear()
            book.sources.clear()
            book.live_from = None if book.newest is None else book.newest + 1

    # -- the audit -------------------------------------------------------------------

    def streams(self) -> list[str]:
        return sorted(self._streams)

    def view(self, stream: str) -> StreamView:
        book = self._streams.get(stream, _Stream())
        return StreamView(
            stream,
            dict(book.counts),
            {minute: frozenset(sources) for minute, sources in book.sources.items()},
            book.live_from,
            book.blind_until,
            book.newest,
            self._oldest(book),
        )

    def note(self, stream: str, compared: list[int], drifts: list[Drift]) -> tuple[int, list[tuple[Drift, int]]]:
        """The audit compared `compared` and found `drifts`: (minutes compared for the first time,
        each drift with the lines not reported before)."""
        book = self._streams.setdefault(stream, _Stream())
        new_minutes = [m for m in compared if m not in book.compared]
        book.compared.update(new_minutes)
        news = []
        for drift in drifts:
            key = (drift.rule, drift.minute, drift.direction)
            added = drift.lines - book.reported.get(key, 0)
            if added > 0:
                book.reported[key] = drift.lines
                news.append((drift, added))
        return len(new_minutes), news

    # -- the checkpoint --------------------------------------------------------------

    def rows(self) -> dict[tuple[Any, ...], float]:
        """Checkpoint rows (owner `audit`); rows of minutes gone from the book are deleted by the checkpoint."""
        rows: dict[tuple[Any, ...], float] = {}
        for name, book in self._streams.items():
            for (rule, minute), lines in book.counts.items():
                rows[("count", name, rule, minute)] = lines
            for minute, sources in book.sources.items():
                for source in sources:
                    rows[("source", name, minute, source)] = 1
            if book.live_from is not None:
                rows[("live_from", name)] = book.live_from
            if book.blind_until != NEVER:
                rows[("blind", name)] = book.blind_until
            if book.newest is not None:
                rows[("newest", name)] = book.newest
            for minute in book.compared:
                rows[("compared", name, minute)] = 1
            for (rule, minute, direction), lines in book.reported.items():
                rows[("reported", name, rule, minute, direction)] = lines
        return rows

    def restore(self, rows: dict[tuple[Any, ...], float]) -> None:
        """Take back what `rows` gave; rows of a shape this build does not write are ignored."""
        for key, value in rows.items():
            kind, name, rest = key[0], str(key[1]) if len(key) > 1 else "", key[2:]
            book = self._streams.setdefault(name, _Stream())
            number = int(value)
            if kind == "count" and len(rest) == 2:
                book.counts[(str(rest[0]), int(rest[1]))] = number
            elif kind == "source" and len(rest) == 2:
                book.sources.setdefault(int(rest[0]), set()).add(str(rest[1]))
            elif kind == "live_from" and not rest:
                book.live_from = number
            elif kind == "blind" and not rest:
                book.blind_until = number
            elif kind == "newest" and not rest:
                book.newest = number
            elif kind == "compared" and len(rest) == 1:
                book.compared.add(int(rest[0]))
            elif kind == "reported" and len(rest) == 3:
                book.reported[(str(rest[0]), int(rest[1]), str(rest[2]))] = number
        for book in self._streams.values():
            self._prune(book)

    def _oldest(self, book: _Stream) -> int | None:
        return None if book.newest is None else book.newest - self.retention_minutes + 1

    def _prune(self, book: _Stream) -> None:
        oldest = self._oldest(book)
        if oldest is None:
            return
        book.counts = {key: n for key, n in book.counts.items() if key[1] >= oldest}
        book.sources = {minute: s for minute, s in book.sources.items() if minute >= oldest}
        book.compared = {minute for minute in book.compared if minute >= oldest}
        book.reported = {key: n for key, n in book.reported.items() if key[1] >= oldest}
