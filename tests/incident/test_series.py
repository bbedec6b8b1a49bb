"""Per-minute series of the keyword classes, and spikes marked as the alert rules define them."""

from __future__ import annotations

import yaml

from monitor.incident.series import SPIKE_RULES, MinuteCounts, minute_series
from monitor.scan.minutes import UNTIMED
from tests.conftest import REPO

SEVERITIES = {
    "mongodb_operation_timeout": "error",
    "mongodb_operation_failed": "error",
    "event_loop_regression": "error",
    "mongodb_update_returned_none": "warning",
    "analysis_completed_status_persisted": "success",
    "analysis_progress": "info",
}


def test_each_spike_rule_is_the_alert_of_the_same_name():
    """The report marks spikes where prometheus/alerts.yml fires: same rules, window, threshold, `for:`."""
    alerts = {
        rule["alert"]: rule
        for group in yaml.safe_load((REPO / "prometheus/alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    for spike in SPIKE_RULES:
        alert = alerts[spike.alert]
        expr = " ".join(alert["expr"].split())
        if not spike.rules:
            selector = f'severity="{spike.severity}"'
        elif len(spike.rules) == 1:
            selector = f'rule="{spike.rules[0]}"'
        else:
            selector = f'rule=~"{"|".join(spike.rules)}"'
        assert f"{{{selector}}}[{spike.window_minutes}m]" in expr, (spike.alert, expr)
        assert expr.endswith(f">= {spike.threshold}"), (spike.alert, expr)
        assert alert["for"] == f"{spike.for_minutes}m"


def test_series_hold_every_charted_line_and_info_lines_are_left_out():
    counts = MinuteCounts(SEVERITIES)
    counts.add({("mongodb_operation_timeout", 100): 2, ("analysis_progress", 100): 50})
    counts.add({("mongodb_operation_timeout", 103): 1, ("event_loop_regression", 101): 1})
    counts.add({("analysis_completed_status_persisted", UNTIMED): 4})
    series = counts.series()
    assert series.first_minute == 100
    assert series.counts["error"] == [2, 0, 0, 1]
    assert series.counts["regression"] == [0, 1, 0, 0]
    assert series.counts["success"] == [0, 0, 0, 0]
    assert series.untimed == {"success": 4, "warning": 0, "error": 0, "regression": 0}
    assert series.total() == 8


def test_a_spike_fires_after_its_for_duration_and_ends_with_its_window():
    # 3 timeouts at minute 10: the 10-minute window holds 3 from minute 10 to 19; `for: 2m` -> firing 12..19.
    by_rule = {("mongodb_operation_timeout", 10): 3, ("mongodb_update_returned_none", 40): 1}
    (spike,) = minute_series(by_rule, SEVERITIES).spikes
    assert (spike.alert, spike.first_minute, spike.last_minute) == ("TradingAgentsMongoTimeoutSpike", 12, 19)


def test_two_timeouts_or_a_short_burst_mark_nothing():
    assert minute_series({("mongodb_operation_timeout", 10): 2, ("x", 30): 0}, SEVERITIES).spikes == []
    # three timeouts, but the log ends before the condition held for `for: 2m`
    assert minute_series({("mongodb_operation_timeout", 10): 3, ("x", 11): 0}, SEVERITIES).spikes == []


def test_no_timed_line_gives_an_empty_series():
    series = minute_series({("mongodb_operation_timeout", UNTIMED): 2}, SEVERITIES)
    assert (series.first_minute, series.spikes, series.untimed["error"]) == (None, [], 2)
