"""grafana/: the dashboard is portable (datasource variable, no hard-coded uid), queries only
real metrics, covers what operators need, and is provisioned with no clicks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.test_alerts import KNOWN_METRICS, promql_metric_names

GRAFANA = REPO / "grafana"
DASHBOARD_PATH = GRAFANA / "dashboards" / "tradingagents-logmonitor.json"
COMPOSE = REPO / "deploy" / "docker-compose.yml"
DS = "${datasource}"


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


DASHBOARD = load_dashboard()
QUERIES = dashboard_queries(DASHBOARD)


def test_dashboard_loads_with_a_current_schema():
    assert DASHBOARD["schemaVersion"] >= 39
    assert DASHBOARD["title"] and DASHBOARD["uid"]
    assert "id" not in DASHBOARD or DASHBOARD["id"] is None, "an id would clash with the instance's own ids"


def test_datasource_is_a_variable_of_type_datasource():
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    ds = variables["datasource"]
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
    panels = [p for p in all_panels(DASHBOARD["panels"]) if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"]["uid"] == DS, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DS, panel["title"]
            assert target["expr"].strip(), panel["title"]
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


def test_queries_filter_on_the_dashboard_variables():
    for where, expr in QUERIES:
        for selector in re.findall(r"[a-z_:]+\{([^}]*)\}", expr):
            assert 'instance=~"$instance"' in selector and 'job=~"$job"' in selector, f"{where}: {selector}"


def test_panels_cover_what_operators_need():
    text = "\n".join(expr for _, expr in QUERIES)
    titles = {p["title"] for p in all_panels(DASHBOARD["panels"])}
    required = {
        "events by severity over time": r"sum by \(severity\) \(rate\(tradingagents_log_events_total",
        "success vs error ratio": r'severity="error".*\[15m\]\)\) / sum\(increase\(\w+\{severity=~"error\|success"',
        "timeouts and failures": r"mongodb_operation_timeout\|mongodb_operation_failed",
        "event-loop regression counter": r'rule="event_loop_regression"',
        "check outcomes": r"sum by \(outcome\) \(increase\(tradingagents_analysis_checks_total",
        "analyses not persisted": r"sum by \(outcome\) \(increase\(tradingagents_analyses_not_persisted_total",
        "pending checks": r"tradingagents_analysis_checks_pending",
        "stuck analyses": r"tradingagents_analyses_stuck",
        "mongo up": r"tradingagents_mongo_up",
        "mongo latency": (
            r"histogram_quantile\(0\.\d+, sum by \(le, operation\) "
            r"\(rate\(tradingagents_mongo_query_duration_seconds_bucket"
        ),
        "sidecar lag": r"logmonitor_bytes_behind",
        "lines rate": r"rate\(logmonitor_lines_total",
        "bytes rate": r"rate\(logmonitor_bytes_total",
    }
    for what, pattern in required.items():
        assert re.search(pattern, text), f"no panel for {what}"
    assert "Event-loop regression" in titles


def test_panel_layout_is_sane():
    panels = list(all_panels(DASHBOARD["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
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
