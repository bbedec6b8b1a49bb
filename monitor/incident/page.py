"""The HTML incident report (`verify --report`, `scan --report`): one self-contained file.

One HTML file with its script and style inside, no library: measured against Plotly 7.1 and
Bokeh 3.9 with their JavaScript inlined, the hand-written SVG page is ~400 times smaller (11 KB against
4.8 MB and 1.3 MB) and drawn ~30 times sooner in headless Chromium (about 50 ms against 1.5 s
and 0.9 s), which leaves the size budget to the findings themselves (README, "Incident report").

What comes from the logs (ids, symbols, evidence lines) is never markup: the header is escaped
here, and everything else travels as JSON in a `<script type="application/json">` block with
`<`, `>` and `&` written as \\u escapes (no `</script>` can close it), read by the page's script
with `textContent` only. A Content-Security-Policy allows the page's own script and style (by
hash) and nothing else: no request leaves the page, and an injected script would not run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

_ASSETS = files("monitor.incident") / "page_assets"
_DATA_SLOT = "\x00data\x00"  # where the data goes: no JSON or asset holds a NUL
_JSON_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


class ReportPathError(Exception):
    """The report cannot be written where asked: the message says why and what to do."""


@dataclass(frozen=True)
class Header:
    """The page's "how bad?": every figure as (label, value, alarm) rows, said before any chart."""

    title: str
    first_time: float | None
    last_time: float | None
    timezone: str
    files: list[str]
    failed: list[str]  # error messages of inputs that failed
    figures: list[tuple[str, str, bool]]


def check_writable(path: Path) -> None:
    """Raise ReportPathError now, before a long pass, when `path` cannot be written."""
    where = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ReportPathError(f"--report {path}: is a directory; give a file name such as incident.html")
    if not where.is_dir():
        raise ReportPathError(f"--report {path}: no directory {where}; create it or choose another path")
    if not os.access(where, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ReportPathError(f"--report {path}: not writable; choose a writable path")


def write_page(path: Path, header: Header, data: dict[str, Any]) -> int:
    """Write the page; its size in bytes. ReportPathError when it cannot be written.

    The data is written a value at a time, a list (the findings) an item at a time: the data of
    100,000 analyses is ~7 MB, and held as one string, escaped, then encoded, it would cost several
    times that at the end of `verify`."""
    head, _, tail = render(header, None).rpartition(_DATA_SLOT)  # the last: nothing after it is from a log
    try:
        with path.open("w", encoding="utf-8") as out:
            out.write(head + "{")
            for index, (key, value) in enumerate(data.items()):
                out.write(f"{',' if index else ''}{embed_json(key)}:")
                if isinstance(value, list):
                    out.write("[")
                    for number, item in enumerate(value):
                        out.write(f"{',' if number else ''}{embed_json(item)}")
                    out.write("]")
                else:
                    out.write(embed_json(value))
            out.write("}" + tail)
        return path.stat().st_size
    except OSError as exc:
        why = exc.strerror or exc
        raise ReportPathError(f"--report {path}: cannot write it: {why}; choose a writable path") from exc


def render(header: Header, data: dict[str, Any] | None) -> str:
    """The page; `data` None leaves `_DATA_SLOT` where the data goes."""
    script = (_ASSETS / "report.js").read_text(encoding="utf-8")
    style = (_ASSETS / "report.css").read_text(encoding="utf-8")
    slot = _DATA_SLOT if data is None else embed_json(data)
    policy = (
        f"default-src 'none'; script-src '{_sha256(script)}'; style-src '{_sha256(style)}'; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n'
        f"<title>{html.escape(header.title)}</title>\n<style>{style}</style></head>\n<body>\n"
        f"{_header_html(header)}\n"
        f'<script type="application/json" id="report-data">{slot}</script>\n'
        f"<script>{script}</script>\n</body></html>\n"
    )


def embed_json(data: Any) -> str:
    """JSON that can stand inside a <script> element whatever strings it holds.

    >>> embed_json({"id": "</script><img src=x onerror=alert(1)>"})
    '{"id": "\\\\u003c/script\\\\u003e\\\\u003cimg src=x onerror=alert(1)\\\\u003e"}'
    """
    return json.dumps(data, ensure_ascii=False, allow_nan=False).translate(_JSON_ESCAPES)


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def _header_html(header: Header) -> str:
    zone = ZoneInfo(header.timezone)
    if header.first_time is None or header.last_time is None:
        covered = "no line with a readable timestamp"
    else:
        first = datetime.fromtimestamp(header.first_time, zone)
        last = datetime.fromtimestamp(header.last_time, zone)
        covered = f"{first:%Y-%m-%d %H:%M:%S} to {last:%Y-%m-%d %H:%M:%S} ({header.timezone}, {first:%z})"
    files = "".join(f"<li>{html.escape(name)}</li>" for name in header.files)
    failed = "".join(f'<li class="failed">{html.escape(message)}</li>' for message in header.failed)
    figures = "".join(
        f'<div class="figure{" alarm" if alarm else ""}"><span class="value">{html.escape(value)}</span>'
        f'<span class="label">{html.escape(label)}</span></div>'
        for label, value, alarm in header.figures
    )
    return (
        f'<header><h1>{html.escape(header.title)}</h1><p class="covered">Time covered: {html.escape(covered)}</p>'
        f'<div class="figures">{figures}</div>'
        f"<details{' open' if failed else ''}><summary>{len(header.files)} file(s) read"
        f"{f', {len(header.failed)} failed' if failed else ''}</summary><ul>{failed}{files}</ul></details>"
        "</header>"
    )


def zone_offset_minutes(timezone: str, when: float | None) -> int:
    """The zone's offset from UTC at `when` (the page's clock labels use it: one offset per page)."""
    offset = datetime.fromtimestamp(when or 0, ZoneInfo(timezone)).utcoffset()
    return int(offset.total_seconds() // 60) if offset else 0
