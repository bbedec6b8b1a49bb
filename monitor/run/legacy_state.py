"""Migrating a checkpoint of format version 1 (`state.json`), once, to `state.db`.

Format 1 was one JSON document rewritten whole on every save. Its content is
turned into the rows each owner now keeps (see `monitor.run.checkpoint`), and
checked with the same rules as a restore: nothing impossible is carried over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitor.reconcile.claims import Claim
from monitor.run.snapshot import Key, Snapshot, position_from_row, summarize, valid_count

log = logging.getLogger("monitor.checkpoint")  # the name operators filter on: see monitor.logs

VERSION = 1
FOLLOW_COUNTERS = ("rotations", "truncations", "read_errors", "lost_files")


def migrate(legacy: Path, target: Path, save: Callable[[Snapshot], bool], clock: Callable[[], float]) -> bool:
    """Read `legacy` (`state.json`), save its snapshot to `target` in the new format, and rename
    it `state.json.migrated`. A file read and found wrong is kept as `state.json.invalid-<time>`:
    returns True then. One that cannot be read at all (OSError) is left alone: not its fault."""
    try:
        snapshot = read_legacy(legacy)
    except ValueError as exc:
        kept = legacy.with_name(f"{legacy.name}.invalid-{int(clock())}")
        with contextlib.suppress(OSError):
            os.replace(legacy, kept)
        log.error(
            "checkpoint %s (previous format) cannot be migrated: %s. Kept it as %s and starting fresh",
            legacy,
            exc,
            kept,
        )
        return True
    if not save(snapshot):
        return False
    os.replace(legacy, legacy.with_name(f"{legacy.name}.migrated"))
    log.info(
        "migrated checkpoint %s to %s: %d file position(s), %d pending claim(s); the old file is kept as %s",
        legacy,
        target,
        len(snapshot.positions),
        len(snapshot.pending),
        f"{legacy.name}.migrated",
    )
    return False


def read_legacy(path: Path) -> Snapshot:
    """The snapshot a format-1 file holds; ValueError naming what is wrong with it."""
    try:
        document = json.loads(path.read_bytes())
    except UnicodeDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("version") != VERSION:
        found = document.get("version") if isinstance(document, dict) else type(document).__name__
        raise ValueError(f"unknown version {found!r} (expected {VERSION})")
    try:
        return _snapshot(document)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"unexpected content ({type(exc).__name__}: {exc})") from None


def _snapshot(document: dict[str, Any]) -> Snapshot:
    problems: list[str] = []
    positions = [
        position_from_row(
            (f["dev"], f["ino"], f["stream"], f["path"], "", f["fp_len"], f["fp"], f["offset"], f.get("size", 0)),
            problems,
        )
        for f in document.get("files", [])
    ]
    counters: dict[str, dict[Key, float]] = {
        "metrics": _metrics(document.get("metrics", {})),
        "follow": {
            (stream, name): values[name]
            for stream, values in document.get("follow", {}).items()
            for name in FOLLOW_COUNTERS
            if name in values
        },
    }
    reconcile = document.get("extra", {}).get("reconcile", {})
    counters["reconcile"] = _reconcile(reconcile)
    for owner, rows in counters.items():
        problems += [
            f"counter {owner} {key} is {v!r} (must be a finite number >= 0)"
            for key, v in rows.items()
            if not valid_count(v)
        ]
    pending = {}
    for item in reconcile.get("pending", []):
        claim = Claim(
            str(item["id"]),
            str(item["claim"]),
            tuple(item["accept"]),
            float(item["logged_at"]),
            str(item.get("stream", "")),
        )
        pending[claim.key] = (claim, float(item["seen_at"]))
    if problems:
        raise ValueError(summarize(problems))
    return Snapshot(positions, counters, pending)


def _labels(pairs: list) -> tuple:
    return tuple((str(k), str(v)) for k, v in pairs)


def _metrics(snapshot: dict[str, Any]) -> dict[Key, float]:
    rows: dict[Key, float] = {}
    for rule, labels, value in snapshot.get("events", []):
        rows[("events", rule, _labels(labels))] = value
    for rule, value in snapshot.get("last_time", {}).items():
        rows[("last_time", rule)] = value
    for name, labels, value in snapshot.get("self_counters", []):
        rows[("self", name, _labels(labels))] = value
    return rows


def _reconcile(snapshot: dict[str, Any]) -> dict[Key, float]:
    rows: dict[Key, float] = {("checks", claim, outcome): n for claim, outcome, n in snapshot.get("checks", [])}
    rows[("dropped",)] = snapshot.get("dropped", 0)
    delay = snapshot.get("delay", {})
    if delay:
        rows.update({("delay", "bucket", str(i)): c for i, c in enumerate(delay.get("counts", []))})
        rows[("delay", "total")] = delay.get("total", 0.0)
        rows[("delay", "count")] = delay.get("count", 0)
    return rows
