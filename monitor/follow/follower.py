"""The follower: each pass, every stream's files are found and read on.

Each pass (`poll`) expands every stream's paths (discovery), follows files
that are new to it (the table, one entry per file identity), and looks at
every followed file (one `FollowedFile` decides what happened to it), yielding
plain items: `Data`, `Flush` (a partial last line idle long enough to count)
and `End` (the file is done: flush its partial line and forget it).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO

from monitor.follow.discover import Discovery, watch_directories
from monitor.follow.file import FollowedFile
from monitor.follow.fs import REAL, FileSystem
from monitor.follow.identity import FINGERPRINT_BYTES, MIN_COPY_FINGERPRINT, is_copy, siblings, source_of
from monitor.follow.items import Data, End, Extent, Flush, FollowSettings, Item, Position, StreamSpec
from monitor.follow.restore import Restorer
from monitor.follow.stats import FollowCollector, StreamStats, counter_rows, restore_counters
from monitor.follow.table import FileTable, Opened, OutOfDescriptorsError, StartAt

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("monitor.follow")


class Follower:
    """Follows every stream's files through rotation, truncation, deletion and restarts.

    follower = Follower([StreamSpec("app", ("/var/log/app/*.log",))])
    for item in follower.poll():
        ...  # Data / Flush / End, one partial line per item.file
    """

    def __init__(
        self,
        streams: list[StreamSpec],
        settings: FollowSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        fs: FileSystem = REAL,
        registry: CollectorRegistry | None = None,
        metric_prefix: str = "logmonitor",
    ) -> None:
        self.streams = streams
        self.settings = settings or FollowSettings()
        self.stats = {s.name: StreamStats() for s in streams}
        self.resolved = False
        self.busy = False  # the last pass read data (the caller then polls again soon)
        self.last_resolve_seconds = 0.0  # a huge glob makes the caller resolve less often
        self._clock = clock
        self._wall_clock = wall_clock
        self._fs = fs
        self._files = FileTable(fs, clock)
        self._discovery = Discovery(fs, self.stats, self.settings.max_files_per_stream)
        self._restorer = Restorer(self._files, self.stats, streams, fs)
        self._opening_at_end = self.settings.start_at == "end"
        self._catch_up_due = False
        self._catch_up_since: float | None = None
        self._metric_prefix = metric_prefix
        if registry is not None:
            registry.register(FollowCollector(metric_prefix, self._gauged_stats))

    # -- public --------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Changes whenever a file is opened, closed, moved or restarted."""
        return self._files.generation

    def poll(self, resolve: bool = True) -> Iterator[Item]:
        """One pass over every stream; `resolve` re-expands the paths (new, renamed, deleted files)."""
        self.busy = False
        # The files followed already are looked at first: a truncation is seen, and what the file
        # holds since read, before a file found by the listing is judged a copy of it or new.
        looked = list(self._files)
        for followed in looked:
            yield from self._examine(followed)
        if resolve or not self.resolved:
            started, generation = self._clock(), self.generation
            self._resolve()
            self.last_resolve_seconds = self._clock() - started
            if self.generation != generation:  # files opened (or moved): read the new ones now
                before = set(looked)
                for followed in self._files:
                    if followed not in before:
                        yield from self._examine(followed)

    def positions(self) -> list[tuple[int, Position]]:
        """(serial, position) of every followed file, and of every checkpointed file still waited
        for (serial 0: nothing read of it in this run), for the checkpoint."""
        return [(f.serial, f.position()) for f in self._files] + [(0, p) for p in self._files.waiting()]

    def extents(self) -> list[Extent]:
        """What was read of every followed file (not one that may be a copy: nothing of it is read)
        and of every known one, for the self-audit."""
        followed = []
        for f in self._files:
            where = self._fs.where(f.handle)  # its name now: rotation renames it under our descriptor
            if not f.undecided and where and not where.endswith(" (deleted)"):
                followed.append(Extent(f.stream, where, f.identity, f.offset, f.serial))
        known = [Extent(p.stream, p.path, p.identity, p.offset, 0) for p in self._files.known()]
        return followed + known

    def counter_rows(self) -> dict[tuple[str, ...], float]:
        return counter_rows(self.stats)

    def restore_counters(self, rows: dict[tuple[str, ...], float]) -> None:
        restore_counters(self.stats, rows)

    def restore(self, positions: list[Position], saved_at: float = 0.0, known: list[Position] | None = None) -> None:
        """Resume from a checkpoint: find each file again (even renamed) and read on from its offset.
        Files the checkpoint does not know are new: read them whole, and so are files beside the
        stream's paths that are neither followed nor `known` (created and rotated while we were down).

        `known` None: a checkpoint of a version that kept no such list; files beside the paths are
        then taken as new only when written after `saved_at` (the wall clock of the save), once.
        """
        self._opening_at_end = False
        self._catch_up_due = True
        self._catch_up_since = saved_at - 1.0 if known is None else None  # mtime granularity margin
        for position in known or ():
            self._files.know(position)
        self._files.budget.refresh()
        names = {s.name for s in self.streams}
        for position in positions:
            if position.stream in names:
                self._restorer.find_again(position)

    def known_files(self, unless_version: int | None = None) -> tuple[int, list[Position] | None]:
        """(version, files known without being followed: read before, or there before the first
        start); the list is None when the version is still `unless_version` (nothing changed)."""
        version = self._files.known_version
        return version, None if version == unless_version else self._files.known()

    def watch_directories(self) -> set[str]:
        """Directories whose changes should wake the follower (the nearest existing ones)."""
        return watch_directories(self.streams, [f.path for f in self._files])

    def refresh_gauges(self) -> None:
        """Files open and bytes behind per stream, computed when someone looks (a scrape)."""
        open_count = dict.fromkeys(self.stats, 0)
        behind = dict.fromkeys(self.stats, 0)
        for followed in self._files:
            open_count[followed.stream] += 1
            if not followed.undecided:  # maybe a copy: nothing of it is due to be read (no false "behind")
                behind[followed.stream] += max(followed.last_size - followed.offset, 0)
        for name, stats in self.stats.items():
            stats.files_open = open_count[name]
            stats.behind_bytes = behind[name]

    def close(self) -> None:
        for followed in self._files:
            self._files.remove(followed)

    def _gauged_stats(self) -> dict[str, StreamStats]:
        self.refresh_gauges()
        return self.stats

    # -- discovery -------------------------------------------------------------------------

    def _resolve(self) -> None:
        self._files.budget.refresh()
        self._files.index_grown()
        for stats in self.stats.values():
            stats.descriptor_skipped_files = 0
        for position, outcome in self._files.retry_waiting():
            if outcome == "gone":
                self._restorer.given_up(position)
        for stream in self.streams:
            names: dict[FollowedFile, list[str]] = {}  # the names each followed file has now
            rotated = False
            for path, st in self._discovery.expand(stream):
                followed = self._files.get(st.st_dev, st.st_ino)
                if followed is None:
                    opened = self._follow_new(stream.name, path)
                    followed = opened.followed if opened is not None else None
                    rotated |= opened is not None and opened.outcome == "opened" and self.resolved
                if followed is not None and followed.stream == stream.name:
                    names.setdefault(followed, []).append(path)
            for followed, paths in names.items():
                # A hard link names one file twice: it keeps the name it has, if that is one of them.
                if self._files.moved(followed, followed.path if followed.path in paths else paths[0]):
                    self.stats[stream.name].rotations += 1
            seen = {(f.identity.dev, f.identity.ino) for f in names}
            for followed in self._files:
                key = (followed.identity.dev, followed.identity.ino)
                if followed.stream == stream.name and key not in seen and not followed.rotated:
                    rotated = True
                    if self._files.left(followed):
                        self.stats[stream.name].rotations += 1
            appeared = self._discovery.siblings_changed(stream)  # every resolve: it keeps the last listing
            if rotated or self._catch_up_due or appeared:
                self._catch_up(stream)
            elif not self.resolved:  # the first start: what lies beside the paths was there before us
                for sibling in self._discovery.rotated_siblings(stream):
                    self._files.note_present(stream.name, sibling)
        for name, stats in self.stats.items():
            if not stats.descriptor_skipped_files:
                self._discovery.solved(f"descriptors:{name}")  # said again if it happens again
        self._catch_up_due = False
        self._catch_up_since = None
        self._opening_at_end = False
        self.resolved = True

    def _follow_new(self, stream: str, path: str) -> Opened | None:
        """Follow what `path` names now, unless it is a copy of a followed file (copytruncate, cp):
        a copy holds no new lines. If the original is then truncated, `_truncated` reads the copy
        from the original's offset, so lines written just before the copy are not lost.

        A file that may still become a copy (empty, or shorter than what was read of a file it
        starts like) is followed undecided: not read until `_decide` can tell what it is."""
        at_end = self._opening_at_end
        found: list[str] = []

        def start_at(st: os.stat_result, head: bytes, handle: BinaryIO) -> int | None:
            found.append(self._copy_verdict(handle, st, head, stream, path))
            if found[-1] == "copy":
                return None
            return st.st_size if at_end else 0

        opened = self._open(stream, path, start_at)
        if opened is not None and opened.outcome == "opened":
            opened.followed.undecided = found[-1] == "maybe" or opened.followed.last_size == 0
        return opened

    def _catch_up(self, stream: StreamSpec) -> None:
        """Rotations faster than our passes: files that were created, written and rotated away
        between two looks. They sit beside the stream's paths under a rotated name, neither
        followed nor known: read them whole. What is left unread becomes known, unless it is a
        copy: its lines are read (or were) from its original, and the self-audit, which reads
        every known file again, would count them twice."""
        since = self._catch_up_since
        copies: list[str] = []

        def start_at_for(path: str) -> StartAt:
            def start_at(st: os.stat_result, head: bytes, handle: BinaryIO) -> int | None:
                if not head:
                    return None
                if (
                    self._files.read_before(head, stream.name)
                    or self._copy_verdict(handle, st, head, stream.name, path) != "new"
                ):
                    copies.append(path)  # a copy, maybe one still being made: its original has the lines
                    return None
                if since is not None and st.st_mtime < since:
                    return None  # a checkpoint without the list of known files: the clock decides, once
                return 0

            return start_at

        for sibling in self._discovery.rotated_siblings(stream):
            opened = self._open(stream.name, sibling, start_at_for(sibling))
            if opened is not None and opened.outcome == "opened":
                missed = opened.followed
                log.info("stream %s: %s was rotated before it could be followed; reading it", stream.name, sibling)
                missed.rotated, missed.first_path = True, ""
                self.stats[stream.name].rotations += 1  # it was rotated away unseen
            elif opened is not None and opened.outcome == "declined" and sibling not in copies:
                self._files.note_present(stream.name, sibling)

    def _open(self, stream: str, path: str, start_at: StartAt) -> Opened | None:
        try:
            opened = self._files.open(stream, path, start_at)
        except FileNotFoundError:
            return None  # gone between listing and opening: the next pass sees the new state
        except OutOfDescriptorsError:
            self._out_of_descriptors(stream)
            return None
        except OSError as exc:
            self._discovery.problem(stream, f"open:{path}", "cannot open %s: %s", path, exc.strerror or exc)
            return None
        self._discovery.solved(f"open:{path}")
        return opened

    def _out_of_descriptors(self, stream: str) -> None:
        stats = self.stats[stream]
        stats.descriptor_skipped_files += 1
        budget = self._files.budget
        self._discovery.reported.once(
            f"descriptors:{stream}",
            "stream %s: not following every file: the process may open %d files (RLIMIT_NOFILE) and %d are "
            "kept for the endpoint and the checkpoint; raise the limit (ulimit -n, the container runtime's "
            "nofile) or narrow the stream's paths (%s_descriptor_skipped_files says how many)",
            stream,
            budget.limit,
            budget.headroom,
            self._metric_prefix,
        )

    # -- reading ---------------------------------------------------------------------------

    def _examine(self, followed: FollowedFile) -> Iterator[Item]:
        """Act on what one look at the file decided (see `FollowedFile.look`)."""
        try:
            look = followed.look(self._clock(), self.settings)
            if look.verdict == "truncated":
                yield from self._truncated(followed)
                yield from self._examine(followed)  # and read what it holds now, in this same pass
            elif look.verdict == "grew":
                decided = self._decide(followed) if followed.undecided else "new"
                if decided == "new":
                    yield from self._read(followed, look.size, followed.serial)
                elif decided == "copy":  # holds no new lines: a truncation of its original hands over
                    self._files.remove(followed)
                    yield End(followed.stream, followed.serial, "copy")
                    return
        except OSError as exc:
            self.stats[followed.stream].read_errors += 1
            log.warning("stream %s: reading %s failed: %s; will reopen", followed.stream, followed.path, exc)
            self._files.remove(followed)
            yield End(followed.stream, followed.serial, "error")
            return
        if look.verdict in ("deleted", "rotated"):
            self._files.remove(followed)
            yield End(followed.stream, followed.serial, look.verdict)
        elif look.verdict == "flush":
            yield Flush(followed.stream, followed.serial)

    def _decide(self, followed: FollowedFile) -> str:
        """A file followed undecided has bytes now: a copy, maybe one still (looked at again next
        pass, nothing read), or a file of its own (read from where it was opened)."""
        handle = followed.handle
        head = os.pread(handle.fileno(), FINGERPRINT_BYTES, 0)
        found = self._copy_verdict(handle, os.fstat(handle.fileno()), head, followed.stream, followed.path)
        followed.undecided = found == "maybe"
        return found

    def _copy_verdict(self, handle: BinaryIO, st: os.stat_result, head: bytes, stream: str, path: str) -> str:
        """The table's verdict; and a file that starts like what a followed file nothing was read of
        holds now may still be a copy of it (a copy made before our first look at the original).
        Not on the first start: every file there then is read as it is, and start-up must not
        compare each with the others."""
        found = self._files.copy_verdict(handle, st, head, stream, path)
        if found == "new" and self.resolved and self._files.copies_unread(st, head, stream, path):
            return "maybe"
        return found

    def _read(self, followed: FollowedFile, size: int, serial: int) -> Iterator[Data]:
        # A young file's head is read now: its first lines are the ones a rotation's minute holds.
        head = followed.head_key or os.pread(followed.handle.fileno(), MIN_COPY_FINGERPRINT, 0)
        source = source_of(head)
        for chunk in followed.read(size, self.settings, self._clock()):
            yield Data(followed.stream, serial, chunk, source)
        self.busy = True
        self.stats[followed.stream].last_read_timestamp_seconds = self._wall_clock()

    def _truncated(self, followed: FollowedFile) -> Iterator[Item]:
        """Truncated: first the lines written after our last read that the rotated copy (if a
        sibling holds what we read) saved, then the same file from its start, as a new serial."""
        self.stats[followed.stream].truncations += 1
        copy = self._copy_of(followed)
        if copy is not None:
            copy.rotated, copy.first_path = True, ""  # not a rotation of its own
            size = os.fstat(copy.handle.fileno()).st_size
            yield from self._read(copy, size, followed.serial)  # continues the truncated file's last line
        yield End(followed.stream, followed.serial, "truncated")
        self._files.renumber(followed)
        self.busy = True

    def _copy_of(self, original: FollowedFile) -> FollowedFile | None:
        """The copy that holds what was read of `original`, set to read on from its offset: one
        followed undecided while it was being written, or one found beside it."""
        identity, offset, tail = original.identity, original.offset, original.tail
        undecided = [f for f in self._files if f.undecided and f.stream == original.stream and f is not original]
        for other in undecided:
            if is_copy(other.handle, os.fstat(other.handle.fileno()), identity, offset, tail):
                other.offset, other.undecided = offset, False
                other.remember_tail()
                return other

        def start_at(st: os.stat_result, _head: bytes, handle: BinaryIO) -> int | None:
            return offset if is_copy(handle, st, identity, offset, tail) else None

        for path in siblings(original.path, self._fs):
            opened = self._open(original.stream, path, start_at)
            if opened is not None and opened.outcome == "opened":
                return opened.followed
        return None
