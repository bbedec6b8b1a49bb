"""Command line: `monitor check-config | scan | run | verify | repair | explain`.

Parsing and dispatch only: what a command does lives with its stage (`monitor.incident`
for the one-shot commands, `monitor.run` for the sidecar). Exit statuses: `monitor.exits`.

FILE arguments may be glob patterns no shell expanded (`monitor.scan.readfiles.expand_paths`).
`--log-level` and `--log-format` (before or after the command's name) set the sidecar's own
log and how commands report errors on stderr (`monitor.logs`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Collection, Sequence
from pathlib import Path

from monitor import __version__
from monitor.config import DEFAULT_CONFIG, ConfigError, LoadedConfig, load_config
from monitor.exits import EXIT_BAD_INPUT, EXIT_INTERRUPTED
from monitor.logs import FORMATS, LEVELS, EscapingFormatter, say, setup
from monitor.scan.matcher import EVERY_RULE, Matcher, compile_matcher
from monitor.scan.readfiles import expand_paths

FAIL_ON = ("error", "warning")
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
        return EXIT_INTERRUPTED


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
    scan.add_argument("--fail-on", choices=FAIL_ON, help="exit 1 if any rule of this severity (or worse) matched")
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
    _report_flag(scan)
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
    _report_flag(verify)
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


def _report_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--report",
        metavar="FILE.html",
        type=Path,
        help="also write a self-contained HTML report (timeline, per-minute counts, tables) to attach to a ticket",
    )


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
    cache = rules_cache(args.command.__name__.removeprefix("cmd_"))
    matcher = compile_matcher(
        loaded.config.rules, loaded.config.timestamp, loaded.where, event_rules=event_rules, cache_dir=cache
    )
    return loaded, matcher


def rules_cache(command: str, environ: dict[str, str] | None = None) -> Path | None:
    """Where a one-shot command keeps its compiled rules: compiling costs 0.1-0.2 s of every run
    (a third of a `scan` of ten rotated logs), loading them 1 ms. The user's cache directory
    ($XDG_CACHE_HOME, else ~/.cache), one folder a command (scan and verify compile the rules
    differently); None, compiling each time, where there is no home. A cache that cannot be
    written or read is compiled around, never an error (`monitor.scan.matcher._load_or_build`)."""
    environ = os.environ if environ is None else environ
    xdg, home = environ.get("XDG_CACHE_HOME", ""), environ.get("HOME", "")
    base = xdg if os.path.isabs(xdg) else f"{home}/.cache" if os.path.isabs(home) else ""  # relative: ignored
    return Path(base, "tradingagents-logmonitor", command) if base else None


def cmd_check_config(args: argparse.Namespace) -> int:
    from monitor.incident.rules import check_config

    return check_config(*load(args))


def cmd_scan(args: argparse.Namespace) -> int:
    from monitor.incident.rules import scan_files

    loaded, matcher = load(args, event_rules=())  # counts only: events just for labelled rules
    paths, errors = expand_paths(args.files)  # a pattern matching nothing is an error, like a missing file
    return scan_files(
        loaded, matcher, paths, errors, args.format, args.fail_on, args.metrics_out, args.jobs, report=args.report
    )


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.run.sidecar import RunOptions, run_sidecar

    options = RunOptions(
        config_path=Path(args.config or DEFAULT_CONFIG),
        logs=tuple(args.log),
        listen=args.listen,
        state_dir=args.state_dir,
        mongo_url=args.mongo_url,
        mongo_db=args.mongo_db,
        web_config=args.web_config,
    )
    return run_sidecar(options)


def cmd_verify(args: argparse.Namespace) -> int:
    from monitor.incident.verify import verify_command

    loaded, matcher = load(args)
    files, missing = expand_paths(args.files)
    plan = Path(args.repair_plan) if args.repair_plan else None
    return verify_command(
        loaded.config,
        matcher,
        files,
        args.mongo_url,
        args.mongo_db,
        args.format,
        plan,
        input_errors=missing,
        report=args.report,
    )


def cmd_repair(args: argparse.Namespace) -> int:
    from monitor.incident.repair import repair

    def config_and_matcher() -> tuple:
        loaded, matcher = load(args)
        return loaded.config, matcher

    return repair(Path(args.plan), config_and_matcher, args.mongo_url, args.mongo_db, args.apply)


def cmd_explain(args: argparse.Namespace) -> int:
    from monitor.incident.explain import explain

    loaded, matcher = load(args)
    files, missing = expand_paths(args.files)
    return explain(
        loaded.config, matcher, args.id, files, args.mongo_url, args.mongo_db, args.format, input_errors=missing
    )
