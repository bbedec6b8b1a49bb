"""`monitor verify` end to end against a real MongoDB wire-protocol server."""

from __future__ import annotations

import json
import uuid

from bson import ObjectId

from tests.conftest import log_line, run_monitor


def write_log(path, lines: list[str]) -> None:
    path.write_text("".join(log_line(line) + "\n" for line in lines), encoding="utf-8")


def test_lists_the_analyses_whose_status_was_not_persisted(tmp_path, mongo):
    url, name, db = mongo
    ok = str(db.analyses.insert_one({"status": "completed"}).inserted_id)
    lost = str(db.analyses.insert_one({"status": "pending"}).inserted_id)
    wrong = str(db.analyses.insert_one({"status": "completed"}).inserted_id)
    missing = str(ObjectId())
    fallback = str(uuid.uuid4())
    log = tmp_path / "tradingagents.log"
    write_log(
        log,
        [
            f"✅ 分析完成状态已更新到数据库: {ok}",
            f"分析 {ok} 完成，成功: True",
            f"✅ 分析完成状态已更新到数据库: {lost}",
            f"✅ 分析失败状态已更新到数据库: {wrong}",
            f"✅ 分析完成状态已更新到数据库: {missing}",
            f"分析 {fallback} 执行失败: 数据源超时",
            "MongoDB操作超时",
        ],
    )
    result = run_monitor("verify", str(log), "--mongo-url", url, "--mongo-db", name, "--format", "json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert (report["claims"], report["confirmed"]) == (6, 2)
    problems = {(f["analysis_id"], c["claim"], c["outcome"]) for f in report["not_persisted"] for c in f["claims"]}
    assert problems == {
        (lost, "completed_status_written", "status_mismatch"),
        (wrong, "failed_status_written", "status_mismatch"),
        (missing, "completed_status_written", "not_found"),
        (fallback, "worker_raised", "invalid_id"),
    }
    table = run_monitor("verify", str(log), "--mongo-url", url, "--mongo-db", name)
    assert table.returncode == 1
    assert "6 claim(s) in the logs, 2 confirmed in MongoDB, 4 not persisted" in table.stdout
    assert lost in table.stdout and "status='pending'" in table.stdout


def test_all_persisted_exits_0_and_url_from_the_environment(tmp_path, mongo):
    url, name, db = mongo
    ok = str(db.analyses.insert_one({"status": "failed"}).inserted_id)
    log = tmp_path / "tradingagents.log"
    write_log(log, [f"✅ 分析失败状态已更新到数据库: {ok}"])
    result = run_monitor("verify", str(log), env={"MONGODB_URL": url, "MONGODB_DB_NAME": name})
    assert result.returncode == 0, result.stderr
    assert "1 claim(s) in the logs, 1 confirmed in MongoDB, 0 not persisted" in result.stdout


def test_unreachable_database_and_missing_url_exit_2_without_the_password(tmp_path):
    log = tmp_path / "tradingagents.log"
    write_log(log, [f"✅ 分析完成状态已更新到数据库: {ObjectId()}"])
    result = run_monitor(
        "verify",
        str(log),
        "--mongo-url",
        "mongodb://admin:hunter2@127.0.0.1:1/?serverSelectionTimeoutMS=300",
        env={"MONGODB_URL": ""},
    )
    assert result.returncode == 2
    assert "is unreachable: 1 claim(s) not checked" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_without_a_url_one_error_naming_every_source_of_one(tmp_path):
    log = tmp_path / "tradingagents.log"
    write_log(log, [f"✅ 分析完成状态已更新到数据库: {ObjectId()}"])
    result = run_monitor("verify", str(log), env={"MONGODB_URL": "", "MONGODB_URL_FILE": ""})
    assert result.returncode == 2
    assert result.stdout == ""
    (said,) = result.stderr.splitlines()  # one message, no "running log-only" before it
    assert said.startswith("monitor: verify: no MongoDB URL; pass --mongo-url URL")
    for source in ("--mongo-url", "mongodb.url", "MONGODB_URL ", "MONGODB_URL_FILE"):
        assert source in said
    assert "log-only" not in result.stderr and "invalid configuration" not in result.stderr


def test_quoted_globs_are_expanded_and_a_pattern_matching_nothing_exits_2(tmp_path, mongo):
    url, name, db = mongo
    first, second = (str(db.analyses.insert_one({"status": "completed"}).inserted_id) for _ in range(2))
    write_log(tmp_path / "tradingagents.log", [f"✅ 分析完成状态已更新到数据库: {first}"])
    write_log(tmp_path / "tradingagents.log.1", [f"✅ 分析完成状态已更新到数据库: {second}"])
    flags = ("--mongo-url", url, "--mongo-db", name, "--format", "json")
    result = run_monitor("verify", str(tmp_path / "tradingagents.log*"), *flags)
    assert result.returncode == 0, result.stderr
    assert (json.loads(result.stdout)["claims"], json.loads(result.stdout)["confirmed"]) == (2, 2)
    pattern = str(tmp_path / "tradingagents.log.*.gz")
    result = run_monitor("verify", pattern, str(tmp_path / "tradingagents.log"), *flags)
    assert result.returncode == 2
    assert f"monitor: {pattern}: no file matches this pattern" in result.stderr
    report = json.loads(result.stdout)
    assert (report["claims"], report["errors"]) == (1, [f"{pattern}: no file matches this pattern"])


def test_every_path_the_server_takes_is_judged_by_what_its_code_does(tmp_path, mongo):
    """The real worker logs `✅ 分析完成状态已更新到数据库` after a successful AND an unsuccessful
    result (DESIGN.md section 1); `完成，成功:` says which status it wrote. Unsuccessful analyses
    with their `failed` status are no alarm; every lost status is one, whichever path lost it."""
    url, name, db = mongo

    def analysis(status: str) -> str:
        return str(db.analyses.insert_one({"status": status, "progress": 100.0}).inserted_id)

    succeeded, unsuccessful, raised, cancelled = (
        analysis("completed"),
        analysis("failed"),
        analysis("failed"),
        analysis("cancelled"),
    )
    lost_success, lost_unsuccessful, lost_raised = analysis("pending"), analysis("pending"), analysis("pending")
    wrong_way = analysis("completed")  # the log says the result was unsuccessful
    rotated_away = analysis("failed")  # its `完成，成功:` line is in a file no longer there
    lines = []
    for analysis_id, success in (
        (succeeded, True),
        (unsuccessful, False),
        (cancelled, True),
        (lost_success, True),
        (lost_unsuccessful, False),
        (wrong_way, False),
    ):
        lines += [f"✅ 分析完成状态已更新到数据库: {analysis_id}", f"分析 {analysis_id} 完成，成功: {success}"]
    for analysis_id in (raised, lost_raised):
        lines += [f"分析 {analysis_id} 执行失败: 数据源超时", f"✅ 分析失败状态已更新到数据库: {analysis_id}"]
    lines.append(f"✅ 分析完成状态已更新到数据库: {rotated_away}")
    log = tmp_path / "tradingagents.log"
    write_log(log, lines)
    result = run_monitor("verify", str(log), "--mongo-url", url, "--mongo-db", name, "--format", "json")
    assert result.returncode == 1, result.stderr
    findings = json.loads(result.stdout)["not_persisted"]
    assert len(findings) == 4  # one per analysis, each with every claim that failed
    flagged = {(f["analysis_id"], c["claim"]) for f in findings for c in f["claims"]}
    assert flagged == {
        (lost_success, "completed_status_written"),
        (lost_success, "finished_success"),
        (lost_unsuccessful, "completed_status_written"),
        (lost_unsuccessful, "finished_failure"),
        (lost_raised, "worker_raised"),
        (lost_raised, "failed_status_written"),
        (wrong_way, "finished_failure"),
    }


def test_no_secret_of_any_url_shape_reaches_the_output(tmp_path):
    """A password in a query option, or with an unescaped / or @, is never printed."""
    log = tmp_path / "tradingagents.log"
    write_log(log, [f"✅ 分析完成状态已更新到数据库: {ObjectId()}"])
    for url in (
        "mongodb://127.0.0.1:1/x?tlsCertificateKeyFilePassword=s3cretPW&serverSelectionTimeoutMS=300",
        "mongodb://u:s3cret/TAILPW@127.0.0.1:1/x",
        "mongodb://u:s3cret@TAILPW@127.0.0.1:1/x",
    ):
        result = run_monitor("verify", str(log), "--mongo-url", url, env={"MONGODB_URL": ""})
        assert result.returncode == 2, (url, result.stderr)
        output = result.stdout + result.stderr
        assert "s3cret" not in output and "TAILPW" not in output, output


def test_every_claim_is_checked_however_many_beyond_max_pending(tmp_path, mongo):
    """A one-shot check has no reason for the live sidecar's bound: claims are checked in turns of
    reconcile.max_pending, never dropped."""
    url, name, db = mongo
    from tests.conftest import REPO

    config = tmp_path / "config.yaml"
    config.write_text(
        (REPO / "config.yaml").read_text("utf-8").replace("reconcile:\n", "reconcile:\n  max_pending: 10\n", 1)
    )
    ids = [str(db.analyses.insert_one({"status": "pending"}).inserted_id) for _ in range(20)]
    log = tmp_path / "tradingagents.log"
    lines = []
    for analysis_id in ids:
        lines += [f"✅ 分析完成状态已更新到数据库: {analysis_id}", f"分析 {analysis_id} 完成，成功: True"]
    write_log(log, lines)
    result = run_monitor(
        "verify", "--config", str(config), str(log), "--mongo-url", url, "--mongo-db", name, "--format", "json"
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["claims"] == 40
    assert sorted(f["analysis_id"] for f in report["not_persisted"]) == sorted(ids)


def test_no_repair_plan_is_written_when_an_input_failed(tmp_path, mongo):
    url, name, db = mongo
    lost = str(db.analyses.insert_one({"status": "pending"}).inserted_id)
    log = tmp_path / "tradingagents.log"
    write_log(log, [f"分析 {lost} 完成，成功: True"])
    broken = tmp_path / "tradingagents.log.1.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00" + b"not gzip at all" * 10)  # held the analysis' 执行失败 line, once
    plan = tmp_path / "plan.json"
    flags = ("--mongo-url", url, "--mongo-db", name, "--repair-plan", str(plan))
    for inputs in ((str(broken), str(log)), (str(log), str(tmp_path / "nothing-*.log"))):
        result = run_monitor("verify", *inputs, *flags)
        assert result.returncode == 2, result.stderr
        assert f"no repair plan written ({plan}): 1 input(s) failed; fix them and run verify again" in result.stderr
        assert "review it" not in result.stderr
        assert not plan.exists()


def test_an_analysis_run_again_is_judged_by_its_last_run_whatever_the_file_order(tmp_path, mongo):
    """A failed attempt at 10:05 in the oldest rotated file (read last: `tradingagents.log*`), then the
    same analysis started again and completed at 11:30: its document says completed, no alarm. One
    started again and still running (pending) is no alarm either; one whose last run's status was
    lost is."""
    url, name, db = mongo
    retried = str(db.analyses.insert_one({"status": "completed"}).inserted_id)
    running_again = str(db.analyses.insert_one({"status": "pending"}).inserted_id)
    lost_after_retry = str(db.analyses.insert_one({"status": "failed"}).inserted_id)

    def write_at(path, lines: list[tuple[str, str]]) -> None:
        stamped = (log_line(m).replace("2025-10-22 14:20:02,123", f"2025-10-22 {t}") for t, m in lines)
        path.write_text("".join(line + "\n" for line in stamped), encoding="utf-8")

    write_at(
        tmp_path / "tradingagents.log.1",
        [
            ("10:00:00,001", f"启动真实分析: {retried} - AAPL (美股)"),
            ("10:05:00,002", f"✅ 分析完成状态已更新到数据库: {retried}"),
            ("10:05:00,003", f"分析 {retried} 完成，成功: False"),
            ("10:06:00,001", f"启动真实分析: {running_again} - MSFT (美股)"),
            ("10:09:00,002", f"分析 {running_again} 完成，成功: True"),
            ("10:10:00,001", f"启动真实分析: {lost_after_retry} - TSLA (美股)"),
            ("10:12:00,002", f"分析 {lost_after_retry} 完成，成功: False"),
        ],
    )
    write_at(
        tmp_path / "tradingagents.log",
        [
            ("11:00:00,001", f"启动真实分析: {retried} - AAPL (美股)"),
            ("11:30:00,002", f"✅ 分析完成状态已更新到数据库: {retried}"),
            ("11:30:00,003", f"分析 {retried} 完成，成功: True"),
            ("11:31:00,001", f"启动真实分析: {running_again} - MSFT (美股)"),
            ("11:32:00,001", f"启动真实分析: {lost_after_retry} - TSLA (美股)"),
            ("11:40:00,002", f"分析 {lost_after_retry} 完成，成功: True"),
        ],
    )
    result = run_monitor(
        "verify", str(tmp_path / "tradingagents.log*"), "--mongo-url", url, "--mongo-db", name, "--format", "json"
    )
    assert result.returncode == 1, result.stderr
    findings = json.loads(result.stdout)["not_persisted"]
    assert [(f["analysis_id"], [c["claim"] for c in f["claims"]]) for f in findings] == [
        (lost_after_retry, ["finished_success"])
    ]
    # retried's failed claim and running_again's claim are of a first run: said, so the count is explained.
    assert (
        "2 analysis(es) whose claims were all made before the analysis was started again: its later run "
        "speaks for the document, so not counted as lost (`monitor explain ID` shows each run)"
    ) in result.stderr
