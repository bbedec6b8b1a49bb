"""A histogram as plain, checkpointable data (prometheus-client's cannot be restored)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

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

    def rows(self) -> dict[tuple[str, ...], float]:
        """Checkpoint rows: ("bucket", i), ("total",), ("count",)."""
        rows: dict[tuple[str, ...], float] = {("bucket", str(i)): c for i, c in enumerate(self.counts)}
        rows[("total",)] = self.total
        rows[("count",)] = self.count
        return rows

    def restore_rows(self, rows: dict[tuple[str, ...], float]) -> None:
        counts = [int(rows.get(("bucket", str(i)), 0)) for i in range(len(self.counts))]
        if ("count",) in rows and sum(counts) == int(rows[("count",)]):  # only a histogram of these buckets
            self.counts, self.total, self.count = counts, float(rows.get(("total",), 0.0)), int(rows[("count",)])

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total, self.count)
