"""The dead-man's switch: `[fpwatch] heartbeat_url`, pinged after a good check while the daemon is healthy (at most
once a minute: the daemon keeps the pace), so that a service such as healthchecks.io alerts when the pings stop."""

from __future__ import annotations

from fpwatch.config import Secret, mask_url
from fpwatch.logs import get_logger
from fpwatch.providers.http import new_client

log = get_logger("fpwatch.daemon")


async def ping(url: Secret) -> None:
    """One GET; a ping that fails is logged, never raised: a dead-man's switch must not stop the monitoring."""
    try:
        async with new_client(1) as client:
            response = await client.get(url.reveal(), timeout=10)
        if response.status_code >= 400:
            log.warning("heartbeat ping refused", status=response.status_code, url=mask_url(url.reveal()))
    except Exception as exc:
        log.warning("heartbeat ping failed", error=type(exc).__name__, url=mask_url(url.reveal()))
