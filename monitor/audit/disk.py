"""The audit's second reading: what the files on disk hold now, per (rule, minute), apart from the live path.

Each file is opened again by its name, checked to still be the file the live
path read (inode and fingerprint) and to still hold what it read (at least as
long, the same head before and after the reading), and read up to where the
live path stands, with a scanner of its own. A file the live path counted but
that is not on disk like that any more is left out: the minutes it held are
not comparable (`monitor.audit.compare`).

Readings are kept between rounds per content (inode and `source_of` head), so
a round reads what was appended since the last, not whole files again; a file
whose last lines are older than the audited window (by their own time) is not
read at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from monitor.follow import REAL, Extent, FileSystem
from monitor.follow.identity import FINGERPRINT_BYTES, matches, source_of
from monitor.scan.matcher import Matcher, Scanner, Tally

CHUNK_BYTES = 256 << 10  # small pieces: the follow loop gets the interpreter back between them
TAIL_BYTES = 16 << 10  # read at a file's end to tell whether it holds anything of the window


@dataclass(frozen=True)
class FileCounts:
    """One file's lines per (rule, minute), as read now."""

    path: str
    source: str
    counts: dict[tuple[str, int], int]
    blind_until: int | None  # minutes up to this one hold an untimed line of it (None: none)
    unresolved: bool  # an untimed line with no timestamped line after it yet: blind up to the newest minute


@dataclass
class _Reading:
    scanner: Scanner
    done: int = 0
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    blind_until: int | None = None

    def add(self, tally: Tally) -> None:
        for key, lines in tally.minutes.items():
            self.counts[key] = self.counts.get(key, 0) + lines
        if tally.blind:
            self.blind_until = max(tally.blind if self.blind_until is None else [*tally.blind, self.blind_until])


class DiskReader:
    """Reads followed and known files again, incrementally, through its own matcher."""

    def __init__(
        self,
        matcher: Matcher,
        max_line_bytes: int,
        throttle: Callable[[int], None] = lambda _n: None,
        fs: FileSystem = REAL,
    ) -> None:
        self._matcher = matcher
        self._max_line_bytes = max_line_bytes
        self._throttle = throttle
        self._fs = fs
        self._readings: dict[tuple[int, int, str], _Reading] = {}
        self._seen: set[tuple[int, int, str]] = set()
        self.bytes_read = 0
        self.files_started = 0  # files read from their first byte (a content audited for the first time)

    def set_matcher(self, matcher: Matcher) -> None:
        """New rules: every file is read again with them."""
        self._matcher = matcher
        self._readings.clear()

    def read(self, extent: Extent, flush: bool, oldest_minute: int) -> FileCounts | None:
        """What `extent`'s file holds up to its offset (and its unfinished last line if `flush`: the
        live path counted it); None if the file there is not, or no longer holds, what was read."""
        try:
            handle = self._fs.open(extent.path)
        except OSError:
            return None
        with handle:
            fd = handle.fileno()
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (extent.identity.dev, extent.identity.ino) or st.st_size < extent.offset:
                return None
            head = os.pread(fd, FINGERPRINT_BYTES, 0)
            if not matches(head, extent.identity):
                return None
            source = source_of(head)
            key = (st.st_dev, st.st_ino, source)
            self._seen.add(key)
            if key not in self._readings and self._ends_before(fd, extent.offset, oldest_minute):
                # Every line is older than the window: not read, and not taken as present either (a
                # minute whose lines it held is then not compared, which costs nothing: it is outside).
                return None
            reading = self._readings.get(key)
            if reading is None or reading.done > extent.offset:
                reading = _Reading(Scanner(self._matcher, self._max_line_bytes, minutes=True))
                self.files_started += 1
                if source:
                    self._readings[key] = reading
            if not self._read_into(fd, reading, extent.offset):
                self._readings.pop(key, None)
                return None
            if flush:
                reading.add(reading.scanner.flush())
            # Still the same content, as long: not truncated and written again while we read.
            if os.fstat(fd).st_size < extent.offset or not matches(os.pread(fd, FINGERPRINT_BYTES, 0), extent.identity):
                self._readings.pop(key, None)
                return None
        reading.counts = {k: n for k, n in reading.counts.items() if k[1] >= oldest_minute}
        carry = reading.scanner.carry
        return FileCounts(extent.path, source, dict(reading.counts), reading.blind_until, bool(carry and carry.untimed))

    def _ends_before(self, fd: int, offset: int, oldest_minute: int) -> bool:
        """Does the part of the file that was read end with a line older than `oldest_minute`? Told by
        the lines' own time at its end (the file's mtime says nothing about the log's clock)."""
        tail = os.pread(fd, min(TAIL_BYTES, offset), max(offset - TAIL_BYTES, 0))
        for line in reversed(tail.split(b"\n")[1:] if offset > TAIL_BYTES else tail.split(b"\n")):
            when = self._matcher.line_time(line)
            if when is not None:
                return when // 60 < oldest_minute
        return False

    def end_round(self) -> None:
        """Forget the readings of files not seen in this round (gone from disk, or forgotten)."""
        self._readings = {key: r for key, r in self._readings.items() if key in self._seen}
        self._seen = set()

    def _read_into(self, fd: int, reading: _Reading, offset: int) -> bool:
        while reading.done < offset:
            data = os.pread(fd, min(CHUNK_BYTES, offset - reading.done), reading.done)
            if not data:
                return False
            reading.done += len(data)
            self.bytes_read += len(data)
            reading.add(reading.scanner.feed(data))
            self._throttle(len(data))
        return True
