"""Wake-ups for the follow loop from inotify (watchdog); the events carry no data.

A notification only means "look again": the follow loop re-reads state from
the filesystem itself, so a missed or coalesced event costs latency, never a
line (the periodic poll is the safety net, as inotify misses events on some
network and overlay mounts).

Cost matters more than it seems: watchdog spends ~60 us of Python per event,
and a server writing one line per write(2) at 1 MB/s would make 5,000 modify
events a second. So events are of two kinds:

- structure (create, move, delete): always wake the loop; rare events.
- modify: wake the loop only while it is idle, so the first line after a
  quiet spell is read at once. While lines keep coming the loop polls on a
  short timer instead, which batches many writes into one read.

Each directory's watch is scheduled once, for both kinds, and kept: turning
wake-ups on writes on and off only changes what the handler does with them.
(Re-scheduling watches to change their filter races inside watchdog, which
then logs spurious ERROR lines about inactive emitters.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

log = logging.getLogger(__name__)

WATCHED_EVENTS = [
    FileCreatedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
    FileModifiedEvent,
]


class _Wake(FileSystemEventHandler):
    def __init__(self, waker: Waker) -> None:
        self._waker = waker

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Runs on watchdog's dispatcher thread: set flags and return, never block.
        if event.event_type != "modified":
            self._waker.structure_changed = True
        elif not self._waker.writes_wake:
            return  # busy: the loop polls on its own timer
        self._waker.event.set()


class Waker:
    """Owns the watchdog observer; `event` is set whenever a watched directory changes.

    watchdog shares one inotify descriptor, where a second watch on a directory would
    replace the first one's event mask; so each directory has exactly one watch.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.structure_changed = True
        self._observer = Observer()
        self._observer.daemon = True
        self._handler = _Wake(self)
        self._watches: dict[str, ObservedWatch | None] = {}
        self.writes_wake = False  # read on watchdog's thread: a plain flag, set by the loop
        self._started = False

    def start(self) -> None:
        self._observer.start()
        self._started = True

    def stop(self) -> None:
        self._observer.unschedule_all()  # also stops emitters scheduled before start()
        self._watches.clear()
        if self._started:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._started = False

    def watch_directories(self, directories: set[str]) -> None:
        """Watch exactly these existing directories (missing ones are retried by the caller)."""
        for directory in set(self._watches) - directories:
            self._unschedule(self._watches.pop(directory))
        for directory in directories - set(self._watches):
            self._watches[directory] = self._schedule(directory)

    def wake_on_writes(self, wanted: bool) -> bool:
        """Let writes wake the loop (idle) or not (busy, polling); True if just turned on.

        While writes did not wake the loop one can have slipped by: a caller that just
        turned them on should look at its files once more before it waits.
        """
        turned_on = wanted and not self.writes_wake
        self.writes_wake = wanted
        return turned_on

    def _schedule(self, directory: str) -> ObservedWatch | None:
        try:
            return self._observer.schedule(self._handler, directory, recursive=False, event_filter=WATCHED_EVENTS)
        except OSError as exc:
            # Out of inotify watches, or the directory vanished: the poll still covers it.
            log.warning("cannot watch %s for changes (%s); relying on the periodic poll", directory, exc)
            return None

    def _unschedule(self, watch: ObservedWatch | None) -> None:
        if watch is None:
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
