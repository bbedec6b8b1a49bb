"""Metrics: the counters and gauges the sidecar exports, and nothing else.

`LogMetrics` owns the values (plain dicts, so they can be checkpointed and
restored exactly) and is registered as a prometheus-client collector that
builds the metric families at scrape time. Names follow one scheme:

- `<prefix>_log_events_total{rule,severity[,<label>...]}`: events per rule;
  every rule's series exists at 0 from start-up.
- `<prefix>_log_event_last_timestamp_seconds{rule}`: time of the newest event
  (the line's own timestamp), 0 while the rule has not matched.
- `<self_prefix>_...{stream}`: the sidecar's own counters and gauges.

Metrics knows names and labels; it does not know files or MongoDB. Other
stages hand it plain values (`Event`s, `FramerStats`, gauge readings).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample

from monitor.config import Config
from monitor.histogram import Histogram
from monitor.lines import FramerStats
from monitor.scan import OTHER, Event

if TYPE_CHECKING:
    from monitor.mongo import MongoStats
    from monitor.reconcile import ReconcileStats

LabelPairs = tuple[tuple[str, str], ...]

# The sidecar's own metrics (name without prefix -> help); counters end in _total when exported.
SELF_COUNTERS = {
    "lines": "Complete lines read from the stream's files.",
    "bytes": "Bytes read from the stream's files.",
    "oversized_lines": "Lines longer than scan.max_line_bytes (only their head was matched).",
    "rotations": "Times a followed file was renamed away from, or removed from, the path it was first followed at.",
    "truncations": "Times a followed file was truncated (copytruncate, '> file').",
    "read_errors": "Failures to open, stat or read a file of the stream.",
    "lost_files": "Checkpointed files not found again at start-up (compressed or deleted while the sidecar was down).",
    "config_reloads": "Config reloads on SIGHUP, by result.",
    "checkpoint_failures": "Checkpoint writes that failed (disk full, permissions).",
    "label_overflows": "Events counted as label value 'other' because a label or series cap was reached.",
}
SELF_GAUGES = {
    "files_open": "Files of the stream currently followed.",
    "bytes_behind": "Bytes written to the stream's files but not read yet.",
    "skipped_files": "Files matching the stream's paths beyond follow.max_files_per_stream, not followed.",
    "last_read_timestamp_seconds": "When data was last read from the stream.",
}
STREAM_COUNTERS = ("lines", "bytes", "oversized_lines")
FOLLOW_COUNTERS = ("rotations", "truncations", "read_errors", "lost_files")
FOLLOW_GAUGES = {
    "files_open": "files_open",
    "bytes_behind": "bytes_behind",
    "skipped_files": "skipped_files",
    "last_read_timestamp_seconds": "last_read_time",
}


class LogMetrics:
    """Event counters for the configured rules plus the sidecar's own counters.

    registry = CollectorRegistry()
    metrics = LogMetrics(config, registry=registry)
    metrics.observe_events(scanner.feed(chunk))
    registry.get_sample_value("tradingagents_log_events_total", {"rule": "x", "severity": "error"})
    """

    def __init__(self, config: Config, registry: CollectorRegistry | None = None) -> None:
        self._lock = threading.Lock()
        self._prefix = config.metrics.prefix
        self._self_prefix = config.metrics.self_prefix
        self._severity: dict[str, str] = {}
        self._events: dict[tuple[str, LabelPairs], float] = {}
        self._last_time: dict[str, float] = {}
        self._self_counters: dict[tuple[str, LabelPairs], float] = {}
        self._self_gauges: dict[tuple[str, LabelPairs], float] = {}
        self._extra: list[Callable[[], Iterable[Metric]]] = []
        self._caps: dict[str, dict[str, int]] = {}  # rule -> capped label -> max distinct values
        self._admitted: dict[tuple[str, str], set[str]] = {}
        self._max_series = config.metrics.max_event_series
        self.set_rules(config)
        if registry is not None:
            registry.register(self)

    def set_rules(self, config: Config) -> None:
        """(Re)declare the rules: new ones get their series at 0; counts of old ones are kept."""
        with self._lock:
            self._max_series = config.metrics.max_event_series
            for rule in config.rules:
                self._severity[rule.name] = rule.severity.value
                self._last_time.setdefault(rule.name, 0.0)
                names = list(rule.labels)
                caps = {n: v for n, v in rule.labels.items() if isinstance(v, int)}
                if caps:
                    self._caps[rule.name] = caps
                    for name in caps:
                        self._admitted.setdefault((rule.name, name), set())
                if rule.labels:  # only labelled rules can overflow; their series exist at 0 from start-up
                    self._self_counters.setdefault(("label_overflows", (("rule", rule.name),)), 0.0)
                listed = [[OTHER] if n in caps else [*rule.labels[n], OTHER] for n in names]
                for values in itertools.product(*listed):
                    self._events.setdefault((rule.name, tuple(zip(names, values, strict=True))), 0.0)

    # -- updates ---------------------------------------------------------------

    def observe_events(self, events: Iterable[Event]) -> None:
        """Count events; a rule unknown to this config (after a reload) is counted too."""
        with self._lock:
            for event in events:
                labels = self._bounded(event.rule, event.labels) if event.labels else ()
                key = (event.rule, labels)
                if key not in self._events and len(self._events) >= self._max_series:
                    key = (event.rule, tuple((name, OTHER) for name, _ in labels))
                    self._add(("label_overflows", (("rule", event.rule),)), 1)
                self._events[key] = self._events.get(key, 0.0) + 1
                self._severity.setdefault(event.rule, event.severity)
                if event.time > self._last_time.get(event.rule, 0.0):
                    self._last_time[event.rule] = event.time

    def observe_stream(self, stream: str, stats: FramerStats) -> None:
        """Add everything a framer read (a one-shot scan of one file)."""
        self.observe_read(stream, stats.lines, stats.bytes, stats.oversized_lines)

    def observe_read(self, stream: str, lines: int, nbytes: int, oversized: int) -> None:
        """Add lines, bytes and oversized lines just read from a stream."""
        labels = (("stream", stream),)
        with self._lock:
            for name, delta in (("lines", lines), ("bytes", nbytes), ("oversized_lines", oversized)):
                if delta:
                    self._add((name, labels), delta)

    def _bounded(self, rule: str, labels: LabelPairs) -> LabelPairs:
        """Admit a capped label's value while the rule has room for it; else count it as "other"."""
        caps = self._caps.get(rule)
        if not caps:
            return labels
        bounded = []
        for name, value in labels:
            cap = caps.get(name)
            if cap is not None and value != OTHER:
                admitted = self._admitted[(rule, name)]
                if value not in admitted:
                    if len(admitted) >= cap:
                        self._add(("label_overflows", (("rule", rule),)), 1)
                        value = OTHER
                    else:
                        admitted.add(value)
            bounded.append((name, value))
        return tuple(bounded)

    def declare_stream(self, stream: str, followed: bool = True) -> None:
        """Give a stream's counters their series at 0 before its first line."""
        with self._lock:
            for name in (*STREAM_COUNTERS, *(FOLLOW_COUNTERS if followed else ())):
                self._self_counters.setdefault((name, (("stream", stream),)), 0.0)

    def observe_follow(self, stats: dict[str, Any]) -> None:
        """The follower's per-stream counters (absolute values) and gauges."""
        with self._lock:
            for stream, values in stats.items():
                labels = (("stream", stream),)
                for name in FOLLOW_COUNTERS:
                    self._self_counters[(name, labels)] = float(getattr(values, name))
                for name, attribute in FOLLOW_GAUGES.items():
                    self._self_gauges[(name, labels)] = float(getattr(values, attribute))

    def count(self, name: str, labels: LabelPairs = (), amount: float = 1.0) -> None:
        """Add to one of the sidecar's own counters (see SELF_COUNTERS)."""
        with self._lock:
            self._add((name, labels), amount)

    def _add(self, key: tuple[str, LabelPairs], amount: float) -> None:
        self._self_counters[key] = self._self_counters.get(key, 0.0) + amount

    def add_collector(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Another stage's scrape-time families (reconcile's, the follower's) served with ours."""
        self._extra.append(collect)

    # -- reads -----------------------------------------------------------------

    def event_count(self, rule: str, labels: LabelPairs = ()) -> float:
        return self._events.get((rule, labels), 0.0)

    def totals_by_rule(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for (rule, _labels), value in self._events.items():
            totals[rule] = totals.get(rule, 0.0) + value
        return totals

    def snapshot(self) -> dict[str, Any]:
        """Plain data for the checkpoint: restoring it gives back exactly these values."""
        with self._lock:
            return {
                "events": [[rule, [list(p) for p in labels], value] for (rule, labels), value in self._events.items()],
                "last_time": dict(self._last_time),
                "self_counters": [
                    [name, [list(p) for p in labels], value] for (name, labels), value in self._self_counters.items()
                ],
            }

    def restore(self, snapshot: dict[str, Any]) -> None:
        with self._lock:
            for rule, labels, value in snapshot.get("events", []):
                pairs = tuple((str(k), str(v)) for k, v in labels)
                self._events[(rule, pairs)] = float(value)
                for name, label_value in pairs:  # values admitted before the restart stay admitted
                    if (rule, name) in self._admitted and label_value != OTHER:
                        self._admitted[(rule, name)].add(label_value)
            for rule, value in snapshot.get("last_time", {}).items():
                self._last_time[rule] = float(value)
            for name, labels, value in snapshot.get("self_counters", []):
                self._self_counters[(name, tuple((str(k), str(v)) for k, v in labels))] = float(value)

    # -- exposition --------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._event_families()
            yield from self._stream_families()
        for collect in self._extra:
            yield from collect()

    def _event_families(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            f"{self._prefix}_log_events",
            "Log lines matched, per rule (a line matching two rules counts for each).",
            labels=None,
        )
        for (rule, labels), value in sorted(self._events.items()):
            names = ["rule", "severity", *(n for n, _ in labels)]
            values = [rule, self._severity.get(rule, ""), *(v for _, v in labels)]
            events.samples.append(_sample(f"{self._prefix}_log_events_total", names, values, value))
        yield events
        last = GaugeMetricFamily(
            f"{self._prefix}_log_event_last_timestamp_seconds",
            "Timestamp of the newest line matched by the rule (the line's own time); 0 if none yet.",
            labels=["rule"],
        )
        for rule, value in sorted(self._last_time.items()):
            last.add_metric([rule], value)
        yield last

    def _stream_families(self) -> Iterator[Metric]:
        for values, kind, helps in (
            (self._self_counters, CounterMetricFamily, SELF_COUNTERS),
            (self._self_gauges, GaugeMetricFamily, SELF_GAUGES),
        ):
            families: dict[str, Metric] = {}
            for (name, labels), value in sorted(values.items()):
                family = families.get(name)
                if family is None:
                    family = families[name] = kind(f"{self._self_prefix}_{name}", helps.get(name, name), labels=None)
                suffix = "_total" if kind is CounterMetricFamily else ""
                family.samples.append(
                    _sample(
                        f"{self._self_prefix}_{name}{suffix}", [k for k, _ in labels], [v for _, v in labels], value
                    )
                )
            yield from families.values()


def _sample(name: str, label_names: list[str], label_values: list[str], value: float) -> Sample:
    return Sample(name, dict(zip(label_names, label_values, strict=False)), value, None, None)


def reconcile_families(prefix: str, stats: ReconcileStats, mongo: MongoStats) -> Iterator[Metric]:
    """The MongoDB check's metrics, built at scrape time from plain values."""
    checks = CounterMetricFamily(
        f"{prefix}_analysis_checks",
        "Claims from the log checked against MongoDB, by claim and outcome.",
        labels=["claim", "outcome"],
    )
    for (claim, outcome), value in sorted(stats.checks.items()):
        checks.add_metric([claim, outcome], value)
    yield checks
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
