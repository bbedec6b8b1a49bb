"""kill -9 and restart of `monitor run` while logrotate keeps rotating: every line counted once.

The reported defect: a follower that decides "is this file followed already?" from
`os.stat(name)` and then calls `open(name)` can be handed another file, because logrotate
renames in between. After a restart that showed up as one file followed twice, under its
old and its new name (`app.log.1` and `app.log.2`), and every rule over-counted by a
whole rotated file.

The test reproduces it with real tools. A server logs with real millisecond timestamps
through `logrotate` in `create` mode (it keeps writing into the renamed file for a while,
then reopens), `copytruncate`, and delete + recreate, with `rotate 8` generations kept.
The sidecar follows `app.log` (a plain path, as the shipped config does). It is killed with
SIGKILL right after a rename or in the middle of writing, rotations go on while it is
down, and every restart happens while logrotate renames: a logrotate run waits in its
`prerotate` script until the new sidecar opens its checkpoint, then it and a few more runs
rename the files back to back while the sidecar finds its files again and catches up with
the ones rotated while it was down. In production that overlap is rare luck; here every
restart gets it (a rename must still land in a window of microseconds, so the race is
likely over a run's 40 restarts, not certain at each). The counters must then equal
exactly what was written. RESTART_CYCLES=100 makes a longer soak.

Every line written stays countable by a correct follower, by construction:
- nothing the sidecar may not have read and checkpointed is ever deleted. The test
  counts rotations since the sidecar last showed every line counted (that scrape wrote
  the checkpoint first) and waits for that again before logrotate could delete a
  generation holding later lines (the file written at that point is gone only after
  `rotate` + 1 more rotations); delete + recreate only follows such a wait;
- copytruncate only runs once 64 bytes or more of the current file were read and
  checkpointed (less is too little to recognise the copy by; see test_follow's model);
- no compression (a compressed file cannot be read).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from inotify_simple import INotify, flags

from tests.conftest import log_line
from tests.run.test_sidecar import KEYWORDS, LOGROTATE, needs_logrotate
from tests.sidecar_process import SidecarProcess, wait_for

GENERATIONS = 8  # logrotate `rotate 8`: app.log.1 ... app.log.8 are kept, older ones deleted
BUDGET = GENERATIONS - 1  # rotations allowed between two points where every line was counted; one spare
CYCLES = int(os.environ.get("RESTART_CYCLES", "40"))  # each: rotations while up, kill -9, rotations, restart
BURST_LINES = 300  # what the server writes between the back-to-back rotations of a restart
STAMP = log_line("")[:23]  # the fixed "2025-10-22 14:20:02,123" of the shared line format
NOISE = [
    log_line("HTTP 200 GET /api/analysis/68f8741c3512a67997df93d2/status 耗时 12ms #{n}"),
    log_line("📊 [市场分析师] 工具调用 get_stock_market_data_unified 返回 2811 字符 #{n}"),
    log_line("🔄 [Redis] 进度已更新 step={n} analysis_id=68f8741c3512a67997df93d2", "DEBUG"),
]
EVENTS = "tradingagents_log_events_total"
AUDIT_OFTEN = {"MONITOR_AUDIT_INTERVAL_SECONDS": "0.5"}


LOG_TIME_SPEED = 120  # log seconds per real second: a run's log spans over an hour, for the self-audit
_STARTED = (time.time(), time.monotonic())


def now_stamp() -> str:
    """The server's clock, running fast: real millisecond timestamps, two log minutes a second."""
    now = datetime.fromtimestamp(_STARTED[0] + (time.monotonic() - _STARTED[1]) * LOG_TIME_SPEED)
    return now.strftime("%Y-%m-%d %H:%M:%S,") + f"{now.microsecond // 1000:03d}"


class Server:
    """The analysis server's logging: real timestamps, one keyword line in seven, a steady pace."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.lines = 0
        self.keywords = {(rule, severity): 0 for rule, severity, _ in KEYWORDS}
        self.live_bytes = 0  # in the file the handle writes, since it was created or truncated

    def write(self, count: int) -> None:
        out = []
        for _ in range(count):
            n = self.lines
            self.lines += 1
            if n % 7 == 3:
                rule, severity, line = KEYWORDS[(n // 7) % len(KEYWORDS)]
                self.keywords[rule, severity] += 1
            else:
                line = NOISE[n % len(NOISE)].format(n=n)
            assert line.startswith(STAMP)
            out.append(now_stamp() + line[len(STAMP) :] + "\n")
        text = "".join(out)
        self.handle.write(text)
        self.handle.flush()
        self.live_bytes += len(text.encode())

    def run_for(self, seconds: float, rate: int = 2500) -> None:
        """Write about `rate` lines a second for `seconds` (the workload's pace, not a wait)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.write(rate // 200)
            time.sleep(0.005)

    def reopen(self) -> None:  # what the server does after logrotate's signal, or after a delete
        self.handle.close()
        self.handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self.live_bytes = self.path.stat().st_size

    def close(self) -> None:
        self.handle.close()


class Logrotate:
    """Real logrotate runs over app.log, counted so that no unread line is ever deleted."""

    def __init__(self, tmp_path: Path, server: Server) -> None:
        self.tmp_path = tmp_path
        self.server = server
        self.gate = tmp_path / "prerotate.fifo"  # outside the log directory: not a sibling of app.log
        os.mkfifo(self.gate)
        self.since_sync = 0  # rotations since the sidecar last showed every line counted
        self.total = 0
        self.live_read = False  # >= 64 bytes of the server's current file read and checkpointed

    def budget(self) -> int:
        return BUDGET - self.since_sync

    def start(self, mode: str, gated: bool = False) -> subprocess.Popen:
        assert self.budget() > 0, "this rotation could delete lines the sidecar may not have read"
        gate = f"\n  prerotate\n    cat {self.gate} > /dev/null\n  endscript" if gated else ""
        conf = self.tmp_path / f"logrotate-{mode}{'-gated' if gated else ''}.conf"
        conf.write_text(
            f"{self.server.path} {{\n  rotate {GENERATIONS}\n  missingok\n  nocompress\n  {mode}{gate}\n}}\n"
        )
        self.since_sync += 1
        self.total += 1
        if mode == "copytruncate":
            self.server.live_bytes = 0
            self.live_read = False
        return subprocess.Popen([LOGROTATE, "-f", "-s", str(self.tmp_path / "logrotate.state"), str(conf)])

    def run(self, mode: str) -> None:
        assert self.start(mode).wait(timeout=10) == 0

    def release(self) -> None:
        """Let a gated run go on: its prerotate script reads the FIFO until EOF."""
        deadline = time.monotonic() + 10
        while True:
            try:
                os.close(os.open(self.gate, os.O_WRONLY | os.O_NONBLOCK))
                return
            except OSError as exc:  # ENXIO: logrotate has not reached its prerotate script yet
                if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                    raise
                time.sleep(0.0002)


class OpenWatch:
    """inotify IN_OPEN on a directory: the moment a restarted sidecar opens its checkpoint."""

    def __init__(self, directory: Path) -> None:
        self.inotify = INotify(nonblocking=True)
        self.inotify.add_watch(directory, flags.OPEN)

    def opened(self, timeout: float) -> bool:
        """Has a file (not a hidden temporary one) in the directory been opened within `timeout`?"""
        events = self.inotify.read(timeout=int(timeout * 1000))
        return any(event.name and not event.name.startswith(".") for event in events)

    def close(self) -> None:
        self.inotify.close()


def stats(paths: list[Path]) -> list[tuple[Path, os.stat_result]]:
    found = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            found.append((path, path.stat()))
    return found


def checkpoint_files(state: Path) -> list[tuple]:
    """(name, inode, offset, size) of each file the checkpoint holds, for the failure message;
    the checkpoint is `state.db` (SQLite) or, in the older format, `state.json`."""
    try:
        if (state / "state.db").exists():
            with contextlib.closing(sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True)) as db:
                return list(db.execute('SELECT path, ino, "offset", size FROM files'))
        if (state / "state.json").exists():
            files = json.loads((state / "state.json").read_text())["files"]
            return [(f["path"], f["ino"], f["offset"], f["size"]) for f in files]
    except (OSError, ValueError, KeyError, sqlite3.Error) as exc:
        return [("(unreadable", exc, "", ")")]
    return []


@needs_logrotate
@pytest.mark.parametrize("kill", [True, False], ids=["kill-9-and-restart", "no-kill"])
def test_restarts_while_logrotate_renames_count_every_line_once(tmp_path, sidecars, kill):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    state = tmp_path / "state"
    state.mkdir()
    server = Server(log)
    logrotate = Logrotate(tmp_path, server)
    everyone: list[SidecarProcess] = []

    def counted() -> dict:
        metrics = everyone[-1].metrics()
        events = {
            (dict(labels)["rule"], dict(labels)["severity"]): v for (n, labels), v in metrics.items() if n == EVENTS
        }
        return {
            "lines": metrics.get(("logmonitor_lines_total", (("stream", "app"),)), 0.0),
            **{rule: events.get((rule, severity), 0.0) for rule, severity in server.keywords},
            "other rules": sum(v for key, v in events.items() if key not in server.keywords),
        }

    def written() -> dict:
        return {
            "lines": server.lines,
            **{rule: n for (rule, _), n in server.keywords.items()},
            "other rules": 0,
        }

    def report() -> str:
        files = checkpoint_files(state)
        inodes = [f[1] for f in files]
        entries = "\n".join(
            f"  {os.path.basename(str(path))} ino={ino} offset={offset} size={size}"
            + ("   <-- this inode twice" if inodes.count(ino) > 1 else "")
            for path, ino, offset, size in files
        )
        listing = "\n".join(f"  {p.name} ino={st.st_ino} size={st.st_size}" for p, st in stats(sorted(logs.iterdir())))
        tails = "\n".join(
            f"--- sidecar #{i} stderr, last lines:\n" + "\n".join(p.stderr().splitlines()[-8:])
            for i, p in enumerate(everyone)
            if i >= len(everyone) - 3
        )
        try:
            now = counted()
        except AssertionError as exc:
            now = f"(no scrape: {exc})"
        return (
            f"\nwritten {written()}\ncounted {now}\n"
            f"after {logrotate.total} rotations and {len(everyone) - 1} restarts\n"
            f"checkpoint:\n{entries}\nlog directory:\n{listing}\n{tails}"
        )

    def sync() -> None:
        """Wait until the sidecar shows every line counted (that scrape wrote the checkpoint first)."""
        wait_for(lambda: counted()["lines"] >= server.lines, timeout=20, what=report)
        assert counted() == written(), report()
        logrotate.since_sync = 0
        logrotate.live_read = server.live_bytes >= 64

    def restart() -> None:
        """Start a new sidecar while logrotate renames the files its checkpoint names."""
        sidecar = sidecars(tmp_path, "--log", f"app={log}", env=AUDIT_OFTEN)
        everyone.append(sidecar)
        gated = logrotate.start("create", gated=True)  # waits in its prerotate script
        watch = OpenWatch(state)
        try:
            sidecar.start(wait_ready=False)
            deadline = time.monotonic() + 30
            while not watch.opened(0.1):  # the new sidecar opens its checkpoint to restore it
                assert sidecar.proc.poll() is None, sidecar.stderr()
                assert time.monotonic() < deadline, "the restarted sidecar never opened its checkpoint"
        finally:
            watch.close()
            logrotate.release()  # rename everything now, while it finds its files again
            assert gated.wait(timeout=10) == 0
        server.reopen()
        server.write(BURST_LINES)
        while logrotate.budget() > 0:  # and again, back to back, while it catches up
            logrotate.run("create")
            server.reopen()
            server.write(BURST_LINES)
        logrotate.live_read = False
        wait_for(lambda: sidecar.get("/readyz")[0] == 200 or sidecar.proc.poll() is not None, 30, "readiness")
        assert sidecar.proc.poll() is None, sidecar.stderr()

    # Rotations while the sidecar is up, a few tenths of a second apart.
    def create() -> None:
        logrotate.run("create")
        server.run_for(0.1)  # the server has not reopened yet: into app.log.1
        server.reopen()

    def copytruncate() -> None:
        if not logrotate.live_read:
            sync()
        if not logrotate.live_read:
            return create()
        logrotate.run("copytruncate")  # the server waits meanwhile, as copytruncate requires

    def delete_and_recreate() -> None:
        sync()
        log.unlink()
        server.reopen()

    everyone.append(sidecars(tmp_path, "--log", f"app={log}", env=AUDIT_OFTEN).start())
    started = time.monotonic()
    up_rotations = [create, copytruncate, delete_and_recreate]
    for cycle in range(CYCLES if kill else CYCLES // 4):
        server.run_for(0.15)
        if logrotate.budget() <= 1:
            sync()
        up_rotations[cycle % len(up_rotations)]()
        server.run_for(0.1)
        sync()
        server.run_for(0.05)  # read or not when the kill comes: counted once either way
        if kill and cycle % 3 == 0:  # killed right after a rename; the server still writes the renamed file
            logrotate.run("create")
            everyone[-1].kill9()
            server.run_for(0.05)
        elif kill and cycle % 3 == 1 and logrotate.live_read:  # killed mid-write; copytruncate while down
            everyone[-1].kill9()
            server.run_for(0.05)
            logrotate.run("copytruncate")
        elif kill:  # killed mid-write
            everyone[-1].kill9()
        server.run_for(0.05)
        logrotate.run("create")  # a file written and rotated away while down: the checkpoint never knew it
        server.run_for(0.03)
        server.reopen()
        server.run_for(0.05)
        if kill:
            restart()
            server.run_for(0.05)
    server.run_for(0.2)
    server.close()
    elapsed = time.monotonic() - started

    wait_for(lambda: counted()["lines"] >= server.lines, timeout=20, what=report)
    # Nothing more may arrive: leave the sidecar a safety-net poll (1 s) in which to find a file twice.
    quiet_until = time.monotonic() + 1.5
    wait_for(lambda: counted() != written() or time.monotonic() > quiet_until, what=report)
    print(f"{server.lines} lines, {logrotate.total} rotations, {len(everyone) - 1} restarts in {elapsed:.1f} s")
    assert counted() == written(), report()

    # The self-audit, read again from the files on disk, agrees: not one line drifted, after a
    # round that began once every line was counted.
    def audit() -> dict:
        metrics = everyone[-1].metrics()
        rounds = {dict(k)["result"]: v for (n, k), v in metrics.items() if n == "logmonitor_audit_rounds_total"}
        drifted = {k: v for (n, k), v in metrics.items() if n == "logmonitor_audit_drifted_lines_total" and v}
        minutes = metrics[("logmonitor_audit_minutes_total", (("stream", "app"),))]
        return {"rounds": rounds, "drifted": drifted, "minutes": minutes}

    rounds_before = sum(audit()["rounds"].values())
    wait_for(lambda: sum(audit()["rounds"].values()) >= rounds_before + 2, timeout=20, what="two audit rounds")
    found = audit()
    print(f"self-audit: {found['minutes']:.0f} minutes of log compared, rounds {found['rounds']}")
    assert found["drifted"] == {}, report()
    assert found["rounds"]["drifted"] == found["rounds"]["failed"] == 0
    # The audit proved some minutes (not a vacuous "no drift"). How many depends on where the deletions
    # fell: a minute whose lines were in a deleted file drops out (delete + recreate every third
    # rotation, generations past `rotate 8`, files rotated while the sidecar was down): 4-19 here.
    assert found["minutes"] >= 1, found
