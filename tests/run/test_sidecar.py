"""`monitor run` end to end: a real process, real files, real signals, real scrapes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from bson import ObjectId

from monitor import __version__
from tests.conftest import MINIMAL_CONFIG, REPO, append, log_line, run_monitor
from tests.sidecar_process import wait_for

LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"
needs_logrotate = pytest.mark.skipif(not os.path.exists(LOGROTATE), reason="logrotate not installed")
TIMEOUT = log_line("MongoDB操作超时", "ERROR") + "\n"
RULE = "mongodb_operation_timeout"


def test_counts_new_lines_and_serves_health(tmp_path, sidecars):
    log = tmp_path / "logs" / "tradingagents.log"
    sidecar = sidecars(tmp_path, "--log", str(log)).start()  # the directory does not exist yet
    assert sidecar.events(RULE) == 0
    log.parent.mkdir()
    append(log, TIMEOUT, 7)
    wait_for(lambda: sidecar.events(RULE) == 7, what="7 timeouts")
    assert sidecar.value("logmonitor_lines_total", stream="tradingagents") == 7
    assert sidecar.value("logmonitor_files_open", stream="tradingagents") == 1
    assert sidecar.get("/healthz") == (200, "ok\n")
    assert sidecar.get("/readyz")[0] == 200
    # What every exporter has: its version, and prometheus-client's process and Python collectors.
    assert sidecar.value("logmonitor_build_info", version=__version__) == 1
    with open(f"/proc/{sidecar.proc.pid}/stat") as stat:
        started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
    assert sidecar.value("process_start_time_seconds") == pytest.approx(
        boot_time() + started_ticks / os.sysconf("SC_CLK_TCK"), abs=0.02
    )
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"} <= {
        name for name, _ in sidecar.metrics()
    }


def boot_time() -> float:
    with open("/proc/stat") as stat:
        return float(next(line for line in stat if line.startswith("btime")).split()[1])


def test_sigterm_saves_state_and_exits_0(tmp_path, sidecars):
    log = tmp_path / "app.log"
    log.touch()
    sidecar = sidecars(tmp_path, "--log", str(log)).start()
    append(log, TIMEOUT, 3)
    wait_for(lambda: sidecar.events(RULE) == 3, what="3 timeouts")
    sidecar.signal(signal.SIGTERM)
    assert sidecar.wait(timeout=10) == 0
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "state.db")) as db:
        offsets = [row[0] for row in db.execute('SELECT "offset" FROM files')]
    assert offsets == [3 * len(TIMEOUT.encode())]


def test_kill_9_and_restart_continue_the_counters_exactly(tmp_path, sidecars):
    log = tmp_path / "app.log"
    log.touch()
    first = sidecars(tmp_path, "--log", str(log)).start()
    append(log, TIMEOUT, 5)
    wait_for(lambda: first.events(RULE) == 5, what="5 timeouts")
    scraped = first.events(RULE)  # this scrape checkpointed 5
    append(log, TIMEOUT, 4)  # maybe read, maybe not: never lost, never twice
    first.kill9()
    append(log, TIMEOUT, 2)  # written while the sidecar is down ...
    log.rename(tmp_path / "app.log.1")  # ... and rotated away meanwhile
    append(tmp_path / "app.log.1", TIMEOUT, 1)
    append(log, TIMEOUT, 3)
    second = sidecars(tmp_path, "--log", str(log)).start()
    assert second.events(RULE) >= scraped  # no counter reset visible to Prometheus
    wait_for(lambda: second.events(RULE) == 15, what="all 15 timeouts")
    time.sleep(0.3)  # nothing more may arrive: a double count would show here
    assert second.events(RULE) == 15
    assert second.value("logmonitor_lines_total", stream="app") == 15


def test_sighup_reloads_rules_and_keeps_offsets(tmp_path, sidecars, write_config):
    log = tmp_path / "app.log"
    log.touch()
    config = write_config(MINIMAL_CONFIG)
    sidecar = sidecars(tmp_path, "--log", str(log), config=config).start()
    append(log, "x MongoDB操作超时\n", 2)
    wait_for(lambda: sidecar.events("timeout") == 2, what="2 timeouts")
    config.write_text(
        MINIMAL_CONFIG + "  - name: loop\n    severity: error\n    pattern: different loop\n"
        "    examples: ['belongs to a different loop']\n",
        encoding="utf-8",
    )
    sidecar.signal(signal.SIGHUP)
    wait_for(lambda: sidecar.value("logmonitor_config_reloads_total", result="success") == 1, what="reload")
    assert sidecar.events("loop") == 0  # the new rule's series exists at once
    append(log, "x MongoDB操作超时 on a different loop\n")
    wait_for(lambda: sidecar.events("loop") == 1, what="new rule counted")
    assert sidecar.events("timeout") == 3  # offsets kept: nothing read again

    config.write_text("rules: [oops", encoding="utf-8")
    sidecar.signal(signal.SIGHUP)
    wait_for(lambda: sidecar.value("logmonitor_config_reloads_total", result="failure") == 1, what="failed reload")
    append(log, "x MongoDB操作超时\n")
    wait_for(lambda: sidecar.events("timeout") == 4, what="old config still running")
    assert "config reload failed; the running config stays in force" in sidecar.stderr()


@pytest.mark.parametrize(
    ("name", "content", "said", "kept", "reason"),
    [
        (
            "state.db",
            b"not a database at all" * 100,
            "is corrupt: it is not a readable database",
            "state.db.corrupt-*",
            "corrupt",
        ),
        ("state.json", b"{not json", "(previous format) cannot be migrated", "state.json.invalid-*", "invalid"),
    ],
)
def test_corrupt_state_is_reported_and_the_sidecar_starts_fresh(tmp_path, sidecars, name, content, said, kept, reason):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / name).write_bytes(content)
    log = tmp_path / "app.log"
    log.touch()
    sidecar = sidecars(tmp_path, "--log", str(log)).start()
    append(log, TIMEOUT)
    wait_for(lambda: sidecar.events(RULE) == 1, what="a timeout")
    assert said in sidecar.stderr()
    assert len(list((tmp_path / "state").glob(kept))) == 1
    # Said in the log and counted where alerts see it; the other reason's series is there at 0.
    set_aside = {r: sidecar.value("logmonitor_checkpoint_set_aside_total", reason=r) for r in ("corrupt", "invalid")}
    assert set_aside == {r: 1 if r == reason else 0 for r in set_aside}
    assert ("logmonitor_checkpoint_set_aside_total", (("reason", "corrupt"),)) in sidecar.metrics()


def test_bad_config_no_sources_and_busy_port_exit_2(tmp_path, write_config):
    config = write_config(MINIMAL_CONFIG)
    result = run_monitor("run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "sources: no log to follow; add a `sources:` list or pass --log PATH" in result.stderr
    result = run_monitor("run", "--config", str(config), "--log", "x.log", "--listen", "nowhere", cwd=tmp_path)
    assert (result.returncode, "--listen: 'nowhere' is not HOST:PORT" in result.stderr) == (2, True)
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_monitor(
            "run",
            "--config",
            str(config),
            "--log",
            "x.log",
            "--listen",
            f"127.0.0.1:{port}",
            "--state-dir",
            str(tmp_path / "s"),
            cwd=tmp_path,
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


# --- the torture test ------------------------------------------------------------------------

KEYWORDS = [
    ("mongodb_operation_timeout", "error", log_line("MongoDB操作超时", "ERROR")),
    ("mongodb_update_returned_none", "warning", log_line("⚠️ MongoDB更新返回None，可能更新失败", "WARNING")),
    ("analysis_progress", "info", log_line("分析 68f8741c3512a67997df93d2 进度: 50% - 📊 市场分析师")),
]
NOISE = log_line("HTTP 200 GET /api/analysis/68f8741c3512a67997df93d2/status 耗时 12ms #{}")


class Writer:
    """Writes numbered batches fast, the way a busy server does, and rotates on demand."""

    def __init__(self, directory) -> None:
        self.directory = directory
        self.path = directory / "tradingagents.log"
        self.handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.lines = 0
        self.keywords = dict.fromkeys((k[0] for k in KEYWORDS), 0)

    def batch(self, count: int) -> None:
        # Paced at about 25,000 lines/s, above the 20,000 the test must sustain.
        self.pace_until = max(getattr(self, "pace_until", 0.0), time.monotonic()) + count / 25_000
        out = []
        for i in range(count):
            n = self.lines + i
            if n % 10 == 0:
                rule, _, text = KEYWORDS[(n // 10) % len(KEYWORDS)]
                self.keywords[rule] += 1
                out.append(text)
            else:
                out.append(NOISE.format(n))
        self.lines += count
        self.handle.write("\n".join(out) + "\n")
        self.handle.flush()
        time.sleep(max(0.0, self.pace_until - time.monotonic()))

    def reopen(self) -> None:
        self.handle.close()
        self.handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def rename_rotation(self) -> None:  # RotatingFileHandler: shift backups, rename, reopen
        for i in range(4, 0, -1):
            older = self.directory / f"tradingagents.log.{i}"
            if older.exists():
                older.rename(self.directory / f"tradingagents.log.{i + 1}")
        self.path.rename(self.directory / "tradingagents.log.1")
        self.reopen()

    def logrotate(self, tmp_path, *directives: str, keep_writing_old: int = 0) -> None:
        conf = tmp_path / "lr.conf"
        conf.write_text(f"{self.path} {{\n rotate 3\n " + "\n ".join(directives) + "\n}\n")
        subprocess.run([LOGROTATE, "-f", "-s", str(tmp_path / "lr.state"), str(conf)], check=True)
        for _ in range(keep_writing_old):  # the server ignores the reopen signal for a while
            self.batch(1000)
        self.reopen()

    def delete_and_recreate(self) -> None:
        self.path.unlink()
        self.reopen()

    def close(self) -> None:
        self.handle.close()


@needs_logrotate
def test_torture_500k_lines_mixed_rotations_and_a_kill_9(tmp_path, sidecars):
    logs = tmp_path / "logs"
    logs.mkdir()
    writer = Writer(logs)
    sidecar = sidecars(tmp_path, "--log", f"app={writer.path}").start()
    rotations = [
        writer.rename_rotation,
        lambda: writer.logrotate(tmp_path, "create", keep_writing_old=3),
        lambda: writer.logrotate(tmp_path, "copytruncate"),  # writer paused: it is this thread
        writer.delete_and_recreate,
        lambda: writer.logrotate(tmp_path, "create", "compress", "delaycompress", keep_writing_old=2),
    ]
    started = time.monotonic()
    for round_number in range(12):
        for _ in range(40):
            writer.batch(1000)
        rotations[round_number % len(rotations)]()
        if round_number == int(
            os.environ.get("KILL_ROUND", "6")
        ):  # kill -9 mid-run; lines keep coming and a rename happens while down
            sidecar.kill9()
            writer.batch(5000)
            writer.rename_rotation()
            writer.batch(5000)
            sidecar = sidecars(tmp_path, "--log", f"app={writer.path}").start()
    writer.batch(12_000)
    elapsed = time.monotonic() - started
    writer.close()
    assert writer.lines >= 500_000
    print(f"torture: {writer.lines} lines in {elapsed:.1f} s ({writer.lines / elapsed:.0f} lines/s)")

    def all_counted() -> bool:
        return all(sidecar.events(rule, severity) == writer.keywords[rule] for rule, severity, _ in KEYWORDS)

    def progress() -> str:
        counted = {rule: sidecar.events(rule, severity) for rule, severity, _ in KEYWORDS}
        lines = sidecar.value("logmonitor_lines_total", stream="app")
        return f"written {writer.keywords} in {writer.lines} lines, counted {counted} in {lines}\n{sidecar.stderr()}"

    wait_for(all_counted, timeout=60, what=progress)
    time.sleep(0.5)
    assert all_counted()
    assert sidecar.value("logmonitor_lines_total", stream="app") == writer.lines
    assert sidecar.value("logmonitor_truncations_total", stream="app") >= 2


# --- with MongoDB ---------------------------------------------------------------------------------


@pytest.fixture
def fast_config(tmp_path):
    """The shipped profile with reconcile timings short enough for a test."""
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    for old, new in [
        ("grace_seconds: 5 ", "grace_seconds: 0.1 "),
        ("deadline_seconds: 120", "deadline_seconds: 2"),
        ("recheck_interval_seconds: 10", "recheck_interval_seconds: 0.3"),
        ("interval_seconds: 60", "interval_seconds: 1"),
    ]:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "fast.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def check_count(sidecar, claim: str, outcome: str) -> float:
    return sidecar.value("tradingagents_analysis_checks_total", claim=claim, outcome=outcome)


def test_claims_are_checked_in_mongo_and_findings_served(tmp_path, sidecars, mongo, fast_config):
    url, name, db = mongo
    log = tmp_path / "app.log"
    log.touch()
    sidecar = sidecars(tmp_path, "--log", str(log), "--mongo-url", url, "--mongo-db", name, config=fast_config).start()
    ok = str(db.analyses.insert_one({"status": "completed"}).inserted_id)
    lost = str(db.analyses.insert_one({"status": "pending"}).inserted_id)
    append(
        log,
        log_line(f"✅ 分析完成状态已更新到数据库: {ok}")
        + "\n"
        + log_line(f"✅ 分析完成状态已更新到数据库: {lost}")
        + "\n",
    )
    claim = "completed_status_written"
    wait_for(lambda: check_count(sidecar, claim, "confirmed") == 1, what="confirmed")
    wait_for(lambda: check_count(sidecar, claim, "status_mismatch") == 1, what="mismatch after the deadline")
    assert sidecar.value("logmonitor_mongo_up") == 1
    assert sidecar.value("tradingagents_analysis_checks_pending") == 0
    findings = json.loads(sidecar.get("/findings")[1])
    assert [(f["analysis_id"], f["outcome"], f["mongo"]["status"]) for f in findings] == [
        (lost, "status_mismatch", "pending")
    ]
    assert f'"analysis_id": "{lost}"' in sidecar.stderr()  # one structured log line


def test_mongo_down_at_start_then_up_keeps_claims_and_a_hung_server_blocks_nothing(tmp_path, sidecars, fast_config):
    from demo.mongo_server import MongoServer
    from tests.reconcile.test_reconciler import StallingProxy

    proxy = StallingProxy()  # first a server that accepts connections and never answers
    server = MongoServer()
    log = tmp_path / "app.log"
    log.touch()
    try:
        sidecar = sidecars(tmp_path, "--log", str(log), "--mongo-url", proxy.url, config=fast_config).start()
        ids = [str(ObjectId()) for _ in range(3)]
        append(log, "".join(log_line(f"✅ 分析完成状态已更新到数据库: {i}") + "\n" for i in ids))
        append(log, TIMEOUT, 5)
        wait_for(lambda: sidecar.events(RULE) == 5, what="lines counted while MongoDB hangs")
        wait_for(
            lambda: sidecar.value("logmonitor_mongo_errors_total", operation="find_statuses") >= 1,
            what="a failed check",
        )
        assert sidecar.value("logmonitor_mongo_up") == 0
        assert sidecar.value("tradingagents_analysis_checks_pending") == 3
        sidecar.kill9()  # the pending claims were checkpointed: a restart must not lose them
    finally:
        proxy.close()
    server = MongoServer(port=int(proxy.url.rsplit(":", 1)[1])).start()
    try:
        import pymongo

        client = pymongo.MongoClient(server.url)
        client.tradingagents.analyses.insert_many([{"_id": ObjectId(i), "status": "completed"} for i in ids])
        client.close()
        sidecar = sidecars(tmp_path, "--log", str(log), "--mongo-url", server.url, config=fast_config).start()
        wait_for(lambda: check_count(sidecar, "completed_status_written", "confirmed") == 3, what="3 confirmed")
        assert sidecar.value("logmonitor_mongo_up") == 1
        assert sidecar.events(RULE) == 5
    finally:
        server.stop()


def test_sigterm_while_mongodb_hangs_does_not_wait_for_its_timeouts(tmp_path, sidecars, fast_config):
    """The reconcile thread sits in a query to a server that never answers (30 s timeouts): SIGTERM
    must not wait for them (it took the socket timeout + 2 s), and the claims stay checkpointed."""
    from tests.reconcile.test_reconciler import StallingProxy

    config = tmp_path / "hung.yaml"
    text = fast_config.read_text(encoding="utf-8")
    text = text.replace("server_selection_timeout_ms: 3000", "server_selection_timeout_ms: 30000")
    config.write_text(text.replace("socket_timeout_ms: 5000", "socket_timeout_ms: 30000"), encoding="utf-8")
    proxy = StallingProxy()
    log = tmp_path / "app.log"
    log.touch()
    try:
        sidecar = sidecars(tmp_path, "--log", str(log), "--mongo-url", proxy.url, config=config).start()
        ids = [str(ObjectId()) for _ in range(3)]
        append(log, "".join(log_line(f"✅ 分析完成状态已更新到数据库: {i}") + "\n" for i in ids))
        wait_for(lambda: sidecar.value("tradingagents_analysis_checks_pending") == 3, what="3 claims pending")
        sidecar.signal(signal.SIGTERM)
        assert sidecar.wait(timeout=10) == 0  # well before the 30 s the hung query could take
    finally:
        proxy.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "state.db")) as db:
        assert sorted(row[0] for row in db.execute("SELECT analysis_id FROM pending")) == sorted(ids)
    assert "finding" not in sidecar.stderr()  # nothing decided from an answer cut short


def test_without_a_mongo_url_it_runs_log_only_and_says_so(tmp_path, sidecars):
    log = tmp_path / "app.log"
    log.touch()
    sidecar = sidecars(tmp_path, "--log", str(log), env={"MONGODB_URL": "", "MONGODB_URL_FILE": ""}).start()
    append(log, TIMEOUT)
    wait_for(lambda: sidecar.events(RULE) == 1, what="a timeout")
    assert "running log-only" in sidecar.stderr()
    assert ("logmonitor_mongo_up", ()) not in sidecar.metrics()


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_1_gib_line_without_newline_keeps_memory_bounded(tmp_path, sidecars):
    log = tmp_path / "app.log"
    sidecar = sidecars(tmp_path, "--log", str(log)).start()
    with open(log, "wb") as f:  # appears after start: read from its beginning
        f.truncate(1 << 30)  # 1 GiB of NUL bytes, no newline (sparse: costs no disk)
    wait_for(lambda: sidecar.value("logmonitor_bytes_total", stream="app") == 1 << 30, timeout=120, what="1 GiB read")
    append(log, "\n" + TIMEOUT)
    wait_for(lambda: sidecar.events(RULE) == 1, what="the next line counted")
    assert sidecar.value("logmonitor_oversized_lines_total", stream="app") == 1
    assert sidecar.value("logmonitor_lines_total", stream="app") == 2
    peak = peak_rss_mib(sidecar.proc.pid)
    print(f"peak RSS after a 1 GiB line: {peak:.1f} MiB")
    assert peak < 100


def test_healthz_fails_when_the_follow_loop_stalls(tmp_path):
    """In-process with a hand-moved clock: a loop that stops passing makes /healthz fail."""
    from prometheus_client import CollectorRegistry

    from monitor.run.sidecar import RunOptions, Sidecar

    now = [1000.0]
    log = tmp_path / "app.log"
    log.touch()
    sidecar = Sidecar(
        RunOptions(REPO / "config.yaml", (str(log),), "127.0.0.1:0", str(tmp_path / "state")),
        CollectorRegistry(),
        clock=lambda: now[0],
    )
    sidecar.loop.run_pass()
    assert sidecar._healthy() == (True, "ok")
    assert sidecar._ready()[0] is True
    now[0] += 31  # no pass for 31 s (the limit: 30 s, or 10 poll intervals)
    assert sidecar._healthy() == (False, "follow loop stalled for 31 s")
    sidecar.loop.run_pass()
    assert sidecar._healthy()[0] is True
    sidecar.shutdown()


def test_a_file_growing_at_disk_speed_is_followed_to_the_last_line(tmp_path, sidecars):
    log = tmp_path / "app.log"
    log.touch()
    sidecar = sidecars(tmp_path, "--log", str(log)).start()
    block = (log_line("HTTP 200 GET /api/analysis/status 耗时 12ms") + "\n") * 999 + TIMEOUT
    data = block.encode() * 2000  # ~370 MB as fast as the disk takes it, 2000 keyword lines among 2M
    with open(log, "ab") as f:
        for start in range(0, len(data), 8 << 20):
            f.write(data[start : start + (8 << 20)])
    wait_for(
        lambda: sidecar.value("logmonitor_bytes_total", stream="app") == len(data),
        timeout=180,
        what="the whole file read",
    )
    assert sidecar.events(RULE) == 2000
    assert sidecar.value("logmonitor_lines_total", stream="app") == 2_000_000
    assert sidecar.value("logmonitor_behind_bytes", stream="app") == 0
    assert peak_rss_mib(sidecar.proc.pid) < 100


def test_a_checkpoint_of_the_wrong_shape_is_reported_and_counting_works(tmp_path, sidecars):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.json").write_text(
        json.dumps(
            {
                "version": 1,
                "metrics": {"events": [["mongodb_operation_timeout", [], 5.0], ["broken"]]},
                "follow": {"app": {"rotations": 3, "__class__": "x"}},
                "files": [],
            }
        )
    )
    log = tmp_path / "app.log"
    log.touch()
    sidecar = sidecars(tmp_path, "--log", str(log)).start()
    assert "cannot be migrated: unexpected content" in sidecar.stderr()
    assert sidecar.events(RULE) == 0  # nothing half-restored
    append(log, TIMEOUT, 2)
    wait_for(lambda: sidecar.events(RULE) == 2, what="counting on the served metrics")
    assert sidecar.value("logmonitor_rotations_total", stream="app") == 0


def test_a_log_only_sidecar_never_loads_the_mongodb_driver(tmp_path):
    """pymongo costs ~7 MB of RSS; without a MongoDB URL it is not imported at all."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from monitor.run.sidecar import RunOptions, Sidecar\n"
        f"sidecar = Sidecar(RunOptions(Path({str(REPO / 'config.yaml')!r}), ({str(tmp_path / 'app.log')!r},),"
        f" '127.0.0.1:0', {str(tmp_path / 'state')!r}))\n"
        "print(sidecar.reconciler, 'pymongo' in sys.modules, 'bson' in sys.modules)\n"
    )
    env = {**os.environ, "MONGODB_URL": "", "MONGODB_URL_FILE": ""}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == ["None", "False", "False"], result.stderr


def test_out_of_file_descriptors_the_endpoint_still_answers(tmp_path, sidecars):
    """ulimit -n 120 and 100 files matching: the follower keeps descriptors free for the endpoint
    and the checkpoint, follows what the rest allows, and says how many files it left out."""
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        pytest.skip("prlimit (util-linux) not installed")
    logs = tmp_path / "logs"
    logs.mkdir()
    for n in range(100):
        (logs / f"app-{n:03d}.log").touch()
    prefix = (prlimit, "--nofile=120:120", "--")
    sidecar = sidecars(tmp_path, "--log", f"app={logs}/app-*.log", prefix=prefix).start()
    assert sidecar.get("/healthz") == (200, "ok\n")
    followed = sidecar.value("logmonitor_files_open", stream="app")
    skipped = sidecar.value("logmonitor_descriptor_skipped_files", stream="app")
    assert (followed + skipped, skipped > 0) == (100, True)
    first = logs / "app-000.log"  # followed: files are taken in name order
    append(first, TIMEOUT, 3)
    wait_for(lambda: sidecar.events(RULE) == 3, what="3 timeouts in a followed file")
    for _ in range(20):  # scrapes and health checks keep working
        assert sidecar.get("/healthz")[0] == 200
        assert sidecar.get("/metrics")[0] == 200
    sidecar.signal(signal.SIGTERM)
    assert sidecar.wait() == 0
    said = sidecar.stderr()
    assert said.count("not following every file") == 1, said
    assert "Too many open files" not in said


def test_a_scrape_sees_every_line_written_before_it_was_sent_through_rotations(tmp_path, sidecars):
    """200 rounds of: append one line (flushed), then scrape. The loop reads only every second while
    lines keep coming (busy_poll_seconds: 1), so the answer holds the line only because the scrape
    reads what was appended first. Every 25 rounds the file is rotated, by rename and create or by
    copy and truncate, so the line may be in a file the sidecar has not seen yet."""
    from datetime import datetime

    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    assert "busy_poll_seconds: 0.5 " in text
    config = tmp_path / "lazy.yaml"
    config.write_text(text.replace("busy_poll_seconds: 0.5 ", "busy_poll_seconds: 1   "), encoding="utf-8")
    log = tmp_path / "tradingagents.log"
    log.touch()
    sidecar = sidecars(tmp_path, "--log", str(log), config=config).start()
    missed = []
    for written in range(1, 201):
        if written % 25 == 0:
            if written % 50 == 0:
                log.rename(tmp_path / "tradingagents.log.1")  # as RotatingFileHandler does
                log.touch()
            else:  # logrotate's copytruncate (rotate 1): the old .1 goes, a new .1 is the copy
                (tmp_path / "tradingagents.log.1").unlink(missing_ok=True)
                shutil.copyfile(log, tmp_path / "tradingagents.log.1")
                os.truncate(log, 0)
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
        with open(log, "a", encoding="utf-8") as f:
            f.write(TIMEOUT.replace("2025-10-22 14:20:02,123", stamp))
            f.flush()
        seen = sidecar.events(RULE)
        if seen != written:
            missed.append((written, seen))
    assert missed == []
