"""`monitor verify` at the size of an incident: every claim checked, memory bounded, round trips counted.

    .venv/bin/python bench/verify_scale.py                     # 100,000 analyses, 200,000 claims
    .venv/bin/python bench/verify_scale.py --analyses 500000   # 1,000,000 claims (slow on the test server)

Writes a log in the server's format (each analysis: its `✅ 分析完成状态已更新到数据库` and
`完成，成功: True` lines, concurrent workers interleaved, real millisecond timestamps), split into four
files as logrotate leaves them (two gzip, two plain); inserts the documents into a fresh SecantusDB (the test
server: a real MongoDB wire-protocol server; its speed, not MongoDB's), one in ten
(`--lost-every`) left `pending` (a lost status); then runs, each as a user would:

1. `monitor scan` over the same files: the time to only read and match them;
2. `monitor verify --format json`: checks that every claim was checked and exactly the lost ones
   were found, and prints claims per second, peak RSS (the child's VmHWM) and MongoDB round
   trips (`find` commands counted by the server's own `serverStatus` opcounters).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from bson import ObjectId

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from demo.mongo_server import MongoServer  # noqa: E402

LINE = "{t} | backend.tradingagents_server | INFO     | tradingagents_server:analysis_worker:{n} | {msg}\n"


def write_logs(directory: Path, ids: list[str]) -> list[Path]:
    start = datetime(2025, 10, 22, 8, 0, 0)
    lines = []
    for index, analysis_id in enumerate(ids):
        when = start + timedelta(milliseconds=37 * index)
        stamp = when.strftime("%Y-%m-%d %H:%M:%S,") + f"{when.microsecond // 1000:03d}"
        lines.append(LINE.format(t=stamp, n=2552, msg=f"✅ 分析完成状态已更新到数据库: {analysis_id}"))
        lines.append(LINE.format(t=stamp, n=2553, msg=f"分析 {analysis_id} 完成，成功: True"))
        lines.append(LINE.format(t=stamp, n=2511, msg=f"分析 {analysis_id} 进度: 100% - 分析完成"))
    # As logrotate with `compress` and `delaycompress` leaves them: .log.3.gz .log.2.gz .log.1 .log
    names = ("tradingagents.log.3.gz", "tradingagents.log.2.gz", "tradingagents.log.1", "tradingagents.log")
    quarter = -(-len(lines) // len(names))
    paths = []
    for index, name in enumerate(names):
        path, piece = directory / name, lines[index * quarter : (index + 1) * quarter]
        if name.endswith(".gz"):
            with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as f:
                f.writelines(piece)
        else:
            path.write_text("".join(piece), encoding="utf-8")
        paths.append(path)
    return paths


def run(command: list[str], env: dict[str, str]) -> tuple[int, str, float, float]:
    """(exit status, stdout, wall seconds, peak RSS in MiB). The peak is the child's VmHWM, read from
    /proc while it runs: its ru_maxrss would start at this script's own peak (Linux carries the
    high-water mark across exec), and this script holds the whole test database's ids."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=err, cwd=REPO)
        peak_kib = 0
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak_kib = max(peak_kib, int(status.split("VmHWM:")[1].split()[0]))
            except (OSError, IndexError, ValueError):
                pass
            time.sleep(0.01)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if proc.returncode not in (0, 1):
            sys.stderr.write(err.read().decode())
        return proc.returncode, out.read().decode(), wall, peak_kib / 1024


def finds(client, database: str) -> int:
    return client[database].command("serverStatus")["opcounters"]["query"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--analyses", type=int, default=100_000)
    parser.add_argument("--lost-every", type=int, default=10, help="one analysis in N has its status lost (10)")
    args = parser.parse_args()
    import pymongo

    server = MongoServer().start()
    try:
        client = pymongo.MongoClient(server.url)
        collection = client.bench.analyses
        ids, lost = [], set()
        for start in range(0, args.analyses, 10_000):
            batch = []
            for index in range(start, min(start + 10_000, args.analyses)):
                status = "pending" if index % args.lost_every == 0 else "completed"
                batch.append({"_id": ObjectId(), "status": status, "created_at": datetime(2025, 10, 22)})
                if status == "pending":
                    lost.add(str(batch[-1]["_id"]))
            collection.insert_many(batch)
            ids += [str(d["_id"]) for d in batch]
        with tempfile.TemporaryDirectory() as workdir:
            files = [str(p) for p in write_logs(Path(workdir), ids)]
            size = sum(os.path.getsize(p) for p in files)
            env = {**os.environ, "MONGODB_URL": server.url, "MONGODB_DB_NAME": "bench"}
            monitor = [sys.executable, "-m", "monitor"]
            status, _, scan_wall, _ = run([*monitor, "scan", *files, "--format", "json"], env)
            assert status == 0, "scan failed"
            queries = finds(client, "bench")
            status, stdout, wall, peak = run([*monitor, "verify", *files, "--format", "json"], env)
            queries = finds(client, "bench") - queries
            assert status == 1, f"verify exited {status}"
            report = json.loads(stdout)
            found = {f["analysis_id"] for f in report["not_persisted"]}
            claims = 2 * args.analyses
            where = f"{size / 1e6:.0f} MB of log in 4 files (2 plain, 2 gzip)"
            print(f"{args.analyses:,} analyses, {claims:,} claims, {where}")
            print(f"scan only:  {scan_wall:.1f} s")
            print(
                f"verify:     {wall:.1f} s, {claims / wall:,.0f} claims/s, peak RSS {peak:.0f} MiB, "
                f"{queries:,} find round trips (claims / {claims / max(queries, 1):.0f})"
            )
            exact = report["claims"] == claims and found == lost
            print(f"every claim checked and exactly the {len(lost):,} lost statuses found: {'yes' if exact else 'NO'}")
            return 0 if exact else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
