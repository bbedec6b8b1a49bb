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


CREATED = datetime(2025, 10, 22, 6, 0, 0)


def analysis(db, status: str) -> str:
    document = {"status": status, "progress": 50.0, "created_at": CREATED, "completed_at": None}
    return str(db.analyses.insert_one(document).inserted_id)


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
    assert (plan["version"], plan["database"], plan["collection"]) == (2, name, "analyses")
    repairs = {r["analysis_id"]: r for r in plan["repairs"]}
    expected = {"lost_success": "completed", "lost_unsuccessful": "failed", "lost_raised": "failed"}
    assert {a: r["update"]["$set"]["status"] for a, r in repairs.items()} == {ids[n]: s for n, s in expected.items()}
    lost = repairs[ids["lost_success"]]
    # The document as the plan read it is pinned: one made anew since is not the one planned for.
    assert lost["filter"] == {
        "_id": {"$oid": ids["lost_success"]},
        "status": "pending",
        "created_at": {"$date": "2025-10-22T06:00:00Z"},
        "completed_at": None,
    }
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
    assert (
        "3 repair(s) would be applied, 0 already as planned, 0 skipped because the document changed since the "
        "plan; nothing changed (pass --apply)"
    ) in review.stdout
    assert db.analyses.count_documents({"status": "pending"}) == 4  # nothing changed

    # Meanwhile the server's late write lands for one of them: it must not be overwritten.
    db.analyses.update_one({"_id": ObjectId(ids["lost_success"])}, {"$set": {"status": "cancelled"}})
    applied = run_monitor("repair", str(plan_path), *flags, "--apply")
    assert applied.returncode == 1, applied.stderr  # some skipped
    assert (
        "2 repair(s) applied, 0 already as planned, 1 skipped because the document changed since the plan"
        in applied.stdout
    )
    assert f"skipped  {ids['lost_success']}: changed by someone else since the plan (now status 'cancelled')" in (
        applied.stdout
    )
    # The same plan again: what it applied is as planned, what someone else changed still skipped.
    rerun = run_monitor("repair", str(plan_path), *flags, "--apply")
    assert rerun.returncode == 1, rerun.stderr
    assert (
        "0 repair(s) applied, 2 already as planned, 1 skipped because the document changed since the plan"
        in rerun.stdout
    )
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
        "filter": {"_id": {"$oid": target}, "status": "pending", "created_at": None, "completed_at": None},
        "update": {"$set": {"status": "failed", "progress": 100.0}},
        "evidence": [log_line(f"分析 {target} 完成，成功: False")],
    }

    def plan_of(*entries, **fields) -> str:
        return json.dumps(
            {"version": 2, "database": name, "collection": "analyses", **fields, "repairs": list(entries)}
        )

    def changed(**values) -> dict:
        return {**safe, "update": {"$set": {**safe["update"]["$set"], **values}}}

    cases = {
        "garbage": ("{not json", "not a JSON repair plan"),
        "version": (json.dumps({"version": 9, "repairs": []}), "unknown plan version 9"),
        "version 1 (no pinned document)": (json.dumps({"version": 1, "repairs": []}), "unknown plan version 1"),
        "no filter on status": (
            json.dumps({"version": 2, "repairs": [{**safe, "filter": {"_id": {"$oid": target}}}]}),
            'repairs[0]: the filter must be exactly {"_id": <analysis_id>, "status": "pending", \'created_at\'',
        ),
        "a pinned value that is not a date": (
            json.dumps({"version": 2, "repairs": [{**safe, "filter": {**safe["filter"], "created_at": {"$gt": 1}}}]}),
            "repairs[0]: filter.created_at must be a date or null",
        ),
        "other fields": (
            json.dumps({"version": 2, "repairs": [{**safe, "update": {"$set": {"status": "failed", "user_id": "x"}}}]}),
            "repairs[0]: the update must be",
        ),
        "unset": (
            json.dumps({"version": 2, "repairs": [{**safe, "update": {"$unset": {"result_data": ""}}}]}),
            "repairs[0]: the update must be",
        ),
        "version true": (plan_of(safe, version=True), "unknown plan version True"),
        "version 2.0": (plan_of(safe, version=2.0), "unknown plan version 2.0"),
        "progress text": (
            plan_of(changed(progress="-1 hacked")),
            "progress '-1 hacked': a finished analysis' progress is 100.0",
        ),
        "progress operator": (plan_of(changed(progress={"$where": "1"})), "a finished analysis' progress is 100.0"),
        "completed_at text": (plan_of(changed(completed_at="not a date")), "completed_at 'not a date' is not a date"),
        "completed_at 9999": (
            plan_of(changed(completed_at={"$date": "9999-01-01T00:00:00Z"})),
            "is not a date between 2000 and now",
        ),
        "two entries for one id": (plan_of(safe, safe), "repairs[1]: a second entry for"),
        "status against its evidence": (
            plan_of(changed(status="completed")),
            f"repair of {target}: sets 'completed', its evidence lines say failed",
        ),
        "no evidence": (plan_of({**safe, "evidence": []}), "repairs[0]: no evidence lines"),
    }
    for case, (text, said) in cases.items():
        plan = tmp_path / f"{case}.json"
        plan.write_text(text, encoding="utf-8")
        result = run_monitor("repair", str(plan), *flags, "--apply")
        assert result.returncode == 2, case
        assert said in result.stderr, (case, result.stderr)
    assert run_monitor("repair", str(tmp_path / "absent.json"), *flags).returncode == 2
    plan = tmp_path / "ok.json"
    plan.write_text(plan_of(safe), encoding="utf-8")
    no_url = run_monitor("repair", str(plan), "--mongo-db", name, env={"MONGODB_URL": "", "MONGODB_URL_FILE": ""})
    assert no_url.returncode == 2 and "no MongoDB URL" in no_url.stderr
    other_db = run_monitor("repair", str(plan), "--mongo-url", url, "--mongo-db", "elsewhere")
    assert other_db.returncode == 2, other_db.stderr
    assert f"the plan was made for database '{name}', this repair would write to 'elsewhere'" in other_db.stderr
    assert db.analyses.find_one({"_id": ObjectId(target)})["status"] == "pending"  # nothing was changed


def plan_for(tmp_path, db, url, name, lines: list[str], env=ENV) -> dict:
    log = tmp_path / "tradingagents.log"
    log.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    plan_path = tmp_path / "plan.json"
    result = run_monitor(
        "verify", str(log), "--mongo-url", url, "--mongo-db", name, "--repair-plan", str(plan_path), env=env
    )
    assert result.returncode == 1, result.stderr
    return json.loads(plan_path.read_text("utf-8"))


def test_a_plan_is_applied_only_to_the_database_and_collection_the_operator_configured(tmp_path, mongo):
    url, name, db = mongo
    lost = analysis(db, "pending")
    plan = plan_for(tmp_path, db, url, name, [log_line(f"分析 {lost} 完成，成功: True")])
    assert len(plan["repairs"]) == 1
    plan_path = tmp_path / "plan.json"
    users = tmp_path / "users.yaml"
    from tests.conftest import REPO

    users.write_text((REPO / "config.yaml").read_text("utf-8").replace("collection: analyses", "collection: users"))
    wrong_collection = run_monitor(
        "repair", str(plan_path), "--config", str(users), "--mongo-url", url, "--mongo-db", name, "--apply"
    )
    assert wrong_collection.returncode == 2
    assert (
        "the plan was made for collection 'analyses', the config's mongodb.collection is 'users'"
        in wrong_collection.stderr
    )
    wrong_db = run_monitor("repair", str(plan_path), "--mongo-url", url, "--mongo-db", f"{name}_staging", "--apply")
    assert wrong_db.returncode == 2
    assert f"made for database '{name}', this repair would write to '{name}_staging'" in wrong_db.stderr
    nameless = {key: value for key, value in plan.items() if key != "database"}
    (tmp_path / "nameless.json").write_text(json.dumps(nameless), "utf-8")
    no_target = run_monitor(
        "repair", str(tmp_path / "nameless.json"), "--mongo-url", url, "--mongo-db", name, "--apply"
    )
    assert no_target.returncode == 2 and "the plan names no database and collection" in no_target.stderr
    assert db.analyses.find_one({"_id": ObjectId(lost)})["status"] == "pending"
    assert db.client[f"{name}_staging"].analyses.count_documents({}) == 0
    assert db.users.count_documents({}) == 0


def test_an_analysis_run_again_or_a_document_made_anew_is_never_overwritten(tmp_path, mongo):
    url, name, db = mongo
    rerun, remade, reopened, plain = (analysis(db, "pending") for _ in range(4))
    later = LINE_AT.format(time="2025-10-22 14:25:00,000")
    plan = plan_for(
        tmp_path,
        db,
        url,
        name,
        [
            *(log_line(f"分析 {i} 完成，成功: True") for i in (rerun, remade, reopened, plain)),
            # The same analysis started again after it ended (a restart): the document is the new run's.
            later + f"启动真实分析: {rerun} - AAPL (美股)",
        ],
    )
    # The re-run's document is pending because it runs again: the old run's end line does not
    # speak for it, so verify does not flag it and the plan leaves it alone.
    assert {r["analysis_id"] for r in plan["repairs"]} == {remade, reopened, plain}
    assert plan["unrepairable"] == []
    # Between the plan and its application: a document deleted and inserted again, pending, under the
    # same id; another finished (failed) and set back to pending.
    db.analyses.delete_one({"_id": ObjectId(remade)})
    db.analyses.insert_one(
        {"_id": ObjectId(remade), "status": "pending", "created_at": datetime(2025, 10, 23), "completed_at": None}
    )
    db.analyses.update_one(
        {"_id": ObjectId(reopened)}, {"$set": {"status": "failed", "completed_at": datetime(2025, 10, 23)}}
    )
    db.analyses.update_one({"_id": ObjectId(reopened)}, {"$set": {"status": "pending"}})
    applied = run_monitor("repair", str(tmp_path / "plan.json"), "--mongo-url", url, "--mongo-db", name, "--apply")
    assert applied.returncode == 1, applied.stderr
    assert "1 repair(s) applied, 0 already as planned, 2 skipped because the document changed" in applied.stdout
    statuses = {str(d["_id"]): d["status"] for d in db.analyses.find()}
    assert statuses == {rerun: "pending", remade: "pending", reopened: "pending", plain: "completed"}


LINE_AT = "{time} | backend.tradingagents_server | INFO     | tradingagents_server:analysis_worker:2552 | "


def test_completed_at_comes_from_the_end_line_or_is_left_unset(tmp_path, mongo):
    url, name, db = mongo
    timed, untimed = analysis(db, "pending"), analysis(db, "pending")
    plan = plan_for(
        tmp_path,
        db,
        url,
        name,
        [
            log_line(f"分析 {timed} 完成，成功: False"),
            # A time its line has but that cannot be read (second 99): the claim stands, its time does not.
            log_line(f"分析 {untimed} 完成，成功: False").replace("14:20:02,123", "14:20:99,123"),
        ],
    )
    changes = {r["analysis_id"]: r["update"]["$set"] for r in plan["repairs"]}
    assert changes == {
        timed: {"status": "failed", "progress": 100.0, "completed_at": {"$date": "2025-10-22T06:20:02.123Z"}},
        untimed: {"status": "failed", "progress": 100.0},  # never the time verify ran
    }
    review = run_monitor("repair", str(tmp_path / "plan.json"), "--mongo-url", url, "--mongo-db", name)
    assert f"{untimed}: status pending -> failed, progress 100.0, completed_at left unset" in review.stdout
    assert (
        f"{timed}: status pending -> failed, progress 100.0, completed_at 2025-10-22T06:20:02.123000" in review.stdout
    )


def bulk_plan(tmp_path, db, name: str, count: int):
    """A plan of `count` entries for as many pending documents; (plan path, config, matcher, ids)."""
    from monitor.config import load_config
    from monitor.scan.matcher import compile_matcher
    from tests.conftest import REPO

    documents = [{"status": "pending", "created_at": CREATED, "completed_at": None} for _ in range(count)]
    ids = [str(i) for i in db.analyses.insert_many(documents).inserted_ids]
    entries = [
        {
            "analysis_id": analysis_id,
            "filter": {
                "_id": {"$oid": analysis_id},
                "status": "pending",
                "created_at": {"$date": "2025-10-22T06:00:00Z"},
                "completed_at": None,
            },
            "update": {
                "$set": {
                    "status": "completed",
                    "progress": 100.0,
                    "completed_at": {"$date": "2025-10-22T06:20:02.123Z"},
                }
            },
            "evidence": [log_line(f"分析 {analysis_id} 完成，成功: True")],
        }
        for analysis_id in ids
    ]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 2, "database": name, "collection": "analyses", "repairs": entries}), "utf-8")
    loaded = load_config(REPO / "config.yaml", environ={})
    return plan, loaded.config, compile_matcher(loaded.config.rules, loaded.config.timestamp, loaded.where), ids


def test_a_large_plan_is_applied_in_bulk_and_a_rerun_changes_nothing(tmp_path, mongo, capsys):
    """1,200 entries: three bulk writes (500 a round trip, each update with its own pinned filter),
    no read while every document is as planned; the same plan again writes nothing new and says so."""
    from pymongo import monitoring

    from monitor.incident.repair import repair

    url, name, db = mongo
    plan, config, matcher, _ = bulk_plan(tmp_path, db, name, 1200)

    class Commands(monitoring.CommandListener):
        def __init__(self) -> None:
            self.names: list[str] = []

        def started(self, event) -> None:
            if event.database_name == name:
                self.names.append(event.command_name)

        def succeeded(self, event) -> None:
            pass

        def failed(self, event) -> None:
            pass

    commands = Commands()
    monitoring.register(commands)  # every client made from now on reports to it
    assert repair(plan, lambda: (config, matcher), url, name, apply=True) == 0
    assert commands.names == ["update"] * 3
    assert db.analyses.count_documents({"status": "completed", "progress": 100.0}) == 1200
    commands.names.clear()
    capsys.readouterr()
    assert repair(plan, lambda: (config, matcher), url, name, apply=True) == 0  # idempotent
    assert commands.names == ["update", "find"] * 3  # nothing matched: each batch read to say why
    assert capsys.readouterr().out.endswith(
        "0 repair(s) applied, 1200 already as planned, 0 skipped because the document changed since the plan\n"
    )


def test_a_repair_stopped_by_sigterm_finishes_its_batch_lists_the_rest_and_a_rerun_completes_it(
    tmp_path, mongo, capsys
):
    """SIGTERM while the first of three batches is written: that batch is finished (500 applied),
    the 700 entries not attempted are listed, exit 130; the same plan again applies exactly those."""
    import os
    import signal

    from pymongo import monitoring

    from monitor.incident.repair import repair

    url, name, db = mongo
    plan, config, matcher, ids = bulk_plan(tmp_path, db, name, 1200)

    class TermOnFirstWrite(monitoring.CommandListener):
        sent = False

        def started(self, event) -> None:
            if event.database_name == name and event.command_name == "update" and not self.sent:
                self.sent = True
                os.kill(os.getpid(), signal.SIGTERM)  # handled by repair: the stop between batches

        def succeeded(self, event) -> None:
            pass

        def failed(self, event) -> None:
            pass

    monitoring.register(TermOnFirstWrite())
    assert repair(plan, lambda: (config, matcher), url, name, apply=True) == 130
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out[:500]] == [f"applied  {analysis_id}" for analysis_id in ids[:500]]
    assert out[500:-1] == [f"not attempted  {analysis_id}" for analysis_id in ids[500:]]
    assert out[-1] == (
        "500 repair(s) applied, 0 already as planned, 0 skipped because the document changed since the plan, "
        "700 not attempted (interrupted)"
    )
    assert db.analyses.count_documents({"status": "completed"}) == 500
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back
    assert repair(plan, lambda: (config, matcher), url, name, apply=True) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "700 repair(s) applied, 500 already as planned, 0 skipped because the document changed since the plan"
    )
    assert db.analyses.count_documents({"status": "completed"}) == 1200
