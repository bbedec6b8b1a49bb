"""The HTTP endpoint: an asyncio server, where a connection costs a coroutine and a buffer, not a thread.

The sidecar needs hooks prometheus-client's own servers lack: a checkpoint
written *before* each scrape is answered (so a restart never shows Prometheus a
counter lower than one it already stored), health and readiness answered by the
follow loop, extra JSON pages. What a client controls is bounded here, so that
no client can stall the scrapes and probes of others:

- **Time.** A connection must deliver its whole request head (the TLS handshake
  included) within `head_seconds` (10) of being accepted, or of its previous
  answer on a kept-alive connection; an answer must be taken within
  `write_seconds` (30). The deadlines are on the whole, not on each read, so
  trickling one byte a second gains nothing.
- **Memory.** A request head is at most `max_head_bytes` (32 KiB: Prometheus
  sends under 1 KiB, a browser with cookies under 8 KiB; Go's 1 MB default would
  let 512 clients hold 512 MB of a 192 MiB pod), heads being read hold at most
  `max_buffered_bytes` (8 MiB) between them, and a request with a body is
  refused. Beyond `max_connections` (512), the connection that has waited
  longest for its request head is closed to make room: a client that sends its
  request at once (a scraper, a probe) gets in, one that holds a slot without
  asking for anything goes first. If every connection is being answered, the
  new one is closed instead.
- **Threads.** The event loop never blocks: /metrics and the JSON pages are
  rendered on two threads, readiness is asked on one (it takes the follow
  loop's lock), a password is checked on one (bcrypt costs ~0.1-1 s by design)
  and at most `max_auth_waiting` (16) wait for it; beyond that the answer is
  503 at once. A scrape whose credentials were checked before never waits for
  bcrypt, and /healthz and /readyz never wait for authentication or rendering.

Every connection that ends badly is counted in
`logmonitor_http_connection_errors_total{reason}` and logged at DEBUG only: a
client's resets and timeouts are not the sidecar's errors. Closing aborts every
connection at once, TLS or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import socket
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from email.utils import formatdate
from http import HTTPStatus

import h11
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from monitor.export.pages import PROBES, TEXT, Endpoints, Page, accepts_gzip, page, probe
from monitor.export.webconfig import WebSecurity

__all__ = ["Endpoints", "Limits", "MetricsServer"]

log = logging.getLogger("monitor.server")  # the name operators filter on: see monitor.logs

REASONS = (
    "timeout",  # no whole request head (or TLS handshake) in time, or an answer not taken in time
    "reset",  # the client reset or closed the connection under us
    "closed_early",  # the client closed half-way through its request head
    "tls",  # a failed TLS handshake or a broken TLS record
    "head_too_large",  # a request head over max_head_bytes (431)
    "bad_request",  # not HTTP, a body, an unsupported method (400, 414, 501)
    "buffers_full",  # heads being read hold max_buffered_bytes already (503)
    "evicted",  # closed to make room for a new connection
    "over_capacity",  # refused: max_connections open, all being answered
    "auth_busy",  # too many password checks waiting (503)
    "accept_failed",  # the kernel's accept failed (out of file descriptors): retried every 0.1 s
)
MAX_TARGET_BYTES = 8192  # of a request's path and query (414 beyond)
LINGER_SECONDS, LINGER_BYTES = 2.0, 1024 * 1024  # read and dropped after a refusal, at most


@dataclass(frozen=True)
class Limits:
    head_seconds: float = 10.0
    write_seconds: float = 30.0
    max_head_bytes: int = 32 * 1024
    max_buffered_bytes: int = 8 * 1024 * 1024
    max_connections: int = 512
    max_auth_waiting: int = 16
    max_requests_per_connection: int = 1000


class MetricsServer:
    """Serves `Endpoints` on host:port from an event loop on its own thread until `close()`.

    The socket is bound here, so a port in use is an OSError for the caller at once."""

    def __init__(
        self,
        host: str,
        port: int,
        endpoints: Endpoints,
        security: WebSecurity | None = None,
        idle_timeout_seconds: float = Limits.head_seconds,
        limits: Limits | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.security = security or WebSecurity()
        self.limits = replace(limits or Limits(), head_seconds=idle_timeout_seconds)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server((host, port), family=family, backlog=512)
        self.errors = dict.fromkeys(REASONS, 0)  # written by the loop only; its keys never change
        _register(endpoints, ConnectionErrorsCollector(self.errors))
        self._render = _DaemonWorkers("metrics-render", 2)
        self._ready = _DaemonWorkers("metrics-ready", 1)
        self._auth = _DaemonWorkers("metrics-auth", 1)
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._loop_error)
        self._clients: dict[int, _Client] = {}
        self._heads: OrderedDict[int, _Client] = OrderedDict()  # reading a head, longest waiting first
        self._buffered = 0
        self._auth_waiting = 0
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1]

    def start(self) -> MetricsServer:
        self._thread.start()
        self._started.wait(timeout=10)
        return self

    def close(self) -> None:
        """Stop listening and cut every connection now (a client half-way through its request, a
        TLS handshake, an answer not read): SIGTERM must not wait for any client."""
        if not self._thread.is_alive():
            self._socket.close()
            return
        done = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            done.result(timeout=2)
        except Exception as exc:  # closing goes on whatever happened
            log.debug("closing the endpoint: %r", exc)
        self._thread.join(timeout=2)
        for workers in (self._render, self._ready, self._auth):
            workers.shutdown(wait=False)

    # -- the event loop's thread ----------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._socket.setblocking(False)
        self._shared = _SharedRenders(self._loop, self._render)
        self._acceptor = self._loop.create_task(self._accept())
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _accept(self) -> None:
        """One connection at a time, each followed by a turn of the loop. asyncio's own server
        accepts up to the backlog (512) at once: under a flood of new connections a whole burst
        was admitted, each evicting the oldest waiting one, before the request a scraper had
        already sent was read, and the scraper went with the attackers."""
        while True:
            try:
                connection, _ = await self._loop.sock_accept(self._socket)
            except OSError as exc:  # out of descriptors, say: the kernel keeps the rest waiting
                self.errors["accept_failed"] += 1  # counted, not logged: it repeats every 0.1 s
                log.debug("endpoint: accept failed: %r", exc)
                await asyncio.sleep(0.1)
                continue
            reader = asyncio.StreamReader(limit=16 * 1024, loop=self._loop)
            protocol = asyncio.StreamReaderProtocol(reader, self._serve, loop=self._loop)
            try:
                await self._loop.connect_accepted_socket(lambda protocol=protocol: protocol, connection)
            except OSError as exc:
                log.debug("endpoint: connection lost at once: %r", exc)
                connection.close()

    async def _shutdown(self) -> None:
        self._acceptor.cancel()
        self._socket.close()
        for client in list(self._clients.values()):
            client.writer.transport.abort()
            client.task.cancel()
        self._loop.call_soon(self._loop.stop)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(writer, asyncio.current_task())
        if not self._admit(client):
            writer.transport.abort()
            return
        try:
            await self._converse(client, reader)
            if client.refused and writer.can_write_eof():
                await self._linger(writer, reader)
            writer.close()  # what was written is sent first (abort would drop it)
            async with asyncio.timeout(self.limits.write_seconds):
                await writer.wait_closed()
        except TimeoutError:
            self._failed("timeout", client)
        except ssl.SSLError as exc:
            self._failed("tls", client, exc)
        except (ConnectionError, OSError) as exc:
            self._failed("reset", client, exc)
        except asyncio.CancelledError:
            pass  # closing, or evicted: counted where it was decided
        finally:
            self._forget(client)
            writer.transport.abort()  # at once, if not closed by now: no lingering half-closed socket

    async def _linger(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
        """After a refusal, half-close and drop what the client still sends (a little, briefly):
        closing with its request unread would reset the connection, and the client would see
        the reset instead of the answer (431, 400) saying why."""
        writer.write_eof()
        dropped = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_SECONDS):
                while dropped < LINGER_BYTES and (data := await reader.read(65536)):
                    dropped += len(data)

    async def _converse(self, client: _Client, reader: asyncio.StreamReader) -> None:
        limits = self.limits
        deadline = self._loop.time() + limits.head_seconds
        if self.security.tls is not None:
            async with asyncio.timeout_at(deadline):
                await client.writer.start_tls(self.security.tls)
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_bytes)
        for _ in range(limits.max_requests_per_connection):
            self._reading_head(client)
            async with asyncio.timeout_at(deadline):
                request = await self._read_request(client, connection, reader)
            self._heads.pop(id(client), None)
            if request is None:
                return
            await self._answer(client, connection, request)
            if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                return
            connection.start_next_cycle()
            deadline = self._loop.time() + limits.head_seconds

    async def _read_request(
        self, client: _Client, connection: h11.Connection, reader: asyncio.StreamReader
    ) -> h11.Request | None:
        """The next request, whole and acceptable; None once the connection is done with."""
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as exc:
                if client.eof:
                    self._failed("closed_early", client)
                    return None
                hint = exc.error_status_hint
                await self._refuse(client, connection, hint, "head_too_large" if hint == 431 else "bad_request")
                return None
            if isinstance(event, h11.Request):
                self._release(client)
                return await self._acceptable(client, connection, event)
            if isinstance(event, h11.ConnectionClosed):
                return None
            data = await reader.read(8192)
            if self._buffered + len(data) > self.limits.max_buffered_bytes:
                await self._refuse(client, connection, 503, "buffers_full")
                return None
            client.buffered += len(data)
            self._buffered += len(data)
            client.eof = not data
            connection.receive_data(data)

    async def _acceptable(
        self, client: _Client, connection: h11.Connection, request: h11.Request
    ) -> h11.Request | None:
        headers = {name: value for name, value in request.headers}
        if request.method not in (b"GET", b"HEAD"):
            await self._refuse(client, connection, 501, "bad_request")
        elif b"transfer-encoding" in headers or headers.get(b"content-length", b"0") != b"0":
            await self._refuse(client, connection, 400, "bad_request")  # no body, so nothing to smuggle
        elif len(request.target) > MAX_TARGET_BYTES:
            await self._refuse(client, connection, 414, "bad_request")
        else:
            connection.next_event()  # its EndOfMessage: a request without a body has it already
            return request
        return None

    async def _answer(self, client: _Client, connection: h11.Connection, request: h11.Request) -> None:
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in request.headers}
        path = request.target.split(b"?", 1)[0].decode("latin-1")
        if path == "/healthz":
            answer = probe(self.endpoints, path)  # lock-free: answered even when all else is busy
        elif path in PROBES:
            answer = await self._loop.run_in_executor(self._ready, probe, self.endpoints, path)
        else:
            allowed = await self._authorized(client, headers.get("authorization"))
            if allowed is None:
                answer = Page(503, TEXT, b"too many password checks at once; try again\n", (("Retry-After", "1"),))
            elif not allowed:
                answer = Page(401, TEXT, b"", (("WWW-Authenticate", 'Basic realm="logmonitor"'),))
            else:
                accept, encoding = headers.get("accept", ""), headers.get("accept-encoding", "")
                key = (path, choose_encoder(accept)[1], accepts_gzip(encoding)) if path == "/metrics" else (path,)
                answer = await self._shared.get(key, page, self.endpoints, path, accept, encoding)
        await self._send(client, connection, answer, head_only=request.method == b"HEAD")

    async def _authorized(self, client: _Client, header: str | None) -> bool | None:
        """True or False; None when too many checks wait already (the caller answers 503)."""
        if not self.security.requires_auth:
            return True
        known = self.security.cached(header)
        if known is not None:
            return known
        if self._auth_waiting >= self.limits.max_auth_waiting:
            self._failed("auth_busy", client)
            return None
        self._auth_waiting += 1
        try:
            return await self._loop.run_in_executor(self._auth, self.security.check, header)
        finally:
            self._auth_waiting -= 1

    async def _refuse(self, client: _Client, connection: h11.Connection, status: int, reason: str) -> None:
        self._failed(reason, client)
        client.refused = True
        if connection.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            text = HTTPStatus(status).phrase.lower()
            await self._send(client, connection, Page(status, TEXT, f"{text}\n".encode()), close=True)

    async def _send(
        self, client: _Client, connection: h11.Connection, answer: Page, head_only: bool = False, close: bool = False
    ) -> None:
        headers = [
            ("Date", formatdate(usegmt=True)),  # and no Server header: it would only tell a stranger what to attack
            ("Content-Type", answer.content_type),
            ("Content-Length", str(len(answer.body))),
            *answer.headers,
            *self.security.headers.items(),
        ]
        if close:
            headers.append(("Connection", "close"))
        data = connection.send(h11.Response(status_code=answer.status, headers=headers, reason=_phrase(answer.status)))
        if not head_only and answer.body:
            data += connection.send(h11.Data(data=answer.body))
        data += connection.send(h11.EndOfMessage())
        client.writer.write(data)
        async with asyncio.timeout(self.limits.write_seconds):
            await client.writer.drain()

    # -- the connections' bookkeeping (the loop's thread only) ----------------------------

    def _admit(self, client: _Client) -> bool:
        if len(self._clients) >= self.limits.max_connections:
            if not self._heads:
                self._failed("over_capacity", client)
                return False
            _, oldest = self._heads.popitem(last=False)
            self._failed("evicted", oldest)
            oldest.writer.transport.abort()
            oldest.task.cancel()
            self._forget(oldest)
        self._clients[id(client)] = client
        return True

    def _reading_head(self, client: _Client) -> None:
        self._heads[id(client)] = client
        self._heads.move_to_end(id(client))

    def _release(self, client: _Client) -> None:
        self._buffered -= client.buffered
        client.buffered = 0

    def _forget(self, client: _Client) -> None:
        if self._clients.pop(id(client), None) is not None:
            self._heads.pop(id(client), None)
            self._release(client)

    def _failed(self, reason: str, client: _Client, exc: BaseException | None = None) -> None:
        self.errors[reason] += 1
        log.debug("connection from %s: %s%s", client.peer, reason, f": {exc!r}" if exc else "")

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """What asyncio would log at ERROR with a traceback (a transport's fatal error after a client
        vanished): a client's doing, so DEBUG."""
        log.debug("endpoint: %s: %r", context.get("message"), context.get("exception"))


@dataclass(eq=False)
class _Client:
    writer: asyncio.StreamWriter
    task: asyncio.Task | None
    buffered: int = 0  # bytes of its request head held now
    eof: bool = False
    refused: bool = False

    @property
    def peer(self) -> str:
        return str(self.writer.get_extra_info("peername"))


def _phrase(status: int) -> bytes:
    return HTTPStatus(status).phrase.encode()


class ConnectionErrorsCollector(Collector):
    """`logmonitor_http_connection_errors_total{reason}`: each reason from start-up, at 0."""

    def __init__(self, errors: dict[str, int]) -> None:
        self._errors = errors

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "logmonitor_http_connection_errors",
            "Connections to the endpoint that ended badly, by reason (client timeouts and resets "
            "included: they are logged at DEBUG only).",
            labels=["reason"],
        )
        for reason, count in list(self._errors.items()):
            family.add_metric([reason], count)
        yield family


def _register(endpoints: Endpoints, collector: Collector) -> None:
    try:
        endpoints.registry.register(collector)
    except ValueError:  # a second server on one registry (tests): the first one's count shows
        log.debug("connection error counts already registered")


class _SharedRenders:
    """Requests for one page at one time share one render, which starts after they all arrived.

    A render in progress started too early for a request arriving now (it must see what was
    counted before it was sent), so that request waits for the next one, with every other request
    arriving meanwhile: at most one render per page runs and one waits, however many clients ask
    (8 clients resetting 1,200 scrapes a second queued 1,200 renders a second before, and a real
    scrape waited seconds behind them)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, workers: Executor) -> None:
        self._loop = loop
        self._workers = workers
        self._next: dict[tuple, asyncio.Future] = {}  # not started yet: joined by new requests
        self._running: dict[tuple, asyncio.Future] = {}

    async def get(self, key: tuple, render: Callable, *args: object) -> Page:
        shared = self._next.get(key)
        if shared is None:
            shared = self._next[key] = self._loop.create_future()
            self._loop.create_task(self._render(key, shared, render, args))
        return await asyncio.shield(shared)  # a client that goes away does not cancel the others' answer

    async def _render(self, key: tuple, shared: asyncio.Future, render: Callable, args: tuple) -> None:
        running = self._running.get(key)
        if running is not None:
            await asyncio.wait([running])
        del self._next[key]
        self._running[key] = shared
        try:
            shared.set_result(await self._loop.run_in_executor(self._workers, render, *args))
        except Exception as exc:  # handed to every request waiting for it
            shared.set_exception(exc)
        finally:
            del self._running[key]


class _DaemonWorkers(Executor):
    """A fixed number of daemon threads: unlike ThreadPoolExecutor's, they never hold up the exit
    of the process (a password check at a high cost must not delay SIGTERM)."""

    def __init__(self, name: str, count: int) -> None:
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._name, self._count = name, count
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        future: Future = Future()
        with self._lock:
            if len(self._threads) < self._count:  # started on first use: an endpoint without auth has none
                thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._tasks.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for _ in self._threads:
            self._tasks.put(None)

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            future, fn, args, kwargs = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)
