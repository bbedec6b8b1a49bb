"""One followed file: every decision about it (grown, truncated, rotated, idle, gone).

A `FollowedFile` holds an open handle and reads through it, so a file renamed
by rotation (and still written by a server that never reopens) is read to its
end. Every decision is made from that handle (`fstat`, `pread`), never from a
name that may point elsewhere by now. The caller (the follower) acts on the
decisions: it reads, ends, or restarts the file, and finds a truncated
file's copy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from monitor.follow.identity import FINGERPRINT_BYTES, MIN_COPY_FINGERPRINT, TAIL_BYTES, Identity, digest, matches
from monitor.follow.items import FollowSettings, Position

HEAD_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Look:
    """What one look at a followed file found.

    - `truncated`: its size fell below our offset (copytruncate, `> file`), or it
      changed and what we read is no longer there (truncated and rewritten past
      our offset between two looks).
    - `grew`: there is more to read, up to `size`.
    - `deleted` / `rotated`: a file that left the stream is done: deleted and read
      to its end, or idle for `rotated_close_idle_seconds`.
    - `flush`: a partial last line has been idle for `partial_line_flush_seconds`.
    - `quiet`: nothing to do.
    """

    verdict: str
    size: int = 0


@dataclass(eq=False)
class FollowedFile:
    serial: int
    stream: str
    path: str  # the name it is followed under now
    first_path: str  # where it was first followed; "" for a file first seen already rotated
    handle: BinaryIO
    identity: Identity
    offset: int
    last_size: int
    last_growth: float
    real_path: str = ""
    rotated: bool = False  # left the stream's paths; read on until deleted or idle
    idle_flushed: bool = True
    tail: bytes = b""  # the last bytes read: still there, or the file was rewritten under us
    last_mtime: int = 0
    head_checked: float = 0.0
    # Followed while it may still become a copy of another followed file (it was empty, or shorter
    # than what was read of a file it starts like): not read until the follower decides what it is.
    undecided: bool = False
    head_key: bytes = b""  # its first MIN_COPY_FINGERPRINT bytes, once it has them: the table's index
    # While the fingerprint is short (a young file): the file's first bytes as fingerprinted and read.
    young_head: bytes = b""

    # -- decisions -------------------------------------------------------------------

    def look(self, now: float, settings: FollowSettings) -> Look:
        """Decide what happened to the file since the last look (raises OSError if it cannot be read)."""
        st = os.fstat(self.handle.fileno())
        changed = st.st_size != self.last_size or st.st_mtime_ns != self.last_mtime
        if st.st_size < self.offset or (changed and not self._unchanged(now)):
            return Look("truncated")
        self.last_size, self.last_mtime = st.st_size, st.st_mtime_ns
        if st.st_size > self.offset:
            return Look("grew", st.st_size)
        idle = now - self.last_growth
        if self.rotated and (st.st_nlink == 0 or idle >= settings.rotated_close_idle_seconds):
            return Look("deleted" if st.st_nlink == 0 else "rotated")
        if not self.idle_flushed and idle >= settings.partial_line_flush_seconds:
            self.idle_flushed = True
            return Look("flush")
        return Look("quiet")

    def moved_to(self, path: str) -> bool:
        """The file is found under `path`; True if that is its first move away (a rotation)."""
        rotation = path != self.path and self.first_path == self.path
        self.path = path
        self.rotated = False
        return rotation

    def left_stream(self, now: float) -> bool:
        """No stream path names the file any more; True if that is a rotation of it."""
        self.rotated = True
        self.last_growth = now  # the idle-close timer starts now
        return self.first_path == self.path

    # -- reading -----------------------------------------------------------------------

    def read(self, size: int, settings: FollowSettings, now: float) -> Iterator[bytes]:
        """The bytes up to `size`, a chunk at a time, at most `max_read_per_pass` of them.

        The offset moves as each chunk is handed over: a caller that stops taking them (a
        shutdown in the middle of a long pass) leaves the rest to be read next time.
        """
        self.last_growth = now
        self.idle_flushed = False
        budget = settings.max_read_per_pass
        while self.offset < size and budget > 0:
            want = min(settings.read_chunk_bytes, size - self.offset, budget)
            data = os.pread(self.handle.fileno(), want, self.offset)
            if not data:
                break
            if self.identity.fp_len < FINGERPRINT_BYTES:
                self._keep_head(self.offset, data)
            self.offset += len(data)
            budget -= len(data)
            self.tail = (self.tail + data[-TAIL_BYTES:])[-TAIL_BYTES:]
            yield data
        if self.identity.fp_len < len(self.young_head):  # a young file: its fingerprint grows with it
            self._fingerprint(self.young_head)

    def start_over(self, serial: int) -> None:
        """Truncated: read the same file (by its handle) again from 0, as a new serial."""
        self.serial = serial
        head = os.pread(self.handle.fileno(), FINGERPRINT_BYTES, 0)
        self.identity = Identity(self.identity.dev, self.identity.ino, len(head), digest(head))
        self.head_key = head[:MIN_COPY_FINGERPRINT] if len(head) >= MIN_COPY_FINGERPRINT else b""
        self.young_head = head if len(head) < FINGERPRINT_BYTES else b""
        self.offset, self.tail, self.last_size, self.last_mtime = 0, b"", 0, 0

    def remember_tail(self) -> None:
        """After a restart at `offset`: the bytes before it, to notice a rewrite."""
        if self.offset:
            length = min(TAIL_BYTES, self.offset)
            self.tail = os.pread(self.handle.fileno(), length, self.offset - length)

    def position(self) -> Position:
        return Position(self.stream, self.path, self.identity, self.offset, self.last_size, self.real_path)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()

    # -- is what we read still there? ----------------------------------------------------

    def _unchanged(self, now: float) -> bool:
        """Cheap on every growth (the bytes just before our offset); the head at most once a second."""
        if self.tail:
            at = self.offset - len(self.tail)
            if os.pread(self.handle.fileno(), len(self.tail), at) != self.tail:
                return False
        if now - self.head_checked < HEAD_CHECK_SECONDS:
            return True
        self.head_checked = now
        return self._head_holds()

    def _keep_head(self, at: int, data: bytes) -> None:
        """The first bytes, from what is read at `at`. A young file's fingerprint grows from the bytes
        read, not from a second read after them: copytruncate can truncate the file in between, and
        a file read but not fingerprinted would not be known in its copy (read again, whole)."""
        if at <= len(self.young_head):
            self.young_head = (self.young_head[:at] + data[: FINGERPRINT_BYTES - at])[:FINGERPRINT_BYTES]

    def _fingerprint(self, head: bytes) -> None:
        identity = self.identity
        self.identity = Identity(identity.dev, identity.ino, len(head), digest(head))
        if not self.head_key and len(head) >= MIN_COPY_FINGERPRINT:
            self.head_key = head[:MIN_COPY_FINGERPRINT]
        if len(head) >= FINGERPRINT_BYTES:
            self.young_head = b""  # grown up: the fingerprint is whole

    def _head_holds(self) -> bool:
        """Does the file still start with the fingerprinted bytes? Extends a short fingerprint."""
        head = os.pread(self.handle.fileno(), FINGERPRINT_BYTES, 0)
        identity = self.identity
        if not matches(head, identity):
            return False
        if identity.fp_len < FINGERPRINT_BYTES and len(head) > identity.fp_len:
            self._fingerprint(head)
        return True
