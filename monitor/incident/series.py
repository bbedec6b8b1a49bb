"""Per-minute counts of the keyword classes, and the spikes in them, for the HTML incident report.

The scanner already puts every matched line in the minute of its own time (`monitor.scan.minutes`,
`Scanner(minutes=True)`): this module folds those (rule, minute) counts into what the report draws,
the lines of each charted rule per minute, and finds where the alert rules would have fired.

A spike is marked where `prometheus/alerts.yml` would fire: its expression (`increase(...[10m]) >= 3`,
the lines of the last `window` minutes at or above the threshold) held for its `for:` duration. The
table below restates those alerts; `tests/incident/test_series.py` reads alerts.yml and fails when
they part ways.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from monitor.scan.minutes import UNTIMED

# The keyword classes drawn, by the rule's severity; the event-loop regression (the original bug) is a
# class of its own, as it is an alert of its own (TradingAgentsEventLoopRegression names the rule).
REGRESSION_RULE = "event_loop_regression"
CLASSES = ("success", "warning", "error", "regression")
CLASS_TITLES = {
    "success": "status written (success)",
    "warning": "warnings (acceptable)",
    "error": "errors",
    "regression": "event-loop regression",
}


@dataclass(frozen=True)
class SpikeRule:
    """One alert of alerts.yml that counts lines: which rules, over what window, from what count."""

    alert: str
    title: str
    rules: tuple[str, ...]  # empty: every rule of `severity`
    severity: str
    window_minutes: int
    threshold: int
    for_minutes: int


SPIKE_RULES = (
    SpikeRule("TradingAgentsMongoTimeoutSpike", "timeout spike", ("mongodb_operation_timeout",), "", 10, 3, 2),
    SpikeRule(
        "TradingAgentsMongoWriteFailureSpike",
        "write failure spike",
        ("mongodb_operation_failed", "status_update_failed"),
        "",
        10,
        3,
        2,
    ),
    SpikeRule("TradingAgentsErrorSpike", "error spike", (), "error", 10, 10, 2),
)


@dataclass(frozen=True)
class Spike:
    """Minutes (inclusive) during which `alert` would have been firing."""

    alert: str
    title: str
    first_minute: int
    last_minute: int


@dataclass(frozen=True)
class MinuteSeries:
    """Lines per minute of each keyword class: `counts[class][i]` is minute `first_minute + i`."""

    first_minute: int | None  # None: no timed line of a charted rule
    counts: dict[str, list[int]]
    untimed: dict[str, int]  # lines whose minute is unknown (no timestamped line before them)
    spikes: list[Spike]

    def total(self) -> int:
        """Every charted line, timed or not: what the series and `untimed` add up to."""
        return sum(sum(values) for values in self.counts.values()) + sum(self.untimed.values())


def keyword_class(rule: str, severity: str) -> str | None:
    """The class a rule's lines are drawn in, or None for lifecycle lines (info) not charted.

    >>> keyword_class("event_loop_regression", "error"), keyword_class("analysis_progress", "info")
    ('regression', None)
    """
    if rule == REGRESSION_RULE:
        return "regression"
    return severity if severity in ("success", "warning", "error") else None


class MinuteCounts:
    """(rule, minute) -> lines, for the charted rules only: bounded by rules x minutes of log."""

    def __init__(self, severities: Mapping[str, str]) -> None:
        self._severities = dict(severities)
        self.by_rule: dict[tuple[str, int], int] = {}

    def add(self, minutes: Mapping[tuple[str, int], int]) -> None:
        """Add a tally's `minutes` (from a scanner made with `minutes=True`)."""
        for (rule, minute), lines in minutes.items():
            if keyword_class(rule, self._severities.get(rule, "")) is not None:
                self.by_rule[(rule, minute)] = self.by_rule.get((rule, minute), 0) + lines

    def series(self) -> MinuteSeries:
        return minute_series(self.by_rule, self._severities)


def minute_series(by_rule: Mapping[tuple[str, int], int], severities: Mapping[str, str]) -> MinuteSeries:
    """The classes' per-minute series and the spikes, from (rule, minute) -> lines."""
    timed = [minute for (_, minute) in by_rule if minute != UNTIMED]
    untimed = dict.fromkeys(CLASSES, 0)
    if not timed:
        for (rule, _), lines in by_rule.items():
            untimed[keyword_class(rule, severities.get(rule, "")) or "error"] += lines
        return MinuteSeries(None, {c: [] for c in CLASSES}, untimed, [])
    first, last = min(timed), max(timed)
    counts = {c: [0] * (last - first + 1) for c in CLASSES}
    for (rule, minute), lines in by_rule.items():
        name = keyword_class(rule, severities.get(rule, ""))
        if name is None:
            continue
        if minute == UNTIMED:
            untimed[name] += lines
        else:
            counts[name][minute - first] += lines
    spikes = [s for rule in SPIKE_RULES for s in _spikes(rule, by_rule, severities, first, last)]
    return MinuteSeries(first, counts, untimed, spikes)


def _spikes(
    rule: SpikeRule, by_rule: Mapping[tuple[str, int], int], severities: Mapping[str, str], first: int, last: int
) -> Iterable[Spike]:
    """Runs of minutes where `rule` fires: the window's count at or above the threshold for
    `for_minutes` consecutive evaluations before (one a minute, as the rules are evaluated)."""
    lines = [0] * (last - first + 1)
    for (name, minute), count in by_rule.items():
        selected = name in rule.rules if rule.rules else severities.get(name) == rule.severity
        if selected and minute != UNTIMED:
            lines[minute - first] += count
    held, run_start, in_window = 0, None, 0
    for index, count in enumerate(lines):
        in_window += count - (lines[index - rule.window_minutes] if index >= rule.window_minutes else 0)
        held = held + 1 if in_window >= rule.threshold else 0
        firing = held > rule.for_minutes
        if firing and run_start is None:
            run_start = index
        elif not firing and run_start is not None:
            yield Spike(rule.alert, rule.title, first + run_start, first + index - 1)
            run_start = None
    if run_start is not None:
        yield Spike(rule.alert, rule.title, first + run_start, last)
