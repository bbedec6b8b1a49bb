"""Which minutes can be compared, and where the live counts and the files on disk disagree.

A minute is comparable when every line of it that the live path counted is
still on disk and was read again, and nothing else the audit read belongs to
it unseen by the live path:

- it is not before `live_from` (lines before it were skipped or counted by rules
  since changed), nor before the retained window;
- it is after every minute an untimed line may belong to (on either side);
- every content (`source`) its live lines came from is among the files read again
  (a file deleted, compressed, rotated out of sight or truncated takes its minutes
  out of the comparison).

Pure: plain values in, plain values out.
"""

from __future__ import annotations

from collections.abc import Sequence

from monitor.audit.book import Drift, StreamView
from monitor.audit.disk import FileCounts


def comparable_minutes(view: StreamView, files: Sequence[FileCounts]) -> list[int]:
    if view.live_from is None or view.newest is None or view.oldest is None:
        return []
    present = {f.source for f in files if f.source}
    blind = max([view.blind_until, *(f.blind_until for f in files if f.blind_until is not None)])
    if any(f.unresolved for f in files):
        blind = max(blind, view.newest)
    first = max(view.live_from, view.oldest, blind + 1)
    return [m for m in range(first, view.newest + 1) if view.sources.get(m, frozenset()) <= present]


def drifts(view: StreamView, files: Sequence[FileCounts], minutes: Sequence[int]) -> list[Drift]:
    """Every (rule, minute) of `minutes` whose live count differs from what the files hold."""
    wanted = set(minutes)
    disk: dict[tuple[str, int], int] = {}
    for f in files:
        for key, lines in f.counts.items():
            if key[1] in wanted:
                disk[key] = disk.get(key, 0) + lines
    live = {key: lines for key, lines in view.counts.items() if key[1] in wanted}
    found = []
    for rule, minute in sorted(live.keys() | disk.keys(), key=lambda k: (k[1], k[0])):
        counted, held = live.get((rule, minute), 0), disk.get((rule, minute), 0)
        if counted != held:
            found.append(Drift(view.stream, rule, minute, counted, held))
    return found


def files_holding(files: Sequence[FileCounts], minute: int) -> list[str]:
    """The paths of the files holding matched lines of `minute`: where to look."""
    return [f.path for f in files if any(key[1] == minute for key in f.counts)]
