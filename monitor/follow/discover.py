"""Discovery: which files a stream's paths and globs name now, bounded, with path problems said once.

Discovery only names candidates; whether a name is a file to follow (or one
followed already) is decided by the table on the handle it opens.
"""

from __future__ import annotations

import glob
import logging
import os
import stat
from dataclasses import dataclass, field

from monitor.follow.fs import FileSystem
from monitor.follow.identity import COMPRESSED_SUFFIXES, sibling_entries
from monitor.follow.items import StreamSpec
from monitor.follow.stats import StreamStats
from monitor.follow.watch import existing_ancestor

log = logging.getLogger("monitor.follow")


@dataclass
class Reported:
    """Problems already logged once, so a broken path does not flood the log every pass."""

    keys: set[str] = field(default_factory=set)

    def once(self, key: str, message: str, *args: object) -> bool:
        if key in self.keys:
            return False
        self.keys.add(key)
        log.warning(message, *args)
        return True


class Discovery:
    """Expands streams to their regular, uncompressed files; counts and reports path problems."""

    def __init__(self, fs: FileSystem, stats: dict[str, StreamStats], max_files_per_stream: int) -> None:
        self._fs = fs
        self._stats = stats
        self._limit = max_files_per_stream
        self.reported = Reported()
        self._sibling_listing: dict[str, int] = {}

    def expand(self, stream: StreamSpec) -> list[tuple[str, os.stat_result]]:
        """At most `max_files_per_stream` files (in name order) with their stat, whatever the glob
        matches: names are listed once and only the first candidates are looked at."""
        paths: list[tuple[str, os.stat_result]] = []
        matched = 0
        for pattern in stream.paths:
            names = sorted(self._fs.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            for path in names:
                if path.endswith(COMPRESSED_SUFFIXES):
                    continue  # rotated and compressed: what it holds was read before compression
                matched += 1
                if len(paths) < self._limit and (st := self._regular_file(stream.name, path)):
                    paths.append((path, st))
        over = matched > self._limit
        self._stats[stream.name].skipped_files = matched - len(paths) if over else 0
        if over:
            self.reported.once(
                f"limit:{stream.name}",
                "stream %s: %d files match, following the first %d by name (follow.max_files_per_stream)",
                stream.name,
                matched,
                self._limit,
            )
        return paths

    def rotated_siblings(self, stream: StreamSpec) -> list[str]:
        """Files beside a stream's (non-glob) paths under a rotated name (`app.log.1`, `app.log-20251022`)."""
        return sorted(e.path for e in self._sibling_entries(stream))

    def siblings_changed(self, stream: StreamSpec) -> bool:
        """Has a file beside the stream's paths appeared, been renamed or gone since the last call?
        (False on the first.) A copy made by copytruncate of a file nothing was read of is found
        only so: nothing in the truncated file tells of it. Costs one directory listing; what is
        kept is one hash per stream, however many files the directory holds."""
        listing = hash(frozenset((e.name, e.inode()) for e in self._sibling_entries(stream)))
        before = self._sibling_listing.get(stream.name)
        self._sibling_listing[stream.name] = listing
        return before is not None and before != listing

    def _sibling_entries(self, stream: StreamSpec) -> list[os.DirEntry]:
        found = []
        for pattern in stream.paths:
            base = os.path.basename(pattern)
            if glob.has_magic(base):
                continue  # a glob already matches the rotated names it wants
            found += [e for e in sibling_entries(pattern, self._fs) if e.name.startswith(base)]
        return found

    def problem(self, stream: str, key: str, message: str, *args: object) -> None:
        """Count and log a path problem once, not on every pass while it lasts."""
        if self.reported.once(key, f"stream %s: {message}", stream, *args):
            self._stats[stream].read_errors += 1

    def solved(self, key: str) -> None:
        self.reported.keys.discard(key)

    def _regular_file(self, stream: str, path: str) -> os.stat_result | None:
        try:
            st = self._fs.stat(path)
        except FileNotFoundError:
            return None  # waited for: it may appear later
        except OSError as exc:  # permission denied on a directory, a symlink loop, ...
            self.problem(stream, f"stat:{path}", "cannot stat %s: %s", path, exc.strerror or exc)
            return None
        if stat.S_ISREG(st.st_mode):
            self.solved(f"kind:{path}")
            return st
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (FIFO, socket or device)"
        self.problem(stream, f"kind:{path}", "%s is %s; skipping it", path, kind)
        return None


def watch_directories(streams: list[StreamSpec], followed_paths: list[str]) -> set[str]:
    """Directories whose changes should wake the follower (the nearest existing ones)."""
    directories = set()
    for stream in streams:
        for pattern in stream.paths:
            parent = os.path.dirname(os.path.abspath(pattern))
            while glob.has_magic(parent):
                parent = os.path.dirname(parent)
            directories.add(existing_ancestor(parent))
    directories.update(os.path.dirname(path) for path in followed_paths)
    return directories
