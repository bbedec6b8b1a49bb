"""Follow: one configured stream of paths looks like one perpetual source of bytes.

The follower knows files, not rules. Each pass (`poll`) it finds the files of
every stream (paths or globs), reads what they gained since the last pass and
yields plain items: `Data` (bytes of one followed file), `Flush` (a partial
last line has been idle long enough to count) and `End` (the file is done:
flush its partial line and forget it).

A followed file is known by its *identity*: device + inode, plus a fingerprint
(hash of its first bytes). The inode lets us keep reading a file that was
renamed by rotation (the server may keep writing into it); the fingerprint
tells a truncated-and-rewritten file, a reused inode or a copy apart. All
rotation and truncation decisions are in `_examine`, documented there.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from monitor.identity import (
    COMPRESSED_SUFFIXES,
    FINGERPRINT_BYTES,
    MIN_COPY_FINGERPRINT,
    TAIL_BYTES,
    Identity,
    digest,
    holds_what_was_read,
    identity_of,
    matches,
    read_head,
    siblings,
)
from monitor.watch import existing_ancestor

__all__ = ["Data", "End", "Flush", "FollowSettings", "Follower", "Identity", "Item", "Position", "StreamSpec"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSpec:
    """A named stream: the paths or globs whose files are read as one source."""

    name: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class FollowSettings:
    start_at: str = "end"  # first start ever: "end" skips what the files already hold
    read_chunk_bytes: int = 1 << 20
    max_read_per_pass: int = 16 << 20  # per file, so one huge backlog cannot starve the others
    partial_line_flush_seconds: float = 5.0
    rotated_close_idle_seconds: float = 86400.0
    max_files_per_stream: int = 256


@dataclass(frozen=True)
class Position:
    """Where reading of one file stands: what the checkpoint stores."""

    stream: str
    path: str
    identity: Identity
    offset: int
    size: int = 0  # the file's size when last looked at: offset == size means read to its end


@dataclass(frozen=True)
class Data:
    stream: str
    file: int  # serial of the followed file: one scanner (and partial line) per serial
    data: bytes


@dataclass(frozen=True)
class Flush:
    stream: str
    file: int


@dataclass(frozen=True)
class End:
    stream: str
    file: int
    reason: str  # rotated | deleted | truncated | error


Item = Data | Flush | End


@dataclass
class StreamStats:
    """The follower's own counters and gauges for one stream (exported per stream)."""

    rotations: int = 0
    truncations: int = 0
    read_errors: int = 0
    lost_files: int = 0
    skipped_files: int = 0
    files_open: int = 0
    bytes_behind: int = 0
    last_read_time: float = 0.0


@dataclass(eq=False)
class _Followed:
    serial: int
    stream: str
    path: str
    first_path: str
    handle: BinaryIO
    identity: Identity
    offset: int
    last_size: int
    last_growth: float
    rotated: bool = False
    idle_flushed: bool = True
    tail: bytes = b""  # the last bytes read: still there, or the file was rewritten under us
    last_mtime: int = 0
    head_checked: float = 0.0


@dataclass
class _Reported:
    """Problems already logged once, so a broken path does not flood the log every pass."""

    keys: set[str] = field(default_factory=set)

    def once(self, key: str, message: str, *args: object) -> None:
        if key not in self.keys:
            self.keys.add(key)
            log.warning(message, *args)


class Follower:
    """Follows every stream's files through rotation, truncation, deletion and restarts."""

    def __init__(
        self,
        streams: list[StreamSpec],
        settings: FollowSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.streams = streams
        self.settings = settings or FollowSettings()
        self.stats = {s.name: StreamStats() for s in streams}
        self.resolved = False
        self._clock = clock
        self._wall_clock = wall_clock
        self._files: dict[int, _Followed] = {}
        self._by_inode: dict[tuple[int, int], _Followed] = {}
        self._serial = 0
        self._opening_at_end = self.settings.start_at == "end"
        self._reported = _Reported()
        self._last_resolve_wall = 0.0
        self._read_heads: deque[Identity] = deque(maxlen=256)  # files read before: their copies are not new
        self.busy = False  # the last pass read data (the caller then polls again soon)
        # Bumped whenever a file is opened or closed: the caller checkpoints at once then, because
        # positions in files that rotation is about to move or delete are the ones worth saving.
        self.generation = 0
        self.last_resolve_seconds = 0.0  # a huge glob makes the caller resolve less often

    # -- public ------------------------------------------------------------------

    def poll(self, resolve: bool = True) -> Iterator[Item]:
        """One pass over every stream; `resolve` re-expands the paths (new, renamed, deleted files)."""
        self.busy = False
        if resolve or not self.resolved:
            started = self._clock()
            self._resolve()
            self.last_resolve_seconds = self._clock() - started
        for followed in list(self._files.values()):
            yield from self._examine(followed)

    def positions(self) -> list[tuple[int, Position]]:
        """(serial, position) of every followed file, for the checkpoint."""
        return [(f.serial, Position(f.stream, f.path, f.identity, f.offset, f.last_size)) for f in self._files.values()]

    def restore(self, positions: list[Position]) -> None:
        """Resume from a checkpoint: find each file again (even renamed) and read on from its offset."""
        self._opening_at_end = False  # files the checkpoint does not know are new: read them whole
        names = {s.name for s in self.streams}
        for position in positions:
            if position.stream not in names:
                continue
            if self._reopen(position):
                continue
            if position.offset < position.size:
                self.stats[position.stream].lost_files += 1
                log.warning(
                    "stream %s: %s is gone (rotated away and compressed, or deleted, while the sidecar was down) "
                    "with %d bytes unread: the lines in them are lost",
                    position.stream,
                    position.path,
                    position.size - position.offset,
                )
            else:
                log.info(
                    "stream %s: %s, read to its end, was rotated away while the sidecar was down",
                    position.stream,
                    position.path,
                )

    def watch_directories(self) -> set[str]:
        """Directories whose changes should wake the follower (the nearest existing ones)."""
        directories = set()
        for stream in self.streams:
            for pattern in stream.paths:
                parent = os.path.dirname(os.path.abspath(pattern))
                while glob.has_magic(parent):
                    parent = os.path.dirname(parent)
                directories.add(existing_ancestor(parent))
        directories.update(os.path.dirname(f.path) for f in self._files.values())
        return directories

    def close(self) -> None:
        for followed in list(self._files.values()):
            self._forget(followed)

    # -- discovery -----------------------------------------------------------------

    def _resolve(self) -> None:
        for stream in self.streams:
            seen: set[tuple[int, int]] = set()
            rotated = False
            for path in self._expand(stream):
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # vanished between glob and stat: the next pass sees the new state
                key = (st.st_dev, st.st_ino)
                seen.add(key)
                followed = self._by_inode.get(key)
                if followed is not None and followed.stream == stream.name:
                    self._renamed(followed, path)
                    continue
                if followed is None and not self._is_copy_of_followed(stream.name, path):
                    rotated |= self.resolved  # a new file where we followed another: a rotation
                    self._open(stream.name, path, at_end=self._opening_at_end)
            for followed in list(self._files.values()):
                key = (followed.identity.dev, followed.identity.ino)
                if followed.stream == stream.name and key not in seen and not followed.rotated:
                    rotated = True
                    self._left_stream(followed)
            if rotated:
                self._catch_up(stream)
        self._opening_at_end = False
        self.resolved = True
        self._last_resolve_wall = self._wall_clock()

    def _catch_up(self, stream: StreamSpec) -> None:
        """Rotations faster than our passes: files that were created, written and rotated away
        between two looks. They sit beside the stream's paths under a rotated name (`app.log.1`,
        `app.log-20251022`), unknown to us, written to since our last look: read them whole.
        """
        since = self._last_resolve_wall - 1.0  # mtime granularity and clock skew margin
        for pattern in stream.paths:
            base = os.path.basename(pattern)
            if glob.has_magic(base):
                continue  # a glob already matches the rotated names it wants
            for sibling in siblings(pattern):
                try:
                    st = os.stat(sibling)
                except OSError:
                    continue
                if (
                    os.path.basename(sibling).startswith(base)
                    and (st.st_dev, st.st_ino) not in self._by_inode
                    and st.st_mtime >= since
                    and not self._starts_like_followed(stream.name, sibling)
                ):
                    log.info("stream %s: %s was rotated before it could be followed; reading it", stream.name, sibling)
                    missed = self._open(stream.name, sibling, at_end=False)
                    if missed is not None:
                        missed.rotated, missed.first_path = True, ""
                        self.stats[stream.name].rotations += 1  # it was rotated away unseen

    def _expand(self, stream: StreamSpec) -> list[str]:
        """The stream's regular, uncompressed files, at most `max_files_per_stream` of them.

        Work per pass stays bounded whatever the glob matches: names are listed once and
        only the first `max_files_per_stream` candidates (in name order) are looked at.
        """
        limit = self.settings.max_files_per_stream
        paths: list[str] = []
        matched = 0
        for pattern in stream.paths:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            for path in matches:
                if path.endswith(COMPRESSED_SUFFIXES):
                    continue  # rotated and compressed: what it holds was read before compression
                matched += 1
                if len(paths) < limit and self._is_regular_file(stream.name, path):
                    paths.append(path)
        self.stats[stream.name].skipped_files = max(matched - len(paths), 0) if matched > limit else 0
        if matched > limit:
            self._reported.once(
                f"limit:{stream.name}",
                "stream %s: %d files match, following the first %d by name (follow.max_files_per_stream)",
                stream.name,
                matched,
                limit,
            )
        return paths

    def _is_regular_file(self, stream: str, path: str) -> bool:
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return False  # waited for: it may appear later
        except OSError as exc:  # permission denied on a directory, a symlink loop, ...
            self._problem(stream, f"stat:{path}", "cannot stat %s: %s", path, exc.strerror or exc)
            return False
        if stat.S_ISREG(mode):
            self._reported.keys.discard(f"kind:{path}")
            return True
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (FIFO, socket or device)"
        self._problem(stream, f"kind:{path}", "%s is %s; skipping it", path, kind)
        return False

    def _problem(self, stream: str, key: str, message: str, *args: object) -> None:
        """Count and log a path problem once, not on every pass while it lasts."""
        if key not in self._reported.keys:
            self.stats[stream].read_errors += 1
            self._reported.once(key, f"stream %s: {message}", stream, *args)

    def _open(self, stream: str, path: str, at_end: bool, offset: int = 0) -> _Followed | None:
        try:
            handle = open(path, "rb", buffering=0)  # noqa: SIM115 (kept open while followed, closed in _forget)
            st = os.fstat(handle.fileno())
        except OSError as exc:
            self._problem(stream, f"open:{path}", "cannot open %s: %s", path, exc.strerror or exc)
            return None
        self._reported.keys.discard(f"open:{path}")
        identity = identity_of(handle, st)
        start = st.st_size if at_end else offset
        self._serial += 1
        followed = _Followed(self._serial, stream, path, path, handle, identity, start, st.st_size, self._clock())
        if start:
            followed.tail = os.pread(handle.fileno(), min(TAIL_BYTES, start), start - min(TAIL_BYTES, start))
        self._files[followed.serial] = followed
        self._by_inode[(identity.dev, identity.ino)] = followed
        self.generation += 1
        return followed

    def _renamed(self, followed: _Followed, path: str) -> None:
        if followed.path != path:
            self.generation += 1
            if followed.first_path == followed.path:
                self.stats[followed.stream].rotations += 1
            followed.path = path
        followed.rotated = False

    def _left_stream(self, followed: _Followed) -> None:
        self.generation += 1
        followed.rotated = True
        if followed.first_path == followed.path:
            self.stats[followed.stream].rotations += 1
        followed.last_growth = self._clock()  # the idle-close timer starts now

    def _starts_like_followed(self, stream: str, path: str) -> bool:
        """Reading a file whole is only safe if it is not a copy of what we read: when in doubt
        (it starts like a file we follow or followed, however little of it we read), leave it."""
        head = read_head(path)
        known = [f.identity for f in self._files.values() if f.stream == stream] + list(self._read_heads)
        return head is None or any(identity.fp_len and matches(head, identity) for identity in known)

    def _is_copy_of_followed(self, stream: str, path: str) -> bool:
        """A new file whose head equals a followed file's is a copy (copytruncate, cp): not new lines.

        It is left alone; if the original is then truncated, `_truncated` reads the copy from
        the original's offset, so lines written just before the copy are not lost.
        """
        return any(
            f.stream == stream and holds_what_was_read(path, f.identity, f.offset, f.tail)
            for f in list(self._files.values())
        )

    # -- reading ---------------------------------------------------------------------

    def _examine(self, followed: _Followed) -> Iterator[Item]:
        """The rotation/truncation decision for one followed file, made from its open handle.

        - size below our offset: truncated (copytruncate, `> file`). Read what the rotated
          copy holds beyond our offset, if a sibling with the same head exists, then start
          over at 0 as a new file.
        - size changed and the head no longer matches the fingerprint: truncated and
          rewritten past our offset before we looked; same treatment.
        - size above our offset: read on. The handle stays valid through renames, so a
          file rotated away (and still written by a server that never reopens) is read
          to its end.
        - nothing new: a partial last line idle for `partial_line_flush_seconds` is
          flushed; a file that left the stream is closed once deleted and read to its
          end, or idle for `rotated_close_idle_seconds`.
        """
        try:
            st = os.fstat(followed.handle.fileno())
            changed = st.st_size != followed.last_size or st.st_mtime_ns != followed.last_mtime
            if st.st_size < followed.offset or (changed and not self._unchanged(followed)):
                yield from self._truncated(followed)
                yield from self._examine(followed)  # and read what it holds now, in this same pass
                return
            followed.last_size, followed.last_mtime = st.st_size, st.st_mtime_ns
            if st.st_size > followed.offset:
                yield from self._read(followed, st.st_size)
                return
        except OSError as exc:
            self.stats[followed.stream].read_errors += 1
            log.warning("stream %s: reading %s failed: %s; will reopen", followed.stream, followed.path, exc)
            self._forget(followed)
            yield End(followed.stream, followed.serial, "error")
            return
        idle = self._clock() - followed.last_growth
        if followed.rotated and (st.st_nlink == 0 or idle >= self.settings.rotated_close_idle_seconds):
            self._forget(followed)
            yield End(followed.stream, followed.serial, "deleted" if st.st_nlink == 0 else "rotated")
        elif not followed.idle_flushed and idle >= self.settings.partial_line_flush_seconds:
            followed.idle_flushed = True
            yield Flush(followed.stream, followed.serial)

    def _read(self, followed: _Followed, size: int) -> Iterator[Item]:
        budget = self.settings.max_read_per_pass
        while followed.offset < size and budget > 0:
            want = min(self.settings.read_chunk_bytes, size - followed.offset, budget)
            data = os.pread(followed.handle.fileno(), want, followed.offset)
            if not data:
                break
            followed.offset += len(data)
            budget -= len(data)
            followed.tail = (followed.tail + data[-TAIL_BYTES:])[-TAIL_BYTES:]
            yield Data(followed.stream, followed.serial, data)
        if followed.identity.fp_len < FINGERPRINT_BYTES:  # a young file: its fingerprint grows with it
            self._head_holds(followed)
        followed.last_growth = self._clock()
        followed.idle_flushed = False
        self.busy = True
        self.stats[followed.stream].last_read_time = self._wall_clock()

    def _unchanged(self, followed: _Followed) -> bool:
        """Is what we read still there? Cheap on every growth; the head at most once a second.

        The bytes just before our offset are compared with what we read there: a file
        truncated and rewritten past our offset between two looks fails this at once. The
        head fingerprint (also extended while the file is young) is checked once a second.
        """
        if followed.tail:
            at = followed.offset - len(followed.tail)
            if os.pread(followed.handle.fileno(), len(followed.tail), at) != followed.tail:
                return False
        now = self._clock()
        if now - followed.head_checked < 1.0:
            return True
        followed.head_checked = now
        return self._head_holds(followed)

    def _head_holds(self, followed: _Followed) -> bool:
        """Does the file still start with the fingerprinted bytes? Extends a short fingerprint."""
        fd = followed.handle.fileno()
        identity = followed.identity
        head = os.pread(fd, FINGERPRINT_BYTES, 0)
        if not matches(head, identity):
            return False
        if identity.fp_len < FINGERPRINT_BYTES and len(head) > identity.fp_len:
            followed.identity = Identity(identity.dev, identity.ino, len(head), digest(head))
        return True

    def _truncated(self, followed: _Followed) -> Iterator[Item]:
        stream = self.stats[followed.stream]
        stream.truncations += 1
        copy = next(
            (
                p
                for p in siblings(followed.path)
                if holds_what_was_read(p, followed.identity, followed.offset, followed.tail)
            ),
            None,
        )
        if copy is not None:
            yield from self._read_copy(followed, copy)
        yield End(followed.stream, followed.serial, "truncated")
        self._remember(followed)
        # The same file (by its handle: it may have been renamed meanwhile), read again from its
        # start under a new serial, so the old partial line is not glued to the new content.
        del self._files[followed.serial]
        self._serial += 1
        followed.serial = self._serial
        self._files[followed.serial] = followed
        followed.identity = identity_of(followed.handle, os.fstat(followed.handle.fileno()))
        followed.offset, followed.tail, followed.last_size, followed.last_mtime = 0, b"", 0, 0
        self.generation += 1
        self.busy = True

    def _read_copy(self, followed: _Followed, copy_path: str) -> Iterator[Item]:
        """Lines the server wrote after our last read, saved in the rotated copy."""
        copy = self._open(followed.stream, copy_path, at_end=False, offset=followed.offset)
        if copy is None:
            return
        copy.rotated = True
        copy.first_path = ""  # not a rotation of its own
        size = os.fstat(copy.handle.fileno()).st_size
        for item in self._read(copy, size):
            # The copy continues the truncated file's last line: same scanner.
            yield Data(followed.stream, followed.serial, item.data) if isinstance(item, Data) else item

    def _reopen(self, position: Position) -> bool:
        """Find a checkpointed file again: at its path, else by inode or head among its siblings."""
        for path in [position.path, *siblings(position.path)]:
            try:
                st = os.stat(path)
            except OSError:
                continue
            same_inode = (st.st_dev, st.st_ino) == (position.identity.dev, position.identity.ino)
            head = read_head(path)
            if head is None or not matches(head, position.identity):
                continue
            if not same_inode and (position.identity.fp_len < MIN_COPY_FINGERPRINT or st.st_size < position.offset):
                continue
            if (st.st_dev, st.st_ino) in self._by_inode:
                return True
            followed = self._open(position.stream, path, at_end=False, offset=min(position.offset, st.st_size))
            if followed is None:
                return False
            followed.first_path = position.path
            if st.st_size < position.offset:  # truncated while we were down; the copy (if any) was tried above
                followed.offset = 0
                self.stats[position.stream].truncations += 1
            return True
        return False

    def _remember(self, followed: _Followed) -> None:
        if followed.offset and followed.identity.fp_len:
            self._read_heads.append(followed.identity)

    def _forget(self, followed: _Followed) -> None:
        self._remember(followed)
        self.generation += 1
        self._files.pop(followed.serial, None)
        key = (followed.identity.dev, followed.identity.ino)
        if self._by_inode.get(key) is followed:
            del self._by_inode[key]
        with contextlib.suppress(OSError):
            followed.handle.close()

    def refresh_gauges(self) -> None:
        """Files open and bytes behind per stream, computed when someone looks (a scrape)."""
        open_count = dict.fromkeys(self.stats, 0)
        behind = dict.fromkeys(self.stats, 0)
        for followed in self._files.values():
            open_count[followed.stream] += 1
            behind[followed.stream] += max(followed.last_size - followed.offset, 0)
        for name, stats in self.stats.items():
            stats.files_open = open_count[name]
            stats.bytes_behind = behind[name]
