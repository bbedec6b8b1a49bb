"""The table of followed files, keyed by identity: each file is followed at most once.

Whoever asks to follow a file (discovery, a rotation's catch-up, a truncated
file's copy, a restore from the checkpoint) goes through `FileTable.open`,
which decides on the `fstat` of the handle it actually opened, never on an
earlier `stat` of the name: logrotate can rename a file between the two, and
a name checked once can be another file by the time it is opened. A file
already in the table is refused there, so no caller can make it be read twice.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from monitor.follow.copies import Verdict, verdict
from monitor.follow.descriptors import DescriptorBudget
from monitor.follow.file import FollowedFile
from monitor.follow.fs import FileSystem
from monitor.follow.identity import FINGERPRINT_BYTES, MIN_COPY_FINGERPRINT, Identity, digest, identity_of, matches
from monitor.follow.items import Position
from monitor.follow.known import KnownFiles


class OutOfDescriptorsError(OSError):
    """Opening one more file would leave too few descriptors for the rest of the process."""


UNREAD_COMPARED = 16  # unread followed files a new file is compared with (the newest): see copies_unread

# Given the opened file's stat and first bytes: the offset to read from, or None to leave it.
StartAt = Callable[[os.stat_result, bytes, BinaryIO], int | None]


@dataclass(frozen=True)
class Opened:
    """What `FileTable.open` did: `followed` is the new entry, or the existing one for `already`."""

    outcome: str  # opened | already | declined
    followed: FollowedFile | None = None


class FileTable:
    """Followed files by serial and by identity (device + inode), with the one-entry invariant."""

    def __init__(self, fs: FileSystem, clock: Callable[[], float], budget: DescriptorBudget | None = None) -> None:
        self._fs = fs
        self._clock = clock
        self.budget = budget if budget is not None else DescriptorBudget()
        self._by_serial: dict[int, FollowedFile] = {}
        self._by_inode: dict[tuple[int, int], FollowedFile] = {}
        self._serial = 0
        # Files known without being followed now: read before (to `offset`), or there before the first
        # start (to their size then). A file starting like one of them may be a copy, never new; one
        # holding no more than its offset is a copy. Saved in the checkpoint; the oldest are dropped.
        self._known = KnownFiles()
        # Followed files by their first MIN_COPY_FINGERPRINT bytes: only files alike there are copies
        # of each other. A file shorter than that at open is indexed once it has them (`index_grown`).
        self._by_head: dict[bytes, dict[FollowedFile, None]] = {}
        self._unindexed: dict[FollowedFile, None] = {}
        # Followed files nothing was read of yet (opened or truncated at offset 0), newest last: a
        # file that starts like what one of them holds now may be a copy of lines it will yield.
        self._unread: dict[FollowedFile, None] = {}
        # Checkpointed files that exist but cannot be opened yet (permissions): their positions are
        # kept, saved, and taken up by whoever opens the file first, so it is never read from 0.
        self._waiting: dict[tuple[int, int], Position] = {}
        # Bumped whenever a file is opened, closed, moved or restarted: the caller checkpoints at
        # once then, because positions in files that rotation is about to move are worth saving.
        self.generation = 0

    def __iter__(self) -> Iterator[FollowedFile]:
        return iter(list(self._by_serial.values()))

    def __len__(self) -> int:
        return len(self._by_serial)

    def get(self, dev: int, ino: int) -> FollowedFile | None:
        return self._by_inode.get((dev, ino))

    def open(self, stream: str, path: str, start_at: StartAt) -> Opened:
        """Follow the file `path` names at the moment it is opened (OSError if it cannot be).

        The file is judged by its open handle: if that file is followed already (under any
        name), the handle is closed and the entry returned as `already`; if `start_at`
        declines it, as `declined`.
        """
        if not self.budget.take():
            raise OutOfDescriptorsError(errno.EMFILE, "kept for the endpoint and the checkpoint", path)
        try:
            handle = self._fs.open(path)
        except BaseException:
            self.budget.give_back()
            raise
        try:
            st = os.fstat(handle.fileno())
            existing = self._by_inode.get((st.st_dev, st.st_ino))
            if existing is not None:
                handle.close()
                self.budget.give_back()
                return Opened("already", existing)
            head = os.pread(handle.fileno(), FINGERPRINT_BYTES, 0)
            waited = self._waiting.pop((st.st_dev, st.st_ino), None)
            if waited is not None and matches(head, waited.identity):
                offset = waited.offset if st.st_size >= waited.offset else 0  # 0: truncated meanwhile
            else:
                offset = start_at(st, head, handle)
        except BaseException:
            handle.close()
            self.budget.give_back()
            raise
        if offset is None:
            handle.close()
            self.budget.give_back()
            return Opened("declined")
        identity = Identity(st.st_dev, st.st_ino, len(head), digest(head))
        self._serial += 1
        followed = FollowedFile(
            self._serial,
            stream,
            path,
            path,
            handle,
            identity,
            offset,
            st.st_size,
            self._clock(),
            real_path=self._fs.where(handle),
        )
        followed.remember_tail()
        if len(head) >= MIN_COPY_FINGERPRINT:
            followed.head_key = head[:MIN_COPY_FINGERPRINT]
        if len(head) < FINGERPRINT_BYTES:
            followed.young_head = head
        self._by_serial[followed.serial] = followed
        self._by_inode[(identity.dev, identity.ino)] = followed
        self._index(followed)
        if not offset:
            self._unread[followed] = None
        self.generation += 1
        return Opened("opened", followed)

    def renumber(self, followed: FollowedFile) -> None:
        """A truncated file starts over under a new serial (its old partial line ends with the old one)."""
        self._remember(followed)
        self._unindex(followed)
        del self._by_serial[followed.serial]
        self._serial += 1
        followed.start_over(self._serial)
        self._by_serial[followed.serial] = followed
        self._index(followed)
        self._unread[followed] = None
        self.generation += 1

    def remove(self, followed: FollowedFile) -> None:
        self._remember(followed)
        self._unindex(followed)
        self._unread.pop(followed, None)
        self.generation += 1
        self._by_serial.pop(followed.serial, None)
        key = (followed.identity.dev, followed.identity.ino)
        if self._by_inode.get(key) is followed:
            del self._by_inode[key]
        followed.close()
        self.budget.give_back()

    def moved(self, followed: FollowedFile, path: str) -> bool:
        """`followed` is now found at `path`; True if that is a rotation of it."""
        if path == followed.path:
            followed.rotated = False
            return False
        self.generation += 1
        followed.real_path = self._fs.where(followed.handle) or followed.real_path
        return followed.moved_to(path)

    def left(self, followed: FollowedFile) -> bool:
        self.generation += 1
        return followed.left_stream(self._clock())

    def read_before(self, head: bytes, stream: str) -> bool:
        """Does `head` start like a file of `stream` followed now, or like any file read before
        (so the file may be a copy of it)?"""
        if any(matches(head, f.identity) for f in self.alike(head, stream)):
            return True
        young = (f for f in self._unindexed if f.stream == stream)
        if any(f.identity.fp_len and matches(head, f.identity) for f in young):
            return True
        return self._known.starts_like(head)

    def copy_verdict(self, handle: BinaryIO, st: os.stat_result, head: bytes, stream: str, path: str) -> Verdict:
        """Is the file open as `handle` (found at `path`) a copy of a file of `stream` (followed now,
        or read before and holding no more than was read of it), maybe one still being written, or new?"""
        found = verdict(handle, st, head, self.alike(head, stream), path)
        if found == "new" and self._known.holds_only_read(head, st.st_size):
            return "copy"
        return found

    def copies_unread(self, st: os.stat_result, head: bytes, stream: str, path: str) -> bool:
        """Does the file (`st`, first bytes `head`, found at `path`) start like what a followed file
        of `stream` that nothing was read of holds now? Then it may be a copy of lines that file
        will yield (logrotate's `copy`, or a copytruncate that copied it before our first look).
        Compared with the file's bytes now: its fingerprint was taken when it was empty. The file
        that follows another under its name is not its copy. At most the newest UNREAD_COMPARED
        such files are compared, so many empty files cost no more than a few."""
        if not head:
            return False
        compared, done = 0, []
        for followed in reversed(self._unread):
            if followed.offset:
                done.append(followed)  # read since: its lines are known the usual way
                continue
            if compared == UNREAD_COMPARED:
                break
            compared += 1
            same_file = (followed.identity.dev, followed.identity.ino) == (st.st_dev, st.st_ino)
            if followed.stream != stream or same_file or path in (followed.path, followed.first_path):
                continue
            now = os.pread(followed.handle.fileno(), len(head), 0)
            alike = min(len(now), len(head))
            if alike and now[:alike] == head[:alike]:
                return True
        for followed in done:
            del self._unread[followed]
        return False

    def alike(self, head: bytes, stream: str) -> list[FollowedFile]:
        """Followed files of `stream` whose first bytes are those of `head` (copies' possible sources)."""
        if len(head) < MIN_COPY_FINGERPRINT:
            return []
        return [f for f in self._by_head.get(head[:MIN_COPY_FINGERPRINT], ()) if f.stream == stream]

    def index_grown(self) -> None:
        """Index the files that were too short at open and have read the bytes to be indexed by."""
        for followed in [f for f in self._unindexed if f.head_key]:
            del self._unindexed[followed]
            self._index(followed)

    def _index(self, followed: FollowedFile) -> None:
        if followed.head_key:
            self._by_head.setdefault(followed.head_key, {})[followed] = None
        else:
            self._unindexed[followed] = None

    def _unindex(self, followed: FollowedFile) -> None:
        # A head_key changes only from b"" (an unindexed file) or after this (renumber): it is the
        # key the file was indexed under, if it was.
        self._unindexed.pop(followed, None)
        same = self._by_head.get(followed.head_key)
        if same is not None:
            same.pop(followed, None)
            if not same:
                del self._by_head[followed.head_key]

    def _remember(self, followed: FollowedFile) -> None:
        if followed.offset and followed.identity.fp_len:
            self.know(followed.position())

    def know(self, position: Position) -> None:
        """Remember a file not followed now: read to `position.offset`, or there before us."""
        self._known.know(position)

    def known(self) -> list[Position]:
        """The files known without being followed, oldest first, for the checkpoint."""
        return self._known.positions()

    @property
    def known_version(self) -> int:
        return self._known.version

    def note_present(self, stream: str, path: str) -> None:
        """A file there before the first start, under a rotated name: known to its present size, so
        that no later look takes it for a file created while the sidecar was not looking."""
        try:
            handle = self._fs.open(path)
        except OSError:
            return
        with handle:
            st = os.fstat(handle.fileno())
            if (st.st_dev, st.st_ino) not in self._by_inode:
                self.know(Position(stream, path, identity_of(handle, st), st.st_size, st.st_size))

    # -- restore -------------------------------------------------------------------------

    def waiting(self) -> list[Position]:
        """Positions of checkpointed files that could not be opened yet: saved as they were."""
        return list(self._waiting.values())

    def retry_waiting(self) -> list[tuple[Position, str]]:
        """Open the waited-for files again under their own names; those gone (or replaced by
        another file) are given up: (position, "opened" | "gone")."""
        done = []
        for key, position in list(self._waiting.items()):
            try:
                opened = self.open(position.stream, position.path, lambda *_: None)
            except OSError:
                if not self._is_the_file(position.path, position.identity):
                    del self._waiting[key]
                    done.append((position, "gone"))
                continue
            if opened.outcome == "opened":
                opened.followed.first_path = position.path
                done.append((position, "opened"))
            else:  # rewritten meanwhile, or followed already under another name
                self._waiting.pop(key, None)
                done.append((position, "gone"))
        return done

    def _is_the_file(self, path: str, identity: Identity) -> bool:
        try:
            st = self._fs.stat(path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (identity.dev, identity.ino)

    def find_again(self, position: Position, candidates: Iterable[str], copy_only: bool = False) -> Opened:
        """Follow a checkpointed file again, found at the first candidate path that holds it.

        The file must be the same one: same inode and head, or (a copy, e.g. logrotate's
        `copy`) the same head, long enough to tell, and at least as long as what was read.
        A file truncated while the sidecar was down is read again from 0. With `copy_only`,
        only a copy is taken.
        """
        identity = position.identity

        def start_at(st: os.stat_result, head: bytes, _handle: BinaryIO) -> int | None:
            same_inode = (st.st_dev, st.st_ino) == (identity.dev, identity.ino)
            if not matches(head, identity) or (copy_only and same_inode):
                return None
            if not same_inode and (identity.fp_len < MIN_COPY_FINGERPRINT or st.st_size < position.offset):
                return None
            return position.offset if st.st_size >= position.offset else 0

        for path in candidates:
            try:
                opened = self.open(position.stream, path, start_at)
            except FileNotFoundError:
                continue
            except OSError:
                if self._is_the_file(path, identity):  # there, but not readable now: wait for it
                    self._waiting[(identity.dev, identity.ino)] = position
                    return Opened("waiting")
                continue
            if opened.outcome == "already" and (copy_only or not _same_file(opened.followed, identity)):
                continue  # the name now holds another file we follow: look further
            if opened.outcome != "declined":
                if opened.outcome == "opened":
                    opened.followed.first_path = position.path
                return opened
        return Opened("declined")


def _same_file(followed: FollowedFile | None, identity: Identity) -> bool:
    return followed is not None and (followed.identity.dev, followed.identity.ino) == (identity.dev, identity.ino)
