"""`monitor run` as a real subprocess, for end-to-end tests: start, scrape, signal, kill -9."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from demo.mongo_server import terminate
from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, what: str | Callable[[], str] = "condition"):
    """Poll `predicate` until it returns something truthy; fail with `what` (or what it returns) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.02)


class SidecarProcess:
    def __init__(
        self,
        workdir: Path,
        *args: str,
        config: Path | None = None,
        env: dict | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        """`prefix`: a command the sidecar runs under (`setpriv ...` for another user, `unshare ...`)."""
        self.workdir = workdir
        self.port = free_port()
        self.args = args
        self.prefix = tuple(prefix)
        self.config = config or REPO / "config.yaml"
        self.env = {**os.environ, "TRADINGAGENTS_LOG_TZ": "Asia/Shanghai", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.stderr_path = workdir / f"sidecar-{self.port}.err"

    def start(self, wait_ready: bool = True) -> SidecarProcess:
        self.stderr_file = open(self.stderr_path, "ab")  # noqa: SIM115 (closed in wait())
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "monitor",
                "run",
                "--config",
                str(self.config),
                "--listen",
                f"127.0.0.1:{self.port}",
                "--state-dir",
                str(self.workdir / "state"),
                *self.args,
            ],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr_file,
        )
        if wait_ready:
            wait_for(lambda: self.get("/readyz")[0] == 200 or self.proc.poll() is not None, 30, "readiness")
            assert self.proc.poll() is None, self.stderr()
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metrics(self) -> dict[tuple[str, tuple], float]:
        status, text = self.get("/metrics")
        assert status == 200, f"scrape failed: {status}"
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def events(self, rule: str, severity: str = "error") -> float:
        return self.value("tradingagents_log_events_total", rule=rule, severity=severity)

    def counts(self, log: Path, line: str, rule: str, times: int) -> None:
        """Append `line` to `log` `times` times and wait until the sidecar has counted them all."""
        before = self.events(rule)
        with open(log, "a", encoding="utf-8") as f:
            f.write(line * times)
        wait_for(lambda: self.events(rule) == before + times, what=lambda: f"{times} more {rule}\n{self.stderr()}")

    def stop_cleanly(self) -> None:
        """SIGTERM, and the exit status a clean stop has (its last checkpoint written)."""
        self.signal(signal.SIGTERM)
        assert self.wait() == 0, self.stderr()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 10) -> int:
        code = self.proc.wait(timeout=timeout)
        self.stderr_file.close()
        return code

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            terminate(self.proc)
            self.stderr_file.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
