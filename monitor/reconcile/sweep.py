"""The stuck sweep: analyses still `pending` long after they were created, and the counts by status.

It runs once per `reconcile.stuck.interval_seconds` on the reconcile thread, and
only on the sidecar holding the lease (`monitor.reconcile.lease`), renewed just
before each sweep; a sidecar that cannot renew it does not sweep and exports no
sweep results, so `max` or `sum` over the replicas counts each analysis once.
Each stuck analysis is reported once (the memory of what was said is bounded),
across the fleet too: the holder notes what it reported in the lease document,
and a new holder starts from that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from monitor.config import StuckSweep as SweepSettings
from monitor.reconcile.lease import ID_CHARS, SweepLease
from monitor.reconcile.mongo import MongoGateway, MongoQueryError, MongoUnavailableError

log = logging.getLogger("monitor.reconcile")  # the name operators filter on: see monitor.logs

MAX_REMEMBERED = 10_000  # stuck analyses already reported, oldest forgotten first


@dataclass(frozen=True)
class SweepResult:
    """What the holder's last sweep found; `stuck` is None when this sidecar does not sweep."""

    stuck: int | None = None
    by_status: dict[str, int] = field(default_factory=dict)


class StuckSweep:
    """Owns the lease, the last sweep's results and the memory of what was reported."""

    def __init__(
        self,
        settings: SweepSettings,
        mongo: MongoGateway,
        lease: SweepLease | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.mongo = mongo
        if lease is None and settings.enabled and settings.lease_collection:
            lease = SweepLease(mongo, settings.lease_collection, settings.lease_duration)
        # None: no lease (sweep disabled, or lease_collection ""): an enabled sidecar sweeps on its own.
        self.lease = lease if settings.enabled else None
        self._clock = clock
        self._lock = threading.Lock()
        self._result = SweepResult()
        self._next_sweep = 0.0
        self._reported: dict[str, None] = {}

    @property
    def leader(self) -> bool:
        """Whether this sidecar runs the sweep: enabled, and holding the lease if there is one."""
        if not self.settings.enabled:
            return False
        return self.lease is None or self.lease.held

    def result(self) -> SweepResult:
        """The last results, while this sidecar is the one sweeping; else none."""
        if not self.leader:
            return SweepResult()
        with self._lock:
            return self._result

    def run_if_due(self) -> list[dict]:
        """Sweep if enabled, due and holding the lease; the documents newly found stuck."""
        if not self.settings.enabled or self._clock() < self._next_sweep:
            return []
        self._next_sweep = self._clock() + self.settings.interval_seconds
        if not self._lead():
            return []
        return self._sweep()

    def release(self) -> None:
        """Give the lease back (if held), so another sidecar takes over at once."""
        if self.lease is not None:
            self.lease.release()
            self._forget()

    def _lead(self) -> bool:
        if self.lease is None or self.lease.hold():
            return True
        self._forget()
        return False

    def _forget(self) -> None:
        with self._lock:
            self._result = SweepResult()

    def _sweep(self) -> list[dict]:
        try:
            count, oldest = self.mongo.count_stuck(timedelta(seconds=self.settings.max_analysis_seconds))
            by_status = self.mongo.counts_by_status(timedelta(seconds=self.settings.window_seconds))
        except (MongoUnavailableError, MongoQueryError) as exc:
            log.warning("stuck sweep skipped: %s", exc)
            return []
        with self._lock:
            self._result = SweepResult(count, by_status)
        if self.lease is not None:  # what earlier holders reported
            for analysis_id in self.lease.reported:
                self._remember(analysis_id)
        fresh = []
        for document in oldest:
            analysis_id = str(document.get("_id"))[:ID_CHARS]
            if analysis_id in self._reported:
                continue
            self._remember(analysis_id)
            fresh.append(document)
        if self.lease is not None:
            self.lease.note_reported([str(document.get("_id")) for document in fresh])
        return fresh

    def _remember(self, analysis_id: str) -> None:
        self._reported[analysis_id] = None
        if len(self._reported) > MAX_REMEMBERED:
            self._reported.pop(next(iter(self._reported)))
