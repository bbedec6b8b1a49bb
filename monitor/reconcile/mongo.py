"""MongoDB: the one long-lived PyMongo client of the process, and the only queries we make.

The server's bug was an async client driven from the wrong event loop. Here
there is no event loop at all: one synchronous `MongoClient`, created once,
used only by its owner (the reconcile thread, or the `verify` command), with
explicit server-selection, connect and socket timeouts and `maxTimeMS` on
every query, so a hung server costs a bounded wait, never a stuck sidecar.

Every query is read-only (but `repair --apply`'s update, and the stuck-sweep
lease in a collection of its own), uses indexed fields only (`_id`, `status`,
`created_at`) and projects only the status fields. Ids arrive as validated
ObjectIds; nothing from a log line is ever interpreted as a query operator.
The URI's password never appears in a log line, a metric or an error.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import MongoClient, ReturnDocument, UpdateOne, uri_parser
from pymongo.errors import ConnectionFailure, DuplicateKeyError, ExecutionTimeout, PyMongoError

from monitor.config import MongoSettings
from monitor.export.histogram import QUERY_BUCKETS, Histogram
from monitor.reconcile.mongo_url import MongoQueryError, resolve_url

__all__ = [
    "MongoGateway",
    "MongoQueryError",
    "MongoStats",
    "MongoUnavailableError",
    "describe_url",
    "redact",
    "resolve_url",  # resolved in monitor.reconcile.mongo_url, without the driver
]

log = logging.getLogger("monitor.mongo")  # the name operators filter on: see monitor.logs

STATUS_FIELDS = {"status": 1, "created_at": 1, "completed_at": 1}
REPAIR_FIELDS = {"status": 1, "progress": 1, "created_at": 1, "completed_at": 1}
_CREDENTIALS = re.compile(r"(?P<scheme>mongodb(?:\+srv)?://)(?P<user>[^:@/]*):(?P<password>[^@/]*)@")


class MongoUnavailableError(Exception):
    """The server could not be reached (or timed out): try again later, keep the claims."""


def redact(text: str, url: str = "") -> str:
    """Hide the password of any MongoDB URI in `text`, and every piece of `url` that is not a host,
    a port or the database (user, password, option values: a driver's message may echo them)."""
    text = _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    for secret in _secret_pieces(url):
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text


def describe_url(url: str) -> str:
    """What may be shown of a MongoDB URL: scheme, hosts and database; never credentials or options.

    A URL that does not parse is not shown at all: where its password ends cannot be known.

    >>> describe_url("mongodb://u:s3cret@db1:27017,db2/tradingagents?tlsCertificateKeyFilePassword=pw&tls=true")
    'mongodb://db1:27017,db2:27017/tradingagents'
    >>> describe_url("mongodb://u:s3cret/TAILPW@host/x")
    '(a MongoDB URL that does not parse; not shown)'
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in ("mongodb", "mongodb+srv"):
        return "(not a mongodb:// or mongodb+srv:// URL; not shown)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Parsed as mongodb:// even for +srv: the hosts are what we want, without a DNS lookup.
            parsed = uri_parser.parse_uri(f"mongodb://{rest}", validate=False, warn=True)
    except Exception:  # any refusal of the parser: show nothing of it
        return "(a MongoDB URL that does not parse; not shown)"
    nodes = parsed["nodelist"]
    hosts = nodes[0][0] if scheme == "mongodb+srv" and nodes else ",".join(f"{host}:{port}" for host, port in nodes)
    return f"{scheme}://{hosts}/{parsed.get('database') or ''}"


def _secret_pieces(url: str) -> list[str]:
    """The pieces of `url` that are not in its safe description, longest first."""
    if not url:
        return []
    shown = describe_url(url)
    pieces = {p for p in re.split(r"[/@?&=:,;]", url.partition("://")[2]) if len(p) >= 3 and p not in shown}
    return sorted(pieces, key=len, reverse=True)


@dataclass
class MongoStats:
    """What the gateway has seen, as plain values for the metrics stage."""

    up: bool = False
    errors: dict[str, int] = field(default_factory=dict)
    durations: dict[str, Histogram] = field(default_factory=dict)

    def observe(self, operation: str, seconds: float) -> None:
        self.durations.setdefault(operation, Histogram(QUERY_BUCKETS)).observe(seconds)


class MongoGateway:
    """Owns the MongoClient; every method is a bounded query, read-only but for `repair_many` and the
    stuck-sweep lease (`take_lease`, `release_lease`: one document in a collection of its own)."""

    def __init__(
        self,
        settings: MongoSettings,
        url: str,
        clock: Callable[[], float] = time.monotonic,
        client_factory: Callable[..., MongoClient] = MongoClient,
    ) -> None:
        self.settings = settings
        self.where = describe_url(url)
        self._url = url
        self.stats = MongoStats()
        self._clock = clock
        try:
            self._client = client_factory(
                url,
                serverSelectionTimeoutMS=settings.server_selection_timeout_ms,
                connectTimeoutMS=settings.connect_timeout_ms,
                socketTimeoutMS=settings.socket_timeout_ms,
                maxPoolSize=4,
                appname="tradingagents-logmonitor",
                connect=False,  # never block start-up on the database
                tz_aware=False,  # the server writes naive UTC datetimes
            )
        except (PyMongoError, ValueError, TypeError) as exc:
            raise MongoQueryError(f"invalid MongoDB URL {self.where}: {redact(str(exc), url)}") from None
        self._collection = self._client[settings.database][settings.collection]

    def close(self) -> None:
        self._client.close()

    def ping(self) -> bool:
        try:
            self._run("ping", lambda: self._client.admin.command("ping"))
        except (MongoUnavailableError, MongoQueryError):
            return False
        return True

    def find_statuses(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """{id: document with the status fields} for the ids that exist; ids must be validated."""
        return self._by_ids("find_statuses", ids, STATUS_FIELDS)

    def _by_ids(self, operation: str, ids: list[str], fields: dict[str, int]) -> dict[str, dict[str, Any]]:
        object_ids = [ObjectId(i) for i in ids]

        def query() -> dict[str, dict[str, Any]]:
            # One round trip: at most one document per id, so a limit (and first batch) of that many
            # closes the cursor with the first reply.
            most = max(len(object_ids), 1)
            cursor = self._collection.find({"_id": {"$in": object_ids}}, fields, limit=most, batch_size=most)
            return {str(doc["_id"]): doc for doc in cursor.max_time_ms(self.settings.max_time_ms)}

        return self._run(operation, query)

    def repair_many(self, pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> int:
        """The one write this tool makes (`monitor repair --apply`): each update with its own filter,
        in one unordered bulk write; how many filters still matched."""
        requests = [UpdateOne(selector, update) for selector, update in pairs]
        return self._run("repair", lambda: self._collection.bulk_write(requests, ordered=False).matched_count)

    def repair_fields(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """{id: the fields a repair reads or sets} for the ids that exist."""
        return self._by_ids("repair_fields", ids, REPAIR_FIELDS)

    def take_lease(self, collection: str, name: str, holder: str, seconds: float) -> dict[str, Any] | None:
        """Take or renew the lease document `name` for `holder` in one atomic upsert; returns the
        document afterwards, or None when another sidecar created it at the same instant.

        Timed by the database's clock (`$$NOW`), not the sidecars': the holder is kept unless it is
        `holder` or its `expires_at` has passed. `since` is when the holder may start sweeping: now
        on a takeover, kept on a renewal, and one lease period ahead when the document did not exist
        (it may have been lost while another sidecar held it: see `monitor.reconcile.lease`).
        A pipeline update (MongoDB 4.2+) because a filter with `$expr` cannot upsert; dates compared
        as milliseconds (`$toLong`), which MongoDB and the test server (SecantusDB, whose
        date-to-$$NOW comparison is wrong) both get right. Within one `$set` stage every expression
        reads the document as it was before the stage."""
        ahead = {"$add": ["$$NOW", round(seconds * 1000)]}
        mine = {"$eq": ["$holder", holder]}
        update = [
            {
                "$set": {
                    "_take": {"$or": [mine, {"$lt": [{"$toLong": "$expires_at"}, {"$toLong": "$$NOW"}]}]},
                    "_created": {"$eq": [{"$type": "$holder"}, "missing"]},
                }
            },
            {
                "$set": {
                    "holder": {"$cond": ["$_take", holder, "$holder"]},
                    "expires_at": {"$cond": ["$_take", ahead, "$expires_at"]},
                    "seconds": {"$cond": ["$_take", seconds, "$seconds"]},
                    "since": {
                        "$switch": {
                            "branches": [
                                {"case": {"$not": ["$_take"]}, "then": "$since"},
                                {"case": "$_created", "then": ahead},
                                {"case": {"$and": [mine, {"$eq": [{"$type": "$since"}, "date"]}]}, "then": "$since"},
                            ],
                            "default": "$$NOW",
                        }
                    },
                }
            },
            {"$unset": ["_take", "_created"]},
        ]
        leases = self._client[self.settings.database][collection]

        def query() -> dict[str, Any] | None:
            try:
                return leases.find_one_and_update(
                    {"_id": name},
                    update,
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                    maxTimeMS=self.settings.max_time_ms,
                )
            except DuplicateKeyError:  # two upserts raced to create it: the other one won
                return None

        return self._run("lease", query)

    def release_lease(self, collection: str, name: str, holder: str) -> bool:
        """Expire the lease document now if `holder` still holds it; True if it did. Expired, not
        deleted: a document that exists can be taken at once, a created one makes its creator wait."""
        leases = self._client[self.settings.database][collection]
        expire = [{"$set": {"expires_at": "$$NOW"}}]
        return self._run(
            "lease_release", lambda: leases.update_one({"_id": name, "holder": holder}, expire).matched_count == 1
        )

    def note_reported(self, collection: str, name: str, holder: str, ids: list[str], keep: int) -> bool:
        """Add `ids` to the lease document's memory of reported stuck analyses (the last `keep`),
        if `holder` still holds it; True if it did."""
        leases = self._client[self.settings.database][collection]
        update = {"$push": {"reported": {"$each": ids, "$slice": -keep}}}
        return self._run(
            "lease_note", lambda: leases.update_one({"_id": name, "holder": holder}, update).matched_count == 1
        )

    def count_stuck(self, older_than: timedelta) -> tuple[int, list[dict[str, Any]]]:
        """Documents still pending long after created_at: their count and the oldest few."""
        cutoff = _utcnow() - older_than
        selector = {"status": "pending", "created_at": {"$lt": cutoff}}
        count = self._run(
            "count_stuck",
            lambda: self._collection.count_documents(selector, maxTimeMS=self.settings.max_time_ms),
        )
        oldest = self._run(
            "list_stuck",
            lambda: list(
                self._collection.find(selector, {"created_at": 1, "stock_code": 1})
                .sort("created_at", 1)
                .limit(20)
                .max_time_ms(self.settings.max_time_ms)
            ),
        )
        return count, oldest

    def counts_by_status(self, window: timedelta) -> dict[str, int]:
        """Documents created within `window`, counted by status (uses the created_at index)."""
        pipeline = [
            {"$match": {"created_at": {"$gte": _utcnow() - window}}},
            {"$group": {"_id": "$status", "n": {"$sum": 1}}},
        ]
        rows = self._run(
            "counts_by_status",
            lambda: list(self._collection.aggregate(pipeline, maxTimeMS=self.settings.max_time_ms)),
        )
        return {str(row["_id"]): int(row["n"]) for row in rows}

    def _run(self, operation: str, query: Callable[[], Any]) -> Any:
        started = self._clock()
        try:
            result = query()
        except (ConnectionFailure, ExecutionTimeout) as exc:
            self._failed(operation)
            raise MongoUnavailableError(f"{operation} on {self.where}: {redact(str(exc), self._url)}") from None
        except PyMongoError as exc:
            self._failed(operation)
            self.stats.up = True  # it answered, with an error
            raise MongoQueryError(f"{operation} on {self.where}: {redact(str(exc), self._url)}") from None
        self.stats.observe(operation, self._clock() - started)
        self.stats.up = True
        return result

    def _failed(self, operation: str) -> None:
        self.stats.errors[operation] = self.stats.errors.get(operation, 0) + 1
        self.stats.up = False


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
