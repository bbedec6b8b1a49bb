"""Minutes of matched lines: the same whatever the reads, continuation lines with the line before."""

from __future__ import annotations

import os
from datetime import UTC

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import Rule, TimestampFormat
from monitor.scan.matcher import Matcher, Scanner
from monitor.scan.minutes import UNTIMED

RULES = [
    # Counted from Hyperscan's report, confirmed by RE2, and read line by line (events): all three paths.
    Rule(name="timeout", severity="error", pattern="MongoDB操作超时", examples=["-"]),
    Rule(name="failed", severity="error", pattern=r"MongoDB操作失败: \w+", examples=["-"]),
    Rule(name="done", severity="success", pattern=r"完成，成功: (?P<success>True|False)", examples=["-"]),
]
_MATCHER = Matcher(RULES, event_rules={"done"})
T0 = 1_761_113_940  # 2025-10-22 06:19:00 UTC, a minute boundary


def stamp(seconds: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(T0 + seconds, UTC).strftime("%Y-%m-%d %H:%M:%S,%f")[:23]


def scan(data: bytes, cuts: list[int] = (), matcher: Matcher = _MATCHER):
    scanner = Scanner(matcher, minutes=True)
    minutes: dict[tuple[str, int], int] = {}
    blind: list[int] = []
    previous = 0
    for cut in [*sorted({c for c in cuts if 0 < c < len(data)}), len(data)]:
        tally = scanner.feed(data[previous:cut])
        previous = cut
        for key, n in tally.minutes.items():
            minutes[key] = minutes.get(key, 0) + n
        blind += tally.blind
    tally = scanner.flush()
    for key, n in tally.minutes.items():
        minutes[key] = minutes.get(key, 0) + n
    return minutes, blind + tally.blind, scanner.carry.minute


def test_each_rule_counts_in_the_minute_of_its_own_line():
    data = (
        f"{stamp(1)} | x | ERROR | MongoDB操作超时\n"
        f"{stamp(59.999)} | x | ERROR | MongoDB操作失败: boom\n"
        f"{stamp(60)} | x | INFO | 分析 a 完成，成功: True\n"
        f"{stamp(61)} | x | ERROR | MongoDB操作超时\n"
    ).encode()
    minute = T0 // 60
    assert scan(data)[0] == {
        ("timeout", minute): 1,
        ("failed", minute): 1,
        ("done", minute + 1): 1,
        ("timeout", minute + 1): 1,
    }


def test_a_continuation_line_goes_with_the_timestamped_line_before_it_even_across_reads():
    data = (
        f"{stamp(59)} | x | ERROR | something failed\n"
        "Traceback (most recent call last):\n"
        "pymongo.errors: MongoDB操作超时\n"
        f"{stamp(61)} | x | INFO | fine\n"
    ).encode()
    for cut in range(len(data)):
        assert scan(data, [cut])[0] == {("timeout", T0 // 60): 1}


def test_a_match_before_any_timestamp_is_untimed_and_blinds_up_to_the_next_timestamp():
    data = (f"  more of a traceback: MongoDB操作超时\n{stamp(125)} | x | INFO | fine\n").encode()
    minutes, blind, newest = scan(data)
    assert minutes == {("timeout", UNTIMED): 1}
    assert blind == [T0 // 60 + 2]
    assert newest == T0 // 60 + 2


def test_other_layouts_and_zones_are_read_by_the_configured_format():
    fmt = TimestampFormat(regex=r"^(\S+)", format="%Y-%m-%dT%H:%M:%S", timezone="Asia/Shanghai")
    matcher = Matcher(RULES, fmt)
    data = b"2025-10-22T14:19:30 MongoDB\xe6\x93\x8d\xe4\xbd\x9c\xe8\xb6\x85\xe6\x97\xb6\n"
    assert scan(data, matcher=matcher)[0] == {("timeout", T0 // 60): 1}  # 14:19 in Shanghai is 06:19 UTC


LINE_KINDS = st.sampled_from(["timeout", "failed", "done", "plain", "continuation", "continuation-timeout"])


@settings(max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "60")), deadline=None)
@given(
    kinds=st.lists(st.tuples(LINE_KINDS, st.integers(0, 400)), max_size=60),
    cuts=st.lists(st.integers(0, 8000), max_size=12),
)
def test_minutes_do_not_depend_on_where_the_reads_cut_the_file(kinds, cuts):
    lines, seconds = [], 0.0
    for kind, step in kinds:
        seconds += step / 10
        text = {
            "timeout": f"{stamp(seconds)} | x | ERROR | MongoDB操作超时",
            "failed": f"{stamp(seconds)} | x | ERROR | MongoDB操作失败: e{step}",
            "done": f"{stamp(seconds)} | x | INFO | 分析 a 完成，成功: True",
            "plain": f"{stamp(seconds)} | x | INFO | progress {step}",
            "continuation": f"  File x, line {step}",
            "continuation-timeout": "ValueError: MongoDB操作超时",
        }[kind]
        lines.append(text)
    data = "".join(line + "\n" for line in lines).encode()
    assert scan(data, cuts) == scan(data)
    assert sum(scan(data)[0].values()) == sum(
        k in ("timeout", "failed", "done", "continuation-timeout") for k, _ in kinds
    )
