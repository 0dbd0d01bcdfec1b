"""Redis clients built from settings, the same way on both sides (TLS options included)."""

from __future__ import annotations

import ssl
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from embedq.config.settings import RedisSettings

__all__ = ["CERT_REQS", "redis_client", "tls_options"]

CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


def tls_options(settings: RedisSettings) -> dict[str, Any]:
    """Certificate options for ``rediss://`` URLs (empty for plain ones)."""
    if not settings.url.startswith("rediss://"):
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": CERT_REQS[settings.ssl_cert_reqs]}
    if settings.ssl_ca_certs is not None:
        options["ssl_ca_certs"] = str(settings.ssl_ca_certs)
    return options


def redis_client(settings: RedisSettings, *, patient: bool = False) -> redis.Redis:
    """A client for job progress, dead letters and the collection registry.

    ``patient`` clients (the workers') retry for about 30 s, riding out a Redis restart so that
    a batch already stored is not failed for it; the producer's fail fast instead.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": 4,
        "socket_timeout": 30,
        "health_check_interval": 30,
    }
    if patient:
        options["retry"] = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=20)
        options["retry_on_error"] = [redis.ConnectionError, redis.TimeoutError]
    return redis.Redis.from_url(settings.connection_url(), **options, **tls_options(settings))
