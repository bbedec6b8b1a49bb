"""The checkpoint's format: its tables, a database read into plain values, a cut written as what changed.

Format version 2, one SQLite database:

- `files`: one row per followed file (read position, identity, names); its
  primary key is the file's identity, so the checkpoint cannot hold one file twice.
- `known`: files known without being followed (rotated ones read before, or
  there before the first start), so that a file found beside a stream's paths
  is new exactly when it is neither followed nor known (`monitor.follow.known`);
  meta `known_files` says the list was kept (older checkpoints kept none).
- `counters`: every counter of every owner (`metrics`, `follow`, `reconcile`)
  as one row (owner, key, value); owners hand over plain rows and take them back.
- `pending`: the claims waiting for their MongoDB check.
- `meta`: the format version, the time of the last save, whether known files are kept.

`WrittenRows` remembers what this process wrote, so a save is one transaction
holding only the rows that changed: offsets that moved, counters that rose,
claims added or settled. Where the database lives, its lock, and what happens
when it cannot be read or written are `monitor.run.checkpoint`'s.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from monitor.follow import Position
from monitor.follow.known import known_key
from monitor.reconcile.claims import Claim
from monitor.run.snapshot import Key, Snapshot, position_from_row, summarize, valid_count

FORMAT_VERSION = 2
# Owners whose rows leave as well as come (the self-audit's book keeps a window of minutes):
# a row of theirs written before and absent from a cut is deleted.
WINDOWED_OWNERS = frozenset({"audit"})

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    dev INTEGER NOT NULL, ino INTEGER NOT NULL, stream TEXT NOT NULL, path TEXT NOT NULL,
    real_path TEXT NOT NULL, fp_len INTEGER NOT NULL, fp TEXT NOT NULL,
    "offset" INTEGER NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (dev, ino));
CREATE TABLE IF NOT EXISTS known (
    dev INTEGER NOT NULL, ino INTEGER NOT NULL, stream TEXT NOT NULL, path TEXT NOT NULL,
    real_path TEXT NOT NULL, fp_len INTEGER NOT NULL, fp TEXT NOT NULL,
    "offset" INTEGER NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (dev, ino, fp));
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


def ensure_schema(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)  # IF NOT EXISTS throughout: a no-op on an existing checkpoint
    with db:
        db.execute("INSERT OR IGNORE INTO meta VALUES ('version', ?)", (str(FORMAT_VERSION),))


def read_restored(db: sqlite3.Connection) -> Restored:
    """Everything but the pending claims (streamed by `read_pending`); InvalidCheckpointError listing
    what no run could have written."""
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


def read_pending(db: sqlite3.Connection) -> Iterator[tuple[Claim, float]]:
    """The pending claims, one row at a time (restore never holds them twice)."""
    accepts: dict[str, tuple[str, ...]] = {}
    streams: dict[str, str] = {}
    rows = db.execute("SELECT analysis_id, claim, accept, logged_at, stream, seen_at FROM pending")
    for analysis_id, claim, accept, logged_at, stream, seen_at in rows:
        accepted = accepts.get(accept)
        if accepted is None:
            accepted = accepts[accept] = tuple(json.loads(accept))
        stream = streams.setdefault(stream, stream)
        yield Claim(analysis_id, sys.intern(claim), accepted, logged_at, stream), seen_at


class WrittenRows:
    """The rows of ours the database holds: files, known files and counters (pending claims come
    as changes already). A save writes what differs from them, in one transaction."""

    def __init__(self) -> None:
        self.files: dict[tuple[int, int], Position] = {}
        self.known: dict[tuple, Position] = {}
        self.counters: dict[tuple[str, str], float] = {}

    def restored(self, restored: Restored) -> None:
        """What a database just read holds."""
        self.files = {_key(p): p for p in restored.positions}
        self.known = {known_key(p): p for p in restored.known or ()}
        self.counters = {
            (owner, _encode(key)): value for owner, rows in restored.counters.items() for key, value in rows.items()
        }

    def write(self, db: sqlite3.Connection, snapshot: Snapshot, saved_at: float) -> None:
        """Write `snapshot` as what changed (a complete one into a database holding nothing of ours)."""
        if snapshot.complete:  # every row is written, none is kept
            self.files, self.known, self.counters = {}, {}, {}
        files = {_key(p): p for p in snapshot.positions}
        counters = {
            (owner, _encode(key)): value for owner, rows in snapshot.counters.items() for key, value in rows.items()
        }
        known = None if snapshot.known is None else {known_key(p): p for p in snapshot.known}
        with db:  # one transaction
            if snapshot.complete:
                for table in ("files", "counters", "pending", "known"):
                    db.execute(f"DELETE FROM {table}")
            _write_files(db, "files", ("dev", "ino"), self.files, files)
            db.executemany(
                "INSERT OR REPLACE INTO counters VALUES (?, ?, ?)",
                [(o, k, v) for (o, k), v in counters.items() if self.counters.get((o, k)) != v],
            )
            gone = [(o, k) for (o, k) in self.counters if o in WINDOWED_OWNERS and (o, k) not in counters]
            db.executemany("DELETE FROM counters WHERE owner = ? AND key = ?", gone)
            settled = [key for key, change in snapshot.pending.items() if change is None]
            db.executemany("DELETE FROM pending WHERE analysis_id = ? AND claim = ?", settled)
            db.executemany(
                "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, ?, ?)",
                [_pending_row(*change) for change in snapshot.pending.values() if change is not None],
            )
            if known is not None:
                _write_files(db, "known", ("dev", "ino", "fp"), self.known, known)
                db.execute("INSERT OR REPLACE INTO meta VALUES ('known_files', '1')")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('saved_at', ?)", (str(saved_at),))
        self.files = files
        if known is not None:
            self.known = known
        self.counters.update(counters)
        for key in gone:
            del self.counters[key]


def _write_files(
    db: sqlite3.Connection,
    table: str,
    key: tuple[str, ...],
    written: dict[tuple, Position],
    now: dict[tuple, Position],
) -> None:
    """The rows of `table` (keyed by the columns `key`, as the dicts are) that differ from `written`."""
    where = " AND ".join(f"{column} = ?" for column in key)
    db.executemany(f"DELETE FROM {table} WHERE {where}", [k for k in written if k not in now])
    db.executemany(
        f"INSERT OR REPLACE INTO {table} ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [_file_row(p) for k, p in now.items() if written.get(k) != p],
    )


def _key(position: Position) -> tuple[int, int]:
    return position.identity.dev, position.identity.ino


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
