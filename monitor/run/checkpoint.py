"""Checkpoint: what must survive a restart, kept in SQLite and written as what changed.

The one owner of the persisted format. Format version 2, one database
`state.db` in the state directory:

- `files`: one row per followed file (read position, identity, names); its
  primary key is the file's identity, so the checkpoint cannot hold one file twice.
- `known`: files known without being followed (rotated ones read before, or
  there before the first start), so that a file found beside a stream's paths
  is new exactly when it is neither followed nor known (`monitor.follow.known`);
  meta `known_files` says the list was kept (older checkpoints kept none).
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

A file is set aside only when it was read and found wrong, never because it
could not be read: a directory that is not writable is read as it is (saves
then fail, counted and said once per streak of failures), and a file that
cannot be opened stops the start (`StateDirectoryError`), left as it is. The
directory, its lock and its checks are `monitor.run.statedir`'s.

The database written to is known by its device and inode. Before each write
the file at the path must still be that one: when it was deleted or replaced
(its directory removed, say), a new one is made and the whole state written into
it, not only what changed, since nothing of the old one is left
(`wants_complete_cut`: the next cut holds every pending claim).
"""

from __future__ import annotations

import contextlib
import errno
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
from monitor.run.statedir import StateDirectory, StateDirectoryError, refuse_dangling

log = logging.getLogger("monitor.checkpoint")  # the name operators filter on: see monitor.logs

FORMAT_VERSION = 2
STATE_FILE = "state.db"
LEGACY_FILE = "state.json"  # format version 1: one JSON document
# What SQLite says of a file it read and found wrong; anything else (cannot open, permission denied,
# I/O error) is no fault of the file's.
CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_ERROR})
Count = Callable[[str, tuple[tuple[str, str], ...]], None]  # (counter name, labels): see SELF_COUNTERS


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    dev INTEGER NOT NULL, ino INTEGER NOT NULL, stream TEXT NOT NULL, path TEXT NOT NULL,
    real_path TEXT NOT NULL, fp_len INTEGER NOT NULL, fp TEXT NOT NULL,
    "offset" INTEGER NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (dev, ino));
CREATE TABLE IF NOT EXISTS known (
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
    known: list[Position] | None = None  # None: saved by a version that kept no known files


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
        self._count = count  # failures, files set aside or made again: the sidecar's own counters
        self._state_dir = StateDirectory(self.directory)
        self._unwritable: str | None = None  # why the directory could not be written at start
        self._db: sqlite3.Connection | None = None
        self._db_writable = False
        self._schema_ready = False
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file written to
        self._complete_needed = False  # a new file holds nothing yet: the next save must be whole
        self._write_lock = threading.Lock()  # one writer at a time (scrape threads, the follow loop)
        self._stage_lock = threading.Lock()
        self._staged: Snapshot | None = None
        self._written_files: dict[tuple[int, int], Position] = {}
        self._written_known: dict[tuple[int, int], Position] = {}
        self._written_counters: dict[tuple[str, str], float] = {}
        self.saves = 0
        self.failures = 0
        self._last_failure: str | None = None  # said once while the same failure repeats
        self._failing_since = 0  # failures in a row

    # -- restore ---------------------------------------------------------------------------

    def load(self) -> Restored | None:
        """The saved state, or None when there is none or it cannot be trusted (reported, set aside).
        Takes the state directory's lock first. StateDirectoryError (nothing touched) when the directory
        or the checkpoint cannot be used: held by another sidecar, unreachable, unreadable."""
        legacy = self.directory / LEGACY_FILE
        self._unwritable = self._state_dir.open(self.path, legacy)
        if self._unwritable:
            log.error(
                "state directory %s is not writable (%s): no save can succeed (each failure counts in "
                "checkpoint_failures_total); a checkpoint in it is read, and a restart goes back to it. Give the "
                "sidecar a writable state directory (a read-write volume writable by uid %d)",
                self.directory,
                self._unwritable,
                os.geteuid(),
            )
        if not self.path.exists() and legacy.exists():
            self._migrate(legacy)
        if not self.path.exists():
            return None
        try:
            restored = self._read()
        except sqlite3.DatabaseError as exc:
            if not _found_wrong(exc):
                raise self._unreadable(self.path, exc) from None
            self._set_aside("corrupt", f"it is not a readable database ({exc})")
            return None
        except InvalidCheckpointError as exc:
            self._set_aside("invalid", str(exc))
            return None
        self._written_files = {(p.identity.dev, p.identity.ino): p for p in restored.positions}
        self._written_known = {(p.identity.dev, p.identity.ino): p for p in restored.known or ()}
        self._written_counters = {
            (owner, _encode(key)): value for owner, rows in restored.counters.items() for key, value in rows.items()
        }
        return restored

    def _migrate(self, legacy: Path) -> None:
        from monitor.run.legacy_state import migrate  # only ever needed once

        try:
            set_aside = migrate(legacy, self.path, self._save_now, self._clock)
        except OSError as exc:
            raise self._unreadable(legacy, exc) from None
        if set_aside:
            self._count("checkpoint_set_aside", (("reason", "invalid"),))

    def _unreadable(self, path: Path, exc: Exception) -> StateDirectoryError:
        self._disconnect()
        cause = _why_unreadable(path) or str(exc)
        return StateDirectoryError(
            f"cannot read checkpoint {path}: {cause}. It is left as it is (it may well be good): make it and "
            f"{self.directory} readable and writable by uid {os.geteuid()} (the sidecar's user), then start again"
        )

    def pending(self) -> Iterator[tuple[Claim, float]]:
        """The pending claims, streamed from disk one row at a time (restore never holds them twice)."""
        accepts: dict[str, tuple[str, ...]] = {}
        streams: dict[str, str] = {}
        db = self._connect(write=False)
        rows = db.execute("SELECT analysis_id, claim, accept, logged_at, stream, seen_at FROM pending")
        for analysis_id, claim, accept, logged_at, stream, seen_at in rows:
            accepted = accepts.get(accept)
            if accepted is None:
                accepted = accepts[accept] = tuple(json.loads(accept))
            stream = streams.setdefault(stream, stream)
            yield Claim(analysis_id, sys.intern(claim), accepted, logged_at, stream), seen_at

    def _read(self) -> Restored:
        db = self._connect(write=False)
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
        known = None
        if db.execute("SELECT value FROM meta WHERE key = 'known_files'").fetchone() is not None:
            known = [position_from_row(row, problems) for row in db.execute(f"SELECT {_FILE_COLUMNS} FROM known")]
        if problems:
            raise InvalidCheckpointError(summarize(problems))
        count = db.execute("SELECT count(*) FROM pending").fetchone()[0]
        saved_at = db.execute("SELECT value FROM meta WHERE key = 'saved_at'").fetchone()
        return Restored(positions, counters, count, float(saved_at[0]) if saved_at else 0.0, known)

    def _set_aside(self, why: str, detail: str) -> None:
        kept = self.path.with_name(f"{STATE_FILE}.{why}-{int(self._clock())}")
        self._disconnect()
        self._identity = None  # gone on purpose: the next file is a first one, not a lost one
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

    def wants_complete_cut(self) -> bool:
        """Whether the next cut must hold every pending claim, not only what changed: the file is new
        (ours was deleted or replaced) and holds nothing yet. Cheap (one stat): asked at every cut."""
        return self._complete_needed or self._file_lost()

    def flush(self) -> bool:
        """Write what is staged, if anything, in one transaction; False (logged, counted) if it failed."""
        with self._write_lock:
            with self._stage_lock:
                snapshot, self._staged = self._staged, None
            if snapshot is None:
                return True  # already written by a concurrent flush
            try:
                self._write(snapshot)
            except (OSError, sqlite3.Error, StateDirectoryError) as exc:
                self._failed(exc)
                with self._stage_lock:  # keep it: the next flush writes it with what came since
                    self._staged = snapshot if self._staged is None else _merged(snapshot, self._staged)
                self._disconnect()
                return False
            self._succeeded()
            return True

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self._failing_since += 1
        self._count("checkpoint_failures", ())
        message = f"cannot write checkpoint {self.path}: {exc}"
        if message != self._last_failure:  # a failure repeated every few seconds is said once, counted each time
            self._last_failure = message
            log.error("%s; will retry%s", message, self._fix_for(exc))

    def _succeeded(self) -> None:
        self.saves += 1
        if self._last_failure is not None:
            log.info("checkpoint %s written again, after %d failed attempt(s)", self.path, self._failing_since)
        self._last_failure, self._failing_since = None, 0

    def _fix_for(self, exc: Exception) -> str:
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        if full or (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_FULL:
            return f". The file system of {self.directory} is full: free space on it"
        refused = self._state_dir.why_not_writable(self.path)
        if refused:
            return f". {self.directory} is not writable ({refused}): give the sidecar a writable state directory"
        return ""

    def _save_now(self, snapshot: Snapshot) -> bool:
        """Stage and write one snapshot, then let go of the database (a migration's one save)."""
        self.stage(snapshot)
        saved = self.flush()
        self._disconnect()
        return saved

    def _write(self, snapshot: Snapshot) -> None:
        self._state_dir.hold()
        if self._file_lost():
            self._start_new_file()
        # A complete cut goes to a file that holds nothing of ours: every row is written, none is kept.
        written_files = {} if snapshot.complete else self._written_files
        written_counters = {} if snapshot.complete else self._written_counters
        files = {(p.identity.dev, p.identity.ino): p for p in snapshot.positions}
        changed_files = [p for key, p in files.items() if written_files.get(key) != p]
        gone_files = [key for key in written_files if key not in files]
        counters = {
            (owner, _encode(key)): value for owner, rows in snapshot.counters.items() for key, value in rows.items()
        }
        changed_counters = [(o, k, v) for (o, k), v in counters.items() if written_counters.get((o, k)) != v]
        written_known = {} if snapshot.complete else self._written_known
        known = None if snapshot.known is None else {(p.identity.dev, p.identity.ino): p for p in snapshot.known}
        changed_known = [p for key, p in (known or {}).items() if written_known.get(key) != p]
        gone_known = [key for key in written_known if known is not None and key not in known]
        db = self._connect()
        self._ensure_schema(db)
        with db:  # one transaction
            if snapshot.complete:
                for table in ("files", "counters", "pending", "known"):
                    db.execute(f"DELETE FROM {table}")
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
            if known is not None:
                db.executemany("DELETE FROM known WHERE dev = ? AND ino = ?", gone_known)
                db.executemany(
                    f"INSERT OR REPLACE INTO known ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [_file_row(p) for p in changed_known],
                )
                db.execute("INSERT OR REPLACE INTO meta VALUES ('known_files', '1')")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('saved_at', ?)", (str(self._clock()),))
        self._written_files = files
        if known is not None:
            self._written_known = known
        if snapshot.complete:
            self._written_counters, self._complete_needed = counters, False
        else:
            self._written_counters.update(counters)
        if self._identity is None:  # a file SQLite made only when it first wrote it
            self._identity = _identity(self.path)

    def _file_lost(self) -> bool:
        """Whether the file at the path is no longer the one written to (deleted, or replaced)."""
        return self._identity is not None and _identity(self.path) != self._identity

    def _start_new_file(self) -> None:
        """Ours is gone: forget what it held, so that everything is written into a new one."""
        refuse_dangling(self.path)
        self._disconnect()
        if not os.path.lexists(self.path):  # what is left beside it is the deleted file's: never pair it with a new one
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}{suffix}")
        self._identity = None
        self._written_files, self._written_counters, self._written_known = {}, {}, {}
        self._complete_needed = True
        self._count("checkpoint_recreated", ())
        log.warning(
            "checkpoint %s was deleted or replaced while the sidecar ran (its directory too, if that is gone): "
            "making it again and writing the whole current state into it",
            self.path,
        )

    def _connect(self, write: bool = True) -> sqlite3.Connection:
        if self._db is not None and (self._db_writable or not write):
            return self._db
        self._disconnect()  # a read-only connection (restore from a directory not writable) is not for writes
        if write or not self._unwritable:
            self.directory.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")  # a scrape answered is a save that survives a crash
                db.execute("PRAGMA journal_size_limit=4194304")  # a big first save leaves no big WAL behind
            except BaseException:
                db.close()
                raise
        else:
            db = self._open_read_only()
        self._db, self._db_writable = db, write or not self._unwritable
        self._identity = _identity(self.path)
        return db

    def _open_read_only(self) -> sqlite3.Connection:
        # WAL wants -shm and -wal files beside the database, which a directory we cannot write cannot
        # hold. With no -wal there (a clean stop), read the file as it is; with one (after kill -9, it may
        # hold the last commits), SQLite reads both read-only as long as they are readable.
        query = "mode=ro" if os.path.exists(f"{self.path}-wal") else "immutable=1"
        return sqlite3.connect(f"{self.path.absolute().as_uri()}?{query}", uri=True, check_same_thread=False)

    def _ensure_schema(self, db: sqlite3.Connection) -> None:
        if not self._schema_ready:
            db.executescript(SCHEMA)  # IF NOT EXISTS throughout: a no-op on an existing checkpoint
            with db:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('version', ?)", (str(FORMAT_VERSION),))
            self._schema_ready = True

    def _disconnect(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
            self._schema_ready = False

    def close(self) -> None:
        """Let go of the database and of the state directory's lock (another sidecar may take it)."""
        self._disconnect()
        self._state_dir.release()


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
    # A complete cut holds every claim waiting when it was taken: older changes are in it, or settled since.
    pending = newer.pending if newer.complete else {**older.pending, **newer.pending}
    known = newer.known if newer.known is not None else older.known
    return Snapshot(newer.positions, newer.counters, pending, older.complete or newer.complete, known)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _found_wrong(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite read the file and found it wrong (not a database, damaged, not ours)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is None or code & 0xFF in CORRUPT_CODES


def _why_unreadable(path: Path) -> str | None:
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as exc:
        why = exc.strerror or str(exc)
        return f"{why} for uid {os.geteuid()}" if isinstance(exc, PermissionError) else why
    return None
