"""The HTTP endpoint, over a real socket on a free loopback port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from monitor.export.server import Endpoints, MetricsServer


@pytest.fixture
def serve():
    servers = []

    def start(endpoints: Endpoints) -> str:
        server = MetricsServer("127.0.0.1", 0, endpoints).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        server.close()


def get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def registry_with_counter() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("demo_events", "demo", registry=registry).inc(3)
    return registry


def test_metrics_text_and_openmetrics_by_negotiation(serve):
    base = serve(Endpoints(registry_with_counter()))
    status, content_type, body = get(base + "/metrics")
    assert (status, content_type.split(";")[0]) == (200, "text/plain")
    assert "demo_events_total 3.0" in body
    status, content_type, body = get(base + "/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [("gzip", True), ("deflate, gzip;q=0.5", True), ("*", True), ("gzip;q=0", False), ("identity", False), ("", False)],
)
def test_metrics_are_gzipped_when_the_scraper_asks(serve, accept_encoding, gzipped):
    import gzip

    base = serve(Endpoints(registry_with_counter()))
    request = urllib.request.Request(base + "/metrics", headers={"Accept-Encoding": accept_encoding})
    with urllib.request.urlopen(request, timeout=5) as response:
        raw = response.read()
        assert response.headers.get("Content-Encoding") == ("gzip" if gzipped else None)
        assert int(response.headers["Content-Length"]) == len(raw)
    body = gzip.decompress(raw) if gzipped else raw
    assert b"demo_events_total 3.0" in body


def test_scrape_guard_is_held_while_each_scrape_is_rendered(serve):
    import contextlib

    calls = []

    @contextlib.contextmanager
    def guard():
        calls.append("checkpoint")
        yield
        calls.append("rendered")

    base = serve(Endpoints(registry_with_counter(), scrape_guard=guard))
    get(base + "/metrics")
    get(base + "/metrics")
    assert calls == ["checkpoint", "rendered", "checkpoint", "rendered"]


def test_binding_looks_no_name_up(serve, monkeypatch):
    # http.server would ask socket.getfqdn (a reverse DNS lookup) at bind: slow starts where DNS is slow.
    def no_lookup(*_args):
        raise AssertionError("a name lookup at bind")

    monkeypatch.setattr("socket.getfqdn", no_lookup)
    monkeypatch.setattr("socket.gethostbyaddr", no_lookup)
    assert get(serve(Endpoints(registry_with_counter())) + "/healthz")[0] == 200


def test_health_and_readiness(serve):
    state = {"ready": False}
    base = serve(
        Endpoints(
            registry_with_counter(),
            healthy=lambda: (False, "follow loop stalled for 31 s"),
            ready=lambda: (state["ready"], "sources resolved" if state["ready"] else "resolving sources"),
        )
    )
    assert get(base + "/healthz")[0::2] == (503, "follow loop stalled for 31 s\n")
    assert get(base + "/readyz")[0] == 503
    state["ready"] = True
    assert get(base + "/readyz")[0::2] == (200, "sources resolved\n")


def test_json_pages_and_unknown_paths(serve):
    base = serve(Endpoints(registry_with_counter(), json_pages={"/findings": lambda: [{"id": "分析"}]}))
    status, _content_type, body = get(base + "/findings")
    assert (status, json.loads(body)) == (200, [{"id": "分析"}])
    assert get(base + "/nope")[0] == 404


def test_a_failing_page_answers_500_and_the_server_lives_on(serve):
    def broken():
        raise RuntimeError("boom")

    base = serve(Endpoints(registry_with_counter(), json_pages={"/broken": broken}))
    assert get(base + "/broken")[0] == 500
    assert get(base + "/metrics")[0] == 200


def test_no_response_tells_a_stranger_what_software_answers(serve):
    import socket

    base = serve(Endpoints(CollectorRegistry()))
    port = int(base.rsplit(":", 1)[1])
    answers = []
    for request in (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01junk\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(request)
            connection.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        answers.append(answer.split(b"\r\n\r\n", 1)[0].decode("latin-1"))
    assert [a.split("\r\n")[0] for a in answers[:2]] == ["HTTP/1.0 200 OK", "HTTP/1.0 501 Unsupported method ('BREW')"]
    for head in answers:
        assert "server:" not in head.lower() and "python" not in head.lower(), head


def test_a_storm_of_scrapes_is_answered_and_idle_connections_cost_no_thread():
    """200 scrapes at once all answered (the backlog was 5: some were refused, p99 15-30 s); 300 idle
    connections hold no thread each and are closed after the idle timeout; scrapes go on meanwhile."""
    import socket
    import threading

    server = MetricsServer("127.0.0.1", 0, Endpoints(registry_with_counter()), idle_timeout_seconds=1.0).start()
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        start = threading.Barrier(200)
        answers: list[int] = []

        def scrape() -> None:
            start.wait()
            answers.append(get(url)[0])

        clients = [threading.Thread(target=scrape) for _ in range(200)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        assert answers == [200] * 200
        before = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(300)]
        try:
            assert get(url)[0] == 200  # served while 300 connections say nothing
            assert threading.active_count() - before <= 1  # at most one more worker, not a thread each
            for connection in idle:  # each is closed by the server once its idle timeout passes
                assert connection.recv(1) == b""
        finally:
            for connection in idle:
                connection.close()
    finally:
        server.close()


def test_closing_does_not_wait_for_a_client_half_way_through_its_request():
    """SIGTERM must not wait the 30 s a slow client is allowed: its connection is cut."""
    import socket
    import threading

    server = MetricsServer("127.0.0.1", 0, Endpoints(CollectorRegistry()), idle_timeout_seconds=30.0).start()
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the blank line that ends it
    assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200  # a worker holds the slow one by now
    closing = threading.Thread(target=server.close)
    closing.start()
    closing.join(timeout=10)
    try:
        assert not closing.is_alive()
    finally:
        slow.close()
        closing.join()
