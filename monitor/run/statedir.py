"""The state directory: where the checkpoint lives, held by one `monitor run` at a time.

Two sidecars on one directory would overwrite each other's checkpoint, each sure
it holds the counts. So the directory is locked for the process's life: an
exclusive `flock` on `lock` inside it, which holds the holder's pid for the
message the second one gets. The kernel drops a flock when its holder dies,
`kill -9` included, so a restart is never refused by a stale lock.

What can be wrong with the directory is told apart here, so that nothing has to
guess from SQLite's "unable to open database file":

- unusable at start (`StateDirectoryError`: `monitor run` exits 2, nothing is
  touched): not a directory, unreachable, held by another sidecar, or a file in
  it a symbolic link to nothing (a volume not mounted);
- not writable (a read-only file system, permission denied): the checkpoint can
  still be read, and every save fails, is counted and says why;
- deleted while running: `hold()`, before each write, makes it again and takes
  its lock again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

LOCK_FILE = "lock"


class StateDirectoryError(Exception):
    """The state directory cannot be used; the message names it, says why and what to do."""


class StateDirectory:
    """The checkpoint's directory: checked at start, locked while this process runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path / LOCK_FILE
        self._lock_fd: int | None = None

    def open(self, *files: Path) -> str | None:
        """At start: check the directory and `files` in it, make the directory if missing, take its lock.
        Returns why the directory is not writable (None if it is); StateDirectoryError if it cannot be used."""
        if not self._check_directory():
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                return f"it does not exist and cannot be made: {exc.strerror or exc}"
        for path in files:
            refuse_dangling(path)
        unwritable = self.why_not_writable()
        if self._lock_fd is None:
            try:
                self._take_lock(create=unwritable is None)
            except OSError as exc:
                raise StateDirectoryError(
                    f"cannot take the lock {self.lock_path}: {exc.strerror or exc}. Make it (or remove it, if no "
                    f"sidecar runs) and {self.path} writable by uid {os.geteuid()} (the sidecar's user)"
                ) from None
        return unwritable

    def hold(self) -> None:
        """Before a write: the directory exists (made again if it was deleted) and this process holds
        its lock (taken again if the lock file is gone). OSError if the directory cannot be made or
        written, StateDirectoryError if another sidecar took it meanwhile."""
        if self._lock_fd is not None and _same_file(self._lock_fd, self.lock_path):
            return
        self.release()
        self.path.mkdir(parents=True, exist_ok=True)
        self._take_lock(create=True)

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the last descriptor drops the flock
            self._lock_fd = None

    def why_not_writable(self, *files: Path) -> str | None:
        """Why this process cannot write the directory (or one of `files`), in words; None if it can."""
        for path in (self.path, *files):
            if os.path.exists(path) and not os.access(path, os.W_OK, effective_ids=True):
                return _why_refused(path)
        return None

    def _check_directory(self) -> bool:
        """Whether the directory exists; StateDirectoryError if its path is unusable."""
        refuse_dangling(self.path)
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            return False
        except OSError as exc:  # permission denied on a parent, a parent that is a file, ...
            raise StateDirectoryError(
                f"cannot reach state directory {self.path}: {exc.strerror or exc}. Make it reachable by uid "
                f"{os.geteuid()} (the sidecar's user), or pass --state-dir (state.directory in the config)"
            ) from None
        if not stat.S_ISDIR(mode):
            raise StateDirectoryError(
                f"state directory {self.path} is not a directory: remove or move what is there, or pass "
                "--state-dir (state.directory in the config)"
            )
        if not os.access(self.path, os.R_OK | os.X_OK, effective_ids=True):
            raise StateDirectoryError(
                f"cannot reach state directory {self.path}: {_why_refused(self.path)}. Make it readable and "
                f"writable by uid {os.geteuid()} (the sidecar's user), or pass --state-dir (state.directory in "
                "the config)"
            )
        return True

    def _take_lock(self, create: bool) -> None:
        fd, writable = self._open_lock(create)
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StateDirectoryError(
                f"state directory {self.path} is in use by another `monitor run` (pid {holder}): two sidecars on "
                "one state directory would overwrite each other's checkpoint. Stop the other one, or give this "
                "one its own --state-dir (state.directory in the config)"
            ) from None
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _open_lock(self, create: bool) -> tuple[int | None, bool]:
        """The lock file, opened to write the pid in if it can be, else to read (a flock needs either)."""
        try:
            flags = os.O_RDWR | (os.O_CREAT if create else 0)
            return os.open(self.lock_path, flags | os.O_CLOEXEC, 0o644), True
        except OSError as exc:
            refused = exc
        try:
            return os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC), False
        except OSError:
            if create:
                raise refused from None
            return None, False  # a directory we cannot write and no lock file: nothing of it can be spoilt


def refuse_dangling(path: Path) -> None:
    """StateDirectoryError if `path` is a symbolic link to nothing: what it pointed to (a checkpoint on a
    volume not mounted?) is not there, and starting afresh beside it would hide that."""
    try:
        if not stat.S_ISLNK(os.lstat(path).st_mode) or path.exists():
            return
        target = os.readlink(path)
    except OSError:
        return  # not there, or not reachable: whoever opens it says so
    raise StateDirectoryError(
        f"{path} is a symbolic link to {target}, which does not exist. If it lives on a volume that is not "
        "mounted, mount it; to start afresh (counters at 0, logs read from their end), remove the link"
    )


def _why_refused(path: Path) -> str:
    try:
        read_only = os.statvfs(path).f_flag & os.ST_RDONLY
    except OSError:
        read_only = False
    if read_only:
        return os.strerror(errno.EROFS).lower()
    return f"{os.strerror(errno.EACCES).lower()} for uid {os.geteuid()} on {path}"


def _same_file(fd: int, path: Path) -> bool:
    try:
        known, now = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (known.st_dev, known.st_ino) == (now.st_dev, now.st_ino)


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(int(os.pread(fd, 32, 0).decode().strip()))
    return "unknown"
