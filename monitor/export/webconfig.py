"""Securing the HTTP endpoint: TLS, basic auth and response headers, configured like Prometheus exporters.

The file has the format of the Prometheus exporter-toolkit's `--web.config.file`,
so an operator can reuse what node_exporter already has:

    tls_server_config:
      cert_file: /etc/logmonitor/tls/server.crt
      key_file: /etc/logmonitor/tls/server.key
      client_ca_file: /etc/logmonitor/tls/ca.crt   # optional, with client_auth_type:
      client_auth_type: RequireAndVerifyClientCert  # or VerifyClientCertIfGiven; NoClientCert by default
      min_version: TLS12                            # TLS10, TLS11, TLS12 (default) or TLS13
      max_version: TLS13                            # the default
      cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]  # Go's names; default: OpenSSL's choice
      prefer_server_cipher_suites: true             # the default
      curve_preferences: [X25519]                   # CurveP256, CurveP384, CurveP521, X25519
    http_server_config:
      http2: true
      headers:                                      # added to every response
        Strict-Transport-Security: max-age=31536000
    basic_auth_users:
      prometheus: $2b$12$...                        # bcrypt hash (htpasswd -nBC 12 '' | tr -d ':')

A key exporter-toolkit does not know is refused, and so is one this endpoint does not
implement (`rate_limit`; inline `cert`, `key`, `client_ca`; `client_allowed_sans`), and so is
every value exporter-toolkit refuses. Where Python's TLS differs from Go's:

- TLS10 and TLS11 are accepted, but OpenSSL 3 refuses TLS 1.0 and 1.1 at its security
  level 1 and above (the default): a min_version of TLS10 or TLS11 works as TLS12, and a
  max_version of TLS10 or TLS11 (no client could connect) is refused at load time.
- cipher_suites apply to TLS 1.2 and below, as in Go: the TLS 1.3 names are accepted and
  change nothing; a list of only those leaves TLS 1.3 as the one version that can be agreed.
  A suite Go knows but this OpenSSL cannot negotiate (3DES) is refused at load time.
- curve_preferences: Python gives a server one curve (`SSLContext.set_ecdh_curve`), so
  only the first listed is offered, for every TLS version; a client without it fails.
- http2 is accepted and ignored: HTTP/2 is not served (as exporter-toolkit without TLS).
- headers: only exporter-toolkit's five, with its allowed values for the two that have
  some; a value with CR, LF or NUL is refused (it would end the header early).

Passwords are stored only as bcrypt hashes. Checking one costs a few tenths of a second
of CPU at cost 12 by design, which an endpoint must neither leak nor let anyone spend at will:

- a hash's cost is at most 14: each step doubles a check, and at 31 one check holds a
  core for hours, which anyone who can reach the endpoint could ask for;
- a check's result is remembered (keyed by a SHA-256 of the credentials, never
  the password itself; the most recent 1,024 failures), so scrapes every 15 s
  and a misconfigured scraper retrying one wrong password stay cheap;
- an unknown user is checked against the configured hash of highest cost, as
  exporter-toolkit checks it against a hash, so user names cannot be told apart by timing;
- a password over 72 bytes (bcrypt's limit) is refused without a check: its length
  tells nothing about the users, and what it costs to refuse is nothing;
- at most one hash is checked at a time, and a check that waited first looks whether
  the one before answered it: a flood of wrong passwords costs one core, never both,
  and a flood of one wrong password costs one check.

`WebSecurity.cached` answers whatever needs no bcrypt check (an event loop may call it);
`WebSecurity.check` may take one (call it on a worker thread); `authorized` is both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import ssl
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from monitor.config import ConfigError, format_loc

# exporter-toolkit's client_auth_type values -> what Python's TLS can enforce. Python verifies
# every client certificate it asks for, so the two "any certificate" policies cannot be kept.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Go's cipher suite names (what its tls.CipherSuites() lists, or listed in releases that had the
# RSA key exchange and 3DES there) -> OpenSSL's. None: a TLS 1.3 suite, which a server picks in neither.
CIPHER_SUITES: dict[str, str | None] = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
}
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}
# exporter-toolkit's configurable response headers and their allowed values (None: any).
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
MAX_COST = 14
MAX_PASSWORD_BYTES = 72  # bcrypt reads no further (and bcrypt >= 4.1 raises)
REMEMBERED_FAILURES = 1024


class _TLS(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cert_file: str
    key_file: str
    client_ca_file: str = ""
    client_auth_type: str = "NoClientCert"
    min_version: Any = "TLS12"  # any YAML value: _versions names the accepted ones
    max_version: Any = "TLS13"
    cipher_suites: list[str] = []
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[str] = []


class _HTTP(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)  # `X-XSS-Protection: 1`
    http2: bool = True  # accepted and ignored: HTTP/2 is not served
    headers: dict[str, str] = {}


class _WebConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tls_server_config: _TLS | None = None
    http_server_config: _HTTP = _HTTP()
    basic_auth_users: dict[str, str] = {}


class _Attempt(NamedTuple):
    password: bytes
    hashed: bytes  # the user's hash; for an unknown user, the configured one of highest cost
    known: bool
    key: bytes  # what the caches hold: a SHA-256 of the credentials and the hash


@dataclass
class WebSecurity:
    """What the server enforces: a TLS context, basic-auth users, headers for every response."""

    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    checkpw: Callable[[bytes, bytes], bool] | None = None  # bcrypt.checkpw unless a test passes another
    _verified: set[bytes] = field(default_factory=set)
    _refused: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _hashing: threading.Lock = field(default_factory=threading.Lock)  # one bcrypt check at a time

    @property
    def requires_auth(self) -> bool:
        """Are basic-auth users configured (else every request is authorized)?"""
        return bool(self.users)

    def authorized(self, header: str | None) -> bool:
        """Does this Authorization header carry valid credentials (or is no auth configured)?"""
        known = self.cached(header)
        return self.check(header) if known is None else known

    def cached(self, header: str | None) -> bool | None:
        """The answer when it needs no bcrypt check (no auth, no or a malformed header, a password
        over 72 bytes, credentials checked before); None when it does. Never blocks for long."""
        attempt = self._attempt(header)
        return attempt if isinstance(attempt, bool) else self._remembered(attempt.key)

    def check(self, header: str | None) -> bool:
        """The answer, with a bcrypt check if it takes one: may wait for other checks, then a few tenths of a second."""
        attempt = self._attempt(header)
        if isinstance(attempt, bool):
            return attempt
        known = self._remembered(attempt.key)
        if known is not None:
            return known
        with self._hashing:
            known = self._remembered(attempt.key)  # answered by the check this one waited for?
            if known is not None:
                return known
            valid = self._check(attempt.password, attempt.hashed) and attempt.known
            with self._lock:
                if valid:
                    self._verified.add(attempt.key)
                else:
                    self._refused[attempt.key] = None
                    if len(self._refused) > REMEMBERED_FAILURES:
                        self._refused.popitem(last=False)
        return valid

    def _attempt(self, header: str | None) -> bool | _Attempt:
        """The credentials to check, or the answer if no check could change it."""
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            credentials = base64.b64decode(header[6:], validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False
        user, _, password = credentials.partition(":")
        if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
            return False  # never valid; unhashed, since a length tells nothing about the users
        known = user in self.users
        # a stranger costs what the costliest user costs ("$2b$12$...": two-digit costs order as numbers)
        hashed = self.users[user] if known else max(self.users.values(), key=lambda h: h[4:6])
        key = hashlib.sha256(credentials.encode("utf-8") + b"\0" + hashed).digest()  # user holds no ":"
        return _Attempt(password.encode("utf-8"), hashed, known, key)

    def _remembered(self, key: bytes) -> bool | None:
        with self._lock:
            if key in self._refused:
                return False
            if any(hmac.compare_digest(key, verified) for verified in self._verified):
                return True
        return None

    def _check(self, password: bytes, hashed: bytes) -> bool:
        if self.checkpw is None:
            import bcrypt

            self.checkpw = bcrypt.checkpw
        try:
            return self.checkpw(password, hashed)
        except ValueError:  # a hash bcrypt cannot read (users given by hand, not loaded): no entry
            return False


def load_web_config(path: str | Path) -> WebSecurity:
    """Read a web config file; any problem is a ConfigError naming the file and field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        parsed = _WebConfig.model_validate(raw)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the web config file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = [f"{path}: {format_loc(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(problems)) from None
    security = WebSecurity(headers=_headers(path, parsed.http_server_config))
    for user, hashed in parsed.basic_auth_users.items():
        security.users[user] = _bcrypt_hash(f"{path}: basic_auth_users.{user}", hashed)
    if parsed.tls_server_config is not None:
        security.tls = _tls_context(path, parsed.tls_server_config)
    return security


def _bcrypt_hash(where: str, hashed: str) -> bytes:
    match = BCRYPT_HASH.fullmatch(hashed)
    if match is None:
        raise ConfigError(
            f"{where}: not a bcrypt hash ($2b$, a cost 04-{MAX_COST}, $, 53 characters); "
            "store `htpasswd -nBC 12 \"\" | tr -d ':'`, never a plain password"
        )
    cost = int(match[1])
    if cost > MAX_COST:
        raise ConfigError(
            f"{where}: bcrypt cost {cost} is above the cap of {MAX_COST}: one check at cost 15 or more holds "
            "a CPU core for seconds (at 31, for hours), and anyone who reaches the endpoint can ask for one; "
            "rehash with `htpasswd -nBC 12 \"\" | tr -d ':'`"
        )
    return hashed.replace("$2y$", "$2b$", 1).encode()


def _headers(path: Path, http: _HTTP) -> dict[str, str]:
    where = f"{path}: http_server_config.headers"
    for name, value in http.headers.items():
        if name not in HEADERS:
            raise ConfigError(f"{where}: {name!r} cannot be configured; exporter-toolkit allows {', '.join(HEADERS)}")
        allowed = HEADERS[name]
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{where}.{name}: {value!r} is not allowed; one of {', '.join(allowed)}")
        if any(c in value for c in "\r\n\0"):
            raise ConfigError(f"{where}.{name}: the value holds a CR, LF or NUL, which would end the header early")
    return dict(http.headers)


def _tls_context(path: Path, tls: _TLS) -> ssl.SSLContext:
    where = f"{path}: tls_server_config"
    base = path.parent
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    verify_mode = _client_auth(path, tls)
    low, high = _versions(where, tls)
    if tls.cipher_suites and not _cipher_suites(where, context, tls.cipher_suites):
        low = max(low, ssl.TLSVersion.TLSv1_3)  # only TLS 1.3 names: as in Go, no older version finds a suite
        if high < low:
            raise ConfigError(
                f"{where}: cipher_suites lists only TLS 1.3 suites, which do not apply up to "
                f"max_version {tls.max_version}: no client could connect"
            )
    if high < ssl.TLSVersion.TLSv1_2 and ssl.OPENSSL_VERSION_INFO >= (3,) and context.security_level >= 1:
        raise ConfigError(
            f"{where}.max_version: {tls.max_version}: {ssl.OPENSSL_VERSION} refuses TLS 1.0 and 1.1 at its "
            f"security level {context.security_level}, so no client could connect; use TLS12 or TLS13"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python's, for TLS 1.0 and 1.1
        context.minimum_version, context.maximum_version = low, high
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.curve_preferences:
        _curve(where, context, tls.curve_preferences)
    try:
        context.load_cert_chain(base / tls.cert_file, base / tls.key_file)
        if tls.client_ca_file:
            context.load_verify_locations(base / tls.client_ca_file)
        context.verify_mode = verify_mode
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}: cannot load the certificate or key: {exc}") from None
    return context


def _versions(where: str, tls: _TLS) -> tuple[ssl.TLSVersion, ssl.TLSVersion]:
    """min_version and max_version, spelt as exporter-toolkit spells them and no other way."""
    versions = []
    for name in ("min_version", "max_version"):
        value = getattr(tls, name)
        if not isinstance(value, str) or value not in TLS_VERSIONS:
            raise ConfigError(f"{where}.{name}: unknown value {value!r}; one of {', '.join(TLS_VERSIONS)}")
        versions.append(TLS_VERSIONS[value])
    low, high = versions
    if high < low:
        raise ConfigError(
            f"{where}: max_version {tls.max_version} is below min_version {tls.min_version}: no version is left"
        )
    return low, high


def _cipher_suites(where: str, context: ssl.SSLContext, names: list[str]) -> list[str]:
    """Apply Go's cipher suite names to TLS 1.2 and below, in their order; the OpenSSL names applied."""
    chosen = []
    for name in names:
        if name not in CIPHER_SUITES:
            raise ConfigError(f"{where}.cipher_suites: unknown suite {name!r}; one of {', '.join(CIPHER_SUITES)}")
        openssl = CIPHER_SUITES[name]
        if openssl is None:
            continue
        try:
            context.set_ciphers(openssl)
        except ssl.SSLError:
            raise ConfigError(
                f"{where}.cipher_suites: {name} is a suite Go knows, but {ssl.OPENSSL_VERSION} cannot negotiate "
                f"it ({openssl}: compiled out or below its security level)"
            ) from None
        chosen.append(openssl)
    if chosen:
        context.set_ciphers(":".join(chosen))
    return chosen


def _curve(where: str, context: ssl.SSLContext, names: list[str]) -> None:
    """curve_preferences: all must be Go's names; the first is the one curve offered."""
    for name in names:
        if name not in CURVES:
            raise ConfigError(f"{where}.curve_preferences: unknown curve {name!r}; one of {', '.join(CURVES)}")
    try:
        context.set_ecdh_curve(CURVES[names[0]])
    except (ValueError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}.curve_preferences: {names[0]}: {ssl.OPENSSL_VERSION} refuses it: {exc}") from None


def _client_auth(path: Path, tls: _TLS) -> ssl.VerifyMode:
    """exporter-toolkit's client_auth_type, with its rules: a CA needs a policy that uses it."""
    where = f"{path}: tls_server_config.client_auth_type"
    if tls.client_auth_type in UNVERIFIED_CLIENT_AUTH:
        raise ConfigError(
            f"{where}: {tls.client_auth_type} (a client certificate accepted unverified) is not supported: "
            "use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
        )
    if tls.client_auth_type not in CLIENT_AUTH:
        known = ", ".join([*CLIENT_AUTH, *UNVERIFIED_CLIENT_AUTH])
        raise ConfigError(f"{where}: unknown value {tls.client_auth_type!r}; one of {known}")
    mode = CLIENT_AUTH[tls.client_auth_type]
    if tls.client_ca_file and mode == ssl.CERT_NONE:
        raise ConfigError(
            f"{where}: client_ca_file is set but no client certificate is asked for (NoClientCert); "
            "set client_auth_type: RequireAndVerifyClientCert (or VerifyClientCertIfGiven)"
        )
    if mode != ssl.CERT_NONE and not tls.client_ca_file:
        raise ConfigError(
            f"{where}: {tls.client_auth_type} needs client_ca_file, the CA that signs client certificates"
        )
    return mode
