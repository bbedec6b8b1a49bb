"""Command line: `monitor check-config | scan | run | verify`.

Exit status: 0 success; 1 the check found something (`scan --fail-on`,
`verify` with unpersisted statuses); 2 bad configuration, usage or input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, write_to_textfile

from monitor.config import DEFAULT_CONFIG, ConfigError, LoadedConfig, load_config
from monitor.metrics import LogMetrics
from monitor.readfiles import LogReadError, read_chunks
from monitor.report import RuleCount, ScanSummary, print_rules, print_scan
from monitor.scan import Matcher, Scanner, compile_matcher

EXIT_OK, EXIT_FOUND, EXIT_BAD_INPUT = 0, 1, 2
FAIL_LEVELS = {"error": {"error"}, "warning": {"error", "warning"}}
PROGRESS_MIN_BYTES = 8 << 20
SCAN_STREAM = "scan"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.command(args)
    except ConfigError as exc:
        print(f"monitor: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monitor", description="Log-monitoring sidecar for TradingAgents servers.")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check-config", help="validate the config, replay every rule's examples, list the rules"
    )
    check.add_argument("file", nargs="?", help=f"config file (default: --config, else ./{DEFAULT_CONFIG})")
    _config_flag(check)
    check.set_defaults(command=cmd_check_config)

    scan = commands.add_parser("scan", help="count rule matches in existing log files (plain or .gz)")
    scan.add_argument("files", nargs="+", metavar="FILE")
    _config_flag(scan)
    scan.add_argument("--format", choices=["table", "json"], default="table")
    scan.add_argument(
        "--fail-on", choices=sorted(FAIL_LEVELS), help="exit 1 if any rule of this severity (or worse) matched"
    )
    scan.add_argument(
        "--metrics-out", metavar="FILE", help="write Prometheus text for node_exporter's textfile collector"
    )
    scan.set_defaults(command=cmd_scan)
    return parser


def _config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help=f"config file (default: ./{DEFAULT_CONFIG})")


def load(args: argparse.Namespace) -> tuple[LoadedConfig, Matcher]:
    """Load and compile the config named on the command line; ConfigError on any problem."""
    loaded = load_config(getattr(args, "file", None) or args.config or DEFAULT_CONFIG)
    matcher = compile_matcher(loaded.config.rules, loaded.config.timestamp, loaded.where)
    return loaded, matcher


def cmd_check_config(args: argparse.Namespace) -> int:
    loaded, matcher = load(args)
    print_rules(matcher.rules)
    examples = sum(len(rule.examples) for rule in matcher.rules)
    print(f"{loaded.path}: OK, {len(matcher.rules)} rules, {examples} example lines matched")
    return EXIT_OK


def cmd_scan(args: argparse.Namespace) -> int:
    loaded, matcher = load(args)
    config = loaded.config
    registry = CollectorRegistry()
    metrics = LogMetrics(config, registry)
    paths = [Path(f) for f in args.files]
    errors: list[str] = []
    with _Progress(paths) as advance:
        for path in paths:
            scanner = Scanner(matcher, config.scan.max_line_bytes)
            try:
                for chunk in read_chunks(path, config.scan.read_chunk_bytes, advance(path)):
                    metrics.observe_events(scanner.feed(chunk))
            except LogReadError as exc:
                errors.append(str(exc))
            metrics.observe_events(scanner.flush())
            metrics.observe_stream(SCAN_STREAM, scanner.framer.stats)
    summary = _summary(metrics, config.rules, paths, errors)
    if args.metrics_out:
        write_to_textfile(args.metrics_out, registry)
    if args.format == "json":
        print(summary.to_json())
    else:
        print_scan(summary)
    for error in errors:
        print(f"monitor: {error}", file=sys.stderr)
    if errors:
        return EXIT_BAD_INPUT
    failing = FAIL_LEVELS.get(args.fail_on or "", set())
    if any(row.count and row.severity in failing for row in summary.rules):
        return EXIT_FOUND
    return EXIT_OK


def _summary(metrics: LogMetrics, rules, paths: list[Path], errors: list[str]) -> ScanSummary:
    totals = metrics.totals_by_rule()
    snapshot = metrics.snapshot()
    counters = {name: value for name, _stream, value in snapshot["stream_counters"]}
    return ScanSummary(
        files=[str(p) for p in paths],
        rules=[
            RuleCount(r.name, r.severity.value, int(totals.get(r.name, 0)), snapshot["last_time"].get(r.name) or None)
            for r in rules
        ],
        lines=int(counters.get("lines", 0)),
        bytes=int(counters.get("bytes", 0)),
        oversized_lines=int(counters.get("oversized_lines", 0)),
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
