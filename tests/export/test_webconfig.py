"""TLS and basic auth on the real endpoint, with a certificate made by openssl and bcrypt hashes."""

from __future__ import annotations

import base64
import re
import shutil
import ssl
import subprocess
import threading
import urllib.error
import urllib.request

import bcrypt
import pytest
from prometheus_client import CollectorRegistry, Counter

from monitor.config import ConfigError
from monitor.export.server import Endpoints, MetricsServer
from monitor.export.webconfig import WebSecurity, load_web_config

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


@pytest.fixture
def tls_dir(tmp_path):
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(tmp_path / "server.key"),
            "-out",
            str(tmp_path / "server.crt"),
        ],
        check=True,
        capture_output=True,
    )
    return tmp_path


def serve(security):
    registry = CollectorRegistry()
    Counter("demo_events", "demo", registry=registry).inc()
    return MetricsServer("127.0.0.1", 0, Endpoints(registry), security).start()


def get(url: str, context=None, user: str | None = None, password: str = "") -> int:
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5, context=context) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_tls_with_basic_auth(tls_dir):
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    config = tls_dir / "web.yml"
    config.write_text(
        f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    server = serve(load_web_config(config))
    try:
        context = ssl.create_default_context(cafile=str(tls_dir / "server.crt"))
        base = f"https://127.0.0.1:{server.port}"
        assert get(base + "/metrics", context, "prometheus", "s3cret") == 200
        assert get(base + "/metrics", context, "prometheus", "s3cret") == 200  # remembered, not re-hashed
        assert get(base + "/metrics", context, "prometheus", "wrong") == 401
        assert get(base + "/metrics", context, "nobody", "s3cret") == 401
        assert get(base + "/metrics", context) == 401
        assert get(base + "/healthz", context) == 200  # probes stay open
        with pytest.raises(OSError):  # plain HTTP is not served
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
        assert get(base + "/metrics", context, "prometheus", "s3cret") == 200  # and it lives on
    finally:
        server.close()


def test_plain_passwords_and_missing_certificates_are_refused(tmp_path):
    config = tmp_path / "web.yml"
    config.write_text("basic_auth_users:\n  prometheus: hunter2\n")
    with pytest.raises(ConfigError, match="not a bcrypt hash"):
        load_web_config(config)
    config.write_text("tls_server_config:\n  cert_file: absent.crt\n  key_file: absent.key\n")
    with pytest.raises(ConfigError, match="cannot load the certificate or key"):
        load_web_config(config)
    config.write_text("tls_config: {}\n")
    with pytest.raises(ConfigError, match="tls_config: Extra inputs are not permitted"):
        load_web_config(config)


class CountingCheck:
    """bcrypt.checkpw, counted, with the most checks seen running at once."""

    def __init__(self) -> None:
        self.calls = 0
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return bcrypt.checkpw(password, hashed)
        finally:
            with self.lock:
                self.running -= 1


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_tells_no_user_names_and_bounds_what_wrong_passwords_cost():
    check = CountingCheck()
    security = WebSecurity(users={"prometheus": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))}, checkpw=check)
    assert security.authorized(basic("nobody", "s3cret")) is False
    assert check.calls == 1  # an unknown user costs a hash check too: no telling them apart by time
    assert security.authorized(basic("prometheus", "wrong")) is False
    assert security.authorized(basic("prometheus", "wrong")) is False  # a scraper retrying its wrong password
    assert check.calls == 2
    assert security.authorized(basic("prometheus", "s3cret")) is True
    assert security.authorized(basic("prometheus", "s3cret")) is True
    assert check.calls == 3

    def attacker(n: int) -> None:
        for i in range(5):
            assert security.authorized(basic("prometheus", f"guess-{n}-{i}")) is False

    threads = [threading.Thread(target=attacker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (check.calls, check.most) == (43, 1)  # every guess hashed, never two at once: one core at most


@pytest.mark.parametrize(
    ("tls", "said"),
    [
        ("client_ca_file: server.crt", "client_ca_file is set but no client certificate is asked for"),
        ("client_auth_type: RequireAndVerifyClientCert", "RequireAndVerifyClientCert needs client_ca_file"),
        ("client_auth_type: RequestClientCert\n  client_ca_file: server.crt", "RequestClientCert (a client"),
        ("client_auth_type: Sometimes", "unknown value 'Sometimes'; one of NoClientCert"),
    ],
)
def test_client_auth_type_has_the_exporter_toolkit_meaning(tls_dir, tls, said):
    config = tls_dir / "web.yml"
    config.write_text(f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  {tls}\n")
    with pytest.raises(ConfigError, match=re.escape(said)):
        load_web_config(config)


def test_required_client_certificates_are_enforced(tls_dir):
    config = tls_dir / "web.yml"
    config.write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_ca_file: server.crt\n  client_auth_type: RequireAndVerifyClientCert\n"
    )
    server = serve(load_web_config(config))
    try:
        base = f"https://127.0.0.1:{server.port}/metrics"
        anonymous = ssl.create_default_context(cafile=str(tls_dir / "server.crt"))
        with pytest.raises(OSError):
            urllib.request.urlopen(base, timeout=5, context=anonymous)
        with_certificate = ssl.create_default_context(cafile=str(tls_dir / "server.crt"))
        with_certificate.load_cert_chain(tls_dir / "server.crt", tls_dir / "server.key")
        assert get(base, with_certificate) == 200
    finally:
        server.close()
