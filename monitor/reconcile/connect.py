"""The MongoDB gateway and the reconciler, built from the config and the command line.

The URL comes from the flag, the config, MONGODB_URL or MONGODB_URL_FILE, resolved
without the driver (`mongo_url`); pymongo is imported only once there is one, so a
log-only sidecar never pays for it. `monitor run`, `verify`, `repair` and `explain` all
open the database here, the same way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from monitor.config import Config, ConfigError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from monitor.reconcile.mongo import MongoGateway
    from monitor.reconcile.reconciler import Reconciler

log = logging.getLogger("monitor.sidecar")  # said at the sidecar's start: the name operators filter on


def open_gateway(config: Config, mongo_url: str | None, mongo_db: str | None) -> MongoGateway | None:
    """The gateway to the analyses' collection (URL from the flag, config, MONGODB_URL or
    MONGODB_URL_FILE; database from the flag or config), or None when no URL is given anywhere."""
    from monitor.reconcile.mongo_url import MongoQueryError, resolve_url

    settings = config.mongodb
    if mongo_db:
        settings = settings.model_copy(update={"database": mongo_db})
    try:
        url = resolve_url(settings, mongo_url)
    except MongoQueryError as exc:
        raise ConfigError(f"mongodb: {exc}; fix the path or the mounted secret") from None
    if not url:
        return None
    # Imported only now: pymongo costs ~8 MB of RSS, which a log-only sidecar does not pay.
    from monitor.reconcile.mongo import MongoGateway

    try:
        return MongoGateway(settings, url)
    except MongoQueryError as exc:
        raise ConfigError(f"mongodb.url: {exc}") from None


def build_reconciler(
    config: Config,
    mongo_url: str | None,
    mongo_db: str | None,
    registry: CollectorRegistry | None = None,
    checkpointed: bool = True,
) -> Reconciler | None:
    """The MongoDB check, or None (log-only) when no claims are configured or no URL is given
    (`checkpointed` False: a one-shot check that keeps no change log for a checkpoint)."""
    gateway = open_gateway(config, mongo_url, mongo_db)  # a broken URL or secret fails even without claims
    if not config.reconcile.claims:
        if gateway is not None:
            gateway.close()
        return None
    if gateway is None:
        log.info(
            "no MongoDB URL (mongodb.url, MONGODB_URL, MONGODB_URL_FILE or --mongo-url): running log-only, "
            "claims in the log are not checked against the database"
        )
        return None
    from monitor.reconcile.reconciler import Reconciler  # with the driver: only when there is a database to ask

    log.info("checking claims against %s, database %s", gateway.where, gateway.settings.database)
    claim_names = [claim.name for claim in config.reconcile.claims]
    return Reconciler(
        config.reconcile,
        gateway,
        claim_names,
        registry=registry,
        metric_prefix=config.metrics.prefix,
        self_prefix=config.metrics.self_prefix,
        checkpointed=checkpointed,
    )
