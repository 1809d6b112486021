"""`scrapy state-copy`: SQLite → Redis → SQLite keeps every published key, pending article and
record; a second copy adds nothing; bad URIs and unreachable stores exit 2 and 1."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import crawlproc
import pytest
from conftest import ROOT
from scrapy import Spider
from scrapy.crawler import Crawler
from scrapy.utils.project import get_project_settings

from aggregator.errors import ConfigError, StateUnavailable
from aggregator.state.copy import build_state, copy_state
from aggregator.state.redis import RedisCrawlState
from aggregator.state.sqlite import SqliteCrawlState


def state_copy(*args: str, **settings: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "scrapy", "state-copy", *args]
    for name, value in settings.items():
        cmd += ["-s", f"{name}={value}"]
    return crawlproc.run(cmd, cwd=ROOT, env=dict(os.environ), timeout=60)


async def dump(state) -> dict:
    await state.open()
    try:
        return {
            "published": sorted([(r.key, r.location, r.at) async for r in state.published.scan()]),
            "pending": sorted(
                [
                    (a.key, a.site, str(a.payload), a.error, a.attempts, a.first_at, a.last_at)
                    async for a in state.pending.scan()
                ]
            ),
            "records": sorted([kv async for kv in state.records.scan()]),
        }
    finally:
        await state.close()


async def fill(state) -> None:
    """What crawls on one machine leave in its SQLite file."""
    await state.open()
    try:
        await state.published.mark_published(
            [(f"qutoutiao-{n}", f"output/qutoutiao-{n}.md") for n in range(1203)]  # > 2 batches
        )
        entry = {"entry": {"id": 9001, "title": "标题"}}
        await state.pending.add("qutoutiao", "qutoutiao-9001", entry, "x")
        await state.pending.add("qutoutiao", "qutoutiao-9001", entry, "y")
        await state.pending.add("feed", "feed-a", {"entry": {"link": "http://x/a"}}, "HTTP 503")
        await state.records.set("feed:etag:http://x/feed", '"v1"')
        await state.records.set("s3:writer", "writer-123")
    finally:
        await state.close()


async def copy(source, destination) -> dict[str, int]:
    await source.open()
    await destination.open()
    try:
        return await copy_state(source, destination)
    finally:
        await source.close()
        await destination.close()


def test_sqlite_to_redis_to_sqlite(tmp_path, redis_url, redis_prefix):
    sqlite_uri = f"sqlite:///{tmp_path / 'dedupe.sqlite3'}"
    back_uri = f"sqlite:///{tmp_path / 'back.sqlite3'}"
    asyncio.run(fill(SqliteCrawlState(sqlite_uri)))

    first = state_copy(sqlite_uri, redis_url, CLUSTER_PREFIX=redis_prefix)
    assert first.returncode == 0, first.stderr
    assert "Copied 1203 published keys (of 1203), 2 pending articles and 2 records" in first.stdout
    redis_state = RedisCrawlState(redis_url, prefix=redis_prefix)
    again = asyncio.run(copy(SqliteCrawlState(sqlite_uri), redis_state))
    assert again == {"published": 0, "pending": 0, "records": 0, "seen": 1203}
    back = asyncio.run(copy(redis_state, SqliteCrawlState(back_uri)))
    assert back == {"published": 1203, "pending": 2, "records": 2, "seen": 1203}

    original = asyncio.run(dump(SqliteCrawlState(sqlite_uri)))
    in_redis = asyncio.run(dump(RedisCrawlState(redis_url, prefix=redis_prefix)))
    round_trip = asyncio.run(dump(SqliteCrawlState(back_uri)))
    assert len(original["published"]) == 1203
    assert sorted(p[4] for p in original["pending"]) == [1, 2]
    assert original == in_redis == round_trip


def test_a_bad_uri_exits_2():
    bad = state_copy("sqlite:///x.sqlite3", "redis://host:port/0")
    assert bad.returncode == 2, bad.stderr
    assert "DST_URI 'redis://host:port/0': the port is not a number" in bad.stderr


def test_unknown_scheme_and_unreachable_store():
    from redisfixtures import free_port

    crawler = Crawler(Spider, get_project_settings())
    with pytest.raises(ConfigError, match="SRC_URI 'mysql://x/y': no store for scheme 'mysql'"):
        build_state(crawler, "mysql://x/y", "SRC_URI")
    down = build_state(crawler, f"redis://:pw@127.0.0.1:{free_port()}/0", "DST_URI")
    with pytest.raises(StateUnavailable, match="cannot reach Redis") as exc:
        asyncio.run(down.open())
    assert ":pw@" not in str(exc.value)
