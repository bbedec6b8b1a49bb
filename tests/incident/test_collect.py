"""`monitor verify --report`: the page a person opens after an incident, checked in headless Chromium."""

from __future__ import annotations

import json

import pytest
from bson import ObjectId

from tests.conftest import run_monitor

HOSTILE_ID = "</script><img/src=x/onerror=document.title='pwned'>"
HOSTILE_SYMBOL = "</script><script>document.title='pwned'</script>"


def line(minute: int, second: int, message: str, level: str = "INFO") -> str:
    return (
        f"2025-10-22 14:{minute:02d}:{second:02d},000 | backend.tradingagents_server | {level:<8} | "
        f"tradingagents_server:analysis_worker:2552 | {message}\n"
    )


def incident(db) -> tuple[str, dict[str, str]]:
    """A log of seven analyses, one of each verdict (two unrepairable), with a timeout spike."""
    ids = {
        "persisted": str(db.analyses.insert_one({"status": "completed"}).inserted_id),
        "unsuccessful": str(db.analyses.insert_one({"status": "failed"}).inserted_id),
        "lost": str(db.analyses.insert_one({"status": "pending", "created_at": None}).inserted_id),
        "mismatch": str(db.analyses.insert_one({"status": "completed"}).inserted_id),
        "missing": str(ObjectId()),
        "running": str(db.analyses.insert_one({"status": "pending"}).inserted_id),
        "hostile": HOSTILE_ID,
    }
    text = "".join(line(0, i, f"启动真实分析: {ids[k]} - SYM{i} (美股)") for i, k in enumerate(ids) if k != "running")
    text += line(0, 30, f"启动真实分析: {ids['running']} - {HOSTILE_SYMBOL} (美股)")
    text += line(1, 0, f"✅ 分析完成状态已更新到数据库: {ids['persisted']}")
    text += line(1, 0, f"分析 {ids['persisted']} 完成，成功: True")
    text += line(2, 0, f"✅ 分析完成状态已更新到数据库: {ids['unsuccessful']}")
    text += line(2, 0, f"分析 {ids['unsuccessful']} 完成，成功: False")
    for second in (1, 2, 3):
        text += line(3, second, "MongoDB操作超时", "ERROR")
    text += line(3, 10, "⚠️ MongoDB更新返回None，可能更新失败", "WARNING")
    text += line(3, 11, f"✅ 分析完成状态已更新到数据库: {ids['lost']}")
    text += line(3, 11, f"分析 {ids['lost']} 完成，成功: True")
    text += line(4, 0, f"分析 {ids['mismatch']} 执行失败: 数据源超时", "ERROR")
    text += line(4, 0, f"✅ 分析失败状态已更新到数据库: {ids['mismatch']}")
    text += line(5, 0, f"✅ 分析完成状态已更新到数据库: {ids['missing']}")
    text += line(9, 0, f"✅ 分析完成状态已更新到数据库: {ids['hostile']}")
    text += line(9, 0, "MongoDB操作失败: The future belongs to a different loop than the one specified", "ERROR")
    return text, ids


@pytest.fixture
def verified(tmp_path, mongo):
    """The incident verified with --report: (the command's JSON, the page, the ids, the log)."""
    url, name, db = mongo
    text, ids = incident(db)
    log = tmp_path / "tradingagents.log"
    log.write_text(text, encoding="utf-8")
    page = tmp_path / "incident.html"
    flags = ("--mongo-url", url, "--mongo-db", name, "--format", "json", "--report", str(page))
    result = run_monitor("verify", str(log), *flags, env={"TRADINGAGENTS_LOG_TZ": "UTC"})
    assert result.returncode == 1, result.stderr
    assert f"report {page}: " in result.stderr
    return json.loads(result.stdout), page, ids, log


def test_the_page_shows_exactly_what_verify_reported(verified, chromium, tmp_path):
    report, page, ids, log = verified
    loaded = chromium.load(page)
    assert (loaded.console, loaded.requests) == ([], [])
    drawn = loaded.drawn()
    assert drawn["timeline"]["mode"] == "bars"
    assert drawn["timeline"]["analyses"] == 7
    assert drawn["timeline"]["by_verdict"] == {
        "persisted": 1,
        "unsuccessful": 1,
        "lost": 1,
        "mismatch": 1,
        "unrepairable": 2,
        "running": 1,
    }
    flagged = {f["analysis_id"] for f in report["not_persisted"]}
    assert flagged == {ids["lost"], ids["mismatch"], ids["missing"], ids["hostile"]}
    assert (drawn["findings"]["rows"], drawn["findings"]["shown"]) == (4, 4)
    # The per-minute series hold every charted line: 4 success, 1 warning, 1 error... as scan counts them.
    scan = run_monitor("scan", str(log), "--format", "json", env={"TRADINGAGENTS_LOG_TZ": "UTC"})
    counts = {row["rule"]: row["count"] for row in json.loads(scan.stdout)["rules"]}
    assert drawn["series"]["sums"] == {
        "success": counts["analysis_completed_status_persisted"] + counts["analysis_failed_status_persisted"],
        "warning": counts["mongodb_update_returned_none"]
        + counts["analysis_execution_failed"]
        + counts["status_update_failed"]
        + counts["analysis_record_save_failed"],
        "error": counts["mongodb_operation_timeout"] + counts["mongodb_operation_failed"],
        "regression": counts["event_loop_regression"],
    }
    assert drawn["series"]["sums"] == {"success": 6, "warning": 2, "error": 4, "regression": 1}
    assert drawn["series"]["spikes"] == 1  # three timeouts within 10 minutes, held past `for: 2m`


def test_text_from_the_logs_is_shown_never_run(verified, chromium):
    _, page, _, _ = verified
    html = page.read_text(encoding="utf-8")
    assert HOSTILE_ID not in html and HOSTILE_SYMBOL not in html  # only ever as escaped JSON
    loaded = chromium.load(page)
    assert "pwned" not in loaded.dom.split("<title>")[1].split("</title>")[0]
    assert loaded.console == []
    # shown as text in the findings table: the DOM holds it escaped, as text of a cell
    assert "&lt;/script&gt;&lt;img/src=x/onerror=document.title='pwned'&gt;" in loaded.dom


def test_the_repair_plan_and_explain_command_are_on_each_row(verified):
    _, page, ids, log = verified
    data = json.loads(page.read_text(encoding="utf-8").split('id="report-data">')[1].split("</script>")[0])
    rows = {row[0]: row for row in data["findings"]}
    assert rows[ids["lost"]][1] == "lost"
    assert rows[ids["lost"]][8].startswith('repair: set {"status": "completed", "progress": 100.0, "completed_at"')
    assert rows[ids["missing"]][8] == "unrepairable: no document with this id"
    assert rows[ids["mismatch"]][1] == "mismatch"
    assert len(rows[ids["lost"]][7]) == 2  # its two end lines, as the plan's evidence
    assert data["explain"] == f"monitor explain {{id}} {log}"


def test_an_unwritable_report_path_exits_2_before_reading(tmp_path, mongo):
    url, name, _ = mongo
    log = tmp_path / "tradingagents.log"
    log.write_text(line(0, 0, f"✅ 分析完成状态已更新到数据库: {ObjectId()}"), encoding="utf-8")
    for target, said in (
        (tmp_path / "absent" / "x.html", f"--report {tmp_path / 'absent' / 'x.html'}: no directory"),
        (tmp_path, f"--report {tmp_path}: is a directory"),
    ):
        result = run_monitor("verify", str(log), "--mongo-url", url, "--mongo-db", name, "--report", str(target))
        assert result.returncode == 2
        assert said in result.stderr and "Traceback" not in result.stderr
        assert result.stdout == ""


def test_a_failed_input_is_listed_in_red_and_no_plan_is_guessed(tmp_path, mongo):
    url, name, db = mongo
    lost = str(db.analyses.insert_one({"status": "pending"}).inserted_id)
    log = tmp_path / "tradingagents.log"
    log.write_text(line(0, 0, f"✅ 分析完成状态已更新到数据库: {lost}"), encoding="utf-8")
    page, absent = tmp_path / "incident.html", tmp_path / "tradingagents.log.1"
    flags = ("--mongo-url", url, "--mongo-db", name, "--report", str(page))
    result = run_monitor("verify", str(log), str(absent), *flags)
    assert result.returncode == 2
    html = page.read_text(encoding="utf-8")
    assert f'<li class="failed">{absent}: no such file</li>' in html
    data = json.loads(html.split('id="report-data">')[1].split("</script>")[0])
    (row,) = data["findings"]
    assert (row[0], row[1]) == (lost, "lost")
    assert row[8] == "no repair plan: 1 input(s) failed; fix them and run verify again"


def test_the_findings_open_filtered_and_sorted_as_the_link_says(verified, chromium):
    _, page, ids, _ = verified
    unrepairable = chromium.load(page, "verdict=unrepairable&sort=analysis+id").drawn()["findings"]
    backwards = chromium.load(page, "verdict=unrepairable&sort=analysis+id&desc").drawn()["findings"]
    assert (unrepairable["rows"], unrepairable["shown"]) == (4, 2)
    assert set(unrepairable["ids"]) == {ids["missing"], ids["hostile"]}
    assert backwards["ids"] == unrepairable["ids"][::-1]
    by_text = chromium.load(page, "filter=sym2").drawn()["findings"]  # any text of the row, any case
    assert by_text["ids"] == [ids["lost"]]
