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
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from monitor import __version__
from monitor.config import Config
from monitor.export.labels import LabelCaps, LabelPairs
from monitor.scan.lines import FramerStats
from monitor.scan.matcher import OTHER, Event, Tally

# The sidecar's own metrics (name without prefix -> help); counters end in _total when exported.
SELF_COUNTERS = {
    "lines": "Complete lines read from the stream's files.",
    "bytes": "Bytes read from the stream's files.",
    "oversized_lines": "Lines longer than scan.max_line_bytes (only their head was matched).",
    "config_reloads": "Config reloads on SIGHUP, by result.",
    "checkpoint_failures": "Checkpoint writes that failed (disk full, permissions).",
    "checkpoint_set_aside": "Checkpoints set aside at start, by reason: corrupt (not a readable database) or invalid.",
    "checkpoint_recreated": "Checkpoint files found deleted or replaced while running, and written anew whole.",
    "label_overflows": "Events counted as label value 'other' because a label or series cap was reached.",
    "audit_rounds": "Self-audit rounds per stream, by result: clean, drifted (some minute's counts differ), failed.",
    "audit_minutes": "Minutes of the log's own time whose counts the self-audit compared with the files on disk.",
    "audit_files": "Files (contents) the self-audit read again from their first byte.",
    "audit_bytes": "Bytes the self-audit read again.",
    "audit_drifted_lines": "Lines counted live more (over) or fewer (under) than the files on disk hold, per rule.",
}
STREAM_COUNTERS = ("lines", "bytes", "oversized_lines")


class LogMetrics:
    """Event counters for the configured rules plus the sidecar's own counters.

    registry = CollectorRegistry()
    metrics = LogMetrics(config, registry=registry)
    metrics.observe(scanner.feed(chunk))
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
        self._caps = LabelCaps()
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
                caps = self._caps.declare(rule)
                if rule.labels:  # only labelled rules can overflow; their series exist at 0 from start-up
                    self._self_counters.setdefault(("label_overflows", (("rule", rule.name),)), 0.0)
                listed = [[OTHER] if n in caps else [*rule.labels[n], OTHER] for n in names]
                for values in itertools.product(*listed):
                    self._events.setdefault((rule.name, tuple(zip(names, values, strict=True))), 0.0)

    # -- updates ---------------------------------------------------------------

    def observe(self, tally: Tally) -> None:
        """Count what a scan found: its plain counts and its events."""
        if tally.counts:
            with self._lock:
                for rule, lines in tally.counts.items():
                    key = (rule, ())
                    self._events[key] = self._events.get(key, 0.0) + lines
                    when = tally.times.get(rule, 0.0)
                    if when > self._last_time.get(rule, 0.0):
                        self._last_time[rule] = when
        if tally.events:
            self.observe_events(tally.events)

    def observe_events(self, events: Iterable[Event]) -> None:
        """Count events; a rule unknown to this config (after a reload) is counted too."""
        with self._lock:
            for event in events:
                self._observe(event, 1)

    def observe_repeated(self, event: Event, times: int) -> None:
        """Count `times` events with the labels of `event`, as if each had been observed in turn
        (a value admitted by the first is admitted for all; an overflow counts each)."""
        with self._lock:
            self._observe(event, times)

    def _observe(self, event: Event, times: int) -> None:
        labels = ()
        if event.labels:
            labels, overflowed = self._caps.admit(event.rule, event.labels)
            if overflowed:  # each value not admitted, of each event, is one overflow
                self._add(("label_overflows", (("rule", event.rule),)), overflowed * times)
        key = (event.rule, labels)
        if key not in self._events and len(self._events) >= self._max_series:
            key = (event.rule, tuple((name, OTHER) for name, _ in labels))
            self._add(("label_overflows", (("rule", event.rule),)), times)
        self._events[key] = self._events.get(key, 0.0) + times
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

    def declare_stream(self, stream: str) -> None:
        """Give a stream's counters their series at 0 before its first line."""
        with self._lock:
            for name in STREAM_COUNTERS:
                self._self_counters.setdefault((name, (("stream", stream),)), 0.0)

    def count(self, name: str, labels: LabelPairs = (), amount: float = 1.0) -> None:
        """Add to one of the sidecar's own counters (see SELF_COUNTERS)."""
        with self._lock:
            self._add((name, labels), amount)

    def _add(self, key: tuple[str, LabelPairs], amount: float) -> None:
        self._self_counters[key] = self._self_counters.get(key, 0.0) + amount

    # -- reads -----------------------------------------------------------------

    def event_count(self, rule: str, labels: LabelPairs = ()) -> float:
        return self._events.get((rule, labels), 0.0)

    def totals_by_rule(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for (rule, _labels), value in self._events.items():
            totals[rule] = totals.get(rule, 0.0) + value
        return totals

    def last_event_time(self, rule: str) -> float:
        return self._last_time.get(rule, 0.0)

    def counter_rows(self) -> dict[tuple[Any, ...], float]:
        """Checkpoint rows: restoring them gives back exactly these values."""
        with self._lock:
            rows: dict[tuple[Any, ...], float] = {("events", r, labels): v for (r, labels), v in self._events.items()}
            rows.update({("last_time", rule): value for rule, value in self._last_time.items()})
            rows.update({("self", name, labels): v for (name, labels), v in self._self_counters.items()})
            return rows

    def restore_counters(self, rows: dict[tuple[Any, ...], float]) -> None:
        with self._lock:
            for key, value in rows.items():
                if key[0] == "events" and len(key) == 3:
                    rule, pairs = str(key[1]), _pairs(key[2])
                    self._events[(rule, pairs)] = float(value)
                    self._caps.restore(rule, pairs)  # values admitted before the restart stay admitted
                elif key[0] == "last_time" and len(key) == 2:
                    self._last_time[str(key[1])] = float(value)
                elif key[0] == "self" and len(key) == 3:
                    self._self_counters[(str(key[1]), _pairs(key[2]))] = float(value)

    # -- exposition --------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        yield _build_info(self._self_prefix)
        with self._lock:
            yield from self._event_families()
            yield from self._self_families()

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

    def _self_families(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for (name, labels), value in sorted(self._self_counters.items()):
            family = families.get(name)
            if family is None:
                help_text = SELF_COUNTERS.get(name, name)
                family = families[name] = CounterMetricFamily(f"{self._self_prefix}_{name}", help_text, labels=None)
            names, values = [k for k, _ in labels], [v for _, v in labels]
            family.samples.append(_sample(f"{self._self_prefix}_{name}_total", names, values, value))
        yield from families.values()


def _build_info(prefix: str) -> Metric:
    family = GaugeMetricFamily(
        f"{prefix}_build_info",
        "Always 1; the label says which version of the sidecar runs.",
        labels=["version"],
    )
    family.add_metric([__version__], 1)
    return family


def _pairs(labels: Any) -> LabelPairs:
    return tuple((str(k), str(v)) for k, v in labels)


def _sample(name: str, label_names: list[str], label_values: list[str], value: float) -> Sample:
    return Sample(name, dict(zip(label_names, label_values, strict=False)), value, None, None)
