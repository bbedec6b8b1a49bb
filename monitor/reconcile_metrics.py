"""The MongoDB check's metrics: a collector the reconciler registers, built at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from monitor.histogram import Histogram
from monitor.mongo import MongoStats


class ReconcileCollector:
    """`<prefix>_analysis_checks_total{claim,outcome}`, pending, stuck, by status, and the Mongo client's own."""

    def __init__(self, prefix: str, stats: Callable[[], object], mongo: Callable[[], MongoStats]) -> None:
        self._prefix = prefix
        self._stats = stats
        self._mongo = mongo

    def collect(self) -> Iterator[Metric]:
        return reconcile_families(self._prefix, self._stats(), self._mongo())


def reconcile_families(prefix: str, stats, mongo: MongoStats) -> Iterator[Metric]:
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
    by_status = GaugeMetricFamily(
        f"{prefix}_analyses_by_status", "Analyses created within the sweep window, by status.", labels=["status"]
    )
    for status, value in sorted(stats.by_status.items()):
        by_status.add_metric([status], value)
    yield by_status
    yield GaugeMetricFamily(f"{prefix}_mongo_up", "1 if the last MongoDB operation got an answer.", value=int(mongo.up))
    errors = CounterMetricFamily(f"{prefix}_mongo_errors", "MongoDB operations that failed.", labels=["operation"])
    for operation, value in sorted(mongo.errors.items()):
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
