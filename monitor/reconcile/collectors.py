"""The MongoDB check's metrics: a collector the reconciler registers, built at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from monitor.export.histogram import Histogram
from monitor.reconcile.mongo import MongoStats

# The statuses the server writes (DESIGN.md: pending on insert; completed, failed; cancelled by the API).
KNOWN_STATUSES = ("pending", "completed", "failed", "cancelled")
OTHER_STATUS = "other"
# Operations `monitor run` makes: their error counters exist at 0 from start-up, as alerts expect.
SIDECAR_OPERATIONS = (
    "ping", "find_statuses", "count_stuck", "list_stuck", "counts_by_status", "lease", "lease_release", "lease_note",
)  # fmt: skip


class ReconcileCollector:
    """`<prefix>_analysis_checks_total{claim,outcome}`, pending, stuck, by status, and the Mongo client's own."""

    def __init__(
        self, prefix: str, stats: Callable[[], object], mongo: Callable[[], MongoStats], self_prefix: str = "logmonitor"
    ) -> None:
        self._prefix = prefix
        self._self_prefix = self_prefix
        self._stats = stats
        self._mongo = mongo

    def collect(self) -> Iterator[Metric]:
        yield from reconcile_families(self._prefix, self._stats())
        yield from mongo_families(self._self_prefix, self._mongo())


class SweepLeaderCollector:
    """`<self_prefix>_sweep_leader`: 1 on the sidecar that runs the stuck sweep (the lease holder), 0
    elsewhere; `<self_prefix>_sweep_lease_mismatch`: 1 where the holder runs another lease length."""

    def __init__(self, prefix: str, leader: Callable[[], bool], mismatch: Callable[[], bool] = lambda: False) -> None:
        self._prefix = prefix
        self._leader = leader
        self._mismatch = mismatch

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            f"{self._prefix}_sweep_leader",
            "1 if this sidecar runs the stuck sweep and exports the stuck and by-status counts (it holds "
            "the lease), 0 if not.",
            value=int(self._leader()),
        )
        yield GaugeMetricFamily(
            f"{self._prefix}_sweep_lease_mismatch",
            "1 if the stuck-sweep lease's holder uses another lease length (reconcile.stuck.lease_seconds) "
            "than this sidecar, 0 if not.",
            value=int(self._mismatch()),
        )


def reconcile_families(prefix: str, stats) -> Iterator[Metric]:
    """The MongoDB check's metrics, built at scrape time from plain values."""
    checks = CounterMetricFamily(
        f"{prefix}_analysis_checks",
        "Claims from the log checked against MongoDB, by claim and outcome.",
        labels=["claim", "outcome"],
    )
    for (claim, outcome), value in sorted(stats.checks.items()):
        checks.add_metric([claim, outcome], value)
    yield checks
    not_persisted = CounterMetricFamily(
        f"{prefix}_analyses_not_persisted",
        "Analyses whose final status MongoDB does not hold, however many of their claims say so, by outcome.",
        labels=["outcome"],
    )
    for outcome, value in sorted(stats.not_persisted.items()):
        not_persisted.add_metric([outcome], value)
    yield not_persisted
    yield GaugeMetricFamily(f"{prefix}_analysis_checks_pending", "Claims waiting for their check.", value=stats.pending)
    yield CounterMetricFamily(
        f"{prefix}_analysis_claims_dropped",
        "Claims dropped because reconcile.max_pending was reached.",
        value=stats.dropped,
    )
    yield _histogram(
        f"{prefix}_analysis_confirmation_delay_seconds",
        "From reading a claim to finding it confirmed in MongoDB.",
        [],
        [(stats.delay, [])],
    )
    if stats.stuck is not None:
        yield GaugeMetricFamily(
            f"{prefix}_analyses_stuck",
            "Analyses still pending longer than the maximum analysis time.",
            value=stats.stuck,
        )
    if stats.stuck is not None:  # the sweep's two series come from the same sidecar, or from none
        by_status = GaugeMetricFamily(
            f"{prefix}_analyses_by_status",
            f"Analyses created within the sweep window, by status ({', '.join(KNOWN_STATUSES)} or {OTHER_STATUS}).",
            labels=["status"],
        )
        for status, value in bounded_statuses(stats.by_status).items():
            by_status.add_metric([status], value)
        yield by_status


def bounded_statuses(by_status: dict[str, int]) -> dict[str, int]:
    """Known statuses, each at 0 if none, and every other value the database holds (None, typos,
    statuses of a newer server) summed as "other": a label bounded like every other."""
    bounded = dict.fromkeys(KNOWN_STATUSES, 0) | {OTHER_STATUS: 0}
    for status, value in by_status.items():
        key = status if status in KNOWN_STATUSES else OTHER_STATUS
        bounded[key] += value
    return bounded


def mongo_families(prefix: str, mongo: MongoStats) -> Iterator[Metric]:
    """The sidecar's own MongoDB client: under the sidecar's prefix, like its other own metrics."""
    yield GaugeMetricFamily(f"{prefix}_mongo_up", "1 if the last MongoDB operation got an answer.", value=int(mongo.up))
    errors = CounterMetricFamily(f"{prefix}_mongo_errors", "MongoDB operations that failed.", labels=["operation"])
    for operation, value in sorted((dict.fromkeys(SIDECAR_OPERATIONS, 0) | mongo.errors).items()):
        errors.add_metric([operation], value)
    yield errors
    yield _histogram(
        f"{prefix}_mongo_query_duration_seconds",
        "Duration of MongoDB queries.",
        ["operation"],
        [(histogram, [operation]) for operation, histogram in sorted(mongo.durations.items())],
    )


def _histogram(name: str, help_text: str, labels: list[str], series: list[tuple[Histogram, list[str]]]) -> Metric:
    family = HistogramMetricFamily(name, help_text, labels=labels)
    for histogram, values in series:
        family.add_metric(values, histogram.cumulative(), histogram.total)
    return family
