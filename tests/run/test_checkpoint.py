"""The checkpoint: round trips, writes that cost what changed, impossible values set aside, migration."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from monitor.follow import Identity, Position
from monitor.reconcile.claims import Claim
from monitor.run.checkpoint import Checkpoint
from monitor.run.snapshot import Snapshot
from monitor.run.statedir import StateDirectoryError

ACCEPT = ("completed", "failed", "cancelled")


def position(offset: int = 120, ino: int = 7, path: str = "/logs/app.log") -> Position:
    return Position("app", path, Identity(1, ino, 64, "ab" * 20), offset, 200, f"/real{path}")


def claim(n: int) -> Claim:
    return Claim(f"{n:024x}", "completed_status_written", ACCEPT, 1_700_000_000.5 + n, "app")


def snapshot(positions=(), metrics=None, pending=None) -> Snapshot:
    counters = {"metrics": metrics or {("events", "timeout", ()): 3.0}, "follow": {("app", "rotations"): 1.0}}
    return Snapshot(list(positions), counters, pending or {})


def save(checkpoint: Checkpoint, cut: Snapshot) -> None:
    checkpoint.stage(cut)
    assert checkpoint.flush()


def rows(directory: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(directory / "state.db")) as db:
        return list(db.execute(sql))


def test_round_trip_restores_positions_counters_and_pending(tmp_path):
    checkpoint = Checkpoint(tmp_path)
    pending = {claim(n).key: (claim(n), 1_700_000_100.0 + n) for n in range(3)}
    save(checkpoint, snapshot([position()], pending=pending))
    checkpoint.close()

    again = Checkpoint(tmp_path)
    restored = again.load()
    assert restored.positions == [position()]
    assert restored.counters == {
        "metrics": {("events", "timeout", ()): 3.0},
        "follow": {("app", "rotations"): 1.0},
    }
    assert restored.pending_count == 3
    assert sorted(again.pending(), key=lambda p: p[1]) == [(claim(n), 1_700_000_100.0 + n) for n in range(3)]
    again.close()


def test_known_files_are_kept_written_when_they_change_and_absent_from_older_checkpoints(tmp_path):
    checkpoint = Checkpoint(tmp_path)
    save(checkpoint, snapshot([position()]))  # a cut that gives no known files: none are kept
    checkpoint.close()
    reread = Checkpoint(tmp_path)
    assert reread.load().known is None  # as a checkpoint of the previous version reads
    reread.close()
    older = [position(offset=50, ino=8, path="/logs/app.log.1"), position(offset=9, ino=9, path="/logs/app.log.2")]
    again = Checkpoint(tmp_path)
    again.load()
    cut = snapshot([position()])
    cut.known = older
    save(again, cut)
    save(again, snapshot([position()]))  # None: unchanged, left as saved
    cut = snapshot([position()])
    cut.known = older[1:]  # app.log.1 forgotten
    save(again, cut)
    again.close()
    third = Checkpoint(tmp_path)
    assert third.load().known == older[1:]
    third.close()
    assert rows(tmp_path, "SELECT path FROM known") == [("/logs/app.log.2",)]


def test_a_save_writes_only_what_changed_however_much_is_pending(tmp_path):
    checkpoint = Checkpoint(tmp_path)
    backlog = {claim(n).key: (claim(n), 1.0) for n in range(100_000)}
    save(checkpoint, snapshot([position()], pending=backlog))
    db = checkpoint._connect()
    before = db.total_changes
    # Next cut: one offset moved, one counter rose, one claim settled, one new: four rows and the save time.
    newer = snapshot(
        [position(offset=160)],
        metrics={("events", "timeout", ()): 4.0},
        pending={claim(5).key: None, claim(100_000).key: (claim(100_000), 2.0)},
    )
    save(checkpoint, newer)
    assert db.total_changes - before == 5
    before = db.total_changes
    save(checkpoint, snapshot([position(offset=160)], metrics={("events", "timeout", ()): 4.0}))
    assert db.total_changes - before == 1  # nothing changed but the save time
    assert rows(tmp_path, "SELECT count(*) FROM pending") == [(100_000,)]
    checkpoint.close()


def test_cuts_staged_before_a_write_keep_every_pending_change_in_order(tmp_path):
    checkpoint = Checkpoint(tmp_path)
    checkpoint.stage(snapshot(pending={claim(1).key: (claim(1), 1.0), claim(2).key: (claim(2), 1.0)}))
    checkpoint.stage(snapshot(pending={claim(1).key: None}))  # a newer cut, staged before the first was written
    assert checkpoint.flush()
    assert checkpoint.flush()  # nothing staged: nothing to do
    assert rows(tmp_path, "SELECT analysis_id FROM pending") == [(claim(2).analysis_id,)]
    checkpoint.close()


def test_a_refused_write_keeps_the_cut_for_the_next_one(tmp_path, caplog):
    directory = tmp_path / "state"
    directory.write_text("a file where the state directory should be")
    checkpoint = Checkpoint(directory)
    checkpoint.stage(snapshot([position()], pending={claim(1).key: (claim(1), 1.0)}))
    with caplog.at_level(logging.ERROR):
        assert not checkpoint.flush()
    assert f"cannot write checkpoint {directory / 'state.db'}" in caplog.text
    directory.unlink()
    checkpoint.stage(snapshot([position(offset=150)]))
    assert checkpoint.flush()
    assert rows(directory, 'SELECT "offset" FROM files') == [(150,)]
    assert rows(directory, "SELECT count(*) FROM pending") == [(1,)]  # the failed cut's claim was kept
    checkpoint.close()


@pytest.mark.parametrize(
    ("sql", "said"),
    [
        ('UPDATE files SET "offset" = -5', "file /logs/app.log: offset is -5 (must be a whole number >= 0)"),
        ("UPDATE counters SET value = -995 WHERE owner = 'metrics'", "is -995.0 (must be a finite number >= 0)"),
        ("UPDATE counters SET value = 1e999 WHERE owner = 'follow'", "is inf (must be a finite number >= 0)"),
        ("UPDATE counters SET value = NULL WHERE owner = 'follow'", "is None (must be a finite number >= 0)"),
        ("UPDATE pending SET seen_at = -1", "has an impossible time (-1.0)"),
        ("UPDATE meta SET value = '9' WHERE key = 'version'", "unknown format version 9 (this build reads 2)"),
    ],
)
def test_impossible_values_set_the_whole_checkpoint_aside_with_what_was_wrong(tmp_path, caplog, sql, said):
    checkpoint = Checkpoint(tmp_path)
    save(checkpoint, snapshot([position()], pending={claim(1).key: (claim(1), 1.0)}))
    checkpoint.close()
    with closing(sqlite3.connect(tmp_path / "state.db")) as db, db:
        db.execute(sql)
    again = Checkpoint(tmp_path, clock=lambda: 1234.0)
    with caplog.at_level(logging.ERROR):
        assert again.load() is None
    assert said in caplog.text
    assert "Kept it as" in caplog.text and "starting fresh" in caplog.text
    assert (tmp_path / "state.db.invalid-1234").exists()
    assert not (tmp_path / "state.db").exists()
    save(again, snapshot())  # and a fresh one is written
    assert again.load().positions == []
    again.close()


def legacy(directory: Path, files: list[dict], **extra) -> Path:
    document = {
        "version": 1,
        "saved_at": 1.0,
        "files": files,
        "metrics": {
            "events": [["timeout", [], 5.0], ["symbol", [["symbol", "AAPL"]], 2.0]],
            "last_time": {"timeout": 1_700_000_000.0},
            "self_counters": [["lines", [["stream", "app"]], 40.0]],
        },
        "follow": {"app": {"rotations": 3, "truncations": 1, "read_errors": 0, "lost_files": 0}},
        "extra": {
            "reconcile": {
                "pending": [
                    {
                        "id": claim(1).analysis_id,
                        "claim": claim(1).claim,
                        "accept": list(ACCEPT),
                        "logged_at": claim(1).logged_at,
                        "stream": "app",
                        "seen_at": 5.0,
                    }
                ],
                "checks": [["completed_status_written", "confirmed", 7]],
                "dropped": 2,
                "delay": {"counts": [1] + [0] * 11, "total": 0.25, "count": 1},
            }
        },
        **extra,
    }
    path = directory / "state.json"
    path.write_text(json.dumps(document))
    return path


LEGACY_FILE = {
    "stream": "app",
    "path": "/logs/app.log",
    "dev": 1,
    "ino": 7,
    "fp_len": 64,
    "fp": "ab" * 20,
    "offset": 120,
    "size": 200,
}


def test_a_previous_format_checkpoint_is_migrated_on_first_start(tmp_path, caplog):
    legacy(tmp_path, [LEGACY_FILE])
    checkpoint = Checkpoint(tmp_path)
    with caplog.at_level(logging.INFO):
        restored = checkpoint.load()
    assert "migrated checkpoint" in caplog.text
    assert restored.positions == [Position("app", "/logs/app.log", Identity(1, 7, 64, "ab" * 20), 120, 200, "")]
    assert restored.counters["metrics"] == {
        ("events", "timeout", ()): 5.0,
        ("events", "symbol", (("symbol", "AAPL"),)): 2.0,
        ("last_time", "timeout"): 1_700_000_000.0,
        ("self", "lines", (("stream", "app"),)): 40.0,
    }
    assert restored.counters["follow"][("app", "rotations")] == 3.0
    assert restored.counters["reconcile"][("checks", "completed_status_written", "confirmed")] == 7.0
    assert restored.counters["reconcile"][("delay", "count")] == 1.0
    assert list(checkpoint.pending()) == [(claim(1), 5.0)]
    assert (tmp_path / "state.json.migrated").exists() and not (tmp_path / "state.json").exists()
    checkpoint.close()


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"offset": -5}, "offset is -5 (must be a whole number >= 0)"),
        ({"metrics": {"events": [["timeout", [], math.nan]]}}, "is nan (must be a finite number >= 0)"),
    ],
)
def test_a_previous_format_checkpoint_with_impossible_values_is_set_aside(tmp_path, caplog, change, said):
    files = [{**LEGACY_FILE, **{k: v for k, v in change.items() if k in LEGACY_FILE}}]
    legacy(tmp_path, files, **{k: v for k, v in change.items() if k not in LEGACY_FILE})
    checkpoint = Checkpoint(tmp_path, clock=lambda: 99.0)
    with caplog.at_level(logging.ERROR):
        assert checkpoint.load() is None
    assert said in caplog.text
    assert (tmp_path / "state.json.invalid-99").exists()
    assert not (tmp_path / "state.db").exists()
    assert sorted(os.listdir(tmp_path)) == ["lock", "state.json.invalid-99"]  # and the directory's lock
    checkpoint.close()


# --- the state directory: held by one checkpoint, deleted while running -----------------------------


def test_one_state_directory_is_held_by_one_checkpoint_at_a_time(tmp_path):
    """flock is per open file, so a second Checkpoint in this very process is refused like a second sidecar."""
    first = Checkpoint(tmp_path)
    assert first.load() is None
    assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"
    second = Checkpoint(tmp_path)
    with pytest.raises(StateDirectoryError) as refused:
        second.load()
    assert str(refused.value).startswith(
        f"state directory {tmp_path} is in use by another `monitor run` (pid {os.getpid()}): "
    )
    first.close()  # lets go of the lock
    assert second.load() is None
    second.close()


def test_a_checkpoint_deleted_with_its_directory_gets_every_position_and_counter_again(tmp_path, caplog):
    directory = tmp_path / "state"
    counted: list[tuple] = []
    checkpoint = Checkpoint(directory, count=lambda name, labels: counted.append((name, labels)))
    save(
        checkpoint, snapshot([position(), position(ino=8, path="/logs/b.log")], pending={claim(1).key: (claim(1), 1.0)})
    )
    shutil.rmtree(directory)
    assert checkpoint.wants_complete_cut()
    # A cut taken before the loss was seen: only one offset moved, no counter rose.
    with caplog.at_level(logging.WARNING):
        save(checkpoint, snapshot([position(offset=150), position(ino=8, path="/logs/b.log")]))
    assert f"checkpoint {directory / 'state.db'} was deleted or replaced while the sidecar ran" in caplog.text
    assert counted == [("checkpoint_recreated", ())]
    assert rows(directory, 'SELECT ino, "offset" FROM files ORDER BY ino') == [(7, 150), (8, 120)]
    assert sorted(rows(directory, "SELECT owner, value FROM counters")) == [("follow", 1.0), ("metrics", 3.0)]
    assert checkpoint.wants_complete_cut()  # its pending claims are still to be written whole
    held = {name for name in open_files() if name.startswith(str(directory))}
    assert {str(directory / "state.db"), str(directory / "lock")} <= held  # the new ones, nothing " (deleted)"
    assert not [name for name in held if name.endswith("(deleted)")]
    checkpoint.close()


def test_a_complete_cut_writes_exactly_the_claims_waiting_into_a_new_file(tmp_path):
    checkpoint = Checkpoint(tmp_path)
    save(checkpoint, snapshot(pending={claim(n).key: (claim(n), 1.0) for n in range(3)}))
    (tmp_path / "state.db").unlink()
    # Claim 0 settled and claim 3 came before the next cut; one more change staged before it is written.
    checkpoint.stage(snapshot(pending={claim(0).key: None, claim(3).key: (claim(3), 2.0)}))
    assert checkpoint.wants_complete_cut()
    waiting = {claim(n).key: (claim(n), 2.0 if n == 3 else 1.0) for n in (1, 2, 3)}
    checkpoint.stage(Snapshot([], snapshot().counters, waiting, complete=True))
    checkpoint.stage(snapshot(pending={claim(1).key: None}))  # and one settled after that cut
    assert checkpoint.flush()
    assert not checkpoint.wants_complete_cut()
    assert sorted(rows(tmp_path, "SELECT analysis_id, seen_at FROM pending")) == [
        (claim(2).analysis_id, 1.0),
        (claim(3).analysis_id, 2.0),
    ]
    checkpoint.close()


def open_files() -> list[str]:
    """What this process has open, as /proc shows it (a deleted file's name ends in ` (deleted)`)."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
    return names


def test_the_audit_book_rows_leave_the_checkpoint_with_their_minutes_and_a_save_writes_only_changes(tmp_path):
    """The self-audit's book keeps a window of minutes: rows of a minute that left it are deleted,
    and a save writes the minute that changed, not the window."""
    checkpoint = Checkpoint(tmp_path)
    window = {("count", "app", "timeout", minute): 2.0 for minute in range(100, 280)}
    cut = snapshot()
    cut.counters["audit"] = window
    save(checkpoint, cut)
    db = checkpoint._connect()
    before = db.total_changes
    moved = {key: value for key, value in window.items() if key[3] != 100}
    moved[("count", "app", "timeout", 280)] = 1.0
    cut = snapshot()
    cut.counters["audit"] = moved
    save(checkpoint, cut)
    assert db.total_changes - before == 3  # minute 100 deleted, minute 280 added, the save time
    checkpoint.close()
    again = Checkpoint(tmp_path)
    assert again.load().counters["audit"] == moved
    again.close()
