"""Shared fixtures: the repo's paths, config files written on the fly, the CLI run for real."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
MONITOR = [sys.executable, "-m", "monitor"]
# Every process a test starts runs the checkout under test, from whatever directory, even where the
# interpreter has another checkout installed (editable): the sidecar's working directory is not REPO.
# One-shot commands keep compiled rules in the user's cache: the tests' own, not the user's.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="monitor-test-cache-")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)

# One real line per class, in the server's file format.
LINE = (
    "2025-10-22 14:20:02,123 | backend.tradingagents_server | {level:<8} | "
    "tradingagents_server:analysis_worker:2552 | {msg}"
)


def log_line(msg: str, level: str = "INFO") -> str:
    return LINE.format(level=level, msg=msg)


MINIMAL_CONFIG = """\
version: 1
rules:
  - name: timeout
    severity: error
    pattern: 'MongoDB操作超时'
    examples: ['x | MongoDB操作超时']
  - name: returned_none
    severity: warning
    pattern: '⚠️ MongoDB更新返回None'
    examples: ['x | ⚠️ MongoDB更新返回None，可能更新失败']
  - name: completed
    severity: success
    pattern: '✅ 分析完成状态已更新到数据库: (?P<analysis_id>\\S+)'
    examples: ['x | ✅ 分析完成状态已更新到数据库: 68f8741c3512a67997df93d2']
"""


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a config file from YAML text; returns its path."""

    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


def run_monitor(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 60):
    """Run `python -m monitor ARGS` as a user would; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*MONITOR, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(autouse=True)
def no_thread_leaks():
    """Every test must stop the threads it starts (watchdog's suite does the same)."""
    before = set(threading.enumerate())
    yield
    # watchdog keeps one process-wide inotify reader thread (InotifyFD) once any observer exists.
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and type(t).__name__ != "InotifyFD"]
    for thread in leaked:
        thread.join(timeout=2)
    leaked = [t.name for t in leaked if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture
def sidecars():
    """Make `monitor run` processes (tests/sidecar_process.py); every one is stopped afterwards."""
    from tests.sidecar_process import SidecarProcess

    started: list[SidecarProcess] = []

    def make(workdir, *args, **kwargs) -> SidecarProcess:
        started.append(SidecarProcess(workdir, *args, **kwargs))
        return started[-1]

    yield make
    for sidecar in started:
        sidecar.stop()


def append(path, text: str, times: int = 1) -> None:
    """Append `text` `times` times, as a server's logging handler does (one open, one write)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(text * times)


# --- MongoDB: a real wire-protocol server -----------------------------------------------------

from demo.mongo_server import MongoServer  # noqa: E402 (kept beside the fixtures that use it)


@pytest.fixture(scope="session")
def mongo_server():
    """One server for the session; each test gets its own database (see `mongo`)."""
    external = os.environ.get("MONGODB_TEST_URL")
    if external:
        yield type("External", (), {"url": external})()
        return
    server = MongoServer().start()
    yield server
    server.stop()


@pytest.fixture
def mongo(mongo_server, request):
    """(url, database name, pymongo database) for this test; the database is dropped afterwards."""
    import re

    import pymongo

    name = "t_" + re.sub(r"[^a-zA-Z0-9]", "_", request.node.name)[:50]
    client = pymongo.MongoClient(mongo_server.url, serverSelectionTimeoutMS=5000)
    client.drop_database(name)
    yield mongo_server.url, name, client[name]
    client.drop_database(name)
    client.close()


# --- a real browser: headless Chromium, network off (tests/browser.py) --------------------------


@pytest.fixture(scope="session")
def chromium():
    from tests.browser import Chromium, find_chromium

    executable = find_chromium()
    if executable is None:
        pytest.skip("no chromium on PATH: scripts/install-system-deps installs Debian's chromium package")
    return Chromium(executable)


def run_unprivileged(script: str, check: bool = True, args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Python code (`-c script`, or `-m` with `args`) as user nobody (root reads and writes
    everything): a real EACCES, not a mocked one. Skips where that cannot be done."""
    import shutil

    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root to switch to an unprivileged user with setpriv")
    unprivileged = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    python = [sys.executable, *(args or ("-c", script))]
    result = subprocess.run([*unprivileged, *python], capture_output=True, text=True, cwd=REPO, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def shared_directory():
    """A directory another user can reach (pytest's own are private to root)."""
    import shutil
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="shared-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
