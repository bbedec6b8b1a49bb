"""Line framing: arbitrary byte chunks in, blocks of complete lines out.

A log arrives in reads that cut lines anywhere. `LineFramer` keeps the
unfinished tail of one read until the next completes it, so the matcher only
ever sees whole lines and a keyword split across two reads is still found.

Memory stays bounded by `max_line_bytes`: a line longer than that is counted
as oversized, its first `max_line_bytes` bytes are passed on as the line (so a
keyword near its start still counts) and the rest is discarded as it arrives,
never held whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Block(NamedTuple):
    """Complete LF-terminated lines: `buf[start:end]`, passed on without copying."""

    buf: bytes
    start: int
    end: int

    def tobytes(self) -> bytes:
        return self.buf[self.start : self.end]


@dataclass
class FramerStats:
    """What the framer has seen so far; the follower exports these per stream."""

    lines: int = 0
    bytes: int = 0  # of finished lines: an unfinished last line counts once it ends (or is flushed)
    oversized_lines: int = 0


class LineFramer:
    """Turns byte chunks into blocks of complete, LF-terminated lines.

    >>> framer = LineFramer(max_line_bytes=1024)
    >>> [block.tobytes() for block in framer.feed(b"one\\ntw")]
    [b'one\\n']
    >>> [block.tobytes() for block in framer.feed(b"o\\n")]
    [b'two\\n']
    """

    def __init__(self, max_line_bytes: int = 1 << 20) -> None:
        self.max_line_bytes = max_line_bytes
        self.stats = FramerStats()
        self._carry = b""
        self._discarding = False  # inside the unread rest of an oversized line

    @property
    def pending_bytes(self) -> int:
        """Bytes of an unfinished last line held back, waiting for its newline."""
        return len(self._carry)

    def feed(self, data: bytes) -> list[Block]:
        """Take the next bytes of the stream; return the blocks of lines they completed."""
        # Bytes count when their line is done, as the checkpoint's offset does (it is wound back
        # over an unfinished line): a restart then counts no byte twice.
        carried = len(self._carry)
        blocks: list[Block] = []
        # Pieces no longer than the cap: then only the first line of a piece (joined to the
        # carry) can exceed the cap, so no per-line length check is needed on the hot path.
        cap = self.max_line_bytes
        if len(data) <= cap:
            self._feed_piece(data, blocks)
        else:
            for start in range(0, len(data), cap):
                self._feed_piece(data[start : start + cap], blocks)
        self.stats.bytes += len(data) + carried - len(self._carry)
        return blocks

    def flush(self) -> list[Block]:
        """End of stream (or a file rotated away): a last line without newline still counts."""
        blocks: list[Block] = []
        if self._carry:
            self.stats.bytes += len(self._carry)
            self._emit(self._carry + b"\n", 0, len(self._carry) + 1, blocks)
        self._carry = b""
        self._discarding = False
        return blocks

    def _feed_piece(self, piece: bytes, blocks: list[Block]) -> None:
        start = 0
        if self._discarding:
            newline = piece.find(b"\n")
            if newline < 0:
                return
            start = newline + 1
            self._discarding = False
        last_newline = piece.rfind(b"\n", start)
        if last_newline < 0:
            self._carry += piece[start:]
            self._cut_if_oversized(blocks)
            return
        if self._carry:
            # The carried head and the first line of this piece: a small copy, then the
            # rest of the piece is passed on in place, without copying.
            first_newline = piece.find(b"\n", start)
            head = self._carry + piece[start : first_newline + 1]
            self._carry = b""
            if len(head) - 1 > self.max_line_bytes:
                self._emit_oversized(head[: self.max_line_bytes], blocks)
            else:
                self._emit(head, 0, len(head), blocks)
            start = first_newline + 1
        if start <= last_newline:
            self._emit(piece, start, last_newline + 1, blocks)
        self._carry = piece[last_newline + 1 :]
        self._cut_if_oversized(blocks)

    def _cut_if_oversized(self, blocks: list[Block]) -> None:
        if len(self._carry) > self.max_line_bytes:
            self._emit_oversized(self._carry[: self.max_line_bytes], blocks)
            self._carry = b""
            self._discarding = True

    def _emit_oversized(self, head: bytes, blocks: list[Block]) -> None:
        self.stats.oversized_lines += 1
        self._emit(head + b"\n", 0, len(head) + 1, blocks)

    def _emit(self, buf: bytes, start: int, end: int, blocks: list[Block]) -> None:
        if buf.find(b"\r", start, end) >= 0:
            # CRLF logs: patterns anchored with $ must see the line without its CR.
            buf = buf[start:end].replace(b"\r\n", b"\n")
            start, end = 0, len(buf)
        self.stats.lines += buf.count(b"\n", start, end)
        blocks.append(Block(buf, start, end))
