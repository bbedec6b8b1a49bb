"""Metrics: golden exposition for (config, sample log), zero series, exact snapshot/restore."""

from __future__ import annotations

from collections.abc import Collection

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from monitor.config import load_config
from monitor.export.metrics import LogMetrics
from monitor.run.checkpoint import Checkpoint
from monitor.run.snapshot import Snapshot
from monitor.scan.matcher import EVERY_RULE, Scanner, compile_matcher
from tests.conftest import GOLDEN, REPO

ENV = {"TRADINGAGENTS_LOG_TZ": "Asia/Shanghai"}


def scanned_metrics(
    log: bytes, chunk: int = 4096, event_rules: Collection[str] | None = EVERY_RULE
) -> tuple[CollectorRegistry, LogMetrics]:
    loaded = load_config(REPO / "config.yaml", environ=ENV)
    matcher = compile_matcher(loaded.config.rules, loaded.config.timestamp, loaded.where, event_rules=event_rules)
    registry = CollectorRegistry()
    metrics = LogMetrics(loaded.config, registry)
    metrics.declare_stream("scan")
    scanner = Scanner(matcher)
    for i in range(0, len(log), chunk):
        metrics.observe(scanner.feed(log[i : i + chunk]))
    metrics.observe(scanner.flush())
    metrics.observe_stream("scan", scanner.framer.stats)
    return registry, metrics


@pytest.mark.parametrize("event_rules", [EVERY_RULE, (), ("analysis_finished", "analysis_execution_failed")])
def test_golden_exposition_of_the_sample_log(event_rules):
    # Counted from Hyperscan's report, confirmed by RE2, or read as events: the same exposition.
    log = (GOLDEN / "tradingagents.log").read_bytes()
    for chunk in (4096, 61):
        registry, _ = scanned_metrics(log, chunk, event_rules)
        assert generate_latest(registry).decode() == (GOLDEN / "tradingagents.prom").read_text(encoding="utf-8")


def test_every_rule_series_exists_at_zero_before_any_line():
    registry, _ = scanned_metrics(b"")
    loaded = load_config(REPO / "config.yaml", environ=ENV)
    for rule in loaded.config.rules:
        labels = {"rule": rule.name, "severity": rule.severity.value}
        if rule.labels:
            for value in [*rule.labels["success"], "other"]:
                assert registry.get_sample_value("tradingagents_log_events_total", {**labels, "success": value}) == 0
        else:
            assert registry.get_sample_value("tradingagents_log_events_total", labels) == 0
        assert registry.get_sample_value("tradingagents_log_event_last_timestamp_seconds", {"rule": rule.name}) == 0


def test_openmetrics_exposition_has_eof_and_counter_type():
    registry, _ = scanned_metrics((GOLDEN / "tradingagents.log").read_bytes())
    text = generate_openmetrics(registry).decode()
    assert text.endswith("# EOF\n")
    assert "# TYPE tradingagents_log_events counter" in text
    assert 'tradingagents_log_events_total{rule="mongodb_operation_timeout",severity="error"} 1.0' in text


def test_checkpoint_rows_restore_exactly_the_same_exposition(tmp_path):
    registry, metrics = scanned_metrics((GOLDEN / "tradingagents.log").read_bytes())
    loaded = load_config(REPO / "config.yaml", environ=ENV)
    fresh_registry = CollectorRegistry()
    checkpoint = Checkpoint(tmp_path)  # through the real store: what is saved is what comes back
    checkpoint.stage(Snapshot(counters={"metrics": metrics.counter_rows()}))
    assert checkpoint.flush()
    LogMetrics(loaded.config, fresh_registry).restore_counters(checkpoint.load().counters["metrics"])
    checkpoint.close()
    assert generate_latest(fresh_registry) == generate_latest(registry)


def test_stream_deltas_are_added_not_replaced():
    from monitor.scan.lines import FramerStats

    loaded = load_config(REPO / "config.yaml", environ=ENV)
    registry = CollectorRegistry()
    metrics = LogMetrics(loaded.config, registry)
    metrics.observe_stream("app", FramerStats(lines=10, bytes=100))
    metrics.observe_read("app", 5, 80, 0)
    assert registry.get_sample_value("logmonitor_lines_total", {"stream": "app"}) == 15
    assert registry.get_sample_value("logmonitor_bytes_total", {"stream": "app"}) == 180


def test_a_capped_label_admits_its_first_values_then_counts_the_rest_as_other():
    from monitor.config import Config, Rule
    from monitor.scan.matcher import Matcher

    rule = Rule(
        name="symbol",
        severity="info",
        pattern=r"启动真实分析: \S+ - (?P<symbol>\S+)",
        labels={"symbol": 100},
        examples=["启动真实分析: x - AAPL"],
    )
    config = Config(rules=[rule])
    registry = CollectorRegistry()
    metrics = LogMetrics(config, registry)
    matcher = Matcher([rule])
    (template,) = matcher.scan("启动真实分析: x - AAPL\n".encode()).events

    def events():  # a million distinct values, the way a capture of ids would produce them
        for n in range(1_000_000):
            yield template.__class__(template.rule, "info", "", {}, (("symbol", f"S{n}"),), 0.0)

    metrics.observe_events(events())
    text = generate_latest(registry).decode()
    series = [line for line in text.splitlines() if line.startswith("tradingagents_log_events_total{")]
    assert len(series) == 101  # 100 admitted values + "other"
    assert (
        registry.get_sample_value(
            "tradingagents_log_events_total", {"rule": "symbol", "severity": "info", "symbol": "other"}
        )
        == 999_900
    )
    assert (
        registry.get_sample_value(
            "tradingagents_log_events_total", {"rule": "symbol", "severity": "info", "symbol": "S99"}
        )
        == 1
    )
    assert registry.get_sample_value("logmonitor_label_overflows_total", {"rule": "symbol"}) == 999_900
    restored = LogMetrics(config, None)
    restored.restore_counters(metrics.counter_rows())
    restored.observe_events(
        [
            template.__class__("symbol", "info", "", {}, (("symbol", "S5"),), 0.0),
            template.__class__("symbol", "info", "", {}, (("symbol", "NEW"),), 0.0),
        ]
    )
    assert restored.event_count("symbol", (("symbol", "S5"),)) == 2  # still admitted after a restart
    assert restored.event_count("symbol", (("symbol", "other"),)) == 999_901


def test_the_metric_wide_series_cap_is_a_safety_net():
    from monitor.config import Config, MetricsSettings, Rule

    rules = [
        Rule(name=f"r{i}", severity="info", pattern=f"k{i} (?P<v>\\w+)", labels={"v": 1000}, examples=[f"k{i} a"])
        for i in range(3)
    ]
    metrics = LogMetrics(Config(rules=rules, metrics=MetricsSettings(max_event_series=50)), None)
    from monitor.scan.matcher import Event

    metrics.observe_events(Event(f"r{n % 3}", "info", "", {}, (("v", f"x{n}"),), 0.0) for n in range(10_000))
    assert sum(key[0] == "events" for key in metrics.counter_rows()) == 50
    assert sum(metrics.totals_by_rule().values()) == 10_000  # nothing lost, only aggregated
