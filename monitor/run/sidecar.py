"""The main job (`monitor run`): the parts wired together, started, checkpointed, served, stopped.

follow (the follower, driven by `FollowLoop`) -> scan (`Pipeline`) -> metrics and
reconcile; the checkpoint (`Checkpoint`) keeps what must survive a restart and
the HTTP server answers scrapes and health checks.

`SidecarState` (`monitor.run.state`) cuts, saves and restores the parts' state:
every scrape is answered only once what it shows is on disk.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from monitor.audit.auditor import Auditor
from monitor.audit.book import AuditBook
from monitor.config import ConfigError, parse_listen
from monitor.exits import EXIT_BAD_INPUT, EXIT_NOT_SAVED, EXIT_OK
from monitor.export.metrics import LogMetrics
from monitor.export.server import Endpoints, MetricsServer
from monitor.export.webconfig import WebSecurity, load_web_config
from monitor.follow import Follower
from monitor.follow.watch import Waker
from monitor.logs import say
from monitor.reconcile.claims import ClaimExtractor
from monitor.reconcile.connect import build_reconciler
from monitor.run.assemble import RunOptions, follow_settings, load_and_compile, streams_of
from monitor.run.checkpoint import Checkpoint
from monitor.run.loop import FollowLoop
from monitor.run.pipeline import Pipeline
from monitor.run.state import SidecarState
from monitor.run.statedir import StateDirectoryError

log = logging.getLogger("monitor.sidecar")  # the name operators filter on: see monitor.logs

__all__ = ["RunOptions", "Sidecar", "StartError", "run_sidecar"]


def run_sidecar(options: RunOptions) -> int:
    """The command: start, follow until SIGTERM or SIGINT (SIGHUP reloads the config), stop."""
    if options.listen:
        try:
            parse_listen(options.listen)
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
    return EXIT_OK if sidecar.run() else EXIT_NOT_SAVED


class StartError(Exception):
    """The sidecar cannot start; the message says what failed and what to do."""


class Sidecar:
    """Follows the configured streams and keeps the metrics and the checkpoint."""

    def __init__(
        self,
        options: RunOptions,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.loaded, matcher = load_and_compile(options.config_path, options.state_dir)
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
        # process_* (memory, CPU, open fds, start time: restarts show), python_info and python_gc_*:
        # prometheus-client's own collectors, as every exporter has them.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.metrics = LogMetrics(config, self.registry)
        for stream in self.streams:
            self.metrics.declare_stream(stream.name)
        for result in ("success", "failure"):
            self.metrics.count("config_reloads", (("result", result),), 0)
        for counter in ("checkpoint_failures", "checkpoint_recreated"):
            self.metrics.count(counter, (), 0)
        for reason in ("corrupt", "invalid"):
            self.metrics.count("checkpoint_set_aside", (("reason", reason),), 0)
        self.follower = Follower(
            self.streams,
            follow_settings(config),
            clock=clock,
            registry=self.registry,
            metric_prefix=config.metrics.self_prefix,
        )
        self.book = AuditBook(config.audit.retention_minutes) if config.audit.enabled else None
        self.pipeline = Pipeline(matcher, config.scan.max_line_bytes, self.metrics, self.book)
        self.loop = FollowLoop(
            self.follower,
            self.pipeline,
            config.follow,
            config.state.checkpoint_interval_seconds,
            self.save,  # through self.state, built below: it takes the loop's lock
            waker=Waker(metric_prefix=config.metrics.self_prefix),
            clock=clock,
        )
        self.registry.register(self.loop.waker)
        self.reconciler = build_reconciler(config, options.mongo_url, options.mongo_db, self.registry)
        self._extractor = ClaimExtractor(config.reconcile.claims)
        if self.reconciler is not None:
            reconciler = self.reconciler
            self.pipeline.sinks.append(lambda stream, events: reconciler.submit(self._extractor.claims(events, stream)))
        self.state = SidecarState(
            Checkpoint(options.state_dir or config.state.directory, count=self.metrics.count),
            self.loop.lock,
            self.follower,
            self.pipeline,
            self.metrics,
            self.reconciler,
        )
        self.auditor: Auditor | None = None
        if self.book is not None:
            # Its own matcher: a Hyperscan scratch serves one thread at a time.
            self.auditor = Auditor(
                self.book,
                self.loop.lock,
                self._extents,
                matcher.for_another_thread(counts_only=True),
                config.audit,
                self.metrics,
                config.scan.max_line_bytes,
                timezone=config.timestamp.timezone,
            )
            self.auditor.declare([s.name for s in self.streams], [rule.name for rule in config.rules])
        self._reload_requested = False
        self.server: MetricsServer | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Restore the checkpoint, start watching and serving (StartError if it cannot listen)."""
        config = self.loaded.config
        try:
            self.state.restore(config.follow.start_at, config.reconcile.max_pending)
        except StateDirectoryError as exc:
            raise StartError(str(exc)) from None
        host, port = self.listen
        try:
            self.server = MetricsServer(host, port, self.endpoints(), self.security).start()
        except OSError as exc:
            raise StartError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; pass --listen HOST:PORT"
            ) from None
        self.loop.waker.start()
        if self.reconciler is not None:
            self.reconciler.start()
        if self.auditor is not None:
            self.auditor.start()
        log.info(
            "following %s; metrics on http://%s:%d/metrics; state in %s",
            ", ".join(f"{s.name}={'|'.join(s.paths)}" for s in self.streams),
            host,
            self.server.port,
            self.state.checkpoint.path,
        )

    def run(self) -> bool:
        """The follow loop, until `stop()`; then a last checkpoint and everything closed.
        False if that last checkpoint could not be written."""
        if self.server is None:
            self.start()
        try:
            self.loop.run(before_pass=self._reload_if_requested)
        except BaseException:
            self.shutdown()
            raise
        return self.shutdown()

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler or another thread)."""
        self.loop.stop()

    def save(self) -> bool:
        """A consistent cut of every part's state, written (False, counted and logged, if it failed)."""
        return self.state.save()

    def request_reload(self) -> None:
        self._reload_requested = True
        self.loop.waker.event.set()

    def shutdown(self) -> bool:
        """Stop serving and following, with a last checkpoint; False (logged) if it could not be written."""
        if self.auditor is not None:
            self.auditor.stop()
        saved = self.save()
        if self.server is not None:
            self.server.close()
        self.loop.waker.stop()
        if self.reconciler is not None:
            self.reconciler.stop()
            saved = self.save()  # claims settled while it stopped
        with self.loop.lock:
            self.follower.close()
        self.state.checkpoint.close()
        if not saved:
            log.error(
                "stopping without a last checkpoint: the save failed (see above). The next start goes back to "
                "the last checkpoint written (%s): counters step back to it and the lines since are read again",
                self.state.checkpoint.path,
            )
        return saved

    def _extents(self) -> list:
        """What was read of each file and whether all of it was counted (under the loop's lock)."""
        return [(e, self.pipeline.flushed(e.serial)) for e in self.follower.extents()]

    # -- endpoints, reload ------------------------------------------------------------

    def endpoints(self) -> Endpoints:
        findings = self.reconciler.recent_findings if self.reconciler is not None else list

        def current_findings() -> list:
            self.loop.catch_up()
            return findings()

        return Endpoints(
            self.registry,
            scrape_guard=self._scrape,
            healthy=self._healthy,
            ready=self._ready,
            json_pages={"/findings": current_findings},
        )

    @contextlib.contextmanager
    def _scrape(self) -> Iterator[None]:
        """What was appended before the scrape is read first, then the cut is staged and rendered."""
        self.loop.catch_up()
        with self.state.scrape():
            yield

    def _healthy(self) -> tuple[bool, str]:
        stalled, limit = self.loop.stalled_for()
        if stalled > limit:
            return False, f"follow loop stalled for {stalled:.0f} s"
        return True, "ok"

    def _ready(self) -> tuple[bool, str]:
        if not self.follower.resolved:
            return False, "resolving sources"
        with self.loop.lock:
            self.follower.refresh_gauges()
            files = sum(s.files_open for s in self.follower.stats.values())
        return True, f"ready: {files} file(s) followed"

    def _reload_if_requested(self) -> None:
        if self._reload_requested:
            self._reload_requested = False
            self.reload()

    def reload(self) -> bool:
        """Re-read the config (SIGHUP): new rules apply to new lines; offsets and counts are kept."""
        try:
            loaded, matcher = load_and_compile(self.options.config_path, self.options.state_dir)
        except ConfigError as exc:
            log.error("config reload failed; the running config stays in force:\n%s", exc)
            self.metrics.count("config_reloads", (("result", "failure"),))
            return False
        with self.loop.lock:
            if streams_of(loaded.config, self.options.logs) != self.streams:
                log.warning("sources changed in the config: restart the sidecar to follow the new ones")
            self.loaded = loaded
            self._extractor = ClaimExtractor(loaded.config.reconcile.claims)
            self.pipeline.set_matcher(matcher)
            self.metrics.set_rules(loaded.config)
            if self.auditor is not None and self.book is not None:
                self.book.rules_changed()
                self.auditor.set_matcher(matcher.for_another_thread(counts_only=True))
        self.metrics.count("config_reloads", (("result", "success"),))
        log.info("config reloaded: %d rules", len(matcher.rules))
        return True
