"""Where the MongoDB URL comes from, resolved without importing the driver.

A log-only sidecar (no URL anywhere) never loads pymongo (~8 MB of RSS): the URL is
resolved here first, and `monitor.reconcile.mongo` is imported only when there is one.
"""

from __future__ import annotations

import os
from pathlib import Path

from monitor.config import MongoSettings

# What the commands that need a database say when no MongoDB URL is given anywhere.
NO_URL = (
    "no MongoDB URL; pass --mongo-url URL, or set mongodb.url in the config, the MONGODB_URL "
    "environment variable, or MONGODB_URL_FILE (a file holding the URL, such as a mounted secret)"
)


class MongoQueryError(Exception):
    """The server answered with an error: the query itself failed."""


def resolve_url(settings: MongoSettings, flag: str | None = None, environ: dict[str, str] | None = None) -> str:
    """The URI to use: --mongo-url, else the config's url, else $MONGODB_URL, else a file
    (config url_file or $MONGODB_URL_FILE, as Docker and Kubernetes mount secrets). "" means log-only."""
    environ = dict(os.environ) if environ is None else environ
    for candidate in (flag, settings.url, environ.get("MONGODB_URL")):
        if candidate:
            return candidate.strip()
    path = settings.url_file or environ.get("MONGODB_URL_FILE", "")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise MongoQueryError(f"cannot read the MongoDB URL file {path}: {exc.strerror or exc}") from None
    return ""
