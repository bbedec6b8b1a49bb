"""The file-system calls the follower makes, passed in with real defaults.

Tests swap single calls (rename a file between a `stat` and an `open`, fail a
`listdir`) without patching globals, as watchdog's `PollingEmitter` does.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO


def open_for_reading(path: str) -> BinaryIO:
    return open(path, "rb", buffering=0)


def path_of_handle(handle: BinaryIO) -> str:
    """Where the file behind an open handle is now (its real name, symlinks resolved), or ""."""
    try:
        return os.readlink(f"/proc/self/fd/{handle.fileno()}")
    except OSError:
        return os.path.realpath(handle.name) if isinstance(handle.name, str) else ""


@dataclass(frozen=True)
class FileSystem:
    stat: Callable[[str], os.stat_result] = os.stat
    open: Callable[[str], BinaryIO] = open_for_reading
    scandir: Callable[[str], Iterable[os.DirEntry]] = os.scandir
    glob: Callable[[str], list[str]] = glob.glob
    where: Callable[[BinaryIO], str] = path_of_handle


REAL = FileSystem()
