"""Adversarial HTTP clients against one `monitor run`: does a well-behaved scraper still get its answers?

    .venv/bin/python bench/http_attacks.py [--seconds 20] [--only NAME[,NAME]] [--source DIR] [--sidecar-arg=ARG]

Each attack gets a fresh `monitor run` (log-only, a small log, a free 127.0.0.1 port; plain, TLS or
basic auth through `--web-config`) and runs for `--seconds` in a process of its own, so that its
threads do not hold the GIL of the process that measures. Meanwhile a well-behaved client scrapes
/metrics and probes /healthz once a second each (fresh connection, 10 s timeout; TLS unverified,
the right password), and the sidecar's VmRSS and thread count are sampled every 0.2 s. Each attack
ends with a SIGTERM to the sidecar while the attack still runs: the time until it exits is measured
(on slow-headers-8, that is SIGTERM under slow headers, plain and TLS). Attacks:

    slow-headers-8     plain, tls  8 connections sending a request head one byte a second, never ending
    slow-headers-2000  plain       the same with 2,000 connections
    stalled-tls-8      tls         8 TCP connections that never start the handshake
    big-headers-4      plain       4 clients sending GET /healthz with 98 headers of 65,000 bytes
    resets             plain       8 threads sending GET /metrics and closing with RST at once
    wrong-password-64  auth        64 clients, a different wrong password each request
    long-password      auth        4 clients, a different 100-byte password each request (expect 401)

A failed scrape counts in p99 with the time it took (a 10 s timeout is a 10 s scrape). ERROR and
Traceback lines are counted in the sidecar's stderr from the attack's start through its exit.
`--source DIR` runs the `monitor` package found in DIR, e.g. a commit while the tree is being edited:
`git archive HEAD monitor | tar -x -C /tmp/head` and `--source /tmp/head`.

Prints one row per attack and the goals; exit status 0 when every row meets them, 1 when one does
not, 2 when a sidecar does not start. Loopback only; every socket has a timeout; the sidecars and
attack processes are stopped on exit, on Ctrl-C and on SIGTERM (and get SIGTERM if this dies).
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import ctypes
import http.client
import itertools
import multiprocessing
import os
import re
import resource
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL_P99_S, GOAL_RSS_MB, GOAL_SIGTERM_S = 1.0, 100.0, 2.0
GOALS = "goals: p99 <= 1 s and 0 failures under every attack; peak RSS <= 100 MB; SIGTERM exits within 2 s"
USER, PASSWORD = "prometheus", "secret"
TIMEOUT = 10.0  # the well-behaved client's, and the longest any socket here waits
SIGTERM_LIMIT = 10.0  # then SIGKILL: the row shows "> 10"
PR_SET_PDEATHSIG = 1

INSECURE = ssl.create_default_context()  # a self-signed certificate: encryption without verification
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE

# Slow headers: a head that never ends (no blank line); ~100 headers take 20 minutes at a byte a second.
SLOW_HEAD = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(b"X-Slow-%d: x\r\n" % k for k in range(5000))
# Just under http.server's 65,536-byte line limit and 100-header limit: 6.4 MB it may well buffer.
BIG_HEAD = (
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    + b"".join(b"X-Big-%02d: %s\r\n" % (k, b"a" * 65000) for k in range(98))
    + b"\r\n"
)
METRICS_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quantile(times: list[float], q: float) -> float:
    return times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")


def die_with_parent() -> None:
    """Children get SIGTERM when this process dies, even by SIGKILL: nothing is left behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def raise_fd_limit() -> int:
    """As far as the hard limit allows: 2,000 connections need 2,000 descriptors (the children inherit it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass(frozen=True)
class Target:
    port: int
    tls: bool
    authorization: str | None  # the right credentials, for the well-behaved client's /metrics

    def connect(self, timeout: float, handshake: bool = True) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if not (self.tls and handshake):
            return sock
        try:
            return INSECURE.wrap_socket(sock)  # the handshake happens here, under the timeout
        except BaseException:
            sock.close()
            raise

    def get(self, path: str, authorization: str | None = None, timeout: float = TIMEOUT) -> int:
        """One GET on a fresh connection: the status (raises OSError or HTTPException without an answer)."""
        connection = (
            http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=INSECURE)
            if self.tls
            else http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        )
        try:
            connection.request("GET", path, headers={"Authorization": authorization} if authorization else {})
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()


class Tally:
    """Counters shared by an attack's threads, reported to the measuring process at the end."""

    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def peak(self, key: str, value: int) -> None:
        with self._lock:
            self._counts[key] = max(self._counts[key], value)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


# ---------------------------------------------------------------------------------------------
# The attacks: each runs until `stop` is set; they run in a process of their own (attack_process)


def readable(sock: socket.socket) -> bool:
    poller = select.poll()  # not select(): 2,000 descriptors go past FD_SETSIZE
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def server_closed(sock: socket.socket) -> bool:
    """A readable connection: did the server close or answer it (not just send a TLS session ticket)?"""
    sock.settimeout(0.05)
    try:
        sock.recv(4096)  # an answer (408, 400...) or b"" (closed): either way it is over
        return True
    except (TimeoutError, ssl.SSLWantReadError):
        return False  # TLS 1.3 session tickets arrive after the handshake: no application data
    except OSError:
        return True
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(TIMEOUT)


def loris(target: Target, stop: threading.Event, tally: Tally, count: int, send: bool = True) -> None:
    """Keep `count` connections open; each second, each gets the next byte of SLOW_HEAD (if `send`).
    Connections the server closes are re-opened; with `send` off, TLS connections skip the handshake."""
    live: dict[socket.socket, int] = {}  # connection -> bytes of the head sent
    lock = threading.Lock()

    def opener(share: int) -> None:  # many openers, so that 2,000 connects do not queue behind one
        mine: list[socket.socket] = []
        while not stop.is_set():
            with lock:
                mine = [sock for sock in mine if sock in live]
            if len(mine) >= share:
                stop.wait(0.05)
                continue
            try:
                sock = target.connect(timeout=5, handshake=send)
            except OSError:  # ssl.SSLError included
                tally.add("connect failures")
                stop.wait(0.1)
                continue
            with lock:
                live[sock] = 0
                mine.append(sock)
                tally.peak("peak open", len(live))
            tally.add("opened")

    def feeder() -> None:
        while not stop.wait(1.0):
            with lock:
                socks = list(live)
            poller = select.poll()
            for sock in socks:
                poller.register(sock, select.POLLIN)
            ready = {fd for fd, _ in poller.poll(0)}
            for sock in socks:
                try:
                    if sock.fileno() in ready and server_closed(sock):
                        raise ConnectionResetError
                    if send:
                        sock.send(SLOW_HEAD[live[sock] : live[sock] + 1])
                        live[sock] += 1
                except OSError:
                    tally.add("closed by server")
                    with lock:
                        del live[sock]
                    sock.close()

    openers = min(count, 64)
    threads = [threading.Thread(target=feeder, daemon=True)]
    threads += [
        threading.Thread(target=opener, args=(count // openers + (i < count % openers),), daemon=True)
        for i in range(openers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sock in live:
        sock.close()


def clients(count: int, request: Callable[..., None], target: Target, stop: threading.Event, tally: Tally) -> None:
    """`count` threads, each repeating `request` until `stop`; every request ends within its timeouts."""

    def loop() -> None:
        while not stop.is_set():
            try:
                request(target, stop, tally)
            except Exception as exc:  # counted, not fatal: the attack goes on
                tally.add(f"client error {type(exc).__name__}")
                stop.wait(0.1)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def read_status(sock: socket.socket) -> str:
    """The status code of what the server sent back, or how it ended without one."""
    data = b""
    try:
        while b"\r\n" not in data and len(data) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        return "no answer (timeout)"
    except OSError:
        pass  # a reset can come after the status line: use what arrived
    match = re.match(rb"HTTP/\d\.\d (\d{3})", data)
    return match.group(1).decode() if match else "closed without answer"


def big_headers(target: Target, stop: threading.Event, tally: Tally) -> None:
    try:
        sock = target.connect(TIMEOUT)
    except OSError:
        tally.add("connect failures")
        stop.wait(0.1)
        return
    with sock:
        view = memoryview(BIG_HEAD)
        try:
            for offset in range(0, len(view), 65536):
                if stop.is_set():
                    return
                if readable(sock):
                    break  # the server answered (or closed) before the end: read what it said
                sock.sendall(view[offset : offset + 65536])
        except TimeoutError:
            tally.add("send timeout")
            return
        except OSError:
            pass  # reset while sending: an answer may still have come first
        tally.add(read_status(sock))


def reset(target: Target, stop: threading.Event, tally: Tally) -> None:
    try:
        sock = socket.create_connection(("127.0.0.1", target.port), timeout=5)
    except OSError:
        tally.add("connect failures")
        stop.wait(0.01)
        return
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() sends RST
        try:
            sock.sendall(METRICS_REQUEST)
            tally.add("sent, then reset")
        except OSError:
            tally.add("send failures")


_numbers = itertools.count()  # passwords never repeat, so that no cache of checked passwords helps


def password(make: Callable[[int], str], target: Target, stop: threading.Event, tally: Tally) -> None:
    try:
        tally.add(str(target.get("/metrics", basic(USER, make(next(_numbers))))))
    except TimeoutError:
        tally.add("no answer (timeout)")
    except (OSError, http.client.HTTPException) as exc:
        tally.add(f"no answer ({type(exc).__name__})")


def only_401(notes: dict[str, int]) -> str | None:
    answers = sum(notes.values())  # every request counts once: a status, or how it failed
    others = answers - notes.get("401", 0)
    return f"{others} non-401" if others or not answers else None


@dataclass(frozen=True)
class Attack:
    name: str
    setup: str  # plain, tls or auth
    run: Callable[[Target, threading.Event, Tally], None]
    check: Callable[[dict[str, int]], str | None] = lambda notes: None  # an attack's own goal, if any


ATTACKS = [
    Attack("slow-headers-8", "plain", partial(loris, count=8)),
    Attack("slow-headers-2000", "plain", partial(loris, count=2000)),
    Attack("big-headers-4", "plain", partial(clients, 4, big_headers)),
    Attack("resets", "plain", partial(clients, 8, reset)),
    Attack("slow-headers-8", "tls", partial(loris, count=8)),
    Attack("stalled-tls-8", "tls", partial(loris, count=8, send=False)),
    Attack("wrong-password-64", "auth", partial(clients, 64, partial(password, lambda n: f"wrong-{n}"))),
    Attack("long-password", "auth", partial(clients, 4, partial(password, lambda n: f"{n:0100d}")), only_401),
]


def attack_process(index: int, target: Target, stop: multiprocessing.synchronize.Event, pipe) -> None:
    """The attack's own process: start it, report the counts when asked, then wait for `stop`."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the measuring process's to handle
    tally = Tally()
    runner = threading.Thread(target=ATTACKS[index].run, args=(target, stop, tally), daemon=True)
    runner.start()
    pipe.send("started")
    pipe.recv()  # the window is over: counts from now on would include the sidecar's shutdown
    pipe.send(tally.snapshot())
    runner.join(timeout=30)


# ---------------------------------------------------------------------------------------------
# The measuring side


class Sidecar:
    """One `monitor run` on a free loopback port, its stderr in a file."""

    def __init__(self, args: argparse.Namespace, work: Path, setup: str, index: int) -> None:
        port = free_port()
        web = [] if setup == "plain" else ["--web-config", str(work / f"web-{setup}.yml")]
        self.stderr = work / f"sidecar-{index}.err"
        command = [sys.executable, "-m", "monitor", "run", "--config", str(args.config), "--log",
                   f"app={work / 'app.log'}", "--listen", f"127.0.0.1:{port}", "--state-dir",
                   str(work / f"state-{index}"), *web, *args.sidecar_arg]  # fmt: skip
        env = {**os.environ, "MONGODB_URL": "", "PYTHONPATH": str(args.source)}
        with open(self.stderr, "wb") as stderr:  # cwd: work, so that `-m` finds --source, not this repo
            self.proc = subprocess.Popen(
                command, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                preexec_fn=die_with_parent,
            )  # fmt: skip
        self.target = Target(port, setup == "tls", basic(USER, PASSWORD) if setup == "auth" else None)

    def wait_ready(self, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while True:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.target.get("/readyz", timeout=2) == 200:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.stderr.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the sidecar did not become ready (exit {self.proc.poll()}):\n{tail}")
            time.sleep(0.05)

    def sample(self) -> tuple[float, int] | None:
        """(VmRSS in MB, threads), or None once it is gone."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if "VmRSS" not in fields:  # a zombie: exited, not yet reaped
            return None
        return int(fields["VmRSS"].split()[0]) * 1024 / 1e6, int(fields["Threads"])

    def sigterm(self) -> float | None:
        """Seconds from SIGTERM to exit; None if it had to be killed (or had already exited)."""
        if self.proc.poll() is not None:
            return None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=SIGTERM_LIMIT)
            return time.monotonic() - began
        except subprocess.TimeoutExpired:
            self.stop()
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class Watch:
    """The well-behaved client (/metrics and /healthz once a second each) and the RSS/threads sampler."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.results: dict[str, list[tuple[float, bool]]] = {"/metrics": [], "/healthz": []}
        self.failures: collections.Counter[str] = collections.Counter()  # "path: why", for the notes
        self.rss_mb, self.threads = 0.0, 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._probe, args=(path,), daemon=True) for path in self.results]
        self._threads.append(threading.Thread(target=self._sample, daemon=True))
        for thread in self._threads:
            thread.start()

    def _probe(self, path: str) -> None:
        target = self.sidecar.target
        authorization = target.authorization if path == "/metrics" else None  # probes are open
        next_at = time.monotonic()
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                status = target.get(path, authorization)
                why = f"status {status}"
            except (OSError, http.client.HTTPException) as exc:
                status, why = 0, type(exc).__name__
            self.results[path].append((time.monotonic() - began, status == 200))
            if status != 200:
                self.failures[f"{path} {why}"] += 1
            next_at = max(next_at + 1.0, time.monotonic())  # a slow answer delays the next, never overlaps
            self._stop.wait(next_at - time.monotonic())

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            sample = self.sidecar.sample()
            if sample is None:
                return
            self.rss_mb, self.threads = max(self.rss_mb, sample[0]), max(self.threads, sample[1])

    def halt(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        """Let requests in flight end (each within its 10 s timeout): a hung scrape counts as failed."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=TIMEOUT + 5)


@dataclass
class Row:
    attack: Attack
    scrapes: list[tuple[float, bool]]
    healthz: list[tuple[float, bool]]
    rss_mb: float
    threads: int
    errors: int
    tracebacks: int
    sigterm: float | None
    notes: dict[str, int]  # the attackers' counts
    failures: dict[str, int]  # the well-behaved client's, by path and reason
    stderr_bytes: int
    exited: int | None  # the sidecar's exit status if it exited before the SIGTERM

    @property
    def p99(self) -> float:  # over every scrape: one that failed after 10 s took 10 s
        return quantile(sorted(seconds for seconds, _ in self.scrapes), 0.99)

    def sigterm_text(self) -> str:
        if self.exited is not None:
            return "exited"  # before the SIGTERM: see the notes
        return f"{self.sigterm:.2f}" if self.sigterm is not None else f"> {SIGTERM_LIMIT:g}"

    def problems(self) -> list[str]:
        failures = [ok for _, ok in self.scrapes + self.healthz].count(False)
        checks = {
            "p99": self.p99 <= GOAL_P99_S,
            "failures": failures == 0 and bool(self.scrapes) and bool(self.healthz),
            "RSS": self.rss_mb <= GOAL_RSS_MB,
            "SIGTERM": self.exited is None and self.sigterm is not None and self.sigterm <= GOAL_SIGTERM_S,
            "Traceback": self.tracebacks == 0,
        }
        own = self.attack.check(self.notes)
        return [name for name, ok in checks.items() if not ok] + ([own] if own else [])


def run_attack(args: argparse.Namespace, work: Path, index: int) -> Row:
    attack = ATTACKS[index]
    sidecar = Sidecar(args, work, attack.setup, index)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads forked mid-lock
    stop = context.Event()
    pipe, child_pipe = context.Pipe()
    process = context.Process(target=attack_process, args=(index, sidecar.target, stop, child_pipe), daemon=True)
    watch: Watch | None = None
    reported = False
    try:
        sidecar.wait_ready()
        offset = sidecar.stderr.stat().st_size  # start-up lines are not the attack's
        process.start()
        if not pipe.poll(30):
            raise RuntimeError(f"{attack.name}: the attack process did not start")
        pipe.recv()
        watch = Watch(sidecar)
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline and sidecar.proc.poll() is None:
            time.sleep(0.1)
        watch.stop()
        pipe.send("report")
        reported = True
        notes = pipe.recv() if pipe.poll(30) else {"no report from the attack process": 1}
        exited = sidecar.proc.poll()
        sigterm = sidecar.sigterm()  # while the attack still runs
        stop.set()
        data = sidecar.stderr.read_bytes()[offset:]
        text = data.decode(errors="replace")
        return Row(attack, watch.results["/metrics"], watch.results["/healthz"], watch.rss_mb, watch.threads,
                   len(re.findall(r"^.*\bERROR\b", text, re.M)), len(re.findall(r"^.*Traceback", text, re.M)),
                   sigterm, notes, dict(watch.failures), len(data), exited)  # fmt: skip
    finally:
        stop.set()
        if watch is not None:
            watch.halt()  # on Ctrl-C or an error: do not wait for requests in flight
        sidecar.stop()  # first: with the sidecar gone, the attack's requests end at once
        if process.pid is not None:
            process.join(timeout=15 if reported else 1)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)


def print_table(rows: list[Row]) -> None:
    header = ("attack", "setup", "scrapes ok/total", "scrape p99 (s)", "healthz failures", "peak RSS (MB)",
              "peak threads", "ERROR lines", "Traceback lines", "SIGTERM exit (s)", "result")  # fmt: skip
    lines = [header]
    for row in rows:
        problems = row.problems()
        lines.append((
            row.attack.name, row.attack.setup, f"{[ok for _, ok in row.scrapes].count(True)}/{len(row.scrapes)}",
            f"{row.p99:.3f}", str([ok for _, ok in row.healthz].count(False)), f"{row.rss_mb:.1f}",
            str(row.threads), str(row.errors), str(row.tracebacks),
            row.sigterm_text(),
            "FAIL (" + ", ".join(problems) + ")" if problems else "PASS",
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) if i in (0, 1, 10) else cell.rjust(width)
                        for i, (cell, width) in enumerate(zip(line, widths, strict=True))).rstrip())  # fmt: skip
    print("\nwhat the attackers saw (counts until the SIGTERM):")
    for row in rows:
        notes = ", ".join(f"{key} {value}" for key, value in sorted(row.notes.items()))
        failures = ", ".join(f"{key} {value}" for key, value in sorted(row.failures.items())) or "none"
        exited = f"; the sidecar exited by itself ({row.exited})" if row.exited is not None else ""
        print(f"  {row.attack.name} ({row.attack.setup}): {notes}; stderr +{row.stderr_bytes} B to the exit{exited}")
        print(f"    well-behaved client's failures: {failures}")
    print(f"\n{GOALS}; no Traceback in stderr; long-password: only 401 answers")


def write_web_configs(work: Path, setups: set[str]) -> None:
    if "tls" in setups:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                        "-days", "1", "-keyout", str(work / "server.key"), "-out", str(work / "server.crt")],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        (work / "web-tls.yml").write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    if "auth" in setups:
        import bcrypt

        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
        (work / "web-auth.yml").write_text(f"basic_auth_users:\n  {USER}: '{hashed}'\n")


def main() -> int:
    names = sorted({attack.name for attack in ATTACKS})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="each attack's duration (default: 20)")
    parser.add_argument("--only", default="", help="comma-separated attacks: " + ", ".join(names))
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--source", type=Path, default=REPO, help="directory holding the `monitor` package")
    parser.add_argument("--sidecar-arg", action="append", default=[], help="passed to `monitor run` (repeatable)")
    args = parser.parse_args()
    only = {name for name in args.only.split(",") if name}
    if only - set(names):
        parser.error(f"unknown attack(s): {', '.join(sorted(only - set(names)))}; known: {', '.join(names)}")
    args.config, args.source = args.config.resolve(), args.source.resolve()
    selected = [i for i, attack in enumerate(ATTACKS) if not only or attack.name in only]
    print(f"file descriptors: {raise_fd_limit()}; {args.seconds:g} s per attack", file=sys.stderr)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="http-attacks-") as directory:
            work = Path(directory)
            (work / "app.log").write_text("2025-10-22 14:20:02,123 | x | ERROR    | m:f:1 | MongoDB操作超时\n" * 100)
            write_web_configs(work, {ATTACKS[i].setup for i in selected})
            for index in selected:
                print(f"{ATTACKS[index].name} ({ATTACKS[index].setup}) ...", file=sys.stderr, flush=True)
                rows.append(run_attack(args, work, index))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    print_table(rows)
    return 0 if all(not row.problems() for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
