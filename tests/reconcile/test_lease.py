"""The stuck-sweep lease: of three sidecars on one database exactly one sweeps, and hands over.

Against the real MongoDB wire-protocol server of the suite (SecantusDB): the
lease is timed by that server's clock, so lease expiry here is real time; the
reconcilers' own schedules run on a controlled clock. Waiting is by polling
with a deadline, never by a fixed sleep.

Most tests start from a lease document that exists already (released by an
earlier holder), as in any fleet after its first start: whoever creates the
document waits one lease period before sweeping (tested on its own below).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from datetime import datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from demo.mongo_server import MongoServer
from monitor.config import ConfigError, MongoSettings, ReconcileSettings, StuckSweep, load_config
from monitor.reconcile.lease import LEASE_NAME, SweepLease, sidecar_id
from monitor.reconcile.mongo import MongoGateway
from monitor.reconcile.reconciler import Reconciler
from tests.conftest import MINIMAL_CONFIG, REPO
from tests.reconcile.test_reconciler import Clock, StallingProxy, insert, released_lease
from tests.sidecar_process import wait_for

INTERVAL = 10.0  # on the reconcilers' controlled clock
LEASES = "logmonitor_leases"
SWEEP_SERIES = ("tradingagents_analyses_stuck", "tradingagents_analyses_by_status")


class Fleet:
    """Reconcilers as the sidecars of three server pods would run them, sharing one clock."""

    def __init__(self, url: str, database: str, names: str = "abc", **stuck) -> None:
        self.clock = Clock()
        self.url = url
        self.database = database
        self.members: dict[str, tuple[Reconciler, CollectorRegistry]] = {}
        for name in names:
            self.add(name, **stuck)
        self.rounds = 0

    def add(self, name: str, **stuck) -> Reconciler:
        registry = CollectorRegistry()
        mongo = MongoGateway(
            MongoSettings(
                database=self.database, server_selection_timeout_ms=500, socket_timeout_ms=1000, connect_timeout_ms=500
            ),
            self.url,
        )
        settings = ReconcileSettings(stuck=StuckSweep(**{"interval_seconds": INTERVAL, **stuck}))
        self.members[name] = (Reconciler(settings, mongo, clock=self.clock, registry=registry), registry)
        return self.members[name][0]

    def __getitem__(self, name: str) -> Reconciler:
        return self.members[name][0]

    def round(self, concurrently: bool = False) -> None:
        """One sweep interval: each sidecar's round, in a rotating order (or all at the same instant)."""
        self.clock.now += INTERVAL
        names = list(self.members)
        names = names[self.rounds % len(names) :] + names[: self.rounds % len(names)]
        self.rounds += 1
        if not concurrently:
            for name in names:
                self[name].run_once()
            return
        barrier = threading.Barrier(len(names))

        def run(reconciler: Reconciler) -> None:
            barrier.wait()
            reconciler.run_once()

        threads = [threading.Thread(target=run, args=(self[name],)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def leaders(self) -> list[str]:
        return [name for name, (reconciler, _) in self.members.items() if reconciler.sweep_leader()]

    def sweeps(self) -> dict[str, int]:
        """Stuck sweeps each sidecar ran (its count_stuck queries)."""
        return {name: _queries(r, "count_stuck") for name, (r, _) in self.members.items()}

    def gauges(self) -> dict[str, float | None]:
        return {name: reg.get_sample_value("logmonitor_sweep_leader") for name, (_, reg) in self.members.items()}

    def sweep_samples(self, name: str) -> dict[tuple, float]:
        """The stuck and by-status series `name` exports."""
        registry = self.members[name][1]
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.name in SWEEP_SERIES
        }

    def drop(self, name: str) -> Reconciler:
        return self.members.pop(name)[0]

    def stop(self) -> None:
        for reconciler, _ in self.members.values():
            reconciler.stop()


def _queries(reconciler: Reconciler, operation: str) -> int:
    histogram = reconciler.mongo.stats.durations.get(operation)
    return 0 if histogram is None else histogram.count


def stuck_findings(reconciler: Reconciler) -> list[str]:
    return [f.analysis_id for f in reconciler.findings if f.outcome == "stuck"]


def stuck_documents(db) -> None:
    for _ in range(3):
        insert(db, "pending", created_ago=3600)
    insert(db, "pending", created_ago=60)  # still running
    insert(db, "completed", created_ago=3600)


LEADER_SERIES = {
    ("tradingagents_analyses_stuck", ()): 3.0,
    **{("tradingagents_analyses_by_status", (("status", s),)): 0.0 for s in ("cancelled", "failed", "other")},
    ("tradingagents_analyses_by_status", (("status", "completed"),)): 1.0,
    ("tradingagents_analyses_by_status", (("status", "pending"),)): 4.0,
}


@pytest.fixture
def fleet(mongo):
    url, name, db = mongo
    stuck_documents(db)
    made: list[Fleet] = []

    def make(lease_exists: bool = True, **stuck) -> Fleet:
        if lease_exists:
            released_lease(db)
        made.append(Fleet(url, name, **stuck))
        return made[-1]

    yield make
    for each in made:
        each.stop()


def test_three_sidecars_elect_one_holder_which_alone_sweeps_every_interval(fleet, mongo):
    _, _, db = mongo
    sidecars = fleet()
    assert sidecars.gauges() == {"a": 0.0, "b": 0.0, "c": 0.0}  # from start-up, before any round
    sidecars.round(concurrently=True)  # all three race for the lease at the same instant
    [leader] = sidecars.leaders()
    followers = sorted(set("abc") - {leader})
    document = db[LEASES].find_one()
    assert set(document) == {"_id", "holder", "expires_at", "since", "seconds", "reported"}
    assert document["seconds"] == 30.0
    assert (document["_id"], document["holder"]) == (LEASE_NAME, sidecars[leader].lease.holder)
    assert sidecars.sweeps() == {leader: 1, **dict.fromkeys(followers, 0)}
    assert sidecars.gauges() == {leader: 1.0, **dict.fromkeys(followers, 0.0)}
    assert sidecars.sweep_samples(leader) == LEADER_SERIES
    for follower in followers:
        assert sidecars.sweep_samples(follower) == {}  # not at 0: not at all, so max/sum counts once
    for interval in range(2, 7):
        sidecars.round()
        assert sidecars.leaders() == [leader]
        assert sidecars.sweeps() == {leader: interval, **dict.fromkeys(followers, 0)}
    assert db[LEASES].count_documents({}) == 1
    assert {name: _queries(sidecars[name], "lease") for name in "abc"} == dict.fromkeys("abc", 6)


def test_a_stopped_holder_releases_the_lease_and_another_takes_over_at_its_next_try(fleet, mongo, caplog):
    _, _, db = mongo
    sidecars = fleet()
    sidecars.round()
    [leader] = sidecars.leaders()
    held = db[LEASES].find_one()
    with caplog.at_level(logging.INFO, logger="monitor.lease"):
        sidecars.drop(leader).stop()
    released = db[LEASES].find_one()
    assert released["expires_at"] < held["expires_at"]  # expired, not deleted: the next try takes it at once
    assert "stuck-sweep lease released" in caplog.text
    sidecars.round()
    [successor] = sidecars.leaders()
    taken = db[LEASES].find_one()
    assert taken["holder"] == sidecars[successor].lease.holder
    assert taken["expires_at"] - timedelta(seconds=30) < held["expires_at"]  # before the old one expired
    assert sidecars.sweeps()[successor] == 1
    assert sidecars.sweep_samples(successor) == LEADER_SERIES


def test_a_dead_holder_is_replaced_within_one_lease_period_of_its_expiry(fleet, mongo):
    _, _, db = mongo
    lease_seconds = 3.0  # real seconds on the database's clock
    sidecars = fleet(lease_seconds=lease_seconds, interval_seconds=1.0)
    sidecars.clock.now += INTERVAL - 1.0  # Fleet.round steps INTERVAL: every round is due
    sidecars.round()
    [leader] = sidecars.leaders()
    sidecars.drop(leader).mongo.close()  # dies: no release, no more renewals
    expired_at = db[LEASES].find_one()["expires_at"]
    sidecars.round()
    assert sidecars.leaders() == []  # the dead one's lease still runs: nobody sweeps
    assert set(sidecars.sweeps().values()) == {0}

    def take_over() -> list[str]:
        sidecars.round()
        return sidecars.leaders()

    [successor] = wait_for(take_over, timeout=lease_seconds + 10, what="a successor")
    taken = db[LEASES].find_one()
    assert taken["holder"] == sidecars[successor].lease.holder
    assert taken["expires_at"] - timedelta(seconds=lease_seconds) > expired_at  # only once it had expired
    assert sidecars.sweeps() == {successor: 1, **{n: 0 for n in sidecars.members if n != successor}}


def test_a_database_going_away_stops_every_sweep_and_each_change_is_logged_once(tmp_path, caplog):
    server = MongoServer(storage=str(tmp_path / "data")).start()
    import pymongo

    client = pymongo.MongoClient(server.url)
    stuck_documents(client.tradingagents)
    released_lease(client.tradingagents)
    client.close()
    sidecars = Fleet(server.url, "tradingagents")
    try:
        with caplog.at_level(logging.INFO, logger="monitor.lease"):
            sidecars.round()
            [leader] = sidecars.leaders()
            server.stop()
            sidecars.round()
            sidecars.round()
            assert sidecars.leaders() == []
            assert sidecars.gauges() == dict.fromkeys("abc", 0.0)
            assert sidecars.sweeps() == {n: int(n == leader) for n in "abc"}  # no sweep without the lease
            assert all(sidecars.sweep_samples(n) == {} for n in "abc")
            assert [sidecars[n].mongo.stats.errors for n in "abc"] == [{"lease": 2}] * 3
            down = [r for r in caplog.records if "cannot be taken or renewed" in r.getMessage()]
            assert [r.levelname for r in down] == ["WARNING"] * 3  # one per sidecar, not one per interval
            server = MongoServer(storage=str(tmp_path / "data"), port=server.port).start()
            sidecars.round()
            assert len(sidecars.leaders()) == 1
            sidecars.round()
        assert sum(sidecars.sweeps().values()) == 3
        held = [r for r in caplog.records if "holds the stuck-sweep lease" in r.getMessage()]
        assert len(held) in (1, 2)  # the first holder, and again the holder after the outage (maybe the same)
    finally:
        sidecars.stop()
        server.stop()


@pytest.fixture
def stalling_proxy():
    proxy = StallingProxy()
    yield proxy
    proxy.close()


def test_a_hung_database_makes_nobody_sweep(stalling_proxy):
    sidecars = Fleet(stalling_proxy.url, "tradingagents")
    try:
        sidecars.round()
        assert sidecars.leaders() == []
        assert sidecars.gauges() == dict.fromkeys("abc", 0.0)
        assert sidecars.sweeps() == dict.fromkeys("abc", 0)
        assert [sidecars[n].mongo.stats.errors for n in "abc"] == [{"lease": 1}] * 3
    finally:
        sidecars.stop()


def test_a_refused_lease_write_makes_nobody_sweep(fleet, mongo, caplog):
    """The database answers, but refuses the write (as it would a user without the privilege)."""
    _, _, db = mongo
    db.create_collection(LEASES, validator={"$jsonSchema": {"required": ["never_written"]}})
    sidecars = fleet(lease_exists=False)
    with caplog.at_level(logging.WARNING, logger="monitor.lease"):
        sidecars.round()
        sidecars.round()
    assert sidecars.leaders() == []
    assert sidecars.sweeps() == dict.fromkeys("abc", 0)
    assert [sidecars[n].mongo.stats.errors for n in "abc"] == [{"lease": 2}] * 3
    assert all(sidecars[n].mongo.stats.up for n in "abc")  # it answered
    assert len([r for r in caplog.records if "grant the sidecar's user" in r.getMessage()]) == 3
    assert db[LEASES].count_documents({}) == 0


def test_a_disabled_sweep_never_runs_nor_touches_the_lease(fleet, mongo):
    _, _, db = mongo
    sidecars = fleet(lease_exists=False, enabled=False)
    assert sidecars.gauges() == dict.fromkeys("abc", 0.0)
    sidecars.round()
    sidecars.round()
    assert sidecars.gauges() == dict.fromkeys("abc", 0.0)
    assert sidecars.sweeps() == dict.fromkeys("abc", 0)
    assert LEASES not in db.list_collection_names()


def test_without_a_lease_collection_every_enabled_sidecar_sweeps(fleet, mongo):
    """lease_collection "": the opt-out for one replica whose MongoDB user may only read."""
    _, _, db = mongo
    sidecars = fleet(lease_exists=False, lease_collection="")
    sidecars.round()
    sidecars.round()
    assert sidecars.gauges() == dict.fromkeys("abc", 1.0)
    assert sidecars.sweeps() == dict.fromkeys("abc", 2)
    assert LEASES not in db.list_collection_names()


def test_a_holder_whose_renewal_hangs_stops_claiming_the_lease_when_it_could_have_expired(mongo):
    url, name, db = mongo
    released_lease(db)
    gateway = MongoGateway(MongoSettings(database=name), url)
    clock = Clock()
    lease = SweepLease(gateway, LEASES, 30.0, holder="pod-a-1-00", clock=clock)
    try:
        assert lease.hold() is True
        clock.now += 29.9
        assert lease.held is True
        clock.now += 0.1  # no renewal got through since: it may have expired on the database
        assert lease.held is False
    finally:
        lease.release()  # still named in the document: released
        gateway.close()
    released = db[LEASES].find_one()
    assert (released["holder"], released["expires_at"] <= datetime.utcnow()) == ("pod-a-1-00", True)


def test_sidecar_ids_are_unique_per_process_and_name_the_pod(monkeypatch):
    monkeypatch.setenv("HOSTNAME", "tradingagents-7d9f-x2k")
    first, second = sidecar_id(), sidecar_id()
    assert first.startswith(f"tradingagents-7d9f-x2k-{os.getpid()}-")
    assert first != second


def test_lease_settings_defaults_and_checks(write_config):
    assert StuckSweep().lease_collection == LEASES
    assert StuckSweep().lease_duration == 180.0  # 3 x the 60 s interval
    assert StuckSweep(interval_seconds=5).lease_duration == 15.0
    assert StuckSweep(interval_seconds=5, lease_seconds=7).lease_duration == 7.0
    path = write_config(MINIMAL_CONFIG + "reconcile:\n  stuck:\n    interval_seconds: 10\n    lease_seconds: 5\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    stuck_line = MINIMAL_CONFIG.count("\n") + 2
    assert str(error.value) == (
        f"{path}:{stuck_line}: reconcile.stuck: lease_seconds (5) must be longer than interval_seconds (10): "
        "the holder renews its lease every interval; use about 3 x interval_seconds, or leave it out"
    )
    path = write_config(MINIMAL_CONFIG + "reconcile:\n  stuck:\n    lease_collection: 'a$b'\n")
    with pytest.raises(ConfigError, match=r"reconcile\.stuck\.lease_collection: String should match pattern"):
        load_config(path)


# --- three real sidecars ------------------------------------------------------------------------


def test_three_sidecar_processes_sweep_once_and_hand_over_on_stop_and_on_death(tmp_path, sidecars, mongo):
    url, name, db = mongo
    for _ in range(2):
        insert(db, "pending", created_ago=3600)
    released_lease(db)
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    assert "interval_seconds: 60\n" in text
    config = tmp_path / "fast.yaml"
    config.write_text(text.replace("interval_seconds: 60\n", "interval_seconds: 1\n"), encoding="utf-8")
    lease_seconds = 3.0  # 3 x interval_seconds
    pods = {}
    for pod in ("pod-a", "pod-b", "pod-c"):
        workdir = tmp_path / pod
        workdir.mkdir()
        (workdir / "app.log").touch()
        pods[pod] = sidecars(
            workdir,
            *("--log", str(workdir / "app.log"), "--mongo-url", url, "--mongo-db", name),
            config=config,
            env={"HOSTNAME": pod},
        ).start()

    def leader_of(live: dict) -> str | None:
        scraped = {pod: sidecar.metrics() for pod, sidecar in live.items()}
        gauges = {pod: metrics[("logmonitor_sweep_leader", ())] for pod, metrics in scraped.items()}
        assert sum(gauges.values()) <= 1, gauges  # never two
        holders = [pod for pod, gauge in gauges.items() if gauge == 1]
        if holders and scraped[holders[0]].get(("tradingagents_analyses_stuck", ())) == 2:
            return holders[0]
        return None

    def sweeps(sidecar) -> float:
        return sidecar.value("logmonitor_mongo_query_duration_seconds_count", operation="count_stuck")

    first = wait_for(lambda: leader_of(pods), what="one holder among three")
    assert db[LEASES].find_one()["holder"].startswith(f"{first}-{pods[first].proc.pid}-")
    wait_for(lambda: sweeps(pods[first]) >= 3, what="three sweeps on the holder")
    for pod, sidecar in pods.items():
        if pod != first:
            metrics = sidecar.metrics()
            assert sweeps(sidecar) == 0
            assert not [key for key in metrics if key[0] in SWEEP_SERIES]

    pods[first].signal(signal.SIGTERM)  # stops: releases the lease
    assert pods[first].wait() == 0
    assert "stuck-sweep lease released" in pods[first].stderr()
    rest = {pod: sidecar for pod, sidecar in pods.items() if pod != first}
    second = wait_for(lambda: leader_of(rest), what="a holder after the first one stopped")
    assert db[LEASES].find_one()["holder"].startswith(f"{second}-{pods[second].proc.pid}-")

    pods[second].kill9()  # dies: its lease must expire first
    expired_at = db[LEASES].find_one()["expires_at"]
    [third] = set(rest) - {second}
    assert wait_for(lambda: leader_of({third: pods[third]}), timeout=lease_seconds + 20, what="the last one") == third
    taken = db[LEASES].find_one()
    assert taken["holder"].startswith(f"{third}-{pods[third].proc.pid}-")
    assert taken["expires_at"] - timedelta(seconds=lease_seconds) > expired_at


def test_a_renewal_whose_reply_comes_after_the_lease_could_have_expired_leads_to_no_sweep(mongo):
    """The reply says "you hold it", but it took longer than the lease lasts: another sidecar may have
    taken it over in between, so this one must not sweep on it (nor say it leads)."""
    url, name, db = mongo
    released_lease(db)
    gateway = MongoGateway(MongoSettings(database=name), url)
    clock = Clock()
    lease = SweepLease(gateway, LEASES, 30.0, holder="pod-a-1-00", clock=clock)
    answer = gateway.take_lease

    def slow_answer(*args, **kwargs):
        document = answer(*args, **kwargs)
        clock.now += 30.5  # the reply arrives after the lease's term, counted from when it was sent
        return document

    gateway.take_lease = slow_answer  # the stand-in: a network that delays one reply, which cannot be made here
    try:
        assert lease.hold() is False
        assert lease.held is False
        gateway.take_lease = answer
        assert lease.hold() is True  # a timely renewal leads again
    finally:
        lease.release()
        gateway.close()


# --- a lost lease document, other lease lengths, what was reported --------------------------------


def test_a_lost_lease_document_never_makes_two_leaders_whoever_creates_it_anew(fleet, mongo, caplog):
    """MongoDB restarted empty (or restored without the lease collection) while a sidecar held the
    lease: that sidecar still counts on it until its timer runs out. Whoever creates the document
    anew waits one lease period, so at no instant do two sidecars say they lead."""
    _, _, db = mongo
    lease_seconds = 3.0  # real seconds on the database's clock
    sidecars = fleet(lease_seconds=lease_seconds, interval_seconds=1.0)
    sidecars.clock.now += INTERVAL - 1.0
    sidecars.round()
    [old] = sidecars.leaders()
    other = next(name for name in "abc" if name != old)
    db[LEASES].delete_many({})  # the document is lost

    sidecars.clock.now += INTERVAL
    with caplog.at_level(logging.INFO, logger="monitor.lease"):
        sidecars[other].run_once()  # another sidecar tries first: it creates the document
    created = db[LEASES].find_one()
    assert created["holder"] == sidecars[other].lease.holder
    assert created["since"] == created["expires_at"]  # it may sweep one lease period from now
    assert sidecars.leaders() == [old]  # the old holder's timer still runs; the creator waits
    [note] = [r for r in caplog.records if "created the stuck-sweep lease document" in r.getMessage()]
    assert note.levelname == "INFO"  # it never held the lease: a fleet's first start looks the same

    sidecars[old].run_once()  # the old holder's renewal finds another holder: it stops at once
    assert sidecars.leaders() == []
    sweeps_before = sidecars.sweeps()

    def one_leader() -> list[str]:
        sidecars.round()
        leaders = sidecars.leaders()
        assert sum(sidecars.gauges().values()) == len(leaders) <= 1
        return leaders

    assert wait_for(one_leader, timeout=lease_seconds + 10, what="the creator leading") == [other]
    assert sidecars.sweeps()[other] == sweeps_before[other] + 1
    assert sidecars.sweeps()[old] == sweeps_before[old]


def test_a_holder_that_finds_its_lease_document_gone_stops_leading_at_once(fleet, mongo, caplog):
    _, _, db = mongo
    sidecars = fleet(names="a")
    sidecars.round()
    assert sidecars.leaders() == ["a"]
    db[LEASES].delete_many({})
    with caplog.at_level(logging.INFO, logger="monitor.lease"):
        sidecars.round()
    assert sidecars.leaders() == []  # it created the document anew: another may still count on the old one
    assert sidecars.gauges() == {"a": 0.0}
    assert sidecars.sweep_samples("a") == {}
    [note] = [r for r in caplog.records if "created the stuck-sweep lease document" in r.getMessage()]
    assert note.levelname == "WARNING"
    assert "anew: it was gone while this sidecar held it" in note.getMessage()
    assert "sweeps only 30 s from now" in note.getMessage()


def test_a_fleets_first_start_sweeps_one_lease_period_later_then_every_interval(fleet, mongo):
    _, _, db = mongo
    lease_seconds = 2.0
    sidecars = fleet(lease_exists=False, lease_seconds=lease_seconds, interval_seconds=1.0)
    sidecars.clock.now += INTERVAL - 1.0
    sidecars.round(concurrently=True)
    assert sidecars.leaders() == []
    creator = db[LEASES].find_one()["holder"]

    def one_leader() -> list[str]:
        sidecars.round()
        return sidecars.leaders()

    [leader] = wait_for(one_leader, timeout=lease_seconds + 10, what="the creator leading")
    assert sidecars[leader].lease.holder == creator
    assert sidecars.sweep_samples(leader) == LEADER_SERIES


def test_a_sidecar_with_another_lease_length_says_so_once_and_in_a_gauge(fleet, mongo, caplog):
    sidecars = fleet(names="ab")  # 30 s
    sidecars.round()
    [leader] = sidecars.leaders()
    odd = sidecars.add("c", lease_seconds=3600.0)
    with caplog.at_level(logging.WARNING, logger="monitor.lease"):
        odd.run_once()
        sidecars.clock.now += INTERVAL
        odd.run_once()
    registry = sidecars.members["c"][1]
    assert registry.get_sample_value("logmonitor_sweep_lease_mismatch") == 1
    assert sidecars.members[leader][1].get_sample_value("logmonitor_sweep_lease_mismatch") == 0
    warned = [r.getMessage() for r in caplog.records if "uses lease_seconds" in r.getMessage()]
    assert warned == [
        f"the stuck-sweep lease holder {sidecars[leader].lease.holder} uses lease_seconds 30.0, this sidecar 3600: if "
        "it dies, no sidecar sweeps for up to its lease length; give every sidecar on one database the same "
        "reconcile.stuck settings"
    ]


def test_stuck_analyses_are_reported_once_across_the_fleet_whoever_holds_the_lease(fleet, mongo):
    _, _, db = mongo
    sidecars = fleet()
    sidecars.round()
    [first] = sidecars.leaders()
    assert len(stuck_findings(sidecars[first])) == 3
    assert len(db[LEASES].find_one()["reported"]) == 3
    sidecars.drop(first).stop()  # hands the lease over
    late = insert(db, "pending", created_ago=3600)  # stuck since: new to everyone
    sidecars.round()
    [second] = sidecars.leaders()
    assert stuck_findings(sidecars[second]) == [late]  # not the three the first holder reported
    sidecars.round()
    sidecars.round()
    assert sum(len(stuck_findings(sidecars[name])) for name in sidecars.members) == 1
    assert len(db[LEASES].find_one()["reported"]) == 4
