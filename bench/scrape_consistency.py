"""Write, then scrape: does every scrape of `monitor run` show every line flushed before it was sent?

    .venv/bin/python bench/scrape_consistency.py [--rounds 1000] [--rotate-every 50] [--busy-poll 0.5]

Starts `monitor run` on a free loopback port following one log in a temporary directory, then
`--rounds` times: appends one keyword line (real millisecond timestamp, flushed), scrapes /metrics
on a fresh connection, and compares the keyword counter with the number of lines written so far.
Every `--rotate-every` rounds the log is rotated, alternately as RotatingFileHandler does (rename,
new file) and as logrotate's copytruncate does (the old .1 removed, a copy, truncation), just
before the next line. Prints the rounds that missed a line (the issue's goal: 0 of 1,000), the
scrape latency p50/p99 and the sidecar's CPU time. Loopback only; the sidecar is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from scrape_storm import free_port, wait_ready  # noqa: E402  (a sibling script)

LINE = (
    "{stamp} | backend.tradingagents_server | ERROR    | tradingagents_server:analysis_worker:2552 | MongoDB操作超时\n"
)
COUNTER = 'tradingagents_log_events_total{rule="mongodb_operation_timeout",severity="error"}'


def scrape(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(COUNTER + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def rotate(log: Path, by_rename: bool) -> None:
    rotated = log.with_name(log.name + ".1")
    if by_rename:
        log.rename(rotated)
        log.touch()
        return
    rotated.unlink(missing_ok=True)
    shutil.copyfile(log, rotated)
    os.truncate(log, 0)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--rotate-every", type=int, default=50)
    parser.add_argument("--busy-poll", type=float, default=None, help="follow.busy_poll_seconds (config's default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        config = workdir / "config.yaml"
        text = (REPO / "config.yaml").read_text(encoding="utf-8")
        if args.busy_poll is not None:
            text = re.sub(r"busy_poll_seconds: [0-9.]+", f"busy_poll_seconds: {args.busy_poll}", text)
        config.write_text(text, encoding="utf-8")
        log = workdir / "tradingagents.log"
        log.touch()
        port = free_port()
        command = [sys.executable, "-m", "monitor", "run", "--config", str(config), "--log", str(log)]
        command += ["--listen", f"127.0.0.1:{port}", "--state-dir", str(workdir / "state")]
        sidecar = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not wait_ready(port, sidecar):
                return 2
            cpu_before = cpu_seconds(sidecar.pid)
            missed, latencies = [], []
            for written in range(1, args.rounds + 1):
                if written % args.rotate_every == 0:
                    rotate(log, by_rename=(written // args.rotate_every) % 2 == 0)
                stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
                with open(log, "a", encoding="utf-8") as f:
                    f.write(LINE.format(stamp=stamp))
                    f.flush()
                sent = time.perf_counter()
                seen = scrape(port)
                latencies.append(time.perf_counter() - sent)
                if seen != written:
                    missed.append((written, seen))
            cpu = cpu_seconds(sidecar.pid) - cpu_before
        finally:
            sidecar.terminate()
            sidecar.wait(timeout=10)
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(0.99 * (len(latencies) - 1))]
    rotations = args.rounds // args.rotate_every
    print(f"{args.rounds} write-then-scrape rounds, {rotations} rotations (rename and copytruncate, alternately)")
    print(f"missed: {len(missed)}{' ' + str(missed[:10]) if missed else ''}")
    print(f"scrape p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; sidecar CPU {cpu:.2f} s")
    print(f"goal: 0 of {args.rounds} missed: {'met' if not missed else 'MISSED'}")
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
