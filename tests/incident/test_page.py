"""The page itself: self-contained, nothing from the logs read as markup, nothing fetched."""

from __future__ import annotations

import json
import re

import pytest

from monitor.incident.page import Header, ReportPathError, check_writable, render, write_page
from tests.conftest import log_line, run_unprivileged

HOSTILE = "</script><img src=x onerror=\"document.title='pwned'\">"


def header(**changes) -> Header:
    fields = {
        "title": "monitor verify: incident report",
        "first_time": 1761113100.0,
        "last_time": 1761113700.0,
        "timezone": "Asia/Shanghai",
        "files": ["tradingagents.log"],
        "failed": [],
        "figures": [("analyses seen", "7", False)],
    }
    return Header(**(fields | changes))


def scan_data(rule_name: str = "timeout") -> dict:
    series = {
        "first_minute": 29351885,
        "classes": ["success", "warning", "error", "regression"],
        "titles": {"success": "s", "warning": "w", "error": "e", "regression": "r"},
        "counts": {"success": [1, 0], "warning": [0, 0], "error": [2, 3], "regression": [0, 0]},
        "untimed": {"success": 0, "warning": 0, "error": 1, "regression": 0},
        "spikes": [],
    }
    rules = [[rule_name, "error", "error", "MongoDB操作超时", 6]]
    return {
        "kind": "scan",
        "range": [None, None],
        "timezone": "UTC",
        "offset_minutes": 0,
        "series": series,
        "rules": rules,
    }


def test_everything_is_inside_and_the_policy_allows_nothing_else():
    page = render(header(), scan_data())
    assert not re.search(r"<script src|<link|<iframe|<img|src=|href=|url\(|@import", page)
    policy = page.split('http-equiv="Content-Security-Policy" content="')[1].split('"')[0]
    assert policy.startswith("default-src 'none'; script-src 'sha256-")
    assert "unsafe" not in policy
    assert "Time covered: 2025-10-22 14:05:00 to 2025-10-22 14:15:00 (Asia/Shanghai, +0800)" in page


def test_log_text_in_the_header_and_the_data_is_escaped():
    page = render(header(files=[HOSTILE], failed=[f"{HOSTILE}: no such file"]), scan_data(HOSTILE))
    assert HOSTILE not in page
    assert "&lt;/script&gt;&lt;img src=x onerror=&quot;document.title=&#x27;pwned&#x27;&quot;&gt;" in page
    data = page.split('id="report-data">')[1].split("</script>")[0]
    assert json.loads(data)["rules"][0][0] == HOSTILE  # the JSON, read back, is the text as it was
    assert '<li class="failed">' in page


def test_the_page_draws_what_it_was_given_in_a_real_browser(chromium, tmp_path):
    page = tmp_path / "scan.html"
    write_page(page, header(files=[HOSTILE]), scan_data(HOSTILE))
    loaded = chromium.load(page)
    assert (loaded.console, loaded.requests) == ([], [])
    drawn = loaded.drawn()
    assert drawn["series"]["sums"] == {"success": 1, "warning": 0, "error": 6, "regression": 0}
    assert drawn["rules"] == {"rows": 1, "total": 6}
    assert "pwned" not in loaded.dom.split("</title>")[0]


def test_a_page_that_fetches_anything_is_caught(chromium, tmp_path):
    """The harness would fail a report that fetched: the page's own requests are seen even though
    no request can leave, and the report's policy turns any such attempt into a console error."""
    page = tmp_path / "fetching.html"
    write_page(page, header(), scan_data())
    text = page.read_text(encoding="utf-8")
    fetch = '<img src="http://example.invalid/pixel.png">'
    page.write_text(text.replace("<body>", "<body>" + fetch), encoding="utf-8")
    blocked = chromium.load(page)
    assert len(blocked.console) == 1 and "violates the following Content Security Policy" in blocked.console[0]
    page.write_text(
        re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text.replace("<body>", "<body>" + fetch))
    )
    unguarded = chromium.load(page)  # the same page without its policy
    assert unguarded.requests == ["http://example.invalid/pixel.png"]


def test_a_report_into_a_directory_the_user_cannot_write_is_refused_before_reading(shared_directory):
    """`monitor scan LOG --report DIR/x.html` run by a user who may not write DIR (nobody, and root
    owns DIR): exit 2 with the reason, before the log is read; no traceback."""
    log = shared_directory / "app.log"
    log.write_text(log_line("分析完成状态已更新到数据库: 6b11d2752ae2b571f2f1ec4e") + "\n", encoding="utf-8")
    log.chmod(0o644)
    target = shared_directory / "x.html"
    result = run_unprivileged("", check=False, args=("-m", "monitor", "scan", str(log), "--report", str(target)))
    assert result.returncode == 2, result.stderr
    assert f"--report {target}: not writable; choose a writable path" in result.stderr
    assert "Traceback" not in result.stderr
    assert not target.exists()


def test_a_path_that_cannot_be_written_is_said_not_raised(tmp_path):
    with pytest.raises(ReportPathError, match=r"no directory .*absent; create it"):
        check_writable(tmp_path / "absent" / "x.html")
    with pytest.raises(ReportPathError, match="is a directory"):
        check_writable(tmp_path)
    with pytest.raises(ReportPathError, match="cannot write it: No such file or directory"):
        write_page(tmp_path / "absent" / "x.html", header(), scan_data())


def test_the_data_written_a_piece_at_a_time_reads_back_whole(tmp_path):
    page = tmp_path / "scan.html"
    data = scan_data(HOSTILE)
    size = write_page(page, header(), data)
    text = page.read_text(encoding="utf-8")
    assert size == len(text.encode("utf-8"))
    assert json.loads(text.split('id="report-data">')[1].split("</script>")[0]) == data
