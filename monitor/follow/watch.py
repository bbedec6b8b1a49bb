"""Wake-ups for the follow loop from inotify; the events carry no data.

A notification only means "look again": the follow loop re-reads state from
the filesystem itself, so a missed or coalesced event costs latency, never a
line (the periodic poll is the safety net, as inotify misses events on some
network and overlay mounts).

Cost matters more than it seems: watchdog spends ~60 us of Python per event,
and a server writing one line per write(2) at 1 MB/s makes 5,000 modify
events a second. So the two kinds of events take two paths:

- structure (create, move, delete): watchdog, always on; rare events that set
  `structure_changed` and wake the loop.
- writes: one inotify descriptor of our own (inotify_simple) with a modify
  watch per directory, which no thread reads. While the loop is idle it
  waits on that descriptor too, so the first line after a quiet spell is read
  at once; while lines keep coming it polls on a short timer and leaves the
  descriptor alone, and the kernel folds the repeated events of a file into
  one. Per write, that costs no Python at all.

Watches are never re-scheduled to switch between the two modes (that races
inside watchdog, which then logs spurious ERROR lines about inactive emitters).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable, Iterator

from inotify_simple import INotify, flags
from prometheus_client.core import GaugeMetricFamily, Metric
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

log = logging.getLogger("monitor.watch")  # the name operators filter on: see monitor.logs

STRUCTURE_EVENTS = [FileCreatedEvent, FileMovedEvent, FileDeletedEvent, DirCreatedEvent, DirMovedEvent, DirDeletedEvent]
DRAIN_LIMIT = 64  # reads of queued write events per drain; the kernel queue holds at most 16,384


class Signal:
    """A `threading.Event` that `select` can wait on together with other descriptors (a self-pipe)."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def set(self) -> None:
        self._flag.set()
        if self._write >= 0:
            with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending anyway
                os.write(self._write, b"!")

    def clear(self) -> None:
        # Drained before the flag is cleared: a set() in between leaves a byte, a spurious wake-up at worst.
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._read, 4096):
                pass
        self._flag.clear()

    def is_set(self) -> bool:
        return self._flag.is_set()

    def wait(self, timeout: float) -> bool:
        if not self._flag.is_set() and self._read >= 0:
            select.select([self._read], [], [], timeout)
        return self._flag.is_set()

    def fileno(self) -> int:
        return self._read

    def close(self) -> None:
        fds, (self._read, self._write) = (self._read, self._write), (-1, -1)
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


class _Wake(FileSystemEventHandler):
    def __init__(self, waker: Waker) -> None:
        self._waker = waker

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Runs on watchdog's dispatcher thread: set flags and return, never block.
        self._waker.structure_changed = True
        self._waker.event.set()


class Waker:
    """Owns the watches; `event` is set on a structure change, `wait` also returns on a write when idle.

    watchdog shares one inotify descriptor, where a second watch on a directory would
    replace the first one's event mask; so each directory has exactly one watchdog watch
    (structure) and one watch on our own descriptor (writes).
    """

    def __init__(
        self,
        inotify: Callable[[], INotify] = lambda: INotify(nonblocking=True),
        observer: Callable[[], BaseObserver] = Observer,
        metric_prefix: str = "logmonitor",
    ) -> None:
        self.event = Signal()
        self.structure_changed = True
        self.writes_wake = False
        self._prefix = metric_prefix
        self._handler = _Wake(self)
        self._watches: dict[str, ObservedWatch | None] = {}
        self._write_watches: dict[str, int] = {}
        self._started = False
        # A node running many watchers can run out of inotify instances (fs.inotify.max_user_instances):
        # then the follow loop's periodic poll, the safety net it always has, is all there is.
        try:
            self._observer: BaseObserver | None = observer()
            self._observer.daemon = True
        except OSError as exc:
            self._observer = None
            log.warning(
                "cannot use inotify (%s): files are looked at every follow.poll_interval_seconds instead "
                "(logmonitor_watch_mode shows which); raise fs.inotify.max_user_instances to get it back",
                exc,
            )
        try:
            self._writes: INotify | None = inotify() if self._observer is not None else None
        except OSError as exc:
            self._writes = None
            log.warning("cannot watch for writes (%s): a write after a quiet spell is seen at the next poll", exc)

    @property
    def mode(self) -> str:
        """`inotify` (changes wake the loop) or `poll` (the loop looks every poll interval)."""
        return "inotify" if self._observer is not None else "poll"

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            f"{self._prefix}_watch_mode",
            "How the sidecar notices changes to its files: inotify, or polling (no inotify instance to be had).",
            labels=["mode"],
        )
        for mode in ("inotify", "poll"):
            family.add_metric([mode], float(mode == self.mode))
        yield family

    def start(self) -> None:
        if self._observer is not None:
            self._observer.start()
            self._started = True

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.unschedule_all()  # also stops emitters scheduled before start()
        self._watches.clear()
        if self._started and self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._started = False
        if self._writes is not None:
            self._writes.close()
            self._writes = None
        self._write_watches.clear()
        self.event.close()

    def watch_directories(self, directories: set[str]) -> None:
        """Watch exactly these existing directories (missing ones are retried by the caller)."""
        for directory in set(self._watches) - directories:
            self._unschedule(self._watches.pop(directory))
            self._unwatch_writes(directory)
        for directory in directories - set(self._watches):
            self._watches[directory] = self._schedule(directory)
            self._watch_writes(directory)

    def wake_on_writes(self, wanted: bool) -> bool:
        """Let writes wake `wait` (idle) or not (busy, polling); True if just turned on.

        While writes did not wake the loop one can have slipped by: a caller that just
        turned them on should look at its files once more before it waits.
        """
        turned_on = wanted and not self.writes_wake
        self.writes_wake = wanted
        if turned_on:
            self._drain()  # what was written while busy has been read, or is about to be
        return turned_on

    def wait(self, timeout: float) -> bool:
        """Until `event` is set, a write happens while writes wake, or `timeout` passes; False then."""
        if self._writes is None or not self.writes_wake or self.event.is_set():
            return self.event.wait(timeout)
        ready, _, _ = select.select([self.event.fileno(), self._writes.fileno()], [], [], timeout)
        if self._writes.fileno() in ready:
            self._drain()
            return True
        return self.event.is_set()

    def _drain(self) -> None:
        if self._writes is None:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            for _ in range(DRAIN_LIMIT):
                if not self._writes.read(timeout=0):
                    break

    def _watch_writes(self, directory: str) -> None:
        if self._writes is None:
            return
        try:
            self._write_watches[directory] = self._writes.add_watch(directory, flags.MODIFY)
        except OSError as exc:
            log.warning("cannot watch %s for writes (%s); relying on the periodic poll", directory, exc)

    def _unwatch_writes(self, directory: str) -> None:
        wd = self._write_watches.pop(directory, None)
        if wd is not None and self._writes is not None:
            with contextlib.suppress(OSError):
                self._writes.rm_watch(wd)

    def _schedule(self, directory: str) -> ObservedWatch | None:
        if self._observer is None:
            return None
        try:
            return self._observer.schedule(self._handler, directory, recursive=False, event_filter=STRUCTURE_EVENTS)
        except OSError as exc:
            # Out of inotify watches, or the directory vanished: the poll still covers it.
            log.warning("cannot watch %s for changes (%s); relying on the periodic poll", directory, exc)
            return None

    def _unschedule(self, watch: ObservedWatch | None) -> None:
        if watch is None or self._observer is None:
            return
        with contextlib.suppress(KeyError, OSError):
            self._observer.unschedule(watch)


def existing_ancestor(path: str) -> str:
    """The nearest directory that exists at or above `path` (what to watch for it to appear)."""
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path
