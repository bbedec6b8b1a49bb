"""Securing the HTTP endpoint: TLS and basic auth, configured like Prometheus exporters.

The file has the format of the Prometheus exporter-toolkit's `--web.config.file`,
so an operator can reuse what node_exporter already has:

    tls_server_config:
      cert_file: /etc/logmonitor/tls/server.crt
      key_file: /etc/logmonitor/tls/server.key
      client_ca_file: /etc/logmonitor/tls/ca.crt   # optional: require client certificates
    basic_auth_users:
      prometheus: $2b$12$...                        # bcrypt hash (htpasswd -nBC 12 '' | tr -d ':')

Passwords are stored only as bcrypt hashes. Checking one costs ~0.2 s of CPU by
design, so a successful check is remembered (keyed by a SHA-256 of the
credentials, never the password itself) and scrapes every 15 s stay cheap.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from monitor.config import ConfigError, format_loc


class _TLS(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cert_file: str
    key_file: str
    client_ca_file: str = ""
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
    _verified: set[bytes] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

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
        hashed = self.users.get(user)
        if hashed is None:
            return False
        key = hashlib.sha256(f"{user}\0{password}".encode() + hashed).digest()
        with self._lock:
            if any(hmac.compare_digest(key, known) for known in self._verified):
                return True
        import bcrypt

        if not bcrypt.checkpw(password.encode("utf-8"), hashed):
            return False
        with self._lock:
            self._verified.add(key)
        return True


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
    try:
        context.load_cert_chain(base / tls.cert_file, base / tls.key_file)
        if tls.client_ca_file:
            context.load_verify_locations(base / tls.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{path}: tls_server_config: cannot load the certificate or key: {exc}") from None
    return context
