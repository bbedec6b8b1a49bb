"""The main job (`monitor run`): follow -> scan -> metrics, checkpointed, served over HTTP.

One thread (the caller's) runs the follow loop and does all the work on the
log's bytes; the HTTP server answers scrapes on its own threads; watchdog's
threads only wake the loop. One lock (`_lock`) guards everything the
checkpoint reads, so a checkpoint is always a consistent cut: read positions
and the counters they produced.

Every scrape of /metrics first writes the checkpoint and then renders the
metrics under the same lock, so Prometheus never sees a value the checkpoint
does not hold: after `kill -9` the counters continue from exactly what was
last scraped, and the lines after the checkpointed offsets are counted once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from monitor.claims import ClaimExtractor
from monitor.config import Config, ConfigError, LoadedConfig, load_config, parse_listen
from monitor.follow import Data, End, Follower, FollowSettings, Identity, Item, Position, StreamSpec
from monitor.metrics import LogMetrics, reconcile_families
from monitor.scan import Event, Matcher, Scanner, compile_matcher
from monitor.server import Endpoints, MetricsServer
from monitor.state import StateStore
from monitor.watch import Waker
from monitor.webconfig import WebSecurity, load_web_config

if TYPE_CHECKING:
    from monitor.reconcile import Reconciler

log = logging.getLogger(__name__)

BUSY_LINGER_SECONDS = 0.5
FOLLOW_STATE = (
    "rotations",
    "truncations",
    "read_errors",
    "lost_files",
)  # the follower's checkpointed counters  # keep polling fast this long after the last data, so bursts do not flap


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


def load_and_compile(path: Path) -> tuple[LoadedConfig, Matcher]:
    loaded = load_config(path)
    return loaded, compile_matcher(loaded.config.rules, loaded.config.timestamp, loaded.where)


@dataclass
class _Timers:
    next_resolve: float = 0.0
    next_checkpoint: float = 0.0
    last_data: float = -1e9
    last_checkpoint: float = -2e9
    last_resolve: float = -1e9
    checkpointed_generation: int = -1
    last_loop: float = field(default_factory=time.monotonic)


class Sidecar:
    """Follows the configured streams and keeps the metrics and the checkpoint."""

    def __init__(
        self,
        options: RunOptions,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.loaded, self.matcher = load_and_compile(options.config_path)
        config = self.loaded.config
        self.streams = streams_of(config, options.logs)
        if not self.streams:
            raise ConfigError(
                f"{options.config_path}: sources: no log to follow; add a `sources:` list "
                "or pass --log PATH (a path or a glob)"
            )
        self.listen = parse_listen(options.listen or config.metrics.listen)
        web_config = options.web_config or config.metrics.web_config_file
        self.security = load_web_config(web_config) if web_config else WebSecurity()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = LogMetrics(config, self.registry)
        for stream in self.streams:
            self.metrics.declare_stream(stream.name)
        self.follower = Follower(self.streams, _follow_settings(config), clock=clock)
        self.store = StateStore(options.state_dir or config.state.directory)
        # Later stages plug in here: who gets the events, and what else the checkpoint holds.
        self.event_sinks: list[Callable[[str, list[Event]], None]] = []
        self.state_savers: dict[str, Callable[[], Any]] = {}
        self.restored_extra: dict[str, Any] = {}
        for result in ("success", "failure"):
            self.metrics.count("config_reloads", (("result", result),), 0)
        self.metrics.count("checkpoint_failures", (), 0)
        self.reconciler = build_reconciler(config, options.mongo_url, options.mongo_db)
        if self.reconciler is not None:
            self._connect_reconciler(config)
        self._clock = clock
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._sequence = itertools.count(1)
        self._written = 0
        self._scanners: dict[int, Scanner] = {}
        self._stopping = threading.Event()
        self._reload_requested = False
        self._timers = _Timers(last_loop=clock())
        self._waker = Waker()
        self.server: MetricsServer | None = None

    def _connect_reconciler(self, config: Config) -> None:
        reconciler = self.reconciler
        self._extractor = ClaimExtractor(config.reconcile.claims)
        self.event_sinks.append(lambda stream, events: reconciler.submit(self._extractor.claims(events, stream)))
        self.state_savers["reconcile"] = reconciler.snapshot
        prefix = config.metrics.prefix
        self.metrics.add_collector(
            lambda: reconcile_families(prefix, reconciler.stats_snapshot(), reconciler.mongo.stats)
        )

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Restore the checkpoint, start watching and serving. `run` calls it if needed."""
        self._restore()
        self.server = MetricsServer(*self.listen, self.endpoints(), self.security).start()
        self._waker.start()
        if self.reconciler is not None:
            try:
                self.reconciler.restore(self.restored_extra.get("reconcile", {}))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                log.error(
                    "checkpoint %s: pending MongoDB checks unreadable (%s); they start empty", self.store.path, exc
                )
            self.reconciler.start()
        log.info(
            "following %s; metrics on http://%s:%d/metrics; state in %s",
            ", ".join(f"{s.name}={'|'.join(s.paths)}" for s in self.streams),
            self.listen[0],
            self.server.port,
            self.store.path,
        )

    def run(self) -> None:
        """The follow loop, until `stop()`; then a last checkpoint and everything closed."""
        if self.server is None:
            self.start()
        try:
            while not self._stopping.is_set():
                self._pass()
        finally:
            self.shutdown()

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler or another thread)."""
        self._stopping.set()
        self._waker.event.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._waker.event.set()

    def shutdown(self) -> None:
        self.checkpoint()
        if self.server is not None:
            self.server.close()
        self._waker.stop()
        if self.reconciler is not None:
            self.reconciler.stop()
        with self._lock:
            self.follower.close()

    # -- the loop ----------------------------------------------------------------------

    def _pass(self) -> None:
        timers, settings = self._timers, self.loaded.config.follow
        self._waker.event.clear()
        if self._reload_requested:
            self._reload_requested = False
            self.reload()
        now = self._clock()
        # Re-listing costs what the globs match: with 100k files, listing at most a tenth of the time.
        gap = 10 * self.follower.last_resolve_seconds
        resolve = now >= timers.next_resolve or (self._waker.structure_changed and now >= timers.last_resolve + gap)
        if resolve:
            self._waker.structure_changed = False
            timers.last_resolve = now
        with self._lock:
            for item in self.follower.poll(resolve=resolve):
                self._apply(item)
        if resolve:
            timers.next_resolve = now + max(settings.poll_interval_seconds, gap)
            self._waker.watch_directories(self.follower.watch_directories())
        if self.follower.busy:
            timers.last_data = now
        timers.last_loop = self._clock()
        files_changed = self.follower.generation != timers.checkpointed_generation
        if files_changed or (now >= timers.next_checkpoint and timers.last_data > timers.last_checkpoint):
            self.checkpoint()
            timers.checkpointed_generation = self.follower.generation
            timers.last_checkpoint = now
            timers.next_checkpoint = now + self.loaded.config.state.checkpoint_interval_seconds
        busy = now - timers.last_data < BUSY_LINGER_SECONDS
        if self._waker.want_modify_events(not busy) and not busy:
            return  # a write may have slipped by while the watch changed: look once more first
        if self._stopping.is_set():
            return
        if busy:
            time.sleep(settings.busy_poll_seconds)  # modify events are off: nothing to wait for but time
        else:
            self._waker.event.wait(settings.poll_interval_seconds)

    def _apply(self, item: Item) -> None:
        scanner = self._scanners.get(item.file)
        if scanner is None:
            if not isinstance(item, Data):
                return  # nothing was read from that file yet
            scanner = self._scanners[item.file] = Scanner(self.matcher, self.loaded.config.scan.max_line_bytes)
        stats = scanner.framer.stats
        lines, size, oversized = stats.lines, stats.bytes, stats.oversized_lines
        self._deliver(item.stream, scanner.feed(item.data) if isinstance(item, Data) else scanner.flush())
        self.metrics.observe_read(
            item.stream, stats.lines - lines, stats.bytes - size, stats.oversized_lines - oversized
        )
        if isinstance(item, End):
            del self._scanners[item.file]

    def _deliver(self, stream: str, events: list[Event]) -> None:
        if not events:
            return
        self.metrics.observe_events(events)
        for sink in self.event_sinks:
            sink(stream, events)

    # -- state -------------------------------------------------------------------------

    def checkpoint(self) -> bool:
        with self._lock:
            state, sequence = self._state(), next(self._sequence)
        return self._write(state, sequence)

    @contextlib.contextmanager
    def _scrape(self) -> Iterator[None]:
        # The state is taken and the metrics rendered under one lock hold, so the response shows
        # exactly what is saved; the fsync runs after the lock is released (the follow loop goes
        # on) and before the response is sent.
        with self._lock:
            self.follower.refresh_gauges()
            self.metrics.observe_follow(self.follower.stats)
            state, sequence = self._state(), next(self._sequence)
            yield
        self._write(state, sequence)

    def _write(self, state: dict[str, Any], sequence: int) -> bool:
        with self._write_lock:
            if sequence <= self._written:
                return True  # a newer checkpoint is already on disk
            saved = self.store.save(state)
            if saved:
                self._written = sequence
        if not saved:
            self.metrics.count("checkpoint_failures")
        return saved

    def _state(self) -> dict[str, Any]:
        files = []
        for serial, position in self.follower.positions():
            scanner = self._scanners.get(serial)
            # A partial last line is not counted yet: resume at its start after a restart.
            offset = position.offset - (scanner.framer.pending_bytes if scanner else 0)
            identity = position.identity
            files.append(
                {
                    "stream": position.stream,
                    "path": position.path,
                    "dev": identity.dev,
                    "ino": identity.ino,
                    "fp_len": identity.fp_len,
                    "fp": identity.fp,
                    "offset": max(offset, 0),
                    "size": position.size,
                }
            )
        follow_stats = {name: {k: getattr(s, k) for k in FOLLOW_STATE} for name, s in self.follower.stats.items()}
        return {
            "files": files,
            "metrics": self.metrics.snapshot(),
            "follow": follow_stats,
            "extra": {name: save() for name, save in self.state_savers.items()},
        }

    def _restore(self) -> None:
        state = self.store.load()
        if state is None:
            log.info(
                "no checkpoint in %s: first start, reading from the %s of existing files",
                self.store.directory,
                self.loaded.config.follow.start_at,
            )
            return
        try:
            # Everything is parsed (the counters into a scratch copy) before anything is applied:
            # a checkpoint of the right version but the wrong shape must not leave half a restore.
            LogMetrics(self.loaded.config, None).restore(state.get("metrics", {}))
            follow = {
                name: {key: int(values[key]) for key in FOLLOW_STATE if key in values}
                for name, values in dict(state.get("follow", {})).items()
            }
            positions = [
                Position(
                    f["stream"],
                    f["path"],
                    Identity(int(f["dev"]), int(f["ino"]), int(f["fp_len"]), f["fp"]),
                    int(f["offset"]),
                    int(f.get("size", 0)),
                )
                for f in state.get("files", [])
            ]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.error("checkpoint %s has unexpected content (%s); starting fresh", self.store.path, exc)
            return
        self.metrics.restore(state.get("metrics", {}))
        for name, values in follow.items():
            if name in self.follower.stats:
                for key, value in values.items():
                    setattr(self.follower.stats[name], key, value)
        self.follower.restore(positions)
        self.restored_extra = state.get("extra", {})
        log.info("resumed from checkpoint: %d file position(s)", len(positions))

    # -- endpoints, reload ------------------------------------------------------------

    def endpoints(self) -> Endpoints:
        findings = self.reconciler.recent_findings if self.reconciler is not None else list
        return Endpoints(
            self.registry,
            scrape_guard=self._scrape,
            healthy=self._healthy,
            ready=self._ready,
            json_pages={"/findings": findings},
        )

    def _healthy(self) -> tuple[bool, str]:
        stalled = self._clock() - self._timers.last_loop
        limit = max(30.0, 10 * self.loaded.config.follow.poll_interval_seconds)
        if stalled > limit:
            return False, f"follow loop stalled for {stalled:.0f} s"
        return True, "ok"

    def _ready(self) -> tuple[bool, str]:
        if not self.follower.resolved:
            return False, "resolving sources"
        with self._lock:
            self.follower.refresh_gauges()
            files = sum(s.files_open for s in self.follower.stats.values())
        return True, f"ready: {files} file(s) followed"

    def reload(self) -> bool:
        """Re-read the config (SIGHUP): new rules apply to new lines; offsets and counts are kept."""
        try:
            loaded, matcher = load_and_compile(self.options.config_path)
        except ConfigError as exc:
            log.error("config reload failed; the running config stays in force:\n%s", exc)
            self.metrics.count("config_reloads", (("result", "failure"),))
            return False
        with self._lock:
            if streams_of(loaded.config, self.options.logs) != self.streams:
                log.warning("sources changed in the config: restart the sidecar to follow the new ones")
            self.loaded, self.matcher = loaded, matcher
            if self.reconciler is not None:
                self._extractor = ClaimExtractor(loaded.config.reconcile.claims)
            for scanner in self._scanners.values():
                scanner.matcher = matcher
            self.metrics.set_rules(loaded.config)
        self.metrics.count("config_reloads", (("result", "success"),))
        log.info("config reloaded: %d rules", len(matcher.rules))
        return True


def build_reconciler(config: Config, mongo_url: str | None, mongo_db: str | None) -> Reconciler | None:
    """The MongoDB check, or None (log-only) when no claims are configured or no URL is given."""
    # Imported here: pymongo costs ~8 MB of RSS, which a log-only sidecar does not pay.
    from monitor.mongo import MongoGateway, MongoQueryError, resolve_url
    from monitor.reconcile import Reconciler

    settings = config.mongodb
    if mongo_db:
        settings = settings.model_copy(update={"database": mongo_db})
    try:
        url = resolve_url(settings, mongo_url)
    except MongoQueryError as exc:
        raise ConfigError(f"mongodb: {exc}; fix the path or the mounted secret") from None
    if not config.reconcile.claims:
        return None
    if not url:
        log.info(
            "no MongoDB URL (mongodb.url, MONGODB_URL, MONGODB_URL_FILE or --mongo-url): running log-only, "
            "claims in the log are not checked against the database"
        )
        return None
    try:
        gateway = MongoGateway(settings, url)
    except MongoQueryError as exc:
        raise ConfigError(f"mongodb.url: {exc}") from None
    log.info("checking claims against %s, database %s", gateway.where, settings.database)
    return Reconciler(config.reconcile, gateway, [claim.name for claim in config.reconcile.claims])


def _follow_settings(config: Config) -> FollowSettings:
    follow = config.follow
    return FollowSettings(
        start_at=follow.start_at,
        read_chunk_bytes=config.scan.read_chunk_bytes,
        partial_line_flush_seconds=follow.partial_line_flush_seconds,
        rotated_close_idle_seconds=follow.rotated_close_idle_seconds,
        max_files_per_stream=follow.max_files_per_stream,
    )
