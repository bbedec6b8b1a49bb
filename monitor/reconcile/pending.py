"""The claims waiting for their MongoDB check, and what changed in them since the last checkpoint.

A claim waits from the moment it is read until it is settled (confirmed, or
decided otherwise at its deadline). The waiting set is bounded (`max_pending`):
a claim beyond it is refused and its owner counts it. Every addition and every
settlement is remembered until the checkpoint takes it, so a save writes what
changed, not the whole set; a checkpoint file made anew takes the whole set once.

Not locked itself: the reconciler holds one lock over this and its outcome
counters, so a checkpoint takes both in one cut and a claim is never saved as
both counted and still waiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from monitor.reconcile.claims import Claim

ClaimKey = tuple[str, str]  # (analysis id, claim name)
PendingChange = tuple[Claim, float] | None  # (claim, seen_at) added, or None: settled


@dataclass(slots=True)  # 100,000 of them wait through a MongoDB outage: kept small
class Waiting:
    claim: Claim
    seen_at: float  # wall time the claim was read: grace and deadline count from here
    next_check: float
    attempts: int = 0
    last_error: str = ""


class PendingClaims:
    """The waiting claims by key, at most `limit` of them, and their changes since `take_changes`."""

    def __init__(self, limit: int, track_changes: bool = True) -> None:
        self.limit = limit
        self._waiting: dict[ClaimKey, Waiting] = {}
        # For the checkpoint's writes of what changed; a one-shot check has no checkpoint, and its
        # changes would grow with every claim it ever checked.
        self._changes: dict[ClaimKey, PendingChange] = {} if track_changes else _Discarded()

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, key: ClaimKey) -> bool:
        return key in self._waiting

    def __iter__(self) -> Iterator[Waiting]:
        return iter(self._waiting.values())

    @property
    def full(self) -> bool:
        return len(self._waiting) >= self.limit

    def add(self, claim: Claim, seen_at: float, first_check: float) -> None:
        """A claim just read (the caller checked `full` and that it is not waiting already)."""
        self._waiting[claim.key] = Waiting(claim, seen_at, first_check)
        self._changes[claim.key] = (claim, seen_at)

    def restore(self, claim: Claim, seen_at: float, first_check: float) -> None:
        """A claim that waited at the last checkpoint: already saved, so no change to write."""
        self._waiting[claim.key] = Waiting(claim, seen_at, first_check)

    def due(self, now: float, count: int) -> list[Waiting]:
        """The `count` claims whose check is due first."""
        due = [w for w in self._waiting.values() if w.next_check <= now]
        due.sort(key=lambda w: w.next_check)
        return due[:count]

    def settle(self, claim: Claim) -> None:
        del self._waiting[claim.key]
        self._changes[claim.key] = None

    def take_changes(self) -> dict[ClaimKey, PendingChange]:
        """What was added (claim, seen_at) or settled (None) since the last call."""
        changes, self._changes = self._changes, {}
        return changes

    def take_all(self) -> dict[ClaimKey, PendingChange]:
        """Every waiting claim as an addition, for a checkpoint made anew (the last one was lost);
        the changes since the last call are in it, so they are taken too."""
        self._changes = {}
        return {key: (waiting.claim, waiting.seen_at) for key, waiting in self._waiting.items()}


class _Discarded(dict):
    """A change log that keeps nothing (no checkpoint to write it to)."""

    def __setitem__(self, key: ClaimKey, value: PendingChange) -> None:
        pass
