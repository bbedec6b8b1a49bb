"""A real Prometheus scraping a real sidecar: the alert rules load and evaluate, the dashboard's
queries work and return data, and the event-loop regression alert becomes active on its line.

Prometheus runs with the repository's prometheus.yml (scrape and evaluation every second,
the target being the sidecar under test) and the repository's alerts.yml as it is, with
its production `for:` durations: the event-loop alert is seen pending (its `for: 1m` is
unit-tested with promtool, in prometheus/alerts.test.yml). Every wait polls Prometheus' HTTP
API with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from demo.mongo_server import terminate
from tests.conftest import REPO, log_line
from tests.sidecar_process import SidecarProcess, free_port, wait_for
from tests.test_alerts import (
    ALERT_RULES,
    CONDITIONAL_METRICS,
    JOB,
    KNOWN_METRICS,
    RECONCILE_METRICS,
    promql_metric_names,
)
from tests.test_dashboard import (
    DASHBOARD,
    QUERIES,
    alertlist_panel,
    grafana_labels_match,
    grafana_matchers,
    variable_queries,
)

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (`make test` installs Debian's prometheus package)"
)

# Grafana's variables, as Grafana would expand them against a 1 s scrape interval ("All" = .*).
GRAFANA_VARIABLES = {
    "$__rate_interval": "10s",
    "$__interval": "2s",
    "$__range": "5m",
    "$job": ".*",
    "$namespace": ".*",  # "All" also matches a missing label: this static target has no Kubernetes labels
    "$pod": ".*",
    "$instance": ".*",
}
# The dashboard's Kubernetes variables, which this static target (as in docker compose) lacks.
KUBERNETES_VARIABLES = {"namespace", "pod"}

# Lines in the server's real file format: keywords of several rules, a timeout and the
# event-loop error among them.
LINES = [
    log_line("✅ 分析记录已保存到数据库: 68f8741c3512a67997df93d2"),
    log_line("启动真实分析: 68f8741c3512a67997df93d2 - AAPL (美股)"),
    log_line("分析 68f8741c3512a67997df93d2 进度: 33% - 📊 市场分析师 正在分析 AAPL"),
    log_line("MongoDB操作超时", "ERROR"),
    log_line("⚠️ MongoDB更新返回None，可能更新失败", "WARNING"),
    log_line(
        "MongoDB操作失败: The future belongs to a different loop than the one specified as the loop argument", "ERROR"
    ),
    log_line("⚠️ 更新数据库状态失败: ServerSelectionTimeoutError", "WARNING"),
    log_line("✅ 分析完成状态已更新到数据库: 68f8741c3512a67997df93d2"),
    log_line("分析 68f8741c3512a67997df93d2 完成，成功: True"),
    log_line("分析 68f8741c3512a67997df93d3 执行失败: 数据源超时: get_stock_data AAPL", "ERROR"),
    log_line("分析 68f8741c3512a67997df93d3 完成，成功: False"),
]


def substitute(expr: str) -> str:
    for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("${" + name[1:] + "}", value).replace(name, value)
    assert "$" not in expr, f"unexpanded Grafana variable in {expr}"
    return expr


class PrometheusProcess:
    """`prometheus` on a free loopback port, scraping one target every second."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.target = target
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "prometheus.log"

    def write_config(self) -> Path:
        config = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text("utf-8"))
        config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        config["rule_files"] = [str(REPO / "prometheus" / rule_file) for rule_file in config["rule_files"]]
        config.pop("alerting")  # no Alertmanager here: the rules API shows the alerts' states
        (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
        job["static_configs"] = [{"targets": [self.target]}]
        config["scrape_configs"] = [job]
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    def start(self) -> PrometheusProcess:
        config = self.write_config()
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=self.log_file,
        )
        wait_for(lambda: self.ready() or self.proc.poll() is not None, 30, "Prometheus ready")
        assert self.proc.poll() is None, self.log()
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422: a bad query, reported with its error
            body = json.load(exc)
        return body

    def query(self, expr: str) -> dict:
        """The /api/v1/query answer; fails with Prometheus' error text if the query does not evaluate."""
        body = self.api("query", query=expr)
        assert body["status"] == "success", f"{expr}\n-> {body.get('errorType')}: {body.get('error')}"
        return body["data"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.log_file.close()


def exposed_metric_names(sidecar: SidecarProcess) -> set[str]:
    """Sample names the sidecar serves right now, plus Prometheus' own `up`."""
    return {name for name, _labels in sidecar.metrics()} | {"up"}


@pytest.fixture
def stack(tmp_path):
    log = tmp_path / "logs" / "tradingagents.log"
    log.parent.mkdir()
    log.touch()
    env = {"MONGODB_URL": "", "MONGODB_URL_FILE": ""}  # log-only, whatever the caller's environment holds
    sidecar = SidecarProcess(tmp_path, "--log", f"app={log}", env=env)
    prometheus = PrometheusProcess(tmp_path, target=f"127.0.0.1:{sidecar.port}")
    try:
        sidecar.start()
        prometheus.start()
        yield sidecar, prometheus, log
    finally:
        prometheus.stop()
        sidecar.stop()


def test_alerts_and_dashboard_queries_against_a_real_prometheus(stack):
    sidecar, prometheus, log = stack
    started = time.monotonic()

    # 1. Prometheus scrapes the sidecar: every rule's series is there at 0 before any line.
    wait_for(
        lambda: (
            prometheus.query(f'up{{job="{JOB}"}} == 1')["result"]
            and prometheus.query('tradingagents_log_events_total{rule="event_loop_regression"} == 0')["result"]
        ),
        30,
        lambda: f"a first scrape of the sidecar\n{prometheus.log()}",
    )

    # 2. Every alert rule loaded and evaluates without error.
    names = {rule["alert"] for rule in ALERT_RULES}

    def loaded_rules() -> dict[str, dict]:
        groups = prometheus.api("rules", type="alert")["data"]["groups"]
        return {rule["name"]: rule for group in groups for rule in group["rules"]}

    def all_evaluated():
        rules = loaded_rules()
        return set(rules) == names and all(r["health"] == "ok" for r in rules.values())

    wait_for(all_evaluated, 20, lambda: f"all {len(names)} alert rules loaded and healthy: {loaded_rules()}")
    assert loaded_rules()["TradingAgentsEventLoopRegression"]["state"] == "inactive"

    # 3. The server logs: a timeout, the event-loop error and the analysis lifecycle.
    with open(log, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in LINES))
    wait_for(
        lambda: prometheus.query('tradingagents_log_events_total{rule="event_loop_regression"} == 1')["result"],
        20,
        "the event-loop line scraped",
    )

    # 4. The event-loop regression alert's own expression returns the series, and the alert
    #    becomes active at once: pending, as its production `for: 1m` would keep this test a
    #    minute waiting for "firing". Its annotations carry the absolute runbook link.
    event_loop = next(r for r in ALERT_RULES if r["alert"] == "TradingAgentsEventLoopRegression")
    wait_for(lambda: prometheus.query(event_loop["expr"])["result"], 20, "the event-loop alert expression")
    wait_for(
        lambda: loaded_rules()["TradingAgentsEventLoopRegression"]["state"] in {"pending", "firing"},
        20,
        lambda: f"the event-loop alert active: {loaded_rules()['TradingAgentsEventLoopRegression']}",
    )
    (active_alert,) = loaded_rules()["TradingAgentsEventLoopRegression"]["alerts"]
    assert active_alert["labels"]["rule"] == "event_loop_regression"
    assert active_alert["annotations"]["runbook_url"] == event_loop["annotations"]["runbook_url"]
    assert active_alert["annotations"]["runbook_url"].startswith("https://")

    # 5. Every alert expression evaluates through the query API, and Prometheus holds each
    #    rule's `for:` and `keep_firing_for:` as alerts.yml says (in seconds in the API).
    for rule in ALERT_RULES:
        prometheus.query(rule["expr"])
    seconds = {"s": 1, "m": 60, "h": 3600}
    for rule in ALERT_RULES:
        loaded = loaded_rules()[rule["alert"]]
        for key, api_key in (("for", "duration"), ("keep_firing_for", "keepFiringFor")):
            value = rule.get(key, "0s")
            assert loaded.get(api_key, 0) == int(value[:-1]) * seconds[value[-1]], (rule["alert"], key, loaded)
    # Every metric the sidecar serves is one the alerts and the dashboard may name.
    assert exposed_metric_names(sidecar) - KNOWN_METRICS == set()

    # 6. Every dashboard query evaluates; those over metrics the sidecar exposes return data.
    #    RECONCILE_METRICS (the MongoDB check, issue 4) are only exposed with a MongoDB URL:
    #    their queries must evaluate now and must return data as soon as the sidecar exposes them.
    #    The same holds for CONDITIONAL_METRICS (series that config.yaml does not create).
    exposed = exposed_metric_names(sidecar)
    for where, expr in QUERIES:
        missing = promql_metric_names(expr) - exposed
        assert missing <= RECONCILE_METRICS | CONDITIONAL_METRICS, f"{where}: the sidecar does not expose {missing}"

    def queries_without_data() -> list[str]:
        empty = []
        for where, expr in QUERIES:
            data = prometheus.query(substitute(expr))  # fails the test at once on an error
            if promql_metric_names(expr) <= exposed and not data["result"]:
                empty.append(f"{where}: {expr}")
        return empty

    wait_for(
        lambda: not queries_without_data(),
        20,
        lambda: "dashboard queries without data:\n" + "\n".join(queries_without_data()),
    )

    # 7. The dashboard's variables find the sidecar (label_values() is served by the series API);
    #    namespace and pod find nothing on a target without Kubernetes labels, so they offer only
    #    "All" (.*), with which every query returned data above.
    for variable, query in variable_queries(DASHBOARD):
        selector, label = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query).groups()
        body = prometheus.api(f"label/{label}/values", **{"match[]": substitute(selector)})
        assert body["status"] == "success", f"variable {variable}: {body}"
        if variable in KUBERNETES_VARIABLES:
            assert body["data"] == [], f"variable {variable}: a static target has no {label} label"
        else:
            assert body["data"], f"variable {variable} finds nothing"
    assert JOB in prometheus.api("label/job/values", **{"match[]": "logmonitor_lines_total"})["data"]

    # 8. The pod variable filters for real: set to a pod that does not exist, every query that
    #    returned data above returns none.
    filtered = [(w, e) for w, e in QUERIES if 'pod=~"$pod"' in e and promql_metric_names(e) <= exposed]
    assert filtered
    leaking = [
        where
        for where, expr in filtered
        if prometheus.query(substitute(expr.replace('pod=~"$pod"', 'pod=~"no-such-pod"')))["result"]
    ]
    assert leaking == [], f"queries that ignore the pod variable: {leaking}"

    # 9. The "Firing alerts" panel's filter, as Grafana applies it, lists the alerts this
    #    Prometheus has firing or pending (the event-loop alert among them).
    matchers = grafana_matchers(alertlist_panel(DASHBOARD)["options"]["alertInstanceLabelFilter"])
    active = prometheus.api("alerts")["data"]["alerts"]
    assert "TradingAgentsEventLoopRegression" in {alert["labels"]["alertname"] for alert in active}
    hidden = [alert["labels"] for alert in active if not grafana_labels_match(alert["labels"], matchers)]
    assert hidden == [], f"alerts the dashboard's alert list would not show: {hidden}"

    assert time.monotonic() - started < 60


def test_prometheus_process_is_gone_after_the_test(tmp_path):
    """The fixture stops what it starts (no Prometheus left listening)."""
    prometheus = PrometheusProcess(tmp_path, target="127.0.0.1:9")
    prometheus.start()
    pid = prometheus.proc.pid
    prometheus.stop()
    assert prometheus.proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
