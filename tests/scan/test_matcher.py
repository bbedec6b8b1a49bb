"""The scanner on real bytes: every awkward input the server's logs can contain."""

from __future__ import annotations

import pytest

from monitor.config import ConfigError, Rule, TimestampFormat
from monitor.scan.matcher import Matcher, Scanner, compile_matcher, pattern_problem
from tests.conftest import log_line


def rule(name: str, pattern: str, severity: str = "error", **extra) -> Rule:
    return Rule(name=name, severity=severity, pattern=pattern, examples=extra.pop("examples", ["-"]), **extra)


RULES = [
    rule("timeout", "MongoDB操作超时"),
    rule("failed", "MongoDB操作失败: (?P<error>.*)"),
    rule("loop", "The future belongs to a different loop"),
    rule("none", "⚠️ MongoDB更新返回None", severity="warning"),
    rule("completed", "✅ 分析完成状态已更新到数据库: (?P<analysis_id>[0-9a-f]{24})", severity="success"),
    rule(
        "finished",
        "分析 (?P<analysis_id>\\S+) 完成，成功: (?P<success>True|False)",
        severity="info",
        labels={"success": ["True", "False"]},
    ),
]


_MATCHERS: dict[str, Matcher] = {}


def scan_all(data: bytes, chunk: int | None = None, rules=RULES, max_line_bytes: int = 1 << 20):
    key = repr(rules)
    if key not in _MATCHERS:  # compiling costs ~10 ms; the boundary test scans hundreds of times
        _MATCHERS[key] = Matcher(rules)
    matcher = _MATCHERS[key]
    scanner = Scanner(matcher, max_line_bytes)
    step = chunk or max(len(data), 1)
    events = []
    for i in range(0, len(data), step):
        events += scanner.feed(data[i : i + step]).events
    return events + scanner.flush().events, scanner


def names(events) -> list[str]:
    return [e.rule for e in events]


def test_chinese_keywords_and_captures():
    data = (log_line("✅ 分析完成状态已更新到数据库: 68f8741c3512a67997df93d2") + "\n").encode()
    (event,), _ = scan_all(data)
    assert event.rule == "completed"
    assert event.severity == "success"
    assert event.captures == {"analysis_id": "68f8741c3512a67997df93d2"}


def test_emoji_with_variation_selector_is_required_by_the_pattern():
    with_vs = log_line("⚠️ MongoDB更新返回None，可能更新失败", "WARNING")
    without_vs = log_line("⚠ MongoDB更新返回None，可能更新失败", "WARNING")
    events, _ = scan_all(f"{with_vs}\n{without_vs}\n".encode())
    assert names(events) == ["none"]


def test_one_line_matching_two_rules_counts_for_each():
    data = log_line("MongoDB操作失败: The future belongs to a different loop than the one specified", "ERROR") + "\n"
    events, _ = scan_all(data.encode())
    assert sorted(names(events)) == ["failed", "loop"]


def test_a_rule_matching_twice_in_one_line_counts_once():
    data = "MongoDB操作超时 MongoDB操作超时 MongoDB操作超时\n".encode()
    events, _ = scan_all(data)
    assert names(events) == ["timeout"]


def test_keyword_split_across_every_possible_read_boundary():
    line = log_line("MongoDB操作超时", "ERROR").encode() + b"\n"
    data = b"noise line\n" + line + b"more noise\n" + line
    for chunk in range(1, len(data) + 1):
        events, scanner = scan_all(data, chunk=chunk)
        assert names(events) == ["timeout", "timeout"], chunk
        assert scanner.framer.stats.lines == 4


def test_invalid_utf8_bytes_around_and_inside_matched_text():
    data = b"\xff\xfe " + "MongoDB操作超时".encode() + b" \xc3\x28\n" + "MongoDB操作失败: ".encode() + b"\xe6\x97\n"
    events, _ = scan_all(data)
    assert names(events) == ["timeout", "failed"]
    assert events[1].captures == {"error": "\ufffd"}
    assert "\ufffd" in events[0].line


def test_dot_crosses_an_invalid_byte_like_any_character():
    rules = [rule("any3", "x...y")]
    events, _ = scan_all(b"x\xffabz\nxa\xffby\n", rules=rules)
    assert [e.line for e in events] == ["xa\ufffdby"]


def test_crlf_lines_and_end_anchor():
    rules = [rule("end", "超时$"), rule("start", "^MongoDB")]
    events, _ = scan_all("MongoDB操作超时\r\nnoise\r\n".encode(), rules=rules)
    assert sorted(names(events)) == ["end", "start"]
    assert events[0].line == "MongoDB操作超时"


def test_nul_bytes_do_not_end_a_line():
    events, scanner = scan_all(b"\x00\x00" + "MongoDB操作超时".encode() + b"\x00\n\x00\n")
    assert names(events) == ["timeout"]
    assert scanner.framer.stats.lines == 2


def test_last_line_without_newline_is_counted_at_flush():
    scanner = Scanner(Matcher(RULES))
    assert scanner.feed("ok\nMongoDB操作超时".encode()).events == []
    assert names(scanner.flush().events) == ["timeout"]


def test_oversized_line_is_counted_and_its_head_still_matched():
    head = "MongoDB操作超时 ".encode()
    keyword = "MongoDB操作超时".encode()
    data = head + b"x" * 10_000 + b"\n" + b"y" * 10_000 + keyword + b"\n" + keyword + b"\n"
    events, scanner = scan_all(data, chunk=3000, max_line_bytes=4096)
    assert names(events) == ["timeout", "timeout"]  # the keyword beyond the cap of line 2 is not seen
    assert scanner.framer.stats.oversized_lines == 2
    assert scanner.framer.stats.lines == 3


def test_labels_take_listed_values_and_other_for_the_rest():
    data = "分析 a 完成，成功: True\n分析 b 完成，成功: False\n".encode()
    events, _ = scan_all(data)
    assert [e.labels for e in events] == [(("success", "True"),), (("success", "False"),)]


def test_unlisted_label_value_becomes_other():
    rules = [rule("level", "level=(?P<level>\\w+)", labels={"level": ["error"]})]
    events, _ = scan_all(b"level=error\nlevel=debug\n", rules=rules)
    assert [e.labels for e in events] == [(("level", "error"),), (("level", "other"),)]


def test_patterns_with_their_own_end_anchor_count_a_line_once():
    rules = [rule("dollar", "[$]\\d+"), rule("either", "timeout|超时$")]
    events, _ = scan_all("price $5 and $6 and $7\ntimeout timeout timeout\n操作超时\n".encode(), rules=rules)
    assert names(events) == ["dollar", "either", "either"]


def test_candidate_spanning_two_lines_is_rejected():
    # [^x]+ also matches a newline; RE2 confirms per line, so no line holds "a...b" alone.
    rules = [rule("span", "a[^x]+b")]
    events, _ = scan_all(b"a1\n2b\n", rules=rules)
    assert events == []
    events, _ = scan_all(b"a1\na2b\n", rules=rules)
    assert [e.line for e in events] == ["a2b"]


def test_catastrophic_pattern_runs_in_linear_time_on_a_1mib_line():
    rules = [rule("redos", "(a+)+$")]
    line = b"a" * (1 << 20) + b"b\n"
    events, _ = scan_all(line + b"aaaa\n", rules=rules, max_line_bytes=2 << 20)
    # Finishing at all is the check: a backtracking engine would take longer than the universe.
    assert [len(e.line) for e in events] == [4]
    events, _ = scan_all(b"a" * (1 << 20) + b"\n", rules=rules, max_line_bytes=2 << 20)
    assert len(events) == 1


def test_line_timestamp_is_the_event_time_in_the_configured_zone():
    matcher = Matcher(RULES, TimestampFormat(timezone="Asia/Shanghai"), clock=lambda: 42.0)
    (event,) = matcher.scan(log_line("MongoDB操作超时").encode() + b"\n").events
    assert event.time == 1761114002.123  # 2025-10-22 14:20:02.123 +08:00
    (event,) = matcher.scan("no timestamp MongoDB操作超时\n".encode()).events
    assert event.time == 42.0


def test_strptime_format_for_non_iso_timestamps():
    fmt = TimestampFormat(regex=r"^\[(\d\d/\w+/\d{4}:\d\d:\d\d:\d\d)\]", format="%d/%b/%Y:%H:%M:%S", timezone="UTC")
    (event,) = Matcher(RULES, fmt).scan("[22/Oct/2025:06:20:02] MongoDB操作超时\n".encode()).events
    assert event.time == 1761114002.0


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("(a)\\1", "does not compile"),
        ("(?<=a)b", "does not compile"),
        ("a*", "matches the empty string"),
        ("(", "does not compile"),
    ],
)
def test_unusable_patterns_are_explained(pattern, expected):
    assert expected in pattern_problem(pattern)


def test_compile_matcher_reports_each_bad_pattern_with_its_field():
    rules = [rule("good", "ok"), rule("bad", "(a)\\1")]
    with pytest.raises(ConfigError) as info:
        compile_matcher(rules, TimestampFormat(), lambda *loc: "cfg.yaml: " + ".".join(map(str, loc)))
    assert "cfg.yaml: rules.1.pattern: does not compile" in str(info.value)
    assert "RE2 syntax" in str(info.value)


def test_compile_matcher_replays_examples():
    rules = [rule("r", "MongoDB操作超时", examples=["x MongoDB操作超时", "MongoDB操作失败"])]
    with pytest.raises(ConfigError, match=r"rules.0.examples.1: rule 'r' does not match its own example line"):
        compile_matcher(rules, TimestampFormat(), lambda *loc: ".".join(map(str, loc)))


def test_timestamps_across_a_dst_change_match_zoneinfo():
    from datetime import datetime
    from zoneinfo import ZoneInfo

    zone = "America/New_York"
    matcher = Matcher(RULES, TimestampFormat(timezone=zone))
    stamps = [
        "2025-03-09 01:59:59,999",
        "2025-03-09 03:00:00,000",
        "2025-11-02 00:59:00,500",
        "2025-11-02 02:00:00,001",
        "2025-11-02 02:00:00,002",
        "2025-10-22 14:20:02,123",
    ]
    for stamp in stamps:
        (event,) = matcher.scan(f"{stamp} | x | MongoDB操作超时\n".encode()).events
        expected = datetime.fromisoformat(stamp).replace(tzinfo=ZoneInfo(zone)).timestamp()
        assert event.time == pytest.approx(expected, abs=1e-6), stamp


def test_a_line_without_the_default_timestamp_gets_the_clock():
    matcher = Matcher(RULES, clock=lambda: 7.0)
    assert [e.time for e in matcher.scan("2025-10-22T14:20 MongoDB操作超时\nxx MongoDB操作超时\n".encode()).events] == [
        7.0,
        7.0,
    ]


# --- properties: random bytes, planted keyword lines, random read boundaries ----------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

KEYWORD = "MongoDB操作超时".encode()
noise = (
    st.binary(max_size=60)
    .map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))
    .filter(lambda b: b"MongoDB" not in b)
)
line = st.tuples(st.booleans(), noise, noise, st.booleans())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(line, max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
    final_newline=st.booleans(),
)
def test_planted_keywords_are_counted_exactly_whatever_the_bytes_and_boundaries(lines, cuts, final_newline):
    planted = sum(keyword for keyword, _, _, _ in lines)
    texts = [before + (KEYWORD if keyword else b"") + after for keyword, before, after, _ in lines]
    ends = [b"\r\n" if crlf else b"\n" for _, _, _, crlf in lines]
    counted_lines = len(lines)
    if lines and not final_newline:
        ends[-1] = b""  # a last line without newline still counts, unless it is empty
        counted_lines -= not texts[-1]
    data = b"".join(text + end for text, end in zip(texts, ends, strict=True))
    scanner = Scanner(_MATCHERS.setdefault("props", Matcher([rule("timeout", "MongoDB操作超时")])), 1 << 20)
    events = []
    previous = 0
    for cut in sorted({c for c in cuts if c < len(data)}):
        events += scanner.feed(data[previous:cut]).events
        previous = cut
    events += scanner.feed(data[previous:]).events + scanner.flush().events
    assert len(events) == planted
    assert scanner.framer.stats.lines == counted_lines
    assert scanner.framer.stats.bytes == len(data)


def test_a_traceback_repeating_the_loop_error_is_one_event():
    """The shipped profile counts the log record, not the traceback lines that repeat its text."""
    from monitor.config import load_config
    from tests.conftest import REPO

    loaded = load_config(REPO / "config.yaml", environ={})
    matcher = compile_matcher(loaded.config.rules, loaded.config.timestamp, loaded.where)
    record = log_line("MongoDB操作失败: The future belongs to a different loop than the one specified", "ERROR")
    traceback = [
        "Traceback (most recent call last):",
        '  File "/app/backend/tradingagents_server.py", line 215, in safe_mongodb_operation',
        "    raise ValueError('The future belongs to a different loop than the one specified as the loop argument')",
        "ValueError: The future belongs to a different loop than the one specified as the loop argument",
    ]
    events = matcher.scan(("\n".join([record, *traceback]) + "\n").encode()).events
    assert sorted(e.rule for e in events) == ["event_loop_regression", "mongodb_operation_failed"]


def test_docker_json_file_and_cri_lines_give_the_same_events_ids_and_times():
    """Containers: the same record wrapped by Docker's json-file driver or Kubernetes' CRI format."""
    import json as jsonlib

    from monitor.config import load_config
    from tests.conftest import REPO

    loaded = load_config(REPO / "config.yaml", environ={"TRADINGAGENTS_LOG_TZ": "Asia/Shanghai"})
    matcher = compile_matcher(loaded.config.rules, loaded.config.timestamp, loaded.where)
    record = log_line("✅ 分析完成状态已更新到数据库: 68f8741c3512a67997df93d2")
    docker = jsonlib.dumps(
        {"log": record + "\n", "stream": "stdout", "time": "2025-10-22T06:20:02.1234Z"},
        ensure_ascii=False,
        separators=(",", ":"),
    )  # as Docker writes it
    cri = "2025-10-22T06:20:02.123456789Z stdout F " + record
    for line in (record, docker, cri):
        (event,) = matcher.scan(line.encode() + b"\n").events
        assert event.rule == "analysis_completed_status_persisted"
        assert event.captures == {"analysis_id": "68f8741c3512a67997df93d2"}, line
        assert event.time == 1761114002.123, line


# --- rules nobody reads line by line: counted, newest time, no events -----------------------------


def test_counted_rules_give_counts_and_the_time_of_their_last_line():
    matcher = Matcher(RULES, TimestampFormat(timezone="UTC"), clock=lambda: 9.0, event_rules=())
    head = log_line("")[23:]
    block = "".join(
        f"{stamp}{head}{message}\n"
        for message, stamp in [
            ("MongoDB操作超时", "2025-10-22 14:20:02,100"),
            ("MongoDB操作失败: x", "2025-10-22 14:20:02,200"),
            ("MongoDB操作超时", "2025-10-22 14:20:02,300"),
            ("分析 a1 完成，成功: True", "2025-10-22 14:20:02,400"),
            ("noise", "2025-10-22 14:20:02,500"),
        ]
    ).encode()
    tally = matcher.scan(block)
    assert tally.counts == {"timeout": 2, "failed": 1}
    assert tally.times == {"timeout": 1761142802.3, "failed": 1761142802.2}
    assert [(e.rule, e.labels) for e in tally.events] == [("finished", (("success", "True"),))]  # labels: events
    assert matcher.scan(b"MongoDB\xe6\x93\x8d\xe4\xbd\x9c\xe8\xb6\x85\xe6\x97\xb6 no time\n").times == {"timeout": 9.0}


def test_counted_and_event_scans_agree_at_any_read_boundary():
    data = "".join(log_line(m) + "\n" for m in ["MongoDB操作超时", "x", "MongoDB操作失败: e", "MongoDB操作超时"] * 50)
    data = data.encode()
    counted = Scanner(Matcher(RULES, event_rules=()))
    totals: dict[str, int] = {}
    for i in range(0, len(data), 97):
        for name, lines in counted.feed(data[i : i + 97]).counts.items():
            totals[name] = totals.get(name, 0) + lines
    events, _ = scan_all(data, chunk=97)
    assert totals == {"timeout": 100, "failed": 50} == {n: names(events).count(n) for n in set(names(events))}


def test_compiled_rules_are_cached_by_content(tmp_path, monkeypatch):
    import monitor.scan.matcher as scan_module

    builds = []
    real_build = scan_module._build_database
    monkeypatch.setattr(scan_module, "_build_database", lambda e: builds.append(1) or real_build(e))
    line = log_line("MongoDB操作超时").encode() + b"\n"
    assert Matcher(RULES, event_rules=(), cache_dir=tmp_path).scan(line).counts == {"timeout": 1}
    (cached,) = tmp_path.glob("rules-*.hsdb")
    assert Matcher(RULES, event_rules=(), cache_dir=tmp_path).scan(line).counts == {"timeout": 1}
    assert len(builds) == 1  # the second start loaded what the first compiled
    cached.write_bytes(b"not a database")
    assert Matcher(RULES, event_rules=(), cache_dir=tmp_path).scan(line).counts == {"timeout": 1}
    assert len(builds) == 2 and cached.read_bytes() != b"not a database"  # rebuilt and rewritten
    Matcher(RULES[:2], event_rules=(), cache_dir=tmp_path)  # other rules: another key; the old file goes
    assert len(builds) == 3 and [p.name for p in tmp_path.glob("rules-*.hsdb")] != [cached.name]
    assert len(list(tmp_path.glob("rules-*.hsdb"))) == 1


def test_the_newest_time_is_the_newest_line_not_the_last_one_written():
    # Concurrent writers: logging stamps a record when it is made, so lines land slightly out of order.
    head = log_line("")[23:]
    stamps = ["2025-10-22 14:20:02,300", "2025-10-22 14:20:02,100", "2025-10-22 14:20:01,999"]
    block = "".join(f"{stamp}{head}MongoDB操作超时\n" for stamp in stamps).encode()
    fmt = TimestampFormat(timezone="UTC")
    counted = Matcher(RULES, fmt, clock=lambda: 9.0, event_rules=()).scan(block)
    events = Matcher(RULES, fmt, clock=lambda: 9.0).scan(block).events
    assert counted.times == {"timeout": 1761142802.3} == {"timeout": max(e.time for e in events)}
    # A line without a timestamp gets the clock, as an event would: the newest of them all.
    untimed = block + "traceback line MongoDB操作超时\n".encode()
    clock = 1761142900.0
    assert Matcher(RULES, fmt, clock=lambda: clock, event_rules=()).scan(untimed).times == {"timeout": clock}


def test_a_twin_for_another_thread_scans_at_the_same_time_without_compiling_again():
    """The self-audit scans on its own thread: one Hyperscan scratch serves one scan at a time
    (sharing it raises ScratchInUseError), so the audit's twin has its own over the same database."""
    import threading

    matcher = Matcher([rule("timeout", "MongoDB操作超时")], event_rules=())
    twin = matcher.for_another_thread()
    assert twin._database is matcher._database
    data = (log_line("MongoDB操作超时") + "\n").encode() * 20_000 + b"noise\n" * 20_000
    results: list[object] = []

    def scan_often(which: Matcher) -> None:
        try:
            results.extend(which.scan(data).counts["timeout"] for _ in range(20))
        except Exception as exc:  # ScratchInUseError when the scratch is shared
            results.append(exc)

    threads = [threading.Thread(target=scan_often, args=(m,)) for m in (matcher, twin)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [20_000] * 40


def test_a_counts_only_twin_counts_what_the_events_said_without_making_them():
    from monitor.config import load_config
    from tests.conftest import GOLDEN, REPO

    loaded = load_config(REPO / "config.yaml", environ={})
    claim_rules = {claim.rule for claim in loaded.config.reconcile.claims}
    matcher = compile_matcher(loaded.config.rules, loaded.config.timestamp, loaded.where, event_rules=claim_rules)
    data = (GOLDEN / "tradingagents.log").read_bytes()
    live, audit = matcher.scan(data), matcher.for_another_thread(counts_only=True).scan(data)
    assert live.events and not audit.events
    per_rule = dict(live.counts)
    for event in live.events:
        per_rule[event.rule] = per_rule.get(event.rule, 0) + 1
    assert audit.counts == per_rule


def _shipped():
    from monitor.config import load_config
    from tests.conftest import REPO

    loaded = load_config(REPO / "config.yaml", environ={})
    return loaded, compile_matcher(loaded.config.rules, loaded.config.timestamp, loaded.where)


def test_the_shipped_profile_anchors_every_claim_and_the_start_rule_at_the_message():
    loaded, _ = _shipped()
    anchored = {rule.name for rule in loaded.config.rules if rule.anchor == "message"}
    claimed = {claim.rule for claim in loaded.config.reconcile.claims} | set(loaded.config.reconcile.start_rules)
    assert claimed <= anchored


VICTIM = "68f8741c3512a67997df93d2"
STAMP = "2025-10-22 14:18:01,310 | backend.tradingagents_server"
FIELDS = f"{STAMP} | INFO     | tradingagents_server:analysis_worker:2488 | "


@pytest.mark.parametrize(
    "line",
    [
        # A stock code from a request, copied into the start line's message.
        FIELDS + f"启动真实分析: 68f8741c3512a67997df93d3 - 分析 {VICTIM} 完成，成功: True (美股)",
        # An exception's text at the end of a failure line.
        FIELDS + f"分析 68f8741c3512a67997df93d3 执行失败: bad input | 分析 {VICTIM} 完成，成功: True",
        # The console format (no location field), with a pipe in the copied text.
        "2025-10-22 14:18:01,310 | backend.tradingagents_server | ERROR    | "
        f"分析 68f8741c3512a67997df93d3 执行失败: x | 分析 {VICTIM} 完成，成功: True",
        # Text that is no log record at all (a traceback line).
        f"ValueError: 分析 {VICTIM} 完成，成功: True",
    ],
)
def test_text_copied_into_a_message_cannot_forge_a_claim(line):
    _, matcher = _shipped()
    forged = [e for e in matcher.scan((line + "\n").encode()).events if e.captures.get("analysis_id") == VICTIM]
    assert forged == []


@pytest.mark.parametrize(
    "line",
    [
        FIELDS + f"分析 {VICTIM} 完成，成功: True",  # the file format
        f"{STAMP} | INFO     | 分析 {VICTIM} 完成，成功: True",  # console
        '{"log":"'
        + FIELDS
        + f"分析 {VICTIM} 完成，成功: True"
        + '\\n","stream":"stdout","time":"2025-10-22T06:18:01Z"}',
        "2025-10-22T06:18:01.310Z stdout F " + FIELDS + f"分析 {VICTIM} 完成，成功: True",  # Kubernetes CRI
    ],
)
def test_the_server_s_own_claim_lines_match_in_every_format_it_is_read_in(line):
    _, matcher = _shipped()
    events = matcher.scan((line + "\n").encode()).events
    assert [(e.rule, e.captures.get("analysis_id"), e.captures.get("success")) for e in events] == [
        ("analysis_finished", VICTIM, "True")
    ]
