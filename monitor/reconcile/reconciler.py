"""Reconcile: check every claim the log makes against MongoDB, and find stuck analyses.

Claims arrive from the follow loop through `submit` (never blocks: a bounded
map, overflow counted) and are checked by this stage's own thread in batches
once their grace delay has passed. A claim not satisfied yet is re-checked
until its deadline, because the server's write may land late; only then is it
a mismatch. While MongoDB is unreachable nothing is decided: claims wait.

Outcomes: `confirmed`; `status_mismatch` (the document holds another status,
e.g. still `pending`, or `completed` where the log said failed); `not_found`;
`invalid_id` (not an ObjectId, e.g. the UUID of the in-memory fallback);
`error` (the server kept answering with an error until the deadline).

Each analysis with a claim not `confirmed` is one *finding* (`monitor.reconcile.findings`),
with every failed claim as its evidence, so an operator sees which analyses
to repair.

The stuck sweep (and the counts by status) runs on one sidecar of all those
sharing a database: the holder of the lease (`monitor.reconcile.lease`), renewed each
interval just before it sweeps. A sidecar that cannot renew it does not sweep.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from monitor.config import ReconcileSettings
from monitor.export.histogram import DELAY_BUCKETS, Histogram
from monitor.reconcile.claims import Claim, is_object_id
from monitor.reconcile.collectors import ReconcileCollector, SweepLeaderCollector
from monitor.reconcile.findings import ClaimCheck, Finding, FindingBook
from monitor.reconcile.lease import SweepLease
from monitor.reconcile.mongo import MongoGateway, MongoQueryError, MongoUnavailableError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("monitor.reconcile")  # the name operators filter on: see monitor.logs

STOP_WAIT_SECONDS = 0.5
PendingChange = tuple[Claim, float] | None  # (claim, seen_at) added, or None: settled
OUTCOMES = ("confirmed", "status_mismatch", "not_found", "invalid_id", "error")


@dataclass(slots=True)  # 100,000 of them wait through a MongoDB outage: kept small
class _Pending:
    claim: Claim
    seen_at: float  # wall time the claim was read: grace and deadline count from here
    next_check: float
    attempts: int = 0
    last_error: str = ""


@dataclass
class ReconcileStats:
    """Plain values for the metrics stage."""

    checks: dict[tuple[str, str], int] = field(default_factory=dict)
    pending: int = 0
    dropped: int = 0
    stuck: int | None = None
    by_status: dict[str, int] = field(default_factory=dict)
    delay: Histogram = field(default_factory=lambda: Histogram(DELAY_BUCKETS))
    not_persisted: dict[str, int] = field(default_factory=dict)  # analyses, by their finding's outcome


class Reconciler:
    """Holds pending claims, checks them in batches, sweeps for stuck analyses."""

    def __init__(
        self,
        settings: ReconcileSettings,
        mongo: MongoGateway,
        claim_names: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
        metric_prefix: str = "tradingagents",
        self_prefix: str = "logmonitor",
        lease: SweepLease | None = None,
    ) -> None:
        self.settings = settings
        self.mongo = mongo
        stuck = settings.stuck
        if lease is None and stuck.enabled and stuck.lease_collection:
            lease = SweepLease(mongo, stuck.lease_collection, stuck.lease_duration)
        # None: no lease (sweep disabled, or lease_collection ""): an enabled sidecar sweeps on its own.
        self.lease = lease if stuck.enabled else None
        self.stats = ReconcileStats()
        for name in claim_names:
            for outcome in OUTCOMES:
                self.stats.checks[(name, outcome)] = 0
        self.book = FindingBook(settings.findings_kept)
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], _Pending] = {}
        # What changed in `_pending` since the checkpoint last took it: (claim, seen_at), or None.
        self._changes: dict[tuple[str, str], PendingChange] = {}
        self._reported_stuck: dict[str, None] = {}
        self._next_sweep = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        if registry is not None:
            registry.register(ReconcileCollector(metric_prefix, self.stats_snapshot, lambda: mongo.stats, self_prefix))
            registry.register(SweepLeaderCollector(self_prefix, self.sweep_leader))

    # -- the follow loop's side -------------------------------------------------------

    def submit(self, claims: Iterable[Claim]) -> None:
        """Queue claims for checking; returns at once (called under the follow loop's lock)."""
        now = self._clock()
        with self._lock:
            for claim in claims:
                if claim.key in self._pending:
                    continue  # the same claim read twice (a re-read after restart): one check
                if not is_object_id(claim.analysis_id):
                    detail = "not a 24-hex-digit ObjectId: never queried"
                    self._decide(claim, "invalid_id", None, now, detail=detail)
                    continue
                if len(self._pending) >= self.settings.max_pending:
                    self.stats.dropped += 1
                    continue
                self._pending[claim.key] = _Pending(claim, now, now + self.settings.grace_seconds)
                self._changes[claim.key] = (claim, now)
            self.stats.pending = len(self._pending)
            self.book.publish()

    # -- the thread --------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="reconcile", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            # Not the socket timeout: a hung MongoDB must not hold up a shutdown. A query still
            # running is abandoned (its claims stay pending in the checkpoint) and the client closed.
            # The thread releases the lease on its way out (bounded by the same wait).
            self._thread.join(timeout=STOP_WAIT_SECONDS)
        else:
            self._release_lease()  # never started: the caller is the client's owner
        self.mongo.close()

    def _loop(self) -> None:
        self.mongo.ping()
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the checker must outlive any surprise in a database answer
                log.exception("reconcile round failed; retrying")
            self._wake.wait(1.0)
            self._wake.clear()
        self._release_lease()

    def run_once(self) -> None:
        """One round: every due claim checked (in batches), then the stuck sweep if due."""
        while not self._stop.is_set():
            due = self._due(self._clock())
            if not due:
                break
            if not self._check(due):
                break  # MongoDB unreachable: try again next round
        if self.settings.stuck.enabled and self._clock() >= self._next_sweep:
            self._next_sweep = self._clock() + self.settings.stuck.interval_seconds
            if self._lead():
                self._sweep()

    def _due(self, now: float) -> list[_Pending]:
        with self._lock:
            due = [p for p in self._pending.values() if p.next_check <= now]
        due.sort(key=lambda p: p.next_check)
        return due[: self.settings.batch_size]

    def _check(self, batch: list[_Pending]) -> bool:
        ids = sorted({p.claim.analysis_id for p in batch})
        error = ""
        try:
            documents = self.mongo.find_statuses(ids)
        except MongoUnavailableError as exc:
            self._postpone(batch)
            log.warning("MongoDB unreachable, %d claim(s) wait: %s", len(self._pending), exc)
            return False
        except MongoQueryError as exc:
            documents, error = None, str(exc)
        if self._stop.is_set():
            return False  # stopping: an answer cut short by the closing client decides nothing
        now = self._clock()
        with self._lock:
            for pending in batch:
                if pending.claim.key not in self._pending:
                    continue
                self._judge(pending, documents, error, now)
            self.stats.pending = len(self._pending)
            self.book.publish()  # one line per analysis, with every claim of it decided in this batch
        return True

    def _judge(self, pending: _Pending, documents: dict[str, dict] | None, error: str, now: float) -> None:
        claim = pending.claim
        pending.attempts += 1
        document = None if documents is None else documents.get(claim.analysis_id)
        status = document.get("status") if document else None
        if status in claim.accept:
            self._settle(claim)
            self.stats.delay.observe(max(now - pending.seen_at, 0.0))
            self._count(claim.claim, "confirmed")
            return
        if now < pending.seen_at + self.settings.deadline_seconds:
            pending.next_check = now + self.settings.recheck_interval_seconds
            pending.last_error = error
            return
        self._settle(claim)
        if documents is None:
            self._decide(claim, "error", None, now, detail=error)
        else:
            self._decide(claim, "status_mismatch" if document else "not_found", document, now)

    def _settle(self, claim: Claim) -> None:
        del self._pending[claim.key]
        self._changes[claim.key] = None

    def _postpone(self, batch: list[_Pending]) -> None:
        retry = self._clock() + self.settings.recheck_interval_seconds
        with self._lock:
            for pending in batch:
                pending.next_check = retry

    def _decide(self, claim: Claim, outcome: str, document: dict | None, now: float, detail: str = "") -> None:
        self._count(claim.claim, outcome)
        self.book.record(claim, outcome, document, now, detail)

    def _count(self, claim: str, outcome: str) -> None:
        key = (claim, outcome)
        self.stats.checks[key] = self.stats.checks.get(key, 0) + 1

    # -- the stuck sweep -----------------------------------------------------------------

    def sweep_leader(self) -> bool:
        """Whether this sidecar runs the stuck sweep: enabled, and holding the lease if there is one."""
        if not self.settings.stuck.enabled:
            return False
        return self.lease is None or self.lease.held

    def _lead(self) -> bool:
        """Take or renew the lease just before a sweep; a sidecar without it exports no sweep results,
        so that `max` or `sum` over the replicas counts the analyses once."""
        if self.lease is None or self.lease.hold():
            return True
        self._forget_sweep()
        return False

    def _forget_sweep(self) -> None:
        with self._lock:
            self.stats.stuck = None
            self.stats.by_status = {}

    def _release_lease(self) -> None:
        if self.lease is not None:
            self.lease.release()  # if held
            self._forget_sweep()

    def _sweep(self) -> None:
        stuck = self.settings.stuck
        try:
            count, oldest = self.mongo.count_stuck(timedelta(seconds=stuck.max_analysis_seconds))
            by_status = self.mongo.counts_by_status(timedelta(seconds=stuck.window_seconds))
        except (MongoUnavailableError, MongoQueryError) as exc:
            log.warning("stuck sweep skipped: %s", exc)
            return
        now = self._clock()
        with self._lock:
            self.stats.stuck = count
            self.stats.by_status = by_status
            for document in oldest:
                analysis_id = str(document.get("_id"))
                if analysis_id in self._reported_stuck:
                    continue
                self._reported_stuck[analysis_id] = None
                if len(self._reported_stuck) > 10_000:  # bounded memory of what was said
                    self._reported_stuck.pop(next(iter(self._reported_stuck)))
                check = ClaimCheck("stuck_pending", "stuck", ["completed", "failed", "cancelled"], "")
                detail = f"still pending more than {self.settings.stuck.max_analysis_seconds:.0f} s after created_at"
                self.book.add(analysis_id, check, document, now, detail)
            self.book.publish()

    # -- state -------------------------------------------------------------------------

    def checkpoint_share(
        self,
    ) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, str], tuple[Claim, float] | None]]:
        """The counters, and the pending claims added (claim, seen_at) or settled (None) since the last
        call, taken together: a claim settled is never saved as both counted and still pending."""
        with self._lock:
            changes, self._changes = self._changes, {}
            return self._counter_rows(), changes

    def _counter_rows(self) -> dict[tuple[str, ...], float]:
        rows: dict[tuple[str, ...], float] = {
            ("checks", claim, outcome): n for (claim, outcome), n in self.stats.checks.items()
        }
        rows[("dropped",)] = self.stats.dropped
        rows.update({("not_persisted", outcome): n for outcome, n in self.book.not_persisted.items()})
        rows.update({("delay", *key): value for key, value in self.stats.delay.rows().items()})
        return rows

    def restore_counters(self, rows: dict[tuple[str, ...], float]) -> None:
        with self._lock:
            for key, value in rows.items():
                if key[0] == "checks" and len(key) == 3:
                    self.stats.checks[(key[1], key[2])] = int(value)
            self.stats.dropped = int(rows.get(("dropped",), 0))
            for key, value in rows.items():
                if key[0] == "not_persisted" and len(key) == 2:
                    self.book.not_persisted[key[1]] = int(value)
            self.stats.delay.restore_rows({key[1:]: value for key, value in rows.items() if key[0] == "delay"})

    def restore_pending(self, pending: Iterable[tuple[Claim, float]]) -> int:
        """Claims that were pending at the last checkpoint (streamed); returns how many were taken."""
        now = self._clock()
        with self._lock:
            for claim, seen in pending:
                if len(self._pending) >= self.settings.max_pending:
                    break
                if is_object_id(claim.analysis_id):
                    self._pending[claim.key] = _Pending(claim, seen, max(now, seen + self.settings.grace_seconds))
            self.stats.pending = len(self._pending)
            return len(self._pending)

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def stats_snapshot(self) -> ReconcileStats:
        """A copy for a scrape on another thread (the sweep's results only while this sidecar runs it)."""
        leader = self.sweep_leader()
        with self._lock:
            return ReconcileStats(
                dict(self.stats.checks),
                len(self._pending),
                self.stats.dropped,
                self.stats.stuck if leader else None,
                dict(self.stats.by_status) if leader else {},
                self.stats.delay.copy(),
                dict(self.book.not_persisted),
            )

    @property
    def findings(self) -> list[Finding]:
        """Every finding kept, oldest first."""
        with self._lock:
            return self.book.in_order()

    def recent_findings(self) -> list[dict[str, Any]]:
        """The most recent findings, newest first (the /findings page)."""
        with self._lock:
            return [asdict(f) for f in self.book.recent()]
