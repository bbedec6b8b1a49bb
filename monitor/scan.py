"""Scan: every rule at once over blocks of complete lines, events out.

Matching is two-stage. Hyperscan runs all rules together over a whole block
in one pass (hundreds of MB/s to GB/s, linear time whatever the pattern), and
reports where matches end. Only the lines it points at are decoded and
confirmed with RE2, which also extracts the named captures. RE2 is the
authority: Hyperscan is a prefilter, so a cross-line or byte-level candidate
that RE2 rejects is dropped. Both engines guarantee linear time, so a user
pattern like `(a+)+$` cannot stall the sidecar.

Each rule is compiled twice into the Hyperscan database, once in UTF-8 mode
(so `.` and classes see characters, as RE2 does) and once byte-wise (so `.`
also crosses invalid UTF-8 bytes, which RE2 sees as U+FFFD): the union of
both is the candidate set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import hyperscan
import re2

from monitor.config import ConfigError, Rule, TimestampFormat
from monitor.lines import Block, LineFramer

OTHER = "other"  # label value for a capture outside the rule's listed values
MAX_LABEL_VALUE = 100  # characters of a capped label's value


@dataclass(frozen=True)
class Event:
    """One line matched by one rule (a line matching two rules is two events)."""

    rule: str
    severity: str
    line: str
    captures: dict[str, str] = field(hash=False)
    labels: tuple[tuple[str, str], ...]
    time: float  # the line's own timestamp, or the scan time when it has none


@dataclass(frozen=True)
class _Compiled:
    rule: Rule
    regex: re2._Regexp
    regex_bytes: re2._Regexp
    label_values: tuple[tuple[str, frozenset[str] | None], ...]  # None: capped, open-ended

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

    >>> from monitor.config import Rule
    >>> rule = Rule(name="timeout", severity="error", pattern="MongoDB操作超时", examples=["MongoDB操作超时"])
    >>> [e.rule for e in Matcher([rule]).scan("x | MongoDB操作超时\\n".encode())]
    ['timeout']
    """

    _UTF8 = hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_UCP | hyperscan.HS_FLAG_MULTILINE
    _BYTES = hyperscan.HS_FLAG_MULTILINE

    def __init__(
        self,
        rules: Sequence[Rule],
        timestamp: TimestampFormat | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rules = [_compile_rule(i, rule) for i, rule in enumerate(rules)]
        self._database = _build_database(rules, self._UTF8, self._BYTES)
        self._clock = clock
        self._timestamps = _TimestampReader(timestamp or TimestampFormat())

    @property
    def rules(self) -> list[Rule]:
        return [compiled.rule for compiled in self._rules]

    def scan(self, block: Block | bytes) -> list[Event]:
        """Events of a block of complete LF-terminated lines, in line order."""
        buf, start, stop = block if isinstance(block, Block) else (block, 0, len(block))
        hits: list[tuple[int, int]] = []

        def on_match(rule_id: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
            hits.append((end, rule_id))

        view = memoryview(buf)[start:stop] if start or stop != len(buf) else buf
        self._database.scan(view, match_event_handler=on_match)
        if not hits:
            return []
        # Group rules per line. Most hits end right at their line's end (see _to_line_end), where
        # find() returns at once; a pattern with its own `$` can hit several times in one line.
        rule_count = len(self._rules)
        candidates: dict[int, set[int]] = {}
        for end, rule_id in hits:
            line_end = buf.find(b"\n", start + end - 1, stop)
            candidates.setdefault(stop if line_end < 0 else line_end, set()).add(rule_id % rule_count)
        events: list[Event] = []
        for line_end in sorted(candidates):
            line_start = buf.rfind(b"\n", start, line_end) + 1 or start
            self._confirm(buf[line_start:line_end], sorted(candidates[line_end]), events)
        return events

    def _confirm(self, raw: bytes, rule_ids: list[int], events: list[Event]) -> None:
        try:
            line = raw.decode("utf-8")
            subject: bytes | str = raw  # RE2 is several times faster on bytes than on str
        except UnicodeDecodeError:
            # Invalid bytes become U+FFFD, which `.` and classes match like any character.
            subject = line = raw.decode("utf-8", errors="replace")
        when: float | None = None
        for rule_id in rule_ids:
            compiled = self._rules[rule_id]
            match = (compiled.regex_bytes if subject is raw else compiled.regex).search(subject)
            if match is None:
                continue
            if when is None:
                when = self._timestamps.read(raw) or self._clock()
            captures = {_text(k): _text(v) for k, v in match.groupdict().items() if v is not None}
            events.append(
                Event(
                    rule=compiled.rule.name,
                    severity=compiled.rule.severity.value,
                    line=line,
                    captures=captures,
                    labels=compiled.labels(captures),
                    time=when,
                )
            )


class Scanner:
    """A framer and a matcher together: byte chunks of one stream in, events out."""

    def __init__(self, matcher: Matcher, max_line_bytes: int = 1 << 20) -> None:
        self.matcher = matcher
        self.framer = LineFramer(max_line_bytes)

    def feed(self, data: bytes) -> list[Event]:
        return [event for block in self.framer.feed(data) for event in self.matcher.scan(block)]

    def flush(self) -> list[Event]:
        return [event for block in self.framer.flush() for event in self.matcher.scan(block)]


def check_examples(matcher: Matcher, where: Callable[..., str]) -> None:
    """Every rule must match each of its own example lines; raise ConfigError otherwise."""
    problems = []
    for index, rule in enumerate(matcher.rules):
        for example_index, example in enumerate(rule.examples):
            hits = {event.rule for event in matcher.scan(example.encode("utf-8") + b"\n")}
            if rule.name not in hits:
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
) -> Matcher:
    """Compile and self-test the rules; every problem becomes one ConfigError naming the field."""
    problems = []
    for index, rule in enumerate(rules):
        problem = pattern_problem(rule.pattern)
        if problem:
            problems.append(f"{where('rules', index, 'pattern')}: {problem}")
    try:
        _compile_re2(timestamp.regex, quiet=True)
    except re2.error as exc:
        problems.append(f"{where('timestamp', 'regex')}: does not compile: {_re2_reason(exc)}")
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        matcher = Matcher(rules, timestamp, clock)
    except hyperscan.error:
        problems = [
            f"{where('rules', index, 'pattern')}: {problem}"
            for index, rule in enumerate(rules)
            if (problem := _hyperscan_problem(rule.pattern))
        ]
        raise ConfigError("\n".join(problems) or "rules: the patterns cannot be compiled together") from None
    check_examples(matcher, where)
    return matcher


def pattern_problem(pattern: str) -> str | None:
    """Why a rule pattern cannot be used, phrased for the user; None when it is fine."""
    try:
        regex = _compile_re2(pattern, quiet=True)
    except re2.error as exc:
        return (
            f"does not compile: {_re2_reason(exc)}. Patterns use RE2 syntax (no backreferences or "
            "look-around), which guarantees linear-time matching"
        )
    if regex.search("") is not None:
        return "matches the empty string, so it would match every line; make it require some text"
    return None


def _hyperscan_problem(pattern: str) -> str | None:
    """Only asked when the whole database failed to compile: which rule is the culprit?"""
    for flags in (Matcher._UTF8, Matcher._BYTES):
        try:
            _build_database([pattern], flags)
        except hyperscan.error as exc:
            return f"cannot be compiled for multi-pattern matching: {exc}; simplify the pattern"
    return None


def _compile_rule(index: int, rule: Rule) -> _Compiled:
    labels = tuple(
        (name, None if isinstance(values, int) else frozenset(values)) for name, values in rule.labels.items()
    )
    return _Compiled(rule, _compile_re2(rule.pattern), _compile_re2(rule.pattern.encode()), labels)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _build_database(patterns: Iterable[Rule | str], *flag_sets: int) -> hyperscan.Database:
    texts = [p.pattern if isinstance(p, Rule) else p for p in patterns]
    expressions = [_to_line_end(t) for t in texts] * len(flag_sets)
    flags = [f for f in flag_sets for _ in texts]
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=expressions, ids=list(range(len(expressions))), elements=len(expressions), flags=flags)
    return database


def _to_line_end(pattern: str) -> bytes:
    """The pattern extended to the end of its line, for Hyperscan.

    Hyperscan reports every offset where a match ends, so `id: \\S+` at a line's end
    would call back once per character. Extended to the line's end, a matching line is
    reported once per rule. A pattern with its own `$` already ends there (and Hyperscan
    refuses a second, embedded end anchor), so it is left as it is.
    """
    if "$" in pattern.replace("\\$", ""):
        return pattern.encode()
    return f"(?:{pattern})[^\\n]*$".encode()


@contextmanager
def _quiet_stderr():
    """RE2's C++ core logs parse errors straight to fd 2; we report them ourselves."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _compile_re2(pattern: str, quiet: bool = False) -> re2._Regexp:
    if not quiet:
        return re2.compile(pattern)
    with _quiet_stderr():
        return re2.compile(pattern)


def _re2_reason(exc: re2.error) -> str:
    reason = exc.args[0] if exc.args else str(exc)
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)


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
        self._regex = _compile_re2(fmt.regex.encode())
        self._format = fmt.format
        # strptime costs ~10 us a line; ISO-like formats (logging's default among them) parse in C.
        self._iso = fmt.format in _ISO_FORMATS
        self._zone = ZoneInfo(fmt.timezone)
        self._default_layout = fmt.regex == TimestampFormat().regex and fmt.format == TimestampFormat().format
        self._hour: tuple[tuple[int, ...], float] = ((), 0.0)

    def read(self, line: bytes) -> float | None:
        if self._default_layout:
            # logging's asctime at the start of the line (the common case): slice it, no regex.
            head = line[:23]
            if len(head) == 23 and head[4] == 45 and head[10] == 32 and head[19] == 44 and head[:4].isdigit():
                return self._parse(head)
        match = self._regex.search(line)
        if match is None:
            return None
        return self._parse(match.group(1) if match.groups() else match.group(0))

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
