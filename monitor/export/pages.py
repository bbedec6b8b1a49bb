"""What the endpoint answers: /metrics, /healthz, /readyz, JSON pages of other stages, and the index.

Plain functions from a request's path and headers to a `Page` (status, headers,
body), each run on a thread the server picks (never its event loop): rendering
the metrics holds the sidecar's checkpoint, a readiness answer its follow loop.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("monitor.server")  # the name operators filter on: see monitor.logs

PROBES = ("/healthz", "/readyz")  # open to anyone (kubelet sends no credentials), never behind a render
TEXT = "text/plain; charset=utf-8"


@dataclass
class Endpoints:
    """What the server answers with; every callable runs on one of the server's threads."""

    registry: CollectorRegistry
    # Held while the metrics are rendered: the sidecar checkpoints inside it, so what a
    # scrape returns is exactly what the checkpoint holds.
    scrape_guard: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
    healthy: Callable[[], tuple[bool, str]] = lambda: (True, "ok")
    ready: Callable[[], tuple[bool, str]] = lambda: (True, "ready")
    json_pages: dict[str, Callable[[], Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def probe(endpoints: Endpoints, path: str) -> Page:
    ok, text = endpoints.healthy() if path == "/healthz" else endpoints.ready()
    return Page(200 if ok else 503, TEXT, (text + "\n").encode())


def page(endpoints: Endpoints, path: str, accept: str, accept_encoding: str) -> Page:
    """Any page but the probes; a failing one answers 500 and the server lives on."""
    try:
        if path == "/metrics":
            return metrics(endpoints, accept, accept_encoding)
        if path in endpoints.json_pages:
            body = json.dumps(endpoints.json_pages[path](), ensure_ascii=False, indent=1).encode()
            return Page(200, "application/json; charset=utf-8", body)
        if path == "/":
            paths = ["/metrics", *PROBES, *endpoints.json_pages]
            links = "".join(f'<a href="{p}">{p}</a><br>' for p in paths)
            return Page(200, "text/html; charset=utf-8", f"<html><body>{links}</body></html>".encode())
        return Page(404, TEXT, b"not found\n")
    except Exception as exc:  # a bug of ours: said once, without a traceback outside debug
        log.error("error answering %s: %r", path, exc)
        log.debug("error answering %s", path, exc_info=True)
        return Page(500, TEXT, b"internal error, see the sidecar's log\n")


def metrics(endpoints: Endpoints, accept: str, accept_encoding: str) -> Page:
    encoder, content_type = choose_encoder(accept)
    with endpoints.scrape_guard():
        body = encoder(endpoints.registry)
    if accepts_gzip(accept_encoding):
        # As promhttp does: Prometheus asks for gzip; the text shrinks ~10x, at level 1 in ~1 ms.
        return Page(200, content_type, gzip.compress(body, compresslevel=1), (("Content-Encoding", "gzip"),))
    return Page(200, content_type, body)


def accepts_gzip(accept_encoding: str) -> bool:
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
