"""Securing the HTTP endpoint: TLS and basic auth, configured like Prometheus exporters.

The file has the format of the Prometheus exporter-toolkit's `--web.config.file`,
so an operator can reuse what node_exporter already has:

    tls_server_config:
      cert_file: /etc/logmonitor/tls/server.crt
      key_file: /etc/logmonitor/tls/server.key
      client_ca_file: /etc/logmonitor/tls/ca.crt   # optional, with client_auth_type:
      client_auth_type: RequireAndVerifyClientCert  # or VerifyClientCertIfGiven; NoClientCert by default
    basic_auth_users:
      prometheus: $2b$12$...                        # bcrypt hash (htpasswd -nBC 12 '' | tr -d ':')

Passwords are stored only as bcrypt hashes. Checking one costs ~0.2 s of CPU by
design, which an endpoint must neither leak nor let anyone spend at will:

- a check's result is remembered (keyed by a SHA-256 of the credentials, never
  the password itself; the most recent 1,024 failures), so scrapes every 15 s
  and a misconfigured scraper retrying one wrong password stay cheap;
- an unknown user is checked against a configured hash all the same, as
  exporter-toolkit does, so user names cannot be told apart by timing;
- at most one hash is checked at a time: a flood of wrong passwords costs one
  core, never both, and counting goes on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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
REMEMBERED_FAILURES = 1024


class _TLS(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cert_file: str
    key_file: str
    client_ca_file: str = ""
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"


class _WebConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tls_server_config: _TLS | None = None
    basic_auth_users: dict[str, str] = {}


@dataclass
class WebSecurity:
    """What the server enforces: a TLS context and/or basic-auth users."""

    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    checkpw: Callable[[bytes, bytes], bool] | None = None  # bcrypt.checkpw unless a test passes another
    _verified: set[bytes] = field(default_factory=set)
    _refused: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _hashing: threading.Lock = field(default_factory=threading.Lock)  # one bcrypt check at a time

    def authorized(self, header: str | None) -> bool:
        """Does this Authorization header carry valid credentials (or is no auth configured)?"""
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        known = user in self.users
        hashed = self.users[user] if known else next(iter(self.users.values()))  # same cost for a stranger
        key = hashlib.sha256(f"{user}\0{password}".encode() + hashed).digest()
        with self._lock:
            if key in self._refused:
                return False
            if any(hmac.compare_digest(key, verified) for verified in self._verified):
                return True
        with self._hashing:
            valid = self._check(password.encode("utf-8"), hashed) and known
        with self._lock:
            if valid:
                self._verified.add(key)
            else:
                self._refused[key] = None
                if len(self._refused) > REMEMBERED_FAILURES:
                    self._refused.popitem(last=False)
        return valid

    def _check(self, password: bytes, hashed: bytes) -> bool:
        if self.checkpw is None:
            import bcrypt

            self.checkpw = bcrypt.checkpw
        return self.checkpw(password, hashed)


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
    security = WebSecurity()
    for user, hashed in parsed.basic_auth_users.items():
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(
                f"{path}: basic_auth_users.{user}: not a bcrypt hash; store `htpasswd -nBC 12 \"\" | tr -d ':'`, "
                "never a plain password"
            )
        security.users[user] = hashed.replace("$2y$", "$2b$", 1).encode()
    if parsed.tls_server_config is not None:
        security.tls = _tls_context(path, parsed.tls_server_config)
    return security


def _tls_context(path: Path, tls: _TLS) -> ssl.SSLContext:
    base = path.parent
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "TLS13" else ssl.TLSVersion.TLSv1_2
    verify_mode = _client_auth(path, tls)
    try:
        context.load_cert_chain(base / tls.cert_file, base / tls.key_file)
        if tls.client_ca_file:
            context.load_verify_locations(base / tls.client_ca_file)
        context.verify_mode = verify_mode
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{path}: tls_server_config: cannot load the certificate or key: {exc}") from None
    return context


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
