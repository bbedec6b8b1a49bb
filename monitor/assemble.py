"""Assembly: from a config file and the command line to the parts `monitor run` wires together.

Pure construction, no threads: which streams to follow, the compiled rules,
the follower's settings, and the MongoDB check (or none, log-only).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.config import Config, ConfigError, LoadedConfig, load_config
from monitor.follow import FollowSettings, StreamSpec
from monitor.scan import Matcher, compile_matcher

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from monitor.mongo import MongoGateway
    from monitor.reconcile import Reconciler

log = logging.getLogger("monitor.sidecar")


@dataclass(frozen=True)
class RunOptions:
    """Command-line overrides of the config (`monitor run --log/--listen/--state-dir`)."""

    config_path: Path
    logs: tuple[str, ...] = ()
    listen: str | None = None
    state_dir: str | None = None
    mongo_url: str | None = None
    mongo_db: str | None = None
    web_config: str | None = None


def streams_of(config: Config, logs: tuple[str, ...] = ()) -> list[StreamSpec]:
    """The streams to follow: one per `--log` flag (NAME=PATH or PATH), else the config's sources."""
    if not logs:
        return [StreamSpec(s.name, tuple(s.paths)) for s in config.sources]
    streams = []
    for index, spec in enumerate(logs):
        name, sep, path = spec.partition("=")
        if not sep or "/" in name:
            name, path = _stream_name(spec, index), spec
        streams.append(StreamSpec(name, (path,)))
    return streams


def _stream_name(path: str, index: int) -> str:
    base = os.path.basename(path).split(".")[0]
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in base).strip("_")
    return cleaned if cleaned and not cleaned[0].isdigit() else f"log{index + 1}"


def load_and_compile(path: Path, state_dir: str | Path | None = None) -> tuple[LoadedConfig, Matcher]:
    """The config and its matcher for `monitor run`: events only for the rules claims read, the
    compiled rules cached in the state directory (a restart loads them instead of compiling)."""
    loaded = load_config(path)
    config = loaded.config
    claim_rules = {claim.rule for claim in config.reconcile.claims}
    cache = Path(state_dir or config.state.directory) / "cache"
    matcher = compile_matcher(config.rules, config.timestamp, loaded.where, event_rules=claim_rules, cache_dir=cache)
    return loaded, matcher


def open_gateway(config: Config, mongo_url: str | None, mongo_db: str | None) -> MongoGateway | None:
    """The gateway to the analyses' collection (URL from the flag, config, MONGODB_URL or
    MONGODB_URL_FILE; database from the flag or config), or None when no URL is given anywhere."""
    from monitor.mongo_url import MongoQueryError, resolve_url

    settings = config.mongodb
    if mongo_db:
        settings = settings.model_copy(update={"database": mongo_db})
    try:
        url = resolve_url(settings, mongo_url)
    except MongoQueryError as exc:
        raise ConfigError(f"mongodb: {exc}; fix the path or the mounted secret") from None
    if not url:
        return None
    # Imported only now: pymongo costs ~8 MB of RSS, which a log-only sidecar does not pay.
    from monitor.mongo import MongoGateway

    try:
        return MongoGateway(settings, url)
    except MongoQueryError as exc:
        raise ConfigError(f"mongodb.url: {exc}") from None


def build_reconciler(
    config: Config, mongo_url: str | None, mongo_db: str | None, registry: CollectorRegistry | None = None
) -> Reconciler | None:
    """The MongoDB check, or None (log-only) when no claims are configured or no URL is given."""
    gateway = open_gateway(config, mongo_url, mongo_db)  # a broken URL or secret fails even without claims
    if not config.reconcile.claims:
        if gateway is not None:
            gateway.close()
        return None
    if gateway is None:
        log.info(
            "no MongoDB URL (mongodb.url, MONGODB_URL, MONGODB_URL_FILE or --mongo-url): running log-only, "
            "claims in the log are not checked against the database"
        )
        return None
    from monitor.reconcile import Reconciler  # with the driver: only when there is a database to ask

    log.info("checking claims against %s, database %s", gateway.where, gateway.settings.database)
    claim_names = [claim.name for claim in config.reconcile.claims]
    return Reconciler(
        config.reconcile,
        gateway,
        claim_names,
        registry=registry,
        metric_prefix=config.metrics.prefix,
        self_prefix=config.metrics.self_prefix,
    )


def follow_settings(config: Config) -> FollowSettings:
    follow = config.follow
    return FollowSettings(
        start_at=follow.start_at,
        read_chunk_bytes=config.scan.read_chunk_bytes,
        partial_line_flush_seconds=follow.partial_line_flush_seconds,
        rotated_close_idle_seconds=follow.rotated_close_idle_seconds,
        max_files_per_stream=follow.max_files_per_stream,
    )
