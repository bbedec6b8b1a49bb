"""Command line: `monitor check-config | scan | run | verify | repair | explain`.

Exit status: 0 success; 1 the check found something (`scan --fail-on`,
`verify` with unpersisted statuses, `explain` of an analysis not persisted); 2 bad configuration, usage or input.

FILE arguments may be glob patterns no shell expanded (`monitor.readfiles.expand_paths`).
`--log-level` and `--log-format` (before or after the command's name) set the sidecar's own
log and how commands report errors on stderr (`monitor.logs`).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Collection, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from monitor import __version__
from monitor.config import DEFAULT_CONFIG, ConfigError, LoadedConfig, Rule, load_config, parse_listen
from monitor.lines import FramerStats
from monitor.logs import FORMATS, LEVELS, EscapingFormatter, say, setup
from monitor.metrics import LogMetrics
from monitor.readfiles import expand_paths
from monitor.report import RuleCount, ScanSummary, print_rules, print_scan, write_textfile
from monitor.scan import EVERY_RULE, Matcher, compile_matcher

EXIT_OK, EXIT_FOUND, EXIT_BAD_INPUT = 0, 1, 2
FAIL_LEVELS = {"error": {"error"}, "warning": {"error", "warning"}}
PROGRESS_MIN_BYTES = 8 << 20
SCAN_STREAM = "scan"
__all__ = ["EscapingFormatter", "main"]  # the formatter lives in monitor.logs; kept importable from here


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    setup(args.log_level, args.log_format)
    try:
        return args.command(args)
    except ConfigError as exc:
        say(f"invalid configuration:\n{exc}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    # No abbreviations at the top: `run --log X` must not be taken for --log-level or --log-format.
    parser = argparse.ArgumentParser(
        prog="monitor", description="Log-monitoring sidecar for TradingAgents servers.", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"monitor (tradingagents-logmonitor) {__version__}")
    _log_flags(parser, default_level="info", default_format="text")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check-config", help="validate the config, replay every rule's examples, list the rules"
    )
    check.add_argument("file", nargs="?", help=f"config file (default: --config, else ./{DEFAULT_CONFIG})")
    _config_flag(check)
    _log_flags(check)
    check.set_defaults(command=cmd_check_config)

    scan = commands.add_parser("scan", help="count rule matches in existing log files (plain or .gz)")
    scan.add_argument("files", nargs="+", metavar="FILE")
    _config_flag(scan)
    _log_flags(scan)
    scan.add_argument("--format", choices=["table", "json"], default="table")
    scan.add_argument(
        "--fail-on", choices=sorted(FAIL_LEVELS), help="exit 1 if any rule of this severity (or worse) matched"
    )
    scan.add_argument(
        "--metrics-out", metavar="FILE", help="write Prometheus text for node_exporter's textfile collector"
    )
    scan.add_argument(
        "--jobs",
        "-j",
        type=_positive_int,
        metavar="N",
        help="processes for one large plain file, cut at line ends (default: the CPUs this process may use)",
    )
    scan.set_defaults(command=cmd_scan)

    run = commands.add_parser("run", help="follow the logs, export metrics, checkpoint state (the sidecar)")
    _config_flag(run)
    _log_flags(run)
    run.add_argument(
        "--log",
        action="append",
        default=[],
        metavar="[NAME=]PATH_OR_GLOB",
        help="follow this path or glob as one stream (repeatable; replaces the config's sources)",
    )
    run.add_argument("--listen", metavar="HOST:PORT", help="address of /metrics, /healthz, /readyz")
    run.add_argument("--state-dir", metavar="DIR", help="where the checkpoint lives (default: state.directory)")
    run.add_argument(
        "--web-config", metavar="FILE", help="TLS and basic auth (Prometheus exporters' web config format)"
    )
    _mongo_flags(run)
    run.set_defaults(command=cmd_run)

    verify = commands.add_parser(
        "verify", help="check now that every analysis these logs report as finished has its status in MongoDB"
    )
    verify.add_argument("files", nargs="+", metavar="FILE")
    _config_flag(verify)
    _log_flags(verify)
    _mongo_flags(verify)
    verify.add_argument("--format", choices=["table", "json"], default="table")
    verify.add_argument(
        "--repair-plan", metavar="PLAN.json", help="also write which lost statuses to restore, to what, and why"
    )
    verify.set_defaults(command=cmd_verify)

    repair = commands.add_parser(
        "repair", help="show (or with --apply, make) the changes of a repair plan; a changed document is skipped"
    )
    repair.add_argument("plan", metavar="PLAN.json", help="written by `monitor verify --repair-plan`")
    _config_flag(repair)
    _log_flags(repair)
    _mongo_flags(repair)
    repair.add_argument("--apply", action="store_true", help="change the documents (without it nothing changes)")
    repair.set_defaults(command=cmd_repair)

    explain = commands.add_parser(
        "explain", help="one analysis: every log line naming it, its MongoDB status, and the verdict"
    )
    explain.add_argument("id", metavar="ID", help="the analysis id as the log shows it")
    explain.add_argument("files", nargs="+", metavar="FILE")
    _config_flag(explain)
    _log_flags(explain)
    _mongo_flags(explain)
    explain.add_argument("--format", choices=["table", "json"], default="table")
    explain.set_defaults(command=cmd_explain)
    return parser


def _mongo_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mongo-url", metavar="URL", help="MongoDB URI (default: mongodb.url, $MONGODB_URL, $MONGODB_URL_FILE)"
    )
    parser.add_argument("--mongo-db", metavar="NAME", help="database name (default: mongodb.database)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help=f"config file (default: ./{DEFAULT_CONFIG})")


def _log_flags(
    parser: argparse.ArgumentParser, default_level: str | None = None, default_format: str | None = None
) -> None:
    """--log-level/--log-format: on the main parser with their defaults, and on each command
    without any (argparse.SUPPRESS), so either place works and a command's flag wins."""
    parser.add_argument(
        "--log-level",
        choices=list(LEVELS),
        default=default_level or argparse.SUPPRESS,
        help="the sidecar's own log: the least severe level shown (default: info)",
    )
    parser.add_argument(
        "--log-format",
        choices=list(FORMATS),
        default=default_format or argparse.SUPPRESS,
        help="text, or json: one JSON object per line (time, level, logger, message, fields) (default: text)",
    )


def load(args: argparse.Namespace, event_rules: Collection[str] | None = EVERY_RULE) -> tuple[LoadedConfig, Matcher]:
    """Load and compile the config named on the command line; ConfigError on any problem."""
    loaded = load_config(getattr(args, "file", None) or args.config or DEFAULT_CONFIG)
    matcher = compile_matcher(loaded.config.rules, loaded.config.timestamp, loaded.where, event_rules=event_rules)
    return loaded, matcher


def cmd_check_config(args: argparse.Namespace) -> int:
    loaded, matcher = load(args)
    print_rules(matcher.rules)
    examples = sum(len(rule.examples) for rule in matcher.rules)
    print(f"{loaded.path}: OK, {len(matcher.rules)} rules, {examples} example lines matched")
    return EXIT_OK


def cmd_scan(args: argparse.Namespace) -> int:
    loaded, matcher = load(args, event_rules=())  # counts only: events just for labelled rules
    config = loaded.config
    registry = CollectorRegistry()
    metrics = LogMetrics(config, registry)
    metrics.declare_stream(SCAN_STREAM)
    paths, errors = expand_paths(args.files)  # a pattern matching nothing is an error, like a missing file
    read = FramerStats()
    from monitor.oneshot import default_jobs, scan_file  # multiprocessing: ~5 ms and 0.5 MB `run` need not pay

    jobs = args.jobs or default_jobs()
    with _Progress(paths) as advance:
        for path in paths:
            max_line, chunk = config.scan.max_line_bytes, config.scan.read_chunk_bytes
            for result in scan_file(path, matcher, max_line, chunk, jobs, advance(path)):
                result.observe_into(metrics, SCAN_STREAM)
                errors += [result.error] if result.error else []
                for name in ("lines", "bytes", "oversized_lines"):
                    setattr(read, name, getattr(read, name) + getattr(result.stats, name))
    summary = _summary(metrics, config.rules, paths, errors, read)
    if args.metrics_out:
        try:
            write_textfile(Path(args.metrics_out), summary, _event_counts(metrics), config.metrics.prefix)
        except OSError as exc:
            say(f"--metrics-out {args.metrics_out}: cannot write it: {exc.strerror or exc}")
            return EXIT_BAD_INPUT
    if args.format == "json":
        print(summary.to_json())
    else:
        print_scan(summary)
    for error in errors:
        say(error)
    if errors:
        return EXIT_BAD_INPUT
    failing = FAIL_LEVELS.get(args.fail_on or "", set())
    if any(row.count and row.severity in failing for row in summary.rules):
        return EXIT_FOUND
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.sidecar import RunOptions, Sidecar, StartError

    options = RunOptions(
        config_path=Path(args.config or DEFAULT_CONFIG),
        logs=tuple(args.log),
        listen=args.listen,
        state_dir=args.state_dir,
        mongo_url=args.mongo_url,
        mongo_db=args.mongo_db,
        web_config=args.web_config,
    )
    if args.listen:
        try:
            parse_listen(args.listen)
        except ValueError as exc:
            say(f"--listen: {exc}")
            return EXIT_BAD_INPUT
    sidecar = Sidecar(options)
    try:
        sidecar.start()
    except StartError as exc:
        say(str(exc))
        sidecar.shutdown()
        return EXIT_BAD_INPUT
    signal.signal(signal.SIGTERM, lambda *_: sidecar.stop())
    signal.signal(signal.SIGINT, lambda *_: sidecar.stop())
    signal.signal(signal.SIGHUP, lambda *_: sidecar.request_reload())
    sidecar.run()
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from monitor.mongo_url import MongoQueryError, resolve_url
    from monitor.sidecar import build_reconciler
    from monitor.verify import NO_URL, verify

    loaded, matcher = load(args)
    config = loaded.config
    if not config.reconcile.claims:
        raise ConfigError("reconcile.claims: no claims configured, nothing to verify")
    try:
        has_url = bool(resolve_url(config.mongodb, args.mongo_url))
    except MongoQueryError:
        has_url = True  # an unreadable URL file: build_reconciler says which and why
    if not has_url:  # said before anything else: verify has nothing to check without a database
        say(f"verify: {NO_URL}")
        return EXIT_BAD_INPUT
    # One-shot: check every claim now, no grace, no re-checks; keep every finding for the report.
    reconcile = config.reconcile.model_copy(
        update={
            "grace_seconds": 0.0,
            "deadline_seconds": 0.0,
            "findings_kept": 10**7,
            "stuck": config.reconcile.stuck.model_copy(update={"enabled": False}),
        }
    )
    config = config.model_copy(update={"reconcile": reconcile})
    reconciler = build_reconciler(config, args.mongo_url, args.mongo_db)
    files, missing = expand_paths(args.files)
    try:
        plan = Path(args.repair_plan) if args.repair_plan else None
        return verify(config, matcher, files, reconciler, args.format, repair_plan=plan, input_errors=missing)
    finally:
        if reconciler is not None:
            reconciler.mongo.close()


def cmd_repair(args: argparse.Namespace) -> int:
    from monitor.assemble import open_gateway
    from monitor.mongo import MongoQueryError, MongoUnavailableError
    from monitor.repair import PlanError, describe, read_plan
    from monitor.verify import NO_URL

    try:
        plan, repairs = read_plan(Path(args.plan))
    except PlanError as exc:
        say(str(exc))
        return EXIT_BAD_INPUT
    config = load(args)[0].config
    database = args.mongo_db or plan.get("database") or config.mongodb.database
    if plan.get("database") and plan["database"] != database:
        say(
            f"{args.plan} was made for database {plan['database']!r}, not {database!r}; "
            f"pass --mongo-db {plan['database']}"
        )
        return EXIT_BAD_INPUT
    gateway = open_gateway(config, args.mongo_url, database)
    if gateway is None:
        say(f"repair: {NO_URL}")
        return EXIT_BAD_INPUT
    done = skipped = 0
    try:
        for repair in repairs:
            still = gateway.repair_one(repair.filter, repair.update) if args.apply else gateway.matching(repair.filter)
            if still:
                done += 1
                print(f"{'applied' if args.apply else 'would apply'}  {describe(repair)}")
            else:
                skipped += 1
                print(f"skipped  {repair.analysis_id}: the document is no longer pending (changed since the plan)")
    except (MongoUnavailableError, MongoQueryError) as exc:
        say(f"{exc}; {done} applied before the failure" if args.apply else str(exc))
        return EXIT_BAD_INPUT
    finally:
        gateway.close()
    if args.apply:
        print(f"{done} repair(s) applied, {skipped} skipped because the document changed")
    else:
        print(f"{done} repair(s) would be applied, {skipped} would be skipped; nothing changed (pass --apply)")
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from monitor.explain import explain

    loaded, matcher = load(args)
    files, missing = expand_paths(args.files)
    return explain(
        loaded.config, matcher, args.id, files, args.mongo_url, args.mongo_db, args.format, input_errors=missing
    )


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
