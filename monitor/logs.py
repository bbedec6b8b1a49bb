"""The sidecar's own log and the commands' messages on stderr: text or JSON lines, at a chosen level.

`setup(level, fmt)` (from `--log-level`, `--log-format`) puts one handler on stderr:

- `text`: `<local time> <LEVEL> <logger>: <message>`. The message's format string is our own
  text, so its line breaks stay line breaks; the values put into it (file names, log lines,
  database answers) have every control character escaped (`\\x0a`, `\\x1b`, ...), an
  exception's text keeps its line breaks but no other control character. Every line after
  a record's first (its message's later lines, a traceback) is indented by two spaces, so a
  line that starts without indentation always starts a record: nothing can forge one.
- `json`: one JSON object per record and line, nothing before it:
  `{"time": RFC 3339 UTC, "level", "logger", "message", ...fields}`. Fields come from
  `Fields(...)` arguments (`log.warning("finding %s", Fields(data))`: text mode shows the
  data as compact JSON in the message, JSON mode puts its keys in the object) and from
  `extra={...}`; a traceback is the `exception` field. json.dumps escapes control
  characters; DEL, C1 and U+2028/9 are escaped too.

Either way no line is longer than `MAX_LOG_LINE_CHARS`: a longer message is cut with a
marker saying how long it was (in JSON, fields too large are replaced by `fields_cut`).

`say(message)` is how a command reports a problem to its user: `monitor: <message>` on
stderr in text mode (line breaks kept, other control characters escaped), one JSON record
(logger `monitor`, level error) in JSON mode, so stderr of `monitor run --log-format json`
is JSON lines only.

Logger names are part of that output (operators filter on them): one short name per
part, `monitor.sidecar`, `monitor.follow`, `monitor.findings`, `monitor.lease`, ..., kept
when a module moves between packages.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# No line of our own log is longer than this, whatever a log line or a database answer held.
MAX_LOG_LINE_CHARS = 16_384
# A message is cut to this, leaving room for the time, level and logger before it.
MAX_MESSAGE_CHARS = 16_000
INDENT = "  "

# Control characters (C0, DEL, C1) from file names or log lines must not forge or garble lines of our own log.
_CONTROL = [*range(0x20), *range(0x7F, 0xA0)]
ESCAPE_ALL = {c: f"\\x{c:02x}" for c in _CONTROL}
ESCAPE_BUT_NEWLINE = {c: e for c, e in ESCAPE_ALL.items() if c != 0x0A}
# What json.dumps(ensure_ascii=False) leaves raw but a terminal or a JavaScript parser would act on.
_JSON_EXTRA = {c: f"\\u{c:04x}" for c in [*range(0x7F, 0xA0), 0x2028, 0x2029]}
_RESERVED = ("time", "level", "logger", "message", "exception", "stack", "fields_cut")
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def escape(text: str, keep_newlines: bool = False) -> str:
    r"""The text with control characters shown as `\xNN` (line breaks kept if asked).

    >>> escape("a\x1b[31m\nb"), escape("a\x1b[31m\nb", keep_newlines=True)
    ('a\\x1b[31m\\x0ab', 'a\\x1b[31m\nb')
    """
    return text.translate(ESCAPE_BUT_NEWLINE if keep_newlines else ESCAPE_ALL)


class Fields:
    """Structured data for one log record, passed as an argument: `log.warning("finding %s", Fields(d))`.

    In text mode it shows as compact JSON (ASCII only) where `%s` stands; in JSON mode its
    keys become keys of the record's object and it is left out of the message.
    """

    __slots__ = ("data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = dict(data)

    def __str__(self) -> str:
        return json.dumps(self.data, ensure_ascii=True, default=str)


class _Shown(str):
    """A value escaped for the text log; `%r` shows the original's repr (which escapes by itself)."""

    __slots__ = ("_repr",)

    def __new__(cls, original: str) -> _Shown:
        shown = super().__new__(cls, escape(original))
        shown._repr = repr(original)
        return shown

    def __repr__(self) -> str:
        return self._repr


def _text_argument(value: object) -> object:
    if isinstance(value, Fields):
        return str(value)
    if isinstance(value, BaseException):
        return escape(str(value), keep_newlines=True)  # our own phrasing, lines and all
    if isinstance(value, int | float):
        return value  # keeps %d, %.1f working
    return _Shown(str(value))


def _arguments(record: logging.LogRecord, convert) -> object:
    args = record.args
    if isinstance(args, Mapping):
        return {k: convert(v) for k, v in args.items()}
    if isinstance(args, tuple):
        return tuple(convert(v) for v in args)
    return args


def _message(record: logging.LogRecord, convert, escaped: bool) -> str:
    msg = str(record.msg)
    if not record.args:
        return msg
    try:
        return msg % _arguments(record, convert)
    except (TypeError, ValueError, KeyError):  # the arguments do not fit the format as converted
        message = record.getMessage()
        return escape(message) if escaped else message


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… (cut: {len(text)} characters)"


def _indented(text: str) -> str:
    return text.replace("\n", "\n" + INDENT)


class EscapingFormatter(logging.Formatter):
    """The text log: control characters escaped, line breaks only where our own text has them
    (later lines indented), every line bounded.

    >>> record = logging.LogRecord("m", logging.INFO, "", 0, "x" * 20_000, None, None)
    >>> len(EscapingFormatter("%(message)s").format(record)) <= MAX_LOG_LINE_CHARS
    True
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's naming)
        message = escape(_message(record, _text_argument, escaped=True), keep_newlines=True)
        record.message = _indented(_cut(message, MAX_MESSAGE_CHARS))
        return super().formatMessage(record)

    def formatException(self, ei) -> str:  # noqa: N802
        return _bounded_lines(escape(super().formatException(ei), keep_newlines=True))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return _bounded_lines(escape(super().formatStack(stack_info), keep_newlines=True))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        head, sep, rest = text.partition("\n")
        if not sep:
            return text
        # The traceback's lines (appended by logging) are indented like the message's.
        return head + "\n" + "\n".join(line if line.startswith(INDENT) else INDENT + line for line in rest.split("\n"))


def _bounded_lines(text: str) -> str:
    return "\n".join(_cut(line, MAX_MESSAGE_CHARS) for line in text.split("\n"))


def _json_argument(value: object) -> object:
    if isinstance(value, Fields):
        return ""
    if isinstance(value, int | float):
        return value
    return str(value)


def rfc3339(timestamp: float) -> str:
    """UTC, milliseconds: `2025-10-22T06:20:02.123Z`.

    >>> rfc3339(1761114002.1234)
    '2025-10-22T06:20:02.123Z'
    """
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str).translate(_JSON_EXTRA)


def _fit(text: str, budget: int) -> str:
    """The text, cut (with a marker) so that its JSON string is at most `budget` characters."""
    if len(_dumps(text)) <= budget:
        return text
    keep = min(len(text), budget)
    while keep > 0:
        cut = f"{text[:keep]}… (cut: {len(text)} characters)"
        size = len(_dumps(cut))
        if size <= budget:
            return cut
        keep = min(keep - 1, keep * budget // size - 1)
    return f"… (cut: {len(text)} characters)"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (RFC 3339 UTC), level, logger, message, then fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = _message(record, _json_argument, escaped=False).rstrip()
        entry: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _fit(message, MAX_MESSAGE_CHARS),
        }
        fields = self._fields(record)
        for key, value in fields.items():
            entry[f"field_{key}" if key in _RESERVED else key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        line = _dumps(entry)
        if len(line) > MAX_LOG_LINE_CHARS and fields:
            for key in fields:
                entry.pop(f"field_{key}" if key in _RESERVED else key, None)
            entry["fields_cut"] = f"{len(_dumps(fields))} characters of fields not shown"
            line = _dumps(entry)
        for key in ("stack", "exception"):
            if len(line) > MAX_LOG_LINE_CHARS and key in entry:
                budget = MAX_LOG_LINE_CHARS - (len(line) - len(_dumps(entry[key])))
                entry[key] = _fit(entry[key], max(budget, 64))
                line = _dumps(entry)
        return line

    @staticmethod
    def _fields(record: logging.LogRecord) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        args = record.args.values() if isinstance(record.args, Mapping) else record.args or ()
        for value in args:
            if isinstance(value, Fields):
                fields.update(value.data)
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                fields[key] = value
        return fields


_state = {"format": "text"}


def setup(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Log to stderr (or `stream`) in this format; the `monitor.*` loggers at this level, other
    libraries' at warning or above (so `debug` is ours, not the MongoDB driver's heartbeats)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else EscapingFormatter(TEXT_FORMAT))
    handler._monitor = True  # type: ignore[attr-defined]  (ours: replaced by the next setup)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_monitor", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    chosen = LEVELS[level]
    root.setLevel(max(chosen, logging.WARNING))
    logging.getLogger("monitor").setLevel(chosen)
    _state["format"] = fmt


def say(message: str, level: int = logging.ERROR, prefix: str = "monitor: ") -> None:
    """A command's message to its user on stderr (see the module's docstring)."""
    if _state["format"] == "json":
        logging.getLogger("monitor").log(level, "%s", message)
        return
    print(f"{prefix}{escape(message, keep_newlines=True)}", file=sys.stderr)
