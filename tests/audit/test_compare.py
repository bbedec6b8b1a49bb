"""Which minutes are comparable: only those whose every live line is still on disk and was read."""

from __future__ import annotations

from monitor.audit.book import NEVER, Drift, StreamView
from monitor.audit.compare import comparable_minutes, drifts, files_holding
from monitor.audit.disk import FileCounts

M = 29_351_899


def view(**changes) -> StreamView:
    base = dict(
        stream="app",
        counts={("timeout", M + 1): 2, ("timeout", M + 2): 1, ("timeout", M + 3): 4},
        sources={M + 1: frozenset({"a"}), M + 2: frozenset({"a", "b"}), M + 3: frozenset({"b"})},
        live_from=M + 1,
        blind_until=NEVER,
        newest=M + 3,
        oldest=M,
    )
    return StreamView(**{**base, **changes})


def disk(path: str, source: str, counts: dict, blind: int | None = None, unresolved: bool = False) -> FileCounts:
    return FileCounts(path, source, counts, blind, unresolved)


def test_a_minute_whose_source_is_gone_is_not_compared():
    files = [disk("app.log", "b", {("timeout", M + 3): 4, ("timeout", M + 2): 0})]
    assert comparable_minutes(view(), files) == [M + 3]


def test_equal_counts_agree_and_a_difference_is_a_drift_either_way():
    files = [
        disk("app.log.1", "a", {("timeout", M + 1): 2, ("timeout", M + 2): 1}),
        disk("app.log", "b", {("timeout", M + 3): 3, ("other", M + 2): 1}),
    ]
    minutes = comparable_minutes(view(), files)
    assert minutes == [M + 1, M + 2, M + 3]
    assert drifts(view(), files, minutes) == [
        Drift("app", "other", M + 2, 0, 1),
        Drift("app", "timeout", M + 3, 4, 3),
    ]
    assert [d.direction for d in drifts(view(), files, minutes)] == ["under", "over"]
    assert files_holding(files, M + 2) == ["app.log.1", "app.log"]


def test_live_from_the_window_and_untimed_lines_bound_the_range():
    files = [disk("x", "a", {}), disk("y", "b", {})]
    assert comparable_minutes(view(live_from=M + 2), files) == [M + 2, M + 3]
    assert comparable_minutes(view(oldest=M + 3), files) == [M + 3]
    assert comparable_minutes(view(blind_until=M + 1), files) == [M + 2, M + 3]
    assert comparable_minutes(view(), [disk("x", "a", {}, blind=M + 2), disk("y", "b", {})]) == [M + 3]
    assert comparable_minutes(view(), [disk("x", "a", {}, unresolved=True), disk("y", "b", {})]) == []
    assert comparable_minutes(view(live_from=None), files) == []


def test_a_file_shorter_than_64_bytes_never_vouches_for_a_minute():
    files = [disk("x", "", {}), disk("y", "b", {})]
    assert comparable_minutes(view(sources={M + 3: frozenset({""})}), files) == [M + 1, M + 2]
