"""Live-follow latency and cost: `monitor run` vs mtail, both following one log written at a steady rate.

1. Starts `monitor run` (this venv's Python) and mtail (program generated from config.yaml, as in
   scan_throughput.py), both following the same, initially empty, log in a temporary directory.
2. Per rate (default 1000, 5500 and 10000 lines/s) runs two phases of `--seconds` each, with a writer in
   its own process that appends lines in the server's format, one write(2) per line with flush (as
   logging.FileHandler does), paced evenly, plus one `MongoDB操作超时` keyword line every 200 ms:
   - latency: scraper threads poll both /metrics endpoints (mtail every 1 ms, the sidecar every 5 ms:
     each scrape of the sidecar writes and fsyncs its checkpoint). Latency of a keyword line = the
     first scrape that shows the counter at or above its ordinal minus the time right after the
     writer's flush. The poll interval plus a scrape's duration is the resolution.
   - cost: no scraping while the writer runs. CPU time of each tool (utime+stime from /proc/PID/stat)
     over the writing time plus a short settle, as % of one core; VmRSS and VmHWM at the end.
   After each phase both tools' keyword and line counts must equal what was written.
3. Prints a table per tool and rate, the sidecar/mtail ratios and the issue's goals. Exit 1 if the
   sidecar's counts are wrong, 2 if a tool fails. mtail's mismatches are only reported.

    .venv/bin/python bench/follow_latency.py [--seconds 10] [--rates 1000,5500,10000] [--profile-sidecar FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import scan_throughput as st  # this directory is sys.path[0] when the script runs

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config.yaml"
RULE = "mongodb_operation_timeout"
KEYWORD_HEAD = st.head(st.SERVER, "ERROR", "tradingagents_server:safe_mongodb_operation:212")
KEYWORD_MESSAGE = "MongoDB操作超时"
POOL_SIZE = 20_000
MAX_NOISE_LINE_BYTES = 600  # leaves out the multi-KB raw LLM responses: lines of ~165 B on average
SETTLE_SECONDS = 1.0  # after the writer stops, before the cost phase's CPU reading: both tools catch up
CATCH_UP_TIMEOUT = 15.0
GOAL_P99_MS, GOAL_CPU_RATIO, GOAL_RSS_MB = 20.0, 0.1, 45.0  # p99: only the >20ms column
EXIT_OK, EXIT_SIDECAR_MISMATCH, EXIT_TOOL_FAILED = 0, 1, 2
TICK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1

KEYWORD_RE = re.compile(rf'^tradingagents_log_events_total\{{[^}}]*rule="{RULE}"[^}}]*\}}\s+(\S+)', re.M)
LINES_RE = re.compile(r"^(?:logmonitor_lines_total|bench_lines_total)(?:\{[^}]*\})?\s+(\S+)", re.M)


def now_ns() -> int:
    """CLOCK_MONOTONIC is system-wide: the writer's and the scrapers' readings compare directly."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def die_with_parent() -> None:
    """Children get SIGTERM when this process dies, even by SIGKILL: nothing is left behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# ---------------------------------------------------------------------------------------------
# The writer (a separate process, so its CPU time counts against no one)


def noise_pool(seed: int, progress_share: float = 0.0) -> list[str]:
    """Single-line records in the server's format, after the timestamp: noise plus ~1.3% lines that
    match other rules (as in the real log), none matching the measured rule. With `progress_share`,
    that share of the lines are the worker's progress lines (`分析 <id> 进度: ...`, rule
    analysis_progress), as in a server whose analyses report every step."""
    kinds = [k for k in st.all_kinds() if RULE not in k.rules]
    progress = next(k for k in kinds if k.name == "progress")
    rng = random.Random(seed)
    pool: list[str] = []
    while len(pool) < POOL_SIZE:
        kind = progress if rng.random() < progress_share else rng.choices(kinds, [k.weight for k in kinds])[0]
        text = kind.head + kind.make(rng) + "\n"
        if "\n" not in text[:-1] and len(text.encode()) + 23 <= MAX_NOISE_LINE_BYTES:
            pool.append(text)
    return pool


class Asctime:
    """logging's default asctime (local time, milliseconds), strftime only once per second."""

    def __init__(self) -> None:
        self._second, self._text = -1, ""

    def __call__(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._text = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._text},{int((now - second) * 1000):03d}"


def writer_main(argv: list[str]) -> int:
    """`follow_latency.py _writer LOG RATE SECONDS KEYWORD_INTERVAL SEED`: prints "ready", waits for a
    line on stdin, writes, prints a JSON summary (lines, bytes, keyword flush times)."""
    die_with_parent()
    path, rate, seconds, interval, seed = argv[0], float(argv[1]), float(argv[2]), float(argv[3]), int(argv[4])
    pool, asctime = noise_pool(seed, float(argv[5])), Asctime()
    total = int(rate * seconds)
    print("ready", flush=True)
    sys.stdin.readline()
    lines = written = 0
    keywords: list[int] = []
    max_lag = 0
    with open(path, "a", encoding="utf-8") as log:  # what logging.FileHandler opens
        start = now_ns()
        end = start + int(seconds * 1e9)
        next_keyword = start + int(interval * 1e9 / 2)
        step = 1e9 / rate
        while True:
            now = now_ns()
            due = min(total, int((now - start) / step) + 1)
            if lines < due:
                max_lag = max(max_lag, now - (start + int(lines * step)))
            while lines < due:  # usually one line; a few after a late wake-up
                text = asctime() + pool[lines % POOL_SIZE]
                log.write(text)
                log.flush()
                written += len(text.encode())
                lines += 1
            if now >= next_keyword and next_keyword < end:
                text = asctime() + KEYWORD_HEAD + KEYWORD_MESSAGE + "\n"
                log.write(text)
                log.flush()
                keywords.append(now_ns())
                written += len(text.encode())
                next_keyword += int(interval * 1e9)
            if lines >= total and next_keyword >= end:
                break
            wake = min(start + int(lines * step), next_keyword if next_keyword < end else end)
            delay = wake - now_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
        finished = now_ns()
    summary = {
        "lines": lines + len(keywords),
        "bytes": written,
        "keywords": keywords,
        "start": start,
        "end": finished,
        "max_lag_ms": max_lag / 1e6,
    }
    print(json.dumps(summary), flush=True)
    return 0


@dataclass
class Written:
    lines: int
    bytes: int
    keywords: list[int]  # CLOCK_MONOTONIC ns right after each keyword line's flush
    seconds: float
    max_lag_ms: float  # the writer's worst delay behind its schedule

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6


class Writer:
    """One writing phase in a child process; `go()` starts it, `wait()` returns what it wrote."""

    def __init__(self, children: Children, log: Path, rate: float, seconds: float, interval: float, seed: int,
                 progress_share: float):  # fmt: skip
        command = [sys.executable, __file__, "_writer", str(log), str(rate), str(seconds), str(interval), str(seed),
                   str(progress_share)]  # fmt: skip
        self._proc = children.start(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdin and self._proc.stdout
        if self._proc.stdout.readline().strip() != "ready":
            raise ToolFailedError("writer did not start")

    def go(self) -> None:
        assert self._proc.stdin
        self._proc.stdin.write("go\n")
        self._proc.stdin.flush()

    def wait(self) -> Written:
        out, _ = self._proc.communicate()
        if self._proc.returncode != 0:
            raise ToolFailedError(f"writer exited {self._proc.returncode}")
        s = json.loads(out)
        return Written(s["lines"], s["bytes"], s["keywords"], (s["end"] - s["start"]) / 1e9, s["max_lag_ms"])


# ---------------------------------------------------------------------------------------------
# Processes


class ToolFailedError(Exception):
    pass


class Children:
    """Every process started here; `close()` stops those still running (SIGTERM, then SIGKILL)."""

    def __init__(self, workdir: Path) -> None:
        self.procs: list[subprocess.Popen[Any]] = []
        self._workdir = workdir
        self._outputs: list[Any] = []

    def start(self, command: list[str], name: str | None = None, **kwargs: Any) -> subprocess.Popen[Any]:
        if name:  # a long-running tool: output to files (a full pipe would block it), killed with us
            kwargs["stdout"] = open(self._workdir / f"{name}.out", "wb")  # noqa: SIM115 (closed in close())
            self._outputs.append(kwargs["stdout"])
            kwargs["stderr"] = subprocess.STDOUT
            kwargs["preexec_fn"] = die_with_parent  # only started before any thread of ours exists
        proc = subprocess.Popen(command, **kwargs)
        self.procs.append(proc)
        return proc

    def output(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self._workdir / f"{name}.out").read_text(errors="replace")[-3000:]
        return ""

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe:
                    pipe.close()
        for output in self._outputs:
            output.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Tool:
    name: str
    proc: subprocess.Popen[Any]
    port: int
    poll_seconds: float
    connection: http.client.HTTPConnection = field(init=False)

    def __post_init__(self) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)

    def get(self, path: str, retry: bool = True) -> tuple[int, str]:
        """One request on this tool's kept-alive connection; as an HTTP client does, once more on a
        new connection when the server had closed the idle one (both close idle connections)."""
        try:
            self.connection.request("GET", path)
            response = self.connection.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            self.connection.close()
            if not retry:
                raise
        return self.get(path, retry=False)

    def counts(self) -> tuple[int, int]:
        """(keyword count, line count) from /metrics; a series not exported yet is 0."""
        status, body = self.get("/metrics")
        if status != 200:
            raise ToolFailedError(f"{self.name}: /metrics answered {status}")
        return _sum(KEYWORD_RE, body), _sum(LINES_RE, body)

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime: fields 14 and 15 of proc(5)

    def memory_mb(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) in MB."""
        values = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    values[line[:5]] = int(line.split()[1]) * 1024 / 1e6
        return values["VmRSS"], values["VmHWM"]

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise ToolFailedError(f"{self.name} exited {self.proc.returncode}")


def _sum(pattern: re.Pattern[str], body: str) -> int:
    return int(sum(float(v) for v in pattern.findall(body)))


def start_sidecar(children: Children, work: Path, log: Path, config: Path, poll: float, profile: Path | None) -> Tool:
    port = free_port()
    python = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else [sys.executable]
    command = [*python, "-m", "monitor", "run", "--config", str(config), "--log", f"app={log}",
               "--listen", f"127.0.0.1:{port}", "--state-dir", str(work / "state")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONGODB_URL")}  # log-only
    tool = Tool("sidecar", children.start(command, name="sidecar", env=env, cwd=REPO), port, poll)
    wait_until(tool, lambda: tool.get("/readyz")[0] == 200, "answer /readyz with 200")
    return tool


def start_mtail(children: Children, work: Path, log: Path, config: Path, poll: float, all_rules: bool) -> Tool | None:
    executable = shutil.which("mtail")
    if not executable:
        print("mtail not found on PATH: measuring the sidecar alone")
        return None
    progs = work / "mtail"
    progs.mkdir()
    rules = st.load_rules(config)
    program = st.mtail_program(rules if all_rules else {RULE: rules[RULE]})
    (progs / "tradingagents.mtail").write_text(program, encoding="utf-8")
    port = free_port()
    # Default --poll_interval (250ms) and --poll_log_interval (250ms) of this mtail, which only polls.
    command = [executable, "--progs", str(progs), "--logs", str(log), "--port", str(port),
               "--address", "127.0.0.1", "--logtostderr"]  # fmt: skip
    tool = Tool("mtail", children.start(command, name="mtail"), port, poll)
    wait_until(tool, lambda: tool.get("/metrics")[0] == 200 and has_open(tool, log), "serve /metrics, open the log")
    return tool


def has_open(tool: Tool, path: Path) -> bool:
    fd_dir = Path(f"/proc/{tool.proc.pid}/fd")
    with contextlib.suppress(OSError):
        return any(os.readlink(fd_dir / fd) == str(path) for fd in os.listdir(fd_dir))
    return False


def wait_until(tool: Tool, ready: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tool.alive()
        with contextlib.suppress(OSError, http.client.HTTPException):
            if ready():
                return
        time.sleep(0.05)
    raise ToolFailedError(f"{tool.name} did not {what} within {timeout:.0f} s")


# ---------------------------------------------------------------------------------------------
# Measuring


class Scraper(threading.Thread):
    """Polls one tool's /metrics every `poll_seconds`; records when the keyword count changed."""

    def __init__(self, tool: Tool) -> None:
        super().__init__(name=f"scrape-{tool.name}", daemon=True)
        self.tool = tool
        self.changes: list[tuple[int, int]] = []  # (count, ns when the response had arrived)
        self.durations: list[int] = []
        self.errors = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        last = -1
        interval = int(self.tool.poll_seconds * 1e9)
        while not self._stop_event.is_set():
            sent = now_ns()
            try:
                count, _ = self.tool.counts()
            except (OSError, http.client.HTTPException, ToolFailedError):
                self.errors += 1
                time.sleep(0.01)
                continue
            received = now_ns()
            self.durations.append(received - sent)
            if count != last:
                self.changes.append((count, received))
                last = count
            delay = sent + interval - now_ns()
            if delay > 0:
                time.sleep(delay / 1e9)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


@dataclass
class ToolPhase:
    latencies_ms: list[float] = field(default_factory=list)
    missed: int = 0
    scrape_ms: float = 0.0  # median duration of one scrape
    cpu_percent_scraped: float = 0.0
    cpu_percent: float = 0.0
    rss_mb: float = 0.0
    hwm_mb: float = 0.0
    mismatches: list[str] = field(default_factory=list)  # counts that differ from what was written
    notes: list[str] = field(default_factory=list)


@dataclass
class RateResult:
    rate: float
    latency_written: Written
    cost_written: Written
    tools: dict[str, ToolPhase]


@dataclass
class Expected:
    keywords: int = 0
    lines: int = 0

    def add(self, written: Written) -> None:
        self.keywords += len(written.keywords)
        self.lines += written.lines


def latencies(keyword_times: list[int], first_ordinal: int, changes: list[tuple[int, int]]) -> tuple[list[float], int]:
    """Per keyword line: first scrape showing count >= its ordinal, minus its flush time (ms)."""
    result, missed = [], 0
    for index, flushed in enumerate(keyword_times):
        ordinal = first_ordinal + index
        seen = next((t for count, t in changes if count >= ordinal), None)
        if seen is None:
            missed += 1
        else:
            result.append((seen - flushed) / 1e6)
    return result, missed


def catch_up(tools: list[Tool], expected: Expected) -> dict[str, list[str]]:
    """Wait until every tool shows the expected counts; the mismatches left after the timeout."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    problems: dict[str, list[str]] = {}
    pending = list(tools)
    while pending:
        for tool in list(pending):
            tool.alive()
            keywords, lines = tool.counts()
            if (keywords, lines) == (expected.keywords, expected.lines):
                pending.remove(tool)
                problems[tool.name] = []
            else:
                problems[tool.name] = [
                    f"{what}: {got} (expected {want})"
                    for what, got, want in [(RULE, keywords, expected.keywords), ("lines", lines, expected.lines)]
                    if got != want
                ]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return problems


def warm_up(log: Path, tools: list[Tool], expected: Expected) -> None:
    """A few lines and one keyword line, so both tools have demonstrably read the file once."""
    pool = noise_pool(7)[:20]
    with open(log, "a", encoding="utf-8") as f:
        for text in [*pool, KEYWORD_HEAD + KEYWORD_MESSAGE + "\n"]:
            f.write(Asctime()() + text)
            f.flush()
    expected.keywords += 1
    expected.lines += len(pool) + 1
    problems = catch_up(tools, expected)
    if any(problems.values()):
        raise ToolFailedError(f"warm-up lines not seen: {problems}")


def run_rate(args: argparse.Namespace, children: Children, log: Path, tools: list[Tool], expected: Expected,
             rate: float, seed: int) -> RateResult:  # fmt: skip
    phases = {tool.name: ToolPhase() for tool in tools}

    # Latency phase: scraped at high frequency.
    writer = Writer(children, log, rate, args.seconds, args.keyword_interval, seed, args.progress_share)
    first_ordinal = expected.keywords + 1
    scrapers = [Scraper(tool) for tool in tools]
    cpu_before = {tool.name: tool.cpu_seconds() for tool in tools}
    started = time.monotonic()
    for scraper in scrapers:
        scraper.start()
    writer.go()
    latency_written = writer.wait()
    expected.add(latency_written)
    time.sleep(SETTLE_SECONDS)
    for scraper in scrapers:
        scraper.stop()
    wall = time.monotonic() - started
    for tool, scraper in zip(tools, scrapers, strict=True):
        phase = phases[tool.name]
        phase.cpu_percent_scraped = (tool.cpu_seconds() - cpu_before[tool.name]) / wall * 100
        phase.latencies_ms, phase.missed = latencies(latency_written.keywords, first_ordinal, scraper.changes)
        durations = sorted(scraper.durations)
        phase.scrape_ms = durations[len(durations) // 2] / 1e6 if durations else float("nan")
        if scraper.errors:
            phase.notes.append(f"{scraper.errors} failed scrapes")
    for name, problems in catch_up(tools, expected).items():
        phases[name].mismatches += [f"after latency phase: {p}" for p in problems]

    # Cost phase: no scraping while writing; one verification at the end.
    writer = Writer(children, log, rate, args.seconds, args.keyword_interval, seed + 1, args.progress_share)
    cpu_before = {tool.name: tool.cpu_seconds() for tool in tools}
    started = time.monotonic()
    writer.go()
    cost_written = writer.wait()
    expected.add(cost_written)
    time.sleep(SETTLE_SECONDS)
    wall = time.monotonic() - started
    for tool in tools:
        phase = phases[tool.name]
        phase.cpu_percent = (tool.cpu_seconds() - cpu_before[tool.name]) / wall * 100
        phase.rss_mb, phase.hwm_mb = tool.memory_mb()
    for name, problems in catch_up(tools, expected).items():
        phases[name].mismatches += [f"after cost phase: {p}" for p in problems]
    return RateResult(rate, latency_written, cost_written, phases)


# ---------------------------------------------------------------------------------------------
# Report


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: with n samples, p99 is the largest unless n >= 100."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(-(-p * len(ordered) // 100)) - 1))]


def print_phase(result: RateResult) -> None:
    for label, w in [("latency", result.latency_written), ("cost", result.cost_written)]:
        print(f"  {label:<8}{w.lines:>8,} lines {w.bytes / 1e6:>6.1f} MB in {w.seconds:.2f} s = "
              f"{w.lines / w.seconds:,.0f} lines/s, {w.mb_per_s:.2f} MB/s, {len(w.keywords)} keyword lines, "
              f"writer at most {w.max_lag_ms:.1f} ms behind schedule")  # fmt: skip
    for name, phase in result.tools.items():
        for problem in phase.mismatches + phase.notes:
            print(f"  {name}: {problem}")


COLUMNS = [  # header, width (negative: left-aligned), format
    ("tool", -9, ""), ("lines/s", 8, ",.0f"), ("MB/s", 6, ".2f"), ("p50 ms", 8, ".1f"), ("p99 ms", 8, ".1f"),
    ("max ms", 8, ".1f"), ("n", 5, ""), (">20ms", 7, "d"), ("res ms", 8, ".1f"), ("CPU %", 8, ".2f"),
    ("%/MB/s", 8, ".2f"), ("CPU %*", 8, ".2f"), ("RSS MB", 8, ".1f"), ("HWM MB", 8, ".1f"), ("  counts", -10, ""),
]  # fmt: skip
LEGEND = """MB = 10^6 B. Latency = keyword line flushed -> counter seen on /metrics (n of them measured, -k: never
seen; >20ms: how many took longer). res ms = scrape interval + median scrape time: the resolution.
CPU % of one core over the writing phase + {settle:.0f} s settle, not scraped (clock tick {tick:.0f} ms);
%/MB/s = CPU % per MB/s of log; CPU %* = the same in the latency phase, scraped at high frequency.
RSS = VmRSS at the end of the phase; HWM = VmHWM."""


def _cells(values: list[object]) -> str:
    out = []
    for (_, width, fmt), value in zip(COLUMNS, values, strict=True):
        text = format(value, fmt) if fmt else str(value)
        out.append(text.ljust(-width) if width < 0 else text.rjust(width))
    return "".join(out).rstrip()


def print_table(results: list[RateResult], tools: list[Tool]) -> None:
    print("\n" + "".join(h.ljust(-w) if w < 0 else h.rjust(w) for h, w, _ in COLUMNS).rstrip())
    for result in results:
        mbs = result.cost_written.mb_per_s
        for tool in tools:
            p = result.tools[tool.name]
            lat = p.latencies_ms
            print(_cells([
                tool.name, result.rate, mbs, percentile(lat, 50), percentile(lat, 99), max(lat, default=float("nan")),
                f"{len(lat)}" + (f"-{p.missed}" if p.missed else ""), sum(v > GOAL_P99_MS for v in lat),
                tool.poll_seconds * 1000 + p.scrape_ms, p.cpu_percent, p.cpu_percent / mbs, p.cpu_percent_scraped,
                p.rss_mb, p.hwm_mb, "  MISMATCH" if p.mismatches else "  ok",
            ]))  # fmt: skip
    if {"sidecar", "mtail"} <= {t.name for t in tools}:
        print("\nsidecar / mtail (<1: the sidecar is faster or smaller)")
        for result in results:
            s, m = result.tools["sidecar"], result.tools["mtail"]
            p50 = _ratio(percentile(s.latencies_ms, 50), percentile(m.latencies_ms, 50))
            p99 = _ratio(percentile(s.latencies_ms, 99), percentile(m.latencies_ms, 99))
            print(f"  {result.rate:>7,.0f} lines/s: p50 {p50}  p99 {p99}  CPU {_ratio(s.cpu_percent, m.cpu_percent)}"
                  f"  RSS {_ratio(s.rss_mb, m.rss_mb)}")  # fmt: skip
    print("\n" + LEGEND.format(settle=SETTLE_SECONDS, tick=1000 / TICK))


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and b == b and a == a else "n/a"


def print_goals(results: list[RateResult]) -> None:
    """The issue's goals: follow CPU <= 0.1x mtail's at every rate (a scrape reads what was appended
    first, so latency is no goal any more: see bench/scrape_consistency.py), RSS <= 45 MB (no MongoDB URL)."""
    rows = [r for r in results if "sidecar" in r.tools and "mtail" in r.tools]
    if not rows:
        return
    ratios = [
        r.tools["sidecar"].cpu_percent / r.tools["mtail"].cpu_percent for r in rows if r.tools["mtail"].cpu_percent
    ]
    worst = max(ratios, default=float("nan"))
    rss = max(r.tools["sidecar"].rss_mb for r in rows)

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    cpu_ok = verdict(worst <= GOAL_CPU_RATIO)
    print(f"\nGoals (sidecar): CPU <= {GOAL_CPU_RATIO}x mtail's: worst {worst:.2f}x, {cpu_ok}; "
          f"RSS <= {GOAL_RSS_MB:.0f} MB (no MongoDB URL): {rss:.1f} MB, {verdict(rss <= GOAL_RSS_MB)}")  # fmt: skip


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of each phase (default 10)")
    parser.add_argument("--rates", default="1000,5500,10000", help="lines/s, comma-separated (default 1000,5500,10000)")
    parser.add_argument("--progress-share", type=float, default=1 / 3,
                        help="share of progress lines, as in the real server (default 1/3; 0: noise only)")  # fmt: skip
    parser.add_argument("--keyword-interval", type=float, default=0.2, help="seconds between keyword lines (0.2)")
    parser.add_argument("--sidecar-poll-ms", type=float, default=5, help="sidecar scrape interval (default 5)")
    parser.add_argument("--mtail-poll-ms", type=float, default=1, help="mtail scrape interval (default 1)")
    parser.add_argument(
        "--mtail-keyword-only",
        action="store_true",
        help="mtail program with the measured rule only (default: every rule, like the sidecar)",
    )
    parser.add_argument("--profile-sidecar", type=Path, metavar="FILE",
                        help="run the sidecar under cProfile (main thread only), stats to FILE")  # fmt: skip
    parser.add_argument("--workdir", type=Path, help="where the log and state go (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the log, the state and the tools' output")
    parser.add_argument("--config", type=Path, default=CONFIG, help="rules (default: the repo's config.yaml)")
    args = parser.parse_args(argv)
    try:
        args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        parser.error("--rates: numbers separated by commas")
    if not args.rates or min(args.rates) <= 0 or args.seconds <= 0 or args.keyword_interval <= 0:
        parser.error("rates, --seconds and --keyword-interval must be positive")
    if not 0 <= args.progress_share < 1:
        parser.error("--progress-share: a share from 0 up to (not including) 1")
    if args.profile_sidecar:
        args.profile_sidecar = args.profile_sidecar.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="follow-bench-", dir=args.workdir))
    return run_guarded(work, lambda children: run_benchmark(args, work, children), keep=args.keep)


def run_guarded(work: Path, body: Callable[[Children], int], keep: bool = False) -> int:
    """Run a benchmark's body with its children stopped on exit, Ctrl-C and SIGTERM; a tool that
    fails exits EXIT_TOOL_FAILED with the tail of what the tools printed."""
    children = Children(work)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        return body(children)
    except ToolFailedError as exc:
        print(f"\n{exc}", file=sys.stderr)
        for name in ("sidecar", "mtail"):
            if output := children.output(name):
                print(f"--- {name} output (tail) ---\n{output}", file=sys.stderr)
        return EXIT_TOOL_FAILED
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        children.close()
        signal.signal(signal.SIGTERM, previous)
        if keep:
            print(f"\nkept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_benchmark(args: argparse.Namespace, work: Path, children: Children) -> int:
    log = work / "tradingagents.log"
    log.touch()
    config = args.config.resolve()
    tools = [start_sidecar(children, work, log, config, args.sidecar_poll_ms / 1000, args.profile_sidecar)]
    mtail = start_mtail(children, work, log, config, args.mtail_poll_ms / 1000, not args.mtail_keyword_only)
    if mtail:
        tools.append(mtail)
    expected = Expected()
    warm_up(log, tools, expected)
    program = "the measured rule only" if args.mtail_keyword_only else "every rule of the config"
    print(f"log {log} ({'tmpfs' if _is_tmpfs(work) else 'disk'}); sidecar scraped every {args.sidecar_poll_ms:g} ms, "
          f"mtail every {args.mtail_poll_ms:g} ms (mtail: default --poll_interval 250ms, program with {program}); "
          f"{os.cpu_count()} CPUs; {args.progress_share:.0%} of the lines are progress lines")  # fmt: skip
    results = []
    for index, rate in enumerate(args.rates):
        print(f"\nrate {rate:,.0f} lines/s")
        result = run_rate(args, children, log, tools, expected, rate, seed=1000 + 2 * index)
        print_phase(result)
        results.append(result)
    print_table(results, tools)
    print_goals(results)
    if any(r.tools["sidecar"].mismatches for r in results):
        print("\nFAIL: the sidecar's counts differ from what was written", file=sys.stderr)
        return EXIT_SIDECAR_MISMATCH
    return EXIT_OK


def _is_tmpfs(path: Path) -> bool:
    best, kind = "", ""
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _dev, point, fstype, *_ = line.split()
            if str(path).startswith(point) and len(point) > len(best):
                best, kind = point, fstype
    return kind == "tmpfs"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_writer":
        sys.exit(writer_main(sys.argv[2:]))
    sys.exit(main())
