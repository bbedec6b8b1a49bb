"""The timeline's spans: every analysis from its start line to its end line, with verify's verdict."""

from __future__ import annotations

from monitor.config import load_config
from monitor.incident.timeline import TimelineBook
from monitor.reconcile.claims import Claim
from monitor.reconcile.findings import ClaimCheck, Finding
from monitor.scan.matcher import Event
from tests.conftest import REPO

CONFIG = load_config(REPO / "config.yaml").config
ANY_FINAL, SUCCESS, FAILURE = ("completed", "failed", "cancelled"), ("completed", "cancelled"), ("failed", "cancelled")


def start(analysis_id: str, when: float, symbol: str = "AAPL", timed: bool = True) -> Event:
    captures = {"analysis_id": analysis_id, "symbol": symbol, "market": "美股"}
    return Event("analysis_started", "info", "", captures, (), when, timed)


def claim(analysis_id: str, when: float, name: str = "finished_success", accept=SUCCESS) -> Claim:
    return Claim(analysis_id, name, accept, when, "app")


def finding(analysis_id: str, outcome: str, status: str | None) -> Finding:
    check = ClaimCheck("completed_status_written", outcome, list(ANY_FINAL), "")
    return Finding(analysis_id, outcome, [check], None if status is None else {"status": status}, "")


def test_each_analysis_gets_the_verdict_verify_decided():
    book = TimelineBook(CONFIG)
    ids = ["a" * 24, "b" * 24, "c" * 24, "d" * 24, "e" * 24, "f" * 24]
    book.take([start(i, 100.0 + n) for n, i in enumerate(ids)], [])
    book.take(
        [],
        [
            claim(ids[0], 200.0, "completed_status_written", ANY_FINAL),
            claim(ids[0], 201.0),
            claim(ids[1], 210.0, "finished_failure", FAILURE),
            claim(ids[2], 220.0),
            claim(ids[3], 230.0, "failed_status_written", FAILURE),
            claim(ids[4], 240.0),
        ],
    )
    findings = [finding(ids[2], "status_mismatch", "pending"), finding(ids[3], "status_mismatch", "completed")]
    findings.append(finding(ids[4], "not_found", None))
    plan = {"repairs": [{"analysis_id": ids[2]}], "unrepairable": [{"analysis_id": ids[4], "reason": "no document"}]}
    spans = {s.analysis_id: s for s in book.spans(findings, plan)}
    assert {i: spans[i].verdict for i in ids} == {
        ids[0]: "persisted",
        ids[1]: "unsuccessful",
        ids[2]: "lost",
        ids[3]: "mismatch",
        ids[4]: "unrepairable",
        ids[5]: "running",
    }
    assert (spans[ids[0]].start, spans[ids[0]].end, spans[ids[0]].symbol) == (100.0, 201.0, "AAPL")
    assert spans[ids[0]].claims == ("completed_status_written", "finished_success")
    assert spans[ids[5]].end is None
    assert spans[ids[2]].document == "status='pending'"
    assert (book.first_time, book.last_time) == (100.0, 105.0)  # the events' own times; claims come from them


def test_without_a_plan_a_lost_status_is_lost_not_unrepairable():
    book = TimelineBook(CONFIG)
    book.take([], [claim("a" * 24, 10.0), claim("b" * 24, 11.0)])
    findings = [finding("a" * 24, "status_mismatch", "pending"), finding("b" * 24, "status_mismatch", "failed")]
    assert [s.verdict for s in book.spans(findings, None)] == ["lost", "mismatch"]


def test_a_start_line_after_the_claims_begins_a_new_run_whatever_the_file_order():
    book = TimelineBook(CONFIG)
    analysis = "a" * 24
    book.take([start(analysis, 300.0)], [])  # the newer file read first
    book.take([start(analysis, 100.0)], [claim(analysis, 150.0)])  # an older run's lines: history
    (span,) = book.spans([], None)
    assert (span.start, span.end, span.verdict) == (300.0, None, "running")


def test_untimed_lines_do_not_move_the_timeline_and_the_bound_is_counted():
    book = TimelineBook(CONFIG, limit=2)
    book.take([start("a" * 24, 1e9, timed=False), start("b" * 24, 50.0), start("c" * 24, 60.0)], [])
    book.take([], [claim("d" * 24, 70.0), claim("d" * 24, 71.0)])
    assert (len(book), book.lines_past_bound) == (2, 2)  # d's two claims
    assert (book.first_time, book.last_time) == (50.0, 60.0)
