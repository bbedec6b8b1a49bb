"""The HTTP endpoint: /metrics, /healthz, /readyz and JSON pages of other stages.

A small threaded server from the standard library rather than
prometheus-client's `start_http_server`, because the sidecar needs hooks it
does not have: a checkpoint written *before* each scrape is answered (so a
restart never shows Prometheus a counter lower than one it already stored),
health and readiness answered by the follow loop, and extra JSON pages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from monitor.webconfig import WebSecurity

log = logging.getLogger(__name__)


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


class MetricsServer:
    """Serves `Endpoints` on host:port in a daemon thread until `close()`."""

    def __init__(self, host: str, port: int, endpoints: Endpoints, security: WebSecurity | None = None) -> None:
        security = security or WebSecurity()
        handler = type("Handler", (_Handler,), {"endpoints": endpoints, "security": security})
        server_class = type(
            "Server", (_Server,), {"address_family": _family(host), "daemon_threads": True, "tls": security.tls}
        )
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


class _Server(ThreadingHTTPServer):
    tls: ssl.SSLContext | None = None

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:
        # The TLS handshake runs on the request's own thread, so a slow or broken client
        # cannot hold up accepting the next scrape.
        if self.tls is not None:
            request.settimeout(10)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)


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
        self._send(200, content_type, body)

    def _status(self, ok: bool, text: str) -> None:
        self._send(200 if ok else 503, "text/plain; charset=utf-8", (text + "\n").encode())

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # scrapes every 15 s would flood the log
        log.debug("%s " + format, self.address_string(), *args)
