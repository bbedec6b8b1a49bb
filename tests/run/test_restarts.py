"""Restarts that used to lose or add counts: a swapped symlink, a partial line, impossible checkpoints.

Each test runs `monitor run` as a real process over real files, kills or stops it
mid-way, and asserts exact counts afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3

import pytest

from tests.conftest import append, log_line
from tests.sidecar_process import wait_for

TIMEOUT = log_line("MongoDB操作超时", "ERROR") + "\n"
RULE = "mongodb_operation_timeout"


def swap_symlink(link, target) -> None:
    """Point `link` at `target` atomically, as Kubernetes' atomic writer swaps `..data`."""
    temporary = link.with_name(link.name + ".tmp")
    os.symlink(target, temporary)
    os.replace(temporary, link)


def test_a_symlinked_log_swapped_while_the_sidecar_is_down_loses_no_line(tmp_path, sidecars):
    """Kubernetes style: app.log -> ..data/app.log, ..data -> ..2025_01. Lines are appended to the
    old target while the sidecar is down, then ..data is swapped to a new target."""
    old, new = tmp_path / "..2025_01", tmp_path / "..2025_02"
    old.mkdir()
    new.mkdir()
    (old / "app.log").touch()
    (new / "app.log").touch()
    os.symlink("..2025_01", tmp_path / "..data")
    link = tmp_path / "app.log"
    os.symlink("..data/app.log", link)
    first = sidecars(tmp_path, "--log", f"app={link}").start()
    append(link, TIMEOUT, 10)
    wait_for(lambda: first.events(RULE) == 10, what="10 timeouts")
    first.kill9()
    append(old / "app.log", TIMEOUT, 3)  # the server still writes its old file
    swap_symlink(tmp_path / "..data", "..2025_02")
    append(new / "app.log", TIMEOUT, 2)
    second = sidecars(tmp_path, "--log", f"app={link}").start()
    wait_for(lambda: second.events(RULE) == 15, what=lambda: f"15 timeouts\n{second.stderr()}")
    assert second.value("logmonitor_lines_total", stream="app") == 15
    assert second.value("logmonitor_lost_files_total", stream="app") == 0
    assert "rotated away while the sidecar was down" not in second.stderr()


def test_bytes_are_counted_once_through_restarts_over_a_partial_line(tmp_path, sidecars):
    log = tmp_path / "app.log"
    log.touch()
    sidecar = sidecars(tmp_path, "--log", f"app={log}").start()
    append(log, TIMEOUT, 3)
    append(log, TIMEOUT[:40])  # a line whose end is not written yet
    for restart in range(4):
        wait_for(lambda s=sidecar: s.value("logmonitor_lines_total", stream="app") == 3, what="3 lines")
        sidecar.metrics()  # a scrape checkpoints: the partial line is held back, not counted
        if restart % 2:
            sidecar.kill9()
        else:
            sidecar.signal(signal.SIGTERM)
            assert sidecar.wait() == 0
        sidecar = sidecars(tmp_path, "--log", f"app={log}").start()
    append(log, TIMEOUT[40:])
    wait_for(lambda: sidecar.events(RULE) == 4, what="the finished line")
    assert sidecar.value("logmonitor_lines_total", stream="app") == 4
    assert sidecar.value("logmonitor_bytes_total", stream="app") == log.stat().st_size == 4 * len(TIMEOUT.encode())


@pytest.mark.parametrize(
    ("sql", "said"),
    [
        ('UPDATE files SET "offset" = -5', "offset is -5 (must be a whole number >= 0)"),
        ("UPDATE counters SET value = -995 WHERE key LIKE '%mongodb_operation_timeout%'", "is -995.0"),
        ("UPDATE counters SET value = NULL WHERE key LIKE '%mongodb_operation_timeout%'", "is None"),
    ],
)
def test_an_impossible_checkpoint_is_set_aside_and_named_and_counting_starts_fresh(tmp_path, sidecars, sql, said):
    log = tmp_path / "app.log"
    log.touch()
    first = sidecars(tmp_path, "--log", f"app={log}").start()
    first.counts(log, TIMEOUT, RULE, 2)
    first.stop_cleanly()
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "state.db")) as db, db:
        db.execute(sql)
    second = sidecars(tmp_path, "--log", f"app={log}").start()  # starts: no exit 2, no listen error
    assert said in second.stderr()
    assert "Kept it as" in second.stderr() and "cannot listen" not in second.stderr()
    assert len(list((tmp_path / "state").glob("state.db.invalid-*"))) == 1
    assert second.events(RULE) == 0  # nothing impossible is served; the file is read from its end
    assert second.value("logmonitor_checkpoint_set_aside_total", reason="invalid") == 1
    assert second.value("logmonitor_checkpoint_set_aside_total", reason="corrupt") == 0
    append(log, TIMEOUT, 1)
    wait_for(lambda: second.events(RULE) == 1, what="counting after the fresh start")


def timeouts(first: int, count: int) -> str:
    """Timeout lines as the server writes them, each with its own millisecond."""
    return "".join(
        log_line("MongoDB操作超时", "ERROR").replace("14:20:02,123", f"14:20:{n // 1000:02d},{n % 1000:03d}") + "\n"
        for n in range(first, first + count)
    )


@pytest.mark.parametrize("clock_offset", [3600, -3600])
def test_files_created_and_rotated_while_down_are_counted_whatever_the_clock_said(tmp_path, sidecars, clock_offset):
    """The checkpoint's time of save an hour ahead of the files' (or behind): the file created,
    written and rotated away while the sidecar was down is counted all the same, and a file
    rotated before the first start is not read."""
    log = tmp_path / "app.log"
    (tmp_path / "app.log.5").write_text(timeouts(900, 4))  # there before the sidecar ever ran
    log.touch()
    first = sidecars(tmp_path, "--log", f"app={log}").start()
    append(log, timeouts(0, 10))
    wait_for(lambda: first.events(RULE) == 10, what="10 timeouts")
    first.stop_cleanly()
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "state.db")) as db, db:
        db.execute("UPDATE meta SET value = CAST(value AS REAL) + ? WHERE key = 'saved_at'", (clock_offset,))
    append(log, timeouts(10, 2))
    log.rename(tmp_path / "app.log.2")  # rotated twice while down: a file created and rotated meanwhile
    append(log, timeouts(12, 3))
    log.rename(tmp_path / "app.log.1")
    append(log, timeouts(15, 1))
    second = sidecars(tmp_path, "--log", f"app={log}").start()
    wait_for(lambda: second.events(RULE) == 16, what=lambda: f"16 timeouts\n{second.stderr()}")
    assert second.value("logmonitor_lines_total", stream="app") == 16
