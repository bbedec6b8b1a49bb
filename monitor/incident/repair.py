"""`monitor repair PLAN.json`: show (or with `--apply`, make) the changes of a repair plan.

A plan (`monitor.incident.plan`) is checked whole before anything is applied:
only plans of a known version, made for the database and collection this repair
writes to (the config's and `--mongo-db`: the operator's, never the plan's), one
entry per analysis, only filters of exactly `_id`, `"status": "pending"` and the
document as the plan read it (so a status written meanwhile, or a document made
anew, is never overwritten), only updates that set what `verify` itself would:
`status` completed or failed as the entry's own evidence lines say, `progress`
100.0, `completed_at` a date not before the document's creation nor in the future.

Applied in bulk (unordered, each update with its own filter), 500 entries a
round trip. Each entry ends as one of: applied now, already as planned
(a rerun of the same plan: idempotent), changed by someone else since the plan
(skipped), or not attempted (interrupted). Exit status: 0 every entry applied or
already as planned (a dry run: would be), 1 some skipped because the document
changed, 2 a bad plan or database trouble, 130 interrupted (the entries not
attempted are listed).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bson import ObjectId, json_util
from bson.errors import InvalidId

from monitor.config import Config
from monitor.exits import EXIT_BAD_INPUT, EXIT_FOUND, EXIT_INTERRUPTED, EXIT_OK
from monitor.incident.plan import FINAL, PINNED, PLAN_VERSION
from monitor.logs import say
from monitor.reconcile.claims import ClaimExtractor, implied_status
from monitor.reconcile.connect import open_gateway
from monitor.reconcile.mongo_url import NO_URL
from monitor.scan.matcher import Matcher

BATCH = 500  # entries a round trip
EARLIEST = datetime(2000, 1, 1)  # a completed_at before this (or in the future) is no analysis' end


class PlanError(ValueError):
    """A plan that cannot be applied: the message names the entry and what is wrong."""


@dataclass(frozen=True)
class Repair:
    analysis_id: str
    filter: dict[str, Any]
    update: dict[str, Any]
    evidence: tuple[str, ...] = ()

    @property
    def changes(self) -> dict[str, Any]:
        return self.update["$set"]


def read_plan(path: Path) -> tuple[dict[str, Any], list[Repair]]:
    """The plan and its repairs, each checked to be safe; PlanError naming what is wrong."""
    try:
        plan = json_util.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: cannot read the plan: {getattr(exc, 'strerror', None) or exc}") from None
    except Exception as exc:  # json_util raises ValueError, TypeError, OverflowError, bson errors...
        hint = "make one with `monitor verify --repair-plan`"
        raise PlanError(f"{path}: not a JSON repair plan ({type(exc).__name__}: {exc}); {hint}") from None
    version = plan.get("version") if isinstance(plan, dict) else None
    if type(version) is not int or version != PLAN_VERSION:  # True and 1.0 are no version
        found = version if isinstance(plan, dict) else type(plan).__name__
        raise PlanError(f"{path}: unknown plan version {found!r} (this build applies version {PLAN_VERSION})")
    repairs = plan.get("repairs")
    if not isinstance(repairs, list):
        raise PlanError(f"{path}: `repairs` must be a list")
    checked: list[Repair] = []
    first: dict[str, int] = {}
    for index, entry in enumerate(repairs):
        repair = _checked(f"{path}: repairs[{index}]", entry)
        if repair.analysis_id in first:
            raise PlanError(
                f"{path}: repairs[{index}]: a second entry for {repair.analysis_id} "
                f"(the first is repairs[{first[repair.analysis_id]}]); one entry per analysis"
            )
        first[repair.analysis_id] = index
        checked.append(repair)
    return plan, checked


def _checked(where: str, entry: Any) -> Repair:
    if not isinstance(entry, dict):
        raise PlanError(f"{where}: not an object")
    analysis_id = entry.get("analysis_id")
    try:
        object_id = ObjectId(analysis_id)
    except (InvalidId, TypeError):
        raise PlanError(f"{where}: analysis_id {analysis_id!r} is not an ObjectId") from None
    filter_, update = entry.get("filter"), entry.get("update")
    pinned = isinstance(filter_, dict) and set(filter_) == {"_id", "status", *PINNED}
    if not pinned or filter_["_id"] != object_id or filter_["status"] != "pending":
        raise PlanError(
            f'{where}: the filter must be exactly {{"_id": <analysis_id>, "status": "pending"'
            f"{''.join(f', {name!r}: <as read>' for name in PINNED)}}}"
        )
    for name in PINNED:
        if filter_[name] is not None and not isinstance(filter_[name], datetime):
            raise PlanError(f"{where}: filter.{name} must be a date or null, not {filter_[name]!r}")
    changes = update.get("$set") if isinstance(update, dict) and set(update) == {"$set"} else None
    if not isinstance(changes, dict) or not {"status", "progress"} <= set(changes) <= {
        "status",
        "progress",
        "completed_at",
    }:
        raise PlanError(f'{where}: the update must be {{"$set": ...}} of status, progress and completed_at')
    if changes["status"] not in FINAL:
        raise PlanError(f"{where}: status {changes['status']!r}: a repair sets completed or failed")
    if type(changes["progress"]) not in (int, float) or changes["progress"] != 100.0:
        raise PlanError(f"{where}: progress {changes['progress']!r}: a finished analysis' progress is 100.0")
    created = filter_["created_at"]
    if "completed_at" in changes:
        when = changes["completed_at"]
        now = datetime.now(UTC).replace(tzinfo=None)
        if not isinstance(when, datetime) or not EARLIEST <= _naive(when) <= now + timedelta(days=1):
            raise PlanError(f"{where}: completed_at {when!r} is not a date between {EARLIEST:%Y} and now")
        if isinstance(created, datetime) and _naive(when) < _naive(created):
            raise PlanError(f"{where}: completed_at {when.isoformat()} is before the document's created_at")
    evidence = entry.get("evidence")
    if not isinstance(evidence, list) or not evidence or not all(isinstance(line, str) for line in evidence):
        raise PlanError(f"{where}: no evidence lines: a repair rests on the log's lines (`evidence`)")
    return Repair(str(object_id), filter_, {"$set": dict(changes)}, tuple(evidence))


def _naive(when: datetime) -> datetime:
    """UTC without a zone, as PyMongo reads dates."""
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def check_evidence(repairs: list[Repair], config: Config, matcher: Matcher) -> None:
    """Each repair's status must be the one its own evidence lines say (PlanError otherwise)."""
    extractor = ClaimExtractor(config.reconcile.claims)
    for repair in repairs:
        text = "".join(line + "\n" for line in repair.evidence).encode("utf-8")
        said = {
            status
            for claim in extractor.claims(matcher.scan(text).events, "")
            if claim.analysis_id == repair.analysis_id and (status := implied_status(claim.accept))
        }
        if said != {repair.changes["status"]}:
            found = " and ".join(sorted(said)) or "no final status"
            raise PlanError(
                f"repair of {repair.analysis_id}: sets {repair.changes['status']!r}, its evidence lines say {found}"
            )


def describe(repair: Repair) -> str:
    """Every field the repair sets."""
    changes = repair.changes
    when = changes.get("completed_at")
    at = _naive(when).isoformat() if isinstance(when, datetime) else "left unset (the end line has no time of its own)"
    status, progress = changes["status"], changes["progress"]
    return f"{repair.analysis_id}: status pending -> {status}, progress {progress}, completed_at {at}"


@dataclass
class Outcome:
    applied: int = 0  # a dry run: would be applied
    already: int = 0
    changed: int = 0
    not_attempted: int = 0


def repair(
    plan_path: Path,
    load: Callable[[], tuple[Config, Matcher]],
    mongo_url: str | None,
    mongo_db: str | None,
    apply: bool,
) -> int:
    """The command (see the module's doc for what it checks and its exit statuses).

    `load` gives the config and its matcher: only once the plan is known to be well formed."""
    from monitor.reconcile.mongo import MongoQueryError, MongoUnavailableError

    try:
        plan, repairs = read_plan(plan_path)
    except PlanError as exc:
        say(str(exc))
        return EXIT_BAD_INPUT
    config, matcher = load()
    # The target is the operator's (config, --mongo-db), never the plan's: a plan only has to agree.
    database, collection = mongo_db or config.mongodb.database, config.mongodb.collection
    wrong = _target_mismatch(plan, database, collection)
    if wrong:
        say(f"{plan_path}: {wrong}; nothing changed")
        return EXIT_BAD_INPUT
    try:
        check_evidence(repairs, config, matcher)
    except PlanError as exc:
        say(f"{plan_path}: {exc}; nothing changed")
        return EXIT_BAD_INPUT
    gateway = open_gateway(config, mongo_url, database)
    if gateway is None:
        say(f"repair: {NO_URL}")
        return EXIT_BAD_INPUT
    outcome = Outcome()
    stop = threading.Event()
    with _StopOnSignals(stop):
        try:
            for start in range(0, len(repairs), BATCH):
                if stop.is_set():
                    rest = repairs[start:]
                    outcome.not_attempted = len(rest)
                    for entry in rest:
                        print(f"not attempted  {entry.analysis_id}")
                    break
                _one_batch(gateway, repairs[start : start + BATCH], apply, outcome)
        except (MongoUnavailableError, MongoQueryError) as exc:
            done = f"{outcome.applied} applied, {outcome.already} already as planned" if apply else ""
            say(f"{exc}; {done or 'nothing changed'}; run the same plan again once MongoDB answers")
            return EXIT_BAD_INPUT
        finally:
            gateway.close()
    verb = "applied" if apply else "would be applied"
    print(
        f"{outcome.applied} repair(s) {verb}, {outcome.already} already as planned, "
        f"{outcome.changed} skipped because the document changed since the plan"
        + (f", {outcome.not_attempted} not attempted (interrupted)" if outcome.not_attempted else "")
        + ("" if apply else "; nothing changed (pass --apply)")
    )
    if outcome.not_attempted:
        return EXIT_INTERRUPTED
    return EXIT_FOUND if outcome.changed else EXIT_OK


def _one_batch(gateway, batch: list[Repair], apply: bool, outcome: Outcome) -> None:
    """One round trip when every document is as the plan saw it; a second one says what the others are."""
    if apply:
        matched = gateway.repair_many([(entry.filter, entry.update) for entry in batch])
        if matched == len(batch):
            outcome.applied += matched
            for entry in batch:
                print(f"applied  {describe(entry)}")
            return
        outcome.applied += matched
    documents = gateway.repair_fields([entry.analysis_id for entry in batch])
    as_planned = 0
    for entry in batch:
        document = documents.get(entry.analysis_id)
        if apply and _as_planned(document, entry):
            as_planned += 1
            print(f"as planned  {describe(entry)}")
        elif not apply and _matches(document, entry.filter):
            outcome.applied += 1
            print(f"would apply  {describe(entry)}")
        elif not apply and _as_planned(document, entry):
            outcome.already += 1
            print(f"already as planned  {entry.analysis_id}")
        else:
            outcome.changed += 1
            now = "deleted" if document is None else f"status {document.get('status')!r}"
            print(f"skipped  {entry.analysis_id}: changed by someone else since the plan (now {now})")
    if apply:  # of the documents now as planned, `matched` were written by this run
        outcome.already += as_planned - matched


def _matches(document: dict[str, Any] | None, filter_: dict[str, Any]) -> bool:
    return document is not None and all(_same(document.get(k), v) for k, v in filter_.items() if k != "_id")


def _as_planned(document: dict[str, Any] | None, entry: Repair) -> bool:
    return document is not None and all(_same(document.get(k), v) for k, v in entry.changes.items())


def _same(found: Any, planned: Any) -> bool:
    if isinstance(found, datetime) and isinstance(planned, datetime):
        # MongoDB keeps milliseconds.
        return abs(_naive(found) - _naive(planned)) < timedelta(milliseconds=1)
    return found == planned


class _StopOnSignals:
    """SIGTERM and SIGINT end the repair between two batches (a batch in flight is finished)."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, lambda *_: self._stop.set())

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _target_mismatch(plan: dict[str, Any], database: str, collection: str) -> str:
    """Why the plan may not be applied to `database`.`collection` ("" if it may)."""
    planned_db, planned_collection = plan.get("database"), plan.get("collection")
    if not isinstance(planned_db, str) or not isinstance(planned_collection, str):
        return (
            "the plan names no database and collection (`database`, `collection`): "
            "make it again with `monitor verify --repair-plan`"
        )
    if planned_db != database:
        return (
            f"the plan was made for database {planned_db!r}, this repair would write to {database!r} "
            f"(--mongo-db, else mongodb.database); pass --mongo-db {planned_db} if that is the one you mean"
        )
    if planned_collection != collection:
        return (
            f"the plan was made for collection {planned_collection!r}, the config's mongodb.collection is "
            f"{collection!r}; use the config the plan was made with"
        )
    return ""
