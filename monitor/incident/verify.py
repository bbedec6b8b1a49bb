"""`monitor verify`: scan old logs, check every claim in MongoDB now, list what was not persisted."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.table import Table

from monitor.config import Config, ConfigError
from monitor.exits import EXIT_BAD_INPUT, EXIT_FOUND, EXIT_OK
from monitor.logs import say
from monitor.reconcile.claims import ClaimExtractor
from monitor.reconcile.connect import build_reconciler
from monitor.reconcile.findings import Finding
from monitor.reconcile.mongo_url import NO_URL, MongoQueryError, resolve_url
from monitor.reconcile.reconciler import Reconciler
from monitor.scan.matcher import Matcher, Scanner
from monitor.scan.readfiles import LogReadError, read_chunks


def verify_command(
    config: Config,
    matcher: Matcher,
    files: list[Path],
    mongo_url: str | None,
    mongo_db: str | None,
    output: str,
    repair_plan: Path | None = None,
    input_errors: Sequence[str] = (),
) -> int:
    """The command: the config made one-shot (every claim checked now, no grace, no re-checks,
    every finding kept for the report), then `verify`."""
    if not config.reconcile.claims:
        raise ConfigError("reconcile.claims: no claims configured, nothing to verify")
    try:
        has_url = bool(resolve_url(config.mongodb, mongo_url))
    except MongoQueryError:
        has_url = True  # an unreadable URL file: build_reconciler says which and why
    if not has_url:  # said before anything else: verify has nothing to check without a database
        say(f"verify: {NO_URL}")
        return EXIT_BAD_INPUT
    reconcile = config.reconcile.model_copy(
        update={
            "grace_seconds": 0.0,
            "deadline_seconds": 0.0,
            "findings_kept": 10**7,
            "stuck": config.reconcile.stuck.model_copy(update={"enabled": False}),
        }
    )
    config = config.model_copy(update={"reconcile": reconcile})
    reconciler = build_reconciler(config, mongo_url, mongo_db)
    try:
        return verify(
            config, matcher, files, reconciler, output, repair_plan=repair_plan, input_errors=input_errors
        )
    finally:
        if reconciler is not None:
            reconciler.mongo.close()


def verify(
    config: Config,
    matcher: Matcher,
    files: list[Path],
    reconciler: Reconciler | None,
    output: str,
    out: TextIO = sys.stdout,
    repair_plan: Path | None = None,
    input_errors: Sequence[str] = (),
) -> int:
    """`input_errors`: FILE arguments already known to be unreadable (a pattern matching nothing)."""
    if reconciler is None:
        raise ConfigError(
            f"mongodb: {NO_URL}"
            if config.reconcile.claims
            else "reconcile.claims: no claims configured, nothing to verify"
        )
    extractor = ClaimExtractor(config.reconcile.claims)
    errors = list(input_errors)
    claims = 0
    for path in files:
        scanner = Scanner(matcher, config.scan.max_line_bytes)
        try:
            for chunk in read_chunks(path, config.scan.read_chunk_bytes):
                found = extractor.claims(scanner.feed(chunk).events, str(path))
                claims += len(found)
                reconciler.submit(found)
        except LogReadError as exc:
            errors.append(str(exc))
        found = extractor.claims(scanner.flush().events, str(path))
        claims += len(found)
        reconciler.submit(found)
    logging.getLogger("monitor.findings").setLevel(logging.ERROR)  # the report below says it once
    reconciler.run_once()
    for error in errors:
        say(error)
    if reconciler.pending_count():
        say(
            f"MongoDB at {reconciler.mongo.where} is unreachable: {reconciler.pending_count()} claim(s) "
            "not checked; check the URL and the network"
        )
        return EXIT_BAD_INPUT
    findings = list(reconciler.findings)
    if repair_plan is not None:
        _write_repair_plan(config, matcher, files, findings, reconciler, repair_plan)
    checks = reconciler.stats_snapshot().checks
    confirmed = sum(n for (_, outcome), n in checks.items() if outcome == "confirmed")
    if output == "json":
        print(
            json.dumps(
                {
                    "claims": claims,
                    "confirmed": confirmed,
                    "not_persisted": [asdict(f) for f in findings],
                    "errors": errors,
                },
                ensure_ascii=False,
                indent=2,
            ),
            file=out,
        )
    else:
        _print_table(findings, claims, confirmed, out)
    if errors:
        return EXIT_BAD_INPUT
    return EXIT_FOUND if findings else EXIT_OK


def _write_repair_plan(
    config: Config, matcher: Matcher, files: list[Path], findings: list[Finding], reconciler: Reconciler, path: Path
) -> None:
    from monitor.incident.plan import build_plan, write_plan

    plan = build_plan(config, matcher, files, findings, reconciler.mongo.settings.database)
    try:
        write_plan(plan, path)
    except OSError as exc:
        raise ConfigError(f"--repair-plan {path}: cannot write it: {exc.strerror or exc}") from None
    say(
        f"repair plan {path}: {len(plan['repairs'])} repair(s), {len(plan['unrepairable'])} unrepairable; "
        f"review it, then `monitor repair {path}` (add --apply to change the documents)",
        level=logging.INFO,
        prefix="",
    )


def _print_table(findings: list[Finding], claims: int, confirmed: int, out: TextIO) -> None:
    console = Console(file=out, width=None if out.isatty() else 200, highlight=False)
    console.print(f"{claims} claim(s) in the logs, {confirmed} confirmed in MongoDB, {len(findings)} not persisted")
    if not findings:
        return
    table = Table(title="analyses whose status the log claims but MongoDB does not hold", title_justify="left")
    for column in ("analysis id", "outcome", "claims (expected statuses)", "MongoDB holds"):
        table.add_column(column, overflow="fold")
    for f in findings:
        holds = "nothing" if f.mongo is None else f"status={f.mongo.get('status')!r}"
        claims = "\n".join(f"{c.claim}: {c.outcome} ({'|'.join(c.expected)})" for c in f.claims)
        table.add_row(f.analysis_id, f.outcome, claims, holds if not f.detail else f.detail)
    console.print(table)
