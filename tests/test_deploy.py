"""Deployment files: the image recipe, its build context, docker compose, Kubernetes, Prometheus.

No Docker engine or cluster is needed: the Dockerfile's invariants are read from the file,
its build step is replayed on the exact build context (.dockerignore applied), compose and
Kubernetes manifests are checked for what they mount and run, `kubectl kustomize` renders
the manifests when kubectl is installed, and promtool checks the Prometheus configs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.test_alerts import JOB, PROMTOOL, needs_promtool

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "kubernetes"
UID = 10001
STATE_DIR = "/var/lib/logmonitor"
LOG_DIR = "/app/logs"
CONFIG_PATH = "/etc/logmonitor/config.yaml"
PORT = 9464


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            instruction, _, args = current.strip().partition(" ")
            lines.append((instruction.upper(), args.strip()))
        current = ""
    return lines


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each starting with its FROM (the ARGs before the first FROM left out)."""
    out: list[list[tuple[str, str]]] = []
    for instruction, args in dockerfile_instructions(DOCKERFILE.read_text("utf-8")):
        if instruction == "FROM":
            out.append([])
        if out:
            out[-1].append((instruction, args))
    return out


def global_args() -> dict[str, str]:
    args = {}
    for instruction, value in dockerfile_instructions(DOCKERFILE.read_text("utf-8")):
        if instruction == "FROM":
            break
        if instruction == "ARG" and "=" in value:
            name, _, default = value.partition("=")
            args[name] = default
    return args


def base_image(stage: list[tuple[str, str]]) -> str:
    image = stage[0][1].split()[0]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args()[m.group(1) or m.group(2)], image)


def final_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for instruction, args in stage:
        if instruction == "ENV":
            for name, value in re.findall(r'(\w+)=("[^"]*"|\S+)', args):
                env[name] = value.strip('"')
    return env


def test_dockerfile_is_multi_stage_with_a_slim_final_image():
    all_stages = stages()
    assert len(all_stages) >= 2
    assert re.search(r"\bAS builder\b", all_stages[0][0][1], re.I)
    assert base_image(all_stages[-1]) == "python:3.11-slim"
    assert base_image(all_stages[0]).startswith("python:3.11")


def test_final_stage_has_no_build_tools_and_installs_nothing():
    final = final_stage()
    text = "\n".join(f"{i} {a}" for i, a in final)
    for forbidden in ("gcc", "build-essential", "apt-get install", "pip install", "pip wheel", "curl", "wget"):
        assert forbidden not in text, f"final stage: {forbidden}"
    copies = [a for i, a in final if i == "COPY"]
    assert any("--from=builder" in a and "/opt/venv" in a for a in copies), "the final stage takes the builder's venv"


def test_image_never_contains_the_test_extra():
    text = DOCKERFILE.read_text("utf-8")
    code = "\n".join(f"{i} {a}" for stage in stages() for i, a in stage if i in {"RUN", "COPY", "ADD"})
    assert "[test]" not in code and "secantusdb" not in code
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    assert not any("secantusdb" in dep for dep in project["dependencies"]), "GPL test server as a runtime dependency"
    assert any("secantusdb" in dep for dep in project["optional-dependencies"]["test"])
    assert "secantusdb" in text, "the Dockerfile says why the [test] extra stays out"


def test_final_stage_runs_as_a_fixed_non_root_uid():
    users = [a for i, a in final_stage() if i == "USER"]
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) == UID, "a numeric UID: Kubernetes runAsNonRoot can only verify numbers"


def test_healthcheck_uses_python_on_healthz():
    checks = [a for i, a in final_stage() if i == "HEALTHCHECK"]
    assert len(checks) == 1
    command = json.loads(checks[0][checks[0].index("CMD") + 3 :].strip())
    assert command[0] == "python" and "urllib.request" in command[-1] and "/healthz" in command[-1]


def test_environment_ports_entrypoint_and_command():
    final = final_stage()
    env = env_of(final)
    assert env["MONITOR_LISTEN"] == f"0.0.0.0:{PORT}"
    assert env["MONITOR_STATE_DIR"] == STATE_DIR
    assert env["TRADINGAGENTS_LOG_DIR"] == LOG_DIR
    assert [a for i, a in final if i == "EXPOSE"] == [str(PORT)]
    assert json.loads(next(a for i, a in final if i == "ENTRYPOINT")) == ["monitor"]
    assert json.loads(next(a for i, a in final if i == "CMD")) == ["run", "--config", CONFIG_PATH]


def test_state_dir_is_the_only_place_the_user_may_write():
    final = final_stage()
    runs = " ".join(a for i, a in final if i == "RUN")
    chowned = re.findall(r"chown\s+(?:-\w+\s+)?\S+\s+(\S+)", runs)
    assert chowned == [STATE_DIR]
    volumes = [json.loads(a) for i, a in final if i == "VOLUME"]
    assert volumes == [[STATE_DIR]], "a VOLUME keeps the state writable under `docker run --read-only`"
    assert "PYTHONDONTWRITEBYTECODE" in env_of(final), "read-only root: never try to write .pyc files"


# --- the build context ------------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in DOCKERIGNORE.read_text("utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            patterns.append((negated, line.lstrip("!").strip("/")))
    return patterns


def glob_regex(pattern: str) -> re.Pattern:
    """Docker's (Go filepath.Match) pattern with `**` for any number of directories."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def ignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path (or one of its parent directories) wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negated, pattern in dockerignore_patterns():
        if any(glob_regex(pattern).match(c) for c in candidates):
            result = not negated
    return result


def build_context_files() -> list[Path]:
    files = []
    for path in REPO.rglob("*"):
        relative = path.relative_to(REPO).as_posix()
        if path.is_file() and not ignored(relative) and not relative.startswith((".git/", ".venv/")):
            files.append(path)
    return files


def test_dockerignore_keeps_out_venv_git_tests_state_and_caches():
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/test_deploy.py",
        "state/state.json",
        "state/state.db",
        "state/state.db-wal",
        "logs/tradingagents.log",
        "monitor/__pycache__/cli.cpython-311.pyc",
        "__pycache__/x.pyc",
        ".pytest_cache/v/cache/lastfailed",
        "deploy/docker-compose.yml",
    ):
        assert ignored(path), path
    for path in ("pyproject.toml", "README.md", "config.yaml", "monitor/cli.py", "monitor/__init__.py"):
        assert not ignored(path), path


def test_every_copy_source_is_in_the_build_context():
    for stage in stages():
        for instruction, args in stage:
            if instruction != "COPY" or "--from=" in args:
                continue
            *sources, _dest = args.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
                assert not ignored(source), f"COPY {source}: excluded by .dockerignore"


def test_builder_steps_build_an_installable_wheel_from_the_build_context(tmp_path):
    """Replay the builder's `pip wheel` on exactly the files the build context holds."""
    context = tmp_path / "context"
    for path in build_context_files():
        target = context / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    assert not (context / "tests").exists() and not (context / ".venv").exists()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path / "w"), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 and "No matching distribution found for setuptools" in output:
        pytest.skip("the package index is unreachable: pip cannot fetch the build backend (setuptools)")
    assert result.returncode == 0, output
    (wheel,) = (tmp_path / "w").glob("tradingagents_logmonitor-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "monitor/cli.py" in names and not any(n.startswith("tests/") for n in names)
    runtime = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert runtime and not any("secantusdb" in line for line in runtime)


# --- docker compose -----------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text("utf-8"))


def volumes_of(service: dict) -> list[dict]:
    """Compose volumes in the long form: {type, source, target, read_only}."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            kind = "bind" if source.startswith((".", "/")) else "volume"
            out.append({"type": kind, "source": source, "target": target, "read_only": mode == ["ro"]})
        else:
            out.append({"read_only": False, **volume})
    return out


def test_compose_has_the_whole_stack():
    services = compose()["services"]
    assert set(services) >= {"tradingagents", "logmonitor", "mongo", "prometheus", "alertmanager", "grafana"}
    assert services["mongo"]["image"] == "mongo:7"
    assert services["tradingagents"]["image"] == "tradingagents-server:latest"
    build = services["logmonitor"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_mounts_only_files_that_exist_and_declared_volumes():
    spec = compose()
    declared = set(spec.get("volumes", {}))
    for name, service in spec["services"].items():
        for volume in volumes_of(service):
            if volume["type"] == "bind":
                assert (COMPOSE.parent / volume["source"]).exists(), f"{name}: {volume['source']} does not exist"
            else:
                assert volume["source"] in declared, f"{name}: volume {volume['source']} not declared"


def test_compose_sidecar_reads_the_app_logs_read_only_on_a_read_only_root():
    services = compose()["services"]
    sidecar = services["logmonitor"]
    assert sidecar["read_only"] is True
    mounts = {v["target"]: v for v in volumes_of(sidecar)}
    app_mounts = {v["target"]: v for v in volumes_of(services["tradingagents"])}
    assert mounts[LOG_DIR]["source"] == app_mounts[LOG_DIR]["source"] == "app-logs"
    assert mounts[LOG_DIR]["read_only"] is True and app_mounts[LOG_DIR]["read_only"] is False
    assert mounts[CONFIG_PATH]["read_only"] is True
    assert (COMPOSE.parent / mounts[CONFIG_PATH]["source"]).resolve() == REPO / "config.yaml"
    writable = [t for t, v in mounts.items() if not v["read_only"]]
    assert writable == [STATE_DIR], "the state volume is the only writable place"


def test_compose_prometheus_alertmanager_and_targets_agree():
    spec = compose()
    services = spec["services"]
    prometheus = {v["target"]: v for v in volumes_of(services["prometheus"])}
    config_path = next(a.split("=", 1)[1] for a in services["prometheus"]["command"] if a.startswith("--config.file="))
    config_file = (COMPOSE.parent / prometheus[config_path]["source"]).resolve()
    assert config_file == REPO / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(config_file.read_text("utf-8"))
    for rule_file in config["rule_files"]:  # resolved beside the config, in the container too
        container_path = str(Path(config_path).parent / rule_file)
        assert (COMPOSE.parent / prometheus[container_path]["source"]).resolve() == REPO / "prometheus" / rule_file
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    (target,) = job["static_configs"][0]["targets"]
    assert target == f"logmonitor:{PORT}" and "logmonitor" in services
    (alertmanager,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    host, port = alertmanager.split(":")
    assert host in services and port == "9093"
    am = {v["target"]: v for v in volumes_of(services["alertmanager"])}
    am_config = next(a.split("=", 1)[1] for a in services["alertmanager"]["command"] if a.startswith("--config.file="))
    am_file = COMPOSE.parent / am[am_config]["source"]
    routes = yaml.safe_load(am_file.read_text("utf-8"))
    receivers = {r["name"] for r in routes["receivers"]}
    used = {routes["route"]["receiver"], *(r["receiver"] for r in routes["route"].get("routes", []))}
    assert used <= receivers


# --- Kubernetes -----------------------------------------------------------------------------------


def k8s_objects() -> dict[str, dict]:
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name in {"config.yaml", "kustomization.yaml"}:
            continue
        for doc in yaml.safe_load_all(path.read_text("utf-8")):
            if doc:
                objects[doc["kind"]] = doc
    return objects


def pod_spec() -> dict:
    return k8s_objects()["Deployment"]["spec"]["template"]["spec"]


def container(name: str) -> dict:
    return next(c for c in pod_spec()["containers"] if c["name"] == name)


def test_kubernetes_manifests_parse():
    objects = k8s_objects()
    assert set(objects) >= {"Deployment", "Service", "PodMonitor"}
    deployment = objects["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_app_and_sidecar_share_the_log_emptydir_read_only_for_the_sidecar():
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    app = {m["mountPath"]: m for m in container("tradingagents")["volumeMounts"]}
    sidecar = {m["mountPath"]: m for m in container("logmonitor")["volumeMounts"]}
    shared = sidecar[LOG_DIR]["name"]
    assert app[LOG_DIR]["name"] == shared and "emptyDir" in volumes[shared]
    assert sidecar[LOG_DIR]["readOnly"] is True and not app[LOG_DIR].get("readOnly", False)
    writable = [path for path, m in sidecar.items() if not m.get("readOnly", False)]
    assert writable == [STATE_DIR], "the state directory is the sidecar's only writable mount"
    assert "emptyDir" in volumes[sidecar[STATE_DIR]["name"]]
    config_volume = volumes[sidecar[str(Path(CONFIG_PATH).parent)]["name"]]
    assert config_volume["configMap"]["name"] == "logmonitor-config"


def test_sidecar_probes_resources_and_security():
    sidecar = container("logmonitor")
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports["metrics"] == PORT
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        port = sidecar[probe]["httpGet"]["port"]
        assert ports.get(port, port) == PORT
    resources = sidecar["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}, kind
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == UID
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["MONITOR_LISTEN"]["value"] == f"0.0.0.0:{PORT}"
    assert env["MONITOR_STATE_DIR"]["value"] == STATE_DIR
    assert sidecar["args"] == ["run", "--config", CONFIG_PATH]


def test_mongodb_url_comes_from_a_secret():
    for name in ("tradingagents", "logmonitor"):
        env = {e["name"]: e for e in container(name)["env"]}
        ref = env["MONGODB_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "tradingagents-mongodb", "key": "url"}
    text = "\n".join(p.read_text("utf-8") for p in K8S.glob("*.yaml"))
    assert "mongodb://" not in text.replace("mongodb://user:pass@mongo", ""), "no real URL in the manifests"


def test_scrape_annotations_service_and_podmonitor_find_the_sidecar():
    objects = k8s_objects()
    template = objects["Deployment"]["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/job"] == JOB
    labels = template["metadata"]["labels"]
    service = objects["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(PORT, "metrics")]
    monitor = objects["PodMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert {"targetLabel": "job", "replacement": JOB} in endpoint["relabelings"]


def test_kustomize_config_is_the_repository_config():
    """config.yaml is the single source of truth; kustomize cannot read outside its directory,
    so deploy/kubernetes/config.yaml is a copy that must stay identical."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text("utf-8"))
    (generator,) = kustomization["configMapGenerator"]
    assert generator["name"] == "logmonitor-config" and generator["files"] == ["config.yaml"]
    assert set(kustomization["resources"]) <= {p.name for p in K8S.glob("*.yaml")}
    copy, source = (K8S / "config.yaml").read_bytes(), (REPO / "config.yaml").read_bytes()
    assert copy == source, "deploy/kubernetes/config.yaml differs from config.yaml: cp config.yaml deploy/kubernetes/"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed (renders the kustomization)")
def test_kubectl_kustomize_renders_the_config_map_and_references_it():
    result = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    objects = {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}
    config_map = objects["ConfigMap"]
    assert config_map["data"]["config.yaml"] == (REPO / "config.yaml").read_text("utf-8")
    name = config_map["metadata"]["name"]
    assert name.startswith("logmonitor-config-"), "a content hash in the name rolls the pods on a change"
    volumes = objects["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert [v["configMap"]["name"] for v in volumes if "configMap" in v] == [name]


# --- Prometheus configs ----------------------------------------------------------------------------


@needs_promtool
def test_promtool_checks_the_example_prometheus_config():
    result = subprocess.run(
        [PROMTOOL, "check", "config", "prometheus/prometheus.yml"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "rule files found" in result.stdout


@needs_promtool
def test_promtool_checks_the_kubernetes_prometheus_config(tmp_path):
    """Debian's promtool is built without Kubernetes discovery: then every other part is checked
    with static targets in place of `kubernetes_sd_configs`."""
    source = REPO / "prometheus" / "prometheus-kubernetes.yml"
    result = subprocess.run([PROMTOOL, "check", "config", str(source)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0 and "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        config = yaml.safe_load(source.read_text("utf-8"))
        for job in config["scrape_configs"]:
            assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
            job["static_configs"] = [{"targets": ["pod:9464"]}]
        shutil.copy(REPO / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
        checked = tmp_path / "prometheus-kubernetes.yml"
        checked.write_text(yaml.safe_dump(config), encoding="utf-8")
        result = subprocess.run([PROMTOOL, "check", "config", str(checked)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_scrape_job_labels_its_targets_with_the_alerts_job():
    for name in ("prometheus.yml", "prometheus-kubernetes.yml"):
        config = yaml.safe_load((REPO / "prometheus" / name).read_text("utf-8"))
        assert config["rule_files"] == ["alerts.yml"]
        for job in config["scrape_configs"]:
            relabelled = [r for r in job.get("relabel_configs", []) if r.get("target_label") == "job"]
            if relabelled:
                assert relabelled[-1]["replacement"] == JOB, name
            else:
                assert job["job_name"] == JOB, name
    kubernetes = yaml.safe_load((REPO / "prometheus" / "prometheus-kubernetes.yml").read_text("utf-8"))
    keeps = {
        tuple(r["source_labels"]): r["regex"]
        for r in kubernetes["scrape_configs"][0]["relabel_configs"]
        if r.get("action") == "keep"
    }
    annotations = k8s_objects()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    for labels, regex in keeps.items():
        annotation = labels[0].removeprefix("__meta_kubernetes_pod_annotation_prometheus_io_")
        annotation = f"prometheus.io/{annotation}"
        assert re.fullmatch(regex, annotations[annotation]), annotation
