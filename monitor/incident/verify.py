"""`monitor verify`: scan old logs, check every claim in MongoDB now, list what was not persisted."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.table import Table

from monitor.config import Config, ConfigError
from monitor.exits import EXIT_BAD_INPUT, EXIT_FOUND, EXIT_OK
from monitor.incident.collect import ReportCollector, report_path_ok
from monitor.logs import say
from monitor.reconcile.claims import ClaimExtractor
from monitor.reconcile.connect import build_reconciler
from monitor.reconcile.findings import GRAVITY, Finding
from monitor.reconcile.mongo_url import NO_URL, MongoQueryError, resolve_url
from monitor.reconcile.reconciler import Reconciler
from monitor.scan.matcher import Matcher, Scanner, Tally
from monitor.scan.readfiles import LogReadError, read_chunks

VERIFY_BATCH = 1000  # claims per MongoDB query at least


def verify_command(
    config: Config,
    matcher: Matcher,
    files: list[Path],
    mongo_url: str | None,
    mongo_db: str | None,
    output: str,
    repair_plan: Path | None = None,
    input_errors: Sequence[str] = (),
    report: Path | None = None,
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
    if report is not None and not report_path_ok(report):
        return EXIT_BAD_INPUT
    reconcile = config.reconcile.model_copy(
        update={
            "grace_seconds": 0.0,
            "deadline_seconds": 0.0,
            "findings_kept": 10**7,
            # One query of 1,000 ids costs MongoDB little more than one of 500 and halves the round
            # trips of a one-shot pass over millions of claims; the sidecar's own batches stay small.
            "batch_size": max(config.reconcile.batch_size, VERIFY_BATCH),
            "stuck": config.reconcile.stuck.model_copy(update={"enabled": False}),
        }
    )
    config = config.model_copy(update={"reconcile": reconcile})
    reconciler = build_reconciler(config, mongo_url, mongo_db, checkpointed=False)
    try:
        return verify(
            config,
            matcher,
            files,
            reconciler,
            output,
            repair_plan=repair_plan,
            input_errors=input_errors,
            report=report,
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
    report: Path | None = None,
) -> int:
    """`input_errors`: FILE arguments already known to be unreadable (a pattern matching nothing).
    `report`: also write the HTML incident report there (what it needs is collected only then)."""
    if reconciler is None:
        raise ConfigError(
            f"mongodb: {NO_URL}"
            if config.reconcile.claims
            else "reconcile.claims: no claims configured, nothing to verify"
        )
    extractor = ClaimExtractor(config.reconcile.claims)
    errors = list(input_errors)
    claims = 0
    logging.getLogger("monitor.findings").setLevel(logging.ERROR)  # the report below says it once
    # Claims are checked in turns: a turn of 10 batches keeps MongoDB busy and memory small (a
    # claim waiting costs ~1 KB), and never more than reconcile.max_pending wait.
    batch = min(config.reconcile.max_pending, 10 * config.reconcile.batch_size)

    def check(found: list) -> bool:
        """Every claim is checked, however many: the waiting ones are checked (and leave) before a turn
        is full, so memory is bounded by a turn's claims, not by the logs. False when MongoDB stopped
        answering (the claims still waiting are said below)."""
        for start in range(0, len(found), batch):
            piece = found[start : start + batch]
            if reconciler.pending_count() + len(piece) > batch:
                reconciler.run_once()
                if reconciler.pending_count():
                    return False
            reconciler.submit(piece)
        return True

    extra = ReportCollector(config, matcher) if report is not None else None

    def claims_of(tally: Tally, path: Path) -> list:
        found = extractor.claims(tally.events, str(path))
        if extra is not None:
            extra.take(tally, found)
        return found

    answering = True
    for path in files:
        if not answering:
            break
        scanner = Scanner(matcher, config.scan.max_line_bytes, minutes=extra is not None)
        try:
            for chunk in read_chunks(path, config.scan.read_chunk_bytes):
                found = claims_of(scanner.feed(chunk), path)
                claims += len(found)
                if not (answering := check(found)):
                    break
        except LogReadError as exc:
            errors.append(str(exc))
        found = claims_of(scanner.flush(), path)
        claims += len(found)
        answering = answering and check(found)
    reconciler.run_once()
    for error in errors:
        say(error)
    dropped = reconciler.stats_snapshot().dropped
    if dropped:  # never silent: a claim not checked is not "0 not persisted"
        say(f"{dropped} claim(s) could not be checked (more than reconcile.max_pending waiting); nothing is certain")
        return EXIT_BAD_INPUT
    if reconciler.pending_count():
        say(
            f"MongoDB at {reconciler.mongo.where} is unreachable: {reconciler.pending_count()} claim(s) "
            "not checked; check the URL and the network"
        )
        return EXIT_BAD_INPUT
    findings = list(reconciler.findings)
    said = None
    planned = repair_plan is not None or report is not None
    if findings and (config.reconcile.start_rules or planned):
        from monitor.incident.plan import what_the_logs_say

        # The flagged analyses' lines once more (memory: the flagged ones only): an analysis started
        # again after a claim has a new run; the old run's claims do not speak for its document.
        said = what_the_logs_say(config, matcher, files, {f.analysis_id for f in findings}, lines=planned)
        flagged = len(findings)
        findings = [f for f in (_last_run_only(f, said) for f in findings) if f is not None]
        if flagged > len(findings):  # said, so that a count smaller than the claims' is explained
            say(
                f"{flagged - len(findings)} analysis(es) whose claims were all made before the analysis was "
                "started again: its later run speaks for the document, so not counted as lost "
                "(`monitor explain ID` shows each run)",
                level=logging.INFO,
                prefix="",
            )
    plan, plan_note = None, ""
    if planned and errors:
        # A plan resting on logs partly unread could propose a status an unread line contradicts.
        plan_note = f"{len(errors)} input(s) failed; fix them and run verify again"
        if repair_plan is not None:
            say(f"no repair plan written ({repair_plan}): {plan_note}")
    elif planned:
        plan, plan_note = _make_plan(config, matcher, files, findings, reconciler, said if findings else {})
        if plan is None and repair_plan is not None:
            say(f"no repair plan written ({repair_plan}): {plan_note}")
        if repair_plan is not None and (plan is None or not _write_repair_plan(plan, repair_plan)):
            errors.append(f"--repair-plan {repair_plan}: not written")
    checks = reconciler.stats_snapshot().checks
    confirmed = sum(n for (_, outcome), n in checks.items() if outcome == "confirmed")
    if output == "json":
        _print_json(findings, claims, confirmed, errors, out)
    else:
        _print_table(findings, claims, confirmed, out)
    if extra is not None:
        counts = (claims, confirmed)
        if not extra.write(report, files, errors, counts, findings, plan, plan_note, said):
            errors.append(f"--report {report}: not written")
    if errors:
        return EXIT_BAD_INPUT
    return EXIT_FOUND if findings else EXIT_OK


def _last_run_only(finding: Finding, said: dict) -> Finding | None:
    """`finding` without the claims made before its analysis' last start line (None if none is left)."""
    story = said.get(finding.analysis_id)
    if story is None or not story.starts:
        return finding
    since = max(story.starts)
    kept = [c for c in finding.claims if datetime.fromisoformat(c.logged_at).timestamp() > since]
    if not kept:
        return None
    gravest = min((c.outcome for c in kept), key=GRAVITY.index)
    return replace(finding, claims=kept, outcome=gravest)


def _make_plan(
    config: Config,
    matcher: Matcher,
    files: list[Path],
    findings: list[Finding],
    reconciler: Reconciler,
    said: dict | None = None,
) -> tuple[dict | None, str]:
    """(the repair plan, "") or (None, why it could not be made)."""
    from monitor.incident.plan import build_plan
    from monitor.reconcile.claims import is_object_id
    from monitor.reconcile.mongo import MongoUnavailableError

    # The flagged documents as they are now, whole values (the findings hold them shortened to text):
    # each repair pins the one it was planned for.
    ids = sorted({f.analysis_id for f in findings if is_object_id(f.analysis_id)})
    documents: dict[str, dict] = {}
    step = config.reconcile.batch_size
    try:
        for start in range(0, len(ids), step):
            documents |= reconciler.mongo.find_statuses(ids[start : start + step])
    except (MongoUnavailableError, MongoQueryError) as exc:
        return None, f"reading the flagged documents failed: {exc}"
    return build_plan(config, matcher, files, findings, reconciler.mongo.settings.database, documents, said), ""


def _write_repair_plan(plan: dict, path: Path) -> bool:
    """Write the plan (said); False, said, if it could not be written."""
    from monitor.incident.plan import write_plan

    try:
        write_plan(plan, path)
    except OSError as exc:
        say(f"--repair-plan {path}: cannot write it: {exc.strerror or exc}; choose a writable path")
        return False
    say(
        f"repair plan {path}: {len(plan['repairs'])} repair(s), {len(plan['unrepairable'])} unrepairable; "
        f"review it, then `monitor repair {path}` (add --apply to change the documents)",
        level=logging.INFO,
        prefix="",
    )
    return True


def _print_json(findings: list[Finding], claims: int, confirmed: int, errors: list[str], out: TextIO) -> None:
    """What `json.dumps(report, indent=2)` would print, written a finding at a time: an incident's
    50,000 findings are not held twice more, as dicts and as one string."""
    out.write(f'{{\n  "claims": {claims},\n  "confirmed": {confirmed},\n  "not_persisted": [')
    for index, finding in enumerate(findings):
        text = json.dumps(asdict(finding), ensure_ascii=False, indent=2).replace("\n", "\n    ")
        out.write(f"{',' if index else ''}\n    {text}")
    out.write("\n  ],\n" if findings else "],\n")
    listed = json.dumps(errors, ensure_ascii=False, indent=2).replace("\n", "\n  ")
    out.write(f'  "errors": {listed}\n}}\n')


TABLE_ROWS = 1000  # rows rendered at a time: the table of an incident is not held whole
COLUMNS = ("analysis id", "outcome", "claims (expected statuses)", "MongoDB holds")


def _print_table(findings: list[Finding], claims: int, confirmed: int, out: TextIO) -> None:
    console = Console(file=out, width=None if out.isatty() else 200, highlight=False)
    console.print(f"{claims} claim(s) in the logs, {confirmed} confirmed in MongoDB, {len(findings)} not persisted")
    widths = _column_widths(findings)
    for start in range(0, len(findings), TABLE_ROWS):
        first = start == 0
        table = Table(
            title="analyses whose status the log claims but MongoDB does not hold" if first else None,
            title_justify="left",
            show_header=first,
        )
        for column, width in zip(COLUMNS, widths, strict=True):
            table.add_column(column, overflow="fold", min_width=width)
        for f in findings[start : start + TABLE_ROWS]:
            table.add_row(*_row(f))
        console.print(table)


def _row(f: Finding) -> tuple[str, str, str, str]:
    holds = "nothing" if f.mongo is None else f"status={f.mongo.get('status')!r}"
    claims = "\n".join(f"{c.claim}: {c.outcome} ({'|'.join(c.expected)})" for c in f.claims)
    return f.analysis_id, f.outcome, claims, holds if not f.detail else f.detail


def _column_widths(findings: list[Finding]) -> list[int]:
    """The widest cell of each column over every row (its longest line), so the pieces line up."""
    widths = [len(heading) for heading in COLUMNS]
    for f in findings:
        for index, cell in enumerate(_row(f)):
            widths[index] = max(widths[index], max(len(line) for line in cell.split("\n")))
    return widths
