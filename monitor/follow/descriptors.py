"""The file-descriptor budget: how many more log files the follower may hold open.

Every followed file holds a descriptor, and so does everything else the process
does: the endpoint's connections, the checkpoint's database, MongoDB's sockets,
inotify. A glob matching more files than RLIMIT_NOFILE allows must not take the
last descriptors: the endpoint would be unreachable (no /healthz, a restarted
pod) and every pass would fail on "Too many open files". So the follower opens a
new file only while `HEADROOM` descriptors stay free for the rest, and says how
many files it left out.
"""

from __future__ import annotations

import os
import resource

HEADROOM = 64  # kept free for the endpoint (workers, waiting connections), the checkpoint, MongoDB


def soft_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def in_use() -> int | None:
    """Descriptors open in this process now (None where /proc cannot tell)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listing the directory
    except OSError:
        return None


class DescriptorBudget:
    """How many more files may be opened, counted afresh at each pass from what is open now."""

    def __init__(self, limit: int | None = None, headroom: int = HEADROOM) -> None:
        self.limit = soft_limit() if limit is None else limit
        self.headroom = headroom
        self._room: int | None = None

    def refresh(self) -> None:
        used = in_use()
        self._room = None if used is None else max(self.limit - self.headroom - used, 0)

    def take(self) -> bool:
        """One more descriptor for a followed file, if the budget has room."""
        if self._room is None:
            return True
        if self._room <= 0:
            return False
        self._room -= 1
        return True

    def give_back(self) -> None:
        if self._room is not None:
            self._room += 1
