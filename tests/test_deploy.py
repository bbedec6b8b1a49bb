"""Deployment files: the image recipe, its lock and build context, docker compose, Kubernetes, Prometheus.

No Docker engine or cluster is needed: the Dockerfile's invariants are read from the file,
its build step is replayed on the exact build context (.dockerignore applied), the lock of
runtime dependencies is checked against pyproject.toml (and downloaded with its hashes for
the image's platform when the package index is reachable), compose and Kubernetes manifests
are checked for what they mount, run and let through, `kubectl kustomize` renders the
manifests when kubectl is installed, and promtool checks the Prometheus configs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO
from tests.test_alerts import JOB, PROMTOOL, needs_promtool

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
LOCK = REPO / "requirements.lock"
LOCK_SCRIPT = REPO / "scripts" / "lock-requirements"
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "kubernetes"
UID = 10001
STATE_DIR = "/var/lib/logmonitor"
LOG_DIR = "/app/logs"
CONFIG_PATH = "/etc/logmonitor/config.yaml"
PORT = 9464
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}")


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
    return _assignments(stage, "ENV", r"\w+")


def untagged(image: str) -> str:
    """The image without its digest: `python:3.11-slim@sha256:...` -> `python:3.11-slim`."""
    return image.split("@", 1)[0]


def test_dockerfile_is_multi_stage_with_a_slim_final_image():
    all_stages = stages()
    assert len(all_stages) >= 2
    assert re.search(r"\bAS builder\b", all_stages[0][0][1], re.I)
    assert untagged(base_image(all_stages[-1])) == "python:3.11-slim"
    assert untagged(base_image(all_stages[0])).startswith("python:3.11")


def test_every_base_image_is_pinned_by_digest_with_its_tag_beside_it():
    """A tag moves (python:3.11-slim is rebuilt every few weeks); a digest names one image.
    The tag stays in the reference (ignored for the pull, read by people and update tools)."""
    for stage in stages():
        image = base_image(stage)
        assert re.fullmatch(r"[\w.\-/]+:[\w.\-]+@sha256:[0-9a-f]{64}", image), f"FROM {image}: no tag@digest"
    text = DOCKERFILE.read_text("utf-8")
    assert not re.search(r"^#\s*syntax=(?!.*@sha256:)", text, re.M), "an unpinned frontend image (# syntax=)"
    # Where the digest came from, and how to move it, is said next to it.
    (line_no,) = [i for i, line in enumerate(text.splitlines()) if DIGEST.search(line)]
    comment = "\n".join(text.splitlines()[max(0, line_no - 4) : line_no])
    assert "python:3.11-slim" in comment and "Digest" in comment


def test_runtime_dependencies_come_from_the_lock_with_their_hashes():
    builder = stages()[0]
    runs = [a for i, a in builder if i == "RUN"]
    copies = [a.split() for i, a in builder if i == "COPY"]
    assert ["requirements.lock", "./"] in copies
    (install,) = [r for r in runs if "-r requirements.lock" in r]
    assert "--require-hashes" in install and "--only-binary=:all:" in install
    # The lock's layer comes before the sources are copied: a code change reuses it.
    order = [(i, a) for i, a in builder if i in {"COPY", "RUN"}]
    assert order.index(("RUN", install)) < order.index(("COPY", "monitor ./monitor"))
    # The project itself adds nothing to the lock: installed without dependencies, then
    # `pip check` fails the build if the lock left one out.
    code = " ".join(runs)
    installs = re.findall(r"pip install ([^&]*)", code)
    assert len(installs) == 2, installs
    (project,) = [i for i in installs if "requirements.lock" not in i]
    assert "--no-deps" in project and "--no-index" in project and "tradingagents_logmonitor-" in project
    assert "pip check" in code
    # The build backend: the base image's setuptools (pinned by the digest), nothing fetched.
    assert re.search(r"pip wheel [^&]*--no-build-isolation", code)


def test_tzdata_is_installed_once_from_the_lock():
    """zoneinfo's data comes from the locked tzdata package, in the one RUN that installs the
    lock: no second install of it (pip by name, or apt) in another layer."""
    runs = [a for stage in stages() for i, a in stage if i == "RUN"]
    assert not any(re.search(r"\b(apt-get|apt|apk|dnf|yum)\b", r) for r in runs), "no OS packages installed"
    assert not any(re.search(r"\btzdata\b", r) for r in runs), "tzdata installed by name: it comes with the lock"
    assert len([r for r in runs if "requirements.lock" in r]) == 1
    assert "tzdata" in lock_entries()
    assert any(Requirement(d).name == "tzdata" for d in PROJECT["dependencies"])


def labels_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    return _assignments(stage, "LABEL", r"[\w.\-]+")


def _assignments(stage: list[tuple[str, str]], instruction: str, name: str) -> dict[str, str]:
    """NAME=value pairs of every `instruction` line of a stage, quotes removed."""
    found = {}
    for kind, args in stage:
        if kind == instruction:
            for key, value in re.findall(rf'({name})=("[^"]*"|\S+)', args):
                found[key] = value.strip('"')
    return found


def args_of(stage: list[tuple[str, str]]) -> set[str]:
    return {a.split("=", 1)[0] for i, a in stage if i == "ARG"}


def test_oci_labels_carry_title_description_version_revision_source_and_created():
    final = final_stage()
    labels = labels_of(final)
    oci = "org.opencontainers.image."
    assert labels[oci + "title"] == PROJECT["name"]
    assert labels[oci + "description"]
    assert labels[oci + "licenses"] == PROJECT["license"]["text"]
    # Each of these from a build argument declared in the final stage (so it has a value there).
    for key, arg in {"version": "VERSION", "revision": "REVISION", "source": "SOURCE", "created": "CREATED"}.items():
        assert labels[oci + key] == "${" + arg + "}", key
        assert arg in args_of(final), f"ARG {arg} not declared in the final stage"
    # The version's default is pyproject's, and the builder refuses a wheel of another version.
    assert global_args()["VERSION"] == PROJECT["version"]
    assert "VERSION" in args_of(stages()[0])
    builder_runs = " ".join(a for i, a in stages()[0] if i == "RUN")
    assert 'test -f "/wheels/tradingagents_logmonitor-${VERSION}-py3-none-any.whl"' in builder_runs
    # Labels that change on every build come after every layer (they would void its cache).
    last_layer = max(n for n, (i, _) in enumerate(final) if i in {"RUN", "COPY"})
    assert min(n for n, (i, a) in enumerate(final) if i == "ARG" and a.startswith("CREATED")) > last_layer


# --- the lock of runtime dependencies -------------------------------------------------------------


def lock_entries() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {canonical name: (version, [sha256, ...])}; every entry `name==version`."""
    entries: dict[str, tuple[str, list[str]]] = {}
    joined = re.sub(r"\\\n\s*", " ", LOCK.read_text("utf-8"))
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][\w.\-]*)==([\w.+!\-]+)((?:\s+--hash=sha256:[0-9a-f]{64})*)", line)
        assert match, f"requirements.lock: not `name==version --hash=sha256:...`: {line[:120]}"
        name = canonicalize_name(match[1])
        assert name not in entries, f"requirements.lock: {name} twice"
        entries[name] = (match[2], re.findall(r"sha256:([0-9a-f]{64})", match[3]))
    return entries


IMAGE_MARKERS = {  # the image: CPython 3.11 on Linux
    "python_version": "3.11",
    "python_full_version": "3.11.15",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "extra": "",
}


def test_lock_pins_every_runtime_dependency_with_a_hash():
    entries = lock_entries()
    assert entries
    for dependency in PROJECT["dependencies"]:
        requirement = Requirement(dependency)
        if requirement.marker and not requirement.marker.evaluate(IMAGE_MARKERS):
            continue
        name = canonicalize_name(requirement.name)
        assert name in entries, (
            f"{name}: a runtime dependency missing from requirements.lock: scripts/lock-requirements"
        )
        version, hashes = entries[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, pyproject.toml wants {requirement.specifier}: "
            "scripts/lock-requirements"
        )
    for name, (version, hashes) in entries.items():
        assert hashes, f"{name}=={version} has no --hash in requirements.lock"


def test_lock_holds_no_test_dependency_and_says_how_it_was_made():
    entries = lock_entries()
    for dependency in PROJECT["optional-dependencies"]["test"]:
        assert canonicalize_name(Requirement(dependency).name) not in entries, dependency
    header = LOCK.read_text("utf-8").splitlines()[:3]
    assert any("scripts/lock-requirements" in line for line in header), "regenerate it with scripts/lock-requirements"
    assert LOCK_SCRIPT.exists() and os.access(LOCK_SCRIPT, os.X_OK)
    script = LOCK_SCRIPT.read_text("utf-8")
    assert "--generate-hashes" in script and "--python-version 3.11" in script


OFFLINE = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Could not fetch URL",
    "ConnectTimeoutError",
    "ProxyError",
    "Network is unreachable",
)


def test_lock_downloads_with_its_hashes_for_the_image_platform(tmp_path):
    """The builder's install step, minus installing: every file for CPython 3.11 on the image's
    x86-64 glibc (Debian trixie: 2.41) must be a wheel whose sha256 the lock lists, and pip's
    --require-hashes mode fails if a dependency of a locked package is not locked itself."""
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(41, 16, -1)] + ["manylinux2014_x86_64"]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--require-hashes", "--only-binary=:all:"]
    command += [f"--platform={p}" for p in platforms]
    command += ["--python-version=3.11", "--implementation=cp", "--retries=1", "--timeout=20"]
    command += ["--dest", str(tmp_path / "wheels"), "--requirement", str(LOCK)]
    # The package index as the image's pip sees it: no local wheel directories, no constraints
    # of this machine's pip configuration (their files need not be the ones the lock hashed).
    keep = {"PIP_INDEX_URL", "PIP_CERT", "PIP_CLIENT_CERT", "PIP_TRUSTED_HOST", "PIP_PROXY"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in keep}
    env["PIP_CONFIG_FILE"] = os.devnull
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    output = result.stdout + result.stderr
    if result.returncode != 0 and any(marker in output for marker in OFFLINE):
        pytest.skip("the package index is unreachable: the lock's files cannot be fetched")
    assert result.returncode == 0, output
    downloaded = {canonicalize_name(p.name.split("-")[0]) for p in (tmp_path / "wheels").glob("*.whl")}
    assert downloaded == set(lock_entries())


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
        "scripts/lock-requirements",
    ):
        assert ignored(path), path
    kept = ("pyproject.toml", "requirements.lock", "README.md", "config.yaml", "monitor/cli.py", "monitor/__init__.py")
    for path in kept:
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


def test_compose_starts_each_service_once_what_it_depends_on_is_healthy():
    services = compose()["services"]
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check["test"][0] in {"CMD", "CMD-SHELL"}, f"{name}: no healthcheck"
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on in the long form, with a condition"
        for other, condition in depends.items():
            assert other in services, f"{name} depends on {other}, which is not a service"
            assert condition == {"condition": "service_healthy"}, f"{name} -> {other}"
    # No cycle: every service can be started.
    started: set[str] = set()
    while len(started) < len(services):
        ready = {n for n, s in services.items() if n not in started and set(s.get("depends_on", {})) <= started}
        assert ready, f"depends_on cycle among {set(services) - started}"
        started |= ready


def test_compose_starts_the_sidecar_before_the_server_and_stops_it_after():
    """Compose starts what a service depends on first and stops it last: the server depends on
    the sidecar (as the native sidecar in Kubernetes), never the other way round."""
    services = compose()["services"]
    assert "logmonitor" in services["tradingagents"]["depends_on"]
    assert "tradingagents" not in services["logmonitor"].get("depends_on", {})
    assert "mongo" in services["tradingagents"]["depends_on"]
    command = " ".join(services["logmonitor"]["healthcheck"]["test"])
    assert f"127.0.0.1:{PORT}/healthz" in command and "urllib.request" in command
    # Mounted first, the sidecar must not give the new log volume its image's root-owned /app/logs.
    mounts = {v["target"]: v for v in volumes_of(services["logmonitor"])}
    assert mounts[LOG_DIR]["volume"]["nocopy"] is True


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
    """A container of the pod, the sidecar (an init container) included."""
    spec = pod_spec()
    return next(c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == name)


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number: `25m` -> 0.025, `64Mi` -> 67108864."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()
    return float(number) * units.get(unit, 1)


def test_kubernetes_manifests_parse():
    objects = k8s_objects()
    assert set(objects) >= {"Deployment", "Service", "PodMonitor", "NetworkPolicy"}
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


def test_sidecar_is_a_native_sidecar_started_before_and_stopped_after_the_server():
    """An init container with restartPolicy Always (Kubernetes 1.29+): started, and through its
    startupProbe up, before the server; stopped only after the server has exited."""
    spec = pod_spec()
    (sidecar,) = [c for c in spec["initContainers"] if c["name"] == "logmonitor"]
    assert sidecar["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["tradingagents"], "the sidecar is not a regular container"
    assert all("restartPolicy" not in c for c in spec["containers"])
    # Init containers start in order, each after the one before is up: the sidecar first, so
    # it watches from the start; its startupProbe gates everything after it.
    assert spec["initContainers"][0] is sidecar
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/healthz", "not /readyz: a sidecar must not hold the server"
    assert "1.29" in (K8S / "deployment.yaml").read_text("utf-8"), "the manifest says which Kubernetes it needs"


def test_sidecar_resources_follow_the_measurements():
    """Measured: 50-56 MB resident following a log (peak ~60 MB); 101 MiB at a restart with
    100,000 pending claims, surviving in a 192 MiB cgroup; ~0.8% of a core per MB/s of log,
    ~2% at 1.4 MB/s with scraping."""
    resources = container("logmonitor")["resources"]
    requests = {k: quantity(v) for k, v in resources["requests"].items()}
    limits = {k: quantity(v) for k, v in resources["limits"].items()}
    assert 60e6 <= requests["memory"] <= 101 * 2**20, "the request covers the following peak, not the restart peak"
    assert limits["memory"] >= 192 * 2**20, "below the 192 MiB a restart at max_pending was measured to survive"
    assert 0.020 <= requests["cpu"] <= 0.1, "2% of a core measured at 1.4 MB/s with scraping"
    assert limits["cpu"] >= 5 * requests["cpu"], "room for start-up and catching up a backlog"
    for kind in ("cpu", "memory"):
        assert requests[kind] <= limits[kind], kind
    text = (K8S / "deployment.yaml").read_text("utf-8")
    for figure in ("101 MiB", "192 MiB", "0.8%", "1.4 MB/s", "0.2-0.3 s"):
        assert figure in text, f"the resources' comment does not give the measurement {figure}"


def ports_allowed(rule: dict, container: dict) -> set[int]:
    """The ports of `container` a NetworkPolicy ingress rule opens (named ports resolved)."""
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    numbers = {p["containerPort"] for p in container.get("ports", [])}
    if not rule.get("ports"):
        return numbers
    allowed = set()
    for port in rule["ports"]:
        if port.get("protocol", "TCP") != "TCP":
            continue
        first = named.get(port["port"], port["port"])
        last = port.get("endPort", first)
        allowed |= {n for n in numbers if isinstance(first, int) and first <= n <= last}
    return allowed


PROMETHEUS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}


def test_network_policy_lets_only_prometheus_reach_the_metrics_port():
    objects = k8s_objects()
    policy = objects["NetworkPolicy"]["spec"]
    labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items(), "it selects the server's pods"
    assert policy["policyTypes"] == ["Ingress"], "outgoing traffic (MongoDB, the server's calls) untouched"
    sidecar = container("logmonitor")
    opening = [r for r in policy["ingress"] if PORT in ports_allowed(r, sidecar)]
    assert len(opening) == 1, "one rule opens the metrics port"
    (rule,) = opening
    assert rule.get("from") == [PROMETHEUS_PEER], "the metrics port from Prometheus pods of `monitoring` only"
    # The source is documented where it is set, with what to change.
    text = (K8S / "networkpolicy.yaml").read_text("utf-8")
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    for documented in ("monitoring", "kubernetes.io/metadata.name", "app.kubernetes.io/name=prometheus"):
        assert documented in comments, documented


def test_network_policy_leaves_the_server_reachable():
    """Selecting the pod for Ingress refuses whatever no rule allows: every port of the server
    stays open to everyone, as without the policy."""
    policy = k8s_objects()["NetworkPolicy"]["spec"]
    server = container("tradingagents")
    ports = {p["containerPort"] for p in server["ports"]}
    assert ports and PORT not in ports
    open_to_all = set()
    for rule in policy["ingress"]:
        if not rule.get("from"):
            open_to_all |= ports_allowed(rule, server)
    assert open_to_all == ports


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
    assert {"deployment.yaml", "service.yaml", "networkpolicy.yaml"} <= set(kustomization["resources"])
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
    spec = objects["Deployment"]["spec"]["template"]["spec"]
    assert [v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v] == [name]
    (sidecar,) = spec["initContainers"]
    assert sidecar["name"] == "logmonitor" and sidecar["restartPolicy"] == "Always"
    assert objects["NetworkPolicy"]["spec"]["ingress"][0]["from"] == [PROMETHEUS_PEER]


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
