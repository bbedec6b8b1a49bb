"""What a checkpoint holds, as plain values, and the rules a restored value must meet.

Shared by the checkpoint (`monitor.run.checkpoint`, format 2) and the migration of
format 1 (`monitor.run.legacy_state`): both build `Snapshot`s and check what they
read with the same rules, so nothing impossible is carried over from either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from monitor.follow import Identity, Position
from monitor.reconcile.pending import PendingChange

MAX_REPORTED_PROBLEMS = 5

Key = tuple[Any, ...]  # strings and nested tuples of strings: JSON-encoded in the database


@dataclass
class Snapshot:
    """One consistent cut: every position, every counter, and the pending claims that changed
    (`complete`: every claim waiting, for a checkpoint file made anew that holds none of them)."""

    positions: list[Position] = field(default_factory=list)
    counters: dict[str, dict[Key, float]] = field(default_factory=dict)
    pending: dict[tuple[str, str], PendingChange] = field(default_factory=dict)
    complete: bool = False
    # Files known without being followed (see monitor.follow.known); None: not given, left as saved.
    known: list[Position] | None = None


def position_from_row(row: tuple, problems: list[str]) -> Position:
    """A `files` row as a Position; what is impossible in it is added to `problems`."""
    dev, ino, stream, path, real_path, fp_len, fp, offset, size = row
    integers = {"dev": dev, "ino": ino, "fp_len": fp_len, "offset": offset, "size": size}
    for name, value in integers.items():
        if not isinstance(value, int) or value < 0:
            problems.append(f"file {path}: {name} is {value!r} (must be a whole number >= 0)")
    if not all(isinstance(v, str) for v in (stream, path, real_path, fp)):
        problems.append(f"file {path!r}: stream, path or fingerprint is not text")
    return Position(str(stream), str(path), Identity(dev, ino, fp_len, str(fp)), offset, size, str(real_path))


def valid_count(value: object) -> bool:
    """A counter value a run could have written: a finite number >= 0."""
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


def summarize(problems: list[str]) -> str:
    """The first few problems, and how many more: one line for the log."""
    shown = "; ".join(problems[:MAX_REPORTED_PROBLEMS])
    more = len(problems) - MAX_REPORTED_PROBLEMS
    return shown + (f"; and {more} more" if more > 0 else "")
