"""The page's content: bars up to a few thousand analyses, counts per bucket beyond, and the header."""

from __future__ import annotations

from monitor.config import load_config
from monitor.incident.html_report import BAR_LIMIT, VerifyResults, timeline_data, verify_page
from monitor.incident.page import write_page
from monitor.incident.series import minute_series
from monitor.incident.timeline import VERDICTS, Span
from tests.conftest import REPO

CONFIG = load_config(REPO / "config.yaml").config


def spans(count: int, spread_seconds: float = 1.0) -> list[Span]:
    return [
        Span(f"{n:024x}", "AAPL", 1_761_100_000 + n * spread_seconds, None, (), VERDICTS[n % len(VERDICTS)], "")
        for n in range(count)
    ]


def results(many: list[Span]) -> VerifyResults:
    series = minute_series({("mongodb_operation_timeout", 29_351_666): 3}, {"mongodb_operation_timeout": "error"})
    first, last = many[0].start, many[-1].start
    return VerifyResults(["a.log"], [], len(many), len(many), many, 0, first, last, series, [], None, "no findings")


def test_up_to_the_limit_one_bar_each_beyond_it_counts_per_minute():
    assert timeline_data(spans(BAR_LIMIT), 0, None)["mode"] == "bars"
    data = timeline_data(spans(BAR_LIMIT + 1), 0, None)
    assert (data["mode"], data["bucket_minutes"]) == ("buckets", 1)
    assert sum(sum(counts) for counts in data["counts"].values()) == BAR_LIMIT + 1
    assert data["by_verdict"] == {v: (BAR_LIMIT + 1) // 6 + (i < (BAR_LIMIT + 1) % 6) for i, v in enumerate(VERDICTS)}


def test_a_long_log_gets_wider_buckets_never_more_than_the_page_can_draw():
    data = timeline_data(spans(BAR_LIMIT + 1, spread_seconds=600.0), 0, None)  # 30,000 minutes: 20.8 days
    assert data["bucket_minutes"] == 60  # 15-minute buckets would be 2,001, more than MAX_BUCKETS
    assert data["first_minute"] == 1_761_100_000 // 60 // 60 * 60  # aligned on the hour
    assert len(data["counts"]["lost"]) == 501


def test_the_header_says_how_bad_before_any_chart():
    header, _ = verify_page(CONFIG, results(spans(12)))
    figures = {label: (value, alarm) for label, value, alarm in header.figures}
    assert figures["analyses seen"] == ("12", False)
    assert figures["statuses lost"] == ("4", True)  # lost and unrepairable, 2 each
    assert figures["mismatched"] == ("2", True)
    assert figures["repairable now"] == ("no plan", False)


def test_many_analyses_drawn_as_counts_in_a_real_browser(chromium, tmp_path):
    page = tmp_path / "incident.html"
    write_page(page, *verify_page(CONFIG, results(spans(6000))))
    loaded = chromium.load(page)
    assert (loaded.console, loaded.requests) == ([], [])
    timeline = loaded.drawn()["timeline"]
    assert (timeline["mode"], timeline["analyses"]) == ("buckets", 6000)
    assert timeline["by_verdict"] == dict.fromkeys(VERDICTS, 1000)
    assert "analyses started per 1 minute(s), stacked by verdict" in loaded.dom
