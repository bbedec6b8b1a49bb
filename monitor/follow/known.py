"""Files known without being followed now: read before (to an offset), or there before the first start.

A file that starts like one of them may be a copy of it, and is never taken for a
new file; one holding no more than what was read of it is a copy. The follower
finds files created and rotated while it was not looking by this knowledge, not
by comparing times: a file beside the stream's path that is neither followed nor
known is new, whatever the clock says. Kept in the checkpoint; bounded, the
oldest forgotten first.

Lookups cost what one candidate costs, not what is known: files known by a full
fingerprint are indexed by it, the few shorter ones are compared one by one.
"""

from __future__ import annotations

from collections import OrderedDict

from monitor.follow.identity import FINGERPRINT_BYTES, MIN_COPY_FINGERPRINT, digest, matches
from monitor.follow.items import Position

MAX_KNOWN = 1024
Key = tuple[int, int, str]  # device, inode, fingerprint


def known_key(position: Position) -> Key:
    """A known file's key: its inode and what it held (the same inode may be known twice)."""
    return position.identity.dev, position.identity.ino, position.identity.fp


class KnownFiles:
    """Positions of known files by identity (inode and fingerprint: a file truncated and written
    again is two contents, both known), with an index of the full fingerprints."""

    def __init__(self, limit: int = MAX_KNOWN) -> None:
        self.limit = limit
        self._by_identity: OrderedDict[Key, Position] = OrderedDict()
        self._full: dict[str, dict[Key, int]] = {}  # fingerprint -> identity -> offset
        self._short: dict[Key, Position] = {}  # fingerprints under FINGERPRINT_BYTES
        self.version = 0  # changes whenever what is known changes: a save writes the list only then

    def __len__(self) -> int:
        return len(self._by_identity)

    def know(self, position: Position) -> None:
        self.version += 1
        key = known_key(position)
        self._forget(key)
        self._by_identity[key] = position
        if position.identity.fp_len >= FINGERPRINT_BYTES:
            self._full.setdefault(position.identity.fp, {})[key] = position.offset
        elif position.identity.fp_len:
            self._short[key] = position
        while len(self._by_identity) > self.limit:
            self._forget(next(iter(self._by_identity)))

    def positions(self) -> list[Position]:
        """Oldest first, as the checkpoint saves them."""
        return list(self._by_identity.values())

    def starts_like(self, head: bytes) -> bool:
        """Does a file starting with `head` start like a known file?"""
        if len(head) >= FINGERPRINT_BYTES and digest(head[:FINGERPRINT_BYTES]) in self._full:
            return True
        return any(matches(head, p.identity) for p in self._short.values())

    def holds_only_read(self, head: bytes, size: int) -> bool:
        """Is a file starting with `head`, `size` bytes long, a copy of no more than was read of a
        known file (long enough to tell, at most as long as what was read of it)?"""
        if len(head) >= FINGERPRINT_BYTES:
            offsets = self._full.get(digest(head[:FINGERPRINT_BYTES]), {})
            if any(size <= offset for offset in offsets.values()):
                return True
        return any(
            p.identity.fp_len >= MIN_COPY_FINGERPRINT and size <= p.offset and matches(head, p.identity)
            for p in self._short.values()
        )

    def _forget(self, key: Key) -> None:
        position = self._by_identity.pop(key, None)
        if position is None:
            return
        self._short.pop(key, None)
        same = self._full.get(position.identity.fp)
        if same is not None:
            same.pop(key, None)
            if not same:
                del self._full[position.identity.fp]
