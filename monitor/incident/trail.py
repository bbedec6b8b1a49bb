"""What the logs say about one analysis (`monitor explain`'s evidence), and how it is judged.

- `collect`: every line of the files that contains the id (plain or `.gz`, shown
  in the order of the lines' own time, whatever the files' order), each with the
  rules it matches, its text cut to `MAX_TEXT_CHARS`; the claims those lines make
  about this id (`reconcile.claims`) in its last run (after its last start line,
  as `verify` judges it); and how the log says the analysis ended (`log_says`,
  `ambiguous` when the last run's end lines disagree).
- `judge` and `overall`: a claim's outcome against the document, as the sidecar
  decides it once the claim's deadline has passed (`Reconciler._judge`), and the
  verdict over all claims.
- `Explanation`: all of it as plain data, for the table and for JSON.

Lines are held bounded: each text at most `MAX_TEXT_CHARS` characters, at most
`MAX_LINES_SHOWN` lines (the first and last halves; the rest are counted).
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import re2

from monitor.config import Config
from monitor.reconcile.claims import ClaimExtractor, StartLines, bounded_id, implied_status
from monitor.scan.lines import Block, LineFramer
from monitor.scan.matcher import Matcher
from monitor.scan.readfiles import LogReadError, read_chunks

MAX_TEXT_CHARS = 2000  # a hostile line cannot flood the terminal
MAX_LINES_SHOWN = 1000  # the first and the last 500 lines naming the analysis
PERSISTED, NOT_PERSISTED = "persisted", "not persisted"
AMBIGUOUS = "ambiguous"  # log_says: its last run's end lines name more than one final status
NO_CLAIM, NOT_CHECKED = "no claim in the logs", "not checked: no MongoDB URL"
# Document look-up: what happened when (or instead of) asking MongoDB.
FOUND, NOT_FOUND, NO_URL, INVALID_ID = "found", "not_found", "no_url", "invalid_id"
_HEX_ID = re.compile(r"[0-9a-fA-F]{24}")


@dataclass(frozen=True)
class NamedLine:
    """One line that contains the analysis id."""

    file: str
    line: int  # 1-based, in the (decompressed) file
    rules: tuple[str, ...]  # configured rules it matches, in config order
    text: str  # cut to MAX_TEXT_CHARS with a marker
    time: str | None = field(default=None, compare=False)  # its own timestamp as written, if any
    when: float | None = field(default=None, compare=False)  # the same, read (Unix seconds)


@dataclass(frozen=True)
class FirstClaim:
    """A claim the log makes about this analysis, where it is first made."""

    claim: str
    expected: tuple[str, ...]
    file: str
    line: int


@dataclass(frozen=True)
class Trail:
    """What the log files say about one analysis."""

    lines: tuple[NamedLine, ...]  # the first and last MAX_LINES_SHOWN // 2
    not_shown: int  # lines naming it between those two halves
    claims: tuple[FirstClaim, ...]  # one per claim name, in the order first made
    log_says: str | None  # "completed" | "failed": how the worker's lines say it ended
    last: NamedLine | None  # the last line naming it
    errors: tuple[str, ...]  # files that could not be read (to the end)


@dataclass(frozen=True)
class ClaimOutcome:
    claim: str
    expected: tuple[str, ...]
    outcome: str  # confirmed | status_mismatch | not_found | invalid_id | not_checked


@dataclass(frozen=True)
class Explanation:
    """The report: `--format json` prints `to_json()`."""

    analysis_id: str
    trail: Trail
    claims: tuple[ClaimOutcome, ...]
    document: dict[str, Any] | None  # status fields, JSON-safe
    lookup: str  # found | not_found | no_url | invalid_id
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "analysis_id": self.analysis_id,
            "lines": [
                {"file": n.file, "line": n.line, "rules": list(n.rules), "text": n.text} for n in self.trail.lines
            ],
            "lines_not_shown": self.trail.not_shown,
            "claims": [{**asdict(c), "expected": list(c.expected)} for c in self.claims],
            "document": self.document,
            "document_lookup": self.lookup,
            "verdict": self.verdict,
            "log_says": self.trail.log_says,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)


def normalize_id(analysis_id: str) -> str:
    """An ObjectId typed in upper case is the log's lower-case form; anything else stays as given."""
    return analysis_id.lower() if _HEX_ID.fullmatch(analysis_id) else analysis_id


def id_problem(analysis_id: str) -> str | None:
    """Why no log line can name this id (a usage error); None when it can be looked for."""
    if not analysis_id.strip():
        return "ID is empty; give the analysis id as the log shows it"
    if "\n" in analysis_id or "\r" in analysis_id:
        return "ID contains a line break, so no log line can contain it"
    return None


def bounded_text(text: str, limit: int = MAX_TEXT_CHARS, cut_by_reader: bool = False) -> str:
    """The text, or its first `limit` characters and a marker saying how much was cut.

    >>> bounded_text("abcdef", 3)
    'abc… [line cut: 6 characters, first 3 shown]'
    """
    if len(text) <= limit:
        return text
    more = "over " if cut_by_reader else ""
    return f"{text[:limit]}… [line cut: {more}{len(text)} characters, first {limit} shown]"


def judge(accept: Sequence[str], document: Mapping[str, Any] | None) -> str:
    """One claim's outcome once its deadline has passed, as `Reconciler._judge` decides it.

    >>> judge(["completed"], {"status": "completed"}), judge(["completed"], {"status": "pending"})
    ('confirmed', 'status_mismatch')
    >>> judge(["completed"], None)
    'not_found'
    """
    status = document.get("status") if document else None
    if status in accept:
        return "confirmed"
    return "status_mismatch" if document else "not_found"


def overall(outcomes: Sequence[str]) -> str:
    """The verdict over every claim the log makes about the analysis.

    >>> overall([]), overall(["confirmed", "confirmed"]), overall(["confirmed", "not_found"])
    ('no claim in the logs', 'persisted', 'not persisted')
    >>> overall(["not_checked"])
    'not checked: no MongoDB URL'
    """
    if not outcomes:
        return NO_CLAIM
    if all(o == "confirmed" for o in outcomes):
        return PERSISTED
    if all(o == "not_checked" for o in outcomes):
        return NOT_CHECKED
    return NOT_PERSISTED


def collect(config: Config, matcher: Matcher, analysis_id: str, files: Sequence[Path]) -> Trail:
    """Every line of `files` containing `analysis_id`, in order, with its rules and claims."""
    extractor = ClaimExtractor(config.reconcile.claims)
    timestamp = re2.compile(config.timestamp.regex)
    half = MAX_LINES_SHOWN // 2
    head: list[NamedLine] = []
    tail: deque[NamedLine] = deque(maxlen=half)
    seen = 0
    made: list[tuple[float, FirstClaim]] = []  # every claim about it, with its line's own time
    starts: list[float] = []
    start_lines = StartLines(config.reconcile.start_rules, config.reconcile.claims)
    errors: list[str] = []
    for path in files:
        try:
            for number, raw in _lines_containing(path, analysis_id.encode("utf-8"), config):
                text = raw.decode("utf-8", errors="replace")
                events = matcher.scan(raw + b"\n").events
                named = NamedLine(
                    file=str(path),
                    line=number,
                    rules=tuple(dict.fromkeys(e.rule for e in events)),
                    text=bounded_text(text, cut_by_reader=len(raw) >= config.scan.max_line_bytes),
                    time=_time_of(text, timestamp),
                    when=matcher.line_time(raw),
                )
                seen += 1
                (head if len(head) < half else tail).append(named)
                if any(start_lines.analysis(e) == bounded_id(analysis_id) for e in events):
                    starts.append(named.when if named.when is not None else float("-inf"))
                for claim in extractor.claims(events, str(path)):
                    if claim.analysis_id == bounded_id(analysis_id):
                        made.append((claim.logged_at, FirstClaim(claim.claim, claim.accept, str(path), number)))
        except LogReadError as exc:
            errors.append(str(exc))
    # Files come in any order (a glob puts the oldest rotated file last): the lines' own time decides,
    # and only the last run (after the last start line) speaks for the document, as in `verify`.
    since = max(starts, default=float("-inf"))
    last_run = sorted((entry for entry in made if entry[0] > since), key=lambda entry: entry[0])
    claims: dict[str, FirstClaim] = {}
    for _, first in last_run:
        claims.setdefault(first.claim, first)
    endings = {status for _, first in last_run if (status := implied_status(first.expected))}
    lines = _in_time_order((*head, *tail))
    return Trail(
        lines=lines,
        not_shown=seen - len(lines),
        claims=tuple(claims.values()),
        log_says=AMBIGUOUS if len(endings) > 1 else next(iter(endings), None),
        last=lines[-1] if lines else None,
        errors=tuple(errors),
    )


def _in_time_order(lines: Sequence[NamedLine]) -> tuple[NamedLine, ...]:
    """By each line's own time; a line without one keeps the time of the line before it in its file."""
    keyed, previous = [], (None, float("-inf"))
    for index, named in enumerate(lines):
        when = named.when if named.when is not None else (previous[1] if previous[0] == named.file else float("-inf"))
        previous = (named.file, when)
        keyed.append((when, index, named))
    return tuple(named for _, _, named in sorted(keyed, key=lambda k: (k[0], k[1])))


def _lines_containing(path: Path, needle: bytes, config: Config) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its newline) of each line of the file that contains `needle`.

    Lines are framed as `monitor scan` frames them: a line longer than `scan.max_line_bytes`
    is its first `max_line_bytes` bytes, so an id only further in is not seen.
    """
    framer = LineFramer(config.scan.max_line_bytes)
    done = 0  # lines before the current block
    for chunk in read_chunks(path, config.scan.read_chunk_bytes):
        for block in framer.feed(chunk):
            done = yield from _hits(block, needle, done)
    for block in framer.flush():
        done = yield from _hits(block, needle, done)


def _hits(block: Block, needle: bytes, done: int):
    buf, start, end = block
    counted_to, number = start, done
    hit = buf.find(needle, start, end)
    while hit >= 0:
        line_start = buf.rfind(b"\n", start, hit) + 1 or start
        line_end = buf.find(b"\n", hit, end)  # a block is whole LF-terminated lines
        number += buf.count(b"\n", counted_to, line_start) + 1
        yield number, buf[line_start:line_end]
        counted_to = line_end + 1
        hit = buf.find(needle, counted_to, end)
    return number + buf.count(b"\n", counted_to, end)


def _time_of(text: str, timestamp: re2._Regexp) -> str | None:
    match = timestamp.search(text)
    if match is None:
        return None
    return match.group(1) if match.groups() else match.group(0)
