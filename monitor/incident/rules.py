"""`monitor check-config` and `monitor scan`: the rules replayed on their examples, and counted in whole files.

`scan` counts what a running sidecar would count over the same lines, through the
same `LogMetrics`, so its table, JSON and node_exporter textfile say what the
sidecar's counters would. Large plain files and compressed files are scanned on every core
(`monitor.incident.wholefile`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from monitor.config import LoadedConfig, Rule
from monitor.exits import EXIT_BAD_INPUT, EXIT_FOUND, EXIT_OK
from monitor.export.metrics import LogMetrics
from monitor.incident.collect import report_path_ok, write_report
from monitor.incident.html_report import scan_page
from monitor.incident.report import RuleCount, ScanSummary, print_rules, print_scan, write_textfile
from monitor.incident.series import MinuteCounts
from monitor.logs import say
from monitor.scan.lines import FramerStats
from monitor.scan.matcher import Matcher

FAIL_LEVELS = {"error": {"error"}, "warning": {"error", "warning"}}
PROGRESS_MIN_BYTES = 8 << 20
SCAN_STREAM = "scan"


def check_config(loaded: LoadedConfig, matcher: Matcher) -> int:
    """The rules as a table; compiling the matcher has already replayed every example."""
    print_rules(matcher.rules)
    examples = sum(len(rule.examples) for rule in matcher.rules)
    print(f"{loaded.path}: OK, {len(matcher.rules)} rules, {examples} example lines matched")
    return EXIT_OK


def scan_files(
    loaded: LoadedConfig,
    matcher: Matcher,
    paths: list[Path],
    errors: list[str],
    output: str = "table",
    fail_on: str | None = None,
    metrics_out: str | None = None,
    jobs: int | None = None,
    report: Path | None = None,
) -> int:
    """The command: 0, 1 when a rule of the `fail_on` severity matched, 2 when an input failed.

    `errors`: FILE arguments already known to be unreadable (a pattern matching nothing);
    `report`: also write the HTML report there (lines per minute are counted only then)."""
    config = loaded.config
    if report is not None and not report_path_ok(report):
        return EXIT_BAD_INPUT
    minutes = MinuteCounts({rule.name: rule.severity.value for rule in config.rules})
    metrics = LogMetrics(config, CollectorRegistry())
    metrics.declare_stream(SCAN_STREAM)
    errors = list(errors)
    read = FramerStats()
    # multiprocessing: ~5 ms and 0.5 MB that `run` need not pay
    from monitor.incident.wholefile import default_jobs, scan_paths

    jobs = jobs or default_jobs()
    max_line, chunk = config.scan.max_line_bytes, config.scan.read_chunk_bytes
    with _Progress(paths) as advance:
        for _path, results in scan_paths(paths, matcher, max_line, chunk, jobs, advance, minutes=report is not None):
            for result in results:  # in file order: capped label values are admitted as serially
                result.observe_into(metrics, SCAN_STREAM)
                minutes.add(result.minutes)
                errors += [result.error] if result.error else []
                for name in ("lines", "bytes", "oversized_lines"):
                    setattr(read, name, getattr(read, name) + getattr(result.stats, name))
    summary = _summary(metrics, config.rules, paths, errors, read)
    if metrics_out:
        try:
            write_textfile(Path(metrics_out), summary, _event_counts(metrics), config.metrics.prefix)
        except OSError as exc:
            say(f"--metrics-out {metrics_out}: cannot write it: {exc.strerror or exc}")
            return EXIT_BAD_INPUT
    if output == "json":
        print(summary.to_json())
    else:
        print_scan(summary)
    for error in errors:
        say(error)
    if report is not None:
        totals = {row.rule: row.count for row in summary.rules}
        if not write_report(report, *scan_page(config, config.rules, totals, minutes.series(), summary)):
            return EXIT_BAD_INPUT
    if errors:
        return EXIT_BAD_INPUT
    failing = FAIL_LEVELS.get(fail_on or "", set())
    if any(row.count and row.severity in failing for row in summary.rules):
        return EXIT_FOUND
    return EXIT_OK


def _event_counts(metrics: LogMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(rule, capture labels) -> lines matched, as `<prefix>_log_events_total` would show them."""
    return {(key[1], key[2]): value for key, value in metrics.counter_rows().items() if key[0] == "events"}


def _summary(
    metrics: LogMetrics, rules: list[Rule], paths: list[Path], errors: list[str], read: FramerStats
) -> ScanSummary:
    totals = metrics.totals_by_rule()
    return ScanSummary(
        files=[str(p) for p in paths],
        rules=[
            RuleCount(r.name, r.severity.value, int(totals.get(r.name, 0)), metrics.last_event_time(r.name) or None)
            for r in rules
        ],
        lines=read.lines,
        bytes=read.bytes,
        oversized_lines=read.oversized_lines,
        errors=errors,
    )


class _Progress:
    """A rich progress bar on stderr for large inputs when stderr is a terminal; else nothing."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths = paths
        self._bar = None

    def __enter__(self):
        sizes = {p: _size(p) for p in self._paths}
        total = sum(sizes.values())
        if sys.stderr.isatty() and total >= PROGRESS_MIN_BYTES:
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True), transient=True)
            self._bar.start()
            task = self._bar.add_task("scanning", total=total)
            done = {"before": 0}

            def advance(path: Path):
                base = done["before"]
                done["before"] += sizes[path]
                return lambda consumed: self._bar.update(task, completed=base + consumed)

            return advance
        return lambda path: lambda consumed: None

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
