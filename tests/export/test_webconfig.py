"""TLS and basic auth on the real endpoint, with a certificate made by openssl and bcrypt hashes."""

from __future__ import annotations

import base64
import contextlib
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import warnings

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


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[str, str]:
    """A real TLS handshake over a socket pair: the version and cipher agreed, or ssl.SSLError."""
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    theirs.settimeout(5)

    def serve() -> None:
        with contextlib.suppress(OSError), server.wrap_socket(ours, server_side=True):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(theirs, server_hostname="127.0.0.1") as tls:
            return tls.version(), tls.cipher()[0]
    finally:
        thread.join()
        ours.close()
        theirs.close()


def client(tls_dir, *versions: ssl.TLSVersion, ciphers: str = "", curve: str = "") -> ssl.SSLContext:
    """A client trusting the test certificate, limited to these versions, ciphers and curve."""
    context = ssl.create_default_context(cafile=str(tls_dir / "server.crt"))
    if versions:
        context.minimum_version, context.maximum_version = min(versions), max(versions)
    if ciphers:
        context.set_ciphers(ciphers)
    if curve:
        context.set_ecdh_curve(curve)
    return context


def tls_config(tls_dir, lines: str = "") -> WebSecurity:
    config = tls_dir / "web.yml"
    config.write_text(f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{lines}")
    return load_web_config(config)


TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize(
    ("value", "shown"), [("tls13", "'tls13'"), ("TLSv1.3", "'TLSv1.3'"), ("1.3", "1.3"), ("", "None")]
)
def test_tls_versions_are_spelt_as_in_exporter_toolkit(tls_dir, value, shown):
    with pytest.raises(ConfigError) as error:
        tls_config(tls_dir, f"  min_version: {value}\n")
    assert str(error.value) == (
        f"{tls_dir / 'web.yml'}: tls_server_config.min_version: unknown value {shown}; "
        "one of TLS10, TLS11, TLS12, TLS13"
    )
    with pytest.raises(ConfigError, match=re.escape(f"tls_server_config.max_version: unknown value {shown};")):
        tls_config(tls_dir, f"  max_version: {value}\n")


def test_max_version_below_min_version_is_refused(tls_dir):
    with pytest.raises(ConfigError) as error:
        tls_config(tls_dir, "  min_version: TLS13\n  max_version: TLS12\n")
    assert str(error.value) == (
        f"{tls_dir / 'web.yml'}: tls_server_config: max_version TLS12 is below min_version TLS13: no version is left"
    )


def test_tls_version_bounds_hold_in_real_handshakes(tls_dir):
    only13 = tls_config(tls_dir, "  min_version: TLS13\n").tls
    with pytest.raises(ssl.SSLError):
        handshake(only13, client(tls_dir, TLS12))
    assert handshake(only13, client(tls_dir, TLS13))[0] == "TLSv1.3"

    default = tls_config(tls_dir).tls  # TLS12 to TLS13, as in exporter-toolkit
    assert handshake(default, client(tls_dir, TLS12))[0] == "TLSv1.2"
    assert handshake(default, client(tls_dir, TLS13))[0] == "TLSv1.3"

    only12 = tls_config(tls_dir, "  max_version: TLS12\n").tls
    with pytest.raises(ssl.SSLError):
        handshake(only12, client(tls_dir, TLS13))
    assert handshake(only12, client(tls_dir))[0] == "TLSv1.2"


@pytest.mark.skipif(ssl.OPENSSL_VERSION_INFO < (3,), reason="OpenSSL 3 refuses TLS 1.0 and 1.1 at its default level")
def test_tls10_and_tls11_are_accepted_but_openssl_3_serves_neither(tls_dir):
    legacy = tls_config(tls_dir, "  min_version: TLS10\n").tls
    assert handshake(legacy, client(tls_dir, TLS12))[0] == "TLSv1.2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old_client = client(tls_dir, ssl.TLSVersion.TLSv1, ciphers="DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):  # a minimum of TLS10 works as TLS12
        handshake(legacy, old_client)
    said = f"tls_server_config.max_version: TLS11: {ssl.OPENSSL_VERSION} refuses TLS 1.0 and 1.1 at its security level"
    with pytest.raises(ConfigError, match=re.escape(said)):
        tls_config(tls_dir, "  min_version: TLS10\n  max_version: TLS11\n")


def test_cipher_suites_take_go_names_and_bind_tls12_only(tls_dir):
    security = tls_config(tls_dir, "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256]\n")
    assert [c["name"] for c in security.tls.get_ciphers() if c["protocol"] != "TLSv1.3"] == [
        "ECDHE-RSA-AES256-GCM-SHA384"
    ]
    with pytest.raises(ssl.SSLError):
        handshake(security.tls, client(tls_dir, TLS12, ciphers="ECDHE-RSA-AES128-GCM-SHA256"))
    assert handshake(security.tls, client(tls_dir, TLS12)) == ("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384")
    assert handshake(security.tls, client(tls_dir, TLS13))[0] == "TLSv1.3"  # as in Go: TLS 1.3 is not bound


def test_only_tls13_cipher_suites_leave_only_tls13(tls_dir):
    security = tls_config(tls_dir, "  cipher_suites: [TLS_AES_256_GCM_SHA384]\n")
    with pytest.raises(ssl.SSLError):  # in Go, a TLS 1.2 handshake finds no suite
        handshake(security.tls, client(tls_dir, TLS12))
    assert handshake(security.tls, client(tls_dir))[0] == "TLSv1.3"
    with pytest.raises(ConfigError, match=r"lists only TLS 1\.3 suites, which do not apply up to max_version TLS12"):
        tls_config(tls_dir, "  cipher_suites: [TLS_AES_256_GCM_SHA384]\n  max_version: TLS12\n")


def test_unknown_and_unavailable_cipher_suites_are_refused(tls_dir):
    with pytest.raises(ConfigError) as error:
        tls_config(tls_dir, "  cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256]\n")
    assert str(error.value).startswith(
        f"{tls_dir / 'web.yml'}: tls_server_config.cipher_suites: unknown suite 'ECDHE-RSA-AES128-GCM-SHA256'; "
        "one of TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, "
    )
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with contextlib.suppress(ssl.SSLError):
        probe.set_ciphers("DES-CBC3-SHA")
        pytest.skip("this OpenSSL still negotiates 3DES")
    with pytest.raises(ConfigError, match=r"TLS_RSA_WITH_3DES_EDE_CBC_SHA is a suite Go knows, but OpenSSL .* cannot"):
        tls_config(tls_dir, "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, TLS_RSA_WITH_3DES_EDE_CBC_SHA]\n")


def test_prefer_server_cipher_suites_decides_whose_order_wins(tls_dir):
    suites = "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n"
    theirs = client(tls_dir, TLS12, ciphers="ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256")
    assert handshake(tls_config(tls_dir, suites).tls, theirs)[1] == "ECDHE-RSA-AES128-GCM-SHA256"  # default: true
    preferring = tls_config(tls_dir, suites + "  prefer_server_cipher_suites: true\n").tls
    assert handshake(preferring, theirs)[1] == "ECDHE-RSA-AES128-GCM-SHA256"
    yielding = tls_config(tls_dir, suites + "  prefer_server_cipher_suites: false\n").tls
    assert handshake(yielding, theirs)[1] == "ECDHE-RSA-AES256-GCM-SHA384"


def test_curve_preferences_offer_the_first_curve(tls_dir):
    security = tls_config(tls_dir, "  curve_preferences: [CurveP384, X25519]\n")
    assert handshake(security.tls, client(tls_dir, curve="secp384r1"))[0] == "TLSv1.3"
    assert handshake(security.tls, client(tls_dir, TLS12, curve="secp384r1"))[0] == "TLSv1.2"
    with pytest.raises(ssl.SSLError):  # only the first is offered: see the module docstring
        handshake(security.tls, client(tls_dir, curve="X25519"))
    with pytest.raises(ConfigError, match=r"curve_preferences: unknown curve 'P-256'; one of CurveP256, CurveP384,"):
        tls_config(tls_dir, "  curve_preferences: [P-256]\n")


def test_http_server_config_headers_as_exporter_toolkit_allows_them(tmp_path):
    config = tmp_path / "web.yml"
    config.write_text(  # exporter-toolkit's own example of good headers
        "http_server_config:\n  http2: false\n  headers:\n"
        "    X-Frame-Options: deny\n"
        "    Strict-Transport-Security: max-age=31536000; includeSubDomains\n"
        "    X-Content-Type-Options: nosniff\n"
        "    X-XSS-Protection: 1\n"
        "    Content-Security-Policy: \"default-src 'self' *.test.example.net\"\n"
    )
    assert load_web_config(config).headers == {
        "X-Frame-Options": "deny",
        "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
        "X-Content-Type-Options": "nosniff",
        "X-XSS-Protection": "1",
        "Content-Security-Policy": "default-src 'self' *.test.example.net",
    }
    assert load_web_config(_write(config, "http_server_config:\n  http2: true\n")).headers == {}
    assert WebSecurity().headers == {}


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ("Content-Type: foo", "http_server_config.headers: 'Content-Type' cannot be configured; exporter-toolkit"),
        ("x-frame-options: deny", "'x-frame-options' cannot be configured"),
        ("X-Frame-Options: foo", "http_server_config.headers.X-Frame-Options: 'foo' is not allowed; one of deny, "),
        ("X-Content-Type-Options: sniff", "'sniff' is not allowed; one of nosniff"),
        ('X-XSS-Protection: "1\\r\\nSet-Cookie: a=b"', "X-XSS-Protection: the value holds a CR, LF or NUL"),
        ('Content-Security-Policy: "a\\nb"', "Content-Security-Policy: the value holds a CR, LF or NUL"),
    ],
)
def test_other_headers_and_values_are_refused(tmp_path, headers, said):
    config = _write(tmp_path / "web.yml", f"http_server_config:\n  headers:\n    {headers}\n")
    with pytest.raises(ConfigError, match=re.escape(said)):
        load_web_config(config)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("rate_limit: {burst: 1}\n", "rate_limit: Extra inputs are not permitted"),
        ("http_server_config:\n  http3: true\n", "http_server_config.http3: Extra inputs are not permitted"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_allowed_sans: [x]\n",
            "tls_server_config.client_allowed_sans: Extra inputs are not permitted",
        ),
    ],
)
def test_unknown_keys_are_refused_everywhere(tmp_path, text, said):
    with pytest.raises(ConfigError, match=re.escape(said)):
        load_web_config(_write(tmp_path / "web.yml", text))


def _write(path, text: str):
    path.write_text(text)
    return path


def test_bcrypt_costs_above_14_and_malformed_hashes_are_refused(tmp_path):
    config = tmp_path / "web.yml"
    cheap = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    costly = cheap.replace("$04$", "$15$", 1)  # well formed; never hashed here, which would take seconds
    with pytest.raises(ConfigError) as error:
        load_web_config(_write(config, f"basic_auth_users:\n  prometheus: '{costly}'\n"))
    assert str(error.value) == (
        f"{config}: basic_auth_users.prometheus: bcrypt cost 15 is above the cap of 14: one check at cost 15 or "
        "more holds a CPU core for seconds (at 31, for hours), and anyone who reaches the endpoint can ask for "
        "one; rehash with `htpasswd -nBC 12 \"\" | tr -d ':'`"
    )
    for malformed in (cheap[:-1], cheap + "x", cheap.replace("$04$", "$4$", 1), cheap.replace("$04$", "$03$", 1)):
        with pytest.raises(ConfigError, match=re.escape("basic_auth_users.prometheus: not a bcrypt hash ($2b$")):
            load_web_config(_write(config, f"basic_auth_users:\n  prometheus: '{malformed}'\n"))
    for fine in (cheap, cheap.replace("$04$", "$14$", 1), cheap.replace("$2b$", "$2y$", 1)):
        assert load_web_config(_write(config, f"basic_auth_users:\n  prometheus: '{fine}'\n")).requires_auth


class RecordingCheck(CountingCheck):
    """CountingCheck that also keeps each hash it was asked about."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.hashes: list[bytes] = []
        self.delay = delay

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.hashes.append(hashed)
        time.sleep(self.delay)
        return super().__call__(password, hashed)


def test_an_unknown_user_costs_what_the_costliest_user_costs():
    cheap, costly = bcrypt.hashpw(b"a", bcrypt.gensalt(rounds=4)), bcrypt.hashpw(b"b", bcrypt.gensalt(rounds=5))
    check = RecordingCheck()
    security = WebSecurity(users={"cheap": cheap, "costly": costly, "also-cheap": cheap}, checkpw=check)
    assert security.authorized(basic("nobody", "a")) is False
    assert check.hashes == [costly]


def test_a_password_over_72_bytes_is_refused_without_hashing():
    check = CountingCheck()
    long = "p" * 73
    security = WebSecurity(users={"prometheus": bcrypt.hashpw(b"p" * 72, bcrypt.gensalt(rounds=4))}, checkpw=check)
    for user in ("prometheus", "nobody"):
        assert security.cached(basic(user, long)) is False
        assert security.check(basic(user, long)) is False
        assert security.authorized(basic(user, long)) is False
    assert security.authorized(basic("prometheus", "é" * 37)) is False  # 74 bytes in UTF-8
    assert check.calls == 0
    assert security.authorized(basic("prometheus", "p" * 72)) is True


def test_cached_answers_without_bcrypt_and_check_does_the_rest():
    check = CountingCheck()
    security = WebSecurity(users={"prometheus": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))}, checkpw=check)
    assert security.requires_auth is True
    for header in (None, "", "Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"\xff:x").decode()):
        assert security.cached(header) is False
        assert security.check(header) is False
    assert security.cached(basic("prometheus", "s3cret")) is None
    assert security.cached(basic("prometheus", "wrong")) is None
    assert check.calls == 0
    assert security.check(basic("prometheus", "s3cret")) is True
    assert security.check(basic("prometheus", "wrong")) is False
    assert check.calls == 2
    assert security.cached(basic("prometheus", "s3cret")) is True
    assert security.cached(basic("prometheus", "wrong")) is False
    assert security.check(basic("prometheus", "s3cret")) is True  # remembered: no second check
    assert check.calls == 2
    assert security.cached(basic("prometheus:", "s3cret")) is None  # a user name never holds ":"

    open_door = WebSecurity()
    assert (open_door.requires_auth, open_door.cached(None), open_door.check(None)) == (False, True, True)


def test_a_flood_of_one_wrong_password_costs_one_check():
    check = RecordingCheck(delay=0.2)  # long enough for every thread to queue behind the first check
    security = WebSecurity(users={"prometheus": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))}, checkpw=check)
    start = threading.Barrier(8)
    answers: list[bool] = []

    def scraper() -> None:
        start.wait()
        answers.append(security.authorized(basic("prometheus", "wrong")))

    threads = [threading.Thread(target=scraper) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [False] * 8
    assert check.calls == 1
