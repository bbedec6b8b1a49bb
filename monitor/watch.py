"""Wake-ups for the follow loop from inotify (watchdog); the events carry no data.

A notification only means "look again": the follow loop re-reads state from
the filesystem itself, so a missed or coalesced event costs latency, never a
line (the periodic poll is the safety net, as inotify misses events on some
network and overlay mounts).

Cost matters more than it seems: watchdog spends ~60 us of Python per event,
and a server writing one line per write(2) at 1 MB/s would make 5,000 modify
events a second. So two kinds of watch are kept per directory:

- structure (create, move, delete): always on; rare events.
- modify: on only while the follower is idle, so the first line after a quiet
  spell wakes it at once. While lines keep coming the follower polls on a
  short timer instead, which batches many writes into one read.
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

STRUCTURE_EVENTS = [FileCreatedEvent, FileMovedEvent, FileDeletedEvent, DirCreatedEvent, DirMovedEvent, DirDeletedEvent]
WITH_MODIFY_EVENTS = [*STRUCTURE_EVENTS, FileModifiedEvent]


class _Wake(FileSystemEventHandler):
    def __init__(self, waker: Waker) -> None:
        self._waker = waker

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Runs on watchdog's dispatcher thread: set flags and return, never block.
        if event.event_type != "modified":
            self._waker.structure_changed = True
        self._waker.event.set()


class Waker:
    """Owns the watchdog observer; `event` is set whenever a watched directory changes.

    watchdog shares one inotify descriptor, where a second watch on a directory would
    replace the first one's event mask; so each directory has exactly one watch, and
    turning modify events on or off re-schedules it with the other filter.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.structure_changed = True
        self._observer = Observer()
        self._observer.daemon = True
        self._handler = _Wake(self)
        self._watches: dict[str, ObservedWatch | None] = {}
        self._modify = False
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

    def want_modify_events(self, wanted: bool) -> bool:
        """Turn the per-write wake-ups on (idle) or off (busy, polling); True if that changed.

        While a watch is re-scheduled an event can slip by: a caller that just turned
        modify events on should look at its files once more before it waits.
        """
        if wanted == self._modify:
            return False
        self._modify = wanted
        for directory, watch in list(self._watches.items()):
            self._unschedule(watch)
            self._watches[directory] = self._schedule(directory)
        return True

    def _schedule(self, directory: str) -> ObservedWatch | None:
        events = WITH_MODIFY_EVENTS if self._modify else STRUCTURE_EVENTS
        try:
            return self._observer.schedule(self._handler, directory, recursive=False, event_filter=events)
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
