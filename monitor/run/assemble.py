"""Assembly: from a config file and the command line to the parts `monitor run` wires together.

Pure construction, no threads: which streams to follow, the compiled rules and
the follower's settings. The MongoDB check is built by `monitor.reconcile.connect`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from monitor.config import Config, LoadedConfig, load_config
from monitor.follow import FollowSettings, StreamSpec
from monitor.scan.matcher import Matcher, compile_matcher


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
    matcher = compile_matcher(
        config.rules, config.timestamp, loaded.where, event_rules=claim_rules, cache_dir=_cache(config, state_dir)
    )
    return loaded, matcher


def _cache(config: Config, state_dir: str | Path | None) -> Path:
    return Path(state_dir or config.state.directory) / "cache"


def follow_settings(config: Config) -> FollowSettings:
    follow = config.follow
    return FollowSettings(
        start_at=follow.start_at,
        read_chunk_bytes=config.scan.read_chunk_bytes,
        partial_line_flush_seconds=follow.partial_line_flush_seconds,
        rotated_close_idle_seconds=follow.rotated_close_idle_seconds,
        max_files_per_stream=follow.max_files_per_stream,
    )
