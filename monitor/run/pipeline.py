"""Items in, events out: one scanner per followed file, lines counted, events handed on.

The follower yields items for files by serial; each serial gets its own
scanner, so a partial last line of one file is never glued to another's.
That partial line is the only thing held here between passes, and the
checkpoint winds a file's offset back over it (`held_bytes`): a restart
reads it again, whole, and counts it once.
"""

from __future__ import annotations

from collections.abc import Callable

from monitor.audit.book import AuditBook
from monitor.export.metrics import LogMetrics
from monitor.follow import Data, End, Item
from monitor.scan.matcher import Event, Matcher, Scanner

EventSink = Callable[[str, list[Event]], None]


class Pipeline:
    """Scans the follower's items with the current matcher and delivers events to metrics and sinks."""

    def __init__(
        self, matcher: Matcher, max_line_bytes: int, metrics: LogMetrics, book: AuditBook | None = None
    ) -> None:
        self.matcher = matcher
        self.max_line_bytes = max_line_bytes
        self.metrics = metrics
        self.book = book  # the self-audit's: counts per minute of the lines' own time
        self.sinks: list[EventSink] = []
        self._scanners: dict[int, Scanner] = {}
        self._source: dict[int, str] = {}  # serial -> the content its last bytes came from

    def apply(self, item: Item) -> None:
        scanner = self._scanners.get(item.file)
        if scanner is None:
            if not isinstance(item, Data):
                return  # nothing was read from that file yet
            scanner = self._scanners[item.file] = Scanner(self.matcher, self.max_line_bytes, self.book is not None)
        if isinstance(item, Data):
            self._source[item.file] = item.source
        stats = scanner.framer.stats
        lines, size, oversized = stats.lines, stats.bytes, stats.oversized_lines
        tally = scanner.feed(item.data) if isinstance(item, Data) else scanner.flush()
        self.metrics.observe_read(
            item.stream, stats.lines - lines, stats.bytes - size, stats.oversized_lines - oversized
        )
        if self.book is not None and scanner.carry is not None:
            self.book.record(item.stream, self._source.get(item.file, ""), tally, scanner.carry.minute)
        if tally:
            self.metrics.observe(tally)
            if tally.events:
                for sink in self.sinks:
                    sink(item.stream, tally.events)
        if isinstance(item, End):
            del self._scanners[item.file]
            self._source.pop(item.file, None)

    def flushed(self, file: int) -> bool:
        """Has every byte read of `file` been counted (no unfinished last line held)? A file not
        followed any more (serial 0, known) was flushed when it ended."""
        return self.held_bytes(file) == 0

    def held_bytes(self, file: int) -> int:
        """Bytes of `file`'s unfinished last line, read but not counted yet."""
        scanner = self._scanners.get(file)
        return scanner.framer.pending_bytes if scanner is not None else 0

    def set_matcher(self, matcher: Matcher) -> None:
        """New rules (a reload) apply from the next line on; partial lines are kept."""
        self.matcher = matcher
        for scanner in self._scanners.values():
            scanner.matcher = matcher
