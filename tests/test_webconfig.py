"""TLS and basic auth on the real endpoint, with a certificate made by openssl and bcrypt hashes."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request

import bcrypt
import pytest
from prometheus_client import CollectorRegistry, Counter

from monitor.config import ConfigError
from monitor.server import Endpoints, MetricsServer
from monitor.webconfig import load_web_config

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
