"""Reconcile against a real MongoDB wire-protocol server, stepped with a controlled clock."""

from __future__ import annotations

import json
import logging
import socket
import threading
import uuid
from datetime import datetime, timedelta

import pytest
from bson import ObjectId

from demo.mongo_server import MongoServer
from monitor.config import MongoSettings, ReconcileSettings, StuckSweep
from monitor.reconcile.claims import Claim
from monitor.reconcile.mongo import MongoGateway
from monitor.reconcile.reconciler import Reconciler
from monitor.run.checkpoint import Checkpoint
from monitor.run.snapshot import Snapshot

CLAIMS = ["completed_status_written", "failed_status_written"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def released_lease(db) -> None:
    """The stuck-sweep lease document as a holder that stopped leaves it: expired, so the next try
    takes it at once (whoever creates the document waits one lease period: test_lease.py)."""
    past = datetime(2020, 1, 1)
    db.logmonitor_leases.insert_one({"_id": "stuck_sweep", "holder": "pod-old-1-00", "expires_at": past, "since": past})


def make(url: str, database: str, clock: Clock, **settings) -> Reconciler:
    stuck = settings.pop("stuck", StuckSweep(enabled=False))
    reconcile = ReconcileSettings(
        grace_seconds=5, deadline_seconds=60, recheck_interval_seconds=10, stuck=stuck, **settings
    )
    mongo = MongoGateway(
        MongoSettings(
            database=database, server_selection_timeout_ms=500, socket_timeout_ms=1000, connect_timeout_ms=500
        ),
        url,
    )
    return Reconciler(reconcile, mongo, CLAIMS, clock=clock)


def completed(analysis_id: str) -> Claim:
    return Claim(analysis_id, "completed_status_written", ("completed",), 0.0, "app")


def failed(analysis_id: str) -> Claim:
    return Claim(analysis_id, "failed_status_written", ("failed",), 0.0, "app")


def insert(db, status: str = "pending", created_ago: float = 0.0) -> str:
    created = datetime.utcnow() - timedelta(seconds=created_ago)  # naive UTC, as the server writes
    return str(
        db.analyses.insert_one(
            {"status": status, "progress": 0.0, "created_at": created, "completed_at": None, "stock_code": "AAPL"}
        ).inserted_id
    )


def checks(reconciler: Reconciler) -> dict:
    return {k: v for k, v in reconciler.stats_snapshot().checks.items() if v}


def test_each_outcome(mongo):
    url, name, db = mongo
    clock = Clock()
    reconciler = make(url, name, clock)
    ok, stuck, wrong = insert(db, "completed"), insert(db, "pending"), insert(db, "completed")
    missing = str(ObjectId())
    reconciler.submit(
        [completed(ok), completed(stuck), failed(wrong), completed(missing), completed(str(uuid.uuid4()))]
    )
    assert checks(reconciler) == {("completed_status_written", "invalid_id"): 1}  # decided without a query
    reconciler.run_once()
    assert reconciler.pending_count() == 4  # grace period: nothing checked yet
    clock.now += 5
    reconciler.run_once()
    assert checks(reconciler)[("completed_status_written", "confirmed")] == 1
    assert reconciler.pending_count() == 3  # the others are re-checked until their deadline
    clock.now += 60
    reconciler.run_once()
    assert checks(reconciler) == {
        ("completed_status_written", "confirmed"): 1,
        ("completed_status_written", "invalid_id"): 1,
        ("completed_status_written", "status_mismatch"): 1,
        ("completed_status_written", "not_found"): 1,
        ("failed_status_written", "status_mismatch"): 1,
    }
    by_id = {f.analysis_id: f for f in reconciler.findings}
    assert by_id[stuck].mongo["status"] == "pending"
    assert by_id[wrong].mongo["status"] == "completed" and by_id[wrong].claims[0].expected == ["failed"]
    assert by_id[missing].mongo is None
    assert reconciler.mongo.stats.up is True
    reconciler.stop()


def test_a_late_write_inside_the_deadline_is_confirmed(mongo):
    url, name, db = mongo
    clock = Clock()
    reconciler = make(url, name, clock)
    analysis = insert(db, "pending")
    reconciler.submit([completed(analysis)])
    clock.now += 5
    reconciler.run_once()
    assert reconciler.pending_count() == 1
    db.analyses.update_one({"_id": ObjectId(analysis)}, {"$set": {"status": "completed"}})
    clock.now += 10
    reconciler.run_once()
    assert checks(reconciler) == {("completed_status_written", "confirmed"): 1}
    assert reconciler.stats_snapshot().delay.count == 1
    assert reconciler.stats_snapshot().delay.total == 15.0
    assert list(reconciler.findings) == []
    reconciler.stop()


def test_hundreds_of_concurrent_analyses_in_batches(mongo):
    url, name, db = mongo
    clock = Clock()
    reconciler = make(url, name, clock, batch_size=100)
    done = [insert(db, "completed") for _ in range(300)]
    lost = [insert(db, "pending") for _ in range(50)]
    reconciler.submit([completed(i) for i in done + lost])
    reconciler.submit([completed(i) for i in done[:10]])  # the same claims read twice: checked once
    clock.now += 60
    reconciler.run_once()
    assert checks(reconciler) == {
        ("completed_status_written", "confirmed"): 300,
        ("completed_status_written", "status_mismatch"): 50,
    }
    assert reconciler.mongo.stats.durations["find_statuses"].count == 4
    reconciler.stop()


def test_bounded_queue_counts_what_it_drops(mongo):
    url, name, _ = mongo
    reconciler = make(url, name, Clock(), max_pending=3)
    reconciler.submit([completed(str(ObjectId())) for _ in range(5)])
    snapshot = reconciler.stats_snapshot()
    assert (snapshot.pending, snapshot.dropped) == (3, 2)
    reconciler.stop()


def finished(analysis_id: str) -> Claim:
    return Claim(analysis_id, "finished_success", ("completed", "cancelled"), 0.0, "app")


def test_one_analysis_is_one_finding_logged_once_with_every_failed_claim(mongo, caplog):
    """A lost status makes two claims (the ✅ line and the 完成，成功: True line): one problem."""
    url, name, db = mongo
    clock = Clock()
    reconciler = make(url, name, clock)
    lost, ok = insert(db, "pending"), insert(db, "completed")
    with caplog.at_level(logging.WARNING, logger="monitor.findings"):
        reconciler.submit([completed(lost), finished(lost), completed(ok), finished(ok)])
        clock.now += 100
        reconciler.run_once()
        reconciler.run_once()
        reconciler.submit([Claim(lost, "worker_raised", ("failed",), 1.0, "app")])  # a later claim joins
        clock.now += 100
        reconciler.run_once()
    lines = [r.getMessage() for r in caplog.records if r.name == "monitor.findings"]
    assert len(lines) == 1
    finding = json.loads(lines[0].removeprefix("finding "))
    assert (finding["analysis_id"], finding["outcome"], finding["mongo"]["status"]) == (
        lost,
        "status_mismatch",
        "pending",
    )
    assert [(c["claim"], c["outcome"]) for c in finding["claims"]] == [
        ("completed_status_written", "status_mismatch"),
        ("finished_success", "status_mismatch"),
    ]
    # Times in UTC whatever the host's zone (the README's example says so): the claims' Clock is 0.
    assert finding["claims"][0]["logged_at"] == "1970-01-01T00:00:00.000+00:00"
    assert finding["checked_at"].endswith("+00:00") and set(finding) == {
        "analysis_id", "outcome", "claims", "mongo", "checked_at", "detail",
    }  # fmt: skip
    served = reconciler.recent_findings()
    assert [f["analysis_id"] for f in served] == [lost]
    assert [c["claim"] for c in served[0]["claims"]] == [
        "completed_status_written",
        "finished_success",
        "worker_raised",
    ]
    stats = reconciler.stats_snapshot()
    assert stats.not_persisted == {"status_mismatch": 1, "not_found": 0, "invalid_id": 0}  # analyses, not claims
    assert stats.checks[("finished_success", "status_mismatch")] == 1  # per-claim counts stay for diagnosis
    reconciler.stop()


def test_checkpoint_round_trip_keeps_pending_claims_and_counts(mongo, tmp_path):
    url, name, db = mongo
    clock = Clock()
    first = make(url, name, clock)
    confirmed = insert(db, "completed")
    waiting = insert(db, "pending")
    first.submit([completed(confirmed), completed(waiting)])
    clock.now += 5
    first.run_once()
    checkpoint = Checkpoint(tmp_path)  # through the real store
    for _ in range(2):  # the second share holds no pending change: the claim stays saved
        rows, changes = first.checkpoint_share()
        checkpoint.stage(Snapshot(counters={"reconcile": rows}, pending=changes))
        assert checkpoint.flush()
    first.stop()
    second = make(url, name, clock)
    restored = checkpoint.load()
    assert restored.pending_count == 1
    second.restore_counters(restored.counters["reconcile"])
    assert second.restore_pending(checkpoint.pending()) == 1
    checkpoint.close()
    second.submit([completed(waiting)])  # re-read after the restart: still one claim
    assert second.pending_count() == 1
    db.analyses.update_one({"_id": ObjectId(waiting)}, {"$set": {"status": "completed"}})
    clock.now += 10
    second.run_once()
    assert checks(second) == {("completed_status_written", "confirmed"): 2}
    second.stop()


def test_a_complete_share_holds_every_waiting_claim_for_a_checkpoint_made_anew():
    """The checkpoint's file was lost with the claims saved in it: its next cut takes all that wait,
    and what changed meanwhile is in that cut, so the share after it holds nothing."""
    clock = Clock()
    reconciler = make("mongodb://127.0.0.1:9", "tradingagents", clock)  # never queried here
    ids = [str(ObjectId()) for _ in range(3)]
    reconciler.submit([completed(ids[0]), completed(ids[1])])
    assert len(reconciler.checkpoint_share()[1]) == 2  # saved into the file that is then lost
    reconciler.submit([completed(ids[2])])
    _, everything = reconciler.checkpoint_share(complete=True)
    assert everything == {completed(i).key: (completed(i), clock.now) for i in ids}
    assert reconciler.checkpoint_share()[1] == {}
    reconciler.stop()


def test_stuck_sweep_counts_old_pending_documents(mongo):
    url, name, db = mongo
    released_lease(db)  # a fleet after its first start (whoever creates the lease waits: test_lease.py)
    clock = Clock()
    reconciler = make(
        url, name, clock, stuck=StuckSweep(interval_seconds=60, max_analysis_seconds=1800, window_seconds=86400)
    )
    old = [insert(db, "pending", created_ago=3600) for _ in range(3)]
    insert(db, "pending", created_ago=60)  # still running
    insert(db, "completed", created_ago=3600)
    insert(db, "failed", created_ago=200_000)  # outside the window
    reconciler.run_once()
    snapshot = reconciler.stats_snapshot()
    assert snapshot.stuck == 3
    assert snapshot.by_status == {"pending": 4, "completed": 1}
    assert sorted(f.analysis_id for f in reconciler.findings if f.outcome == "stuck") == sorted(old)
    reconciler.run_once()  # not due again yet, and each stuck id is reported once
    assert len([f for f in reconciler.findings if f.outcome == "stuck"]) == 3
    reconciler.stop()


def test_query_errors_become_error_outcomes_at_the_deadline(mongo):
    url, name, db = mongo
    clock = Clock()
    reconciler = make(url, name, clock)
    # The server answers every query with an error: `analyses` is a view that divides by zero.
    source = db.source.insert_one({"status": "completed"}).inserted_id
    db.command("create", "analyses", viewOn="source", pipeline=[{"$project": {"status": {"$divide": [1, 0]}}}])
    reconciler.submit([completed(str(source))])
    clock.now += 5
    reconciler.run_once()
    assert reconciler.pending_count() == 1
    clock.now += 60
    reconciler.run_once()
    assert checks(reconciler) == {("completed_status_written", "error"): 1}
    assert reconciler.mongo.stats.errors == {"find_statuses": 2}
    assert "divide by zero" in reconciler.findings[0].detail
    assert reconciler.mongo.stats.up is True  # it answered: reachable, but failing
    reconciler.stop()


def test_server_killed_and_restarted_mid_run(tmp_path):
    server = MongoServer(storage=str(tmp_path / "data")).start()
    clock = Clock()
    reconciler = make(server.url, "tradingagents", clock)
    import pymongo

    client = pymongo.MongoClient(server.url)
    analysis = insert(client.tradingagents, "completed")
    client.close()
    server.stop()
    reconciler.submit([completed(analysis)])
    clock.now += 100  # past the deadline while the server is down: nothing may be decided
    reconciler.run_once()
    assert reconciler.pending_count() == 1
    assert reconciler.mongo.stats.up is False
    assert checks(reconciler) == {}
    server = MongoServer(storage=str(tmp_path / "data"), port=server.port).start()
    clock.now += 10
    reconciler.run_once()
    assert checks(reconciler) == {("completed_status_written", "confirmed"): 1}
    assert reconciler.mongo.stats.up is True
    reconciler.stop()
    server.stop()


class StallingProxy:
    """Accepts connections and never answers: a hung server (cannot be had for real on demand)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"mongodb://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                self.held.append(self.sock.accept()[0])
            except TimeoutError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture
def stalling_proxy():
    proxy = StallingProxy()
    yield proxy
    proxy.close()


def test_a_hung_server_costs_a_bounded_wait_and_keeps_the_claims(stalling_proxy):
    clock = Clock()
    reconciler = make(stalling_proxy.url, "tradingagents", clock)
    reconciler.submit([completed(str(ObjectId()))])
    clock.now += 100
    reconciler.run_once()  # returns: server selection gives up after 500 ms
    assert reconciler.pending_count() == 1
    assert reconciler.mongo.stats.up is False
    assert reconciler.mongo.stats.errors == {"find_statuses": 1}
    reconciler.stop()


def test_hostile_ids_cost_a_bounded_amount_in_findings_and_the_log(mongo, caplog):
    """A claim line followed by a megabyte of non-space text: 200 of them stay small everywhere."""
    from monitor.config import ClaimRule
    from monitor.reconcile.claims import ClaimExtractor
    from monitor.scan.matcher import Event

    url, name, _ = mongo
    reconciler = make(url, name, Clock())
    extractor = ClaimExtractor([ClaimRule(name="completed_status_written", rule="persisted", accept=["completed"])])
    hostile = [
        Event("persisted", "success", "", {"analysis_id": f"{n:03d}" + "A" * 1_048_576}, (), 0.0) for n in range(200)
    ]
    with caplog.at_level(logging.WARNING, logger="monitor.findings"):
        reconciler.submit(extractor.claims(hostile, "app"))
    served = json.dumps(reconciler.recent_findings())
    assert len(reconciler.recent_findings()) == 200
    assert len(served) < 200 * 1024
    assert max(len(r.getMessage()) for r in caplog.records) < 1024
    assert reconciler.stats_snapshot().not_persisted["invalid_id"] == 200
    reconciler.stop()


# --- the stuck sweep runs on the lease holder only (tests/reconcile/test_lease.py: three sidecars) ----------


def test_the_reconcile_thread_takes_the_lease_and_releases_it_when_stopped(mongo):
    from tests.sidecar_process import wait_for

    url, name, db = mongo
    released_lease(db)
    reconciler = make(url, name, Clock(), stuck=StuckSweep())
    reconciler.start()
    try:
        holder = reconciler.lease.holder
        wait_for(lambda: db.logmonitor_leases.find_one({"holder": holder}), what="the lease taken by the thread")
        wait_for(reconciler.sweep_leader, what="the thread's sweep")
    finally:
        reconciler.stop()
    released = db.logmonitor_leases.find_one()
    assert (released["holder"], released["expires_at"] <= datetime.utcnow()) == (holder, True)  # released: expired
    assert reconciler.sweep_leader() is False


def test_a_holder_that_lost_its_lease_stops_sweeping_and_exporting_the_sweep(mongo, caplog):
    from prometheus_client import CollectorRegistry

    url, name, db = mongo
    for _ in range(2):
        insert(db, "pending", created_ago=3600)
    released_lease(db)
    clock = Clock()
    registry = CollectorRegistry()
    gateway = MongoGateway(MongoSettings(database=name, server_selection_timeout_ms=500), url)
    settings = ReconcileSettings(stuck=StuckSweep(interval_seconds=60))
    reconciler = Reconciler(settings, gateway, CLAIMS, clock=clock, registry=registry)
    reconciler.run_once()
    assert registry.get_sample_value("logmonitor_sweep_leader") == 1
    assert registry.get_sample_value("tradingagents_analyses_stuck") == 2
    assert registry.get_sample_value("tradingagents_analyses_by_status", {"status": "pending"}) == 2
    # Its renewal did not get through in time (a long pause): another sidecar holds the lease now.
    later = datetime.utcnow() + timedelta(hours=1)
    db.logmonitor_leases.update_one({}, {"$set": {"holder": "pod-b-7-0a1b2c3d", "expires_at": later}})
    with caplog.at_level(logging.INFO, logger="monitor.lease"):
        clock.now += 60
        reconciler.run_once()
        clock.now += 60
        reconciler.run_once()
    assert registry.get_sample_value("logmonitor_sweep_leader") == 0
    assert registry.get_sample_value("tradingagents_analyses_stuck") is None
    assert registry.get_sample_value("tradingagents_analyses_by_status", {"status": "pending"}) is None
    assert reconciler.mongo.stats.durations["count_stuck"].count == 1  # the one sweep while it held the lease
    lost = [r for r in caplog.records if "runs on pod-b-7-0a1b2c3d" in r.getMessage()]
    assert [(r.levelname, "did not renew it in time" in r.getMessage()) for r in lost] == [("WARNING", True)]
    reconciler.stop()
    assert db.logmonitor_leases.find_one()["holder"] == "pod-b-7-0a1b2c3d"  # not its lease: left alone


def test_statuses_from_the_database_are_bounded_to_the_known_ones_and_other():
    from monitor.reconcile.collectors import bounded_statuses

    seen = {"completed": 5, "None": 2, "pending": 1, **{f"typo{n}": 1 for n in range(38)}}  # 41 distinct values
    assert bounded_statuses(seen) == {"pending": 1, "completed": 5, "failed": 0, "cancelled": 0, "other": 40}
    assert bounded_statuses({}) == {"pending": 0, "completed": 0, "failed": 0, "cancelled": 0, "other": 0}
