"""The crawl state in Redis (`DEDUPE_URI=redis://[:password@]host:port/db`, or `rediss://`), so
several workers share one published set, one pending list and one set of records.

Keys (all under `CLUSTER_PREFIX`, default `aggregator`):

| key | type | content |
| --- | --- | --- |
| `P:published` | hash | article key → `{"location": str, "at": float}` |
| `P:claim:<article key>` | string, PX lease | the owner that claimed the article |
| `P:pending` | hash | article key → `{"site", "payload", "error", "attempts", "first_at",
  "last_at"}` |
| `P:records` | hash | name → value (feed validators, the S3 writer id) |

Everything is JSON, never pickle, and every value read back is checked: whoever can write to
Redis can corrupt the state but cannot make a worker run code. A value of the wrong shape is
logged and skipped (a published key whose record is unreadable still counts as published).

Claims are one Lua script (one round trip, atomic): for each key, skip it if it is published,
else `SET claim owner NX PX lease`. A live claim is never taken again, not even by its own
owner (the protocol's contract: a second listing of an article in one crawl is a duplicate,
and a worker restarted with the same id cannot publish what its previous life was writing);
it ends when released, published or when its lease runs out.

A Redis that goes away mid-run is waited for: every call is retried with a capped backoff
(`CLUSTER_RETRY_MAX_WAIT` seconds in total, default 300; logged once when it goes, once when it
comes back) before the error is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from aggregator.errors import ConfigError, StateUnavailable
from aggregator.state.base import PendingArticle, PublishedRecord

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

    from aggregator.neardup.index import IndexParams

__all__ = [
    "RedisCrawlState",
    "check_prefix",
    "check_redis_uri",
    "connection_name",
    "redacted",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PREFIX = "aggregator"
SCAN_COUNT = 500

# KEYS[1] = published hash, KEYS[2..n] = claim keys; ARGV[1] = owner, ARGV[2] = lease (ms),
# ARGV[3..n] = article keys (same order as the claim keys). Returns the article keys held.
CLAIM_LUA = """
local held = {}
for i = 2, #KEYS do
  local key = ARGV[i + 1]
  if redis.call('HEXISTS', KEYS[1], key) == 0 then
    if redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2]) then
      held[#held + 1] = key
    end
  end
end
return held
"""

# KEYS = claim keys; ARGV[1] = owner. Deletes only the owner's claims.
RELEASE_LUA = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 0
"""

# KEYS[1] = published, KEYS[2] = pending, KEYS[3..n] = claim keys;
# ARGV[2k-1], ARGV[2k] = article key, published record (JSON) of the claim key KEYS[k+2].
MARK_LUA = """
for i = 3, #KEYS do
  local key = ARGV[2 * (i - 2) - 1]
  redis.call('HSET', KEYS[1], key, ARGV[2 * (i - 2)])
  redis.call('HDEL', KEYS[2], key)
  redis.call('DEL', KEYS[i])
end
return 0
"""

# KEYS[1] = pending; ARGV[1] = article key, ARGV[2] = JSON object without attempts/first_at,
# ARGV[3] = now. One more failure of a pending article keeps its first_at and counts attempts.
ADD_PENDING_LUA = """
local attempts, first = 1, ARGV[3]
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local ok, old = pcall(cjson.decode, current)
  if ok and type(old) == 'table' then
    if type(old.attempts) == 'number' and old.attempts >= 1 then
      attempts = math.floor(old.attempts) + 1
    end
    if type(old.first_at) == 'number' then first = string.format('%.6f', old.first_at) end
  end
end
local value = '{"attempts":' .. attempts .. ',"first_at":' .. first .. ',' .. string.sub(ARGV[2], 2)
redis.call('HSET', KEYS[1], ARGV[1], value)
return attempts
"""


SCRIPTS = {
    "claim": CLAIM_LUA,
    "release": RELEASE_LUA,
    "mark": MARK_LUA,
    "add_pending": ADD_PENDING_LUA,
}


def redacted(uri: str) -> str:
    """The URI without its password, for messages and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + netloc).geturl()


def check_redis_uri(uri: str, setting: str = "DEDUPE_URI") -> None:
    """Raise ConfigError unless `uri` is redis://[[user]:password@]host[:port][/db] (or
    rediss://)."""
    parts = urlsplit(uri)
    where = f"{setting} {redacted(uri)!r}"
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(f"{where}: expected redis:// or rediss://")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{where}: the port is not a number") from None
    if not parts.hostname:
        raise ConfigError(f"{where}: no host (redis://host:6379/0)")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"{where}: port {port} out of range")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ConfigError(f"{where}: the database is a number (redis://host:6379/0), not {db!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{where}: no query or fragment allowed")


def connection_name(name: str | None) -> str:
    """A Redis connection name (CLIENT SETNAME allows no spaces)."""
    return "".join(c if c.isalnum() or c in "-_.:/" else "_" for c in name or "aggregator")


def check_prefix(prefix: str) -> str:
    if not prefix or any(c.isspace() for c in prefix) or "*" in prefix:
        raise ConfigError(f"setting CLUSTER_PREFIX={prefix!r}: a non-empty name without spaces")
    return prefix


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _load_object(raw: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def published_record(key: str, raw: Any) -> PublishedRecord | None:
    data = _load_object(raw)
    if data is None or not isinstance(data.get("location"), str) or _number(data.get("at")) is None:
        return None
    return PublishedRecord(key=key, location=data["location"], at=float(data["at"]))


def pending_article(key: str, raw: Any) -> PendingArticle | None:
    data = _load_object(raw)
    if data is None:
        return None
    attempts, first, last = data.get("attempts"), data.get("first_at"), data.get("last_at")
    if not (
        isinstance(data.get("site"), str)
        and isinstance(data.get("payload"), dict)
        and isinstance(data.get("error"), str)
        and isinstance(attempts, int)
        and not isinstance(attempts, bool)
        and attempts >= 1
        and _number(first) is not None
        and _number(last) is not None
    ):
        return None
    return PendingArticle(
        key=key,
        site=data["site"],
        payload=data["payload"],
        error=data["error"],
        attempts=attempts,
        first_at=float(first),
        last_at=float(last),
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class _Keys:
    def __init__(self, prefix: str):
        self.prefix = prefix
        self.published = f"{prefix}:published"
        self.pending = f"{prefix}:pending"
        self.records = f"{prefix}:records"

    def claim(self, key: str) -> str:
        return f"{self.prefix}:claim:{key}"


class _Retrying:
    """Runs Redis calls, waiting out an outage: retries connection errors with a capped
    exponential backoff for up to `max_wait` seconds, logging once when Redis goes and once
    when it is back."""

    def __init__(self, uri: str, max_wait: float):
        self.uri = uri
        self.max_wait = max_wait
        self.down_since: float | None = None

    async def __call__(self, call: Callable[[], Awaitable[T]]) -> T:
        import redis.exceptions as rexc

        delay, started = 0.1, time.monotonic()
        while True:
            try:
                result = await call()
            except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    logger.error(
                        "Redis %s is unreachable (%s); retrying for up to %ss",
                        redacted(self.uri),
                        exc,
                        self.max_wait,
                    )
                if time.monotonic() - started >= self.max_wait:
                    raise StateUnavailable(
                        f"Redis {redacted(self.uri)} unreachable for {self.max_wait:.0f}s: {exc}"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if self.down_since is not None:
                logger.warning(
                    "Redis %s is back after %.1fs",
                    redacted(self.uri),
                    time.monotonic() - self.down_since,
                )
                self.down_since = None
            return result


class RedisPublishedKeys:
    def __init__(self, state: RedisCrawlState):
        self._state = state

    async def published_among(self, keys: Sequence[str]) -> set[str]:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return set()
        state = self._state
        found = await state.run(lambda: state.client.hmget(state.keys.published, keys))
        return {key for key, value in zip(keys, found, strict=True) if value is not None}

    async def claim(self, keys: Sequence[str], owner: str, lease: float) -> set[str]:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return set()
        state = self._state
        milliseconds = max(1, round(lease * 1000))
        redis_keys = [state.keys.published, *(state.keys.claim(k) for k in keys)]
        held = await state.run(
            lambda: state.script("claim", keys=redis_keys, args=[owner, milliseconds, *keys])
        )
        return {_text(k) for k in held}

    async def release(self, keys: Sequence[str], owner: str) -> None:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return
        state = self._state
        claims = [state.keys.claim(k) for k in keys]
        await state.run(lambda: state.script("release", keys=claims, args=[owner]))

    async def mark_published(self, entries: Sequence[tuple[str, str]]) -> None:
        if not entries:
            return
        state = self._state
        now = time.time()
        redis_keys = [state.keys.published, state.keys.pending]
        args: list[str] = []
        for key, location in entries:
            redis_keys.append(state.keys.claim(key))
            args += [key, _dumps({"location": location, "at": now})]
        await state.run(lambda: state.script("mark", keys=redis_keys, args=args))

    async def scan(self) -> AsyncIterator[PublishedRecord]:
        async for key, raw in self._state.hscan(self._state.keys.published):
            record = published_record(key, raw)
            if record is None:
                logger.warning("Skipping unreadable published record %r in Redis", key)
                continue
            yield record

    async def copy_in(self, records: Sequence[PublishedRecord]) -> int:
        state = self._state
        added = 0
        for start in range(0, len(records), SCAN_COUNT):
            chunk = records[start : start + SCAN_COUNT]

            async def write(chunk: Sequence[PublishedRecord] = chunk) -> list[Any]:
                pipe = state.client.pipeline(transaction=False)
                for record in chunk:
                    value = _dumps({"location": record.location, "at": record.at})
                    pipe.hsetnx(state.keys.published, record.key, value)
                return await pipe.execute()

            added += sum(1 for result in await state.run(write) if result)
        return added


class RedisPendingArticles:
    def __init__(self, state: RedisCrawlState):
        self._state = state

    async def add(self, site: str, key: str, payload: dict[str, Any], error: str) -> None:
        state = self._state
        now = time.time()
        body = _dumps({"site": site, "payload": payload, "error": error, "last_at": now})
        await state.run(
            lambda: state.script("add_pending", keys=[state.keys.pending], args=[key, body, now])
        )

    async def list(self, site: str) -> list[PendingArticle]:
        articles = [a async for a in self.scan() if a.site == site]
        return sorted(articles, key=lambda a: (a.first_at, a.key))

    async def clear(self, keys: Sequence[str]) -> None:
        keys = list(dict.fromkeys(keys))
        if keys:
            state = self._state
            await state.run(lambda: state.client.hdel(state.keys.pending, *keys))

    async def scan(self) -> AsyncIterator[PendingArticle]:
        async for key, raw in self._state.hscan(self._state.keys.pending):
            article = pending_article(key, raw)
            if article is None:
                logger.warning("Skipping unreadable pending article %r in Redis", key)
                continue
            yield article

    async def copy_in(self, articles: Sequence[PendingArticle]) -> int:
        state = self._state
        if not articles:
            return 0

        async def write() -> list[Any]:
            pipe = state.client.pipeline(transaction=False)
            for a in articles:
                value = {
                    "attempts": a.attempts,
                    "first_at": a.first_at,
                    "site": a.site,
                    "payload": a.payload,
                    "error": a.error,
                    "last_at": a.last_at,
                }
                pipe.hsetnx(state.keys.pending, a.key, _dumps(value))
            return await pipe.execute()

        return sum(1 for result in await state.run(write) if result)


class RedisRecords:
    def __init__(self, state: RedisCrawlState):
        self._state = state

    async def get(self, name: str) -> str | None:
        state = self._state
        value = await state.run(lambda: state.client.hget(state.keys.records, name))
        return None if value is None else _text(value)

    async def set(self, name: str, value: str | None) -> None:
        state = self._state
        if value is None:
            await state.run(lambda: state.client.hdel(state.keys.records, name))
        else:
            await state.run(lambda: state.client.hset(state.keys.records, name, value))

    async def setdefault(self, name: str, value: str) -> str:
        state = self._state

        async def call() -> list[Any]:
            pipe = state.client.pipeline(transaction=True)
            pipe.hsetnx(state.keys.records, name, value)
            pipe.hget(state.keys.records, name)
            return await pipe.execute()

        _, stored = await state.run(call)
        return _text(stored)

    async def scan(self, prefix: str = "") -> AsyncIterator[tuple[str, str]]:
        async for name, value in self._state.hscan(self._state.keys.records):
            if name.startswith(prefix):
                yield name, _text(value)


class _RetryingIndex:
    """The near-duplicate index with every call run like the state's own: a Redis outage is
    waited out (and logged once) instead of failing the articles checked meanwhile."""

    def __init__(self, index: Any, run: _Retrying):
        self._index = index
        self._run = run

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._index, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        async def retried(*args: Any, **kwargs: Any) -> Any:
            return await self._run(lambda: attribute(*args, **kwargs))

        return retried


class RedisCrawlState:
    """The crawl-state protocol (aggregator.state.base.CrawlState) over redis.asyncio."""

    def __init__(
        self,
        uri: str,
        prefix: str = DEFAULT_PREFIX,
        *,
        retry_max_wait: float = 300.0,
        timeout: float = 10.0,
        client_name: str | None = None,
    ):
        check_redis_uri(uri)
        self.uri = uri
        self.keys = _Keys(check_prefix(prefix))
        self.timeout = timeout
        self.client_name = client_name
        self.run = _Retrying(uri, retry_max_wait)
        self.published = RedisPublishedKeys(self)
        self.pending = RedisPendingArticles(self)
        self.records = RedisRecords(self)
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler, uri: str) -> RedisCrawlState:
        return cls.from_settings(crawler.settings, uri)

    @classmethod
    def check_uri(cls, uri: str) -> None:
        """Commands call this before anything starts (a malformed URI is exit status 2)."""
        check_redis_uri(uri)

    @classmethod
    def from_settings(cls, settings: BaseSettings, uri: str) -> RedisCrawlState:
        return cls(
            uri,
            prefix=settings.get("CLUSTER_PREFIX") or DEFAULT_PREFIX,
            retry_max_wait=settings.getfloat("CLUSTER_RETRY_MAX_WAIT", 300.0),
            timeout=settings.getfloat("CLUSTER_REDIS_TIMEOUT", 10.0),
            # a cluster worker's connections carry its name (CLIENT LIST)
            client_name=settings.get("CLUSTER_WORKER_ID"),
        )

    @property
    def client(self) -> aioredis.Redis:
        """The client of the running event loop (redis.asyncio connections belong to the loop
        they were made in; a store used from another loop, e.g. a test's, gets its own)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(
                self.uri,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                health_check_interval=30,
                client_name=connection_name(self.client_name) if self.client_name else None,
            )
            self._loop = loop
            self._scripts = {
                name: self._client.register_script(source) for name, source in SCRIPTS.items()
            }
        return self._client

    def near_duplicates(self, params: IndexParams) -> Any:
        """The near-duplicate index kept with this state: keys under `{CLUSTER_PREFIX}:nd`,
        through this state's client, so every worker of a cluster checks one index (see
        aggregator.neardup.index). Call it from the reactor's loop (the client belongs to it)."""
        from aggregator.neardup.index import RedisNearDupIndex

        return _RetryingIndex(
            RedisNearDupIndex(self.client, f"{self.keys.prefix}:nd", params), self.run
        )

    def script(self, name: str, keys: list[Any], args: list[Any]) -> Awaitable[Any]:
        """Run one of the Lua scripts (EVALSHA, loading it on NOSCRIPT)."""
        client = self.client
        return self._scripts[name](keys=keys, args=args, client=client)

    async def open(self) -> None:
        import redis.exceptions as rexc

        try:
            await self.client.ping()
        except (rexc.RedisError, OSError) as exc:
            raise StateUnavailable(
                f"cannot reach Redis at {redacted(self.uri)}: {type(exc).__name__}: {exc}"
            ) from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(RuntimeError):  # its loop is gone already
                await client.aclose()

    async def hscan(self, key: str) -> AsyncIterator[tuple[str, Any]]:
        cursor: int = 0
        while True:
            cursor, page = await self.run(
                lambda c=cursor: self.client.hscan(key, cursor=c, count=SCAN_COUNT)
            )
            for name, value in page.items():
                yield _text(name), value
            if not cursor:
                return
