"""`monitor repair PLAN.json`: show (or with `--apply`, make) the changes of a repair plan.

A plan (`monitor.incident.plan`) is checked entry by entry before anything is
applied: only plans of a known version, only filters of exactly `_id` and
`"status": "pending"` (so a status written meanwhile is never overwritten), only
updates that set `status`, `progress` and `completed_at`. A document that changed
since the plan is skipped and said so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bson import ObjectId, json_util
from bson.errors import InvalidId

from monitor.config import Config
from monitor.exits import EXIT_BAD_INPUT, EXIT_OK
from monitor.incident.plan import FINAL, PLAN_VERSION, SETTABLE
from monitor.logs import say
from monitor.reconcile.connect import open_gateway
from monitor.reconcile.mongo_url import NO_URL


class PlanError(ValueError):
    """A plan that cannot be applied: the message names the entry and what is wrong."""


@dataclass(frozen=True)
class Repair:
    analysis_id: str
    filter: dict[str, Any]
    update: dict[str, Any]


def read_plan(path: Path) -> tuple[dict[str, Any], list[Repair]]:
    """The plan and its repairs, each checked to be safe; PlanError naming what is wrong."""
    try:
        plan = json_util.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: cannot read the plan: {getattr(exc, 'strerror', None) or exc}") from None
    except (ValueError, TypeError) as exc:
        hint = "make one with `monitor verify --repair-plan`"
        raise PlanError(f"{path}: not a JSON repair plan ({exc}); {hint}") from None
    if not isinstance(plan, dict) or plan.get("version") != PLAN_VERSION:
        found = plan.get("version") if isinstance(plan, dict) else type(plan).__name__
        raise PlanError(f"{path}: unknown plan version {found!r} (this build applies version {PLAN_VERSION})")
    repairs = plan.get("repairs")
    if not isinstance(repairs, list):
        raise PlanError(f"{path}: `repairs` must be a list")
    return plan, [_checked(path, index, entry) for index, entry in enumerate(repairs)]


def _checked(path: Path, index: int, entry: Any) -> Repair:
    where = f"{path}: repairs[{index}]"
    if not isinstance(entry, dict):
        raise PlanError(f"{where}: not an object")
    analysis_id = entry.get("analysis_id")
    try:
        object_id = ObjectId(analysis_id)
    except (InvalidId, TypeError):
        raise PlanError(f"{where}: analysis_id {analysis_id!r} is not an ObjectId") from None
    filter_, update = entry.get("filter"), entry.get("update")
    if filter_ != {"_id": object_id, "status": "pending"}:
        raise PlanError(f'{where}: the filter must be exactly {{"_id": <analysis_id>, "status": "pending"}}')
    changes = update.get("$set") if isinstance(update, dict) and set(update) == {"$set"} else None
    if not isinstance(changes, dict) or not set(changes) <= SETTABLE or changes.get("status") not in FINAL:
        raise PlanError(
            f'{where}: the update must be {{"$set": ...}} of {", ".join(sorted(SETTABLE))} '
            "with status completed or failed"
        )
    return Repair(str(object_id), filter_, update)


def describe(repair: Repair) -> str:
    changes = repair.update["$set"]
    when = changes.get("completed_at")
    at = f", completed_at {when.isoformat()}" if isinstance(when, datetime) else ""
    return f"{repair.analysis_id}: pending -> {changes['status']}{at}"


def repair(
    plan_path: Path, config_of: Callable[[], Config], mongo_url: str | None, mongo_db: str | None, apply: bool
) -> int:
    """The command: every repair of the plan shown, or applied; 2 for a bad plan or database trouble.

    `config_of` loads the config: only once the plan is known to be good."""
    from monitor.reconcile.mongo import MongoQueryError, MongoUnavailableError

    try:
        plan, repairs = read_plan(plan_path)
    except PlanError as exc:
        say(str(exc))
        return EXIT_BAD_INPUT
    config = config_of()
    database = mongo_db or plan.get("database") or config.mongodb.database
    if plan.get("database") and plan["database"] != database:
        say(
            f"{plan_path} was made for database {plan['database']!r}, not {database!r}; "
            f"pass --mongo-db {plan['database']}"
        )
        return EXIT_BAD_INPUT
    gateway = open_gateway(config, mongo_url, database)
    if gateway is None:
        say(f"repair: {NO_URL}")
        return EXIT_BAD_INPUT
    done = skipped = 0
    try:
        for entry in repairs:
            still = gateway.repair_one(entry.filter, entry.update) if apply else gateway.matching(entry.filter)
            if still:
                done += 1
                print(f"{'applied' if apply else 'would apply'}  {describe(entry)}")
            else:
                skipped += 1
                print(f"skipped  {entry.analysis_id}: the document is no longer pending (changed since the plan)")
    except (MongoUnavailableError, MongoQueryError) as exc:
        say(f"{exc}; {done} applied before the failure" if apply else str(exc))
        return EXIT_BAD_INPUT
    finally:
        gateway.close()
    if apply:
        print(f"{done} repair(s) applied, {skipped} skipped because the document changed")
    else:
        print(f"{done} repair(s) would be applied, {skipped} would be skipped; nothing changed (pass --apply)")
    return EXIT_OK
