"""Start-up of `monitor run`: time from spawn to the first 200 from /metrics, idle and with every core busy.

1. Per run: starts `monitor run` (this venv's Python, `--source` on PYTHONPATH, log-only, an empty log,
   a free loopback port) and polls its /metrics every `--poll-ms` (default 2 ms, each attempt on a new
   connection) until the first 200. Start-up = that response's arrival minus the moment right before
   the spawn. The first scrape also writes a checkpoint, as Prometheus's first scrape does. The
   sidecar's CPU time (utime + stime) is read then, and VmRSS and VmHWM (/proc/PID/status) `--settle`
   seconds later; then SIGTERM.
   `--state kept` (default): each run restarts on the state directory an unmeasured first start left
   (checkpoint, caches). `--state fresh`: each run is a first start in an empty state directory.
2. `--runs` runs (default 10) on the idle machine, then as many "busy": one `while True: pass` process
   per CPU (os.cpu_count(), normal priority) spins for the whole series and is killed after it. One
   unmeasured start before each series fills the page cache and the bytecode cache.
3. Prints min/median/max per series, the median CPU time, the memory, and the issue's goals: start-up
   <= 0.5 s on a busy machine (the busy median), RSS <= 50 MB. Exit 0 when measured (goals met or
   not), 2 if the sidecar fails to start or never answers 200.

    .venv/bin/python bench/startup.py [--runs 10] [--only idle|busy] [--state kept|fresh] [--source DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import follow_latency as fl  # this directory is sys.path[0] when the script runs

REPO = fl.REPO
CONFIG = fl.CONFIG
GOAL_STARTUP_SECONDS, GOAL_RSS_MB = 0.5, 50.0
EXIT_OK = 0  # a failing tool exits 2 (follow_latency.run_guarded)
START_TIMEOUT = 30.0
BURNER_SPIN_UP = 0.5  # seconds for the burners to be running before the first measured start


@dataclass
class Start:
    seconds: float  # spawn -> first 200 from /metrics
    cpu_seconds: float  # the sidecar's user + system time by then (clock ticks: 10 ms steps)
    attempts: int  # requests sent, refused connections included
    rss_mb: float
    hwm_mb: float


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB (10^6 B)."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line[:5]] = int(line.split()[1]) * 1024 / 1e6
    return values["VmRSS"], values["VmHWM"]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / fl.TICK  # utime, stime: fields 14 and 15 of proc(5)


def scrape_status(port: int, timeout: float) -> int | None:
    """The status of one GET /metrics on a new connection, None if nothing answered yet."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def child_env(source: Path) -> dict[str, str]:
    """Log-only (no MongoDB URL), the `monitor` package from `source`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONGODB_URL")}
    env["PYTHONPATH"] = str(source)
    return env


def module_file(work: Path, source: Path) -> str:
    """Which `monitor` package the sidecars import."""
    command = [sys.executable, "-c", "import monitor; print(monitor.__file__)"]
    return subprocess.run(command, env=child_env(source), cwd=work, capture_output=True, text=True, timeout=30,
                          check=True).stdout.strip()  # fmt: skip


def start_once(
    args: argparse.Namespace, children: fl.Children, work: Path, log: Path, index: int, settle: float
) -> Start:
    port = fl.free_port()
    state = work / ("state" if args.state == "kept" else f"state-{index}")
    command = [sys.executable, "-m", "monitor", "run", "--config", str(args.config), "--log", f"app={log}",
               "--listen", f"127.0.0.1:{port}", "--state-dir", str(state)]  # fmt: skip
    poll = args.poll_ms / 1000
    name = f"sidecar-{index}"
    started = time.monotonic()
    # cwd: the work directory, so that `-m` does not put this repo ahead of --source on sys.path.
    proc = children.start(command, name=name, env=child_env(args.source), cwd=work)
    deadline = started + START_TIMEOUT
    attempt = started
    attempts = 0
    try:
        while True:  # one attempt every `poll` seconds (at once if the last one took longer), until the deadline
            attempts += 1
            status = scrape_status(port, timeout=max(0.1, deadline - time.monotonic()))
            now = time.monotonic()
            if status == 200:
                break
            if proc.poll() is not None:
                raise fl.ToolFailedError(f"{name} exited {proc.returncode} before answering 200 from /metrics")
            if now >= deadline:
                raise fl.ToolFailedError(f"{name} did not answer 200 from /metrics within {START_TIMEOUT:.0f} s "
                                         f"(last status: {status})")  # fmt: skip
            attempt = max(attempt + poll, now)
            time.sleep(max(0.0, min(attempt, deadline) - time.monotonic()))
        seconds, cpu = now - started, cpu_seconds(proc.pid)
        time.sleep(settle)
        rss, hwm = memory_mb(proc.pid)
    except fl.ToolFailedError:
        print(children.output(name), file=sys.stderr)
        raise
    finally:
        stop(proc)
    if args.state == "fresh":
        shutil.rmtree(state, ignore_errors=True)
    return Start(seconds, cpu, attempts, rss, hwm)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def burners(children: fl.Children, count: int):
    """`count` processes spinning in `while True: pass` at normal priority, killed on exit."""
    procs = [children.start([sys.executable, "-c", "while True: pass"], preexec_fn=fl.die_with_parent)
             for _ in range(count)]  # fmt: skip
    try:
        time.sleep(BURNER_SPIN_UP)
        for proc in procs:
            if proc.poll() is not None:
                raise fl.ToolFailedError(f"a CPU burner exited {proc.returncode}")
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def series(args: argparse.Namespace, children: fl.Children, work: Path, log: Path, label: str) -> list[Start]:
    start_once(args, children, work, log, 0, 0)  # unmeasured warm-up
    starts = []
    for index in range(1, args.runs + 1):
        starts.append(start_once(args, children, work, log, index, args.settle))
        s = starts[-1]
        print(f"  {label} run {index:>2}: {s.seconds:.3f} s, CPU {s.cpu_seconds:.2f} s, {s.attempts} requests, "
              f"RSS {s.rss_mb:.1f} MB, HWM {s.hwm_mb:.1f} MB")  # fmt: skip
    return starts


def summary(label: str, starts: list[Start]) -> str:
    times = [s.seconds for s in starts]
    cpu = statistics.median(s.cpu_seconds for s in starts)
    rss = [s.rss_mb for s in starts]
    return (f"{label:<5} start-up s: min {min(times):.3f}  median {statistics.median(times):.3f}  max {max(times):.3f}"
            f"   CPU s: median {cpu:.2f}   RSS MB: median {statistics.median(rss):.1f} max {max(rss):.1f}"
            f"   HWM MB: max {max(s.hwm_mb for s in starts):.1f}")  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="measured starts per series (default 10)")
    parser.add_argument("--poll-ms", type=float, default=2, help="interval between /metrics attempts (default 2)")
    parser.add_argument("--settle", type=float, default=0.5,
                        help="seconds after the first 200 before reading the memory (default 0.5)")  # fmt: skip
    parser.add_argument("--only", choices=["idle", "busy"], help="run one series only")
    parser.add_argument("--state", choices=["kept", "fresh"], default="kept",
                        help="kept (default): every start a restart on the state directory the warm-up start left "
                             "(checkpoint, caches); fresh: every start a first start in an empty one")  # fmt: skip
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 1,
                        help=f"CPU-burning processes when busy (default: one per CPU, {os.cpu_count()})")  # fmt: skip
    parser.add_argument("--config", type=Path, default=CONFIG, help="rules (default: the repo's config.yaml)")
    parser.add_argument("--source", type=Path, default=REPO,
                        help="directory holding the `monitor` package to run (default: this repo)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.runs < 1 or args.poll_ms <= 0 or args.settle < 0 or args.burners < 1:
        parser.error("--runs, --poll-ms and --burners must be positive, --settle not negative")
    args.config, args.source = args.config.resolve(), args.source.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    return fl.run_guarded(work, lambda children: run_benchmark(args, work, children))


def run_benchmark(args: argparse.Namespace, work: Path, children: fl.Children) -> int:
    log = work / "tradingagents.log"
    log.touch()
    print(f"`monitor run` ({module_file(work, args.source)}) log-only, empty log, {args.state} state; /metrics "
          f"polled every {args.poll_ms:g} ms; {os.cpu_count()} CPUs; {args.runs} runs per series after one "
          "unmeasured start")  # fmt: skip
    results: dict[str, list[Start]] = {}
    if args.only in (None, "idle"):
        results["idle"] = series(args, children, work, log, "idle")
    if args.only in (None, "busy"):
        print(f"  busy: {args.burners} CPU-burning processes")
        with burners(children, args.burners):
            results["busy"] = series(args, children, work, log, "busy")
    print()
    for label, starts in results.items():
        print(summary(label, starts))
    print(f"\nStart-up = spawn -> first 200 from /metrics (which writes a checkpoint); CPU = the sidecar's user + "
          f"system time by then; memory read {args.settle:g} s later; MB = 10^6 B.")  # fmt: skip

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    goals = []
    if "busy" in results:
        busy = statistics.median(s.seconds for s in results["busy"])
        goals.append(f"start-up <= {GOAL_STARTUP_SECONDS} s busy: median {busy:.3f} s, "
                     f"{verdict(busy <= GOAL_STARTUP_SECONDS)}")  # fmt: skip
    rss = max(s.rss_mb for starts in results.values() for s in starts)
    goals.append(f"RSS after start-up <= {GOAL_RSS_MB:.0f} MB: {rss:.1f} MB, {verdict(rss <= GOAL_RSS_MB)}")
    print(f"Goals: {'; '.join(goals)}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
