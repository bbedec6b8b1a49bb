"""The follow loop: when to look at the files, when to list them again, when to checkpoint.

One thread (the caller's) runs the passes and does all the work on the log's
bytes; watchdog's threads only wake it (`Waker`). While lines keep coming it
polls on a short timer, which batches many writes into one read; when the
files are quiet it waits for a wake-up, with the poll interval as a safety net.

`lock` is held while a pass changes the follower and the pipeline, so whoever
takes a checkpoint under it gets a consistent cut: read positions and the
counters they produced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from monitor.config import FollowConfig
from monitor.follow import Follower
from monitor.follow.watch import Waker
from monitor.run.pipeline import Pipeline

BUSY_LINGER_SECONDS = 0.5  # keep polling fast this long after the last data, so bursts do not flap
CATCH_UP_SECONDS = 1.0  # a scrape reads what was appended for at most this long; the loop reads the rest
CHEAP_RESOLVE_SECONDS = 0.005  # a scrape lists the files again when listing costs no more than this
STALL_FACTOR = 10  # /healthz fails when a pass has not ended for this many poll intervals (30 s at least)


@dataclass
class Timers:
    next_resolve: float = 0.0
    next_checkpoint: float = 0.0
    last_data: float = -1e9
    last_checkpoint: float = -2e9
    last_resolve: float = -1e9
    checkpointed_generation: int = -1
    last_loop: float = field(default_factory=time.monotonic)


class FollowLoop:
    """Passes over the followed files until `stop()`; checkpoints when files change or time is due."""

    def __init__(
        self,
        follower: Follower,
        pipeline: Pipeline,
        settings: FollowConfig,
        checkpoint_interval_seconds: float,
        checkpoint: Callable[[], object],
        waker: Waker | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.follower = follower
        self.pipeline = pipeline
        self.settings = settings
        self.checkpoint_interval_seconds = checkpoint_interval_seconds
        self.lock = threading.RLock()
        self.waker = waker if waker is not None else Waker()
        self._checkpoint = checkpoint
        self._clock = clock
        self._stopping = threading.Event()
        self.timers = Timers(last_loop=clock())

    def run(self, before_pass: Callable[[], None] = lambda: None) -> None:
        while not self._stopping.is_set():
            before_pass()
            self.run_pass()

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler or another thread)."""
        self._stopping.set()
        self.waker.event.set()

    def catch_up(self) -> None:
        """Read what was appended since the last pass, before a scrape is rendered: a line written
        and flushed before the scrape was sent is in its answer, however lazy the loop is (it reads
        every `busy_poll_seconds` while lines keep coming). Files are listed again too (a line in the
        file a rotation just created) when that is cheap or a directory changed; at most
        `CATCH_UP_SECONDS` of reading, so a backlog cannot hold a scrape up (the loop reads on)."""
        resolve = self.waker.structure_changed or self.follower.last_resolve_seconds <= CHEAP_RESOLVE_SECONDS
        deadline = self._clock() + CATCH_UP_SECONDS
        with self.lock:
            for item in self.follower.poll(resolve=resolve):
                self.pipeline.apply(item)
                if self._clock() > deadline or self._stopping.is_set():
                    break

    def stalled_for(self) -> tuple[float, float]:
        """Seconds since the last pass ended, and the limit past which the loop counts as stalled."""
        return self._clock() - self.timers.last_loop, max(30.0, STALL_FACTOR * self.settings.poll_interval_seconds)

    def run_pass(self) -> None:
        timers = self.timers
        self.waker.event.clear()
        now = self._clock()
        resolve = self._resolve_due(now)
        with self.lock:
            for item in self.follower.poll(resolve=resolve):
                self.pipeline.apply(item)
                if self._stopping.is_set():
                    break  # a long pass (a big backlog) must not hold up a shutdown: the rest waits
        if resolve:
            gap = 10 * self.follower.last_resolve_seconds
            timers.next_resolve = now + max(self.settings.poll_interval_seconds, gap)
            self.waker.watch_directories(self.follower.watch_directories())
        if self.follower.busy:
            timers.last_data = now
        timers.last_loop = self._clock()
        self._checkpoint_if_due(now)
        self._wait(now)

    def _resolve_due(self, now: float) -> bool:
        # Re-listing costs what the globs match: with 100k files, listing at most a tenth of the time.
        timers = self.timers
        gap = 10 * self.follower.last_resolve_seconds
        due = now >= timers.next_resolve or (self.waker.structure_changed and now >= timers.last_resolve + gap)
        if due:
            self.waker.structure_changed = False
            timers.last_resolve = now
        return due

    def _checkpoint_if_due(self, now: float) -> None:
        # Positions in files that rotation is about to move or delete are the ones worth saving: at once.
        timers = self.timers
        files_changed = self.follower.generation != timers.checkpointed_generation
        if files_changed or (now >= timers.next_checkpoint and timers.last_data > timers.last_checkpoint):
            timers.checkpointed_generation = self.follower.generation
            self._checkpoint()
            timers.last_checkpoint = now
            timers.next_checkpoint = now + self.checkpoint_interval_seconds

    def _wait(self, now: float) -> None:
        busy = now - self.timers.last_data < BUSY_LINGER_SECONDS
        if self.waker.wake_on_writes(not busy) or self._stopping.is_set():
            return  # a write may have come while wake-ups on writes were off: look once more first
        if busy:
            # Writes do not wake us now, but a file created or renamed does: at 0.5 s a file that
            # logrotate creates and renames away in between would otherwise be found by no pass.
            self.waker.wait(self.settings.busy_poll_seconds)
        else:
            self.waker.wait(self.settings.poll_interval_seconds)
