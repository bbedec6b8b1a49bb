"""prometheus/alerts.yml: valid for promtool, unit-tested, documented, and naming only real metrics.

Also home of what the other monitoring tests share: the metric names the sidecar exports
(KNOWN_METRICS) and a PromQL metric-name extractor, so a typo in a rule, a dashboard query
or an e2e check cannot slip through.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest
import yaml

from monitor.follow.stats import COUNTERS as FOLLOW_COUNTERS
from monitor.follow.stats import GAUGES as FOLLOW_GAUGES
from monitor.metrics import SELF_COUNTERS
from tests.conftest import REPO

PROMETHEUS_DIR = REPO / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts.test.yml"
RUNBOOKS = REPO / "docs" / "alerts.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (`make test` installs Debian's prometheus package)"
)

SEVERITIES = {"critical", "warning", "info"}
JOB = "logmonitor"  # the scrape job name every config and the alert rules agree on


def histogram(name: str) -> set[str]:
    return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}


# What the log says: every rule's series exists at 0 from start-up.
LOG_METRICS = {
    "tradingagents_log_events_total",
    "tradingagents_log_event_last_timestamp_seconds",
}
# What MongoDB says (reconciliation, issue 4). Exported only when the sidecar has a MongoDB
# URL; tests that need their data say so explicitly (see tests/test_prometheus_e2e.py).
RECONCILE_METRICS = {
    "tradingagents_analysis_checks_total",
    "tradingagents_analyses_not_persisted_total",
    "tradingagents_analysis_checks_pending",
    *histogram("tradingagents_analysis_confirmation_delay_seconds"),
    "tradingagents_analyses_stuck",
    "tradingagents_analyses_by_status",
    "tradingagents_mongo_up",
    *histogram("tradingagents_mongo_query_duration_seconds"),
    "tradingagents_mongo_errors_total",
    "tradingagents_analysis_claims_dropped_total",
}
# The sidecar's own.
SIDECAR_METRICS = {
    *(
        f"logmonitor_{name}_total"
        for name in (
            "lines",
            "bytes",
            "oversized_lines",
            "rotations",
            "truncations",
            "read_errors",
            "lost_files",
            "config_reloads",
            "checkpoint_failures",
            "label_overflows",
        )
    ),
    "logmonitor_files_open",
    "logmonitor_bytes_behind",
    "logmonitor_skipped_files",
    "logmonitor_last_read_timestamp_seconds",
}
# Sidecar metrics whose series exist only in some configurations: label_overflows_total{rule}
# is declared at 0 for rules with capped labels (none in config.yaml) and otherwise appears
# with the first overflow of metrics.max_event_series.
CONDITIONAL_METRICS = {"logmonitor_label_overflows_total"}
PROMETHEUS_METRICS = {"up"}  # made by Prometheus for every target
KNOWN_METRICS = LOG_METRICS | RECONCILE_METRICS | SIDECAR_METRICS | PROMETHEUS_METRICS

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_WORD = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels and durations left out).

    >>> sorted(promql_metric_names('sum by (rule) (increase(a_total{rule="x"}[5m])) / on(job) b > 0.5 and up'))
    ['a_total', 'b', 'up']
    """
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges, subqueries ($__rate_interval too)
    text = _CLAUSE.sub("", text)
    text = re.sub(r"\boffset\s+-?[\w$]+", "", text)
    names = set()
    for match in _WORD.finditer(text):
        word, call = match.groups()
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def markdown_anchors(path: Path) -> set[str]:
    return {github_anchor(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", path.read_text("utf-8"), re.M)}


def load_alerts() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text("utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


ALERT_RULES = load_alerts()


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


# --- promtool -------------------------------------------------------------------------------


@needs_promtool
def test_promtool_check_rules():
    result = promtool("check", "rules", str(ALERTS.relative_to(REPO)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERT_RULES)} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", str(ALERT_TESTS.relative_to(REPO)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_firing_and_not_firing():
    tests = yaml.safe_load(ALERT_TESTS.read_text("utf-8"))
    assert tests["rule_files"] == ["alerts.yml"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in tests["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
            for alert in case.get("exp_alerts") or []:
                # Firing expectations pin the rendered annotations, so templates are tested too.
                assert set(alert.get("exp_annotations", {})) == {"summary", "description", "runbook_url"}, case
    names = {rule["alert"] for rule in ALERT_RULES}
    assert names - firing == set(), "alerts never shown firing in alerts.test.yml"
    assert names - quiet == set(), "alerts never shown not firing in alerts.test.yml"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


# --- the rules themselves --------------------------------------------------------------------


def test_alert_names_are_unique_and_well_formed():
    names = [rule["alert"] for rule in ALERT_RULES]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"(TradingAgents|LogMonitor)[A-Z][A-Za-z]+", n) for n in names), names


@pytest.mark.parametrize("rule", ALERT_RULES, ids=lambda r: r["alert"])
def test_alert_has_severity_summary_description_and_runbook(rule):
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations["summary"].strip() and annotations["description"].strip()
    assert len(annotations["summary"]) <= 100, "a summary is one short line"
    assert annotations["runbook_url"] == f"docs/alerts.md#{rule['alert'].lower()}"


def test_every_runbook_anchor_exists_in_docs():
    anchors = markdown_anchors(RUNBOOKS)
    missing = [r["alert"] for r in ALERT_RULES if r["annotations"]["runbook_url"].split("#", 1)[1] not in anchors]
    assert missing == [], f"no section in {RUNBOOKS.relative_to(REPO)} for {missing}"


def test_every_runbook_section_says_what_it_means_how_to_confirm_what_to_do():
    text = RUNBOOKS.read_text("utf-8")
    sections = dict(re.findall(r"^### (\w+)\n(.*?)(?=^##|\Z)", text, re.M | re.S))
    names = {rule["alert"] for rule in ALERT_RULES}
    assert set(sections) == names, "one runbook section per alert, no stale ones"
    for name, body in sections.items():
        for part in ("**What it means.**", "**How to confirm.**", "**What to do.**"):
            assert part in body, f"{name}: runbook lacks {part}"


@pytest.mark.parametrize("rule", ALERT_RULES, ids=lambda r: r["alert"])
def test_alert_references_only_known_metrics(rule):
    names = promql_metric_names(rule["expr"])
    assert names, "no metric found: the extractor or the rule is broken"
    assert names - KNOWN_METRICS == set(), f"unknown metric name(s) in {rule['alert']}"


@pytest.mark.parametrize("rule", ALERT_RULES, ids=lambda r: r["alert"])
def test_counters_are_read_through_increase_or_rate(rule):
    expr = _STRING.sub('""', rule["expr"])
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?:_total|_bucket)\b", expr):
        before = expr[: match.start()].rstrip()
        assert re.search(r"\b(?:increase|rate)\($", before), (
            f"{rule['alert']}: counter {match.group()} must be read with increase() or rate()"
        )


def test_sidecar_alerts_select_the_scrape_job():
    for rule in ALERT_RULES:
        if "up" in promql_metric_names(rule["expr"]):
            assert f'job="{JOB}"' in rule["expr"], rule["alert"]


def test_alerts_cover_the_issue():
    """Each concern of the monitoring guide has its alert, on the metric that shows it."""
    by_name = {rule["alert"]: rule["expr"] for rule in ALERT_RULES}
    expected = {
        "TradingAgentsEventLoopRegression": 'rule="event_loop_regression"',
        "TradingAgentsMongoTimeoutSpike": 'rule="mongodb_operation_timeout"',
        "TradingAgentsErrorSpike": 'severity="error"',
        "TradingAgentsErrorRatioHigh": 'severity=~"error|success"',
        "TradingAgentsAnalysisFailureSpike": 'success="False"',
        "TradingAgentsAnalysisFailureRatioHigh": 'success="False"',
        "TradingAgentsUpdateReturnedNoneSpike": 'rule="mongodb_update_returned_none"',
        "TradingAgentsStatusNotPersisted": (
            'tradingagents_analyses_not_persisted_total{outcome=~"status_mismatch|not_found"}'
        ),
        "TradingAgentsAnalysesStuck": "tradingagents_analyses_stuck",
        "TradingAgentsMongoUnreachable": "tradingagents_mongo_up == 0",
        "LogMonitorDown": f'up{{job="{JOB}"}} == 0',
        "LogMonitorAbsent": f'absent(up{{job="{JOB}"}})',
        "LogMonitorLogSilent": "logmonitor_lines_total",
        "LogMonitorReadErrors": "logmonitor_read_errors_total",
        "LogMonitorCheckpointFailures": "logmonitor_checkpoint_failures_total",
        "LogMonitorConfigReloadFailed": 'result="failure"',
        "LogMonitorFallingBehind": "logmonitor_bytes_behind",
    }
    for alert, fragment in expected.items():
        assert fragment in by_name[alert], alert
    event_loop = next(r for r in ALERT_RULES if r["alert"] == "TradingAgentsEventLoopRegression")
    assert event_loop["labels"]["severity"] == "critical" and "for" not in event_loop, "any occurrence is critical"


# --- the known names match the code ------------------------------------------------------------


def test_known_sidecar_metrics_are_what_the_sidecar_exports():
    counters = {*SELF_COUNTERS, *FOLLOW_COUNTERS}
    exported = {f"logmonitor_{name}_total" for name in counters} | {f"logmonitor_{name}" for name in FOLLOW_GAUGES}
    assert exported == SIDECAR_METRICS


def test_log_rules_named_in_alerts_exist_in_config():
    config = yaml.safe_load((REPO / "config.yaml").read_text("utf-8"))
    rules = {rule["name"] for rule in config["rules"]}
    named = {name for rule in ALERT_RULES for name in re.findall(r'rule=~?"([^"]+)"', rule["expr"])}
    named = {part for name in named for part in name.split("|")}
    assert named - rules == set(), "alert on a rule config.yaml does not have"


def test_promql_metric_names_ignores_what_is_not_a_metric():
    expr = (
        'histogram_quantile(0.95, sum without (operation) (rate(x_bucket{le!="", a=~"b|c"}[$__rate_interval]))) > 1e3'
        " and on(job) time() - y offset 1d > 8 * 1024 unless absent(up{job='z'}) or z bool == nan"
    )
    assert promql_metric_names(expr) == {"x_bucket", "y", "up", "z"}
