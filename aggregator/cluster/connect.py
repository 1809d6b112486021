"""Checks and connections shared by the cluster commands and components."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis

from aggregator.errors import ConfigError, StateUnavailable
from aggregator.state.redis import check_prefix, check_redis_uri, connection_name, redacted

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

__all__ = ["check_cluster_settings", "cluster_server", "redis_client"]


def check_cluster_settings(settings: BaseSettings) -> None:
    """ConfigError for a malformed CLUSTER_URI, CLUSTER_PREFIX, CLUSTER_LEASE or
    CLUSTER_DOMAIN_RATE (exit status 2), without connecting."""
    uri = settings.get("CLUSTER_URI")
    if not uri:
        raise ConfigError("setting CLUSTER_URI is not set (redis://host:6379/0)")
    check_redis_uri(uri, "CLUSTER_URI")
    check_prefix(settings.get("CLUSTER_PREFIX") or "aggregator")
    if settings.getfloat("CLUSTER_LEASE", 60.0) <= 0:
        raise ConfigError("setting CLUSTER_LEASE: a number of seconds above 0")
    if settings.getfloat("CLUSTER_DOMAIN_RATE", 4.0) < 0:
        raise ConfigError("setting CLUSTER_DOMAIN_RATE: requests per second, 0 or more")


def redis_client(settings: BaseSettings, name: str | None = None) -> redis.Redis:
    """A (synchronous) client of CLUSTER_URI; connects on first use. Its connections are
    named after the worker (CLIENT LIST shows who is who)."""
    timeout = settings.getfloat("CLUSTER_REDIS_TIMEOUT", 10.0)
    return redis.Redis.from_url(
        settings.get("CLUSTER_URI"),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        client_name=connection_name(name or settings.get("CLUSTER_WORKER_ID")),
    )


def cluster_server(settings: BaseSettings, name: str | None = None) -> redis.Redis:
    """A client of CLUSTER_URI that answered a PING. ConfigError for bad settings,
    StateUnavailable when Redis cannot be reached."""
    check_cluster_settings(settings)
    server = redis_client(settings, name)
    try:
        server.ping()
    except (redis.RedisError, OSError) as exc:
        raise StateUnavailable(
            f"cannot reach Redis at CLUSTER_URI {redacted(settings.get('CLUSTER_URI'))}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return server
