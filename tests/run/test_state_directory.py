"""The state directory's faults, with `monitor run` as a real process: held by another sidecar,
deleted while running, not writable, unreadable, a link to nothing; a stop whose last save failed.

Root reads and writes whatever the permissions say, so a test of permissions runs the sidecar as
nobody (`setpriv`, as tests/follow/test_watch.py does: a real EACCES), and a test of a read-only file
system runs it in a mount namespace of its own where the state directory is bind-mounted read-only
(`unshare -m`: a real EROFS, root included). Each is skipped where the machine cannot do that.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from bson import ObjectId

from tests.conftest import append, log_line
from tests.sidecar_process import free_port, wait_for

TIMEOUT = log_line("MongoDB操作超时", "ERROR") + "\n"
RULE = "mongodb_operation_timeout"
NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
# Runs the rest of the command line with the directory in $0 read-only, in a mount namespace of its own.
READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'


def as_nobody() -> tuple[str, ...]:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the sidecar as another user")
    return NOBODY


def read_only(directory: Path) -> tuple[str, ...]:
    command = ("unshare", "-m", "sh", "-c", READ_ONLY, str(directory))
    probe = subprocess.run([*command, "true"], capture_output=True, timeout=30, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a read-only directory here: {probe.stderr.decode().strip()}")
    return command


def open_files(pid: int) -> list[str]:
    """What the process has open, as /proc shows it (a deleted file's name ends in ` (deleted)`)."""
    names = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed since the listing (a scrape's socket)
            names.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return names


def claims(ids: list[str]) -> str:
    return "".join(log_line(f"✅ 分析完成状态已更新到数据库: {i}") + "\n" for i in ids)


def test_a_second_sidecar_on_one_state_directory_is_refused_and_kill_9_frees_it(tmp_path, sidecars):
    log = tmp_path / "app.log"
    log.touch()
    first = sidecars(tmp_path, "--log", f"app={log}").start()
    second = sidecars(tmp_path, "--log", f"app={log}").start(wait_ready=False)
    assert second.wait() == 2
    said = second.stderr()
    state = tmp_path / "state"
    assert f"state directory {state} is in use by another `monitor run` (pid {first.proc.pid})" in said
    assert "Traceback" not in said and "first start" not in said
    append(log, TIMEOUT, 3)
    wait_for(lambda: first.events(RULE) == 3, what="the first one counting on")
    first.kill9()  # the kernel drops its lock with it
    third = sidecars(tmp_path, "--log", f"app={log}").start()
    append(log, TIMEOUT, 2)
    wait_for(lambda: third.events(RULE) == 5, what=lambda: f"5 timeouts after the restart\n{third.stderr()}")
    assert "in use by another" not in third.stderr()


def test_a_state_directory_deleted_while_running_is_made_again_with_the_whole_state(tmp_path, sidecars):
    """It went on saving into the deleted file: a restart said "first start", 3,000 lines written, 500 counted."""
    log = tmp_path / "app.log"
    log.touch()
    state = tmp_path / "state"
    args = ("--log", f"app={log}", "--mongo-url", f"mongodb://127.0.0.1:{free_port()}")  # down: claims wait
    first = sidecars(tmp_path, *args).start()
    ids = [str(ObjectId()) for _ in range(3)]
    append(log, TIMEOUT, 500)
    append(log, claims(ids[:2]))
    pending = "tradingagents_analysis_checks_pending"
    wait_for(lambda: first.events(RULE) == 500 and first.value(pending) == 2, what="500 timeouts, 2 claims")
    first.metrics()  # a scrape checkpoints: the two claims are in the file about to be deleted
    shutil.rmtree(state)
    append(log, TIMEOUT, 2500)
    append(log, claims(ids[2:]))
    wait_for(lambda: first.events(RULE) == 3000 and first.value(pending) == 3, what="3000 timeouts, 3 claims")
    held = open_files(first.proc.pid)  # every scrape above saved: into a new file, not the deleted one
    assert str(state / "state.db") in held and not [name for name in held if name.endswith("(deleted)")]
    first.metrics()  # checkpointed: what this shows is on disk
    first.kill9()
    append(log, TIMEOUT, 7)
    second = sidecars(tmp_path, *args).start()
    wait_for(lambda: second.events(RULE) == 3007, what=lambda: f"3007 timeouts\n{second.stderr()}")
    assert "first start" not in second.stderr()
    assert second.value(pending) == 3  # the two saved only in the deleted file too
    assert second.value("logmonitor_lines_total", stream="app") == 3010
    assert f"checkpoint {state / 'state.db'} was deleted or replaced while the sidecar ran" in first.stderr()
    assert second.value("logmonitor_checkpoint_recreated_total") == 1  # counted, and saved with the rest
    assert second.value("logmonitor_checkpoint_failures_total") == 0
    # The lock was taken again in the new directory: a second sidecar is still refused.
    other = sidecars(tmp_path, *args).start(wait_ready=False)
    assert other.wait() == 2 and f"(pid {second.proc.pid})" in other.stderr()


@pytest.mark.parametrize("fault", ["permission denied", "read-only file system"])
def test_a_state_directory_not_writable_is_read_and_each_failed_save_counted(shared_directory, sidecars, fault):
    """It was called corrupt ("unable to open database file ... remove it by hand"), and counting
    started again at 0 from the end of the log: the lines written while stopped were lost."""
    state = shared_directory / "state"
    log = shared_directory / "app.log"
    log.touch()
    prefix = as_nobody() if fault == "permission denied" else ()
    first = sidecars(shared_directory, "--log", f"app={log}").start()
    first.counts(log, TIMEOUT, RULE, 2)
    if fault == "permission denied":
        first.stop_cleanly()  # a clean stop: state.db alone, read as it is
    else:
        first.metrics()
        first.kill9()  # its -wal holds the last commits: read with it
    prefix = prefix or read_only(state)
    kept = {name: (state / name).read_bytes() for name in os.listdir(state) if (state / name).is_file()}
    append(log, TIMEOUT, 3)  # written while it was stopped
    second = sidecars(shared_directory, "--log", f"app={log}", prefix=prefix).start()
    wait_for(lambda: second.events(RULE) == 5, what=lambda: f"5 timeouts (2 restored)\n{second.stderr()}")
    assert second.value("logmonitor_lines_total", stream="app") == 5
    cause = f"permission denied for uid 65534 on {state}" if fault == "permission denied" else fault
    said = second.stderr()
    assert f"state directory {state} is not writable ({cause}): no save can succeed" in said
    assert "corrupt" not in said and "first start" not in said
    failures = second.value("logmonitor_checkpoint_failures_total")
    assert failures >= 1  # the save at start, when the file was opened
    assert second.value("logmonitor_checkpoint_failures_total") == failures + 1  # that scrape's own save
    said = second.stderr()
    assert said.count("cannot write checkpoint") == 1  # said once, counted each time
    assert f"{state} is not writable ({cause}): give the sidecar a writable state directory" in said
    second.signal(signal.SIGTERM)
    assert second.wait() == 1  # its last save failed
    assert "stopping without a last checkpoint" in second.stderr()
    assert {name: (state / name).read_bytes() for name in os.listdir(state) if (state / name).is_file()} == kept
    third = sidecars(shared_directory, "--log", f"app={log}").start()  # writable again: back to the good checkpoint
    wait_for(lambda: third.events(RULE) == 5, what=lambda: f"5 timeouts\n{third.stderr()}")
    assert "corrupt" not in third.stderr() and "first start" not in third.stderr()


@pytest.mark.parametrize("unreadable", ["state.db", "directory"])
def test_a_checkpoint_that_cannot_be_read_stops_the_start_and_is_left_as_it_is(shared_directory, sidecars, unreadable):
    state = shared_directory / "state"
    log = shared_directory / "app.log"
    log.touch()
    first = sidecars(shared_directory, "--log", f"app={log}").start()
    first.counts(log, TIMEOUT, RULE, 2)
    first.stop_cleanly()
    saved = (state / "state.db").read_bytes()
    state.chmod(0o777)
    (state / "state.db" if unreadable == "state.db" else state).chmod(0o000)
    second = sidecars(shared_directory, "--log", f"app={log}", prefix=as_nobody()).start(wait_ready=False)
    assert second.wait() == 2
    said = second.stderr()
    if unreadable == "state.db":
        expected = f"cannot read checkpoint {state / 'state.db'}: Permission denied for uid 65534. It is left as it is"
    else:
        expected = f"cannot reach state directory {state}: permission denied for uid 65534 on {state}"
    assert expected in said
    assert "corrupt" not in said and "Traceback" not in said
    state.chmod(0o755)
    assert sorted(os.listdir(state)) == ["cache", "lock", "state.db"]  # nothing set aside, nothing made
    assert (state / "state.db").read_bytes() == saved


@pytest.mark.parametrize("link", ["state.db", "directory"])
def test_a_state_link_to_nothing_stops_the_start_naming_its_target(tmp_path, sidecars, link):
    """It said "first start", then failed every save with "unable to open database file"."""
    state = tmp_path / "state"
    if link == "state.db":
        state.mkdir()
        path, target = state / "state.db", tmp_path / "volume" / "state.db"
    else:
        path, target = state, tmp_path / "volume"
    path.symlink_to(target)
    log = tmp_path / "app.log"
    log.touch()
    sidecar = sidecars(tmp_path, "--log", f"app={log}").start(wait_ready=False)
    assert sidecar.wait() == 2
    said = sidecar.stderr()
    assert f"{path} is a symbolic link to {target}, which does not exist. If it lives on a volume" in said
    assert "first start" not in said and "Traceback" not in said
    assert path.is_symlink() and not (tmp_path / "volume").exists()


def test_a_stop_whose_last_save_failed_exits_1(tmp_path, sidecars):
    """It exited 0: whoever restarts it learnt nothing of the counts it will go back on."""
    state = tmp_path / "state"
    log = tmp_path / "app.log"
    log.touch()
    sidecar = sidecars(tmp_path, "--log", f"app={log}").start()
    sidecar.counts(log, TIMEOUT, RULE, 2)
    shutil.rmtree(state)
    state.write_text("a file where the state directory was: no save can make it again\n")
    sidecar.signal(signal.SIGTERM)
    assert sidecar.wait() == 1
    said = sidecar.stderr()
    assert f"cannot write checkpoint {state / 'state.db'}" in said
    assert "stopping without a last checkpoint: the save failed (see above)" in said
    assert "Traceback" not in said
