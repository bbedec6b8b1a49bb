"""`monitor verify --report` at the size of an incident: the page's size and its draw time in Chromium.

    .venv/bin/python bench/report_size.py                      # 100 and 100,000 analyses
    .venv/bin/python bench/report_size.py --analyses 100000    # one size only

Writes a log in the server's format where each analysis has its start line (with a symbol), its
`✅ 分析完成状态已更新到数据库` and `完成，成功:` lines; one in `--lost-every` (20) is left `pending`
in a fresh SecantusDB (a lost status, repairable), one in 10 ends unsuccessful, the last 50 are
still running, and every 97th analysis is preceded by a MongoDB timeout. Then, as a user would:

1. `monitor verify --format json`, without and with `--report`: the wall time and peak RSS of each
   (what collecting the timeline costs);
2. the report opened in headless Chromium (tests/browser.py: network off, console captured): its
   size, the time its script took to draw (its own `performance.now()`, written into `#drawn`) and
   the wall time of the whole headless load; checks that the page drew every analysis and that
   nothing was logged to the console. Goal: under 10 MB and drawn within 3 s at 100,000 analyses.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from bson import ObjectId

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.verify_scale import run  # noqa: E402 (the child's wall time and peak RSS, measured once)
from demo.mongo_server import MongoServer  # noqa: E402
from tests.browser import Chromium, find_chromium  # noqa: E402

LINE = "{t} | backend.tradingagents_server | {level:<8} | tradingagents_server:analysis_worker:{n} | {msg}\n"
SYMBOLS = ("AAPL", "MSFT", "600519", "000001", "TSLA", "NVDA", "0700.HK")
GOAL_BYTES, GOAL_SECONDS = 10 * 10**6, 3.0
RUNNING_SHARE = 50  # one analysis in 50 at the end of the log is still running


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S,") + f"{when.microsecond // 1000:03d}"


def write_log(path: Path, ids: list[str]) -> None:
    """Workers overlapping: each analysis starts 0.9 s after the one before and runs 40 s."""
    begin = datetime(2025, 10, 22, 8, 0, 0)
    with path.open("w", encoding="utf-8") as out:
        events = []
        for index, analysis_id in enumerate(ids):
            started = begin + timedelta(milliseconds=900 * index)
            symbol = SYMBOLS[index % len(SYMBOLS)]
            events.append((started, 2488, "INFO", f"启动真实分析: {analysis_id} - {symbol} (美股)"))
            if index >= len(ids) - len(ids) // RUNNING_SHARE:
                continue  # still running when the log ends
            ended = started + timedelta(seconds=40)
            if index % 97 == 0:
                events.append((ended - timedelta(seconds=10), 212, "ERROR", "MongoDB操作超时"))
            events.append((ended, 2552, "INFO", f"✅ 分析完成状态已更新到数据库: {analysis_id}"))
            events.append((ended, 2553, "INFO", f"分析 {analysis_id} 完成，成功: {index % 10 != 3}"))
        events.sort(key=lambda e: e[0])
        out.writelines(LINE.format(t=stamp(t), level=level, n=n, msg=msg) for t, n, level, msg in events)


def documents(count: int, lost_every: int) -> list[dict]:
    out = []
    for index in range(count):
        if index % lost_every == 0 or index >= count - count // RUNNING_SHARE:
            status = "pending"
        else:
            status = "failed" if index % 10 == 3 else "completed"
        out.append({"_id": ObjectId(), "status": status, "created_at": datetime(2025, 10, 22)})
    return out


def measure(analyses: int, lost_every: int, chromium: Chromium, keep: Path | None) -> bool:
    import pymongo

    server = MongoServer().start()
    try:
        client = pymongo.MongoClient(server.url)
        docs = documents(analyses, lost_every)
        for start in range(0, len(docs), 10_000):
            client.bench.analyses.insert_many(docs[start : start + 10_000])
        with tempfile.TemporaryDirectory() as workdir:
            log, page = Path(workdir) / "tradingagents.log", Path(workdir) / "incident.html"
            write_log(log, [str(d["_id"]) for d in docs])
            env = {**os.environ, "MONGODB_URL": server.url, "MONGODB_DB_NAME": "bench", "TRADINGAGENTS_LOG_TZ": "UTC"}
            command = [sys.executable, "-m", "monitor", "verify", str(log), "--format", "json"]
            _, _, plain_wall, plain_peak = run(command, env)
            status, _, wall, peak = run([*command, "--report", str(page)], env)
            if status not in (0, 1) or not page.exists():
                print(f"{analyses:,} analyses: verify --report failed (exit {status})")
                return False
            started = time.perf_counter()
            loaded = chromium.load(page)
            load_wall = time.perf_counter() - started
            drawn = loaded.drawn()
            size = page.stat().st_size
            print(f"{analyses:,} analyses, {log.stat().st_size / 1e6:.1f} MB of log")
            print(f"  verify:           {plain_wall:.1f} s, peak RSS {plain_peak:.0f} MiB")
            print(f"  verify --report:  {wall:.1f} s, peak RSS {peak:.0f} MiB")
            print(
                f"  report:           {size / 1e6:.2f} MB, timeline {drawn['timeline']['mode']}, "
                f"{drawn['findings']['rows']:,} findings rows"
            )
            print(f"  in Chromium:      drawn in {drawn['draw_ms'] / 1000:.2f} s, headless load {load_wall:.2f} s")
            ok = (
                drawn["timeline"]["analyses"] == analyses
                and not loaded.console
                and not loaded.requests
                and size < GOAL_BYTES
                and drawn["draw_ms"] / 1000 < GOAL_SECONDS
            )
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                page.replace(keep / f"incident-{analyses}.html")
            print(f"  every analysis drawn, no console message, < 10 MB, drawn < 3 s: {'yes' if ok else 'NO'}")
            if loaded.console:
                print("  console: " + "\n  console: ".join(loaded.console[:5]))
            return ok
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--analyses", type=int, action="append", help="repeatable (default: 100 and 100,000)")
    parser.add_argument("--lost-every", type=int, default=20, help="one analysis in N has its status lost (20)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep each report there (incident-N.html)")
    args = parser.parse_args()
    executable = find_chromium()
    if executable is None:
        print("no chromium on PATH: scripts/install-system-deps installs it", file=sys.stderr)
        return 2
    chromium = Chromium(executable)
    results = [measure(n, args.lost_every, chromium, args.keep) for n in args.analyses or (100, 100_000)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
