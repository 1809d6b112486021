"""CLUSTER_DOMAIN_RATE: at most N requests a second to one domain across every worker.

GCRA in one Lua script per request: the domain's key holds the "theoretical arrival time" of
the next request; a request reserves the next slot (one round trip) and the middleware waits
until it comes, so requests are delayed, never dropped. Redis's clock is the only clock, so
workers on machines with skewed clocks still share one schedule."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy.exceptions import NotConfigured

from aggregator import stats as keys
from aggregator.cluster.keys import ClusterKeys
from aggregator.cluster.tracking import lease_tracker
from aggregator.state.redis import connection_name

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler

__all__ = ["GCRA_LUA", "ClusterRateLimit"]

logger = logging.getLogger(__name__)

# KEYS[1] = the domain's key; ARGV[1] = interval (µs). Returns how long to wait (µs).
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local interval = tonumber(ARGV[1])
local ttl = math.ceil((tat + interval - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%d', tat + interval), 'PX', ttl)
return tat - now
"""


class ClusterRateLimit:
    def __init__(self, crawler: Crawler, rate: float):
        self.crawler = crawler
        self.interval = round(1_000_000 / rate)
        self.keys = ClusterKeys(crawler.settings.get("CLUSTER_PREFIX") or "aggregator")
        self.uri = crawler.settings.get("CLUSTER_URI")
        self._client: Any = None
        self._script: Any = None
        self._loop: Any = None
        self._down = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ClusterRateLimit:
        rate = crawler.settings.getfloat("CLUSTER_DOMAIN_RATE", 4.0)
        if rate <= 0 or not crawler.settings.get("CLUSTER_URI"):
            raise NotConfigured
        return cls(crawler, rate)

    def _redis(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(
                self.uri,
                socket_timeout=10,
                socket_connect_timeout=10,
                client_name=connection_name(self.crawler.settings.get("CLUSTER_WORKER_ID")),
            )
            self._script = self._client.register_script(GCRA_LUA)
            self._loop = loop
        return self._script

    async def process_request(self, request: Request, spider: Any = None) -> None:
        import redis

        domain = (urlsplit(request.url).hostname or "").lower()
        delay = 0.1
        while True:
            try:
                wait = await self._redis()(keys=[self.keys.rate(domain)], args=[self.interval])
                break
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if not self._down:
                    logger.error("Rate limit: Redis unreachable (%s); waiting for it", exc)
                    self._down = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if self._down:
            logger.warning("Rate limit: Redis is back")
            self._down = False
        if wait > 0:
            self.crawler.stats.inc_value(keys.CLUSTER_RATE_LIMITED)
            # a stopping worker puts a request still waiting back in its queue (LeaseGate)
            await lease_tracker(self.crawler).pause(wait / 1_000_000)
        return None
