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
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from monitor.config import Config
from monitor.lines import FramerStats
from monitor.scan import OTHER, Event

LabelPairs = tuple[tuple[str, str], ...]

# Per-stream counters of the follower/scanner: name suffix -> help text.
STREAM_COUNTERS = {
    "lines": "Complete lines read from the stream's files.",
    "bytes": "Bytes read from the stream's files.",
    "oversized_lines": "Lines longer than scan.max_line_bytes (only their head was matched).",
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
        self._severity = {rule.name: rule.severity.value for rule in config.rules}
        self._events: dict[tuple[str, LabelPairs], float] = {}
        self._last_time: dict[str, float] = {rule.name: 0.0 for rule in config.rules}
        self._stream_counters: dict[tuple[str, str], float] = {}
        self._stream_gauges: dict[tuple[str, str], tuple[str, float]] = {}
        self._extra: list[Callable[[], Iterable[Metric]]] = []
        for rule in config.rules:
            names = list(rule.labels)
            for values in itertools.product(*[[*rule.labels[n], OTHER] for n in names]):
                self._events[(rule.name, tuple(zip(names, values, strict=False)))] = 0.0
        if registry is not None:
            registry.register(self)

    # -- updates ---------------------------------------------------------------

    def observe_events(self, events: Iterable[Event]) -> None:
        """Count events; a rule unknown to this config (after a reload) is counted too."""
        with self._lock:
            for event in events:
                key = (event.rule, event.labels)
                self._events[key] = self._events.get(key, 0.0) + 1
                self._severity.setdefault(event.rule, event.severity)
                if event.time > self._last_time.get(event.rule, 0.0):
                    self._last_time[event.rule] = event.time

    def observe_stream(self, stream: str, stats: FramerStats, previous: FramerStats | None = None) -> None:
        """Add what a stream's framer read since `previous` (a copy of its stats back then)."""
        with self._lock:
            for name in STREAM_COUNTERS:
                delta = getattr(stats, name) - (getattr(previous, name) if previous else 0)
                key = (name, stream)
                self._stream_counters[key] = self._stream_counters.get(key, 0.0) + delta

    def add_stream_counter(self, name: str, stream: str, amount: float = 1.0) -> None:
        with self._lock:
            key = (name, stream)
            self._stream_counters[key] = self._stream_counters.get(key, 0.0) + amount

    def set_stream_gauge(self, name: str, stream: str, value: float, help_text: str = "") -> None:
        with self._lock:
            self._stream_gauges[(name, stream)] = (help_text, value)

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
                "stream_counters": [[name, stream, value] for (name, stream), value in self._stream_counters.items()],
            }

    def restore(self, snapshot: dict[str, Any]) -> None:
        with self._lock:
            for rule, labels, value in snapshot.get("events", []):
                self._events[(rule, tuple((str(k), str(v)) for k, v in labels))] = float(value)
            for rule, value in snapshot.get("last_time", {}).items():
                self._last_time[rule] = float(value)
            for name, stream, value in snapshot.get("stream_counters", []):
                self._stream_counters[(name, stream)] = float(value)

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
        by_name: dict[str, list[tuple[str, float]]] = {}
        for (name, stream), value in sorted(self._stream_counters.items()):
            by_name.setdefault(name, []).append((stream, value))
        for name, samples in by_name.items():
            family = CounterMetricFamily(
                f"{self._self_prefix}_{name}", STREAM_COUNTERS.get(name, name.replace("_", " ")), labels=["stream"]
            )
            for stream, value in samples:
                family.add_metric([stream], value)
            yield family
        gauges: dict[str, GaugeMetricFamily] = {}
        for (name, stream), (help_text, value) in sorted(self._stream_gauges.items()):
            family = gauges.get(name)
            if family is None:
                family = gauges[name] = GaugeMetricFamily(f"{self._self_prefix}_{name}", help_text, labels=["stream"])
            family.add_metric([stream], value)
        yield from gauges.values()


def _sample(name: str, label_names: list[str], label_values: list[str], value: float) -> Sample:
    return Sample(name, dict(zip(label_names, label_values, strict=False)), value, None, None)
