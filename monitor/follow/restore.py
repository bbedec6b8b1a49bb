"""Restore: the checkpointed files found again at start-up, under their names or beside them.

A file renamed while the sidecar was down (rotation) is found beside its old
name by its identity; one truncated while down is read again from 0 and its copy
(copytruncate's) read on from the saved offset; one that exists but cannot be
opened keeps its position, waiting (see `FileTable.find_again`); one gone is said
lost if it had unread bytes.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterator

from monitor.follow.fs import FileSystem
from monitor.follow.identity import siblings
from monitor.follow.items import Position, StreamSpec
from monitor.follow.stats import StreamStats
from monitor.follow.table import FileTable

log = logging.getLogger("monitor.follow")


class Restorer:
    """Finds checkpointed files again through the table (the one owner of what is followed)."""

    def __init__(self, files: FileTable, stats: dict[str, StreamStats], streams: list[StreamSpec], fs: FileSystem):
        self._files = files
        self.stats = stats
        self.streams = streams
        self._fs = fs

    def find_again(self, position: Position) -> None:
        """Follow a checkpointed file again from its offset, wherever it is now; or say why not."""
        opened = self._files.find_again(position, self._candidates(position))
        if opened.outcome == "opened" and not position.offset:
            opened.followed.undecided = True  # nothing read of it yet: what it is, is decided anew
        if opened.outcome == "opened" and opened.followed.offset < position.offset:
            self.stats[position.stream].truncations += 1  # truncated while we were down
            self._find_copy(position)
            return
        if opened.outcome == "waiting":
            log.info(
                "stream %s: %s cannot be opened now; its saved position (%d bytes read) is kept until it can be",
                position.stream,
                position.path,
                position.offset,
            )
        if opened.outcome == "declined":
            self.given_up(position)

    def given_up(self, position: Position) -> None:
        """A checkpointed file not found again: lost lines if it had unread bytes."""
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

    def _named_by_another_stream(self, path: str, stream: str) -> bool:
        return any(
            fnmatch.fnmatchcase(path, pattern)
            for other in self.streams
            if other.name != stream
            for pattern in other.paths
        )

    def _find_copy(self, position: Position) -> None:
        """A file truncated while we were down: its copy (copytruncate's) holds what followed our offset."""
        copy = self._files.find_again(position, self._candidates(position), copy_only=True)
        if copy.outcome == "opened":
            copy.followed.rotated, copy.followed.first_path = True, ""
            log.info(
                "stream %s: %s was truncated while the sidecar was down; reading on in its copy %s",
                position.stream,
                position.path,
                copy.followed.path,
            )

    def _candidates(self, position: Position) -> Iterator[str]:
        """Where a checkpointed file may be now: its names, then (listed once more if rotation
        renamed things while we looked) the files beside them.

        A file that was empty when saved has no fingerprint to tell it from a new file that
        reuses its inode number: nothing was read of it, so only its own names are tried. A
        file another stream's paths name is that stream's, never taken for this one.
        """
        own = [name for name in (position.path, position.real_path) if name]
        yield from dict.fromkeys(own)
        if not position.identity.fp_len:
            return
        tried = set(own)
        for _ in range(2):
            for sibling in [s for name in own for s in siblings(name, self._fs)]:
                if sibling not in tried and not self._named_by_another_stream(sibling, position.stream):
                    tried.add(sibling)
                    yield sibling
            tried = set(own)  # the second listing: its names may hold other files now
