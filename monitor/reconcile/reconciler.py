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

The stuck sweep (and the counts by status, `monitor.reconcile.sweep`) runs on this
stage's thread too, on one sidecar of all those sharing a database: the lease's holder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from monitor.config import ReconcileSettings
from monitor.export.histogram import DELAY_BUCKETS, Histogram
from monitor.reconcile.claims import Claim, is_object_id
from monitor.reconcile.collectors import ReconcileCollector, SweepLeaderCollector
from monitor.reconcile.findings import ClaimCheck, Finding, FindingBook
from monitor.reconcile.lease import SweepLease
from monitor.reconcile.mongo import MongoGateway, MongoQueryError, MongoUnavailableError
from monitor.reconcile.pending import PendingClaims, Waiting
from monitor.reconcile.sweep import StuckSweep

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("monitor.reconcile")  # the name operators filter on: see monitor.logs

STOP_WAIT_SECONDS = 0.5
OUTCOMES = ("confirmed", "status_mismatch", "not_found", "invalid_id", "error")


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
        checkpointed: bool = True,
    ) -> None:
        """`checkpointed` False: a one-shot check (`verify`), no change log kept for a checkpoint."""
        self.settings = settings
        self.mongo = mongo
        self.sweep = StuckSweep(settings.stuck, mongo, lease, clock)
        self.stats = ReconcileStats()
        for name in claim_names:
            for outcome in OUTCOMES:
                self.stats.checks[(name, outcome)] = 0
        self.book = FindingBook(settings.findings_kept)
        self._clock = clock
        self._lock = threading.Lock()
        self._pending = PendingClaims(settings.max_pending, track_changes=checkpointed)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        if registry is not None:
            registry.register(ReconcileCollector(metric_prefix, self.stats_snapshot, lambda: mongo.stats, self_prefix))
            registry.register(SweepLeaderCollector(self_prefix, self.sweep_leader, self._lease_mismatch))

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
                if self._pending.full:
                    self.stats.dropped += 1
                    continue
                self._pending.add(claim, now, now + self.settings.grace_seconds)
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
            self.sweep.release()  # never started: the caller is the client's owner
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
        self.sweep.release()

    def run_once(self) -> None:
        """One round: every due claim checked (in batches), then the stuck sweep if due."""
        while not self._stop.is_set():
            due = self._due(self._clock())
            if not due:
                break
            if not self._check(due):
                break  # MongoDB unreachable: try again next round
        self._report_stuck(self.sweep.run_if_due())

    def _due(self, now: float) -> list[Waiting]:
        with self._lock:
            return self._pending.due(now, self.settings.batch_size)

    def _check(self, batch: list[Waiting]) -> bool:
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

    def _judge(self, pending: Waiting, documents: dict[str, dict] | None, error: str, now: float) -> None:
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
        self._pending.settle(claim)

    def _postpone(self, batch: list[Waiting]) -> None:
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
        return self.sweep.leader

    @property
    def lease(self) -> SweepLease | None:
        return self.sweep.lease

    def _lease_mismatch(self) -> bool:
        return self.sweep.lease is not None and self.sweep.lease.mismatch

    def _report_stuck(self, documents: list[dict]) -> None:
        if not documents:
            return
        now = self._clock()
        detail = f"still pending more than {self.settings.stuck.max_analysis_seconds:.0f} s after created_at"
        check = ClaimCheck("stuck_pending", "stuck", ["completed", "failed", "cancelled"], "")
        with self._lock:
            for document in documents:
                self.book.add(str(document.get("_id")), check, document, now, detail)
            self.book.publish()

    # -- state -------------------------------------------------------------------------

    def checkpoint_share(
        self, complete: bool = False
    ) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, str], tuple[Claim, float] | None]]:
        """The counters, and the pending claims added (claim, seen_at) or settled (None) since the last
        call (`complete`: every claim waiting, for a checkpoint made anew), taken together: a claim
        settled is never saved as both counted and still pending."""
        with self._lock:
            pending = self._pending.take_all() if complete else self._pending.take_changes()
            return self._counter_rows(), pending

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
                if self._pending.full:
                    break
                if is_object_id(claim.analysis_id):
                    self._pending.restore(claim, seen, max(now, seen + self.settings.grace_seconds))
            self.stats.pending = len(self._pending)
            return len(self._pending)

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def stats_snapshot(self) -> ReconcileStats:
        """A copy for a scrape on another thread (the sweep's results only while this sidecar runs it)."""
        swept = self.sweep.result()
        with self._lock:
            return ReconcileStats(
                dict(self.stats.checks),
                len(self._pending),
                self.stats.dropped,
                swept.stuck,
                dict(swept.by_status),
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
