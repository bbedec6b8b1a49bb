"""`monitor verify --repair-plan` and `monitor repair` end to end against a real MongoDB wire-protocol server."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from bson import ObjectId

from tests.conftest import log_line, run_monitor

# log_line's fixed time, 2025-10-22 14:20:02,123 in the config's zone (Asia/Shanghai), in UTC:
ENDED = datetime(2025, 10, 22, 6, 20, 2, 123000)
ENV = {"TRADINGAGENTS_LOG_TZ": "Asia/Shanghai"}


def analysis(db, status: str) -> str:
    return str(db.analyses.insert_one({"status": status, "progress": 50.0, "completed_at": None}).inserted_id)


def scenario(tmp_path, db) -> tuple[dict[str, str], str]:
    ids = {
        "lost_success": analysis(db, "pending"),
        "lost_unsuccessful": analysis(db, "pending"),
        "lost_raised": analysis(db, "pending"),
        "no_end_line": analysis(db, "pending"),
        "wrong_final": analysis(db, "completed"),
        "ok": analysis(db, "completed"),
        "missing": str(ObjectId()),
        "fallback": str(uuid.uuid4()),
    }
    lines = []
    for name, success in (("lost_success", True), ("lost_unsuccessful", False), ("wrong_final", False), ("ok", True)):
        lines += [f"✅ 分析完成状态已更新到数据库: {ids[name]}", f"分析 {ids[name]} 完成，成功: {success}"]
    lines += [f"分析 {ids['lost_raised']} 执行失败: 数据源超时", f"✅ 分析失败状态已更新到数据库: {ids['lost_raised']}"]
    lines += [f"✅ 分析完成状态已更新到数据库: {ids[n]}" for n in ("no_end_line", "missing", "fallback")]
    log = tmp_path / "tradingagents.log"
    log.write_text("".join(log_line(line) + "\n" for line in lines), encoding="utf-8")
    return ids, str(log)


def test_plan_review_apply_then_verify_reports_only_the_unrepairable(tmp_path, mongo):
    url, name, db = mongo
    ids, log = scenario(tmp_path, db)
    plan_path = tmp_path / "plan.json"
    flags = ("--mongo-url", url, "--mongo-db", name)
    result = run_monitor("verify", log, *flags, "--repair-plan", str(plan_path), env=ENV)
    assert result.returncode == 1, result.stderr
    assert "3 repair(s), 4 unrepairable" in result.stderr
    plan = json.loads(plan_path.read_text("utf-8"))
    assert (plan["version"], plan["database"], plan["collection"]) == (1, name, "analyses")
    repairs = {r["analysis_id"]: r for r in plan["repairs"]}
    expected = {"lost_success": "completed", "lost_unsuccessful": "failed", "lost_raised": "failed"}
    assert {a: r["update"]["$set"]["status"] for a, r in repairs.items()} == {ids[n]: s for n, s in expected.items()}
    lost = repairs[ids["lost_success"]]
    assert lost["filter"] == {"_id": {"$oid": ids["lost_success"]}, "status": "pending"}
    assert lost["update"]["$set"]["progress"] == 100.0
    assert lost["update"]["$set"]["completed_at"] == {"$date": "2025-10-22T06:20:02.123Z"}
    assert lost["evidence"] == [
        log_line(f"✅ 分析完成状态已更新到数据库: {ids['lost_success']}"),
        log_line(f"分析 {ids['lost_success']} 完成，成功: True"),
    ]
    reasons = {u["analysis_id"]: u["reason"] for u in plan["unrepairable"]}
    assert reasons == {
        ids["no_end_line"]: "no line in the logs says how the analysis ended",
        ids["wrong_final"]: "MongoDB holds the final status 'completed' and the logs say 'failed': not overwritten",
        ids["missing"]: "no document with this id",
        ids["fallback"]: "not a MongoDB ObjectId: the analysis was never in the database (in-memory fallback?)",
    }

    review = run_monitor("repair", str(plan_path), *flags)
    assert review.returncode == 0, review.stderr
    assert "3 repair(s) would be applied, 0 would be skipped; nothing changed (pass --apply)" in review.stdout
    assert db.analyses.count_documents({"status": "pending"}) == 4  # nothing changed

    # Meanwhile the server's late write lands for one of them: it must not be overwritten.
    db.analyses.update_one({"_id": ObjectId(ids["lost_success"])}, {"$set": {"status": "cancelled"}})
    applied = run_monitor("repair", str(plan_path), *flags, "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "2 repair(s) applied, 1 skipped because the document changed" in applied.stdout
    statuses = {str(d["_id"]): d for d in db.analyses.find()}
    assert statuses[ids["lost_success"]]["status"] == "cancelled"
    assert statuses[ids["lost_raised"]]["status"] == "failed"
    assert statuses[ids["lost_unsuccessful"]]["completed_at"] == ENDED
    assert statuses[ids["lost_unsuccessful"]]["progress"] == 100.0

    again = run_monitor("verify", log, *flags, "--format", "json", env=ENV)
    assert again.returncode == 1
    flagged = {f["analysis_id"] for f in json.loads(again.stdout)["not_persisted"]}
    assert flagged == {ids[n] for n in ("no_end_line", "wrong_final", "missing", "fallback")}


def test_a_plan_that_is_unreadable_unknown_or_unsafe_is_refused_with_exit_2(tmp_path, mongo):
    url, name, db = mongo
    target = analysis(db, "pending")
    flags = ("--mongo-url", url, "--mongo-db", name)
    safe = {
        "analysis_id": target,
        "filter": {"_id": {"$oid": target}, "status": "pending"},
        "update": {"$set": {"status": "failed", "progress": 100.0}},
        "evidence": [],
    }
    cases = {
        "garbage": ("{not json", "not a JSON repair plan"),
        "version": (json.dumps({"version": 9, "repairs": []}), "unknown plan version 9"),
        "no filter on status": (
            json.dumps({"version": 1, "repairs": [{**safe, "filter": {"_id": {"$oid": target}}}]}),
            'repairs[0]: the filter must be exactly {"_id": <analysis_id>, "status": "pending"}',
        ),
        "other fields": (
            json.dumps({"version": 1, "repairs": [{**safe, "update": {"$set": {"status": "failed", "user_id": "x"}}}]}),
            "repairs[0]: the update must be",
        ),
        "unset": (
            json.dumps({"version": 1, "repairs": [{**safe, "update": {"$unset": {"result_data": ""}}}]}),
            "repairs[0]: the update must be",
        ),
    }
    for case, (text, said) in cases.items():
        plan = tmp_path / f"{case}.json"
        plan.write_text(text, encoding="utf-8")
        result = run_monitor("repair", str(plan), *flags, "--apply")
        assert result.returncode == 2, case
        assert said in result.stderr, (case, result.stderr)
    assert run_monitor("repair", str(tmp_path / "absent.json"), *flags).returncode == 2
    plan = tmp_path / "ok.json"
    plan.write_text(json.dumps({"version": 1, "database": name, "repairs": [safe]}), encoding="utf-8")
    no_url = run_monitor("repair", str(plan), "--mongo-db", name, env={"MONGODB_URL": "", "MONGODB_URL_FILE": ""})
    assert no_url.returncode == 2 and "no MongoDB URL" in no_url.stderr
    other_db = run_monitor("repair", str(plan), "--mongo-url", url, "--mongo-db", "elsewhere")
    assert other_db.returncode == 2 and f"was made for database '{name}'" in other_db.stderr
    assert db.analyses.find_one({"_id": ObjectId(target)})["status"] == "pending"  # nothing was changed
