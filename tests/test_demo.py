"""The demo a newcomer runs: every injected fault is caught, and nothing is left running."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

from tests.conftest import REPO
from tests.sidecar_process import free_port, wait_for


def test_demo_catches_every_injected_fault_and_cleans_up(tmp_path):
    report = tmp_path / "demo-report.html"
    flags = ("--duration", "12", "--plain", "--port", str(free_port()), "--report", str(report))
    result = subprocess.run(
        [sys.executable, "-m", "demo", *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "every fault caught" in result.stdout
    final = result.stdout.split("--- final")[1]
    lost = re.search(r"status writes lost \(found in MongoDB\)\s+(\d+) / (\d+) \(\+0 in check\)", final)
    assert lost and lost.group(1) == lost.group(2) and int(lost.group(1)) > 0
    assert re.search(r"false alarms\s+0 / 0", final)
    pids = [int(p) for p in re.search(r"processes: sidecar (\d+), mongodb (\d+)", result.stderr).groups()]
    assert [p for p in pids if os.path.exists(f"/proc/{p}")] == []
    assert f"incident report of this run: {report} (open it in a browser)" in result.stdout
    assert report.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def _default_sigint() -> None:
    # A background job (`make test &`, nohup, some CI runners) starts with SIGINT ignored, and
    # Python rightly keeps ignoring it in the demo: set it as a terminal's Ctrl-C would find it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_everything(tmp_path):
    demo = subprocess.Popen(
        [sys.executable, "-m", "demo", "--plain", "--port", str(free_port())],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    pids: list[int] = []
    try:
        lines: list[str] = []

        def started() -> bool:
            lines.append(demo.stderr.readline())
            return lines[-1].startswith("processes:")

        wait_for(started, timeout=60, what="the demo to start")
        pids = [int(p) for p in re.findall(r"\d+", lines[-1])]
        time.sleep(1)  # let it run for a moment
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) == 0
        wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in pids), timeout=10, what="children gone")
    finally:
        _stop_everything(demo, pids)


def _stop_everything(demo: subprocess.Popen, pids: list[int]) -> None:
    """Whatever failed above, nothing of the demo is left running: SIGTERM (the demo stops its
    children), then SIGKILL for the demo and for every child still there."""
    if demo.poll() is None:
        demo.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            demo.wait(timeout=20)
    if demo.poll() is None:
        demo.kill()
        demo.wait()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    demo.stderr.close()


def test_the_ctrl_c_test_holds_in_a_background_job():
    """The disposition a background job hands down is the one the test above undoes."""
    probe = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"

    def sigint_raises(preexec) -> bool:
        done = subprocess.run([sys.executable, "-c", probe], preexec_fn=preexec, capture_output=True, text=True)
        return done.stdout.strip() == "True"

    assert not sigint_raises(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # what the demo saw before
    assert sigint_raises(lambda: (signal.signal(signal.SIGINT, signal.SIG_IGN), _default_sigint()))
