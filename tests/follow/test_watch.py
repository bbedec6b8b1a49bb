"""The waker: structure changes always wake the loop, writes only while it is idle; watches are kept."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

import pytest

from monitor.follow.watch import Waker
from tests.conftest import REPO, log_line
from tests.sidecar_process import free_port, wait_for


def test_writes_wake_only_when_wanted_and_switching_keeps_the_watches(tmp_path, caplog):
    """The follow loop switches write wake-ups off while busy and on when idle, many times a
    second under load. Re-scheduling watches for that made watchdog log
    `ERROR ... InotifyEmitter.queue_events() called when the thread is inactive`."""
    log = tmp_path / "app.log"
    log.touch()
    waker = Waker()
    waker.start()
    stop = threading.Event()

    def writer() -> None:
        with open(log, "ab", buffering=0) as f:
            while not stop.is_set():
                f.write(b"2025-10-22 14:20:02,123 | line\n")

    thread = threading.Thread(target=writer)
    try:
        with caplog.at_level(logging.WARNING):
            waker.watch_directories({str(tmp_path)})
            emitters = set(waker._observer.emitters)
            thread.start()
            turned_on = sum(waker.wake_on_writes(n % 2 == 0) for n in range(2000))
            assert turned_on == 1000
            assert set(waker._observer.emitters) == emitters  # the same watch throughout
            waker.event.clear()
            assert waker.wait(0.2) is False  # busy (writes do not wake): only the timeout ends the wait
            waker.wake_on_writes(True)
            assert waker.wait(10) is True  # idle: the next write wakes it
            assert not waker.event.is_set()  # a write is no structure change
            (tmp_path / "app.log.1").touch()
            waker.structure_changed = False
            wait_for(lambda: waker.structure_changed and waker.event.is_set(), 10, "a created file to wake the loop")
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        waker.stop()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_without_an_inotify_instance_the_poll_is_the_safety_net(tmp_path, caplog):
    """A node out of inotify instances: write wake-ups are off, said once; waiting still works."""

    def exhausted():
        raise OSError(24, "inotify instance limit reached")

    with caplog.at_level(logging.WARNING):
        waker = Waker(inotify=exhausted)
    assert "cannot watch for writes ([Errno 24] inotify instance limit reached)" in caplog.text
    waker.watch_directories({str(tmp_path)})
    waker.wake_on_writes(True)
    (tmp_path / "app.log").write_text("line\n")
    assert waker.wait(0.05) is False  # nothing but the poll interval ends an idle wait now
    waker.event.set()
    assert waker.wait(10) is True
    waker.stop()


EXHAUST = """
import sys, time
from inotify_simple import INotify
held = []
try:
    while True:
        held.append(INotify())
except OSError as exc:
    print(f"holding {len(held)}: {exc}", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_without_any_inotify_instance_monitor_run_follows_by_polling():
    """A node whose inotify instances are used up: `monitor run` starts, says so once, exports
    the mode and counts by polling (it died at start with an uncaught OSError)."""
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    directory = Path(tempfile.mkdtemp(prefix="no-inotify-"))
    directory.chmod(0o777)
    log = directory / "app.log"
    log.touch()
    log.chmod(0o666)
    port = free_port()
    exhaust = subprocess.Popen([*nobody, sys.executable, "-c", EXHAUST], stdout=subprocess.PIPE, text=True)
    sidecar = None
    try:
        assert exhaust.stdout.readline().startswith("holding ")
        sidecar = subprocess.Popen(
            [*nobody, sys.executable, "-m", "monitor", "run", "--config", str(REPO / "config.yaml"),
             "--log", f"app={log}", "--listen", f"127.0.0.1:{port}", "--state-dir", str(directory / "state")],
            cwd=directory, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

        def scrape() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    return response.read().decode()
            except OSError:
                assert sidecar.poll() is None, sidecar.stderr.read()
                return ""

        wait_for(lambda: 'logmonitor_watch_mode{mode="poll"} 1.0' in scrape(), 30, "the sidecar to serve")
        with open(log, "a", encoding="utf-8") as f:
            f.write(log_line("MongoDB操作超时", "ERROR") + "\n")
        counted = 'tradingagents_log_events_total{rule="mongodb_operation_timeout",severity="error"} 1.0'
        wait_for(lambda: counted in scrape(), 30, "the line to be counted by polling")
        assert 'logmonitor_watch_mode{mode="inotify"} 0.0' in scrape()
        sidecar.send_signal(signal.SIGTERM)
        assert sidecar.wait(timeout=10) == 0
        said = sidecar.stderr.read()
        assert said.count("cannot use inotify") == 1 and "Traceback" not in said, said
    finally:
        exhaust.kill()
        exhaust.wait()
        exhaust.stdout.close()
        if sidecar is not None:
            if sidecar.poll() is None:
                sidecar.kill()
                sidecar.wait()
            sidecar.stderr.close()
        shutil.rmtree(directory, ignore_errors=True)
