"""The self-audit's thread: every `interval_seconds`, the live counts compared with the files on disk.

A round takes, under the follow loop's lock, each stream's live side (the book)
and what was read of each file (the extents); reads the files again outside the
lock, in small pieces at most `max_read_bytes_per_second`; compares the
comparable minutes; and, under the lock again, notes what it found, so the
checkpoint holds the verdicts with the counts they judged. A drifted minute is
logged once (a finding naming the files), and counted in
`<self_prefix>_audit_drifted_lines_total{stream, rule, direction}`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from monitor.audit.book import AuditBook, Drift, StreamView
from monitor.audit.compare import comparable_minutes, drifts, files_holding
from monitor.audit.disk import DiskReader, FileCounts
from monitor.config import AuditConfig
from monitor.export.metrics import LogMetrics
from monitor.follow import Extent
from monitor.scan.matcher import Matcher

log = logging.getLogger("monitor.audit")

ExtentsFn = Callable[[], list[tuple[Extent, bool]]]  # what was read of each file, and whether to flush its end
MAX_NAMED_FILES = 5
RESULTS = ("clean", "drifted", "failed")


class Auditor:
    """Runs audit rounds on a thread of its own (or one at a time with `run_round`, in tests)."""

    def __init__(
        self,
        book: AuditBook,
        lock: threading.RLock,
        extents: ExtentsFn,
        matcher: Matcher,
        settings: AuditConfig,
        metrics: LogMetrics,
        max_line_bytes: int,
        timezone: str = "UTC",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.book = book
        self.settings = settings
        self._lock = lock
        self._extents = extents
        self._metrics = metrics
        self._zone = ZoneInfo(timezone)
        self._clock = clock
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._budget_start = 0.0
        self._budget_bytes = 0
        self.disk = DiskReader(matcher, max_line_bytes, self._throttle)
        self._new_matcher: Matcher | None = None

    def declare(self, streams: list[str], rules: list[str]) -> None:
        """Every audit series at 0 from the start."""
        for stream in streams:
            for counter in ("audit_minutes", "audit_files", "audit_bytes"):
                self._metrics.count(counter, (("stream", stream),), 0)
            for result in RESULTS:
                self._metrics.count("audit_rounds", (("stream", stream), ("result", result)), 0)
            for rule in rules:
                for direction in ("over", "under"):
                    labels = (("stream", stream), ("rule", rule), ("direction", direction))
                    self._metrics.count("audit_drifted_lines", labels, 0)

    def set_matcher(self, matcher: Matcher) -> None:
        """Rules reloaded (under the loop's lock, with `AuditBook.rules_changed`): used from the next round."""
        self._new_matcher = matcher

    # -- the thread ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="count-audit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        # No lower OS priority for this thread: one descheduled while it holds the GIL would stall
        # the follow loop behind it (a priority inversion). The rate limit bounds what it costs.
        while not self._stopping.wait(self.settings.interval_seconds):
            self.guarded_round()

    def guarded_round(self) -> None:
        """A round whose failure is said and counted, never the end of the audit thread."""
        try:
            self.run_round()
        except Exception as exc:  # a bug outside one stream's audit (taking the view, the extents)
            log.error("count audit round failed: %s: %s; it is tried again next round", type(exc).__name__, exc)
            for stream in self.book.streams():
                self._metrics.count("audit_rounds", (("stream", stream), ("result", "failed")))

    # -- one round -------------------------------------------------------------------

    def run_round(self) -> None:
        with self._lock:
            if self._new_matcher is not None:
                self.disk.set_matcher(self._new_matcher)
                self._new_matcher = None
            streams = self.book.streams()
            views = {stream: self.book.view(stream) for stream in streams}
            extents = self._extents()
        self._budget_start, self._budget_bytes = self._clock(), 0
        for stream, view in views.items():
            if self._stopping.is_set():
                return
            try:
                self._audit_stream(view, [(e, flush) for e, flush in extents if e.stream == stream])
            except Exception as exc:  # a bug must not end the audit or the sidecar: said, counted, retried
                log.error(
                    "count audit of stream %s failed: %s: %s; it is tried again next round",
                    stream,
                    type(exc).__name__,
                    exc,
                )
                self._metrics.count("audit_rounds", (("stream", stream), ("result", "failed")))
        self.disk.end_round()

    def _audit_stream(self, view: StreamView, extents: list[tuple[Extent, bool]]) -> None:
        stream, oldest = view.stream, view.oldest
        if oldest is None:
            return
        files_before, bytes_before = self.disk.files_started, self.disk.bytes_read
        files: list[FileCounts] = []
        for extent, flush in extents:
            counts = self.disk.read(extent, flush, oldest)
            if counts is not None:
                files.append(counts)
        minutes = comparable_minutes(view, files)
        found = drifts(view, files, minutes)
        labels = (("stream", stream),)
        with self._lock:  # the verdicts and their counters in one cut
            new_minutes, news = self.book.note(stream, minutes, found)
            self._metrics.count("audit_minutes", labels, new_minutes)
            self._metrics.count("audit_files", labels, self.disk.files_started - files_before)
            self._metrics.count("audit_bytes", labels, self.disk.bytes_read - bytes_before)
            self._metrics.count("audit_rounds", (*labels, ("result", "drifted" if found else "clean")))
            for drift, added in news:
                drift_labels = (*labels, ("rule", drift.rule), ("direction", drift.direction))
                self._metrics.count("audit_drifted_lines", drift_labels, added)
        self._report(news, files)

    def _report(self, news: list[tuple[Drift, int]], files: list[FileCounts]) -> None:
        limit = self.settings.max_findings_per_round
        for drift, _added in news[:limit]:
            names = files_holding(files, drift.minute)
            shown = ", ".join(names[:MAX_NAMED_FILES]) + (
                f" and {len(names) - MAX_NAMED_FILES} more" if len(names) > MAX_NAMED_FILES else ""
            )
            log.warning(
                "count audit: stream %s, minute %s: rule %s counted %d line(s) live, the files on disk hold %d "
                "(%s): %d %s. The counters drifted from the log; keep these files and recount them with "
                "`monitor scan`",
                drift.stream,
                self._minute_text(drift.minute),
                drift.rule,
                drift.live,
                drift.disk,
                shown or "no file holds a matched line of that minute",
                drift.lines,
                "over" if drift.direction == "over" else "under",
            )
        if len(news) > limit:
            log.warning(
                "count audit: %d more drifted (rule, minute) pairs not logged this round (audit.max_findings_per_round "
                "is %d); all are in the audit_drifted_lines_total counter",
                len(news) - limit,
                limit,
            )

    def _minute_text(self, minute: int) -> str:
        return datetime.fromtimestamp(minute * 60, self._zone).strftime("%Y-%m-%d %H:%M %Z")

    def _throttle(self, nbytes: int) -> None:
        """Keep this round's reading under max_read_bytes_per_second (waits end early on stop)."""
        self._budget_bytes += nbytes
        ahead = self._budget_bytes / self.settings.max_read_bytes_per_second - (self._clock() - self._budget_start)
        if ahead > 0:
            self._stopping.wait(ahead)
