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
- every filter includes `"status": "pending"`, so a status written meanwhile is
  never overwritten; `repair` applies only plans of a known version, and only
  updates that set `status`, `progress` and `completed_at`.

Ids and dates are MongoDB Extended JSON (`{"$oid": ...}`, `{"$date": ...}`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import ObjectId, json_util

from monitor.config import Config
from monitor.reconcile.claims import ClaimExtractor, implied_status
from monitor.reconcile.findings import Finding
from monitor.scan.matcher import Matcher, Scanner
from monitor.scan.readfiles import LogReadError, read_chunks

PLAN_VERSION = 1
MAX_EVIDENCE_LINES = 10
MAX_EVIDENCE_CHARS = 2000
SETTABLE = {"status", "progress", "completed_at"}
FINAL = ("completed", "failed")  # the statuses a repair may set


@dataclass
class _Analysis:
    """What the logs say of one flagged analysis: its lines, and the statuses its end lines imply."""

    evidence: list[str] = field(default_factory=list)
    endings: list[tuple[str, float]] = field(default_factory=list)  # (status, line time)


def build_plan(
    config: Config, matcher: Matcher, files: list[Path], findings: list[Finding], database: str
) -> dict[str, Any]:
    """The plan for the flagged analyses, reading the logs once more for their lines."""
    flagged = {f.analysis_id: f for f in findings}
    said = _what_the_logs_say(config, matcher, files, set(flagged))
    repairs, unrepairable = [], []
    for analysis_id, finding in flagged.items():
        analysis = said.get(analysis_id, _Analysis())
        reason, status = _verdict(finding, analysis)
        if reason:
            unrepairable.append({"analysis_id": analysis_id, "reason": reason})
            continue
        ended = datetime.fromtimestamp(max(t for s, t in analysis.endings if s == status), UTC)
        repairs.append(
            {
                "analysis_id": analysis_id,
                "filter": {"_id": ObjectId(analysis_id), "status": "pending"},
                "update": {"$set": {"status": status, "progress": 100.0, "completed_at": ended}},
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


def _verdict(finding: Finding, analysis: _Analysis) -> tuple[str, str]:
    """(reason it cannot be repaired, "") or ("", the status to set)."""
    if finding.outcome == "invalid_id":
        return "not a MongoDB ObjectId: the analysis was never in the database (in-memory fallback?)", ""
    if finding.outcome == "not_found":
        return "no document with this id", ""
    if finding.mongo is None or finding.outcome not in ("status_mismatch", "stuck"):
        return f"not checked ({finding.outcome}: {finding.detail or 'no answer from MongoDB'})", ""
    statuses = sorted({status for status, _ in analysis.endings})
    holds = finding.mongo.get("status")
    if not statuses:
        return "no line in the logs says how the analysis ended", ""
    if len(statuses) > 1:
        return f"the logs say it ended both {' and '.join(statuses)}", ""
    if holds != "pending":
        return f"MongoDB holds the final status {holds!r} and the logs say {statuses[0]!r}: not overwritten", ""
    return "", statuses[0]


def _what_the_logs_say(config: Config, matcher: Matcher, files: list[Path], ids: set[str]) -> dict[str, _Analysis]:
    extractor = ClaimExtractor(config.reconcile.claims)
    said: dict[str, _Analysis] = {}
    for path in files:
        scanner = Scanner(matcher, config.scan.max_line_bytes)
        try:
            for chunk in read_chunks(path, config.scan.read_chunk_bytes):
                _take(scanner.feed(chunk).events, extractor, ids, said)
        except LogReadError:
            pass  # verify has reported it already
        _take(scanner.flush().events, extractor, ids, said)
    return said


def _take(events, extractor: ClaimExtractor, ids: set[str], said: dict[str, _Analysis]) -> None:
    for event in events:
        for claim in extractor.claims([event], ""):
            if claim.analysis_id not in ids:
                continue
            analysis = said.setdefault(claim.analysis_id, _Analysis())
            line = event.line.rstrip("\n")
            line = line if len(line) <= MAX_EVIDENCE_CHARS else f"{line[:MAX_EVIDENCE_CHARS]}… ({len(line)} characters)"
            if line not in analysis.evidence and len(analysis.evidence) < MAX_EVIDENCE_LINES:
                analysis.evidence.append(line)
            status = implied_status(claim.accept)
            if status:
                analysis.endings.append((status, claim.logged_at))


def write_plan(plan: dict[str, Any], path: Path) -> None:
    text = json_util.dumps(plan, json_options=json_util.RELAXED_JSON_OPTIONS, ensure_ascii=False, indent=2)
    path.write_text(text + "\n", encoding="utf-8")
