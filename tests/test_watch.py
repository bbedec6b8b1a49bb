"""The waker: structure changes always wake the loop, writes only while it is idle; watches are kept."""

from __future__ import annotations

import logging
import threading

from monitor.watch import Waker
from tests.sidecar_process import wait_for


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
