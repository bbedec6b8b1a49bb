"""Minutes: which minute of the log's own time each matched line belongs to (for the self-audit).

A matched line belongs to the minute of its own timestamp; a line without one
(a traceback's continuation) to the minute of the nearest timestamped line
before it in the same file. The answer must not depend on how the file was
cut into reads: the live path sees a log in the pieces it was written in, the
audit in large blocks, and both must put every line in the same minute. So a
`MinuteCarry` per file remembers the newest timestamped line's minute across
blocks, and each region of a block is walked back over at most once.

A matched line with no timestamped line before it in what was read of its file
is `UNTIMED`; the minutes it may belong to cannot be compared, and the carry
says which (`blind`): every minute up to the first timestamped line after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

UNTIMED = -1  # minute of a matched line whose time is unknown
_HEAD = 23  # logging's asctime, "2025-10-22 14:20:02,123"
_MINUTE_HEAD = 16  # "2025-10-22 14:20": every line starting so is in the same minute
_MAX_CACHED_HEADS = 4096


@dataclass
class MinuteCarry:
    """What one file's lines read so far say about time: one per scanner, kept between blocks."""

    minute: int | None = None  # of the newest timestamped line read so far
    untimed: bool = False  # a matched line came before any timestamped line, not resolved yet


class MinuteReader:
    """Minutes (Unix time // 60) of lines, read with the matcher's timestamp reader.

    In logging's default layout the head of a line up to the minute is looked up in a
    cache: a minute is parsed once, whatever number of lines it holds.
    """

    def __init__(self, read_time: Callable[[bytes], float | None], default_layout: bool) -> None:
        self._read_time = read_time
        self._default_layout = default_layout
        self._heads: dict[bytes, int | None] = {}

    def minute(self, buf: bytes, line_start: int, line_end: int) -> int | None:
        """The minute of the line `buf[line_start:line_end]`'s own timestamp, or None."""
        if self._default_layout and line_end - line_start >= _HEAD:
            head = buf[line_start : line_start + _HEAD]
            if head[4] == 45 and head[10] == 32 and head[19] == 44 and head[:4].isdigit():
                key = head[:_MINUTE_HEAD]
                if key in self._heads:
                    return self._heads[key]
                if len(self._heads) >= _MAX_CACHED_HEADS:
                    self._heads.clear()
                when = self._read_time(head)
                minute = self._heads[key] = None if when is None else int(when // 60)
                return minute
        when = self._read_time(buf[line_start:line_end])
        return None if when is None else int(when // 60)

    def assign(
        self,
        buf: bytes,
        start: int,
        stop: int,
        ends_by_rule: dict[str, list[int]],
        carry: MinuteCarry,
        minutes: dict[tuple[str, int], int],
        blind: list[int],
    ) -> None:
        """Add the lines of `buf[start:stop]` ending at `ends_by_rule` to `minutes` as (rule, minute)
        counts; move `carry` to the block's end; append to `blind` the minute up to which an
        untimed line's true minute is unknown, once a timestamped line after it says."""
        minute = self._one_minute(buf, start, stop)
        if minute is not None:
            for rule, ends in ends_by_rule.items():
                minutes[(rule, minute)] = minutes.get((rule, minute), 0) + len(ends)
            _move(carry, minute, blind)
            return
        minute_at: dict[int, int] = {}
        done = start  # lines before this were walked over; carry.minute is the newest time among them
        for end in sorted({end for ends in ends_by_rule.values() for end in ends}):
            self._advance(buf, done, end, carry, blind)
            if carry.minute is None:
                carry.untimed = True
                minute_at[end] = UNTIMED
            else:
                minute_at[end] = carry.minute
            done = end + 1
        if stop - 1 >= done:
            self._advance(buf, done, stop - 1, carry, blind)
        for rule, ends in ends_by_rule.items():
            for end in ends:
                key = (rule, minute_at[end])
                minutes[key] = minutes.get(key, 0) + 1

    def _one_minute(self, buf: bytes, start: int, stop: int) -> int | None:
        """The common block (logging's layout, every line in one minute) at C speed: if the first line
        has a time and every other line starts with its minute's 16 bytes, each line is in that minute
        (its own, or its timestamped predecessor's), exactly what the walk would find; else None."""
        if not self._default_layout or stop - start < _HEAD:
            return None
        first_end = buf.find(b"\n", start, stop)
        minute = self.minute(buf, start, stop if first_end < 0 else first_end)
        if minute is None:
            return None
        prefix = b"\n" + buf[start : start + _MINUTE_HEAD]
        return minute if buf.count(b"\n", start, stop - 1) == buf.count(prefix, start, stop) else None

    def _advance(self, buf: bytes, lo: int, end: int, carry: MinuteCarry, blind: list[int]) -> None:
        """Move `carry` over the lines from `lo` to the one ending at `end` (walked back: the newest
        timestamped one wins, and usually it is the last)."""
        if carry.untimed:
            self._resolve_untimed(buf, lo, end, carry, blind)
        while end >= lo:
            line_start = buf.rfind(b"\n", lo, end) + 1 or lo
            minute = self.minute(buf, line_start, end)
            if minute is not None:
                _move(carry, minute, blind)
                return
            end = line_start - 1

    def _resolve_untimed(self, buf: bytes, lo: int, end: int, carry: MinuteCarry, blind: list[int]) -> None:
        """An untimed line is blind up to the first timestamped line after it (walked forward: rare)."""
        line_start = lo
        while line_start <= end:
            line_end = buf.find(b"\n", line_start, end + 1)
            line_end = end if line_end < 0 else line_end
            minute = self.minute(buf, line_start, line_end)
            if minute is not None:
                _move(carry, minute, blind)
                return
            line_start = line_end + 1


def _move(carry: MinuteCarry, minute: int, blind: list[int]) -> None:
    """A timestamped line of `minute` was read: it resolves an untimed line before it, if any."""
    if carry.untimed:
        blind.append(minute)
        carry.untimed = False
    carry.minute = minute
