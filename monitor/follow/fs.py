"""The file-system calls the follower makes, passed in with real defaults.

Tests swap single calls (rename a file between a `stat` and an `open`, fail a
`listdir`) without patching globals, as watchdog's `PollingEmitter` does.
"""

from __future__ import annotations

import errno
import glob
import io
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO


class NotRegularFileError(OSError):
    """The name holds a FIFO, socket, device or directory now: never read by the follower."""


def open_for_reading(path: str) -> BinaryIO:
    """Open a regular file for reading, without ever blocking: a FIFO put where a log was (or
    swapped in between a `stat` and this `open`) is opened non-blocking, seen and refused."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(errno.EINVAL, "not a regular file (FIFO, socket, device or directory)", path)
        os.set_blocking(fd, True)
        handle = io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise
    handle.name = path
    return handle


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
