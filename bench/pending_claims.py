"""Pending claims while MongoDB hangs: scrape latency, checkpoint size, restart memory.

The issue: with MongoDB hung and 100,000 claims pending, the checkpoint is 16 MB and is rewritten and
fsynced on every scrape (1-2 s a scrape), and a restart peaks at 252 MiB RSS, so inside the 192 MiB
limit of deploy/kubernetes the sidecar is OOM-killed on every start. Goals: a scrape in <= 0.5 s, a
restart under 150 MiB and alive inside 192 MiB.

1. Starts a "hung MongoDB": a TCP listener on a free 127.0.0.1 port (a thread of this script) that
   accepts connections, reads and discards what arrives and never answers, so every PyMongo operation
   waits for its timeouts and no claim is ever decided.
2. Writes a log with N lines (`--claims`, default 100,000) in the server's format, each
   `✅ 分析完成状态已更新到数据库: <id>` (rule analysis_completed_status_persisted, claim
   completed_status_written) with a distinct ObjectId-like id and an increasing current timestamp
   (1 ms apart, the last one now, in the config's time zone).
3. Writes a config derived from the shipped config.yaml: follow.start_at `beginning` (the first start
   reads the log from its start), reconcile.deadline_seconds one day (claims stay pending even for a
   build that gives up at the deadline while MongoDB is unreachable), reconcile.max_pending at least N.
   Everything else as shipped (timeouts, grace, re-check interval, checkpoint interval).
4. First start: `python -m monitor run --config --log app=LOG --listen --state-dir --mongo-url` (this
   venv's Python, `--source` on PYTHONPATH). Waits until `<prefix>_analysis_checks_pending` is N, then
   times `--scrapes` scrapes of /metrics (one connection each, `--scrape-gap` apart), sums the size of
   every file in the state directory, and stops it with SIGTERM (graceful: it writes a last checkpoint),
   timing the shutdown.
5. Restart without a limit: VmHWM (from /proc/PID/status, polled every 5 ms by a thread) when /readyz
   first answers 200, and after the first scrapes that show the pending gauge back at N; the times of
   both. Then SIGTERM again.
6. `--limited-starts` restarts (default 3) inside a memory cgroup limited to `--limit-mib` (192): v2
   (memory.max) if the unified hierarchy has the memory controller, else v1 (memory.limit_in_bytes).
   The child joins the cgroup before exec (`sh -c 'echo $$ > cgroup.procs; exec python -m monitor ...'`).
   A start survives when it is ready, shows N pending and answers 3 scrapes, all inside the limit; an
   OOM kill shows as exit -9 and the cgroup's oom_kill count. The cgroup is removed afterwards. Without
   a writable memory cgroup this part says so and only the VmHWM of step 5 is reported.
7. Prints a summary. Exit status 0 when the figures were measured (goals met or not, OOM kills
   included), 2 when the benchmark could not measure (the first start failed or never showed N).

Every child is stopped on exit, error, Ctrl-C or SIGTERM; every wait has a deadline.

    .venv/bin/python bench/pending_claims.py [--claims 100000] [--scrapes 20] [--limited-starts 3] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import math
import os
import re
import secrets
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config.yaml"
CLAIM_RULE = "analysis_completed_status_persisted"
CLAIM_HEAD = "backend.tradingagents_server | INFO     | tradingagents_server:analysis_worker:2552"
CLAIM_MESSAGE = "✅ 分析完成状态已更新到数据库: "
GOAL_SCRAPE_SECONDS, GOAL_RSS_MIB = 0.5, 150.0
SCRAPE_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 60.0
LIMITED_SCRAPES = 3  # a pod is scraped once it is up: the limited start must answer these too
EXIT_OK, EXIT_NOT_MEASURED = 0, 2
MIB = 1 << 20
_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


class BenchError(Exception):
    """The benchmark could not measure (as opposed to the sidecar missing a goal)."""


# ---------------------------------------------------------------------------------------------
# The hung MongoDB


class HungMongo:
    """Accepts TCP connections, reads and discards, never answers: PyMongo waits for its timeouts."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self.bytes_received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="hung-mongo", daemon=True)

    def start(self) -> HungMongo:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._listener.close()

    def _serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(0.2):
                    if key.fileobj is self._listener:
                        with contextlib.suppress(BlockingIOError, ConnectionAbortedError):
                            conn, _ = self._listener.accept()
                            conn.setblocking(False)
                            selector.register(conn, selectors.EVENT_READ)
                            self.connections += 1
                        continue
                    conn = key.fileobj
                    assert isinstance(conn, socket.socket)
                    try:
                        data = conn.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    self.bytes_received += len(data)
                    if not data:
                        selector.unregister(conn)
                        conn.close()
        finally:
            for key in list(selector.get_map().values()):
                if key.fileobj is not self._listener:
                    key.fileobj.close()  # type: ignore[union-attr]
            selector.close()


# ---------------------------------------------------------------------------------------------
# Memory cgroup (v2 or v1), created for the limited starts and removed afterwards


class MemoryCgroup:
    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @classmethod
    def create(cls, limit_bytes: int, suffix: str) -> tuple[MemoryCgroup | None, str]:
        """A fresh cgroup limited to `limit_bytes`, or None and why not."""
        name = f"bench-pending-claims-{suffix}"
        reasons = []
        for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
            try:
                controllers = (root / "cgroup.controllers").read_text().split()
                enabled = (root / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if "memory" not in controllers or "memory" not in enabled:
                reasons.append(f"{root}: cgroup v2 without the memory controller")
                continue
            group = cls(root / name, 2)
            try:
                group.path.mkdir()
                group._write("memory.max", str(limit_bytes))
            except OSError as exc:
                group.remove()
                reasons.append(f"{root}: {exc.strerror or exc}")
                continue
            with contextlib.suppress(OSError):
                group._write("memory.swap.max", "0")
            return group, f"cgroup v2 under {root}, memory.max = {limit_bytes // MIB} MiB"
        root = Path("/sys/fs/cgroup/memory")
        if (root / "memory.limit_in_bytes").exists():
            group = cls(root / name, 1)
            try:
                group.path.mkdir()
                group._write("memory.limit_in_bytes", str(limit_bytes))
            except OSError as exc:
                group.remove()
                reasons.append(f"{root}: {exc.strerror or exc}")
            else:
                with contextlib.suppress(OSError):  # no swap either, as in Kubernetes
                    group._write("memory.memsw.limit_in_bytes", str(limit_bytes))
                return group, f"cgroup v1 under {root}, memory.limit_in_bytes = {limit_bytes // MIB} MiB"
        return None, "; ".join(reasons) or "no cgroup memory controller found"

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def oom_kills(self) -> int:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        with contextlib.suppress(OSError, ValueError):
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return -1

    def peak_bytes(self) -> int | None:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError, ValueError):
            return int((self.path / name).read_text())
        return None

    def remove(self) -> bool:
        deadline = time.monotonic() + 5
        while self.path.exists():
            try:
                self.path.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
        return True

    def _write(self, name: str, value: str) -> None:
        (self.path / name).write_text(value)


# ---------------------------------------------------------------------------------------------
# Children


def read_memory_kib(pid: int) -> tuple[int, int] | None:
    """(VmHWM, VmRSS) in KiB, or None when the process is gone (or a zombie)."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    values[line[:5]] = int(line.split()[1])
    except (OSError, ValueError):
        return None
    if len(values) < 2:
        return None
    return values["VmHWM"], values["VmRSS"]


class HwmPoller:
    """Polls a process' VmHWM every 5 ms: the last value stays known even if it is killed."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.hwm_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"hwm-{pid}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            memory = read_memory_kib(self.pid)
            if memory:
                self.hwm_kib = max(self.hwm_kib, memory[0])
            self._stop.wait(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    @property
    def mib(self) -> float:
        return self.hwm_kib / 1024


@dataclass
class Sidecar:
    proc: subprocess.Popen[bytes]
    port: int
    started: float
    output: Path
    poller: HwmPoller = field(init=False)

    def __post_init__(self) -> None:
        self.poller = HwmPoller(self.proc.pid)

    def get(self, path: str, timeout: float) -> tuple[int, str, float]:
        """(status, body, seconds) of one GET on a fresh connection."""
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read().decode("utf-8", "replace")
        finally:
            conn.close()
        return response.status, body, time.perf_counter() - started

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.output.read_text(errors="replace")[-3000:]
        return ""

    def terminate(self) -> tuple[float, int]:
        """SIGTERM, then wait (SIGKILL after SHUTDOWN_TIMEOUT): (seconds, exit status)."""
        started = time.monotonic()
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=10)
        self.poller.stop()
        return time.monotonic() - started, rc


class Children:
    """Every sidecar started here; `close()` stops those still running."""

    def __init__(self, work: Path, python: str, source: Path) -> None:
        self.work = work
        self.python = python
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "MONITOR_"))}
        self.env["PYTHONPATH"] = str(source)
        self.started: list[Sidecar] = []
        self._outputs: list[Any] = []

    def module_file(self) -> str:
        """Which `monitor` package the children import."""
        out = subprocess.run(
            [self.python, "-c", "import monitor; print(monitor.__file__)"],
            env=self.env,
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout.strip()

    def start(self, name: str, args: list[str], cgroup: MemoryCgroup | None = None) -> Sidecar:
        port = free_port()
        command = [self.python, "-m", "monitor", "run", *args, "--listen", f"127.0.0.1:{port}"]
        if cgroup is not None:  # join the cgroup before exec: the whole life of the sidecar is inside
            command = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cgroup.procs), *command]
        output = self.work / f"{name}.out"
        stream = open(output, "wb")  # noqa: SIM115 (closed in close())
        self._outputs.append(stream)
        started = time.monotonic()
        proc = subprocess.Popen(command, env=self.env, cwd=self.work, stdout=stream, stderr=subprocess.STDOUT)
        sidecar = Sidecar(proc, port, started, output)
        self.started.append(sidecar)
        return sidecar

    def close(self) -> None:
        for sidecar in self.started:
            if sidecar.alive():
                sidecar.proc.terminate()
        for sidecar in self.started:
            try:
                sidecar.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sidecar.proc.kill()
                sidecar.proc.wait(timeout=10)
            sidecar.poller.stop()
        for stream in self._outputs:
            stream.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Inputs: config and log


def expand(value: str, environ: dict[str, str]) -> str:
    """${VAR} and ${VAR:-default} as the sidecar expands them."""
    return _ENV.sub(lambda m: environ.get(m[1]) or (m[2] if m[2] is not None else ""), value)


@dataclass
class Inputs:
    config: Path
    log: Path
    state: Path
    prefix: str
    claims: int


def write_inputs(work: Path, claims: int, environ: dict[str, str]) -> Inputs:
    raw = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    rules = {r["name"]: r for r in raw["rules"]}
    claim_rules = [c for c in raw["reconcile"]["claims"] if c["rule"] == CLAIM_RULE and not c.get("when")]
    if not claim_rules:
        raise BenchError(f"{CONFIG}: no claim for rule {CLAIM_RULE} in reconcile.claims")
    pattern = re.compile(rules[CLAIM_RULE]["pattern"])
    raw["follow"]["start_at"] = "beginning"
    reconcile = raw["reconcile"]
    reconcile["deadline_seconds"] = 86400
    reconcile["max_pending"] = max(int(reconcile.get("max_pending", 100_000)), claims)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")

    zone = ZoneInfo(expand(raw["timestamp"]["timezone"], environ))
    first = datetime.now(zone) - timedelta(milliseconds=claims - 1)
    stamp = f"{int(time.time()):08x}{secrets.token_hex(5)}"
    log = work / "tradingagents.log"
    with open(log, "w", encoding="utf-8") as f:
        for i in range(claims):
            t = first + timedelta(milliseconds=i)
            analysis_id = f"{stamp}{i:06x}"
            line = f"{t:%Y-%m-%d %H:%M:%S},{t.microsecond // 1000:03d} | {CLAIM_HEAD} | {CLAIM_MESSAGE}{analysis_id}"
            if i == 0:
                match = pattern.search(line)
                if not match or match["analysis_id"] != analysis_id:
                    raise BenchError(f"the claim line does not match rule {CLAIM_RULE}: {line}")
            f.write(line + "\n")
    prefix = expand(str(raw["metrics"]["prefix"]), environ)
    return Inputs(config, log, work / "state", prefix, claims)


# ---------------------------------------------------------------------------------------------
# Measuring


def metric(body: str, name: str) -> float | None:
    """The sum of a metric's samples in Prometheus text, None if absent."""
    values = re.findall(rf"^{re.escape(name)}(?:\{{[^}}]*\}})?\s+(\S+)", body, re.M)
    return sum(float(v) for v in values) if values else None


def state_files(directory: Path) -> dict[str, int]:
    sizes = {}
    for path in sorted(directory.rglob("*")):
        with contextlib.suppress(OSError):
            if path.is_file():
                sizes[str(path.relative_to(directory))] = path.stat().st_size
    return sizes


@dataclass
class FirstStart:
    pending_after: float = 0.0
    wait_scrapes: list[float] = field(default_factory=list)
    scrapes: list[float] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)
    state: dict[str, int] = field(default_factory=dict)
    rss_mib: float = 0.0
    hwm_mib: float = 0.0
    shutdown: tuple[float, int] = (0.0, 0)
    mongo_connections: int = 0


@dataclass
class Start:
    """A restart: when it was ready, when the pending gauge was back, its memory, how it ended."""

    outcome: str = ""
    ready_after: float | None = None
    pending_after: float | None = None
    hwm_at_ready_mib: float | None = None
    hwm_mib: float = 0.0  # until the measurement ended (before SIGTERM)
    hwm_life_mib: float = 0.0  # including the shutdown
    scrapes: list[float] = field(default_factory=list)
    exit_status: int | None = None
    shutdown: float | None = None
    oom_kills: int | None = None
    cgroup_peak: int | None = None


def wait_pending(sidecar: Sidecar, inputs: Inputs, deadline: float, scrapes: list[float]) -> str:
    """Scrapes until the pending gauge shows N; returns the last /metrics body."""
    name = f"{inputs.prefix}_analysis_checks_pending"
    pending, failed = None, 0
    while time.monotonic() < deadline:
        if not sidecar.alive():
            raise BenchError(f"the sidecar exited with {sidecar.proc.returncode}:\n{sidecar.tail()}")
        try:
            status, body, took = sidecar.get("/metrics", SCRAPE_TIMEOUT)
        except (OSError, http.client.HTTPException):
            time.sleep(0.2)
            continue
        scrapes.append(took)
        failed = 0 if status == 200 else failed + 1
        if failed >= 10:
            raise BenchError(f"/metrics answered {status} 10 times in a row:\n{sidecar.tail()}")
        pending = metric(body, name) if status == 200 else None
        if pending is not None and pending >= inputs.claims:
            return body
        time.sleep(0.5)
    raise BenchError(f"{name} still {pending} (expected {inputs.claims}) at the deadline:\n{sidecar.tail()}")


def first_start(children: Children, inputs: Inputs, args: argparse.Namespace, mongo: HungMongo) -> FirstStart:
    result = FirstStart()
    sidecar = children.start("first-start", sidecar_args(inputs, mongo))
    body = wait_pending(sidecar, inputs, time.monotonic() + args.timeout, result.wait_scrapes)
    result.pending_after = time.monotonic() - sidecar.started
    print(f"first start: {inputs.claims:,} pending after {result.pending_after:.1f} s; timing {args.scrapes} scrapes")
    for _ in range(args.scrapes):
        time.sleep(args.scrape_gap)
        status, body, seconds = sidecar.get("/metrics", SCRAPE_TIMEOUT)
        if status != 200:
            raise BenchError(f"/metrics answered {status}")
        result.scrapes.append(seconds)
    p = inputs.prefix
    for name in ("analysis_checks_pending", "analysis_claims_dropped_total", "mongo_up", "mongo_errors_total"):
        result.metrics[name] = metric(body, f"{p}_{name}")
    result.metrics["decided"] = metric(body, f"{p}_analysis_checks_total")
    result.state = state_files(inputs.state)
    memory = read_memory_kib(sidecar.proc.pid)
    if memory:
        result.hwm_mib, result.rss_mib = memory[0] / 1024, memory[1] / 1024
    result.mongo_connections = mongo.connections
    result.shutdown = sidecar.terminate()
    print(f"first start: stopped with SIGTERM in {result.shutdown[0]:.2f} s (exit {result.shutdown[1]})")
    return result


def restart(
    children: Children,
    inputs: Inputs,
    args: argparse.Namespace,
    mongo: HungMongo,
    name: str,
    cgroup: MemoryCgroup | None = None,
    scrapes_after: int = 0,
) -> Start:
    """Starts on the existing checkpoint; waits for /readyz 200, then scrapes until the pending gauge is
    back at N, then `scrapes_after` more scrapes; then SIGTERM."""
    result = Start()
    sidecar = children.start(name, sidecar_args(inputs, mongo), cgroup)
    pending_name = f"{inputs.prefix}_analysis_checks_pending"
    deadline = time.monotonic() + args.timeout
    scrapes_left, done = scrapes_after, False
    while not done and time.monotonic() < deadline and sidecar.alive():
        try:
            if result.ready_after is None:
                if sidecar.get("/readyz", 2)[0] == 200:
                    result.ready_after = time.monotonic() - sidecar.started
                    result.hwm_at_ready_mib = sidecar.poller.mib
                    continue
            else:
                status, body, took = sidecar.get("/metrics", SCRAPE_TIMEOUT)
                result.scrapes.append(took)
                pending = metric(body, pending_name) if status == 200 else None
                if result.pending_after is not None:
                    scrapes_left -= 1
                elif pending is not None and pending >= inputs.claims:
                    result.pending_after = time.monotonic() - sidecar.started
                done = result.pending_after is not None and scrapes_left <= 0
        except (OSError, http.client.HTTPException):
            pass  # not listening yet, or killed mid-request
        time.sleep(0.02)
    ended = time.monotonic() - sidecar.started
    alive = sidecar.alive()
    result.hwm_mib = sidecar.poller.mib  # up to here: start, restore, scrapes (not the shutdown)
    if alive:
        result.shutdown, result.exit_status = sidecar.terminate()
    else:
        result.exit_status = sidecar.proc.wait()
        sidecar.poller.stop()
    result.hwm_life_mib = sidecar.poller.mib
    if cgroup is not None:
        result.oom_kills, result.cgroup_peak = cgroup.oom_kills(), cgroup.peak_bytes()
    if not alive:
        killed = " (OOM-killed)" if result.oom_kills else ""
        result.outcome = f"exited {result.exit_status}{killed} after {ended:.1f} s"
    elif not done:
        result.outcome = f"not back at {inputs.claims:,} pending within {args.timeout:g} s"
    elif result.oom_kills:
        result.outcome = f"OOM-killed at shutdown (exit {result.exit_status})"
    else:
        result.outcome = "survived"
    return result


def sidecar_args(inputs: Inputs, mongo: HungMongo) -> list[str]:
    return [
        "--config",
        str(inputs.config),
        "--log",
        f"app={inputs.log}",
        "--state-dir",
        str(inputs.state),
        "--mongo-url",
        f"mongodb://127.0.0.1:{mongo.port}/",
    ]


# ---------------------------------------------------------------------------------------------
# Report


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


def stats(values: list[float]) -> str:
    if not values:
        return "-"
    return (
        f"min {min(values):.3f}  median {statistics.median(values):.3f}  p90 {percentile(values, 90):.3f}"
        f"  max {max(values):.3f} s"
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def print_summary(
    args: argparse.Namespace,
    inputs: Inputs,
    module: str,
    first: FirstStart,
    again: Start,
    limited: list[Start],
    cgroup_note: str,
) -> None:
    rows: list[tuple[str, str, str]] = []

    def row(what: str, value: str, goal: str = "") -> None:
        rows.append((what, value, goal))

    size = sum(first.state.values())
    files = ", ".join(
        f"{name} {n / 1e6:.1f} MB" if n >= 1e5 else f"{name} {n / 1e3:.1f} kB" for name, n in first.state.items()
    )
    m = first.metrics
    row("pending after the first start", f"{m['analysis_checks_pending']:,.0f} after {first.pending_after:.1f} s")
    row(
        "  dropped / decided / mongo_up",
        f"{m['analysis_claims_dropped_total']:.0f} / {m['decided']:.0f} / {m['mongo_up']:.0f}"
        f"  (mongo errors {m['mongo_errors_total'] or 0:.0f}, {first.mongo_connections} TCP connections)",
    )
    row("  first scrape (while reading)", seconds(first.wait_scrapes[0] if first.wait_scrapes else None))
    scrape_max = max(first.scrapes)
    row(
        f"scrape /metrics x{len(first.scrapes)}",
        stats(first.scrapes),
        f"<= {GOAL_SCRAPE_SECONDS} s: {verdict(scrape_max <= GOAL_SCRAPE_SECONDS)}",
    )
    row("state directory", f"{size / 1e6:.1f} MB ({size / MIB:.1f} MiB): {files or 'empty'}")
    row("RSS / VmHWM of the first start", f"{first.rss_mib:.0f} / {first.hwm_mib:.0f} MiB")
    row("shutdown on SIGTERM", f"{first.shutdown[0]:.2f} s (exit {first.shutdown[1]})")
    row("restart: /readyz 200", seconds(again.ready_after))
    row("restart: pending back at N", seconds(again.pending_after))
    row("restart: first scrape", seconds(again.scrapes[0] if again.scrapes else None))
    hwm_ready = "-" if again.hwm_at_ready_mib is None else f"{again.hwm_at_ready_mib:.0f} MiB"
    row("restart: VmHWM at ready", hwm_ready)
    row(
        "restart: VmHWM incl. scrapes",
        f"{again.hwm_mib:.0f} MiB ({again.outcome})",
        f"< {GOAL_RSS_MIB:.0f} MiB: {verdict(again.hwm_mib < GOAL_RSS_MIB and again.pending_after is not None)}",
    )
    row("restart: shutdown on SIGTERM", f"{seconds(again.shutdown)} (exit {again.exit_status})")
    if limited:
        for i, start in enumerate(limited, 1):
            peak = "-" if start.cgroup_peak is None else f"{start.cgroup_peak / MIB:.0f} MiB"
            row(
                f"inside {args.limit_mib} MiB: start {i}",
                f"{start.outcome}; exit {start.exit_status}, oom_kill {start.oom_kills}, "
                f"VmHWM {start.hwm_mib:.0f} MiB, cgroup peak {peak}, ready {seconds(start.ready_after)}",
            )
        survived = sum(s.outcome == "survived" for s in limited)
        row(
            f"inside {args.limit_mib} MiB",
            f"{survived} of {len(limited)} starts survived",
            f"all: {verdict(survived == len(limited))}",
        )
    else:
        row(f"inside {args.limit_mib} MiB", f"not measured: {cgroup_note}")

    print(f"\n=== pending claims with MongoDB hung: {inputs.claims:,} claims ===")
    print(f"monitor package: {module}")
    print(f"log: {inputs.log} ({inputs.log.stat().st_size / 1e6:.1f} MB); {os.cpu_count()} CPUs")
    if limited:
        print(f"memory limit: a fresh {cgroup_note} for each start, no swap")
        print("(VmHWM also counts shared library pages charged to other cgroups: it can exceed the limit)")
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows if r[2])
    for what, value, goal in rows:
        print(f"{what:<{width}}  {value:<{value_width}}  {goal}".rstrip())


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", type=int, default=100_000, help="distinct pending claims (default 100000)")
    parser.add_argument("--scrapes", type=int, default=20, help="timed scrapes of /metrics (default 20)")
    parser.add_argument("--scrape-gap", type=float, default=0.25, help="seconds between timed scrapes")
    parser.add_argument("--limited-starts", type=int, default=3, help="restarts inside the memory limit (default 3)")
    parser.add_argument("--limit-mib", type=int, default=192, help="the memory limit (default 192, as deployed)")
    parser.add_argument("--timeout", type=float, default=180, help="deadline of each start, seconds (default 180)")
    parser.add_argument(
        "--source", type=Path, default=REPO, help="directory holding the `monitor` package to run (default: this repo)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (log, config, state)")
    args = parser.parse_args(argv)
    if not 1 <= args.claims <= 0xFFFFFF:
        parser.error("--claims must be between 1 and 16777215")
    if args.scrapes < 1:
        parser.error("--scrapes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    work = Path(tempfile.mkdtemp(prefix="pending-claims-"))
    children = Children(work, sys.executable, args.source.resolve())
    mongo = HungMongo().start()
    cgroup: MemoryCgroup | None = None
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        inputs = write_inputs(work, args.claims, children.env)
        module = children.module_file()
        print(f"hung MongoDB on 127.0.0.1:{mongo.port}; {args.claims:,} claims in {inputs.log}; monitor from {module}")
        first = first_start(children, inputs, args, mongo)
        again = restart(children, inputs, args, mongo, "restart", scrapes_after=1)
        print(f"restart: {again.outcome}, VmHWM {again.hwm_mib:.0f} MiB")
        limited: list[Start] = []
        note = "--limited-starts 0"
        for i in range(args.limited_starts):  # a fresh cgroup each start: its oom_kill and peak are this start's
            cgroup, note = MemoryCgroup.create(args.limit_mib * MIB, f"{os.getpid()}-{i + 1}")
            if cgroup is None:
                print(f"no memory limit possible: {note}")
                break
            start = restart(children, inputs, args, mongo, f"limited-{i + 1}", cgroup, LIMITED_SCRAPES)
            print(f"start {i + 1} inside {args.limit_mib} MiB ({cgroup.path}): {start.outcome}, "
                  f"VmHWM {start.hwm_life_mib:.0f} MiB")  # fmt: skip
            limited.append(start)
            if not cgroup.remove():
                raise BenchError(f"could not remove {cgroup.path}")
            cgroup = None
        print_summary(args, inputs, module, first, again, limited, note)
        return EXIT_OK
    except (BenchError, subprocess.SubprocessError, OSError, http.client.HTTPException) as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return EXIT_NOT_MEASURED
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        children.close()
        mongo.stop()
        if cgroup is not None and not cgroup.remove():
            print(f"could not remove {cgroup.path}", file=sys.stderr)
        signal.signal(signal.SIGTERM, previous)
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
