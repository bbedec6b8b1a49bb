"""The stuck-sweep lease: of many sidecars on one database, the one holding it sweeps.

With N server replicas sharing one MongoDB, the stuck sweep and the counts by
status would run N times (and be exported N times). Instead every sidecar
competes for one lease document in the database it already uses:

    <mongodb.database>.<reconcile.stuck.lease_collection>
    {_id: "stuck_sweep", holder: "<pod>-<pid>-<random>", expires_at: <date, server clock>,
     since: <date the holder may sweep from>, seconds: <the holder's lease length>,
     reported: [<ids of stuck analyses already reported, the last 200>]}

Each interval a sidecar takes or renews it with one atomic upsert of that
document (`MongoGateway.take_lease`): the update pipeline keeps the holder
unless the holder is this sidecar or `expires_at` has passed, and sets
`expires_at` to the database's own `$$NOW` plus the lease duration, so the
sidecars' clocks play no part. Only the holder sweeps; the others try again
each interval and take over once the lease has expired (a holder that died)
or was released (a holder that stopped: it expires the document at once).

A lost document is lost leadership. If MongoDB restarts empty, or is restored
without the lease collection, the sidecar that held the lease still counts on it
until its own timer runs out, while another one may create the document anew.
So whoever creates the document waits one lease period before it sweeps (its
`since` is one period ahead): by then every earlier holder's timer has run out.
This is why a fleet's very first sweep comes one lease period after start-up,
and why release expires the document instead of deleting it.

The document also says the holder's lease length, so a sidecar configured with
another one says so (a log line and `logmonitor_sweep_lease_mismatch`), and
which stuck analyses were reported, so that a new holder does not report them
again.

Whatever goes wrong with the lease (MongoDB down or hung, no permission to
write the collection, an answer that cannot be read) means "not the holder":
no sidecar ever sweeps without having just renewed the lease, so a failure
costs sweeps, never duplicates them. A holder whose renewal hangs counts
itself the holder only until the lease could have expired (its monotonic
clock from when it sent the last renewal that succeeded, plus the duration),
so two sidecars never both say they hold it. Each change of state is logged
once.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from monitor.reconcile.mongo import MongoGateway, MongoQueryError, MongoUnavailableError

log = logging.getLogger("monitor.lease")  # the name operators filter on: see monitor.logs

LEASE_NAME = "stuck_sweep"
_SHOWN = 120  # characters of a holder id shown in the log (it comes from the database)
REPORTED_KEPT = 200  # stuck analyses remembered in the document (a sweep reports at most 20)
ID_CHARS = 128  # of an analysis id kept there


def _wait_seconds(document: dict, seconds: float) -> float:
    """How long after this renewal its holder must still wait before sweeping: `since` less the
    renewal's instant on the database's clock (`expires_at` less the lease length just set)."""
    since, expires = document.get("since"), document.get("expires_at")
    if not isinstance(since, datetime) or not isinstance(expires, datetime):
        return 0.0
    return (since - (expires - timedelta(seconds=seconds))).total_seconds()


def _reported(document: dict) -> tuple[str, ...]:
    reported = document.get("reported")
    if not isinstance(reported, list):
        return ()
    return tuple(str(each)[:ID_CHARS] for each in reported[-REPORTED_KEPT:])


def sidecar_id() -> str:
    """This process's name as a lease holder: pod name (HOSTNAME), pid and a random suffix, so two
    processes never share one, not even a restarted container with the same pod name and pid."""
    host = os.environ.get("HOSTNAME") or socket.gethostname() or "sidecar"
    return f"{host[:63]}-{os.getpid()}-{secrets.token_hex(4)}"


class SweepLease:
    """Takes, renews and releases the lease for the reconcile thread (its only user)."""

    def __init__(
        self,
        mongo: MongoGateway,
        collection: str,
        seconds: float,
        holder: str | None = None,
        name: str = LEASE_NAME,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mongo = mongo
        self.collection = collection
        self.seconds = seconds
        self.name = name
        self.holder = holder or sidecar_id()
        self._clock = clock
        self._holding = False  # the last try took or renewed it (read by the scrape thread)
        self._until = 0.0  # on `clock`: the lease cannot have expired before this
        self._state: tuple[str, ...] | None = None
        self._mismatch_state: tuple[str, ...] | None = None
        self.mismatch = False  # the holder stated another lease length than this sidecar's
        self.reported: tuple[str, ...] = ()  # as the last reply said, while this sidecar holds it

    @property
    def held(self) -> bool:
        """Whether this sidecar holds the lease: its last try got it, and it cannot have expired since."""
        return self._holding and self._clock() < self._until

    def hold(self) -> bool:
        """Take or renew the lease; True only if this sidecar holds it now (answered by the database)."""
        sent = self._clock()
        try:
            document = self.mongo.take_lease(self.collection, self.name, self.holder, self.seconds)
        except (MongoUnavailableError, MongoQueryError) as exc:
            self._holding = False
            self._note(
                ("unavailable",),
                logging.WARNING,
                "stuck-sweep lease %s.%s cannot be taken or renewed, so this sidecar does not sweep; it "
                "tries again every sweep interval: %s. If MongoDB answers with an error, grant the sidecar's "
                "user find, insert, update and remove on that collection (MongoDB 4.2 or later is needed), "
                'or on a single replica set reconcile.stuck.lease_collection: ""',
                self.mongo.settings.database,
                self.collection,
                exc,
            )
            return False
        if document is None:  # another sidecar created the document at the same instant: it holds it
            self._holding = False
            return False
        holder = str(document.get("holder"))
        self._check_length(holder, document.get("seconds"))
        was_holding = self._holding
        wait = _wait_seconds(document, self.seconds) if holder == self.holder else 0.0
        self._holding = holder == self.holder and wait <= 0
        if self._holding:
            self._until = sent + self.seconds  # the database counted from later than `sent`
            self.reported = _reported(document)
            self._note(
                ("holder",),
                logging.INFO,
                "this sidecar (%s) holds the stuck-sweep lease: it runs the sweep and exports the counts by status",
                self.holder,
            )
        elif holder == self.holder:
            self._note(
                ("created",),
                logging.WARNING if was_holding else logging.INFO,
                "this sidecar (%s) created the stuck-sweep lease document%s; it sweeps only %g s from now (one "
                "lease period), once no sidecar can still count on a lease whose document was lost",
                self.holder,
                " anew: it was gone while this sidecar held it (MongoDB restarted empty, or restored without it)"
                if was_holding
                else "",
                wait,
            )
        else:
            self._note(
                ("other", holder),
                logging.WARNING if was_holding else logging.INFO,
                "the stuck sweep runs on %s, which holds the lease%s; not here",
                holder[:_SHOWN],
                " (this sidecar did not renew it in time)" if was_holding else "",
            )
        # A reply that came later than the lease lasts proves nothing now: another sidecar may have
        # taken it over meanwhile. Only a renewal still within its term leads to a sweep.
        return self.held

    def note_reported(self, ids: list[str]) -> None:
        """Remember in the document that these stuck analyses were reported (best effort: if it
        fails, a later holder may report them once more)."""
        if not ids or not self._holding:
            return
        shown = [analysis_id[:ID_CHARS] for analysis_id in ids]
        try:
            self.mongo.note_reported(self.collection, self.name, self.holder, shown, REPORTED_KEPT)
        except (MongoUnavailableError, MongoQueryError) as exc:
            log.info("reported stuck analyses not noted in the lease (a later holder may report them again): %s", exc)
            return
        self.reported = (self.reported + tuple(shown))[-REPORTED_KEPT:]

    def _check_length(self, holder: str, theirs: object) -> None:
        """Say once per holder whose lease length differs from this sidecar's: if it dies, the
        fleet waits its length, not ours, for a new holder."""
        self.mismatch = (
            holder != self.holder
            and isinstance(theirs, int | float)
            and not isinstance(theirs, bool)
            and abs(theirs - self.seconds) > 1e-3
        )
        state = (holder, str(theirs)) if self.mismatch else None
        if state is not None and state != self._mismatch_state:
            log.warning(
                "the stuck-sweep lease holder %s uses lease_seconds %s, this sidecar %g: if it dies, no sidecar "
                "sweeps for up to its lease length; give every sidecar on one database the same "
                "reconcile.stuck settings",
                holder[:_SHOWN],
                theirs,
                self.seconds,
            )
        self._mismatch_state = state

    def release(self) -> None:
        """Give the lease up if held (at shutdown), so another sidecar takes over at its next try.
        Best effort: on failure the lease simply expires."""
        if not self._holding:  # even if expired by now: it may still name this sidecar
            return
        self._holding = False
        try:
            self.mongo.release_lease(self.collection, self.name, self.holder)
        except (MongoUnavailableError, MongoQueryError) as exc:
            log.info("stuck-sweep lease not released (it expires within %g s): %s", self.seconds, exc)
            return
        self._state = None
        log.info("stuck-sweep lease released")

    def _note(self, state: tuple[str, ...], level: int, message: str, *args: object) -> None:
        """Log `message` only when the state differs from the last one logged."""
        if state != self._state:
            self._state = state
            log.log(level, message, *args)
