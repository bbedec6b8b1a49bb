"""Checkpoint: what must survive a restart, kept in SQLite and written as what changed.

The one owner of the persisted state: `state.db` in the state directory, in the
format `monitor.run.rows` reads and writes (tables, validation, what changed).

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
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from monitor.reconcile.claims import Claim
from monitor.run.rows import InvalidCheckpointError, Restored, WrittenRows, ensure_schema, read_pending, read_restored
from monitor.run.snapshot import Snapshot
from monitor.run.statedir import StateDirectory, StateDirectoryError, refuse_dangling

log = logging.getLogger("monitor.checkpoint")  # the name operators filter on: see monitor.logs

STATE_FILE = "state.db"
LEGACY_FILE = "state.json"  # format version 1: one JSON document
# What SQLite says of a file it read and found wrong; anything else (cannot open, permission denied,
# I/O error) is no fault of the file's.
CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_ERROR})
Count = Callable[[str, tuple[tuple[str, str], ...]], None]  # (counter name, labels): see SELF_COUNTERS


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
        self._written = WrittenRows()  # what the database holds of ours: a save writes what differs
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
            restored = read_restored(self._connect(write=False))
        except sqlite3.DatabaseError as exc:
            if not _found_wrong(exc):
                raise self._unreadable(self.path, exc) from None
            self._set_aside("corrupt", f"it is not a readable database ({exc})")
            return None
        except InvalidCheckpointError as exc:
            self._set_aside("invalid", str(exc))
            return None
        self._written.restored(restored)
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
        return read_pending(self._connect(write=False))

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
        db = self._connect()
        self._ensure_schema(db)
        self._written.write(db, snapshot, self._clock())
        if snapshot.complete:
            self._complete_needed = False
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
        self._written = WrittenRows()
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
            ensure_schema(db)
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
