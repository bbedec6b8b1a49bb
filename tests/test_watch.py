"""The waker: watches kept while wake-ups on writes are switched, and no ERROR from watchdog."""

from __future__ import annotations

import logging
import threading

from monitor.watch import Waker
from tests.sidecar_process import wait_for


def test_switching_wake_ups_on_writes_keeps_the_watch_and_logs_no_error(tmp_path, caplog):
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
            waker.wake_on_writes(True)
            waker.event.clear()
            wait_for(waker.event.is_set, 10, "a write to wake the loop")
            (tmp_path / "app.log.1").touch()
            waker.structure_changed = False
            wait_for(lambda: waker.structure_changed, 10, "a created file to mark a structure change")
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        waker.stop()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
