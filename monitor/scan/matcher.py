"""Scan: every rule at once over blocks of complete lines; counts and events out.

Matching is two-stage. Hyperscan runs all rules together over a whole block
in one pass (GB/s, linear time whatever the pattern), and reports the lines
where a rule matches. What happens to a reported line depends on who reads it:

- A rule whose lines nobody reads one by one (no labels, no claim) and whose
  Hyperscan match is provably RE2's (`patterns.counts_exactly`: literals,
  `\\S+`, `.*` and the like) is counted straight from Hyperscan's report: no
  decoding, no RE2, no object per line. Its newest time is the newest of its
  lines' (asctime heads compared as bytes; only the newest is parsed).
- Any other rule's lines are confirmed by RE2, the authority: Hyperscan is then
  a prefilter, and a cross-line or byte-level candidate RE2 rejects is dropped.
  Only a rule someone reads line by line (`event_rules`: labels, claims) gets
  its captures, timestamp and an `Event` per line.

Both engines guarantee linear time, so a user pattern like `(a+)+$` cannot
stall the sidecar. Rules RE2 confirms are compiled twice into the Hyperscan
database, once in UTF-8 mode (so `.` and classes see characters, as RE2 does)
and once byte-wise (so `.` also crosses invalid UTF-8 bytes, which RE2 sees as
U+FFFD): the union of both is the candidate set. Rules counted from the report
are compiled byte-wise only, which is what makes them exact.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import hyperscan
import re2

from monitor.config import ConfigError, Rule, TimestampFormat
from monitor.scan.lines import Block, LineFramer
from monitor.scan.minutes import MinuteCarry, MinuteReader
from monitor.scan.patterns import (
    byte_wise_misses_nothing,
    compile_re2,
    counts_exactly,
    hyperscan_expression,
    invalid_utf8_expressions,
    pattern_problem,
    re2_reason,
)

OTHER = "other"  # label value for a capture outside the rule's listed values
MAX_LABEL_VALUE = 100  # characters of a capped label's value
EVERY_RULE = None  # event_rules value: every rule's lines become events (verify, explain, tests)


@dataclass(frozen=True)
class Event:
    """One line matched by one rule (a line matching two rules is two events)."""

    rule: str
    severity: str
    line: str
    captures: dict[str, str] = field(hash=False)
    labels: tuple[tuple[str, str], ...]
    time: float  # the line's own timestamp, or the scan time when it has none
    timed: bool = True  # False: `time` is the scan time, the line's own could not be read


@dataclass(frozen=True)
class Tally:
    """What a scan found: events of the rules read line by line, counts and newest times of the others.

    Built by one scan and handed on; nobody keeps a reference to the dicts.
    """

    events: list[Event] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # rule -> lines matched (rules without events)
    times: dict[str, float] = field(default_factory=dict)  # rule -> time of its last such line
    # Only when scanned with a MinuteCarry (the self-audit): (rule, minute of the line's own time) ->
    # lines, for every rule; and minutes up to which an untimed line makes the counts unknowable.
    minutes: dict[tuple[str, int], int] = field(default_factory=dict)
    blind: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.counts)

    def rules(self) -> set[str]:
        """Every rule that matched some line."""
        return {event.rule for event in self.events} | set(self.counts)


@dataclass(frozen=True)
class _Compiled:
    rule: Rule
    regex: re2._Regexp
    regex_bytes: re2._Regexp
    label_values: tuple[tuple[str, frozenset[str] | None], ...]  # None: capped, open-ended
    events: bool  # someone reads this rule's lines one by one: captures, time, an Event each
    counted: bool  # counted from Hyperscan's report alone, without RE2

    def labels(self, captures: dict[str, str]) -> tuple[tuple[str, str], ...]:
        # Listed values are checked here; a capped label passes its (shortened) value on and
        # the metrics stage, which owns the series, admits it or counts it as "other".
        pairs = []
        for name, allowed in self.label_values:
            value = captures.get(name) or ""
            if allowed is None:
                pairs.append((name, value[:MAX_LABEL_VALUE]))
            else:
                pairs.append((name, value if value in allowed else OTHER))
        return tuple(pairs)


class Matcher:
    """All rules compiled into one Hyperscan database plus one RE2 regex each.

    `event_rules` names the rules whose lines become `Event`s (EVERY_RULE: all of them); the
    others are only counted. A rule with labels always gets events: its labels come from them.

    >>> from monitor.config import Rule
    >>> rule = Rule(name="timeout", severity="error", pattern="MongoDB操作超时", examples=["MongoDB操作超时"])
    >>> Matcher([rule], event_rules=()).scan("x | MongoDB操作超时\\n".encode()).counts
    {'timeout': 1}
    """

    _UTF8 = hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_UCP | hyperscan.HS_FLAG_MULTILINE
    _BYTES = hyperscan.HS_FLAG_MULTILINE

    def __init__(
        self,
        rules: Sequence[Rule],
        timestamp: TimestampFormat | None = None,
        clock: Callable[[], float] = time.time,
        event_rules: Collection[str] | None = EVERY_RULE,
        cache_dir: Path | None = None,
    ) -> None:
        self._rules = [_compile_rule(rule, event_rules) for rule in rules]
        expressions = _expressions(self._rules)
        self._expression_rule = [index for _, _, index in expressions]
        self._counted_expression = [index >= 0 and self._rules[index].counted for _, _, index in expressions]
        self._confirmed_rules = {i for i, compiled in enumerate(self._rules) if not compiled.counted}
        self._database = _load_or_build(expressions, cache_dir)
        self._clock = clock
        self._timestamp_format = timestamp or TimestampFormat()
        self._timestamps = _TimestampReader(self._timestamp_format)
        self._minutes = MinuteReader(self._timestamps.read, self._timestamps.default_layout)
        self._scratch: hyperscan.Scratch | None = None  # None: the database's own

    def for_another_thread(self, counts_only: bool = False) -> Matcher:
        """The same compiled rules for another thread (the self-audit's): a Hyperscan scratch and the
        time caches serve one scan at a time, the database any number. Costs no compilation.
        `counts_only`: no `Event`s (lines RE2 confirms are still confirmed, then only counted)."""
        twin = copy.copy(self)
        if counts_only:
            twin._rules = [dataclasses.replace(compiled, events=False) for compiled in self._rules]
        twin._scratch = hyperscan.Scratch(self._database)
        twin._timestamps = _TimestampReader(self._timestamp_format)
        twin._minutes = MinuteReader(twin._timestamps.read, twin._timestamps.default_layout)
        return twin

    @property
    def rules(self) -> list[Rule]:
        return [compiled.rule for compiled in self._rules]

    def line_time(self, line: bytes) -> float | None:
        """The line's own time (Unix seconds) as the configured timestamp format reads it, or None."""
        return self._timestamps.read(line)

    def scan(self, block: Block | bytes, tally: Tally | None = None, carry: MinuteCarry | None = None) -> Tally:
        """Add what a block of complete LF-terminated lines holds to `tally` (a new one by default);
        with `carry` (the file's time so far), also the matched lines' minutes."""
        tally = Tally() if tally is None else tally
        buf, start, stop = block if isinstance(block, Block) else (block, 0, len(block))
        hits: list[tuple[int, int]] = []
        on_match = hits.append

        def on_hit(expression: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
            on_match((end, expression))

        view = memoryview(buf)[start:stop] if start or stop != len(buf) else buf
        self._database.scan(view, match_event_handler=on_hit, scratch=self._scratch)
        if not hits:
            if carry is not None:
                self._minutes.assign(buf, start, stop, {}, carry, tally.minutes, tally.blind)
            return tally
        counted: dict[int, list[int]] = {}  # rule -> where each line it matched ends (its count)
        timed: dict[int, list[int]] | None = None if carry is None else {}  # event rules' line ends
        candidates: dict[int, set[int]] = {}  # line end -> rules RE2 must confirm there
        rule_of, counted_expression = self._expression_rule, self._counted_expression
        for end, expression in hits:
            rule = rule_of[expression]
            if rule == _INVALID_UTF8:
                if self._confirmed_rules:  # RE2 tries every rule it confirms on a line of invalid UTF-8
                    candidates.setdefault(start + end, set()).update(self._confirmed_rules)
            elif counted_expression[expression]:
                # Extended to the line's end and compiled once: one hit per matching line, at its "\n".
                counted.setdefault(rule, []).append(start + end)
            else:
                # Most hits end right at their line's end, where find() returns at once; a pattern
                # with its own `$` can hit several times in one line.
                line_end = buf.find(b"\n", start + end - 1, stop)
                candidates.setdefault(stop if line_end < 0 else line_end, set()).add(rule)
        for line_end in sorted(candidates):
            line_start = buf.rfind(b"\n", start, line_end) + 1 or start
            rules = sorted(candidates[line_end])
            self._confirm(buf[line_start:line_end], line_end, rules, counted, tally, timed)
        if carry is not None:
            ends_by_rule = {self._rules[r].rule.name: ends for r, ends in counted.items()}
            for rule, ends in (timed or {}).items():
                ends_by_rule.setdefault(self._rules[rule].rule.name, []).extend(ends)
            self._minutes.assign(buf, start, stop, ends_by_rule, carry, tally.minutes, tally.blind)
        for rule, ends in counted.items():
            name = self._rules[rule].rule.name
            tally.counts[name] = tally.counts.get(name, 0) + len(ends)
            newest = self._timestamps.newest(buf, start, ends, self._clock)
            tally.times[name] = max(tally.times.get(name, 0.0), newest)
        return tally

    def _confirm(
        self,
        raw: bytes,
        line_end: int,
        rules: list[int],
        counted: dict[int, list[int]],
        tally: Tally,
        timed: dict[int, list[int]] | None,
    ) -> None:
        try:
            line = raw.decode("utf-8")
            subject: bytes | str = raw  # RE2 is several times faster on bytes than on str
        except UnicodeDecodeError:
            # Invalid bytes become U+FFFD, which `.` and classes match like any character.
            subject = line = raw.decode("utf-8", errors="replace")
        when: float | None = None
        own_time = False
        for rule in rules:
            compiled = self._rules[rule]
            match = (compiled.regex_bytes if subject is raw else compiled.regex).search(subject)
            if match is None:
                continue
            if not compiled.events:
                counted.setdefault(rule, []).append(line_end)
                continue
            if timed is not None:
                timed.setdefault(rule, []).append(line_end)
            if when is None:
                read = self._timestamps.read(raw)
                when, own_time = (read, True) if read else (self._clock(), False)
            captures = {_text(k): _text(v) for k, v in match.groupdict().items() if v is not None}
            tally.events.append(
                Event(
                    rule=compiled.rule.name,
                    severity=compiled.rule.severity.value,
                    line=line,
                    captures=captures,
                    labels=compiled.labels(captures),
                    time=when,
                    timed=own_time,
                )
            )


class Scanner:
    """A framer and a matcher together: byte chunks of one stream in, tallies out."""

    def __init__(self, matcher: Matcher, max_line_bytes: int = 1 << 20, minutes: bool = False) -> None:
        self.matcher = matcher
        self.framer = LineFramer(max_line_bytes)
        self.carry = MinuteCarry() if minutes else None  # the file's time so far, for Tally.minutes

    def feed(self, data: bytes) -> Tally:
        tally = Tally()
        for block in self.framer.feed(data):
            self.matcher.scan(block, tally, self.carry)
        return tally

    def flush(self) -> Tally:
        tally = Tally()
        for block in self.framer.flush():
            self.matcher.scan(block, tally, self.carry)
        return tally


def check_examples(matcher: Matcher, where: Callable[..., str]) -> None:
    """Every rule must match each of its own example lines; raise ConfigError otherwise."""
    problems = []
    for index, rule in enumerate(matcher.rules):
        for example_index, example in enumerate(rule.examples):
            if rule.name not in matcher.scan(example.encode("utf-8") + b"\n").rules():
                problems.append(
                    f"{where('rules', index, 'examples', example_index)}: rule {rule.name!r} does not match "
                    "its own example line; fix the pattern or the example"
                )
    if problems:
        raise ConfigError("\n".join(problems))


def compile_matcher(
    rules: Sequence[Rule],
    timestamp: TimestampFormat,
    where: Callable[..., str],
    clock: Callable[[], float] = time.time,
    event_rules: Collection[str] | None = EVERY_RULE,
    cache_dir: Path | None = None,
) -> Matcher:
    """Compile and self-test the rules; every problem becomes one ConfigError naming the field."""
    problems = []
    for index, rule in enumerate(rules):
        problem = pattern_problem(rule.pattern)
        if problem:
            problems.append(f"{where('rules', index, 'pattern')}: {problem}")
    try:
        compile_re2(timestamp.regex, quiet=True)
    except re2.error as exc:
        problems.append(f"{where('timestamp', 'regex')}: does not compile: {re2_reason(exc)}")
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        matcher = Matcher(rules, timestamp, clock, event_rules, cache_dir)
    except hyperscan.error:
        problems = [
            f"{where('rules', index, 'pattern')}: {problem}"
            for index, rule in enumerate(rules)
            if (problem := _hyperscan_problem(rule.pattern))
        ]
        raise ConfigError("\n".join(problems) or "rules: the patterns cannot be compiled together") from None
    check_examples(matcher, where)
    return matcher


def _hyperscan_problem(pattern: str) -> str | None:
    """Only asked when the whole database failed to compile: which rule is the culprit?"""
    for flags in (Matcher._UTF8, Matcher._BYTES):
        try:
            _build_database([(hyperscan_expression(pattern, flags == Matcher._UTF8), flags, 0)])
        except hyperscan.error as exc:
            return f"cannot be compiled for multi-pattern matching: {exc}; simplify the pattern"
    return None


def _compile_rule(rule: Rule, event_rules: Collection[str] | None) -> _Compiled:
    labels = tuple(
        (name, None if isinstance(values, int) else frozenset(values)) for name, values in rule.labels.items()
    )
    events = event_rules is EVERY_RULE or rule.name in event_rules or bool(labels)
    # Hyperscan gets the rule's own pattern, a prefilter; RE2 confirms where the message starts
    # (`anchor: message`): a prefix of fields in the Hyperscan database costs seconds to compile.
    pattern = rule.match_pattern
    counted = not events and pattern == rule.pattern and counts_exactly(pattern)
    return _Compiled(rule, compile_re2(pattern), compile_re2(pattern.encode()), labels, events, counted)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


_INVALID_UTF8 = -1  # "rule index" of the expressions reporting lines of invalid UTF-8


def _expressions(rules: Sequence[_Compiled]) -> list[tuple[bytes, int, int]]:
    """(expression, flags, rule index) for the database: byte-wise only for counted rules, and the
    invalid UTF-8 detector when some rule is confirmed by RE2."""
    out = []
    for flags in (Matcher._UTF8, Matcher._BYTES):
        for index, compiled in enumerate(rules):
            if flags == Matcher._BYTES or not compiled.counted:
                out.append((hyperscan_expression(compiled.rule.pattern, flags == Matcher._UTF8), flags, index))
    if any(not compiled.counted and not byte_wise_misses_nothing(compiled.rule.pattern) for compiled in rules):
        out += [(expression, Matcher._BYTES, _INVALID_UTF8) for expression in invalid_utf8_expressions()]
    return out


def _build_database(expressions: Sequence[tuple[bytes, int, int]]) -> hyperscan.Database:
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(
        expressions=[e for e, _, _ in expressions],
        ids=list(range(len(expressions))),
        elements=len(expressions),
        flags=[f for _, f, _ in expressions],
    )
    return database


def _give_back_compile_memory() -> None:
    """Compiling takes ~7 MB of heap that glibc keeps after it is freed: a first start would stay
    that much bigger than a restart, which loads the cache. malloc_trim hands it back (glibc only)."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _load_or_build(expressions: Sequence[tuple[bytes, int, int]], cache_dir: Path | None) -> hyperscan.Database:
    """The compiled database, from `cache_dir` when it holds one for exactly these expressions.

    Compiling takes ~0.1-0.2 s of every start; loading a serialized database, ~1 ms. The key
    covers the expressions, their flags and order, and the Hyperscan version; anything the
    cache cannot give back (missing, truncated, another platform) is compiled and written anew.
    """
    if cache_dir is None:
        return _build_database(expressions)
    key = hashlib.sha256(repr((hyperscan.__version__, os.uname().machine, list(expressions))).encode()).hexdigest()
    path = cache_dir / f"rules-{key[:32]}.hsdb"
    try:
        stored = path.read_bytes()
        # Hyperscan does not check what it deserializes: a digest guards against a torn or foreign
        # file, and a scan of one line against a database this machine cannot run.
        if hashlib.sha256(stored[32:]).digest() == stored[:32]:
            database = hyperscan.loadb(stored[32:], mode=hyperscan.HS_MODE_BLOCK)
            database.scratch = hyperscan.Scratch(database)  # compile() allocates one; loadb() does not
            database.scan(b"\n")
            return database
    except (OSError, hyperscan.error, TypeError, ValueError):
        pass
    database = _build_database(expressions)
    _give_back_compile_memory()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in cache_dir.glob("rules-*.hsdb"):
            stale.unlink(missing_ok=True)
        temporary = path.with_suffix(f".tmp{os.getpid()}")
        serialized = hyperscan.dumpb(database)
        temporary.write_bytes(hashlib.sha256(serialized).digest() + serialized)
        temporary.replace(path)
    except OSError:
        pass  # a cache we cannot write costs a compile per start, nothing else
    return database


_EPOCH = datetime(1970, 1, 1)
_ISO_FORMATS = frozenset(
    {
        "%Y-%m-%d %H:%M:%S,%f",
        "%Y-%m-%d %H:%M:%S.%f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S.%f%z",
        "%Y-%m-%dT%H:%M:%S%z",
    }
)


class _TimestampReader:
    """Reads a matched line's own time; caches the last second since lines come in order."""

    def __init__(self, fmt: TimestampFormat) -> None:
        self._regex = compile_re2(fmt.regex.encode())
        self._format = fmt.format
        # strptime costs ~10 us a line; ISO-like formats (logging's default among them) parse in C.
        self._iso = fmt.format in _ISO_FORMATS
        self._zone = ZoneInfo(fmt.timezone)
        self.default_layout = fmt.regex == TimestampFormat().regex and fmt.format == TimestampFormat().format
        self._hour: tuple[tuple[int, ...], float] = ((), 0.0)

    def read(self, line: bytes) -> float | None:
        if self.default_layout:
            # logging's asctime at the start of the line (the common case): slice it, no regex.
            head = line[:23]
            if len(head) == 23 and head[4] == 45 and head[10] == 32 and head[19] == 44 and head[:4].isdigit():
                return self._parse(head)
        match = self._regex.search(line)
        if match is None:
            return None
        return self._parse(match.group(1) if match.groups() else match.group(0))

    def newest(self, buf: bytes, start: int, ends: list[int], clock: Callable[[], float]) -> float:
        """The newest time of the lines of `buf` ending at `ends`, as `max(read(line) or clock())`.

        Logging's asctime is fixed-width and ordered like the time it writes, so in the default
        layout the lines' heads are compared as bytes and only the newest is parsed: a counted rule
        costs no date parsing per line. Other lines (another layout, or no timestamp) are read.
        """
        newest_head = b""
        newest = 0.0
        for end in ends:
            line_start = buf.rfind(b"\n", start, end) + 1 or start
            head = buf[line_start : min(line_start + 23, end)] if self.default_layout else b""
            if len(head) == 23 and head[4] == 45 and head[10] == 32 and head[19] == 44 and head[:4].isdigit():
                newest_head = max(newest_head, head)
            else:
                newest = max(newest, self.read(buf[line_start:end]) or clock())
        if newest_head:
            newest = max(newest, self._parse(newest_head) or clock())
        return newest

    def _parse(self, text: bytes) -> float | None:
        try:
            decoded = text.decode("utf-8")
            parsed = datetime.fromisoformat(decoded) if self._iso else datetime.strptime(decoded, self._format)
        except ValueError:
            return None
        if parsed.tzinfo is not None:
            return parsed.timestamp()
        # Zone offsets change at most on the hour: one zoneinfo look-up per hour of log.
        hour = (parsed.year, parsed.month, parsed.day, parsed.hour)
        if hour != self._hour[0]:
            self._hour = (hour, parsed.replace(tzinfo=self._zone).utcoffset().total_seconds())
        return (parsed - _EPOCH).total_seconds() - self._hour[1]
