"""Throughput and correctness of `monitor scan`, with mtail over the same log as the yardstick.

1. Writes a realistic TradingAgents server log (default 200 MiB) in the server's exact line format,
   ~1% keyword lines among HTTP access lines, LLM agent chatter, tracebacks, multi-line reports and
   near misses, and counts per rule what it wrote: the ground truth.
2. Runs `monitor scan FILE --format json` and `mtail --one_shot` (with a program generated from the
   same config.yaml) over it, measuring wall time, CPU time and peak RSS of each child.
3. Compares both tools' counts with the truth. Exit 1 if monitor's differ (mtail's are only reported),
   2 if a tool could not be run.

With `--gzip-files N`, instead: writes N such logs of `--gzip-mb` (default 100) MB each, compressed as
logrotate's `compress` leaves them (gzip -6), and times `monitor scan` over all of them (every core, and
`--jobs 1`) beside one `zcat` of them to /dev/null, and the read verify does (each file inflated and
framed, every rule's lines made events, in this process) beside the same zcat.

    .venv/bin/python bench/scan_throughput.py [--size-mib 200] [--repeat 3] [--workdir DIR] [--keep]
    .venv/bin/python bench/scan_throughput.py --gzip-files 10 [--gzip-mb 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config.yaml"
SEED = 20251022
RECORDS_PER_BATCH = 2_000  # ~0.4 MB per write: few syscalls, and our own peak RSS stays ~25 MB (see run_measured)
KEYWORD_SHARE = 0.012  # share of records that are keyword records; tuned to give ~1% keyword *lines*
EXIT_OK, EXIT_MONITOR_MISMATCH, EXIT_TOOL_FAILED = 0, 1, 2
GOAL_MARGINAL_BYTES_PER_S, GOAL_RATIO = 2e9, 60.0  # issue: >= 2 GB/s and >= 60x mtail, start-up excluded
GOAL_GZIP_RATIO = 2.5  # issue: scan of the .gz files >= 2.5x as fast as one zcat of them (wall, start-up included)

# Written as escapes because they are what the rules match byte for byte: ⚠️ is U+26A0 plus the
# variation selector U+FE0F, and a bare U+26A0 (a near miss below) must not match.
OK = "\u2705"  # ✅
WARN = "\u26a0\ufe0f"  # ⚠️
WARN_BARE = "\u26a0"  # ⚠ without the variation selector

# ---------------------------------------------------------------------------------------------
# Log generation


class Kind(NamedTuple):
    """One kind of log record: its fixed line head, a message factory and the rules it matches."""

    name: str
    weight: float
    head: str  # " | logger | LEVEL | module:func:line | " after the timestamp
    make: Callable[[random.Random], str]  # message; "\n" inside it makes continuation lines
    rules: tuple[str, ...] = ()  # one entry per matching line per rule (a multiset)
    hit_lines: int = 1  # lines of one record matching some rule, when `rules` is not empty


def head(logger: str, level: str, location: str) -> str:
    # %(name)-20s | %(levelname)-8s | %(module)s:%(funcName)s:%(lineno)d
    return f" | {logger:<20} | {level:<8} | {location} | "


SERVER = "backend.tradingagents_server"
SYMBOLS = [
    ("AAPL", "美股"), ("NVDA", "美股"), ("TSLA", "美股"), ("MSFT", "美股"), ("00700", "港股"),
    ("09988", "港股"), ("600519", "A股"), ("000001", "A股"), ("300750", "A股"),
]  # fmt: skip
AGENTS = [
    ("📊", "市场分析师"), ("📰", "新闻分析师"), ("💬", "社交媒体分析师"), ("📈", "基本面分析师"),
    ("🐂", "看涨研究员"), ("🐻", "看跌研究员"), ("👔", "研究经理"), ("💼", "交易员"), ("⚖\ufe0f", "风险管理团队"),
]  # fmt: skip
MONGO_ERRORS = [
    "connection closed",
    "localhost:27017: [Errno 111] Connection refused, Timeout: 30s, Topology Description: "
    "<TopologyDescription id: 68f86d2a9c1e4b0d2f3a1b7c, topology_type: Unknown, servers: "
    "[<ServerDescription ('localhost', 27017) server_type: Unknown, rtt: None>]>",
    "Cannot use MongoClient after close",
    "operation cancelled",
]
ANALYSIS_ERRORS = [
    "数据源超时: get_stock_data {sym}",
    "LLM调用失败: Request timed out.",
    "Error code: 429 - {{'error': {{'message': 'Rate limit reached for qwen-plus'}}}}",
    "'NoneType' object has no attribute 'get'",
    "无法获取 {sym} 的基本面数据，请检查股票代码",
]
STATUS_ERRORS = [
    "ServerSelectionTimeoutError",
    "Event loop is closed",
]
# asyncio's other wording of the foreign-loop bug: event_loop_regression counts it too.
LOOP_ERROR_OTHER = (
    "Task <Task pending name='Task-12' coro=<update_status()>> got Future <Future pending> attached to a different loop"
)
AGENT_CN = [
    "📈 [市场分析师] 开始分析 {sym} 的技术指标",
    "📈 [市场分析师] {sym} 的 MACD 金叉，RSI={x}，短期趋势偏多",
    "📰 [新闻分析师] 获取到 {n} 条 {sym} 相关新闻，开始情绪分析",
    "💬 [社交媒体分析师] {sym} 情绪得分: {x}，讨论热度上升",
    "📊 [基本面分析师] {sym} 市盈率 {x}，营收同比增长 {n}%",
    "🐂 [看涨研究员] 第 {k} 轮辩论发言完成",
    "🐻 [看跌研究员] 第 {k} 轮辩论发言完成，认为估值偏高",
    "👔 [研究经理] 综合多空观点，给出投资建议: 持有",
    "💼 [交易员] 最终交易决策: 买入 {sym}，目标价 {x}",
    "⚖\ufe0f [风险管理] 激进/保守/中性三方讨论第 {k} 轮",
    "🔧 [工具调用] get_stock_market_data_unified({sym}, 2025-09-22, 2025-10-22)",
    "🤖 [LLM] 使用模型 qwen-plus，温度 0.1，最大 token {n}",
    "⏱\ufe0f [性能] 节点 market_analyst 耗时 {x} 秒",
    "🔍 [股票代码] {sym} 识别为{market}，使用对应数据源",
]
AGENT_EN = [
    "[Bull Researcher] Bull Analyst: {sym} continues to show strong revenue growth and expanding margins; "
    "the recent pullback is a buying opportunity rather than a trend reversal.",
    "[Bear Researcher] Bear Analyst: {sym} trades at {x} times forward earnings; downside risk remains elevated.",
    "Calling tool get_YFin_data_online with args {{'symbol': '{sym}', 'start_date': '2025-09-22'}}",
    "Token usage: prompt={n}, completion={k}, model=qwen-plus",
    "Graph step {k}: entering node 'Market Analyst'",
    "Reflecting on decision for {sym}: the HOLD recommendation was reasonable given mixed signals.",
    "Retrying request to /chat/completions in 0.{k} seconds",
    "FINAL TRANSACTION PROPOSAL: **HOLD** for {sym}",
]
PROGRESS_LOOKALIKES = [  # progress text the server also logs; none may match analysis_progress
    "📊 [进度] 分析 {oid} 进度 {n}%",
    "[进度跟踪] {oid} 步骤 {k}/10: 市场分析师",
    "⏳ 分析 {oid} 正在进行，预计剩余 {n} 秒",
    "🔄 更新分析进度: {oid} -> {n}%",
    "分析 {oid} 当前进度 {n}%，阶段: 研究员辩论",
]
SERVER_LOOKALIKES = [  # near misses of the keyword rules
    OK + " 分析记录已保存到Redis: {oid}",
    OK + " 分析完成状态已写入内存: {oid}",
    "🔍 [MongoDB] 更新分析状态: {oid} -> running",
    "MongoDB连接成功: mongodb://mongo:27017/tradingagents",
    "MongoDB操作成功: update_one ({x} ms)",
    WARN + " 获取新闻数据失败: timeout，使用缓存数据",
    WARN_BARE + " 更新数据库状态失败（未带变体选择符的 ⚠ 不应匹配）: {oid}",
]
DATAFLOWS = [
    "📊 [数据获取] 从 tushare 获取 {sym} 数据成功，共 {n} 条记录",
    "💾 [缓存] 命中缓存: {sym}_2025-10-22.csv",
    WARN + " [数据源] akshare 请求失败，切换到备用数据源 baostock",
    "📊 [数据获取] 从 yfinance 获取 {sym} 数据成功，共 {n} 条记录",
]
REPORT_LINES = [
    "## 一、技术面分析", "- 均线系统: 5日均线上穿20日均线，形成金叉", "- MACD: DIF 与 DEA 在零轴上方，红柱放大",
    "- RSI(14): 62.4，处于强势区间但未超买", "## 二、基本面分析", "| 指标 | 数值 | 行业均值 |", "|---|---|---|",
    "| 市盈率 | 28.3 | 24.1 |", "| 毛利率 | 45.2% | 38.7% |", "## 三、风险提示", "- 宏观经济下行风险",
    "- 汇率波动可能影响海外收入", "**结论**: 建议持有，等待更好的买点。", "",
]  # fmt: skip
SENTENCES = [
    "根据最新财报，公司营收同比增长12.5%，净利润率保持稳定。",
    "技术面上，股价在关键支撑位附近企稳，成交量温和放大。",
    "The company's free cash flow supports continued buybacks and a growing dividend.",
    "市场情绪整体偏乐观，但需警惕短期获利回吐压力。",
    "Analysts expect margins to expand as the product mix shifts toward services.",
]
PYMONGO_TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "/app/backend/tradingagents_server.py", line 1875, in get_analysis_history',
    "    cursor = db.analyses.find(query).sort('created_at', -1).limit(50)",
    '  File "/usr/local/lib/python3.11/site-packages/pymongo/synchronous/cursor.py", line 1281, in next',
    "    if len(self._data) or self._refresh():",
    "pymongo.errors.ServerSelectionTimeoutError: localhost:27017: [Errno 111] Connection refused",
]
LOOP_TRACEBACK = [  # the original bug, logged with logger.exception: two traceback lines name it again
    "Traceback (most recent call last):",
    '  File "/app/backend/tradingagents_server.py", line 208, in safe_mongodb_operation',
    "    return await asyncio.wait_for(operation(), timeout=10.0)",
    '  File "/usr/local/lib/python3.11/asyncio/tasks.py", line 649, in ensure_future',
    "    return _ensure_future(coro_or_future, loop=loop)",
    '  File "/usr/local/lib/python3.11/asyncio/tasks.py", line 661, in _ensure_future',
    "    raise ValueError('The future belongs to a different loop than '",
    "ValueError: The future belongs to a different loop than the one specified as the loop argument",
]
LOOP_ERROR = "The future belongs to a different loop than the one specified as the loop argument"


def oid(rng: random.Random) -> str:
    """A MongoDB ObjectId, as the server's analysis ids are."""
    return f"{rng.getrandbits(96):024x}"


def fill(template: str, rng: random.Random) -> str:
    symbol, market = rng.choice(SYMBOLS)
    return template.format(
        sym=symbol, market=market, oid=oid(rng), n=rng.randrange(1, 5000), k=rng.randrange(1, 10),
        x=round(rng.uniform(0.5, 120), 2),
    )  # fmt: skip


def pick(pool: list[str]) -> Callable[[random.Random], str]:
    return lambda rng: fill(rng.choice(pool), rng)


def access_line(rng: random.Random) -> str:
    path = rng.choice(
        [f"/api/analysis/{oid(rng)}/status", "/api/analysis/start", "/api/health", "/api/analysis/history?page=2"]
    )
    method = "POST" if path.endswith("start") else "GET"
    return f'172.18.0.{rng.randrange(2, 250)}:{rng.randrange(30000, 60000)} - "{method} {path} HTTP/1.1" 200'


def httpx_line(rng: random.Random) -> str:
    host = rng.choice(["dashscope.aliyuncs.com/compatible-mode", "api.deepseek.com", "api.openai.com"])
    return f'HTTP Request: POST https://{host}/v1/chat/completions "HTTP/1.1 200 OK"'


def report(rng: random.Random) -> str:
    body = "\n".join(rng.choices(REPORT_LINES, k=rng.randrange(8, 30)))
    return f"📄 [报告] {rng.choice(SYMBOLS)[0]} 市场分析报告:\n# 综合分析报告\n{body}"


def llm_raw(rng: random.Random) -> str:
    # Raw LLM responses are logged whole on one line: the few KB to tens of KB lines of real logs.
    content = "\\n".join(rng.choices(SENTENCES, k=rng.randrange(30, 400)))
    return f'🤖 [DEBUG] LLM原始响应: {{"id": "chatcmpl-{oid(rng)}", "content": "{content}"}}'


def progress(rng: random.Random) -> str:
    emoji, agent = rng.choice(AGENTS)
    return f"分析 {oid(rng)} 进度: {rng.randrange(1, 100)}% - {emoji} {agent} 正在分析 {rng.choice(SYMBOLS)[0]}"


def started(rng: random.Random) -> str:
    symbol, market = rng.choice(SYMBOLS)
    return f"启动真实分析: {oid(rng)} - {symbol} ({market})"


def noise_kinds() -> list[Kind]:
    worker = "tradingagents_server:analysis_worker"
    return [
        Kind("access", 30, head("uvicorn.access", "INFO", "h11_impl:send:476"), access_line),
        Kind("httpx", 12, head("httpx", "INFO", "_client:_send_single_request:1025"), httpx_line),
        Kind("agent_cn", 20, head("agents", "INFO", "market_analyst:market_analyst_node:85"), pick(AGENT_CN)),
        Kind("agent_en", 12, head("tradingagents.graph", "DEBUG", "trading_graph:propagate:187"), pick(AGENT_EN)),
        Kind("progress_lookalike", 10, head(SERVER, "INFO", f"{worker}:2511"), pick(PROGRESS_LOOKALIKES)),
        Kind("dataflows", 8, head("dataflows", "INFO", "interface:get_stock_data:320"), pick(DATAFLOWS)),
        Kind("server_lookalike", 5, head(SERVER, "INFO", f"{worker}:2540"), pick(SERVER_LOOKALIKES)),
        Kind("scheduler", 3, head("apscheduler.executors.default", "INFO", "base:run_job:123"),
             lambda rng: 'Job "cleanup_expired (trigger: interval[0:05:00])" executed successfully'),
        Kind("pymongo_traceback", 0.5, head(SERVER, "ERROR", "tradingagents_server:get_analysis_history:1880"),
             lambda rng: "获取分析历史失败: localhost:27017: [Errno 111] Connection refused\n"
             + "\n".join(PYMONGO_TRACEBACK)),
        Kind("report", 1, head("agents", "INFO", "report_utils:save_report:64"), report),
        Kind("llm_raw", 0.3, head("agents", "DEBUG", "llm_adapter:invoke:212"), llm_raw),
    ]  # fmt: skip


def keyword_kinds() -> list[Kind]:
    def server(level: str, line: int) -> str:
        return head(SERVER, level, f"tradingagents_server:analysis_worker:{line}")

    wrapper = head(SERVER, "ERROR", "tradingagents_server:safe_mongodb_operation:215")
    mongo_failed = "mongodb_operation_failed"
    return [
        Kind("record_saved", 10, head(SERVER, "INFO", "tradingagents_server:start_analysis:2401"),
             lambda rng: f"{OK} 分析记录已保存到数据库: {oid(rng)}", ("analysis_record_saved",)),
        Kind("record_save_failed", 1, head(SERVER, "WARNING", "tradingagents_server:start_analysis:2405"),
             lambda rng: f"{WARN} 保存分析到数据库失败: {rng.choice(MONGO_ERRORS)}，将继续使用内存存储",
             ("analysis_record_save_failed",)),
        Kind("started", 10, server("INFO", 2488), started, ("analysis_started",)),
        Kind("progress", 24, server("INFO", 2511), progress, ("analysis_progress",)),
        Kind("progress_update", 8, head(SERVER, "INFO", "tradingagents_server:update_progress:2300"),
             lambda rng: f"分析 {oid(rng)} 进度更新: {rng.randrange(1, 100)}%", ("analysis_progress",)),
        Kind("redis_written", 8, server("INFO", 2549),
             lambda rng: f"{OK} 分析完成状态已写入Redis: {oid(rng)}", ("redis_status_written",)),
        Kind("completed_persisted", 8, server("INFO", 2552),
             lambda rng: f"{OK} 分析完成状态已更新到数据库: {oid(rng)}", ("analysis_completed_status_persisted",)),
        Kind("finished_true", 7, server("INFO", 2553),
             lambda rng: f"分析 {oid(rng)} 完成，成功: True", ("analysis_finished",)),
        Kind("finished_false", 2, server("INFO", 2591),
             lambda rng: f"分析 {oid(rng)} 完成，成功: False", ("analysis_finished",)),
        Kind("execution_failed", 2, server("ERROR", 2585),
             lambda rng: f"分析 {oid(rng)} 执行失败: " + fill(rng.choice(ANALYSIS_ERRORS), rng),
             ("analysis_execution_failed",)),
        Kind("execution_failed_mongo", 0.3, server("ERROR", 2585),
             lambda rng: f"分析 {oid(rng)} 执行失败: MongoDB操作失败: {rng.choice(MONGO_ERRORS)}",
             ("analysis_execution_failed", mongo_failed)),
        Kind("failed_persisted", 2, server("INFO", 2590),
             lambda rng: f"{OK} 分析失败状态已更新到数据库: {oid(rng)}", ("analysis_failed_status_persisted",)),
        Kind("returned_none", 2, server("WARNING", 2560),
             lambda rng: f"{WARN} MongoDB更新返回None，可能更新失败", ("mongodb_update_returned_none",)),
        Kind("timeout", 1, head(SERVER, "ERROR", "tradingagents_server:safe_mongodb_operation:212"),
             lambda rng: "MongoDB操作超时", ("mongodb_operation_timeout",)),
        Kind("operation_failed", 1, wrapper,
             lambda rng: f"MongoDB操作失败: {rng.choice(MONGO_ERRORS)}", (mongo_failed,)),
        Kind("operation_failed_loop", 1, wrapper,
             lambda rng: f"MongoDB操作失败: {LOOP_ERROR}", (mongo_failed, "event_loop_regression")),
        Kind("operation_failed_loop_traceback", 0.5, wrapper,
             lambda rng: f"MongoDB操作失败: {LOOP_ERROR}\n" + "\n".join(LOOP_TRACEBACK),
             (mongo_failed, "event_loop_regression")),  # the traceback's lines count nothing
        Kind("status_update_failed_loop", 0.3, server("WARNING", 2570),
             lambda rng: f"{WARN} 更新数据库状态失败: {LOOP_ERROR_OTHER}",
             ("status_update_failed", "event_loop_regression")),
        Kind("status_update_failed", 1, server("WARNING", 2570),
             lambda rng: f"{WARN} 更新数据库状态失败: {rng.choice(STATUS_ERRORS)}", ("status_update_failed",)),
        Kind("status_update_failed_timeout", 0.3, server("WARNING", 2570),
             lambda rng: f"{WARN} 更新数据库状态失败: MongoDB操作超时",
             ("status_update_failed", "mongodb_operation_timeout")),
    ]  # fmt: skip


def all_kinds() -> list[Kind]:
    """Noise and keyword kinds, weights scaled so keyword records are KEYWORD_SHARE of all records."""
    noise, keyword = noise_kinds(), keyword_kinds()
    noise_total, keyword_total = sum(k.weight for k in noise), sum(k.weight for k in keyword)
    scaled = [k._replace(weight=k.weight / noise_total * (1 - KEYWORD_SHARE)) for k in noise]
    return scaled + [k._replace(weight=k.weight / keyword_total * KEYWORD_SHARE) for k in keyword]


class Clock:
    """logging's asctime for an advancing clock; strftime only once per second, as it is slow."""

    def __init__(self, start: float) -> None:
        self.ms = int(start * 1000)
        self._second = -1
        self._text = ""

    def advance(self, ms: int) -> str:
        self.ms += ms
        second, milli = divmod(self.ms, 1000)
        if second != self._second:
            self._second, self._text = second, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
        return f"{self._text},{milli:03d}"


@dataclass
class Generated:
    path: Path
    bytes: int
    lines: int
    keyword_lines: int
    truth: Counter[str]
    seconds: float


def generate(path: Path, size_bytes: int, kinds: list[Kind], seed: int = SEED) -> Generated:
    """Write whole batches of records until the file reaches size_bytes; count what was written."""
    started_at = time.perf_counter()
    rng, clock = random.Random(seed), Clock(start=1761113400.0)  # 2025-10-22 06:10:00
    weights = [k.weight for k in kinds]
    truth: Counter[str] = Counter()
    written = lines = keyword_lines = records = 0
    with open(path, "wb") as out:
        while written < size_bytes:
            # Shrink the last batches so the file ends just past the requested size.
            per_record = written / records if records else 200
            count = max(1, min(RECORDS_PER_BATCH, int((size_bytes - written) / per_record) + 1))
            batch = rng.choices(kinds, weights, k=count)
            records += count
            text = "".join(f"{clock.advance(int(rng.random() * 60))}{k.head}{k.make(rng)}\n" for k in batch)
            data = text.encode("utf-8")
            out.write(data)
            written += len(data)
            lines += data.count(b"\n")
            for kind, n in Counter(batch).items():
                for rule in kind.rules:
                    truth[rule] += n
                keyword_lines += n * _matching_lines(kind)
    return Generated(path, written, lines, keyword_lines, truth, time.perf_counter() - started_at)


def _matching_lines(kind: Kind) -> int:
    return kind.hit_lines if kind.rules else 0


# ---------------------------------------------------------------------------------------------
# Rules: the config's, checked against the generator with a third engine (Python's re)


def load_rules(config: Path) -> dict[str, str]:
    """Rule name -> pattern, straight from the YAML (patterns never use ${VAR} expansion)."""
    with open(config, encoding="utf-8") as f:
        return {rule["name"]: rule["pattern"] for rule in yaml.safe_load(f)["rules"]}


def self_check(kinds: list[Kind], rules: dict[str, str], samples: int = 300) -> list[str]:
    """Each kind's declared rules must be exactly what Python's re finds in its lines.

    The templates' fills are ids, symbols and numbers (no Unicode spaces, where re's and RE2's
    `\\S` differ), so re agrees with RE2 here; this keeps the ground truth honest without a
    second full pass over the file.
    """
    compiled = {name: re.compile(pattern) for name, pattern in rules.items()}
    rng, problems = random.Random(SEED + 1), []
    for kind in kinds:
        unknown = set(kind.rules) - set(rules)
        if unknown:
            problems.append(f"{kind.name}: declares unknown rules {sorted(unknown)}")
        for _ in range(samples):
            record = f"2025-10-22 14:20:02,123{kind.head}{kind.make(rng)}"
            lines = record.split("\n")
            found = Counter(name for line in lines for name, rx in compiled.items() if rx.search(line))
            matching = sum(any(rx.search(line) for rx in compiled.values()) for line in lines)
            if found != Counter(kind.rules) or matching != _matching_lines(kind):
                problems.append(f"{kind.name}: declares {sorted(kind.rules)}, re finds {sorted(found.elements())}")
                break
    return problems


# ---------------------------------------------------------------------------------------------
# mtail program


def mtail_program(rules: dict[str, str]) -> str:
    """One counter labelled by rule, one pattern block per rule, plus a line counter.

    Named groups become plain groups: mtail would warn about each unused capture, and they do not
    change which lines match. Blocks are independent, so a line matching two rules counts twice.
    """
    blocks = [
        "# Generated by bench/scan_throughput.py from config.yaml.",
        "counter tradingagents_log_events_total by rule",
        "counter bench_lines_total",
        "",
        "/$/ {\n  bench_lines_total++\n}",
    ]
    for name, pattern in rules.items():
        regex = re.sub(r"\(\?P<\w+>", "(?:", pattern).replace("/", r"\/")
        blocks.append(f'/{regex}/ {{\n  tradingagents_log_events_total["{name}"]++\n}}')
    return "\n".join(blocks) + "\n"


def parse_mtail(text: str) -> tuple[Counter[str], int]:
    """Per-rule counts and the line count from mtail's one-shot Prometheus text."""
    counts: Counter[str] = Counter()
    lines = 0
    for line in text.splitlines():
        match = re.match(r'tradingagents_log_events_total\{.*?rule="([^"]*)".*\}\s+(\S+)', line)
        if match:
            counts[match.group(1)] += int(float(match.group(2)))
        elif line.startswith("bench_lines_total"):
            lines = int(float(line.split()[-1]))
    return counts, lines


# ---------------------------------------------------------------------------------------------
# Running a child and measuring it


@dataclass
class Run:
    wall: float
    user: float
    system: float
    max_rss_kib: int
    rss_exact: bool  # False: a lower bound from polling (see run_measured)
    returncode: int
    stdout: str
    stderr: str

    @property
    def cpu(self) -> float:
        return self.user + self.system


def run_measured(command: list[str], scratch: Path) -> Run:
    """Wall time, CPU time and peak RSS of one child.

    CPU comes from os.wait4, the rusage of exactly this child (what a getrusage(RUSAGE_CHILDREN)
    delta gives). Its ru_maxrss is not the child's own peak, though: Linux carries the pre-exec
    memory's high-water mark across exec, and subprocess spawns with vfork, so ru_maxrss is at least
    *this* process's peak RSS (the generator's buffers). It is exact only when it exceeds that; otherwise
    the peak is VmHWM from /proc/<pid>/status polled while the child runs (a lower bound, as the
    last few ms are not seen).
    Output goes to files, not pipes, so the child never blocks on a full pipe while we sit in wait4.
    """
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(scratch / "stdout", "w+b") as out, open(scratch / "stderr", "w+b") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        poller = HighWaterPoller(child.pid)
        _pid, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        polled = poller.stop()
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
        exact = usage.ru_maxrss > own_peak
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    rss = usage.ru_maxrss if exact else polled
    return Run(wall, usage.ru_utime, usage.ru_stime, rss, exact, child.returncode, stdout, stderr)


class HighWaterPoller:
    """Polls a child's VmHWM (peak RSS of its current image) until stopped; keeps the largest value."""

    def __init__(self, pid: int, interval: float = 0.002) -> None:
        self._path, self._interval = f"/proc/{pid}/status", interval
        self._stopped = threading.Event()
        self._peak_kib = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stopped.set()
        self._thread.join()
        return self._peak_kib

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._peak_kib = max(self._peak_kib, self._read())
            self._stopped.wait(self._interval)

    def _read(self) -> int:
        try:
            with open(self._path, "rb") as status:
                for line in status:
                    if line.startswith(b"VmHWM:"):
                        return int(line.split()[1])
        except OSError:  # exited between polls
            pass
        return 0  # a zombie has no memory lines


def best_of(runs: list[Run]) -> Run:
    return min(runs, key=lambda run: run.wall)


class Tool(NamedTuple):
    name: str
    command: Callable[[Path], list[str]]
    parse: Callable[[str], tuple[Counter[str], int]]  # stdout -> (per-rule counts, lines)


def monitor_tool(config: Path, jobs: int | None = None) -> Tool:
    """`monitor scan`, on every CPU (the default) or on `jobs` processes."""
    executable = Path(sys.executable).parent / "monitor"  # the venv's console script

    def parse(stdout: str) -> tuple[Counter[str], int]:
        summary = json.loads(stdout)
        if summary.get("errors") or summary.get("oversized_lines"):
            print(f"monitor reported errors={summary['errors']} oversized_lines={summary['oversized_lines']}")
        return Counter({row["rule"]: row["count"] for row in summary["rules"]}), summary["lines"]

    name, flags = ("monitor", []) if jobs is None else (f"monitor-j{jobs}", ["--jobs", str(jobs)])
    scan = [str(executable), "scan", "--format", "json", "--config", str(config), *flags]
    return Tool(name, lambda log: [*scan, str(log)], parse)


def mtail_tool(executable: str, progs: Path) -> Tool:
    # --port 0: one-shot mode still opens its HTTP listener, and 3903 may be taken.
    # --logtostderr: glog would otherwise leave log files in /tmp.
    flags = ["--one_shot", "--one_shot_format=prometheus", "--emit_prog_label=false", "--logtostderr",
             "--address", "127.0.0.1", "--port", "0", "--progs", str(progs)]  # fmt: skip
    return Tool("mtail", lambda log: [executable, *flags, "--logs", str(log)], parse_mtail)


@dataclass
class Measured:
    tool: Tool
    run: Run  # best of the runs over the log
    startup: Run  # best of the runs over an empty file
    counts: Counter[str]
    lines: int


def measure(tool: Tool, log: Path, empty: Path, repeat: int, scratch: Path) -> Measured:
    runs, startups = [], []
    counts: Counter[str] | None = None
    lines = 0
    for _ in range(repeat):
        startups.append(_checked(tool, run_measured(tool.command(empty), scratch)))
        run = _checked(tool, run_measured(tool.command(log), scratch))
        these, lines = tool.parse(run.stdout)
        if counts is not None and these != counts:
            raise ToolFailedError(f"{tool.name}: counts differ between repeated runs")
        counts = these
        runs.append(run)
    assert counts is not None
    return Measured(tool, best_of(runs), best_of(startups), counts, lines)


class ToolFailedError(Exception):
    pass


def _checked(tool: Tool, run: Run) -> Run:
    if run.returncode != 0:
        raise ToolFailedError(f"{tool.name} exited {run.returncode}:\n{run.stderr[-2000:]}")
    return run


# ---------------------------------------------------------------------------------------------
# Report


def print_counts(rules: list[str], generated: Generated, results: list[Measured]) -> bool:
    """The per-rule table; True when monitor's counts (and line count) equal the truth."""
    names = [m.tool.name for m in results]
    print(f"\n{'rule':<38}{'truth':>9}" + "".join(f"{n:>10}" for n in names) + "  flag")
    monitor_ok = True
    rows = [(rule, generated.truth[rule], [m.counts[rule] for m in results]) for rule in rules]
    rows.append(("(lines)", generated.lines, [m.lines for m in results]))
    for rule, truth, got in rows:
        wrong = [n for n, value in zip(names, got, strict=True) if value != truth]
        monitor_ok &= not any(n.startswith("monitor") for n in wrong)
        flag = "MISMATCH: " + ", ".join(wrong) if wrong else ""
        print(f"{rule:<38}{truth:>9}" + "".join(f"{v:>10}" for v in got) + f"  {flag}")
    return monitor_ok


def print_performance(size: int, results: list[Measured]) -> None:
    print(f"\n{'tool':<9}{'wall s':>8}{'MB/s':>9}{'start-up s':>11}{'MB/s excl.':>11}"
          f"{'user s':>8}{'sys s':>7}{'CPU s':>8}{'CPU MB/s':>9}{'peak RSS MiB':>13}")  # fmt: skip
    for m in results:
        run, net = m.run, m.run.wall - m.startup.wall
        net_rate = f"{size / net / 1e6:.1f}" if net > 0.01 else "n/a"  # too small a file to tell
        rss = f"{'' if run.rss_exact else '>='}{run.max_rss_kib / 1024:.1f}"
        print(f"{m.tool.name:<9}{run.wall:>8.2f}{size / run.wall / 1e6:>9.1f}{m.startup.wall:>11.3f}"
              f"{net_rate:>11}{run.user:>8.2f}{run.system:>7.2f}{run.cpu:>8.2f}"
              f"{size / run.cpu / 1e6:>9.1f}{rss:>13}")  # fmt: skip
    by_name = {m.tool.name: m for m in results}
    if "mtail" in by_name:
        mt = by_name["mtail"]
        mt_marginal = size / (mt.run.wall - mt.startup.wall)
        print(f"\n{os.cpu_count()} CPUs. Ratios to mtail (>1: monitor is faster); marginal = size / (wall - start-up):")
        for name in (n for n in by_name if n.startswith("monitor")):
            mon = by_name[name]
            net = mon.run.wall - mon.startup.wall
            marginal = size / net if net > 0.01 else float("nan")
            print(f"  {name:<11} wall {mt.run.wall / mon.run.wall:6.2f}x   CPU {mt.run.cpu / mon.run.cpu:6.2f}x   "
                  f"marginal {marginal / mt_marginal:6.2f}x ({marginal / 1e6:,.0f} MB/s)")  # fmt: skip
        mon = by_name["monitor"]
        marginal = size / max(mon.run.wall - mon.startup.wall, 1e-9)
        ok = marginal >= GOAL_MARGINAL_BYTES_PER_S and marginal / mt_marginal >= GOAL_RATIO
        print(f"Goal (monitor, marginal): >= {GOAL_MARGINAL_BYTES_PER_S / 1e9:.0f} GB/s, >= {GOAL_RATIO:.0f}x mtail: "
              f"{marginal / 1e6:,.0f} MB/s, {marginal / mt_marginal:.1f}x, {'met' if ok else 'MISSED'}")  # fmt: skip
    print(
        "MB = 10^6 bytes; MB/s excl. = size / (wall - start-up on an empty file); "
        "peak RSS: wait4 ru_maxrss, or >= polled VmHWM where ru_maxrss only shows this script's own peak"
    )


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=float, default=200, help="size of the generated log (default 200)")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs per tool (default 1)")
    parser.add_argument("--workdir", type=Path, help="where to write the log (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated log and mtail program")
    parser.add_argument("--config", type=Path, default=CONFIG, help="rules (default: the repo's config.yaml)")
    parser.add_argument("--gzip-files", type=int, default=0, help="time N rotated .gz logs against zcat instead")
    parser.add_argument("--gzip-mb", type=float, default=100, help="uncompressed MB of each .gz log (default 100)")
    parser.add_argument("--floor", action="store_true", help="time each stage of a scan on one core instead")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.size_mib <= 0 or args.gzip_files < 0 or args.gzip_mb <= 0:
        parser.error("--repeat must be >= 1, --size-mib and --gzip-mb > 0, --gzip-files >= 0")
    return args


def make_workdir(parent: Path | None) -> Path:
    """A fresh directory for this run (inside --workdir if given), so cleanup removes only our files."""
    if parent:
        parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="scan-bench-", dir=parent))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rules = load_rules(args.config)
    kinds = all_kinds()
    problems = self_check(kinds, rules)
    if problems:
        print("generator and config disagree:\n  " + "\n  ".join(problems), file=sys.stderr)
        return EXIT_TOOL_FAILED
    work = make_workdir(args.workdir)
    try:
        if args.gzip_files:
            return run_gzip_benchmark(args, rules, kinds, work)
        if args.floor:
            return run_floor(args, kinds, work)
        return run_benchmark(args, rules, kinds, work)
    finally:
        if args.keep:
            print(f"\nkept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_benchmark(args: argparse.Namespace, rules: dict[str, str], kinds: list[Kind], work: Path) -> int:
    log, empty, progs = work / "tradingagents.log", work / "empty.log", work / "mtail"
    empty.touch()
    progs.mkdir()
    (progs / "tradingagents.mtail").write_text(mtail_program(rules), encoding="utf-8")
    generated = generate(log, int(args.size_mib * (1 << 20)), kinds)
    print(f"generated {log}: {generated.bytes:,} bytes ({generated.bytes / (1 << 20):.1f} MiB), "
          f"{generated.lines:,} lines, {generated.keyword_lines:,} keyword lines "
          f"({generated.keyword_lines / generated.lines:.2%}) in {generated.seconds:.1f} s, seed {SEED}")  # fmt: skip
    tools = [monitor_tool(args.config), monitor_tool(args.config, jobs=1)]
    mtail = shutil.which("mtail")
    if mtail:
        tools.append(mtail_tool(mtail, progs))
    else:
        print("mtail not found on PATH: comparing monitor with the truth only")
    try:
        results = [measure(tool, log, empty, args.repeat, work) for tool in tools]
    except ToolFailedError as exc:
        print(f"\n{exc}", file=sys.stderr)
        return EXIT_TOOL_FAILED
    monitor_ok = print_counts(list(rules), generated, results)
    print_performance(generated.bytes, results)
    if not monitor_ok:
        print("\nFAIL: monitor's counts differ from the ground truth", file=sys.stderr)
        return EXIT_MONITOR_MISMATCH
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Rotated .gz logs against one zcat of them


def write_gzip_logs(work: Path, count: int, size_bytes: int, kinds: list[Kind]) -> tuple[list[Path], Counter[str], int]:
    """`count` logs of the generator's, each with its own seed, gzip -6 (logrotate's `compress`)."""
    paths, truth, lines = [], Counter(), 0
    plain = work / "plain.tmp"
    for index in range(count):
        generated = generate(plain, size_bytes, kinds, seed=SEED + index)
        truth += generated.truth
        lines += generated.lines
        path = work / f"tradingagents.log.{index + 2}.gz"
        with open(plain, "rb") as source, gzip.open(path, "wb", compresslevel=6) as packed:
            shutil.copyfileobj(source, packed, 4 << 20)
        paths.append(path)
    plain.unlink()
    return paths, truth, lines


def verify_read_seconds(config: Path, paths: list[Path]) -> float:
    """verify's read of the files, in this process: inflate, frame, every rule's lines as events."""
    from monitor.config import load_config
    from monitor.scan.matcher import Scanner, compile_matcher
    from monitor.scan.readfiles import read_chunks

    loaded = load_config(config)
    matcher = compile_matcher(loaded.config.rules, loaded.config.timestamp, loaded.where)
    started = time.perf_counter()
    for path in paths:
        scanner = Scanner(matcher, loaded.config.scan.max_line_bytes)
        for chunk in read_chunks(path, loaded.config.scan.read_chunk_bytes):
            scanner.feed(chunk)
        scanner.flush()
    return time.perf_counter() - started


def run_gzip_benchmark(args: argparse.Namespace, rules: dict[str, str], kinds: list[Kind], work: Path) -> int:
    paths, truth, lines = write_gzip_logs(work, args.gzip_files, int(args.gzip_mb * 1e6), kinds)
    packed = sum(p.stat().st_size for p in paths)
    print(
        f"wrote {len(paths)} .gz logs of {args.gzip_mb:g} MB each: {packed / 1e6:,.0f} MB compressed, {lines:,} lines"
    )
    zcat = Tool(
        "zcat", lambda _: ["sh", "-c", 'exec zcat "$@" > /dev/null', "zcat", *map(str, paths)], lambda _: ({}, 0)
    )
    tools = [monitor_tool(args.config), monitor_tool(args.config, jobs=1)]
    ok = True
    for _ in range(args.repeat):
        try:
            base = _checked(zcat, run_measured(zcat.command(work), work))
            runs = [(tool, _checked(tool, run_measured([*tool.command(paths[0])[:-1], *map(str, paths)], work)))
                    for tool in tools]  # fmt: skip
        except ToolFailedError as exc:
            print(f"\n{exc}", file=sys.stderr)
            return EXIT_TOOL_FAILED
        print(f"\nzcat of all {base.wall:6.2f} s wall {base.cpu:6.2f} s CPU")
        for tool, run in runs:
            counts, got_lines = tool.parse(run.stdout)
            right = counts == Counter({rule: truth[rule] for rule in rules}) and got_lines == lines
            ok &= right
            print(f"{tool.name:<12} {run.wall:6.2f} s wall {run.cpu:6.2f} s CPU  {base.wall / run.wall:5.2f}x zcat"
                  f"  counts {'= truth' if right else 'DIFFER from the truth'}")  # fmt: skip
        read = verify_read_seconds(args.config, paths)
        print(f"{'verify read':<12} {read:6.2f} s (in-process)   {base.wall / read:5.2f}x zcat")
        best = runs[0][1].wall
        print(f"Goal (monitor): >= {GOAL_GZIP_RATIO}x zcat: {base.wall / best:.2f}x, "
              f"{'met' if base.wall / best >= GOAL_GZIP_RATIO else 'MISSED'}")  # fmt: skip
    if not ok:
        print("\nFAIL: monitor's counts differ from the ground truth", file=sys.stderr)
        return EXIT_MONITOR_MISMATCH
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Where a scan's time goes: each stage alone over the same file, on one core, in this process


def run_floor(args: argparse.Namespace, kinds: list[Kind], work: Path) -> int:
    """Best of --repeat for: reading, + counting lines, Hyperscan alone (no work per match), the whole
    scan. A stage's rate bounds what any scan that has to do it can reach on one core."""
    from monitor.config import load_config
    from monitor.scan.matcher import Scanner, compile_matcher

    log = work / "tradingagents.log"
    size = generate(log, int(args.size_mib * (1 << 20)), kinds).bytes
    loaded = load_config(args.config)
    config = loaded.config
    matcher = compile_matcher(config.rules, config.timestamp, loaded.where, event_rules=())
    database = matcher._database  # the compiled rules, as scan runs them (a bench may look inside)

    def chunks() -> Iterator[bytes]:
        with open(log, "rb", buffering=0) as file:
            while chunk := file.read(config.scan.read_chunk_bytes):
                yield chunk

    def scan_all() -> None:
        scanner = Scanner(matcher, config.scan.max_line_bytes)
        for chunk in chunks():
            scanner.feed(chunk)
        scanner.flush()

    stages: list[tuple[str, Callable[[], object]]] = [
        ("read (1 MiB chunks)", lambda: sum(len(c) for c in chunks())),
        ("read + count lines", lambda: sum(c.count(b"\n") for c in chunks())),
        ("read + Hyperscan alone", lambda: [database.scan(c, match_event_handler=_ignore) for c in chunks()]),
        ("scan (all of it)", scan_all),
    ]
    print(f"{size / 1e6:,.0f} MB, one core, best of {args.repeat}:")
    for name, stage in stages:
        seconds = min(_timed(stage) for _ in range(args.repeat))
        print(f"  {name:<24} {seconds:6.3f} s  {size / seconds / 1e9:5.2f} GB/s")
    return EXIT_OK


def _ignore(*_match: object) -> None:
    return None


def _timed(stage: Callable[[], object]) -> float:
    started = time.perf_counter()
    stage()
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
