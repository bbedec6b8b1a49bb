"""Every command in the README's `sh` blocks, run as written (paths of a real host mapped to temp dirs)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GOLDEN, REPO
from tests.sidecar_process import free_port, wait_for

# Covered elsewhere, with the reason: each is exercised, just not from inside the suite itself.
ELSEWHERE = {
    "make run": "tests/test_demo.py runs the demo it starts",
    "make test": "it is the command that runs this suite (.ci/run)",
    "make bench": "a benchmark, run by hand; bench/ prints its numbers",
}


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_the_readme_has_the_two_quick_start_commands_first():
    assert readme_commands()[:2] == ["make run", "make test"]


@pytest.mark.parametrize("command", [c for c in readme_commands() if c not in ELSEWHERE])
def test_readme_command(command, tmp_path, mongo):
    url, name, _ = mongo
    host_logs = tmp_path / "app-logs"
    host_logs.mkdir()
    for suffix in ("", ".1"):
        shutil.copy(GOLDEN / "tradingagents.log", host_logs / f"tradingagents.log{suffix}")
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    port = free_port()
    mapped = (
        command.replace("/app/logs", str(host_logs))
        .replace("/var/lib/node_exporter/textfile", str(textfiles))
        .replace("mongodb://mongo:27017", url)
        .replace("0.0.0.0:9464", f"127.0.0.1:{port}")
        # The repair walkthrough's commands share one plan, in the order the README gives them.
        .replace("plan.json", str(tmp_path.parent / "readme-plan.json"))
        .replace("--report ", f"--report {tmp_path}{os.sep}")  # a report is written beside the test's files
    )
    if "plan.json" in command:
        # and one database: `repair` writes to the one configured, and refuses a plan made for another.
        name = "t_readme_repair_walkthrough"
    env = {
        **os.environ,
        "MONGODB_URL": url,
        "MONGODB_DB_NAME": name,
        "MONITOR_STATE_DIR": str(tmp_path / "state"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    if " run " in f" {mapped} ":
        process = subprocess.Popen(
            ["bash", "-c", mapped],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own group: a failure below stops bash and what it started
        )
        try:
            import urllib.request

            def ready() -> bool:
                try:
                    return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
                except OSError:
                    return process.poll() is not None

            wait_for(ready, timeout=30, what=f"{command} to be ready")
            assert process.poll() is None, process.stderr.read()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            process.stderr.close()
        return
    result = subprocess.run(["bash", "-c", mapped], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), f"{command}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    if "--fail-on error" in command:
        assert result.returncode == 1  # the sample log has error lines
        assert "tradingagents_log_lines_matched_in_files" in (textfiles / "tradingagents.prom").read_text()
    if " verify " in f" {mapped} ":
        assert "claim(s) in the logs" in result.stdout
    if "--report " in command:
        assert (tmp_path / command.split("--report ")[1].split()[0]).read_text().startswith("<!DOCTYPE html>")
