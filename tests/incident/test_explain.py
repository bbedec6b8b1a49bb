"""`monitor explain ID FILE...` end to end against a real MongoDB wire-protocol server."""

from __future__ import annotations

import gzip
import json
import uuid

from bson import ObjectId

from tests.conftest import run_monitor

NO_URL = {"MONGODB_URL": "", "MONGODB_URL_FILE": ""}
OTHER = "68f8741c3512a67997df93d9"  # another analysis, interleaved as concurrent workers write


def line(second: int, msg: str, level: str = "INFO") -> str:
    return (
        f"2025-10-22 14:20:{second:02d},123 | backend.tradingagents_server | {level:<8} | "
        f"tradingagents_server:analysis_worker:2552 | {msg}"
    )


def write_log(path, lines: list[str]) -> None:
    path.write_text("".join(text + "\n" for text in lines), encoding="utf-8")


def lifecycle(analysis_id: str, success: bool) -> list[str]:
    """One worker's lines as the server writes them, with another analysis and an id-less line between."""
    return [
        line(1, f"✅ 分析记录已保存到数据库: {analysis_id}"),
        line(2, f"启动真实分析: {analysis_id} - AAPL (美股)"),
        line(3, f"分析 {OTHER} 进度: 10% - 📊 市场分析师 正在分析 TSLA"),
        line(4, f"分析 {analysis_id} 进度: 33% - 📊 市场分析师 正在分析 AAPL"),
        line(5, "MongoDB操作超时", "ERROR"),
        line(6, f"✅ 分析完成状态已更新到数据库: {analysis_id}"),
        line(7, f"分析 {analysis_id} 完成，成功: {success}"),
    ]


LIFECYCLE_LINES = [
    (1, ["analysis_record_saved"]),
    (2, ["analysis_started"]),
    (4, ["analysis_progress"]),
    (6, ["analysis_completed_status_persisted"]),
    (7, ["analysis_finished"]),
]


def explain(*args: str, env: dict[str, str] | None = None):
    result = run_monitor("explain", *args, "--format", "json", env=env)
    return result, (json.loads(result.stdout) if result.stdout else None)


def test_a_persisted_analysis_exits_0_with_every_line_naming_it(tmp_path, mongo):
    url, name, db = mongo
    analysis_id = str(db.analyses.insert_one({"status": "completed", "progress": 100.0}).inserted_id)
    log = tmp_path / "tradingagents.log"
    write_log(log, lifecycle(analysis_id, success=True))
    result, report = explain(analysis_id, str(log), "--mongo-url", url, "--mongo-db", name)
    assert result.returncode == 0, result.stderr
    assert [(n["file"], n["line"], n["rules"]) for n in report["lines"]] == [
        (str(log), number, rules) for number, rules in LIFECYCLE_LINES
    ]
    assert report["lines"][0]["text"] == line(1, f"✅ 分析记录已保存到数据库: {analysis_id}")
    assert report["claims"] == [
        {"claim": "completed_status_written", "expected": ["completed", "failed", "cancelled"], "outcome": "confirmed"},
        {"claim": "finished_success", "expected": ["completed", "cancelled"], "outcome": "confirmed"},
    ]
    assert report["document"] == {"_id": analysis_id, "status": "completed"}
    assert (report["analysis_id"], report["verdict"], report["log_says"]) == (analysis_id, "persisted", "completed")
    assert (report["lines_not_shown"], report["document_lookup"]) == (0, "found")
    table = run_monitor("explain", analysis_id, str(log), "--mongo-url", url, "--mongo-db", name)
    assert table.returncode == 0, table.stderr
    assert f"analysis {analysis_id}: 5 line(s) naming it in 1 file(s)" in table.stdout
    assert "MongoDB document: status='completed'" in table.stdout
    assert table.stdout.rstrip().endswith("verdict: persisted")


def test_a_lost_status_exits_1_and_says_what_the_log_says_it_should_be(tmp_path, mongo):
    url, name, db = mongo
    analysis_id = str(db.analyses.insert_one({"status": "pending", "progress": 0.0}).inserted_id)
    log = tmp_path / "tradingagents.log"
    write_log(log, lifecycle(analysis_id, success=True))
    result, report = explain(analysis_id, str(log), "--mongo-url", url, "--mongo-db", name)
    assert result.returncode == 1, result.stderr
    assert [(c["claim"], c["outcome"]) for c in report["claims"]] == [
        ("completed_status_written", "status_mismatch"),
        ("finished_success", "status_mismatch"),
    ]
    assert report["document"] == {"_id": analysis_id, "status": "pending"}
    assert (report["verdict"], report["log_says"]) == ("not persisted", "completed")
    table = run_monitor("explain", analysis_id, str(log), "--mongo-url", url, "--mongo-db", name)
    assert table.returncode == 1
    assert "status should be 'completed'; MongoDB still holds 'pending'" in table.stdout
    assert (
        "verdict: not persisted (completed_status_written: status_mismatch; finished_success: status_mismatch)"
        in table.stdout
    )


def test_an_unsuccessful_analysis_with_its_failed_status_is_persisted(tmp_path, mongo):
    url, name, db = mongo
    analysis_id = str(db.analyses.insert_one({"status": "failed", "progress": 100.0}).inserted_id)
    log = tmp_path / "tradingagents.log"
    write_log(log, lifecycle(analysis_id, success=False))
    result, report = explain(analysis_id, str(log), "--mongo-url", url, "--mongo-db", name)
    assert result.returncode == 0, result.stderr
    assert [(c["claim"], c["outcome"]) for c in report["claims"]] == [
        ("completed_status_written", "confirmed"),
        ("finished_failure", "confirmed"),
    ]
    assert (report["verdict"], report["log_says"]) == ("persisted", "failed")


def test_a_uuid_is_an_invalid_id_never_queried(tmp_path):
    """The in-memory fallback's id: judged without MongoDB, so even an unreachable URL is no error."""
    fallback = str(uuid.uuid4())
    log = tmp_path / "tradingagents.log"
    write_log(
        log,
        [
            line(1, "⚠️ 保存分析到数据库失败: connection refused，将继续使用内存存储", "WARNING"),
            line(2, f"启动真实分析: {fallback} - AAPL (美股)"),
            line(3, f"分析 {fallback} 执行失败: 数据源超时", "ERROR"),
        ],
    )
    unreachable = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300"
    result, report = explain(fallback, str(log), "--mongo-url", unreachable)
    assert result.returncode == 1, result.stderr
    assert [(n["line"], n["rules"]) for n in report["lines"]] == [
        (2, ["analysis_started"]),
        (3, ["analysis_execution_failed"]),
    ]
    assert report["claims"] == [
        {"claim": "worker_raised", "expected": ["failed", "cancelled"], "outcome": "invalid_id"}
    ]
    assert (report["document"], report["document_lookup"]) == (None, "invalid_id")
    assert (report["verdict"], report["log_says"]) == ("not persisted", "failed")
    table = run_monitor("explain", fallback, str(log), env=NO_URL)
    assert table.returncode == 1
    assert "never looked up in MongoDB" in table.stdout


def test_reads_a_gz_file_among_the_inputs_in_the_order_given(tmp_path, mongo):
    url, name, db = mongo
    analysis_id = str(db.analyses.insert_one({"status": "completed"}).inserted_id)
    lines = lifecycle(analysis_id, success=True)
    rotated = tmp_path / "tradingagents.log.2.gz"
    with gzip.open(rotated, "wt", encoding="utf-8") as f:
        f.write("".join(text + "\n" for text in lines[:4]))
    current = tmp_path / "tradingagents.log"
    write_log(current, lines[4:])
    result, report = explain(analysis_id, str(rotated), str(current), "--mongo-url", url, "--mongo-db", name)
    assert result.returncode == 0, result.stderr
    assert [(n["file"], n["line"], n["rules"]) for n in report["lines"]] == [
        (str(rotated), 1, ["analysis_record_saved"]),
        (str(rotated), 2, ["analysis_started"]),
        (str(rotated), 4, ["analysis_progress"]),
        (str(current), 2, ["analysis_completed_status_persisted"]),
        (str(current), 3, ["analysis_finished"]),
    ]
    assert report["verdict"] == "persisted"


def test_without_a_url_the_lines_and_claims_are_shown_and_it_exits_0(tmp_path):
    analysis_id = str(ObjectId())
    log = tmp_path / "tradingagents.log"
    write_log(log, lifecycle(analysis_id, success=True))
    result, report = explain(analysis_id, str(log), env=NO_URL)
    assert result.returncode == 0, result.stderr
    assert [(n["line"], n["rules"]) for n in report["lines"]] == [(n, r) for n, r in LIFECYCLE_LINES]
    assert [(c["claim"], c["outcome"]) for c in report["claims"]] == [
        ("completed_status_written", "not_checked"),
        ("finished_success", "not_checked"),
    ]
    assert (report["document"], report["document_lookup"]) == (None, "no_url")
    assert (report["verdict"], report["log_says"]) == ("not checked: no MongoDB URL", "completed")
    table = run_monitor("explain", analysis_id, str(log), env=NO_URL)
    assert table.returncode == 0
    assert "no MongoDB URL: document not looked up" in table.stdout


def test_a_running_analysis_has_no_claim_and_shows_its_last_line(tmp_path, mongo):
    url, name, db = mongo
    analysis_id = str(db.analyses.insert_one({"status": "pending"}).inserted_id)
    log = tmp_path / "tradingagents.log"
    write_log(log, lifecycle(analysis_id, success=True)[:4])
    result, report = explain(analysis_id, str(log), "--mongo-url", url, "--mongo-db", name)
    assert result.returncode == 0, result.stderr
    assert (report["claims"], report["verdict"], report["log_says"]) == ([], "no claim in the logs", None)
    assert report["document"] == {"_id": analysis_id, "status": "pending"}
    table = run_monitor("explain", analysis_id, str(log), "--mongo-url", url, "--mongo-db", name)
    assert (
        f"verdict: no claim in the logs: nothing says it ended (still running?); its last line is {log}:4 "
        "at 2025-10-22 14:20:04,123" in table.stdout
    )


def test_an_unreachable_database_exits_2_without_the_password(tmp_path):
    analysis_id = str(ObjectId())
    log = tmp_path / "tradingagents.log"
    write_log(log, lifecycle(analysis_id, success=True))
    url = "mongodb://admin:hunter2@127.0.0.1:1/?serverSelectionTimeoutMS=300"
    for output in ("table", "json"):
        result = run_monitor("explain", analysis_id, str(log), "--mongo-url", url, "--format", output)
        assert result.returncode == 2
        assert result.stdout == ""
        assert (
            f"monitor: MongoDB at mongodb://127.0.0.1:1/ is unreachable: "
            f"the document of {analysis_id} was not looked up" in result.stderr
        )
        assert "hunter2" not in result.stderr + result.stdout


def test_a_one_megabyte_line_naming_it_is_cut(tmp_path):
    analysis_id = str(ObjectId())
    huge = line(1, f"分析 {analysis_id} 进度: 50% - " + "x" * 1_000_000)
    log = tmp_path / "tradingagents.log"
    write_log(log, [huge, line(2, f"分析 {analysis_id} 完成，成功: True")])
    result, report = explain(analysis_id, str(log), env=NO_URL)
    assert result.returncode == 0, result.stderr
    first = report["lines"][0]
    assert (first["line"], first["rules"]) == (1, ["analysis_progress"])
    assert first["text"] == huge[:2000] + f"… [line cut: {len(huge)} characters, first 2000 shown]"
    assert len(result.stdout) < 5000
    table = run_monitor("explain", analysis_id, str(log), env=NO_URL)
    assert table.returncode == 0
    # The table wraps the text where the terminal width says: compare its words, not its layout.
    words = " ".join(table.stdout.replace("│", " ").split())
    assert f"line cut: {len(huge)} characters, first 2000 shown" in words
    assert len(table.stdout) < 20_000


def test_bad_input_exits_2(tmp_path):
    log = tmp_path / "tradingagents.log"
    write_log(log, [line(1, f"启动真实分析: {ObjectId()} - AAPL (美股)")])
    missing = tmp_path / "gone.log"
    result = run_monitor("explain", str(ObjectId()), str(log), str(missing), env=NO_URL)
    assert result.returncode == 2
    assert f"monitor: {missing}: no such file" in result.stderr
    result = run_monitor("explain", " ", str(log), env=NO_URL)
    assert result.returncode == 2
    assert "monitor: explain: ID is empty" in result.stderr


def test_quoted_globs_are_expanded_and_a_pattern_matching_nothing_exits_2(tmp_path):
    analysis_id = str(ObjectId())
    lines = lifecycle(analysis_id, success=True)
    write_log(tmp_path / "tradingagents.log.1", lines[:3])
    write_log(tmp_path / "tradingagents.log", lines[3:])
    (tmp_path / "tradingagents.log.2.gz").write_bytes(gzip.compress(b""))
    result, report = explain(analysis_id, str(tmp_path / "tradingagents.log*"), env=NO_URL)
    assert result.returncode == 0, result.stderr
    assert [(n["file"], n["line"]) for n in report["lines"]] == [  # in the lines' own time order
        (str(tmp_path / "tradingagents.log.1"), 1),
        (str(tmp_path / "tradingagents.log.1"), 2),
        (str(tmp_path / "tradingagents.log"), 1),
        (str(tmp_path / "tradingagents.log"), 3),
        (str(tmp_path / "tradingagents.log"), 4),
    ]
    pattern = str(tmp_path / "archive" / "*.gz")
    result, _ = explain(analysis_id, pattern, str(tmp_path / "tradingagents.log"), env=NO_URL)
    assert result.returncode == 2
    assert f"monitor: {pattern}: no file matches this pattern" in result.stderr


def at(minute: int, msg: str) -> str:
    return line(0, msg).replace("14:20:00,123", f"{10 + minute // 60:02d}:{minute % 60:02d}:00,123")


def test_a_retry_is_judged_by_the_lines_own_time_not_the_files_order(tmp_path, mongo):
    """The README's glob `tradingagents.log*` reads the oldest rotated file last: its failed attempt
    (10:05) must not outweigh the retry that completed (11:30)."""
    url, name, db = mongo
    analysis_id = str(db.analyses.insert_one({"status": "completed", "progress": 100.0}).inserted_id)
    write_log(
        tmp_path / "tradingagents.log.1",
        [at(0, f"启动真实分析: {analysis_id} - AAPL (美股)"), at(5, f"分析 {analysis_id} 完成，成功: False")],
    )
    write_log(
        tmp_path / "tradingagents.log",
        [
            at(60, f"启动真实分析: {analysis_id} - AAPL (美股)"),
            at(90, f"✅ 分析完成状态已更新到数据库: {analysis_id}"),
            at(90, f"分析 {analysis_id} 完成，成功: True"),
        ],
    )
    files = [str(tmp_path / "tradingagents.log"), str(tmp_path / "tradingagents.log.1")]  # newest first
    result, report = explain(analysis_id, *files, "--mongo-url", url, "--mongo-db", name)
    assert result.returncode == 0, result.stderr
    old, new = files[1], files[0]
    assert [(n["file"], n["line"]) for n in report["lines"]] == [(old, 1), (old, 2), (new, 1), (new, 2), (new, 3)]
    assert [(c["claim"], c["outcome"]) for c in report["claims"]] == [
        ("completed_status_written", "confirmed"),
        ("finished_success", "confirmed"),
    ]
    assert (report["verdict"], report["log_says"]) == ("persisted", "completed")


def test_end_lines_that_disagree_in_one_run_are_ambiguous(tmp_path, mongo):
    url, name, db = mongo
    analysis_id = str(db.analyses.insert_one({"status": "pending"}).inserted_id)
    log = tmp_path / "tradingagents.log"
    write_log(log, [line(1, f"分析 {analysis_id} 完成，成功: True"), line(2, f"分析 {analysis_id} 执行失败: x")])
    result, report = explain(analysis_id, str(log), "--mongo-url", url, "--mongo-db", name)
    assert result.returncode == 1, result.stderr
    assert report["log_says"] == "ambiguous"
    table = run_monitor("explain", analysis_id, str(log), "--mongo-url", url, "--mongo-db", name)
    assert "ended both completed and failed in its last run: ambiguous" in table.stdout
    assert "status should be" not in table.stdout
