"""A histogram as plain, checkpointable data (prometheus-client's cannot be restored)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

DELAY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
QUERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; last is +Inf
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs as the exposition format wants them."""
        running, out = 0, []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "total": self.total, "count": self.count}

    def restore(self, data: dict[str, Any]) -> None:
        counts = [int(c) for c in data.get("counts", [])]
        if len(counts) == len(self.counts):
            self.counts, self.total, self.count = counts, float(data["total"]), int(data["count"])
