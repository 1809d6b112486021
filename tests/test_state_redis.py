"""What only the Redis crawl-state store has (the protocol itself is tested for every backend
in tests/test_state_contract.py): URIs (malformed, password, TLS), an outage waited out,
values planted in Redis refused, every key under the prefix."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest
import redis

from aggregator.errors import ConfigError, StateUnavailable
from aggregator.state.redis import RedisCrawlState, check_redis_uri, redacted


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def redis_state(redis_url, redis_prefix) -> Callable[[], RedisCrawlState]:
    return lambda: RedisCrawlState(redis_url, prefix=redis_prefix)


async def opened(factory):
    state = factory()
    await state.open()
    return state


@pytest.mark.parametrize(
    "uri",
    [
        "redis://",
        "redis://host:notaport/0",
        "redis://host:6379/zero",
        "http://host:6379/0",
        "redis://host:6379/0?db=1",
    ],
)
def test_malformed_uri_is_a_config_error(uri):
    with pytest.raises(ConfigError, match="DEDUPE_URI"):
        RedisCrawlState(uri)


def test_unreachable_redis_is_a_clear_error_without_the_password(redis_prefix):
    from redisfixtures import free_port

    state = RedisCrawlState(f"redis://:s3cret@127.0.0.1:{free_port()}/0", prefix=redis_prefix)
    with pytest.raises(StateUnavailable, match="cannot reach Redis at redis://:\\*\\*\\*@") as exc:
        run(state.open())
    assert "s3cret" not in str(exc.value)


def test_password_from_the_uri(tmp_path):
    from redisfixtures import PrivateRedis

    server = PrivateRedis(tmp_path / "redis", password="pa55-word").start()
    try:
        good = RedisCrawlState(server.url, prefix="t")
        run(good.open())
        wrong = RedisCrawlState(server.url.replace("pa55-word", "wrong"), prefix="t")
        with pytest.raises(StateUnavailable, match="redis://:\\*\\*\\*@") as exc:
            run(wrong.open())
        assert "wrong" not in str(exc.value)
    finally:
        server.stop()


def test_untrusted_values_are_skipped_not_trusted(redis_url, redis_prefix, redis_state):
    raw = redis.Redis.from_url(redis_url)
    raw.hset(f"{redis_prefix}:published", "bad", b"\x80\x04pickle")
    raw.hset(f"{redis_prefix}:published", "good", json.dumps({"location": "l", "at": 1}))
    raw.hset(f"{redis_prefix}:pending", "p1", json.dumps({"site": "s", "payload": "not a dict"}))
    raw.hset(f"{redis_prefix}:pending", "p2", "[1, 2]")
    raw.close()

    async def body():
        state = await opened(redis_state)
        assert [r.key async for r in state.published.scan()] == ["good"]
        # still published, whatever its record says: nobody writes it again
        assert await state.published.published_among(["bad"]) == {"bad"}
        assert await state.pending.list("s") == []
        # one more failure of a corrupt pending entry starts its count afresh
        await state.pending.add("s", "p1", {"ok": True}, "again")
        assert [(a.key, a.attempts) for a in await state.pending.list("s")] == [("p1", 1)]
        await state.close()

    run(body())


def test_keys_stay_under_the_prefix(redis_url, redis_prefix, redis_state):
    async def body():
        state = await opened(redis_state)
        await state.published.claim(["a"], "w", 30)
        await state.published.mark_published([("b", "l")])
        await state.pending.add("s", "c", {}, "e")
        await state.records.set("r", "v")
        await state.close()

    run(body())
    raw = redis.Redis.from_url(redis_url)
    keys = sorted(k.decode() for k in raw.scan_iter(match=f"{redis_prefix}:*"))
    raw.close()
    assert keys == [f"{redis_prefix}:{k}" for k in ("claim:a", "pending", "published", "records")]


def test_a_redis_outage_is_waited_out(tmp_path):
    from redisfixtures import PrivateRedis

    server = PrivateRedis(tmp_path / "redis").start()
    try:

        async def body():
            state = RedisCrawlState(server.url, prefix="t", retry_max_wait=20)
            await state.open()
            await state.published.mark_published([("before", "l")])
            server.stop()
            loop = asyncio.get_running_loop()
            restart = loop.run_in_executor(None, lambda: (time.sleep(1.0), server.start()))
            started = time.monotonic()
            await state.published.mark_published([("during", "l")])
            assert time.monotonic() - started >= 0.9
            await restart
            found = await state.published.published_among(["before", "during"])
            assert found == {"before", "during"}
            await state.close()

        run(body())
    finally:
        server.stop()


def test_an_outage_longer_than_the_wait_raises(tmp_path):
    from redisfixtures import PrivateRedis

    server = PrivateRedis(tmp_path / "redis").start()

    async def body():
        state = RedisCrawlState(server.url, prefix="t", retry_max_wait=0.5)
        await state.open()
        server.stop()
        with pytest.raises(StateUnavailable, match="unreachable"):
            await state.records.get("x")
        await state.close()

    try:
        run(body())
    finally:
        server.stop()


def test_tls_and_users_come_from_the_uri_and_the_password_is_never_shown():
    uri = "rediss://agg:s3cret@redis.internal:6380/2"
    check_redis_uri(uri)
    assert redacted(uri) == "rediss://agg:***@redis.internal:6380/2"
    assert redacted("redis://:s3cret@h/0") == "redis://:***@h/0"

    async def body():
        client = RedisCrawlState(uri, prefix="t").client
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        assert "SSL" in pool.connection_class.__name__
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis.internal", 6380, 2)
        assert (kwargs["username"], kwargs["password"]) == ("agg", "s3cret")
        await client.aclose()

    run(body())
