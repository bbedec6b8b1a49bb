"""Patterns: what a rule's RE2 pattern means to Hyperscan, and when Hyperscan alone is exact.

RE2 is the authority on what a rule matches in a line. Hyperscan runs all
rules over a whole block at once and reports the lines to look at. Two
things here make that cheap without giving up exactness:

- `hyperscan_expression` spells the pattern so that Hyperscan's classes mean
  what RE2's do (`\\s` is `[\\t\\n\\f\\r ]` in RE2, but also takes `\\v` in
  Hyperscan, so a `\\S+` across a vertical tab was missed), and extends it to
  the end of its line, so a matching line is reported once per expression.
- `counts_exactly` proves, from the pattern's structure, that Hyperscan's
  byte-wise match of a line is RE2's match of the same line, invalid UTF-8
  included. Such a rule's lines are counted straight from Hyperscan's report,
  with no decoding, no RE2 and no Python work per line beyond the count.
  Anything it cannot prove is confirmed by RE2, as before.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from re import _constants as sre  # the parse tree of Python's own re parser
from re import _parser as sre_parse

import re2

# RE2's \s (https://github.com/google/re2/wiki/Syntax): no \v, unlike PCRE and Hyperscan.
_RE2_SPACE = frozenset(b"\t\n\f\r ")
_RE2_SPACE_TEXT = "\\t\\n\\f\\r "
_ASCII = frozenset(range(128))
_DIGIT = frozenset(b"0123456789")
_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
# Category -> (ASCII members, whether every non-ASCII character is a member), in RE2's ASCII meaning.
_CATEGORIES = {
    sre.CATEGORY_SPACE: (_RE2_SPACE, False),
    sre.CATEGORY_NOT_SPACE: (_ASCII - _RE2_SPACE, True),
    sre.CATEGORY_DIGIT: (_DIGIT, False),
    sre.CATEGORY_NOT_DIGIT: (_ASCII - _DIGIT, True),
    sre.CATEGORY_WORD: (_WORD, False),
    sre.CATEGORY_NOT_WORD: (_ASCII - _WORD, True),
}
_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT)
_CLASSES = (sre.ANY, sre.IN, sre.NOT_LITERAL)
# Syntax Python's parser reads differently from RE2 (or not at all): never judged exact.
_FOREIGN = ("[:", "{,", "\\Q", "\\p", "\\P", "\\C", "\\z", "\\A", "\\b", "\\B", "(?<", "(?i", "(?s", "(?m", "(?U")


# Lines holding invalid UTF-8, for Hyperscan in byte mode (RFC 3629's grammar, broken). RE2 sees each
# invalid sequence as one U+FFFD, so a rule counting characters (`\S{2}`, `a.b`) can match such a line
# where neither the UTF-8 database (undefined on invalid input) nor the byte-wise one reports it:
# every rule RE2 confirms is tried on these lines. A continuation or lead byte followed by a newline is
# caught by the second expression, which ends at the line's end, so no match crosses into the next line.
_CONT = rb"[\x80-\xbf]"
_NOT_CONT = rb"[^\x80-\xbf\n]"
INVALID_UTF8_INSIDE = b"|".join(
    [
        rb"[\xc0\xc1\xf5-\xff]",  # never in UTF-8
        rb"^" + _CONT,
        rb"[\x00-\x09\x0b-\x7f]" + _CONT,  # a continuation byte after ASCII
        rb"[\xc2-\xdf]" + _CONT + _CONT,  # ... or after a complete sequence
        rb"[\xe0-\xef]" + _CONT + rb"{3}",
        rb"[\xf0-\xf4]" + _CONT + rb"{4}",
        rb"[\xc2-\xf4]" + _NOT_CONT,  # a lead byte without its continuation
        rb"[\xe0-\xf4]" + _CONT + _NOT_CONT,
        rb"[\xf0-\xf4]" + _CONT + rb"{2}" + _NOT_CONT,
        rb"\xe0[\x80-\x9f]",  # overlong
        rb"\xed[\xa0-\xbf]",  # surrogates
        rb"\xf0[\x80-\x8f]",  # overlong
        rb"\xf4[\x90-\xbf]",  # beyond U+10FFFF
    ]
)
INVALID_UTF8_AT_END = rb"(?:[\xc2-\xf4]|[\xe0-\xf4]" + _CONT + rb"|[\xf0-\xf4]" + _CONT + rb"{2})$"


def invalid_utf8_expressions() -> list[bytes]:
    """Byte-mode expressions reporting each line that holds invalid UTF-8, once each, at its end."""
    return [b"(?:" + INVALID_UTF8_INSIDE + rb")[^\n]*$", INVALID_UTF8_AT_END]


def pattern_problem(pattern: str) -> str | None:
    """Why a rule pattern cannot be used, phrased for the user; None when it is fine."""
    try:
        regex = compile_re2(pattern, quiet=True)
    except re2.error as exc:
        return (
            f"does not compile: {re2_reason(exc)}. Patterns use RE2 syntax (no backreferences or "
            "look-around), which guarantees linear-time matching"
        )
    if regex.search("") is not None:
        return "matches the empty string, so it would match every line; make it require some text"
    return None


def ends_at_line_end(pattern: str) -> bool:
    """Whether the pattern has its own `$` (Hyperscan refuses a second, embedded end anchor)."""
    return "$" in pattern.replace("\\$", "")


def hyperscan_expression(pattern: str, utf8: bool) -> bytes:
    """The pattern for Hyperscan: RE2's meaning of `\\s`/`\\S`, extended to the end of its line.

    Hyperscan reports every offset where a match ends, so `id: \\S+` at a line's end would
    call back once per character. Extended to the line's end, a matching line is reported
    once per expression. A pattern with its own `$` already ends there, so it is left as it is.
    """
    text = _re2_spaces(pattern, utf8)
    return (text if ends_at_line_end(pattern) else f"(?:{text})[^\\n]*$").encode()


def _re2_spaces(pattern: str, utf8: bool) -> str:
    """`\\s` and `\\S` spelled out as RE2 means them, inside classes and out."""
    not_space = "\\x00-\\x08\\x0b\\x0e-\\x1f\\x21-" + ("\\x{10ffff}" if utf8 else "\\xff")
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escape = pattern[i + 1]
            if escape == "Q":  # \Q...\E quotes everything up to \E: copied as it is
                end = pattern.find("\\E", i)
                end = len(pattern) if end < 0 else end + 2
                out.append(pattern[i:end])
                i = end
                continue
            if escape == "s":
                out.append(_RE2_SPACE_TEXT if in_class else f"[{_RE2_SPACE_TEXT}]")
            elif escape == "S":
                out.append(not_space if in_class else f"[^{_RE2_SPACE_TEXT}]")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if char == "[" and pattern.startswith("[:", i):  # a POSIX class such as [:alpha:]
                end = pattern.find(":]", i + 2)
                if end > 0:
                    out.append(pattern[i : end + 2])
                    i = end + 2
                    continue
            if char == "]":
                in_class = False
        elif char == "[":
            in_class = True
            out.append(char)
            i += 1
            # A "]" right after "[" or "[^" is a member, not the end.
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):
                out.append("]")
                i += 1
            continue
        out.append(char)
        i += 1
    return "".join(out)


def counts_exactly(pattern: str) -> bool:
    """Whether Hyperscan's byte-wise match of a line is exactly RE2's match of it (see module doc).

    Sufficient conditions, checked on the parse tree: literals (not a newline or U+FFFD, whose
    bytes are what RE2 would see as an invalid sequence); groups and alternatives of such parts;
    `^`; classes that never match a newline and either take every non-ASCII character or none,
    repeated without bound (a character is one or more bytes, so only "one or more" and "any
    number" mean the same for characters and bytes; an ASCII-only class means the same either
    way). The pattern must not end at its own `$`, so each matching line is reported once.
    """
    return not ends_at_line_end(pattern) and _byte_wise_equal(pattern, newlines=False)


def byte_wise_misses_nothing(pattern: str) -> bool:
    """Whether Hyperscan's byte-wise match reports every line RE2 matches, invalid UTF-8 included
    (it may report more: a class taking a newline can match across lines; RE2 drops those). Rules
    that fail this need lines of invalid UTF-8 shown to RE2 whatever Hyperscan says."""
    return _byte_wise_equal(pattern, newlines=True)


def _byte_wise_equal(pattern: str, newlines: bool) -> bool:
    if any(token in pattern for token in _FOREIGN):
        return False
    try:
        parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return False
    if parsed.state.flags & ~re.UNICODE:
        return False
    return _exact(list(parsed), counted=False, newlines=newlines)


def _exact(items: list, counted: bool, newlines: bool = False) -> bool:
    for op, arg in items:
        if op is sre.LITERAL:
            if arg in (0x0A, 0xFFFD):
                return False
        elif op is sre.SUBPATTERN:
            _group, add_flags, del_flags, sub = arg
            if add_flags or del_flags or not _exact(list(sub), counted, newlines):
                return False
        elif op is sre.BRANCH:
            if not all(_exact(list(alternative), counted, newlines) for alternative in arg[1]):
                return False
        elif op in _REPEATS:
            low, high, sub = arg
            sub = list(sub)
            counting = counted or low > 1 or high != sre.MAXREPEAT
            if len(sub) == 1 and sub[0][0] is sre.LITERAL and sub[0][1] >= 0x80:
                return False  # byte-wise, `中+` would repeat the character's last byte
            if len(sub) == 1 and sub[0][0] in _CLASSES:
                members = _class(*sub[0], newlines)
                if members is None or (members and counting):
                    return False
            elif not _exact(sub, counting, newlines):
                return False
        elif op in _CLASSES:
            members = _class(op, arg, newlines)
            if members is None or members:  # one character: one byte only if it is ASCII
                return False
        elif not (op is sre.AT and arg is sre.AT_BEGINNING):
            return False
    return True


def _class(op: object, arg: object, newlines: bool = False) -> bool | None:
    """None if the class mixes non-ASCII members or (unless `newlines`) can match a newline; else
    whether it takes non-ASCII characters."""
    if op is sre.ANY:
        return True
    if op is sre.NOT_LITERAL:
        return True if arg == 0x0A or newlines else None
    ascii_members: set[int] = set()
    non_ascii = False
    negate = False
    for kind, value in arg:  # type: ignore[attr-defined]
        if kind is sre.NEGATE:
            negate = True
        elif kind is sre.LITERAL and value < 0x80:
            ascii_members.add(value)
        elif kind is sre.RANGE and value[1] < 0x80:
            ascii_members.update(range(value[0], value[1] + 1))
        elif kind is sre.CATEGORY and value in _CATEGORIES:
            members, takes_non_ascii = _CATEGORIES[value]
            ascii_members |= members
            non_ascii = non_ascii or takes_non_ascii
        else:
            return None
    if negate:
        ascii_members, non_ascii = set(_ASCII - ascii_members), not non_ascii
    return None if 0x0A in ascii_members and not newlines else non_ascii


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


def compile_re2(pattern: str | bytes, quiet: bool = False) -> re2._Regexp:
    if not quiet:
        return re2.compile(pattern)
    with _quiet_stderr():
        return re2.compile(pattern)


def re2_reason(exc: re2.error) -> str:
    reason = exc.args[0] if exc.args else str(exc)
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
