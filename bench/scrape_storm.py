"""Many concurrent scrapes of one `monitor run`: latency percentiles, failures, threads, listen overflows.

    .venv/bin/python bench/scrape_storm.py [--clients 200] [--rounds 3] [--idle 300]

Starts `monitor run` on a free loopback port over a small log, then fires
`--clients` scrapes of /metrics at once (each on its own connection), `--rounds`
times, and prints p50/p99/max, failures, the sidecar's thread count after
`--idle` idle connections were opened and left, and the kernel's listen-overflow
counter. Loopback only; every request has a timeout; everything it starts is stopped.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listen_overflows() -> int:
    for line in Path("/proc/net/netstat").read_text().splitlines():
        if line.startswith("TcpExt:") and "ListenOverflows" in line:
            names = line.split()
            values = next(
                v
                for v in Path("/proc/net/netstat").read_text().splitlines()
                if v.startswith("TcpExt:") and "ListenOverflows" not in v
            ).split()
            return int(values[names.index("ListenOverflows")])
    return -1


def threads_of(pid: int) -> int:
    return int(
        next(
            line.split()[1]
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("Threads:")
        )
    )


def wait_ready(port: int, sidecar: subprocess.Popen, timeout: float = 30) -> bool:
    """Until the sidecar answers /readyz; False (said) if it exits or takes longer than `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).read()
            return True
        except OSError:
            if time.monotonic() > deadline or sidecar.poll() is not None:
                print("the sidecar did not start", file=sys.stderr)
                return False
            time.sleep(0.05)


def quantile(times: list[float], q: float) -> float:
    return times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")


def storm(port: int, clients: int) -> tuple[list[float], int]:
    times: list[float] = []
    failures = 0
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def scrape() -> None:
        nonlocal failures
        start.wait()
        began = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
                response.read()
            with lock:
                times.append(time.monotonic() - began)
        except OSError:
            with lock:
                failures += 1

    workers = [threading.Thread(target=scrape) for _ in range(clients)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sorted(times), failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        log = Path(directory) / "app.log"
        log.write_text("2025-10-22 14:20:02,123 | x | ERROR    | m:f:1 | MongoDB操作超时\n" * 100)
        port = free_port()
        sidecar = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(REPO / "config.yaml"), "--log", f"app={log}",
             "--listen", f"127.0.0.1:{port}", "--state-dir", f"{directory}/state"],
            cwd=REPO, stderr=subprocess.DEVNULL, env={**os.environ, "MONGODB_URL": ""},
        )  # fmt: skip
        idle: list[socket.socket] = []
        try:
            if not wait_ready(port, sidecar):
                return 2
            overflows = listen_overflows()
            print(f"{args.clients} concurrent scrapes x {args.rounds} rounds on 127.0.0.1:{port}")
            for round_number in range(args.rounds):
                times, failures = storm(port, args.clients)
                print(
                    f"  round {round_number + 1}: p50 {quantile(times, 0.5):.3f} s  p99 {quantile(times, 0.99):.3f} s"
                    f"  max {quantile(times, 1.0):.3f} s  failures {failures}"
                )
            print(f"  listen overflows during the storms: {listen_overflows() - overflows}")
            for _ in range(args.idle):
                connection = socket.create_connection(("127.0.0.1", port), timeout=5)
                idle.append(connection)
            time.sleep(1.0)
            print(f"  sidecar threads with {args.idle} idle connections open: {threads_of(sidecar.pid)}")
            times, failures = storm(port, 20)
            print(
                f"  20 scrapes while they idle: max {times[-1] if times else float('nan'):.3f} s, failures {failures}"
            )
        finally:
            for connection in idle:
                connection.close()
            sidecar.terminate()
            sidecar.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
