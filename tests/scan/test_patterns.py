"""Patterns: when Hyperscan's report alone counts a rule exactly, and RE2's meaning of classes.

The property test is the one that matters: over lines of CJK text, tabs, vertical tabs and
invalid UTF-8, every rule's count equals RE2's verdict line by line, whether the rule is
counted from Hyperscan's report or confirmed by RE2, and whether it yields events or not.
"""

from __future__ import annotations

import pytest
import re2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from monitor.config import Rule, load_config
from monitor.scan.matcher import Matcher
from monitor.scan.patterns import byte_wise_misses_nothing, counts_exactly, hyperscan_expression
from tests.conftest import REPO


def rule(name: str, pattern: str) -> Rule:
    return Rule(name=name, severity="info", pattern=pattern, examples=["-"])


@pytest.mark.parametrize(
    "pattern",
    [
        "MongoDB操作超时",
        r"分析 (?P<analysis_id>\S+) 进度(?:更新)?: ",
        r"MongoDB操作失败: (?P<error>.*)",
        r'✅ 分析完成状态已更新到数据库: (?P<analysis_id>[^\s\\"]+)',
        r"^\d+ms",  # ASCII-only classes mean the same for bytes and characters, counted or not
        r"(?:ab|cd)+e",
        r"id=[0-9a-f]{24}",
    ],
)
def test_patterns_counted_from_hyperscan_alone(pattern):
    assert counts_exactly(pattern)


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"\((?P<market>[^)]*)\)", "[^)] takes a newline: Hyperscan could match across lines"),
        ("a.b", "one character is up to four bytes"),
        (r"x\S{2}y", "two characters are not two bytes"),
        ("中+文", "byte-wise, + would repeat the last byte of 中"),
        ("(?i)timeout", "case folding"),
        ("timeout$", "its own $: a line can be reported more than once"),
        (r"\btimeout", "word boundaries"),
        ("[[:alpha:]]+x", "Python's parser reads POSIX classes differently from RE2"),
        ("a\\s+b", "\\s takes a newline"),
        ("\ufffd", "RE2 sees invalid bytes as U+FFFD"),
        ("[中文]+", "a class with non-ASCII members is a class of bytes to Hyperscan"),
        ("(?s)a.*b", "dot-all takes newlines"),
    ],
)
def test_patterns_confirmed_by_re2(pattern, why):
    assert not counts_exactly(pattern), why


def test_config_rules_that_are_counted_without_re2():
    config = load_config(REPO / "config.yaml").config
    counted = {r.name for r in config.rules if counts_exactly(r.pattern)}
    assert counted == {r.name for r in config.rules} - {"analysis_started"}  # [^)]* spans lines


def test_config_rules_need_no_invalid_utf8_pass():
    # Every shipped rule's byte-wise match misses no line RE2 matches, so lines of invalid UTF-8 need
    # no extra look (that pass costs about a third of the scan's speed when some rule needs it).
    config = load_config(REPO / "config.yaml").config
    assert all(byte_wise_misses_nothing(r.pattern) for r in config.rules)
    assert not byte_wise_misses_nothing(r"x\S{2}y") and not byte_wise_misses_nothing("a.b")
    assert byte_wise_misses_nothing(r"\((?P<market>[^)]*)\)")


def test_hyperscan_expression_spells_out_re2_spaces():
    assert hyperscan_expression(r"a\S+b", utf8=False) == rb"(?:a[^\t\n\f\r ]+b)[^\n]*$"
    assert hyperscan_expression(r"[^\s\\]x", utf8=False) == rb"(?:[^\t\n\f\r \\]x)[^\n]*$"
    assert hyperscan_expression(r"[\S]", utf8=True) == rb"(?:[\x00-\x08\x0b\x0e-\x1f\x21-\x{10ffff}])[^\n]*$"
    assert hyperscan_expression(r"[]\s]$", utf8=False) == rb"[]\t\n\f\r ]$"
    assert hyperscan_expression(r"\Q\s\E", utf8=False) == rb"(?:\Q\s\E)[^\n]*$"


def test_vertical_tab_inside_a_capture_is_counted():
    # RE2's \S takes \v; Hyperscan's did not, so this line was never reported (on the old code: 0).
    line = "分析 ab\vcd 进度: 50%\n".encode()
    progress = rule("progress", r"分析 (?P<analysis_id>\S+) 进度(?:更新)?: ")
    assert Matcher([progress], event_rules=()).scan(line).counts == {"progress": 1}
    assert [e.captures for e in Matcher([progress]).scan(line).events] == [{"analysis_id": "ab\vcd"}]


PATTERNS = [
    "MongoDB操作超时",
    r"分析 (?P<id>\S+) 进度(?:更新)?: ",
    r"失败: (?P<error>.*)",
    r"\((?P<m>[^)]*)\)",
    r"a.b",
    r"x\S{2}y",
    r'[^\s\\"]+完成',
    r"^ab",
    r"(?:ab|cd)+e",
    r"中+文",
    r"\d+ms",
    r"k\sv",
    r"b$",
]
PIECES = [
    "a", "b", "x", "y", "e", "k", "v", "cd", "中", "文", "分析", " ", "进度", "更新", ": ", "完成", "失败", "(", ")",
    "7", "ms", '"', "\\", "\t", "\v", "\f", "\r", "MongoDB操作超时",
]  # fmt: skip
PIECE_BYTES = [p.encode() for p in PIECES] + [b"\xff", b"\xe4\xb8", b"\x80", b"\xed\xa0\x80"]
LINES = st.lists(st.lists(st.sampled_from(PIECE_BYTES), max_size=12).map(b"".join), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=LINES)
@example(lines=[b"k", b"v", b"(a", b")"])  # across lines: \s and [^)] take the newline between them
@example(lines=[b"x\xe4\xb8y", "x中y".encode(), "a中b".encode(), b"a\xffb"])  # characters are not bytes
@example(lines=[b"x\xe4\xb8ay", b"a\xe4\xb8\xadb\xff"])  # one invalid sequence is one U+FFFD to RE2
@example(lines=["分析 a\vb 进度: ".encode(), b"k\vv", "中中文".encode()])
def test_every_count_is_re2s_verdict_line_by_line(lines):
    rules = [rule(f"r{i}", p) for i, p in enumerate(PATTERNS)]
    regexes = [re2.compile(p) for p in PATTERNS]
    truth = {}
    for line in lines:
        text = line.decode("utf-8", errors="replace")
        for r, regex in zip(rules, regexes, strict=True):
            if regex.search(text):
                truth[r.name] = truth.get(r.name, 0) + 1
    block = b"\n".join(lines) + b"\n"
    counted = _matchers()[0].scan(block)
    assert counted.counts == truth and counted.events == []
    with_events = _matchers()[1].scan(block)
    seen: dict[str, int] = {}
    for event in with_events.events:
        seen[event.rule] = seen.get(event.rule, 0) + 1
    assert seen == truth and with_events.counts == {}


_CACHE: list[Matcher] = []


def _matchers() -> list[Matcher]:
    if not _CACHE:
        rules = [rule(f"r{i}", p) for i, p in enumerate(PATTERNS)]
        _CACHE.extend([Matcher(rules, event_rules=()), Matcher(rules)])
    return _CACHE


def _invalid_lines(block: bytes) -> set[int]:
    import hyperscan

    from monitor.scan.patterns import invalid_utf8_expressions

    expressions = invalid_utf8_expressions()
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(
        expressions=expressions,
        ids=list(range(len(expressions))),
        elements=len(expressions),
        flags=[hyperscan.HS_FLAG_MULTILINE] * len(expressions),
    )
    ends: set[int] = set()
    database.scan(block, match_event_handler=lambda _id, _start, end, _flags, _ctx: ends.add(end))
    return ends


UTF8_PIECES = st.sampled_from(
    [b"a", b"\n", "中".encode(), "é".encode(), "😀".encode(), b"\x80", b"\xbf", b"\xc3", b"\xe4\xb8", b"\xf0\x9f",
     b"\xf0\x9f\x98", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xff", b"\xc2\xa0"]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(pieces=st.lists(UTF8_PIECES, max_size=40))
def test_every_line_of_invalid_utf8_is_reported_once_at_its_end_and_no_other(pieces):
    block = b"".join(pieces) + b"\n"
    expected, start = set(), 0
    for line in block.split(b"\n")[:-1]:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            expected.add(start + len(line))
        start += len(line) + 1
    assert _invalid_lines(block) == expected
