"""A simulated TradingAgents server: analyses in worker threads, the real log format, real faults.

It writes its log the way the real server does (this module is named like the
real one, so `%(module)s:%(funcName)s` reads `tradingagents_server:analysis_worker`),
through `RotatingFileHandler`, and inserts and updates `analyses` documents
like the real one, with the faults of the wrong-event-loop bug injected in
realistic proportions. It keeps the ground truth: which analyses lost their
status write, which wrote it late, which are stuck.
"""

from __future__ import annotations

import functools
import logging
import logging.handlers
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pymongo import MongoClient

FILE_FORMAT = "%(asctime)s | %(name)-20s | %(levelname)-8s | %(module)s:%(funcName)s:%(lineno)d | %(message)s"
LOOP_ERROR = "The future belongs to a different loop than the one specified as the loop argument"

# fault -> share of analyses (the rest complete normally)
FAULTS = {
    "analysis_failed": 0.10,  # the analysis raises; the failed status is written
    "result_unsuccessful": 0.09,  # the result is unsuccessful: `failed` written, `✅ 分析完成状态…` logged all the same
    "unsuccessful_lost": 0.03,  # the same, and the failed status is lost
    "event_loop_error": 0.08,  # the original bug: the status write raises, nothing written
    "timeout": 0.07,  # the status write times out after 10 s, nothing written
    "timeout_landed": 0.04,  # the wrapper times out, but the write lands a few seconds later
    "claimed_not_written": 0.08,  # the log says the status was written; it was not
    "late_write": 0.07,  # the write lands seconds after the log says so
    "stuck": 0.04,  # the worker never finishes: pending forever
}
LOST = ("event_loop_error", "timeout", "claimed_not_written", "unsuccessful_lost")
UNSUCCESSFUL = ("result_unsuccessful", "unsuccessful_lost")


@dataclass
class GroundTruth:
    """What the simulator did, for the demo to compare with what the sidecar found."""

    analyses: int = 0
    faults: Counter = field(default_factory=Counter)
    lost_ids: set[str] = field(default_factory=set)
    late_ids: set[str] = field(default_factory=set)
    stuck_ids: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, fault: str, analysis_id: str) -> None:
        with self.lock:
            self.faults[fault] += 1
            if fault in LOST:
                self.lost_ids.add(analysis_id)
            elif fault in ("late_write", "timeout_landed"):
                self.late_ids.add(analysis_id)
            elif fault == "stuck":
                self.stuck_ids.add(analysis_id)


class SimulatedServer:
    """Runs `workers` concurrent analysis threads until `stop()`."""

    def __init__(self, log_dir: Path, mongo_url: str, workers: int = 6, seed: int = 7, pace: float = 1.0) -> None:
        self.log_dir = log_dir
        self.truth = GroundTruth()
        self._client = MongoClient(mongo_url, serverSelectionTimeoutMS=3000)
        self._analyses = self._client["tradingagents"]["analyses"]
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()
        self._workers = workers
        self._pace = pace
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._timers: list[threading.Timer] = []
        self.log = _logger(log_dir)

    def start(self) -> SimulatedServer:
        self._analyses.create_index("status")
        self._analyses.create_index("created_at")
        for n in range(self._workers):
            thread = threading.Thread(target=self._worker_loop, name=f"analysis-worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, late_writes_land: bool = True) -> None:
        """Stop the workers; writes already promised (late ones) still land unless told otherwise."""
        if self._stop.is_set():
            return
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        with self._random_lock:
            timers = list(self._timers)
        for timer in timers:
            if not late_writes_land:
                timer.cancel()
            timer.join(timeout=15)
        for handler in self.log.handlers:
            handler.close()
        self._client.close()

    def later(self, seconds: float, function, *args: object) -> None:
        timer = threading.Timer(seconds * self._pace, function, args)
        timer.daemon = True
        with self._random_lock:
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def _choice(self) -> tuple[str, str, str, float]:
        with self._random_lock:
            roll, fault = self._random.random(), "ok"
            for name, share in FAULTS.items():
                if roll < share:
                    fault = name
                    break
                roll -= share
            symbol = self._random.choice(["AAPL", "NVDA", "TSLA", "600519", "00700", "000001"])
            market = self._random.choice(["美股", "A股", "港股"])
            return fault, symbol, market, self._random.uniform(0.5, 1.5)

    def _sleep(self, seconds: float) -> bool:
        return self._stop.wait(seconds * self._pace)

    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            fault, symbol, market, duration = self._choice()
            analysis_worker(self, fault, symbol, market, duration)


def analysis_worker(server: SimulatedServer, fault: str, symbol: str, market: str, duration: float) -> None:
    """One analysis, logged and persisted as the real worker does (with `fault` injected)."""
    log, analyses = server.log, server._analyses
    created = datetime.now(UTC).replace(tzinfo=None)
    if fault == "stuck":
        created -= timedelta(hours=2)  # started long ago and never finished
    analysis_id = str(
        analyses.insert_one(
            {
                "user_id": "demo",
                "stock_code": symbol,
                "market_type": market,
                "status": "pending",
                "progress": 0.0,
                "created_at": created,
                "completed_at": None,
                "config": {},
            }
        ).inserted_id
    )
    with server.truth.lock:
        server.truth.analyses += 1
    if fault == "stuck":
        server.truth.record(fault, analysis_id)  # stuck from the start: the sweep may see it at once
    log.info("✅ 分析记录已保存到数据库: %s", analysis_id)
    log.info("启动真实分析: %s - %s (%s)", analysis_id, symbol, market)
    for pct, step in ((25, "📊 市场分析师"), (50, "📰 新闻分析师"), (75, "💬 情绪分析师")):
        if server._sleep(duration / 4):
            return
        log.info("分析 %s 进度: %d%% - %s 正在分析 %s", analysis_id, pct, step, symbol)
    if fault == "stuck":
        return  # the worker hangs: no more lines, the document stays pending
    if fault == "analysis_failed":
        log.error("分析 %s 执行失败: 数据源超时: get_stock_data %s", analysis_id, symbol)
        _set_status(analyses, analysis_id, "failed", error_message="数据源超时")
        log.info("✅ 分析失败状态已更新到数据库: %s", analysis_id)  # and no `完成，成功:` line on this path
        server.truth.record(fault, analysis_id)
        return
    # The real worker's final update: `completed` if the result succeeded, `failed` if not, then
    # the same `✅ 分析完成状态已更新到数据库` line in both cases, and `完成，成功: True|False`.
    success = fault not in UNSUCCESSFUL
    final, outcome = (
        ("completed", {"result_data": {"decision": "BUY"}}) if success else ("failed", {"error_message": "无有效结果"})
    )
    log.info("✅ 分析完成状态已写入Redis: %s", analysis_id)
    # The wrapper logs its failure and returns None; the worker logs the ✅ line all the same.
    if fault == "event_loop_error":
        log.error("MongoDB操作失败: %s", LOOP_ERROR)
        log.warning("⚠️ MongoDB更新返回None，可能更新失败")
        log.info("✅ 分析完成状态已更新到数据库: %s", analysis_id)
    elif fault in ("timeout", "timeout_landed"):
        log.error("MongoDB操作超时")
        log.warning("⚠️ MongoDB更新返回None，可能更新失败")
        log.info("✅ 分析完成状态已更新到数据库: %s", analysis_id)
        if fault == "timeout_landed":
            server.later(3.0, functools.partial(_set_status, analyses, analysis_id, final, **outcome))
    elif fault in ("claimed_not_written", "unsuccessful_lost"):
        log.info("✅ 分析完成状态已更新到数据库: %s", analysis_id)
    elif fault == "late_write":
        log.info("✅ 分析完成状态已更新到数据库: %s", analysis_id)
        server.later(4.0, _set_status, analyses, analysis_id, final)
    else:
        _set_status(analyses, analysis_id, final, **outcome)
        log.info("✅ 分析完成状态已更新到数据库: %s", analysis_id)
    log.info("分析 %s 完成，成功: %s", analysis_id, success)
    if fault != "ok":
        server.truth.record(fault, analysis_id)


def _set_status(analyses, analysis_id: str, status: str, **fields: object) -> None:
    from bson import ObjectId

    update = {"status": status, "progress": 100.0, "completed_at": datetime.now(UTC).replace(tzinfo=None)}
    analyses.update_one({"_id": ObjectId(analysis_id)}, {"$set": {**update, **fields}})


def _logger(log_dir: Path) -> logging.Logger:
    log_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("backend.tradingagents_server")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO)
    # Small files so the demo shows rotation within a minute (the real server: 10 MiB x 5).
    handler = logging.handlers.RotatingFileHandler(
        log_dir / "tradingagents.log", maxBytes=256 * 1024, backupCount=5, encoding="utf-8"
    )
    formatter = logging.Formatter(FILE_FORMAT)
    formatter.converter = time.gmtime  # UTC, so the demo needs no time zone setting
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    return logger
