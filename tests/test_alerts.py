"""prometheus/alerts.yml: valid for promtool, unit-tested (each `for:` included), documented with
absolute runbook links, rendered as the Prometheus Operator's PrometheusRule without drift, and
naming only real metrics.

Also home of what the other monitoring tests share: the metric names the sidecar exports
(KNOWN_METRICS) and a PromQL metric-name extractor, so a typo in a rule, a dashboard query
or an e2e check cannot slip through.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from monitor.export.metrics import SELF_COUNTERS
from monitor.follow.stats import COUNTERS as FOLLOW_COUNTERS
from monitor.follow.stats import GAUGES as FOLLOW_GAUGES
from monitor.reconcile.collectors import SweepLeaderCollector, mongo_families, reconcile_families
from monitor.reconcile.mongo import MongoStats
from monitor.reconcile.reconciler import ReconcileStats
from tests.conftest import REPO

PROMETHEUS_DIR = REPO / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts.test.yml"
RUNBOOKS = REPO / "docs" / "alerts.md"
RENDER = REPO / "scripts" / "render-alerts"
PROMETHEUS_RULE = REPO / "deploy" / "kubernetes" / "prometheusrule.yaml"
KUSTOMIZATION = REPO / "deploy" / "kubernetes" / "kustomization.yaml"
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
# The stuck sweep's counts of the whole database: exported only by the one sidecar holding the
# stuck-sweep lease (two for a moment during a hand-over), so alerts aggregate them per job.
SWEEP_METRICS = {
    "tradingagents_analyses_stuck",
    "tradingagents_analyses_by_status",
}
# The sidecar's own MongoDB client, under the sidecar's prefix, and who holds the lease.
MONGO_CLIENT_METRICS = {
    "logmonitor_mongo_up",
    *histogram("logmonitor_mongo_query_duration_seconds"),
    "logmonitor_mongo_errors_total",
    "logmonitor_sweep_leader",
    "logmonitor_sweep_lease_mismatch",
}
# What MongoDB says (reconciliation, issue 4), the sweep and the client included. Exported only
# when the sidecar has a MongoDB URL; tests that need their data say so explicitly (see
# tests/test_prometheus_e2e.py).
RECONCILE_METRICS = {
    "tradingagents_analysis_checks_total",
    "tradingagents_analyses_not_persisted_total",
    "tradingagents_analysis_checks_pending",
    *histogram("tradingagents_analysis_confirmation_delay_seconds"),
    "tradingagents_analysis_claims_dropped_total",
    *SWEEP_METRICS,
    *MONGO_CLIENT_METRICS,
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
            "checkpoint_set_aside",
            "checkpoint_recreated",
            "label_overflows",
            "audit_rounds",
            "audit_minutes",
            "audit_files",
            "audit_bytes",
            "audit_drifted_lines",
        )
    ),
    "logmonitor_files_open",
    "logmonitor_behind_bytes",
    "logmonitor_skipped_files",
    "logmonitor_descriptor_skipped_files",
    "logmonitor_last_read_timestamp_seconds",
}
# The sidecar's other own gauges: its version (always 1) and how it watches its files.
SIDECAR_INFO_METRICS = {"logmonitor_build_info", "logmonitor_watch_mode"}
# The endpoint's own: connections that ended badly, by reason.
SERVER_METRICS = {"logmonitor_http_connection_errors_total"}


def _sample_names(families) -> set[str]:
    """The sample names of metric families, series or not (a histogram's three, a counter's _total)."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "info": ["_info"]}
    return {family.name + suffix for family in families for suffix in suffixes.get(family.type, [""])}


def _runtime_metrics() -> set[str]:
    registry = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    return _sample_names(registry.collect())


# prometheus-client's process and Python metrics (process_resident_memory_bytes, python_gc_*, ...).
RUNTIME_METRICS = _runtime_metrics()
# Sidecar metrics whose series exist only in some configurations: label_overflows_total{rule}
# exists at 0 for rules with labels (config.yaml has one, analysis_finished) and otherwise
# appears with the first overflow of metrics.max_event_series.
CONDITIONAL_METRICS = {"logmonitor_label_overflows_total"}
PROMETHEUS_METRICS = {"up"}  # made by Prometheus for every target
KNOWN_METRICS = (
    LOG_METRICS
    | RECONCILE_METRICS
    | SIDECAR_METRICS
    | SIDECAR_INFO_METRICS
    | SERVER_METRICS
    | RUNTIME_METRICS
    | PROMETHEUS_METRICS
)

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


def load_alerts(path: Path = ALERTS) -> list[dict]:
    groups = yaml.safe_load(path.read_text("utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


ALERT_RULES = load_alerts()
# The one base of every runbook_url (scripts/render-alerts --runbook-base sets it).
RUNBOOK_BASE = ALERT_RULES[0]["annotations"]["runbook_url"].split("#", 1)[0]


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def render_alerts(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RENDER), *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def failing_alerts(promtool_output: str) -> set[str]:
    """Alert names of the failed cases in `promtool test rules` output."""
    return set(re.findall(r"alertname: (\w+), time: ", promtool_output))


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


@needs_promtool
def test_unit_tests_depend_on_every_for_and_keep_firing_for(tmp_path):
    """The unit tests show each alert pending before its `for:` has passed (and the alert kept
    by `keep_firing_for:`): run against the rules without them, they fail for each such alert."""
    groups = yaml.safe_load(ALERTS.read_text("utf-8"))["groups"]
    runs = {}
    for key in ("for", "keep_firing_for"):
        workdir = tmp_path / key
        workdir.mkdir()
        stripped = [
            {**group, "rules": [{k: v for k, v in rule.items() if k != key} for rule in group["rules"]]}
            for group in groups
        ]
        (workdir / "alerts.yml").write_text(yaml.safe_dump({"groups": stripped}, allow_unicode=True), "utf-8")
        shutil.copy(ALERT_TESTS, workdir / "alerts.test.yml")
        runs[key] = subprocess.Popen(
            [PROMTOOL, "test", "rules", "alerts.test.yml"],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # promtool reports failures on stderr
            text=True,
        )
    try:
        for key, run in runs.items():
            output, _ = run.communicate(timeout=120)
            expected = {rule["alert"] for rule in ALERT_RULES if key in rule}
            assert expected, key
            assert run.returncode != 0
            assert expected - failing_alerts(output) == set(), f"the unit tests do not notice a missing `{key}:`"
    finally:  # a failure above leaves no promtool running
        for run in runs.values():
            if run.poll() is None:
                run.kill()
            run.communicate()


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
    # Absolute, so that it opens from Alertmanager, Grafana or a pager; one base for all.
    assert annotations["runbook_url"] == f"{RUNBOOK_BASE}#{rule['alert'].lower()}"


def test_runbook_links_are_absolute_and_point_at_the_runbooks():
    assert re.fullmatch(r"https://[^\s#\"]+", RUNBOOK_BASE), RUNBOOK_BASE
    text = ALERT_TESTS.read_text("utf-8")
    bases = {url.split("#", 1)[0] for url in re.findall(r'runbook_url: "([^"]+)"', text)}
    assert bases == {RUNBOOK_BASE}, "alerts.test.yml expects other links: run scripts/render-alerts"


@pytest.mark.parametrize("rule", ALERT_RULES, ids=lambda r: r["alert"])
def test_every_critical_and_warning_alert_has_for(rule):
    """A page or a warning must hold for a while (at least two evaluations) before it notifies."""
    if rule["labels"]["severity"] in {"critical", "warning"}:
        assert "for" in rule, f"{rule['alert']}: no `for:`"
        assert re.fullmatch(r"\d+[smh]", rule["for"]) and rule["for"] not in {"0s", "0m", "0h"}, rule["for"]


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
        # One alert per job/namespace: only the lease holder exports the count.
        "TradingAgentsAnalysesStuck": "max without (instance, pod) (max_over_time(tradingagents_analyses_stuck[",
        "TradingAgentsMongoUnreachable": "logmonitor_mongo_up == 0",
        "TradingAgentsMongoSlowQueries": "logmonitor_mongo_query_duration_seconds_bucket",
        "LogMonitorDown": f'up{{job="{JOB}"}} == 0',
        "LogMonitorAbsent": f'absent(up{{job="{JOB}"}})',
        "LogMonitorLogSilent": "increase(logmonitor_lines_total[",
        "LogMonitorReadErrors": "logmonitor_read_errors_total",
        "LogMonitorCheckpointFailures": "logmonitor_checkpoint_failures_total",
        "LogMonitorCheckpointSetAside": "increase(logmonitor_checkpoint_set_aside_total[",
        "LogMonitorCheckpointRecreated": "increase(logmonitor_checkpoint_recreated_total[",
        "LogMonitorConfigReloadFailed": 'result="failure"',
        "LogMonitorFallingBehind": "logmonitor_behind_bytes",
        "LogMonitorLabelOverflow": "increase(logmonitor_label_overflows_total[",
    }
    for alert, fragment in expected.items():
        assert fragment in by_name[alert], alert
    # Silence alone (an idle server) is not enough: the server must have work, per its log or MongoDB.
    for work in ('rule="analysis_started"', 'tradingagents_analyses_by_status{status="pending"}'):
        assert work in by_name["LogMonitorLogSilent"]
    rules = {rule["alert"]: rule for rule in ALERT_RULES}
    event_loop = rules["TradingAgentsEventLoopRegression"]
    assert event_loop["labels"]["severity"] == "critical" and event_loop["for"] == "1m", "any occurrence pages"
    assert event_loop["expr"].strip().endswith("> 0"), "no threshold"
    not_persisted = rules["TradingAgentsStatusNotPersisted"]
    assert not_persisted["labels"]["severity"] == "critical" and not_persisted.get("keep_firing_for") == "1h"
    assert rules["LogMonitorLabelOverflow"]["labels"]["severity"] == "warning"


# --- the known names match the code ------------------------------------------------------------


def test_known_sidecar_metrics_are_what_the_sidecar_exports():
    counters = {*SELF_COUNTERS, *FOLLOW_COUNTERS}
    exported = {f"logmonitor_{name}_total" for name in counters} | {f"logmonitor_{name}" for name in FOLLOW_GAUGES}
    assert exported == SIDECAR_METRICS


def test_known_server_metrics_are_what_the_endpoint_exports():
    from monitor.export.server import REASONS, ConnectionErrorsCollector

    assert _sample_names(ConnectionErrorsCollector(dict.fromkeys(REASONS, 0)).collect()) == SERVER_METRICS


def test_known_reconcile_metrics_are_what_the_mongodb_check_exports():
    """The check's collectors, built from empty values as a sweep leader's would be."""
    families = [
        *reconcile_families("tradingagents", ReconcileStats(stuck=0)),
        *mongo_families("logmonitor", MongoStats()),
        *SweepLeaderCollector("logmonitor", lambda: True).collect(),
    ]
    assert _sample_names(families) == RECONCILE_METRICS
    not_leader = _sample_names(reconcile_families("tradingagents", ReconcileStats()))
    assert SWEEP_METRICS.isdisjoint(not_leader), "only the lease holder exports the sweep's counts"


def test_runtime_metrics_are_prometheus_clients_process_and_python_metrics():
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "process_start_time_seconds"} <= (
        RUNTIME_METRICS
    )
    assert "python_info" in RUNTIME_METRICS and any(n.startswith("python_gc_") for n in RUNTIME_METRICS)


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


# --- one source: scripts/render-alerts and the PrometheusRule ---------------------------------


def test_render_alerts_output_is_what_is_committed(tmp_path):
    """No drift: the PrometheusRule (and the runbook links) are what the generator renders now."""
    result = render_alerts("--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for path in (ALERTS, ALERT_TESTS, PROMETHEUS_RULE):
        relative = path.relative_to(REPO)
        rendered = (tmp_path / relative).read_text("utf-8")
        assert rendered == path.read_text("utf-8"), f"{relative} differs from its rendering: run scripts/render-alerts"
    check = render_alerts("--check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_rule_holds_exactly_the_alert_groups():
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text("utf-8"))
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text("utf-8"))["groups"]
    header = PROMETHEUS_RULE.read_text("utf-8").split("apiVersion:", 1)[0]
    assert "scripts/render-alerts" in header and "ruleSelector" in header, "the header says how it is made and selected"
    labels = rule["metadata"]["labels"]
    for key, value in labels.items():
        assert f"{key}: {value}" in header or key.startswith("app.kubernetes.io/"), f"label {key} not explained"
    # An operator object, like podmonitor.yaml: applied on its own, so clusters without the CRD can
    # `kubectl apply -k`; the kustomization says how.
    kustomization_text = KUSTOMIZATION.read_text("utf-8")
    assert PROMETHEUS_RULE.name not in yaml.safe_load(kustomization_text)["resources"]
    assert f"-f deploy/kubernetes/{PROMETHEUS_RULE.name}" in kustomization_text


@needs_promtool
def test_promtool_checks_the_prometheus_rules_groups(tmp_path):
    spec = yaml.safe_load(PROMETHEUS_RULE.read_text("utf-8"))["spec"]
    extracted = tmp_path / "prometheusrule-groups.yml"
    extracted.write_text(yaml.safe_dump({"groups": spec["groups"]}, allow_unicode=True), "utf-8")
    result = promtool("check", "rules", str(extracted))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERT_RULES)} rules found" in result.stdout


@needs_promtool
def test_render_alerts_sets_the_runbook_base_everywhere(tmp_path):
    base = "https://git.example.com/team/logmonitor/-/blob/main/docs/alerts.md"
    result = render_alerts("--runbook-base", base, "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rendered_alerts = tmp_path / ALERTS.relative_to(REPO)
    for rule in load_alerts(rendered_alerts):
        assert rule["annotations"]["runbook_url"] == f"{base}#{rule['alert'].lower()}"
    spec = yaml.safe_load((tmp_path / PROMETHEUS_RULE.relative_to(REPO)).read_text("utf-8"))["spec"]
    assert spec["groups"] == yaml.safe_load(rendered_alerts.read_text("utf-8"))["groups"]
    # The unit tests' expectations follow: they still pass against the rewritten rules.
    tests = promtool("test", "rules", "alerts.test.yml", cwd=rendered_alerts.parent)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    # Nothing else changed.
    assert rendered_alerts.read_text("utf-8").replace(base, RUNBOOK_BASE) == ALERTS.read_text("utf-8")


@pytest.mark.parametrize("base", ["docs/alerts.md", "ftp://example.com/alerts.md", "https://x/alerts.md#a", ""])
def test_render_alerts_refuses_a_base_that_is_no_absolute_link(base, tmp_path):
    result = render_alerts("--runbook-base", base, "--output-dir", str(tmp_path))
    assert result.returncode == 2
    assert "--runbook-base" in result.stderr and "absolute" in result.stderr
    assert not any(tmp_path.iterdir()), "nothing written"
