"""Checkpoint: what must survive a restart, kept in SQLite and written as what changed.

The one owner of the persisted format. Format version 2, one database
`state.db` in the state directory:

- `files`: one row per followed file (read position, identity, names); its
  primary key is the file's identity, so the checkpoint cannot hold one file twice.
- `counters`: every counter of every owner (`metrics`, `follow`, `reconcile`)
  as one row (owner, key, value); owners hand over plain rows and take them back.
- `pending`: the claims waiting for their MongoDB check.
- `meta`: the format version and the time of the last save.

A save is one transaction (WAL, fsync on commit) holding only the rows that
changed since the last save: offsets that moved, counters that rose, claims
added or settled. So its cost follows what changed, not what is held, and a
backlog of 100,000 pending claims costs nothing per scrape. Restore streams
the pending claims row by row instead of parsing one big document.

Positions, counters and claims are staged together under the caller's lock
(`stage`) and written by `flush`, so what is saved is always one consistent
cut, in the order the cuts were taken. Restore is all or nothing: a database
that is unreadable, of an unknown version, or holding impossible values
(a negative offset, a NaN or negative counter) is set aside whole with a
message naming what was wrong, and the sidecar starts fresh. A checkpoint of
the previous format (`state.json`, version 1) is migrated on first start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.follow import Position
from monitor.reconcile.claims import Claim
from monitor.run.snapshot import Key, Snapshot, position_from_row, summarize, valid_count

log = logging.getLogger("monitor.checkpoint")  # the name operators filter on: see monitor.logs

FORMAT_VERSION = 2
STATE_FILE = "state.db"
LEGACY_FILE = "state.json"  # format version 1: one JSON document
Count = Callable[[str, tuple[tuple[str, str], ...]], None]  # (counter name, labels): see SELF_COUNTERS


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    dev INTEGER NOT NULL, ino INTEGER NOT NULL, stream TEXT NOT NULL, path TEXT NOT NULL,
    real_path TEXT NOT NULL, fp_len INTEGER NOT NULL, fp TEXT NOT NULL,
    "offset" INTEGER NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (dev, ino));
CREATE TABLE IF NOT EXISTS counters (owner TEXT NOT NULL, key TEXT NOT NULL, value REAL, PRIMARY KEY (owner, key));
CREATE TABLE IF NOT EXISTS pending (
    analysis_id TEXT NOT NULL, claim TEXT NOT NULL, accept TEXT NOT NULL, logged_at REAL, stream TEXT NOT NULL,
    seen_at REAL, PRIMARY KEY (analysis_id, claim));
"""


@dataclass(frozen=True)
class Restored:
    positions: list[Position]
    counters: dict[str, dict[Key, float]]
    pending_count: int
    saved_at: float  # wall time of the save


class InvalidCheckpointError(ValueError):
    """The checkpoint holds values no run could have written; the message lists them."""


class Checkpoint:
    """Saves and restores the sidecar's state in `directory/state.db`."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        clock: Callable[[], float] = time.time,
        count: Count = lambda name, labels: None,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE
        self._clock = clock
        self._count = count  # failures, files set aside: the sidecar's own counters
        self._db: sqlite3.Connection | None = None
        self._schema_ready = False
        self._write_lock = threading.Lock()  # one writer at a time (scrape threads, the follow loop)
        self._stage_lock = threading.Lock()
        self._staged: Snapshot | None = None
        self._written_files: dict[tuple[int, int], Position] = {}
        self._written_counters: dict[tuple[str, str], float] = {}
        self.saves = 0
        self.failures = 0

    # -- restore ---------------------------------------------------------------------------

    def load(self) -> Restored | None:
        """The saved state, or None when there is none or it cannot be trusted (reported, set aside)."""
        legacy = self.directory / LEGACY_FILE
        if not self.path.exists() and legacy.exists():
            self._migrate(legacy)
        if not self.path.exists():
            return None
        try:
            restored = self._read()
        except sqlite3.DatabaseError as exc:
            self._set_aside("corrupt", f"it is not a readable database ({exc})")
            return None
        except InvalidCheckpointError as exc:
            self._set_aside("invalid", str(exc))
            return None
        self._written_files = {(p.identity.dev, p.identity.ino): p for p in restored.positions}
        self._written_counters = {
            (owner, _encode(key)): value for owner, rows in restored.counters.items() for key, value in rows.items()
        }
        return restored

    def _migrate(self, legacy: Path) -> None:
        from monitor.run.legacy_state import migrate  # only ever needed once

        if migrate(legacy, self.path, self._save_now, self._clock):
            self._count("checkpoint_set_aside", (("reason", "invalid"),))

    def pending(self) -> Iterator[tuple[Claim, float]]:
        """The pending claims, streamed from disk one row at a time (restore never holds them twice)."""
        accepts: dict[str, tuple[str, ...]] = {}
        streams: dict[str, str] = {}
        rows = self._connect().execute("SELECT analysis_id, claim, accept, logged_at, stream, seen_at FROM pending")
        for analysis_id, claim, accept, logged_at, stream, seen_at in rows:
            accepted = accepts.get(accept)
            if accepted is None:
                accepted = accepts[accept] = tuple(json.loads(accept))
            stream = streams.setdefault(stream, stream)
            yield Claim(analysis_id, sys.intern(claim), accepted, logged_at, stream), seen_at

    def _read(self) -> Restored:
        db = self._connect()
        version = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        if version is None or version[0] != str(FORMAT_VERSION):
            found = version[0] if version else "none"
            raise InvalidCheckpointError(f"unknown format version {found} (this build reads {FORMAT_VERSION})")
        problems: list[str] = []
        positions = [position_from_row(row, problems) for row in db.execute(f"SELECT {_FILE_COLUMNS} FROM files")]
        counters: dict[str, dict[Key, float]] = {}
        for owner, key, value in db.execute("SELECT owner, key, value FROM counters"):
            if not valid_count(value):
                problems.append(f"counter {owner} {key} is {value!r} (must be a finite number >= 0)")
                continue
            counters.setdefault(owner, {})[_decode(key)] = float(value)
        bad = db.execute(
            "SELECT analysis_id, seen_at FROM pending WHERE seen_at IS NULL OR seen_at < 0 OR seen_at > 1e12 "
            "OR logged_at IS NULL OR logged_at < 0 LIMIT 1"
        ).fetchone()
        if bad is not None:
            problems.append(f"pending claim {bad[0]} has an impossible time ({bad[1]!r})")
        if problems:
            raise InvalidCheckpointError(summarize(problems))
        count = db.execute("SELECT count(*) FROM pending").fetchone()[0]
        saved_at = db.execute("SELECT value FROM meta WHERE key = 'saved_at'").fetchone()
        return Restored(positions, counters, count, float(saved_at[0]) if saved_at else 0.0)

    def _set_aside(self, why: str, detail: str) -> None:
        kept = self.path.with_name(f"{STATE_FILE}.{why}-{int(self._clock())}")
        self.close()
        self._count("checkpoint_set_aside", (("reason", why),))
        try:
            os.replace(self.path, kept)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}{suffix}", f"{kept}{suffix}")
        except OSError as exc:
            kept = Path(f"{self.path} (could not be moved: {exc.strerror or exc}; remove it by hand)")
        log.error(
            "checkpoint %s is %s: %s. Kept it as %s and starting fresh: counters restart at 0 and files are "
            "read from their end",
            self.path,
            why,
            detail,
            kept,
        )

    # -- save ------------------------------------------------------------------------------

    def stage(self, snapshot: Snapshot) -> None:
        """Take a cut (call under the lock that makes it consistent); `flush` writes it."""
        with self._stage_lock:
            if self._staged is None:
                self._staged = snapshot
            else:  # a cut not written yet: the newer one wins, pending changes accumulate in order
                self._staged = _merged(self._staged, snapshot)

    def flush(self) -> bool:
        """Write what is staged, if anything, in one transaction; False (logged, counted) if the disk refuses."""
        with self._write_lock:
            with self._stage_lock:
                snapshot, self._staged = self._staged, None
            if snapshot is None:
                return True  # already written by a concurrent flush
            try:
                self._write(snapshot)
            except (OSError, sqlite3.Error) as exc:
                self.failures += 1
                self._count("checkpoint_failures", ())
                log.error("cannot write checkpoint %s: %s; will retry", self.path, exc)
                with self._stage_lock:  # keep it: the next flush writes it with what came since
                    self._staged = snapshot if self._staged is None else _merged(snapshot, self._staged)
                self.close()
                return False
            self.saves += 1
            return True

    def _save_now(self, snapshot: Snapshot) -> bool:
        """Stage and write one snapshot, then let go of the database (a migration's one save)."""
        self.stage(snapshot)
        saved = self.flush()
        self.close()
        return saved

    def _write(self, snapshot: Snapshot) -> None:
        files = {(p.identity.dev, p.identity.ino): p for p in snapshot.positions}
        changed_files = [p for key, p in files.items() if self._written_files.get(key) != p]
        gone_files = [key for key in self._written_files if key not in files]
        counters = {
            (owner, _encode(key)): value for owner, rows in snapshot.counters.items() for key, value in rows.items()
        }
        changed_counters = [(o, k, v) for (o, k), v in counters.items() if self._written_counters.get((o, k)) != v]
        db = self._connect()
        self._ensure_schema(db)
        with db:  # one transaction
            db.executemany("DELETE FROM files WHERE dev = ? AND ino = ?", gone_files)
            db.executemany(
                f"INSERT OR REPLACE INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_file_row(p) for p in changed_files],
            )
            db.executemany("INSERT OR REPLACE INTO counters VALUES (?, ?, ?)", changed_counters)
            settled = [key for key, change in snapshot.pending.items() if change is None]
            db.executemany("DELETE FROM pending WHERE analysis_id = ? AND claim = ?", settled)
            db.executemany(
                "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, ?, ?)",
                [_pending_row(*change) for change in snapshot.pending.values() if change is not None],
            )
            db.execute("INSERT OR REPLACE INTO meta VALUES ('saved_at', ?)", (str(self._clock()),))
        self._written_files = files
        self._written_counters.update(counters)

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")  # a scrape answered is a save that survives a crash
                db.execute("PRAGMA journal_size_limit=4194304")  # a big first save leaves no big WAL behind
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def _ensure_schema(self, db: sqlite3.Connection) -> None:
        if not self._schema_ready:
            db.executescript(SCHEMA)  # IF NOT EXISTS throughout: a no-op on an existing checkpoint
            with db:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('version', ?)", (str(FORMAT_VERSION),))
            self._schema_ready = True

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
            self._schema_ready = False

_FILE_COLUMNS = 'dev, ino, stream, path, real_path, fp_len, fp, "offset", size'


def _file_row(p: Position) -> tuple:
    i = p.identity
    return (i.dev, i.ino, p.stream, p.path, p.real_path, i.fp_len, i.fp, p.offset, p.size)


def _pending_row(claim: Claim, seen_at: float) -> tuple:
    accept = json.dumps(list(claim.accept), ensure_ascii=False)
    return (claim.analysis_id, claim.claim, accept, claim.logged_at, claim.stream, seen_at)


def _encode(key: Key) -> str:
    return json.dumps(key, ensure_ascii=False, separators=(",", ":"))


def _decode(text: str) -> Key:
    return _tupled(json.loads(text))


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


def _merged(older: Snapshot, newer: Snapshot) -> Snapshot:
    return Snapshot(newer.positions, newer.counters, {**older.pending, **newer.pending})
