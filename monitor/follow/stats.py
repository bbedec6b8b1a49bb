"""The follower's own counters and gauges per stream, and the collector that exports them.

The follower owns these values; it registers `FollowCollector` with the
registry it is given (client_python's pattern: values computed at scrape
time), and hands its counters to the checkpoint as plain rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

COUNTERS = {
    "rotations": "Times a followed file was renamed away from, or removed from, the path it was first followed at.",
    "truncations": "Times a followed file was truncated (copytruncate, '> file').",
    "read_errors": "Failures to open, stat or read a file of the stream.",
    "lost_files": "Checkpointed files not found again at start-up (compressed or deleted while the sidecar was down).",
}
GAUGES = {
    "files_open": "Files of the stream currently followed.",
    "behind_bytes": "Bytes written to the stream's files but not read yet.",
    "skipped_files": "Files matching the stream's paths beyond follow.max_files_per_stream, not followed.",
    "descriptor_skipped_files": "Files matching the stream's paths not followed: too few file descriptors left "
    "(RLIMIT_NOFILE, less those kept for the endpoint and the checkpoint).",
    "last_read_timestamp_seconds": "When data was last read from the stream.",
}


@dataclass
class StreamStats:
    """The follower's counters and gauges for one stream."""

    rotations: int = 0
    truncations: int = 0
    read_errors: int = 0
    lost_files: int = 0
    skipped_files: int = 0
    descriptor_skipped_files: int = 0
    files_open: int = 0
    behind_bytes: int = 0
    last_read_timestamp_seconds: float = 0.0


def counter_rows(stats: dict[str, StreamStats]) -> dict[tuple[str, ...], float]:
    """The counters as checkpoint rows: (stream, name) -> value."""
    return {(stream, name): float(getattr(values, name)) for stream, values in stats.items() for name in COUNTERS}


def restore_counters(stats: dict[str, StreamStats], rows: dict[tuple[str, ...], float]) -> None:
    for key, value in rows.items():
        if len(key) == 2 and key[0] in stats and key[1] in COUNTERS:
            setattr(stats[key[0]], key[1], int(value))


class FollowCollector:
    """Exports `<prefix>_<counter>_total{stream}` and `<prefix>_<gauge>{stream}` at scrape time."""

    def __init__(self, prefix: str, stats: Callable[[], dict[str, StreamStats]]) -> None:
        self._prefix = prefix
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        for names, kind in ((COUNTERS, CounterMetricFamily), (GAUGES, GaugeMetricFamily)):
            for name, help_text in names.items():
                family = kind(f"{self._prefix}_{name}", help_text, labels=["stream"])
                for stream, values in sorted(stats.items()):
                    family.add_metric([stream], float(getattr(values, name)))
                yield family
