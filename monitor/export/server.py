"""The HTTP endpoint: /metrics, /healthz, /readyz and JSON pages of other stages.

A small threaded server from the standard library rather than
prometheus-client's `start_http_server`, because the sidecar needs hooks it
does not have: a checkpoint written *before* each scrape is answered (so a
restart never shows Prometheus a counter lower than one it already stored),
health and readiness answered by the follow loop, and extra JSON pages.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import selectors
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from monitor.export.webconfig import WebSecurity

log = logging.getLogger("monitor.server")  # the name operators filter on: see monitor.logs


@dataclass
class Endpoints:
    """What the server answers with; every callable runs on the request's thread."""

    registry: CollectorRegistry
    # Held while the metrics are rendered: the sidecar checkpoints inside it, so what a
    # scrape returns is exactly what the checkpoint holds.
    scrape_guard: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
    healthy: Callable[[], tuple[bool, str]] = lambda: (True, "ok")
    ready: Callable[[], tuple[bool, str]] = lambda: (True, "ready")
    json_pages: dict[str, Callable[[], Any]] = field(default_factory=dict)


class _Server(HTTPServer):
    """An HTTP server whose connections wait without a thread until their request arrives.

    The standard library's `ThreadingHTTPServer` listens with a backlog of 5 and gives every
    connection a thread at once, however idle: 200 concurrent scrapes overflowed the backlog
    (p99 15-30 s, some refused) and 300 idle connections held 300 threads. Here the backlog is
    512; accepted connections wait in `_WaitingRoom` (one thread, a selector) until their first
    bytes arrive or `idle_timeout_seconds` pass; only then does one of `workers` threads serve
    them, with a socket timeout, so a slow client cannot hold a worker for long either.
    (waitress, which works the same way, serves no TLS, which this endpoint offers.)
    """

    tls: ssl.SSLContext | None = None
    request_queue_size = 512
    workers = 8
    idle_timeout_seconds = 10.0
    max_waiting = 1024

    def server_bind(self) -> None:
        # Not HTTPServer's, which names the server by `socket.getfqdn(host)`: a reverse lookup that
        # can wait on DNS at start-up (and loads the idna codec). Nothing here uses the name.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def server_activate(self) -> None:
        super().server_activate()
        self.room = _WaitingRoom(self)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        self.room.admit(request, client_address)  # never blocks the accept loop

    def server_close(self) -> None:
        super().server_close()
        room = getattr(self, "room", None)
        if room is not None:
            room.close()

    def serve_connection(self, request: socket.socket, client_address: Any) -> None:
        """On a worker: the TLS handshake (if any), then the request, with a timeout throughout."""
        request.settimeout(self.idle_timeout_seconds)
        try:
            if self.tls is not None:
                request = self.tls.wrap_socket(request, server_side=True)
            self.finish_request(request, client_address)
        except (OSError, ssl.SSLError) as exc:
            log.debug("connection from %s ended: %s", client_address, exc)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


class _WaitingRoom:
    """Accepted connections, each waiting (no thread of its own) for its request to arrive."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._waiting: dict[socket.socket, tuple[Any, float]] = {}  # oldest first
        self._serving: set[socket.socket] = set()  # connections a worker is serving now
        self._wake, self._waker = socket.socketpair()
        self._wake.setblocking(False)
        self._selector.register(self._wake, selectors.EVENT_READ)
        self._slots = threading.BoundedSemaphore(server.workers)
        self._pool = ThreadPoolExecutor(max_workers=server.workers, thread_name_prefix="metrics-http")
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="metrics-http-wait", daemon=True)
        self._thread.start()

    def admit(self, request: socket.socket, address: Any) -> None:
        with self._lock:
            if self._closed:
                request.close()
                return
            if len(self._waiting) >= self._server.max_waiting:
                self._drop(next(iter(self._waiting)))  # the longest-waiting, idle connection goes
            self._waiting[request] = (address, time.monotonic() + self._server.idle_timeout_seconds)
            self._selector.register(request, selectors.EVENT_READ)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for request in list(self._waiting):
                self._drop(request)
        self._waker.send(b"x")
        self._thread.join(timeout=2)
        with self._lock:  # a client half-way through its request must not hold up a shutdown
            for request in self._serving:
                with contextlib.suppress(OSError):
                    request.shutdown(socket.SHUT_RDWR)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for end in (self._wake, self._waker):
            end.close()
        self._selector.close()

    def _run(self) -> None:
        while not self._closed:
            for key, _ in self._selector.select(timeout=1.0):
                if key.fileobj is self._wake:
                    with contextlib.suppress(OSError):
                        self._wake.recv(4096)
                    continue
                with self._lock:
                    entry = self._waiting.pop(key.fileobj, None)
                    if entry is None:
                        continue
                    self._selector.unregister(key.fileobj)
                self._slots.acquire()  # all workers busy with ready requests: those are quick
                try:
                    self._pool.submit(self._serve, key.fileobj, entry[0])
                except RuntimeError:  # closing: the pool takes no more
                    self._slots.release()
                    key.fileobj.close()
            self._expire(time.monotonic())

    def _serve(self, request: socket.socket, address: Any) -> None:
        with self._lock:
            if self._closed:
                request.close()
                self._slots.release()
                return
            self._serving.add(request)
        try:
            self._server.serve_connection(request, address)
        finally:
            with self._lock:
                self._serving.discard(request)
            self._slots.release()

    def _expire(self, now: float) -> None:
        with self._lock:
            for request, (_, deadline) in list(self._waiting.items()):
                if deadline > now:
                    break  # admitted in order: the rest are younger
                self._drop(request)

    def _drop(self, request: socket.socket) -> None:
        """Forget and close a waiting connection (the caller holds the lock)."""
        self._waiting.pop(request, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(request)
        with contextlib.suppress(OSError):
            request.close()


class MetricsServer:
    """Serves `Endpoints` on host:port in a daemon thread until `close()`."""

    def __init__(
        self,
        host: str,
        port: int,
        endpoints: Endpoints,
        security: WebSecurity | None = None,
        idle_timeout_seconds: float = _Server.idle_timeout_seconds,
    ) -> None:
        security = security or WebSecurity()
        handler = type("Handler", (_Handler,), {"endpoints": endpoints, "security": security})
        attributes = {
            "address_family": _family(host),
            "tls": security.tls,
            "idle_timeout_seconds": idle_timeout_seconds,
        }
        server_class = type("Server", (_Server,), attributes)
        self._httpd = server_class((host, port), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=2)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class _Handler(BaseHTTPRequestHandler):
    endpoints: Endpoints
    security: WebSecurity

    def send_response(self, code: int, message: str | None = None) -> None:
        # No Server header (the standard library's names Python and its version): a scraper needs
        # none, and it would only tell a stranger what to attack.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        # Probes stay open (kubelet sends no credentials; they reveal nothing but ok/not ok).
        if path not in ("/healthz", "/readyz") and not self.security.authorized(self.headers.get("Authorization")):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="logmonitor"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        try:
            if path == "/metrics":
                self._metrics()
            elif path == "/healthz":
                self._status(*self.endpoints.healthy())
            elif path == "/readyz":
                self._status(*self.endpoints.ready())
            elif path in self.endpoints.json_pages:
                body = json.dumps(self.endpoints.json_pages[path](), ensure_ascii=False, indent=1).encode()
                self._send(200, "application/json; charset=utf-8", body)
            elif path == "/":
                links = "".join(
                    f'<a href="{p}">{p}</a><br>'
                    for p in ["/metrics", "/healthz", "/readyz", *self.endpoints.json_pages]
                )
                self._send(200, "text/html; charset=utf-8", f"<html><body>{links}</body></html>".encode())
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")
        except Exception:  # a failing page must not take the endpoint down
            log.exception("error answering %s", path)
            self._send(500, "text/plain; charset=utf-8", b"internal error, see the sidecar's log\n")

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        with self.endpoints.scrape_guard():
            body = encoder(self.endpoints.registry)
        if _accepts_gzip(self.headers.get("Accept-Encoding", "")):
            # As promhttp does: Prometheus asks for gzip; the text shrinks ~10x, at level 1 in ~1 ms.
            self._send(200, content_type, gzip.compress(body, compresslevel=1), {"Content-Encoding": "gzip"})
        else:
            self._send(200, content_type, body)

    def _status(self, ok: bool, text: str) -> None:
        self._send(200 if ok else 503, "text/plain; charset=utf-8", (text + "\n").encode())

    def _send(self, code: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # scrapes every 15 s would flood the log
        log.debug("%s " + format, self.address_string(), *args)


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header takes gzip (and does not refuse it with q=0)."""
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=")
            try:
                return not params.strip() or float(quality) > 0
            except ValueError:
                return False
    return False
