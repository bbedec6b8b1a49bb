"""grafana/: the dashboard is portable (datasource variable, no hard-coded uid), queries only
real metrics through the job/namespace/pod/instance variables, says at a glance whether
anything is wrong, shows rates per minute whatever the zoom, and is provisioned with no clicks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.test_alerts import (
    ALERT_RULES,
    KNOWN_METRICS,
    RUNBOOKS,
    SWEEP_METRICS,
    markdown_anchors,
    promql_metric_names,
)

GRAFANA = REPO / "grafana"
DASHBOARD_PATH = GRAFANA / "dashboards" / "tradingagents-logmonitor.json"
COMPOSE = REPO / "deploy" / "docker-compose.yml"
DEPLOYMENT = REPO / "deploy" / "kubernetes" / "deployment.yaml"
DS = "${datasource}"
# The variables every query filters on, in the order they appear (each narrows the next).
FILTERS = ("job", "namespace", "pod", "instance")
# Database-wide gauges: exported by the one sidecar holding the stuck-sweep lease, so a query
# filtered by pod or instance would show nothing for every other sidecar.
DATABASE_WIDE = SWEEP_METRICS
# Panels without a query of their own.
NO_QUERY_PANELS = {"row", "text", "alertlist"}
# Rates that are not counts of things: per second in their natural unit.
PER_SECOND_RATES = {"logmonitor_bytes_total": "Bps", "process_cpu_seconds_total": "percentunit"}
PER_MINUTE_UNIT = re.compile(r"cpm|rpm|opm|(?:count|suffix):.+/min")


def load_dashboard() -> dict:
    return json.loads(DASHBOARD_PATH.read_text("utf-8"))


def all_panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def walk(node, path: str = "$") -> Iterator[tuple[str, str, object]]:
    """(path, key, value) of every key in the JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every query: panel targets and annotation queries."""
    queries = []
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            queries.append((f"{panel['title']} / {target['refId']}", target["expr"]))
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            queries.append((f"annotation {annotation['name']}", annotation["expr"]))
    return queries


def variable_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(variable, its label_values() query) of every query variable."""
    out = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            out.append((variable["name"], query))
    return out


def panels_in_order(dashboard: dict) -> list[dict]:
    """Top-level panels as Grafana lays them out: by row, then column."""
    return sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))


def top_row(dashboard: dict) -> tuple[dict, list[dict]]:
    """The first row and the panels under it (up to the next row)."""
    first, *rest = panels_in_order(dashboard)
    assert first["type"] == "row", "the dashboard starts with a row"
    panels = []
    for panel in rest:
        if panel["type"] == "row":
            break
        panels.append(panel)
    return first, panels


def effective_unit(panel: dict, ref_id: str) -> str:
    """The unit a target's series are shown in: an override by its refId or (in a table) by its
    column's name after renaming, else the panel's default."""
    column = "Value" if len(panel["targets"]) == 1 else f"Value #{ref_id}"
    for transformation in panel.get("transformations", []):
        if transformation["id"] == "organize":
            column = transformation["options"].get("renameByName", {}).get(column, column)
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    for override in panel["fieldConfig"].get("overrides", []):
        if override["matcher"] in ({"id": "byFrameRefID", "options": ref_id}, {"id": "byName", "options": column}):
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    unit = prop["value"]
    return unit


def selectors(expr: str) -> Iterator[tuple[str, str | None]]:
    """(metric, its label matchers or None) of every metric selector of a query."""
    for name in promql_metric_names(expr):
        for match in re.finditer(rf"(?<![\w:]){re.escape(name)}(?![\w:])\s*(\{{[^}}]*\}})?", expr):
            yield name, match.group(1)


def increase_ranges(expr: str) -> list[str]:
    """The range of every increase(<selector>[range]) of a query."""
    return re.findall(r"increase\(\s*[a-zA-Z_:][\w:]*\s*(?:\{[^}]*\})?\s*\[([^\]]+)\]\s*\)", expr)


def grafana_matchers(text: str) -> list[tuple[str, str, str]]:
    """(label, operator, value) as Grafana's alert list parses its "Alert instance label" filter
    (parseMatchers in public/app/features/alerting/unified/utils/alertmanager.ts)."""
    return re.findall(r'\b([\w.-]+)(=~|!=|!~|=(?="?\w))"?([^"\n,]*)"?', text)


def grafana_labels_match(labels: dict[str, str], matchers: list[tuple[str, str, str]]) -> bool:
    """Grafana's labelsMatchMatchers: a regex matches anywhere in the value (JavaScript RegExp.test)."""
    tests = {
        "=": lambda value, v: v == value,
        "!=": lambda value, v: v != value,
        "=~": lambda value, v: re.search(value, v) is not None,
        "!~": lambda value, v: re.search(value, v) is None,
    }
    return all(any(name == key and tests[op](value, v) for key, v in labels.items()) for name, op, value in matchers)


def alertlist_panel(dashboard: dict) -> dict:
    (panel,) = [p for p in all_panels(dashboard["panels"]) if p["type"] == "alertlist"]
    return panel


def text_panel(dashboard: dict) -> dict:
    (panel,) = [p for p in all_panels(dashboard["panels"]) if p["type"] == "text"]
    return panel


DASHBOARD = load_dashboard()
QUERIES = dashboard_queries(DASHBOARD)
VARIABLES = {v["name"]: v for v in DASHBOARD["templating"]["list"]}


def test_dashboard_loads_with_a_current_schema():
    assert DASHBOARD["schemaVersion"] >= 39
    assert DASHBOARD["title"] and DASHBOARD["uid"]
    assert "id" not in DASHBOARD or DASHBOARD["id"] is None, "an id would clash with the instance's own ids"


def test_datasource_is_a_variable_of_type_datasource():
    ds = VARIABLES["datasource"]
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"
    assert DASHBOARD["templating"]["list"][0] is ds, "the datasource variable comes first: others query through it"


def test_no_hard_coded_datasource_or_uid_anywhere():
    """Every datasource reference goes through ${datasource}; the only other uid is the dashboard's own."""
    builtin = {"type": "grafana", "uid": "-- Grafana --"}  # Grafana's built-in annotations, not a data source
    for path, key, value in walk(DASHBOARD):
        if key == "datasource":
            assert isinstance(value, dict), f"{path}: datasource given by name ({value!r}); use {{'uid': '{DS}'}}"
            assert value == builtin or value == {"type": "prometheus", "uid": DS}, f"{path}: {value}"
        elif key == "uid":
            assert path == "$" or path.endswith(".datasource"), f"{path}: hard-coded uid {value!r}"


def test_every_panel_and_target_uses_the_datasource_variable():
    panels = [p for p in all_panels(DASHBOARD["panels"]) if p["type"] not in NO_QUERY_PANELS]
    assert panels
    for panel in panels:
        assert panel["datasource"]["uid"] == DS, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DS, panel["title"]
            assert target["expr"].strip(), panel["title"]
    for panel in all_panels(DASHBOARD["panels"]):
        if panel["type"] in NO_QUERY_PANELS:
            assert not panel.get("targets"), f"{panel['title']}: a {panel['type']} panel runs no query"
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == DS, variable["name"]


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_query_names_only_known_metrics(where, expr):
    names = promql_metric_names(expr)
    assert names, f"{where}: no metric found"
    assert names - KNOWN_METRICS == set(), f"{where}: unknown metric name(s)"


def test_variable_queries_name_known_metrics():
    for name, query in variable_queries(DASHBOARD):
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, f"variable {name}: {query!r}"
        assert promql_metric_names(match.group(1)) <= KNOWN_METRICS, name


def test_job_namespace_pod_instance_variables():
    """namespace and pod sit between job and instance, each narrowed by the ones before it, and
    'All' is `.*`, which also matches a missing label: without Kubernetes labels (docker compose,
    static targets) namespace and pod offer only All and every query still returns data."""
    names = [v["name"] for v in DASHBOARD["templating"]["list"] if v["type"] == "query"]
    assert names == list(FILTERS)
    queries = dict(variable_queries(DASHBOARD))
    for index, name in enumerate(FILTERS):
        variable = VARIABLES[name]
        assert variable["includeAll"] is True and variable["allValue"] == ".*", name
        assert variable["multi"] is True, name
        assert variable["refresh"] == 2, f"{name}: values follow the time range"
        selector, label = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", queries[name]).groups()
        assert label == name
        for earlier in FILTERS[:index]:
            assert f'{earlier}=~"${earlier}"' in selector, f"{name} is not narrowed by {earlier}"


def test_queries_filter_on_the_dashboard_variables():
    """Every metric selector of every query (annotations too) filters on job, namespace, pod and
    instance, except the database-wide sweep gauges: one sidecar exports them, so they filter on
    job and namespace only."""
    for where, expr in QUERIES:
        for name, matchers in selectors(expr):
            assert matchers is not None, f"{where}: {name} without label matchers"
            wanted = ("job", "namespace") if name in DATABASE_WIDE else FILTERS
            for variable in FILTERS:
                matcher = f'{variable}=~"${variable}"'
                if variable in wanted:
                    assert matcher in matchers, f"{where}: {name}{matchers} lacks {matcher}"
                else:
                    assert matcher not in matchers, f"{where}: {name} is database-wide, not per {variable}"


def test_no_increase_over_the_rate_interval():
    """increase() over $__rate_interval changes its value with the zoom; counts are read over
    the dashboard's range ($__range) or a fixed window, rates with rate()."""
    for where, expr in QUERIES:
        assert not re.search(r"increase\([^()]*\$__(?:rate_)?interval", expr), f"{where}: {expr}"
        for range_ in increase_ranges(expr):
            assert range_ == "$__range" or re.fullmatch(r"\d+[smhdw]", range_), f"{where}: increase over {range_}"
        assert expr.count("increase(") == len(increase_ranges(expr)), f"{where}: increase() of an unexpected form"


def test_rates_are_per_minute_with_a_per_minute_unit():
    """Counts per minute (rate() * 60) shown in a per-minute unit; the only per-second rates are
    bytes (Bps) and CPU (share of a core)."""
    per_minute = 0
    for panel in all_panels(DASHBOARD["panels"]):
        for target in panel.get("targets", []):
            where, expr = f"{panel['title']} / {target['refId']}", target["expr"]
            unit = effective_unit(panel, target["refId"])
            rated = set(re.findall(r"\brate\(\s*([a-zA-Z_:][\w:]*)", expr))
            if not rated or expr.startswith("histogram_quantile("):
                assert not PER_MINUTE_UNIT.fullmatch(unit), f"{where}: not a rate, yet unit {unit}"
                continue
            if rated <= set(PER_SECOND_RATES):
                assert {PER_SECOND_RATES[name] for name in rated} == {unit}, f"{where}: unit {unit}"
                continue
            assert expr.startswith("60 * "), f"{where}: a rate per second; multiply by 60 for per minute"
            assert PER_MINUTE_UNIT.fullmatch(unit), f"{where}: unit {unit!r} is not per minute"
            per_minute += 1
    assert per_minute >= 10


def test_stat_panels_are_instant_and_count_over_the_dashboard_range():
    """A stat shows one value now; "in the selected range" is increase(x[$__range]) evaluated once."""
    stats = [p for p in all_panels(DASHBOARD["panels"]) if p["type"] == "stat"]
    assert stats
    for panel in stats:
        assert panel["options"]["reduceOptions"]["calcs"] == ["lastNotNull"], panel["title"]
        for target in panel["targets"]:
            assert target["instant"] is True and target["range"] is False, panel["title"]
            assert set(increase_ranges(target["expr"])) <= {"$__range"}, panel["title"]
    for panel in all_panels(DASHBOARD["panels"]):
        for target in panel.get("targets", []):
            if "$__range" in target["expr"]:
                assert target["instant"] is True, f"{panel['title']}: $__range needs an instant query"


def test_top_row_says_whether_anything_is_wrong():
    """The first row: sidecars up, statuses lost in the range, analyses stuck now, event-loop
    regressions and MongoDB timeouts in the range, MongoDB reachable, counts the self-audit found
    drifted from the log, the firing alerts, and
    where the runbooks and the /findings page are."""
    row, panels = top_row(DASHBOARD)
    assert DASHBOARD["panels"][0] is row, "the top row comes first in the file too"
    assert DASHBOARD["panels"][1 : len(panels) + 1] == panels, "its panels follow it in the file"
    later = [p for p in DASHBOARD["panels"] if p is not row and p not in panels]
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in [row, *panels])
    assert all(p["gridPos"]["y"] >= bottom for p in later), "nothing else sits beside the top row"

    stats = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels if p["type"] == "stat"}
    wanted = {
        "Sidecars up": r"\bup\{",
        "Statuses lost": r"increase\(tradingagents_analyses_not_persisted_total\{[^}]*\}\[\$__range\]\)",
        "Analyses stuck": r"max\(tradingagents_analyses_stuck\{",
        "Event-loop regression": r'rule="event_loop_regression"[^}]*\}\[\$__range\]',
        "MongoDB timeouts": r'rule="mongodb_operation_timeout"[^}]*\}\[\$__range\]',
        "MongoDB up": r"min\(logmonitor_mongo_up\{",
        "Counts audited": r"increase\(logmonitor_audit_drifted_lines_total\{[^}]*\}\[\$__range\]\)",
    }
    assert list(stats) == list(wanted), "the seven stats, left to right"
    for title, pattern in wanted.items():
        assert re.search(pattern, stats[title]), f"{title}: {stats[title]}"
    stat_panels = [p for p in panels if p["type"] == "stat"]
    assert {p["gridPos"]["y"] for p in stat_panels} == {row["gridPos"]["y"] + 1}, "the stats form one line"
    assert sum(p["gridPos"]["w"] for p in stat_panels) == 24
    for panel in stat_panels:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert panel["options"]["colorMode"] == "background" and len(steps) >= 1, panel["title"]
    assert [p["type"] for p in panels if p["type"] not in {"stat"}] == ["alertlist", "text"]


def test_alert_list_shows_this_apps_prometheus_alerts():
    panel = alertlist_panel(DASHBOARD)
    options = panel["options"]
    assert options["stateFilter"]["firing"] and options["stateFilter"]["pending"]
    assert not options["stateFilter"]["normal"], "only what needs attention"
    assert options["dashboardAlerts"] is False, "Prometheus rules carry no dashboard annotation"
    assert "datasource" not in options, "Grafana compares that filter to a data source name, uninterpolated"
    assert options["viewMode"] == "list" and options["maxItems"] >= len(ALERT_RULES) // 2
    matchers = grafana_matchers(options["alertInstanceLabelFilter"])
    assert matchers, "the filter parses as Grafana parses it"
    for rule in ALERT_RULES:  # Prometheus adds alertname to every alert's labels
        labels = {"alertname": rule["alert"], **rule.get("labels", {})}
        assert grafana_labels_match(labels, matchers), f"{rule['alert']} would not be listed"
    for other in ("Watchdog", "KubePodCrashLooping", "NodeFilesystemAlmostOutOfSpace"):
        assert not grafana_labels_match({"alertname": other, "severity": "critical"}, matchers), other


def test_runbook_links_use_the_runbook_base_constant():
    """The runbooks are docs/alerts.md wherever it is rendered: the hidden constant runbook_base
    says where, the same base as the alert rules' runbook_url (scripts/render-alerts
    --runbook-base), and every runbook link goes through it."""
    base = VARIABLES["runbook_base"]
    assert base["type"] == "constant" and base["hide"] == 2
    assert re.fullmatch(r"https?://\S+/docs/alerts\.md", base["query"]), base["query"]
    in_rules = {rule["annotations"]["runbook_url"].split("#", 1)[0] for rule in ALERT_RULES}
    assert in_rules == {base["query"]}, "set runbook_base to the base the alert rules link"
    (link,) = [link for link in DASHBOARD["links"] if link["title"] == "Runbooks"]
    assert link["type"] == "link" and link["url"] == "${runbook_base}" and link["targetBlank"] is True
    content = text_panel(DASHBOARD)["options"]["content"]
    assert "](${runbook_base})" in content, "the text panel links the runbooks too"
    urls = re.findall(r"\]\(([^)]+)\)", content) + [link["url"] for link in DASHBOARD["links"]]
    for url in urls:
        assert url.startswith(("${runbook_base}", "http://localhost:")), f"{url}: link through runbook_base"


def test_top_row_stats_link_their_alerts_runbook():
    """Each top-row stat links the runbook section of the alert it stands for, and names it."""
    _, panels = top_row(DASHBOARD)
    anchors = markdown_anchors(RUNBOOKS)
    alerts = {rule["alert"] for rule in ALERT_RULES}
    for panel in panels:
        if panel["type"] != "stat":
            continue
        (link,) = panel["links"]
        anchor = re.fullmatch(r"\$\{runbook_base\}#([\w-]+)", link["url"]).group(1)
        assert anchor in anchors, f"{panel['title']}: no section #{anchor} in docs/alerts.md"
        (alert,) = [a for a in alerts if a.lower() == anchor]
        assert link["title"] == f"Runbook: {alert}" and alert in panel["description"], panel["title"]


def test_text_panel_says_how_to_reach_the_findings_page():
    deployment = yaml.safe_load(DEPLOYMENT.read_text("utf-8"))
    pod = deployment["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == "logmonitor"]
    (port,) = [p["containerPort"] for p in sidecar["ports"] if p["name"] == "metrics"]
    compose = yaml.safe_load(COMPOSE.read_text("utf-8"))
    published = [p for p in compose["services"]["logmonitor"]["ports"] if str(p).endswith(f":{port}")]
    assert published, "compose publishes the sidecar's port"
    host_port = str(published[0]).split(":")[-2]

    content = text_panel(DASHBOARD)["options"]["content"]
    assert f"kubectl -n <namespace> port-forward pod/<pod> {port}:{port}" in content
    assert f"http://localhost:{port}/findings" in content
    assert f"http://localhost:{host_port}/findings" in content, "the compose address"
    assert "monitor.findings" in content, "the same findings are in the sidecar's log"
    tables = {p["title"] for p in all_panels(DASHBOARD["panels"]) if p["type"] == "table"}
    for quoted in re.findall(r'"([^"]+)" table', content):
        assert quoted in tables, f"the text names a table {quoted!r} that does not exist"


def test_sidecar_cost_and_version_are_shown():
    text = "\n".join(expr for _, expr in QUERIES)
    assert re.search(r"process_resident_memory_bytes\{", text)
    assert re.search(r"rate\(process_cpu_seconds_total\{", text)
    assert re.search(r"time\(\) - max by \([^)]*\) \(process_start_time_seconds\{", text), "uptime: restarts show"
    assert re.search(r"max by \([^)]*\bversion\b[^)]*\) \(logmonitor_build_info\{", text), "the version label"
    (sidecars,) = [p for p in all_panels(DASHBOARD["panels"]) if p["title"] == "Sidecars"]
    shown = {name for target in sidecars["targets"] for name in promql_metric_names(target["expr"])}
    assert {"up", "logmonitor_build_info", "process_resident_memory_bytes", "process_cpu_seconds_total"} <= shown
    for target in sidecars["targets"]:
        assert target["instant"] is True and target.get("format") == "table", target["refId"]
        assert re.search(r"by \(namespace, pod, instance\b", target["expr"]), "one line per sidecar, with its pod"


def test_panels_cover_what_operators_need():
    text = "\n".join(expr for _, expr in QUERIES)
    titles = {p["title"] for p in all_panels(DASHBOARD["panels"])}
    required = {
        "events by severity over time": r"60 \* sum by \(severity\) \(rate\(tradingagents_log_events_total",
        "success vs error ratio": r'severity="error".*\[15m\]\)\) / sum\(increase\(\w+\{severity=~"error\|success"',
        "timeouts and failures": r"mongodb_operation_timeout\|mongodb_operation_failed",
        "event-loop regression counter": r'rule="event_loop_regression"',
        "check outcomes": r"60 \* sum by \(outcome\) \(rate\(tradingagents_analysis_checks_total",
        "analyses not persisted": r"60 \* sum by \(outcome\) \(rate\(tradingagents_analyses_not_persisted_total",
        "pending checks": r"tradingagents_analysis_checks_pending",
        "stuck analyses": r"tradingagents_analyses_stuck",
        "analyses by status": r"max by \(status\) \(tradingagents_analyses_by_status",
        "mongo up": r"logmonitor_mongo_up",
        "sweep leader": r"logmonitor_sweep_leader",
        "mongo latency": (
            r"histogram_quantile\(0\.\d+, sum by \(le, operation\) "
            r"\(rate\(logmonitor_mongo_query_duration_seconds_bucket"
        ),
        "mongo errors": r"rate\(logmonitor_mongo_errors_total",
        "sidecar lag": r"logmonitor_behind_bytes",
        "lines rate": r"rate\(logmonitor_lines_total",
        "bytes rate": r"rate\(logmonitor_bytes_total",
        "label overflows": r"rate\(logmonitor_label_overflows_total",
    }
    for what, pattern in required.items():
        assert re.search(pattern, text), f"no panel for {what}"
    assert "Event-loop regression" in titles


def test_panels_the_runbooks_name_exist():
    """docs/alerts.md sends the reader to dashboard panels by title: they must be there."""
    text = re.sub(r"`[^`]*`", "", RUNBOOKS.read_text("utf-8"))
    named = set()
    for chunk in re.split(r"\n\s*\n|\n(?=\s*(?:-|\d+\.) )", text):
        chunk = " ".join(chunk.split())
        if re.search(r"\bdashboard\b", chunk, re.I):
            named.update(re.findall(r'"([^"]+)"', chunk))
    assert len(named) >= 5, "the extraction finds the runbooks' panel names"
    titles = {p["title"] for p in all_panels(DASHBOARD["panels"])}
    assert named - titles == set(), "panels the runbooks name but the dashboard lacks"


def test_panel_layout_is_sane():
    panels = list(all_panels(DASHBOARD["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = [p["title"] for p in panels]
    assert len(titles) == len(set(titles)), "panel titles must be unique (the runbooks name them)"
    boxes = []
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        for other, o in boxes:
            across = g["x"] < o["x"] + o["w"] and o["x"] < g["x"] + g["w"]
            overlap = across and g["y"] < o["y"] + o["h"] and o["y"] < g["y"] + g["h"]
            assert not overlap, f"{panel['title']} overlaps {other}"
        boxes.append((panel["title"], g))
    for panel in panels:
        if panel["type"] != "row":
            assert panel.get("description"), f"{panel['title']}: say what the panel shows"


# --- provisioning --------------------------------------------------------------------------


def compose_mounts(service: str) -> dict[str, Path]:
    """Container path -> repo path of a compose service's bind mounts."""
    compose = yaml.safe_load(COMPOSE.read_text("utf-8"))
    mounts = {}
    for volume in compose["services"][service].get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        if source.startswith((".", "/")):
            mounts[target] = (COMPOSE.parent / source).resolve()
    return mounts


def in_container(path: str, mounts: dict[str, Path]) -> Path | None:
    """The repo path a container path maps to through the bind mounts, if any."""
    for target, source in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return source / Path(path).relative_to(target)
    return None


def test_datasource_provisioning_points_at_the_compose_prometheus():
    files = sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml"))
    assert files
    sources = [s for f in files for s in yaml.safe_load(f.read_text("utf-8"))["datasources"]]
    prometheus = [s for s in sources if s["type"] == "prometheus"]
    assert len(prometheus) == 1 and prometheus[0]["isDefault"] is True
    # The alert list panel reads the Prometheus rules only if Grafana may ("Manage alerts via Alerting UI").
    assert prometheus[0].get("jsonData", {}).get("manageAlerts", True) is True
    compose = yaml.safe_load(COMPOSE.read_text("utf-8"))
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", prometheus[0]["url"]).groups()
    assert host in compose["services"] and port == "9090"


def test_dashboard_provisioning_loads_the_dashboard_in_the_compose_grafana():
    files = sorted((GRAFANA / "provisioning" / "dashboards").glob("*.yml"))
    assert files
    mounts = compose_mounts("grafana")
    provisioning = in_container("/etc/grafana/provisioning", mounts)
    assert provisioning == (GRAFANA / "provisioning").resolve(), "compose mounts the provisioning directory"
    for file in files:
        config = yaml.safe_load(file.read_text("utf-8"))
        assert config["apiVersion"] == 1
        for provider in config["providers"]:
            assert provider["type"] == "file"
            directory = in_container(provider["options"]["path"], mounts)
            assert directory is not None and directory.is_dir(), f"{provider['options']['path']} is not mounted"
            assert DASHBOARD_PATH.resolve() in {p.resolve() for p in directory.glob("*.json")}
    compose = yaml.safe_load(COMPOSE.read_text("utf-8"))
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert in_container(home, mounts) == DASHBOARD_PATH.resolve()
