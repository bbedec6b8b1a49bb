"""The sidecar's state across restarts: one consistent cut of every owner, saved and restored.

Owners (metrics, follower, reconciler) hand over plain rows; this module takes
them together under the follow loop's lock, so a cut holds read positions and
exactly the counters those positions produced, and gives them back at start.

Every scrape of /metrics first stages a checkpoint and then renders the
metrics under the same lock hold, and the response is sent only once the
checkpoint is on disk. So Prometheus never sees a value the checkpoint does
not hold: after `kill -9` the counters continue from exactly what was last
scraped, and the lines after the checkpointed offsets are counted once.

Nothing is saved before the saved state was given back (`restore`): a cut of
parts that hold nothing yet would overwrite what they are about to restore.
When the checkpoint's file was lost (deleted while running), the next cut holds
every pending claim, not only the ones that changed, so the new file is whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from monitor.export.metrics import LogMetrics
from monitor.follow import Follower
from monitor.run.checkpoint import Checkpoint
from monitor.run.pipeline import Pipeline
from monitor.run.snapshot import Snapshot

if TYPE_CHECKING:
    from monitor.reconcile.reconciler import Reconciler

log = logging.getLogger("monitor.sidecar")  # said at the sidecar's start: the name operators filter on


class SidecarState:
    """Cuts, writes and restores the state of the sidecar's parts through one `Checkpoint`."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        lock: threading.RLock,
        follower: Follower,
        pipeline: Pipeline,
        metrics: LogMetrics,
        reconciler: Reconciler | None,
    ) -> None:
        self.checkpoint = checkpoint
        self._lock = lock
        self._follower = follower
        self._pipeline = pipeline
        self._metrics = metrics
        self._reconciler = reconciler
        self._known_version: int | None = None  # of the known files last handed to the checkpoint
        self.restored = False

    def save(self) -> bool:
        """Stage a consistent cut and write it (what the loop does when files change or time is due);
        False if the write failed (the checkpoint logs and counts it)."""
        if not self.restored:
            return True  # a start that failed before restoring has nothing of its own to save
        with self._lock:
            self.checkpoint.stage(self._cut())
        return self.checkpoint.flush()

    @contextlib.contextmanager
    def scrape(self) -> Iterator[None]:
        """Around a scrape's rendering: the cut is taken and the metrics rendered under one lock
        hold, so the response shows exactly what is saved; the write runs after the lock is
        released (the follow loop goes on) and before the response is sent."""
        with self._lock:
            self.checkpoint.stage(self._cut())
            yield
        self.checkpoint.flush()

    def _cut(self) -> Snapshot:
        complete = self.checkpoint.wants_complete_cut()
        positions = [
            # A partial last line is not counted yet: resume at its start after a restart.
            dataclasses.replace(p, offset=max(p.offset - self._pipeline.held_bytes(serial), 0))
            for serial, p in self._follower.positions()
        ]
        counters = {"metrics": self._metrics.counter_rows(), "follow": self._follower.counter_rows()}
        if self._pipeline.book is not None:
            counters["audit"] = self._pipeline.book.rows()
        pending = {}
        if self._reconciler is not None:
            counters["reconcile"], pending = self._reconciler.checkpoint_share(complete)
        # The known files only when they changed (or all of them for a new file): a save costs what changed.
        self._known_version, known = self._follower.known_files(None if complete else self._known_version)
        return Snapshot(positions, counters, pending, complete, known)

    def restore(self, start_at: str, max_pending: int) -> None:
        """Give every owner its saved rows back; with none saved, say where reading starts.
        StateDirectoryError (from the checkpoint) if the state directory cannot be used."""
        restored = self.checkpoint.load()
        if restored is None:
            log.info(
                "no checkpoint in %s: first start, reading from the %s of existing files",
                self.checkpoint.directory,
                start_at,
            )
            self.restored = True
            return
        self._metrics.restore_counters(restored.counters.get("metrics", {}))
        self._follower.restore_counters(restored.counters.get("follow", {}))
        if self._pipeline.book is not None:
            self._pipeline.book.restore(restored.counters.get("audit", {}))
        self._follower.restore(restored.positions, restored.saved_at, restored.known)
        waiting = ""
        if self._reconciler is not None:
            self._reconciler.restore_counters(restored.counters.get("reconcile", {}))
            taken = self._reconciler.restore_pending(self.checkpoint.pending())
            waiting = f", {taken} pending MongoDB check(s)"
            if taken < restored.pending_count:
                log.warning(
                    "checkpoint holds %d pending claims, reconcile.max_pending is %d: the other %d stay saved "
                    "and are checked after a restart with a higher limit",
                    restored.pending_count,
                    max_pending,
                    restored.pending_count - taken,
                )
        elif restored.pending_count:
            log.info("%d pending MongoDB check(s) stay saved until a MongoDB URL is given", restored.pending_count)
        log.info("resumed from checkpoint: %d file position(s)%s", len(restored.positions), waiting)
        self.restored = True
