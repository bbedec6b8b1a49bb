"""`monitor explain ID FILE...`: everything the logs and MongoDB say about one analysis, and the verdict.

So "why is my analysis still pending?" has a one-command answer: the lines naming
it and their claims (`monitor.incident.trail`), its document looked up the way
`monitor verify` looks it up (`monitor.reconcile.connect`), the verdict, as a table
(`monitor.incident.explain_output`) or JSON.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from monitor.config import Config
from monitor.exits import EXIT_BAD_INPUT, EXIT_FOUND, EXIT_OK
from monitor.incident.explain_output import print_table
from monitor.incident.trail import (
    FOUND,
    INVALID_ID,
    NO_URL,
    NOT_FOUND,
    NOT_PERSISTED,
    ClaimOutcome,
    Explanation,
    FirstClaim,
    Trail,
    collect,
    id_problem,
    judge,
    normalize_id,
    overall,
)
from monitor.logs import say
from monitor.reconcile.claims import bounded_id, is_object_id
from monitor.reconcile.connect import open_gateway
from monitor.scan.matcher import Matcher


def explain(
    config: Config,
    matcher: Matcher,
    analysis_id: str,
    files: Sequence[Path],
    mongo_url: str | None,
    mongo_db: str | None,
    output: str,
    out: TextIO = sys.stdout,
    input_errors: Sequence[str] = (),
) -> int:
    """The command: 0 persisted or nothing to check, 1 not persisted, 2 bad input or MongoDB unreachable.

    `input_errors`: FILE arguments already known to be unreadable (a pattern matching nothing)."""
    from monitor.reconcile.mongo import MongoQueryError, MongoUnavailableError

    problem = id_problem(analysis_id)
    if problem:
        say(f"explain: {problem}")
        return EXIT_BAD_INPUT
    analysis_id = normalize_id(analysis_id)
    trail = collect(config, matcher, analysis_id, files)
    if input_errors:
        trail = replace(trail, errors=(*input_errors, *trail.errors))
    gateway = open_gateway(config, mongo_url, mongo_db)
    document: dict[str, Any] | None = None
    try:
        if not is_object_id(analysis_id):
            lookup = INVALID_ID
        elif gateway is None:
            lookup = NO_URL
        else:
            document = gateway.find_statuses([analysis_id]).get(analysis_id)
            lookup = FOUND if document is not None else NOT_FOUND
    except MongoUnavailableError:
        _print_errors(
            trail,
            f"MongoDB at {gateway.where} is unreachable: the document of {analysis_id} was not looked up; "
            "check the URL and the network",
        )
        return EXIT_BAD_INPUT
    except MongoQueryError as exc:
        _print_errors(trail, f"MongoDB answered with an error: {exc}")
        return EXIT_BAD_INPUT
    finally:
        if gateway is not None:
            gateway.close()
    outcomes = tuple(ClaimOutcome(c.claim, c.expected, _outcome(c, lookup, document)) for c in trail.claims)
    report = Explanation(
        analysis_id=bounded_id(analysis_id),
        trail=trail,
        claims=outcomes,
        document=_plain(document),
        lookup=lookup,
        verdict=overall([c.outcome for c in outcomes]),
    )
    if output == "json":
        print(report.to_json(), file=out)
    else:
        print_table(report, config, files, out)
    _print_errors(trail)
    if trail.errors:
        return EXIT_BAD_INPUT
    return EXIT_FOUND if report.verdict == NOT_PERSISTED else EXIT_OK


def _print_errors(trail: Trail, *more: str) -> None:
    for error in (*trail.errors, *more):
        say(error)


def _outcome(claim: FirstClaim, lookup: str, document: dict[str, Any] | None) -> str:
    if lookup == INVALID_ID:
        return "invalid_id"
    if lookup == NO_URL:
        return "not_checked"
    return judge(claim.expected, document)


def _plain(document: dict[str, Any] | None) -> dict[str, Any] | None:
    """Status fields as JSON values: ObjectId as its string, naive-UTC datetimes as ISO 8601 UTC."""
    if document is None:
        return None
    plain: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
        elif not isinstance(value, str | int | float | bool | type(None)):
            value = str(value)
        plain[key] = value
    return plain
