"""The book of live counts per minute: what it keeps, for how long, and through a checkpoint."""

from __future__ import annotations

from monitor.audit.book import NEVER, AuditBook, Drift
from monitor.scan.matcher import Tally
from monitor.scan.minutes import UNTIMED

M = 29_351_899  # a minute (Unix time // 60)


def tally(minutes: dict[tuple[str, int], int], blind: list[int] = ()) -> Tally:
    return Tally(minutes=dict(minutes), blind=list(blind))


def test_the_first_minute_read_is_not_whole_the_later_ones_are():
    book = AuditBook(retention_minutes=10)
    book.record("app", "s1", tally({("timeout", M): 2, ("timeout", M + 1): 1}), newest=M + 1)
    book.record("app", "s2", tally({("timeout", M + 1): 1}), newest=M + 2)
    view = book.view("app")
    assert view.live_from == M + 1
    assert view.counts == {("timeout", M): 2, ("timeout", M + 1): 2}
    assert view.sources == {M: {"s1"}, M + 1: {"s1", "s2"}}
    assert view.newest == M + 2


def test_minutes_older_than_the_retention_leave_the_book_and_its_rows():
    book = AuditBook(retention_minutes=3)
    for minute in range(M, M + 6):
        book.record("app", "s", tally({("timeout", minute): 1}), newest=minute)
    assert sorted(m for _, m in book.view("app").counts) == [M + 3, M + 4, M + 5]
    assert {key for key in book.rows() if key[0] == "count"} == {
        ("count", "app", "timeout", m) for m in range(M + 3, M + 6)
    }


def test_an_untimed_line_blinds_the_minutes_it_may_belong_to():
    book = AuditBook(retention_minutes=10)
    book.record("app", "s", tally({("timeout", M): 1}), newest=M + 2)
    book.record("app", "s", tally({("timeout", UNTIMED): 1}), newest=M + 2)
    assert book.view("app").blind_until == M + 2
    book.record("app", "s", tally({}, blind=[M + 4]), newest=M + 4)
    assert book.view("app").blind_until == M + 4
    assert ("timeout", UNTIMED) not in book.view("app").counts


def test_rows_give_back_the_same_book_and_a_drift_is_reported_once():
    book = AuditBook(retention_minutes=10)
    book.record("app", "s", tally({("timeout", M): 1, ("timeout", M + 1): 3}), newest=M + 1)
    assert book.note("app", [M + 1], [Drift("app", "timeout", M + 1, 3, 2)]) == (
        1,
        [(Drift("app", "timeout", M + 1, 3, 2), 1)],
    )
    again = AuditBook(retention_minutes=10)
    again.restore(book.rows())
    assert again.rows() == book.rows()
    assert again.view("app") == book.view("app")
    # The same minute and drift, after the restart: neither counted nor reported again; a bigger one is.
    assert again.note("app", [M + 1], [Drift("app", "timeout", M + 1, 3, 2)]) == (0, [])
    bigger = Drift("app", "timeout", M + 1, 5, 2)
    assert again.note("app", [M + 1], [bigger]) == (0, [(bigger, 2)])


def test_new_rules_start_a_new_whole_range():
    book = AuditBook(retention_minutes=10)
    book.record("app", "s", tally({("timeout", M): 1}), newest=M + 3)
    book.rules_changed()
    view = book.view("app")
    assert (view.counts, view.live_from, view.blind_until) == ({}, M + 4, NEVER)
