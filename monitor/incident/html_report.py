"""What the HTML incident report shows, built from the results `verify` and `scan` already hold.

Nothing here reads a log: the timeline's spans, the per-minute counts, the findings, their
evidence and the repair plan all come from the command's own pass (`monitor.incident.timeline`,
`monitor.incident.series`, the plan `verify` makes). This module shapes them into the page's
header (`page.Header`) and its JSON data, which `page_assets/report.js` draws:

- the timeline: one bar per analysis up to `BAR_LIMIT`, beyond that counts per bucket of
  minutes (1 if that keeps `MAX_BUCKETS` or fewer) by verdict, and the chart says so;
- the per-minute series of the keyword classes and the spikes the alert rules would mark;
- the findings table (verify) or the rule table (scan).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bson import json_util

from monitor.config import Config, Rule
from monitor.incident.page import Header, zone_offset_minutes
from monitor.incident.series import CLASS_TITLES, CLASSES, MinuteSeries, keyword_class
from monitor.incident.timeline import MAX_ANALYSES, VERDICTS, Span, finding_verdict, holds
from monitor.reconcile.findings import Finding

BAR_LIMIT = 3000  # analyses drawn one bar each; more are aggregated (an SVG of 3,000 bars draws in ~50 ms)
MAX_BUCKETS = 1500
BUCKET_MINUTES = (1, 5, 15, 60, 360, 1440)
VERDICT_TITLES = {
    "persisted": "persisted",
    "unsuccessful": "unsuccessful (failed, persisted: no alarm)",
    "running": "running at the end of the log",
    "lost": "lost, repairable now",
    "mismatch": "mismatch (another final status)",
    "unrepairable": "lost, unrepairable",
}


@dataclass(frozen=True)
class VerifyResults:
    """What `verify` holds at its end, for the page."""

    files: list[str]
    errors: list[str]
    claims: int
    confirmed: int
    spans: list[Span]
    lines_past_bound: int  # lines of analyses past the timeline's bound (not drawn)
    first_time: float | None
    last_time: float | None
    series: MinuteSeries
    findings: list[Finding]
    plan: Mapping[str, Any] | None
    plan_note: str  # why there is no plan, when there is none
    evidence: Mapping[str, list[str]] = field(default_factory=dict)


def verify_page(config: Config, results: VerifyResults) -> tuple[Header, dict[str, Any]]:
    counts = dict.fromkeys(VERDICTS, 0)
    for span in results.spans:
        counts[span.verdict] += 1
    repairable = len((results.plan or {}).get("repairs", ()))
    lost = counts["lost"] + counts["unrepairable"]
    figures = [
        ("analyses seen", f"{len(results.spans):,}{'+' if results.lines_past_bound else ''}", False),
        ("statuses lost", f"{lost:,}", bool(lost)),
        ("mismatched", f"{counts['mismatch']:,}", bool(counts["mismatch"])),
        ("unsuccessful (not alarms)", f"{counts['unsuccessful']:,}", False),
        ("still running", f"{counts['running']:,}", False),
        ("repairable now", f"{repairable:,}" if results.plan is not None else "no plan", False),
        ("claims checked / confirmed", f"{results.claims:,} / {results.confirmed:,}", False),
    ]
    header = Header(
        "monitor verify: incident report",
        results.first_time,
        results.last_time,
        config.timestamp.timezone,
        results.files,
        results.errors,
        figures,
    )
    data = {
        "kind": "verify",
        **_clock(config, results.first_time, results.last_time),
        "timeline": timeline_data(results.spans, results.lines_past_bound, results.last_time),
        "series": series_data(results.series),
        "findings": _findings(results),
        "explain": "monitor explain {id} " + " ".join(shlex.quote(f) for f in results.files),
    }
    return header, data


def scan_page(
    config: Config, rules: Sequence[Rule], counts: Mapping[str, int], series: MinuteSeries, summary: Any
) -> tuple[Header, dict[str, Any]]:
    """`summary`: the scan's ScanSummary (files, lines, errors)."""
    first, last = _series_range(series)
    figures = [
        ("lines read", f"{summary.lines:,}", False),
        *(
            (CLASS_TITLES[c], f"{sum(series.counts[c]) + series.untimed[c]:,}", c in ("error", "regression"))
            for c in CLASSES
        ),
        ("spikes the alerts would mark", f"{len(series.spikes):,}", bool(series.spikes)),
    ]
    header = Header(
        "monitor scan: log report", first, last, config.timestamp.timezone, summary.files, summary.errors, figures
    )
    table = [
        [r.name, keyword_class(r.name, r.severity.value) or "info", r.severity.value, r.pattern, counts.get(r.name, 0)]
        for r in rules
    ]
    data = {"kind": "scan", **_clock(config, first, last), "series": series_data(series), "rules": table}
    return header, data


def _clock(config: Config, first: float | None, last: float | None) -> dict[str, Any]:
    zone = config.timestamp.timezone
    return {"range": [first, last], "timezone": zone, "offset_minutes": zone_offset_minutes(zone, first)}


def _series_range(series: MinuteSeries) -> tuple[float | None, float | None]:
    if series.first_minute is None:
        return None, None
    length = len(series.counts[CLASSES[0]])
    return series.first_minute * 60.0, (series.first_minute + length) * 60.0


def timeline_data(spans: Sequence[Span], lines_past_bound: int, last_time: float | None) -> dict[str, Any]:
    """One bar per analysis, or above BAR_LIMIT analyses the counts per bucket by verdict."""
    by_verdict = dict.fromkeys(VERDICTS, 0)
    for span in spans:
        by_verdict[span.verdict] += 1
    base = {
        "verdicts": list(VERDICTS),
        "titles": VERDICT_TITLES,
        "by_verdict": by_verdict,
        "lines_past_bound": lines_past_bound,
        "bound": MAX_ANALYSES,
    }
    if len(spans) <= BAR_LIMIT:
        bars = [
            [s.analysis_id, s.symbol, s.start, s.end, VERDICTS.index(s.verdict), ", ".join(s.claims), s.document]
            for s in spans
        ]
        return {**base, "mode": "bars", "bars": bars, "log_end": last_time}
    minutes = [int(s.start // 60) for s in spans]
    first = min(minutes)
    size = next((b for b in BUCKET_MINUTES if (max(minutes) - first) // b + 1 <= MAX_BUCKETS), BUCKET_MINUTES[-1])
    first -= first % size
    counts = {v: [0] * ((max(minutes) - first) // size + 1) for v in VERDICTS}
    for minute, span in zip(minutes, spans, strict=True):
        counts[span.verdict][(minute - first) // size] += 1
    return {**base, "mode": "buckets", "bucket_minutes": size, "first_minute": first, "counts": counts}


def series_data(series: MinuteSeries) -> dict[str, Any]:
    return {
        "first_minute": series.first_minute,
        "classes": list(CLASSES),
        "titles": CLASS_TITLES,
        "counts": series.counts,
        "untimed": series.untimed,
        "spikes": [[s.alert, s.title, s.first_minute, s.last_minute] for s in series.spikes],
    }


def _findings(results: VerifyResults) -> list[list[Any]]:
    """One row per finding: id, verdict, symbol, start, outcome, claims, what MongoDB holds,
    evidence lines, the repair plan's entry (or why there is none)."""
    flagged = {f.analysis_id for f in results.findings}
    spans = {s.analysis_id: s for s in results.spans if s.analysis_id in flagged}
    plan = results.plan or {}
    repairs = {r["analysis_id"]: r for r in plan.get("repairs", ())}
    reasons = {u["analysis_id"]: u["reason"] for u in plan.get("unrepairable", ())}
    rows = []
    for f in results.findings:
        span = spans.get(f.analysis_id)
        claims = [f"{c.claim}: {c.outcome} (expected {'|'.join(c.expected)})" for c in f.claims]
        if f.analysis_id in repairs:
            entry = "repair: set " + json_util.dumps(
                repairs[f.analysis_id]["update"]["$set"], json_options=json_util.RELAXED_JSON_OPTIONS
            )
        elif f.analysis_id in reasons:
            entry = "unrepairable: " + reasons[f.analysis_id]
        else:
            entry = f"no repair plan: {results.plan_note}"
        rows.append(
            [
                f.analysis_id,
                span.verdict if span else finding_verdict(f, f.analysis_id in repairs if results.plan else None),
                span.symbol if span else "",
                span.start if span else None,
                f.outcome,
                claims,
                holds(f),
                results.evidence.get(f.analysis_id, []),
                entry,
            ]
        )
    return rows
