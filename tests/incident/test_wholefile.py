"""One-shot scans on several processes: the same numbers as a serial scan, whatever the cuts."""

from __future__ import annotations

import gzip
import itertools
import random

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from monitor.config import TimestampFormat, load_config
from monitor.export.metrics import LogMetrics
from monitor.incident.wholefile import _line_aligned_ranges, scan_file, scan_paths
from monitor.scan.matcher import Matcher

CONFIG = """\
version: 1
metrics: {max_event_series: 40}
rules:
  - name: timeout
    severity: error
    pattern: 'MongoDB操作超时'
    examples: ['MongoDB操作超时']
  - name: failed
    severity: error
    pattern: 'MongoDB操作失败: (?P<error>\\S+)'
    labels: {error: 3}
    examples: ['MongoDB操作失败: x']
  - name: finished
    severity: info
    pattern: '分析 (?P<id>\\S+) 完成，成功: (?P<success>True|False)'
    labels: {success: ['True']}
    examples: ['分析 a 完成，成功: True']
"""


def load_text_config(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path).config


def write_log(path, lines: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    out = []
    for n in range(lines):
        stamp = f"2025-10-22 14:{n // 60000 % 60:02d}:{n // 1000 % 60:02d},{n % 1000:03d}"
        kind = rng.random()
        if kind < 0.05:
            message = "MongoDB操作超时"
        elif kind < 0.10:
            message = f"MongoDB操作失败: err{rng.randrange(8)}"  # 8 values, a cap of 3: overflows
        elif kind < 0.15:
            message = f"分析 a{n} 完成，成功: {rng.choice(['True', 'False'])}"
        elif kind < 0.16:
            message = "x" * rng.randrange(300, 3000)  # longer than max_line_bytes below
        else:
            message = "noise " * rng.randrange(1, 30)
        out.append(f"{stamp} | server | INFO | m:f:1 | {message}" + ("\r\n" if n % 7 == 0 else "\n"))
    data = "".join(out).encode()[:-1]  # the last line without its newline
    path.write_bytes(data)
    return data


def exposition(tmp_path, log, jobs: int, min_parallel_bytes: int = 1) -> str:
    config = load_text_config(tmp_path, CONFIG)
    matcher = Matcher(config.rules, TimestampFormat(timezone="UTC"), clock=lambda: 5.0, event_rules=())
    registry = CollectorRegistry()
    metrics = LogMetrics(config, registry)
    results = scan_file(log, matcher, 256, 4096, jobs, lambda n: None, min_parallel_bytes)
    assert len(results) == (jobs if min_parallel_bytes == 1 else 1)
    for result in results:
        assert result.error is None
        result.observe_into(metrics, "scan")
    return generate_latest(registry).decode()


@pytest.mark.parametrize("jobs", [2, 3, 7])
def test_parallel_scan_gives_the_serial_exposition(tmp_path, jobs):
    log = tmp_path / "app.log"
    write_log(log, 3000)
    serial = exposition(tmp_path, log, jobs=1)
    assert 'logmonitor_label_overflows_total{rule="failed"} 0' not in serial  # the cap is reached
    assert exposition(tmp_path, log, jobs=jobs) == serial


def test_serial_below_the_threshold_and_for_compressed_files(tmp_path):
    log = tmp_path / "app.log"
    data = write_log(log, 500)
    serial = exposition(tmp_path, log, jobs=1)
    assert exposition(tmp_path, log, jobs=4, min_parallel_bytes=len(data) + 1) == serial
    packed = tmp_path / "app.log.1"
    packed.write_bytes(gzip.compress(data))
    assert exposition(tmp_path, packed, jobs=4, min_parallel_bytes=len(data) + 1) == serial
    config = load_text_config(tmp_path, CONFIG)
    results = scan_file(packed, Matcher(config.rules, event_rules=()), 256, 4096, 4, lambda n: None, 1)
    assert len(results) == 1  # a gzip stream cannot be cut


def test_cuts_fall_just_after_newlines(tmp_path):
    log = tmp_path / "app.log"
    data = write_log(log, 400, seed=3)
    for parts in (2, 5, 16):
        ranges = _line_aligned_ranges(log, len(data), parts)
        assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
        assert all(end == start for (_, end), (start, _) in itertools.pairwise(ranges))
        assert all(data[start - 1 : start] == b"\n" for start, _ in ranges[1:])
    one_line = tmp_path / "one.log"
    one_line.write_bytes(b"x" * 10_000 + b"\n")
    assert _line_aligned_ranges(one_line, 10_001, 4) == [(0, 10_001)]


def minutes_of(tmp_path, log, jobs: int) -> dict[tuple[str, int], int]:
    config = load_text_config(tmp_path, CONFIG)
    matcher = Matcher(config.rules, TimestampFormat(timezone="UTC"), clock=lambda: 5.0, event_rules=())
    total: dict[tuple[str, int], int] = {}
    for result in scan_file(log, matcher, 256, 4096, jobs, lambda n: None, 1, minutes=True):
        for key, lines in result.minutes.items():
            total[key] = total.get(key, 0) + lines
    return total


def test_lines_per_minute_are_the_same_on_every_core(tmp_path):
    """`scan --report`: every line of this log has its own timestamp, so no cut can leave one untimed."""
    log = tmp_path / "app.log"
    write_log(log, 3000)
    serial = minutes_of(tmp_path, log, jobs=1)
    assert sum(n for (rule, _), n in serial.items() if rule == "timeout") == exposition_count(tmp_path, log, "timeout")
    assert minutes_of(tmp_path, log, jobs=3) == serial


def exposition_count(tmp_path, log, rule: str) -> int:
    text = exposition(tmp_path, log, jobs=1)
    return int(
        float(
            next(
                line for line in text.splitlines() if line.startswith(f'tradingagents_log_events_total{{rule="{rule}"')
            ).split()[-1]
        )
    )


def scan_of(tmp_path, paths, jobs: int) -> tuple[str, list[str], list[dict[tuple[str, int], int]]]:
    """What `monitor scan` makes of `paths`: the exposition, the errors, each file's lines per minute."""
    config = load_text_config(tmp_path, CONFIG)
    matcher = Matcher(config.rules, TimestampFormat(timezone="UTC"), clock=lambda: 5.0, event_rules=())
    registry = CollectorRegistry()
    metrics = LogMetrics(config, registry)
    errors, minutes = [], []
    seen = []
    for path, results in scan_paths(paths, matcher, 256, 4096, jobs, lambda p: lambda n: None, 1, minutes=True):
        seen.append(path)
        per_minute: dict[tuple[str, int], int] = {}
        for result in results:
            result.observe_into(metrics, "scan")
            errors += [result.error] if result.error else []
            for key, lines in result.minutes.items():
                per_minute[key] = per_minute.get(key, 0) + lines
        minutes.append(per_minute)
    assert seen == list(paths)
    return generate_latest(registry).decode(), errors, minutes


def write_rotated(tmp_path, count: int) -> list:
    """`count` gzip files as logrotate leaves them, each with its own mix of label values."""
    paths = []
    for index in range(count):
        path = tmp_path / f"app.log.{index + 2}.gz"
        data = write_log(tmp_path / "plain.tmp", 700 + 150 * index, seed=10 + index)
        path.write_bytes(gzip.compress(data))
        paths.append(path)
    (tmp_path / "plain.tmp").unlink()
    return paths


@pytest.mark.parametrize("jobs", [2, 3, 5])
def test_several_gzip_files_on_workers_give_the_serial_exposition(tmp_path, jobs):
    """One file a worker, taken back in file order: capped label values are admitted as serially."""
    plain = tmp_path / "app.log"
    write_log(plain, 2000, seed=7)
    paths = [plain, *write_rotated(tmp_path, 5)]  # a large plain file cut in ranges among whole .gz files
    serial = scan_of(tmp_path, paths, jobs=1)
    assert 'logmonitor_label_overflows_total{rule="failed"} 0' not in serial[0]  # the cap is reached
    assert serial[1] == []
    assert scan_of(tmp_path, paths, jobs=jobs) == serial
    assert scan_of(tmp_path, list(reversed(paths)), jobs=jobs) == scan_of(tmp_path, list(reversed(paths)), jobs=1)


def test_a_corrupt_gzip_among_good_ones_is_named_and_the_others_counted(tmp_path):
    paths = write_rotated(tmp_path, 4)
    good = scan_of(tmp_path, paths[:1] + paths[2:], jobs=1)
    packed = paths[1].read_bytes()
    paths[1].write_bytes(packed[: len(packed) // 2])  # cut short, as by a full disk
    serial = scan_of(tmp_path, paths, jobs=1)
    assert serial[1] == [
        f"{paths[1]}: compressed data is corrupt or cut short after 49152 bytes "
        "(Compressed file ended before the end-of-stream marker was reached); the lines before that were counted"
    ]
    assert scan_of(tmp_path, paths, jobs=2) == serial
    assert serial[2][0] == good[2][0] and serial[2][2:] == good[2][1:]  # the good files' minutes, whole
