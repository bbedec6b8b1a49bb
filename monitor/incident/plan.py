"""Repair plans: which lost statuses to restore, to what, on what evidence (`monitor verify --repair-plan`).

After an incident the operator's question is "which documents do I fix, and to
what?". The log knows: `monitor verify --repair-plan PLAN.json` writes a plan,
`monitor repair PLAN.json` shows what it would change and `--apply` changes it.

Safety first:
- a repair is proposed only for a document that exists, is still `pending`, and
  whose analysis the log says how it ended (a claim whose statuses, apart from
  `cancelled`, name one: `完成，成功: True` -> completed, `完成，成功: False` or
  `执行失败` -> failed, per the configured claims); everything else flagged is
  listed as unrepairable with its reason;
- every filter includes `"status": "pending"` and the document's `created_at` and
  `completed_at` as read when the plan was made, so a status written meanwhile,
  or a document made anew, is never overwritten; `repair` applies only plans of
  a known version, and only updates that set `status`, `progress` and `completed_at`;
- only an analysis' last run speaks for its document: claims made before its last
  start line (a start rule, `reconcile.start_rules`) are an earlier run's, dropped
  by `verify`, and its end lines ignored here; `completed_at` is set only from an
  end line's own time, never invented.

Ids and dates are MongoDB Extended JSON (`{"$oid": ...}`, `{"$date": ...}`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import ObjectId, json_util

from monitor.config import Config
from monitor.reconcile.claims import ClaimExtractor, StartLines, implied_status
from monitor.reconcile.findings import Finding
from monitor.scan.matcher import Matcher, Scanner
from monitor.scan.readfiles import LogReadError, read_chunks

PLAN_VERSION = 2  # 2: filters pin the document as read at plan time (PINNED)
MAX_EVIDENCE_LINES = 10
MAX_EVIDENCE_CHARS = 2000
SETTABLE = {"status", "progress", "completed_at"}
FINAL = ("completed", "failed")  # the statuses a repair may set
# Fields of the document as the plan saw it, pinned in the filter: a document deleted and inserted
# again, or finished and set pending again, since the plan is not the one it was made for.
PINNED = ("created_at", "completed_at")


@dataclass
class LogStory:
    """What the logs say of one flagged analysis: its lines, the statuses its end lines imply, and
    when it was started (again)."""

    def last_run(self) -> list[tuple[str, float, bool]]:
        """The end lines of its last run: those after its last start line (all if none)."""
        since = max(self.starts, default=float("-inf"))
        return [ending for ending in self.endings if ending[1] > since]

    evidence: list[str] = field(default_factory=list)
    endings: list[tuple[str, float, bool]] = field(default_factory=list)  # (status, line time, time read)
    starts: list[float] = field(default_factory=list)
    end_lines: set[str] = field(default_factory=set)  # evidence lines that imply a status


def build_plan(
    config: Config,
    matcher: Matcher,
    files: list[Path],
    findings: list[Finding],
    database: str,
    documents: dict[str, dict[str, Any]],
    said: dict[str, LogStory] | None = None,
) -> dict[str, Any]:
    """The plan for the flagged analyses. `said`: what the logs say of them (read once more when not
    given); `documents`: the flagged documents as read now, each repair's filter pins the one it
    was planned for."""
    flagged = {f.analysis_id: f for f in findings}
    if said is None:
        said = what_the_logs_say(config, matcher, files, set(flagged))
    repairs, unrepairable = [], []
    for analysis_id, finding in flagged.items():
        analysis = said.get(analysis_id, LogStory())
        document = documents.get(analysis_id)
        reason, status = _verdict(finding, analysis, document)
        if reason:
            unrepairable.append({"analysis_id": analysis_id, "reason": reason})
            continue
        changes: dict[str, Any] = {"status": status, "progress": 100.0}
        _, ended, own_time = max((e for e in analysis.last_run() if e[0] == status), key=lambda e: e[1])
        if own_time:  # never invented: an end line whose time cannot be read leaves completed_at unset
            changes["completed_at"] = datetime.fromtimestamp(ended, UTC)
        pinned = {"_id": ObjectId(analysis_id), "status": "pending"}
        pinned |= {name: (document or {}).get(name) for name in PINNED}
        repairs.append(
            {
                "analysis_id": analysis_id,
                "filter": pinned,
                "update": {"$set": changes},
                "evidence": analysis.evidence,
            }
        )
    return {
        "version": PLAN_VERSION,
        "database": database,
        "collection": config.mongodb.collection,
        "created_at": datetime.now(UTC),
        "repairs": repairs,
        "unrepairable": unrepairable,
    }


def _verdict(finding: Finding, analysis: LogStory, document: dict[str, Any] | None) -> tuple[str, str]:
    """(reason it cannot be repaired, "") or ("", the status to set)."""
    if finding.outcome == "invalid_id":
        return "not a MongoDB ObjectId: the analysis was never in the database (in-memory fallback?)", ""
    if finding.outcome == "not_found" or (finding.mongo is not None and document is None):
        return "no document with this id", ""
    if document is None or finding.outcome not in ("status_mismatch", "stuck"):
        return f"not checked ({finding.outcome}: {finding.detail or 'no answer from MongoDB'})", ""
    holds = document.get("status")
    # Only its last run (after its last start line) speaks for the document: `verify` has already
    # dropped the findings of an analysis started again after its claims.
    statuses = sorted({status for status, _, _ in analysis.last_run()})  # an earlier run's end is history
    if not statuses:
        return "no line in the logs says how the analysis ended", ""
    if len(statuses) > 1:
        return f"the logs say it ended both {' and '.join(statuses)}", ""
    if holds != "pending":
        return f"MongoDB holds the final status {holds!r} and the logs say {statuses[0]!r}: not overwritten", ""
    return "", statuses[0]


def what_the_logs_say(
    config: Config, matcher: Matcher, files: list[Path], ids: set[str], lines: bool = True
) -> dict[str, LogStory]:
    """What the logs say of the analyses `ids`; with `lines` False only when they were started
    (what `verify` needs without a plan: memory for the start times, not for evidence)."""
    extractor = ClaimExtractor(config.reconcile.claims) if lines else None
    starts = StartLines(config.reconcile.start_rules, config.reconcile.claims)
    said: dict[str, LogStory] = {}
    for path in files:
        scanner = Scanner(matcher, config.scan.max_line_bytes)
        try:
            for chunk in read_chunks(path, config.scan.read_chunk_bytes):
                _take(scanner.feed(chunk).events, extractor, starts, ids, said)
        except LogReadError:
            pass  # verify has reported it already (and writes no plan)
        _take(scanner.flush().events, extractor, starts, ids, said)
    return said


def _take(
    events, extractor: ClaimExtractor | None, starts: StartLines, ids: set[str], said: dict[str, LogStory]
) -> None:
    for event in events:
        started = starts.analysis(event)
        if started in ids:
            said.setdefault(started, LogStory()).starts.append(event.time)
        if extractor is None:
            continue
        for claim in extractor.claims([event], ""):
            if claim.analysis_id not in ids:
                continue
            analysis = said.setdefault(claim.analysis_id, LogStory())
            line = event.line.rstrip("\n")
            line = line if len(line) <= MAX_EVIDENCE_CHARS else f"{line[:MAX_EVIDENCE_CHARS]}… ({len(line)} characters)"
            status = implied_status(claim.accept)
            if status:
                analysis.endings.append((status, claim.logged_at, event.timed))
            _keep(analysis, line, ending=bool(status))


def _keep(analysis: LogStory, line: str, ending: bool) -> None:
    """Up to MAX_EVIDENCE_LINES lines; an end line (what the status rests on) always finds a place,
    taking the last other line's."""
    if ending:
        analysis.end_lines.add(line)
    evidence = analysis.evidence
    if line in evidence:
        return
    if len(evidence) < MAX_EVIDENCE_LINES:
        evidence.append(line)
    elif ending:
        others = [i for i, kept in enumerate(evidence) if kept not in analysis.end_lines]
        if others:
            del evidence[others[-1]]
            evidence.append(line)


def write_plan(plan: dict[str, Any], path: Path) -> None:
    text = json_util.dumps(plan, json_options=json_util.RELAXED_JSON_OPTIONS, ensure_ascii=False, indent=2)
    path.write_text(text + "\n", encoding="utf-8")
