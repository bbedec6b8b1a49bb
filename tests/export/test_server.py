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
    assert [a.split("\r\n")[0] for a in answers] == [
        "HTTP/1.1 200 OK",
        "HTTP/1.1 501 Not Implemented",
        "HTTP/1.1 400 Bad Request",
    ]
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


# --- no client can stall the others (issue: an endpoint no client can stall) ---------------------


def raw(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send `request` on a fresh connection; everything answered until the server closes."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def errors(registry: CollectorRegistry, reason: str) -> float | None:
    return registry.get_sample_value("logmonitor_http_connection_errors_total", {"reason": reason})


def test_clients_trickling_their_headers_are_cut_at_the_deadline_and_never_block_a_scrape():
    """8 connections sending a header byte every 0.2 s: each read comes well within any per-read
    timeout, but the whole head is due within the deadline, so each is cut; meanwhile every scrape
    and probe is answered (with a thread per connection, 8 of them stopped every page)."""
    import socket
    import threading

    registry = registry_with_counter()
    server = MetricsServer("127.0.0.1", 0, Endpoints(registry), idle_timeout_seconds=1.0).start()
    cut = []

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            try:
                for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
                    connection.sendall(bytes([byte]))
                    threading.Event().wait(0.2)  # the attack's own pace, not a synchronisation
            except OSError:
                cut.append(True)  # the server closed it while bytes were still coming

    try:
        slow = [threading.Thread(target=trickle) for _ in range(8)]
        for thread in slow:
            thread.start()
        for _ in range(5):
            assert get(f"http://127.0.0.1:{server.port}/metrics")[0] == 200
            assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200
        for thread in slow:
            thread.join(timeout=30)
        assert cut == [True] * 8
        assert errors(registry, "timeout") == 8
    finally:
        server.close()


def test_a_request_head_over_the_cap_is_refused_with_431_before_it_is_all_read():
    registry = CollectorRegistry()
    server = MetricsServer("127.0.0.1", 0, Endpoints(registry)).start()
    try:
        headers = b"".join(b"X-Big-%d: %s\r\n" % (i, b"a" * 65000) for i in range(4))
        answer = raw(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        assert status_of(answer) == 431
        assert b"connection: close" in answer.lower()
        small = b"X-Fine: " + b"a" * 16000 + b"\r\n"
        fine = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + small + b"\r\n"
        assert status_of(raw(server.port, fine)) == 200
        assert errors(registry, "head_too_large") == 1
    finally:
        server.close()


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab", 501),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab", 400),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
    ],
)
def test_requests_with_a_body_or_malformed_are_refused_and_the_connection_closed(request_bytes, status):
    registry = CollectorRegistry()
    server = MetricsServer("127.0.0.1", 0, Endpoints(registry)).start()
    try:
        answer = raw(server.port, request_bytes + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(answer) == status
        assert answer.count(b"HTTP/1.1 ") == 1  # nothing after it is read as a second request
        assert errors(registry, "bad_request") == 1
    finally:
        server.close()


def test_a_kept_alive_connection_is_answered_request_after_request():
    server = MetricsServer("127.0.0.1", 0, Endpoints(registry_with_counter())).start()
    try:
        two = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answer = raw(server.port, two)
        assert answer.count(b"HTTP/1.1 200 OK") == 2
        assert b"demo_events_total 3.0" in answer and answer.endswith(b"ok\n")
    finally:
        server.close()


def test_beyond_the_connection_cap_the_longest_silent_connection_makes_room():
    import socket

    from monitor.export.server import Limits

    registry = registry_with_counter()
    server = MetricsServer("127.0.0.1", 0, Endpoints(registry), limits=Limits(max_connections=4)).start()
    try:
        silent = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(4)]
        try:
            assert get(f"http://127.0.0.1:{server.port}/metrics")[0] == 200
            assert silent[0].recv(1) == b""  # the oldest one went
            silent.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))  # 4 again
            assert get(f"http://127.0.0.1:{server.port}/metrics")[0] == 200
            assert silent[1].recv(1) == b""
            assert errors(registry, "evicted") == 2
        finally:
            for connection in silent:
                connection.close()
    finally:
        server.close()


def test_client_resets_are_counted_and_logged_at_debug_only(caplog):
    import logging
    import socket
    import struct

    registry = registry_with_counter()
    server = MetricsServer("127.0.0.1", 0, Endpoints(registry)).start()
    try:
        with caplog.at_level(logging.DEBUG):
            for _ in range(50):
                connection = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                connection.close()  # RST, before the answer is read
            for _ in range(3):
                connection = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # half a head
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                connection.close()
            assert get(f"http://127.0.0.1:{server.port}/metrics")[0] == 200
        noisy = [r for r in caplog.records if r.levelno > logging.DEBUG and r.name in ("monitor.server", "asyncio")]
        assert noisy == []
        assert not [r for r in caplog.records if r.exc_info]
        assert errors(registry, "reset") + errors(registry, "closed_early") >= 3  # how many of the 50 it saw
    finally:
        server.close()


def test_closing_cuts_a_tls_client_half_way_through_its_handshake_or_request(tmp_path):
    """With TLS the wrapped connection is the one to cut: SIGTERM waited for a slow TLS client."""
    import socket
    import ssl
    import subprocess
    import threading

    from monitor.export.webconfig import WebSecurity

    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1",
         "-keyout", str(tmp_path / "k"), "-out", str(tmp_path / "c")],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "c", tmp_path / "k")
    server = MetricsServer(
        "127.0.0.1", 0, Endpoints(CollectorRegistry()), WebSecurity(tls=context), idle_timeout_seconds=30.0
    ).start()
    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=5)  # says nothing at all
    slow = client.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=5))
    slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    closing = threading.Thread(target=server.close)
    closing.start()
    closing.join(timeout=10)
    try:
        assert not closing.is_alive()
        assert stalled.recv(1) == b""
    finally:
        stalled.close()
        slow.close()
        closing.join()


def basic(user: str, password: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def fetch(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_a_flood_of_wrong_passwords_never_delays_a_scrape_or_a_probe():
    """64 clients with ever-new wrong passwords (no cache helps): each needs a bcrypt check, one at a
    time, at most 16 waiting (503 beyond). A scraper whose password was checked before, and the
    probes, are answered all along (before: every scrape timed out, most probes failed)."""
    import threading

    import bcrypt

    from monitor.export.webconfig import WebSecurity

    registry = registry_with_counter()
    security = WebSecurity(users={"prometheus": bcrypt.hashpw(b"secret", bcrypt.gensalt(10))})
    server = MetricsServer("127.0.0.1", 0, Endpoints(registry), security).start()
    base = f"http://127.0.0.1:{server.port}"
    right = basic("prometheus", "secret")
    try:
        assert fetch(base + "/metrics", right)[0] == 200  # checked once, then remembered
        stop = threading.Event()
        flood: list[int] = []

        def attack(worker: int) -> None:
            attempt = 0
            while not stop.is_set():
                attempt += 1
                flood.append(fetch(base + "/metrics", basic("prometheus", f"wrong-{worker}-{attempt}"))[0])

        attackers = [threading.Thread(target=attack, args=(n,)) for n in range(64)]
        for thread in attackers:
            thread.start()
        try:
            answers = [(fetch(base + "/metrics", right)[0], fetch(base + "/healthz", {})[0]) for _ in range(20)]
        finally:
            stop.set()
            for thread in attackers:
                thread.join()
        assert answers == [(200, 200)] * 20
        assert set(flood) <= {401, 503}
        assert flood.count(503) == errors(registry, "auth_busy")
    finally:
        server.close()


def test_a_password_over_72_bytes_is_refused_with_401_and_no_traceback(caplog):
    import logging

    import bcrypt

    from monitor.export.webconfig import WebSecurity

    security = WebSecurity(users={"prometheus": bcrypt.hashpw(b"s" * 72, bcrypt.gensalt(4))})
    server = MetricsServer("127.0.0.1", 0, Endpoints(registry_with_counter()), security).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with caplog.at_level(logging.DEBUG):
            assert [fetch(base + "/metrics", basic("prometheus", "s" * 73))[0] for _ in range(3)] == [401] * 3
            assert fetch(base + "/metrics", basic("prometheus", "s" * 72))[0] == 200
        assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    finally:
        server.close()


def test_configured_response_headers_are_on_every_answer():
    import bcrypt

    from monitor.export.webconfig import WebSecurity

    security = WebSecurity(
        users={"prometheus": bcrypt.hashpw(b"secret", bcrypt.gensalt(4))},
        headers={"Strict-Transport-Security": "max-age=31536000", "X-Frame-Options": "deny"},
    )
    server = MetricsServer("127.0.0.1", 0, Endpoints(registry_with_counter()), security).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        for path, headers, status in (
            ("/metrics", basic("prometheus", "secret"), 200),
            ("/metrics", {}, 401),
            ("/healthz", {}, 200),
            ("/nothing", basic("prometheus", "secret"), 404),
        ):
            code, sent = fetch(base + path, headers)
            assert (code, sent["Strict-Transport-Security"], sent["X-Frame-Options"]) == (
                status,
                "max-age=31536000",
                "deny",
            )
    finally:
        server.close()


def test_concurrent_scrapes_share_renders_that_start_after_they_arrived():
    """50 scrapes while a render is in progress: that render started before they were sent, so
    they all wait for the next one, and share it: 2 renders for 51 scrapes, not 51 (a flood of
    scrapes that reset at once queued a render each, and a real scrape waited behind them)."""
    import threading

    from prometheus_client.core import GaugeMetricFamily

    from tests.sidecar_process import wait_for

    release, renders = threading.Event(), []

    class Slow:
        def collect(self):
            renders.append(True)
            release.wait(10)
            yield GaugeMetricFamily("demo_renders", "renders so far", value=len(renders))

    registry = CollectorRegistry()
    registry.register(Slow())
    release.set()  # registering collects once
    renders.clear()
    release.clear()
    server = MetricsServer("127.0.0.1", 0, Endpoints(registry)).start()
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        answers: list[str] = []
        first = threading.Thread(target=lambda: answers.append(get(url)[2]))
        first.start()
        wait_for(lambda: renders == [True], what="the first render under way")
        rest = [threading.Thread(target=lambda: answers.append(get(url)[2])) for _ in range(50)]
        for thread in rest:
            thread.start()
        wait_for(lambda: len(server._clients) == 51 and not server._heads, what="50 requests read")
        release.set()
        for thread in [first, *rest]:
            thread.join()
        assert len(renders) == 2
        assert sorted(a.count("demo_renders 2.0") for a in answers) == [0] + [1] * 50
    finally:
        release.set()
        server.close()
