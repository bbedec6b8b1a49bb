"""`monitor scan --report`: per-rule counts, the per-minute chart and the rule table, in a real browser."""

from __future__ import annotations

import json

from tests.conftest import GOLDEN, run_monitor

LOG = GOLDEN / "tradingagents.log"


def test_the_scan_page_holds_every_count_scan_printed(tmp_path, chromium):
    page = tmp_path / "scan.html"
    result = run_monitor("scan", str(LOG), "--format", "json", "--report", str(page))
    assert result.returncode == 0, result.stderr
    assert f"report {page}: " in result.stderr
    counts = {row["rule"]: (row["severity"], row["count"]) for row in json.loads(result.stdout)["rules"]}
    loaded = chromium.load(page)
    assert (loaded.console, loaded.requests) == ([], [])
    drawn = loaded.drawn()
    assert "timeline" not in drawn
    assert drawn["rules"] == {"rows": len(counts), "total": sum(count for _, count in counts.values())}

    def charted(severity: str) -> int:
        return sum(n for rule, (s, n) in counts.items() if s == severity and rule != "event_loop_regression")

    assert drawn["series"]["sums"] == {
        "success": charted("success"),
        "warning": charted("warning"),
        "error": charted("error"),
        "regression": counts["event_loop_regression"][1],
    }


def test_an_unwritable_report_exits_2_before_scanning(tmp_path):
    target = tmp_path / "absent" / "scan.html"
    result = run_monitor("scan", str(LOG), "--report", str(target))
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"--report {target}: no directory {target.parent}; create it or choose another path" in result.stderr
