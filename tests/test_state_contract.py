"""The crawl-state contract: every backend behind aggregator.state.base must pass these tests.
A backend joins by adding a factory to BACKENDS: `factory(tmp_path, fixture)` (`fixture` is
pytest's getfixturevalue, for backends that need a server) is an async context manager yielding
`connect()`, which opens a new connection to one fresh, empty store (a second call is a second
client on the same data, as a second crawl or worker would have)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from scrapy.settings import Settings

from aggregator.errors import ConfigError
from aggregator.settings import DEDUPE_STORES_BASE
from aggregator.state import check_state_settings, dedupe_uri, state_class
from aggregator.state.base import PendingArticle, PublishedRecord
from aggregator.state.sqlite import SqliteCrawlState


@contextlib.asynccontextmanager
async def _stores(build: Callable[[], Any]) -> AsyncIterator[Callable[[], Any]]:
    """connect() opens one more store from `build()`; every one opened is closed at the end."""
    opened: list[Any] = []

    async def connect() -> Any:
        state = build()
        await state.open()
        opened.append(state)
        return state

    try:
        yield connect
    finally:
        for state in opened:
            await state.close()


def sqlite_backend(tmp_path: Path, fixture: Any) -> Any:
    uri = f"sqlite:///{tmp_path}/state.sqlite3"
    return _stores(lambda: SqliteCrawlState(uri))


def redis_backend(tmp_path: Path, fixture: Any) -> Any:
    """The test Redis (shared: a fresh key prefix, only its keys deleted afterwards)."""
    from aggregator.state.redis import RedisCrawlState

    url, prefix = fixture("redis_url"), fixture("redis_prefix")
    return _stores(lambda: RedisCrawlState(url, prefix=prefix))


BACKENDS = {"sqlite": sqlite_backend, "redis": redis_backend}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, tmp_path):
    """run(test) runs `await test(connect)`, connect() giving a connection to one fresh store."""

    def run(test: Callable[[Callable[[], Any]], Any]) -> Any:
        async def main() -> Any:
            async with BACKENDS[request.param](tmp_path, request.getfixturevalue) as connect:
                return await test(connect)

        return asyncio.run(main())

    return run


# --- published keys and claims ----------------------------------------------------------------
def test_published_survives_a_reconnect(backend):
    async def test(connect):
        state = await connect()
        await state.published.mark_published([("qutoutiao-1", "output/qutoutiao-1.md")])
        await state.close()
        again = await connect()
        return await again.published.published_among(["qutoutiao-1", "qutoutiao-2"])

    assert backend(test) == {"qutoutiao-1"}


def test_published_among_takes_more_keys_than_one_statement_holds(backend):
    async def test(connect):
        state = await connect()
        await state.published.mark_published([(f"s-{i}", "x") for i in range(0, 1500, 3)])
        return await state.published.published_among([f"s-{i}" for i in range(1500)])

    assert len(backend(test)) == 500


def test_a_key_is_claimed_once_and_never_when_published(backend):
    async def test(connect):
        state = await connect()
        await state.published.mark_published([("p", "out/p.md")])
        first = await state.published.claim(["a", "b", "p"], "run-1", 60)
        again = await state.published.claim(["a", "c"], "run-1", 60)  # held, even by itself
        other = await state.published.claim(["a", "b", "c", "d"], "run-2", 60)
        return first, again, other

    first, again, other = backend(test)
    assert first == {"a", "b"}
    assert again == {"c"}
    assert other == {"d"}


def test_two_crawls_claiming_at_once_never_both_win(backend):
    async def test(connect):
        one, two = await connect(), await connect()
        keys = [f"k-{i}" for i in range(200)]
        results = await asyncio.gather(
            *(
                state.published.claim(keys[i::3], f"owner-{n}", 60)
                for n, state in enumerate((one, two) * 3)
                for i in range(3)
            )
        )
        return keys, results

    keys, results = backend(test)
    won = [key for claimed in results for key in claimed]
    assert sorted(won) == sorted(keys)  # every key won exactly once


def test_a_released_or_expired_claim_is_free_again(backend):
    async def test(connect):
        state = await connect()
        await state.published.claim(["a"], "run-1", 60)
        await state.published.claim(["b"], "run-1", 0.05)
        await state.published.release(["a"], "run-2")  # not run-2's claim: stays
        blocked = await state.published.claim(["a", "b"], "run-2", 60)
        await state.published.release(["a"], "run-1")
        time.sleep(0.1)
        freed = await state.published.claim(["a", "b"], "run-2", 60)
        return blocked, freed

    blocked, freed = backend(test)
    assert blocked == set()
    assert freed == {"a", "b"}


def test_marking_published_drops_the_claim_and_the_pending_entry(backend):
    async def test(connect):
        state = await connect()
        await state.published.claim(["k"], "run-1", 60)
        await state.pending.add("qutoutiao", "k", {"entry": {"id": "k"}}, "HTTP 500")
        await state.published.mark_published([("k", "out/k.md")])
        return (
            await state.pending.list("qutoutiao"),
            await state.published.claim(["k"], "run-2", 60),
            await state.published.published_among(["k"]),
        )

    pending, claim, published = backend(test)
    assert pending == []
    assert claim == set()
    assert published == {"k"}


# --- pending articles -------------------------------------------------------------------------
def test_pending_counts_attempts_keeps_the_latest_payload_and_is_per_site(backend):
    async def test(connect):
        state = await connect()
        await state.pending.add("qutoutiao", "q-7", {"entry": {"id": "7"}}, "HTTP 500")
        await state.pending.add("feed", "f-1", {"entry": {}}, "x")
        await state.pending.add("qutoutiao", "q-7", {"entry": {"id": "7", "v": 2}}, "HTTP 502")
        await state.pending.add("qutoutiao", "q-8", {"entry": {"id": "8"}}, "timeout")
        return await state.pending.list("qutoutiao"), await state.pending.list("feed")

    qutoutiao, feed = backend(test)
    assert [(a.key, a.payload, a.error, a.attempts) for a in qutoutiao] == [
        ("q-7", {"entry": {"id": "7", "v": 2}}, "HTTP 502", 2),
        ("q-8", {"entry": {"id": "8"}}, "timeout", 1),
    ]
    assert qutoutiao[0].first_at <= qutoutiao[0].last_at
    assert [a.key for a in feed] == ["f-1"]


def test_cleared_pending_articles_are_gone(backend):
    async def test(connect):
        state = await connect()
        for key in ("a", "b", "c"):
            await state.pending.add("s", key, {"n": key}, "e")
        await state.pending.clear(["a", "c"])
        return await state.pending.list("s")

    assert [a.key for a in backend(test)] == ["b"]


def test_copying_in_keeps_what_is_already_pending(backend):
    copied = [
        PendingArticle("a", "s", {"n": 2}, "theirs", 5, 1.0, 2.0),
        PendingArticle("b", "s", {"n": 3}, "theirs", 3, 10.5, 20.5),
    ]

    async def test(connect):
        state = await connect()
        await state.pending.add("s", "a", {"n": 1}, "mine")
        added = await state.pending.copy_in(copied)
        return added, {a.key: a for a in await state.pending.list("s")}

    added, listed = backend(test)
    assert added == 1
    assert (listed["a"].error, listed["a"].attempts) == ("mine", 1)
    assert listed["b"] == copied[1]


# --- records ----------------------------------------------------------------------------------
def test_two_clients_agree_on_one_setdefault_value(backend):
    async def test(connect):
        one, two = await connect(), await connect()
        values = await asyncio.gather(
            *(
                state.records.setdefault("s3/writer_id", f"w-{n}")
                for n, state in enumerate([one, two] * 4)
            )
        )
        return set(values), await one.records.get("s3/writer_id")

    values, stored = backend(test)
    assert len(values) == 1 and values == {stored}


def test_open_is_idempotent_and_a_closed_store_opens_again(backend):
    async def test(connect):
        state = await connect()
        await state.open()
        await state.records.set("n", "1")
        await state.close()
        await state.open()
        value = await state.records.get("n")
        await state.records.set("other", "2")
        scanned = sorted([kv async for kv in state.records.scan()])
        return value, scanned

    assert backend(test) == ("1", [("n", "1"), ("other", "2")])


def test_records_roundtrip_delete_and_setdefault(backend):
    async def test(connect):
        state = await connect()
        await state.records.set("feed:etag:https://x", '"abc"')
        got = await state.records.get("feed:etag:https://x")
        await state.records.set("feed:etag:https://x", None)
        gone = await state.records.get("feed:etag:https://x")
        first = await state.records.setdefault("s3/writer_id", "w1")
        second = await state.records.setdefault("s3/writer_id", "w2")
        return got, gone, first, second

    assert backend(test) == ('"abc"', None, "w1", "w1")


# --- copying between stores (state-copy) ------------------------------------------------------
def test_scan_and_copy_in_move_everything_once(backend):
    async def test(connect):
        source = await connect()
        await source.published.mark_published([("a", "out/a.md"), ("b", "out/b.md")])
        await source.pending.add("feed", "c", {"feed": "https://x/rss"}, "HTTP 503")
        await source.records.set("feed:etag:https://x/rss", "e1")
        published = [r async for r in source.published.scan()]
        pending = [a async for a in source.pending.scan()]
        records = [r async for r in source.records.scan("feed:")]
        return published, pending, records

    published, pending, records = backend(test)
    assert sorted(r.key for r in published) == ["a", "b"]
    assert all(isinstance(r, PublishedRecord) and r.at > 0 for r in published)
    assert [(a.key, a.site, a.payload) for a in pending] == [
        ("c", "feed", {"feed": "https://x/rss"})
    ]
    assert records == [("feed:etag:https://x/rss", "e1")]


def test_marking_published_again_moves_the_location_and_scan_reports_it(backend):
    async def test(connect):
        state = await connect()
        await state.published.mark_published([("a", "out/old.md")])
        await state.published.mark_published([("a", "out/new.md")])
        return [(r.key, r.location) async for r in state.published.scan()]

    assert backend(test) == [("a", "out/new.md")]


def test_the_sqlite_store_makes_missing_parent_directories(tmp_path):
    async def test():
        state = SqliteCrawlState(f"sqlite:///{tmp_path}/a/b/state.sqlite3")
        await state.open()
        try:
            await state.published.mark_published([("k", "out/k.md")])
            return await state.published.published_among(["k"])
        finally:
            await state.close()

    assert asyncio.run(test()) == {"k"}
    assert (tmp_path / "a" / "b" / "state.sqlite3").exists()


def test_copy_in_is_idempotent_and_keeps_times(backend):
    records = [PublishedRecord("a", "out/a.md", 1000.0), PublishedRecord("b", "out/b.md", 2000.0)]
    pending = [PendingArticle("c", "feed", {"n": 1}, "HTTP 503", 3, 10.0, 20.0)]

    async def test(connect):
        state = await connect()
        counts = (
            await state.published.copy_in(records),
            await state.published.copy_in(records),
            await state.pending.copy_in(pending),
            await state.pending.copy_in(pending),
        )
        scanned = sorted([(r.key, r.at) async for r in state.published.scan()])
        return counts, scanned, await state.pending.list("feed")

    counts, scanned, listed = backend(test)
    assert counts == (2, 0, 1, 0)
    assert scanned == [("a", 1000.0), ("b", 2000.0)]
    assert listed == pending


# --- choosing the backend ---------------------------------------------------------------------
def test_default_uri_lives_in_state_dir(tmp_path):
    settings = Settings({"STATE_DIR": str(tmp_path / "st"), "DEDUPE_URI": None})
    assert dedupe_uri(settings) == f"sqlite:///{tmp_path / 'st' / 'dedupe.sqlite3'}"


def test_in_cluster_mode_the_state_defaults_to_the_cluster_redis():
    cluster = Settings({"CLUSTER_URI": "redis://r:6379/1", "DEDUPE_URI": None})
    assert dedupe_uri(cluster) == "redis://r:6379/1"
    cluster.set("DEDUPE_URI", "sqlite:///elsewhere.sqlite3")
    assert dedupe_uri(cluster) == "sqlite:///elsewhere.sqlite3"


def test_redis_and_rediss_uris_get_the_redis_store():
    from aggregator.state.redis import RedisCrawlState

    settings = Settings({"DEDUPE_STORES_BASE": DEDUPE_STORES_BASE})
    assert state_class(settings, "redis://h:6379/0") is RedisCrawlState
    assert state_class(settings, "rediss://h:6380/0") is RedisCrawlState
    with pytest.raises(ConfigError, match="the port is not a number"):
        check_state_settings(Settings({**settings, "DEDUPE_URI": "redis://h:port/0"}))


def test_the_backend_is_chosen_by_scheme_and_users_extend_the_base(tmp_path):
    settings = Settings(
        {"DEDUPE_STORES_BASE": DEDUPE_STORES_BASE, "DEDUPE_STORES": {"mem": "builtins.dict"}}
    )
    assert state_class(settings, f"sqlite:///{tmp_path}/x") is SqliteCrawlState
    assert state_class(settings, "mem://x") is dict


def test_an_unknown_scheme_or_a_pathless_sqlite_uri_is_a_config_error():
    settings = Settings({"DEDUPE_STORES_BASE": DEDUPE_STORES_BASE})
    with pytest.raises(ConfigError, match="DEDUPE_URI 'nosuch://x': no store for scheme"):
        check_state_settings(Settings({**settings, "DEDUPE_URI": "nosuch://x"}))
    with pytest.raises(ConfigError, match="needs a file path"):
        check_state_settings(Settings({**settings, "DEDUPE_URI": "sqlite://"}))


# --- the SQLite store's own edges -------------------------------------------------------------
def sqlite_state(tmp_path: Path) -> SqliteCrawlState:
    return SqliteCrawlState(f"sqlite:///{tmp_path}/state.sqlite3")


def test_a_failed_batch_is_rolled_back_whole_and_the_store_goes_on(tmp_path):
    """A batch that fails half-way leaves nothing of itself (no post half-marked published) and
    the connection usable: the next call is not refused as "within a transaction"."""

    async def test():
        state = sqlite_state(tmp_path)
        await state.open()
        try:
            with pytest.raises(sqlite3.IntegrityError):
                await state.published.mark_published([("a", "out/a.md"), ("b", None)])
            await state.published.mark_published([("c", "out/c.md")])
            return await state.published.published_among(["a", "b", "c"])
        finally:
            await state.close()

    assert asyncio.run(test()) == {"c"}


def test_a_closed_store_leaves_a_complete_file_and_closing_twice_is_harmless(tmp_path):
    """The engine closes the store whether or not anything opened it; a closed store has
    checkpointed its write-ahead log into the file another tool may copy."""

    async def test():
        never_opened = SqliteCrawlState(f"sqlite:///{tmp_path}/unused.sqlite3")
        await never_opened.close()
        state = sqlite_state(tmp_path)
        await state.open()
        await state.published.mark_published([("k", "out/k.md")])
        await state.close()
        await state.close()

    asyncio.run(test())
    assert not (tmp_path / "state.sqlite3-wal").exists()
    with contextlib.closing(sqlite3.connect(tmp_path / "state.sqlite3")) as conn:
        assert conn.execute("SELECT key FROM published").fetchall() == [("k",)]


def test_the_sqlite_store_serves_other_threads(tmp_path):
    """Commands and tests use the store from threads other than the one that opened it."""

    async def test():
        state = sqlite_state(tmp_path)
        await state.open()
        try:
            await state.published.mark_published([("k", "out/k.md")])
            with ThreadPoolExecutor(1) as pool:
                return pool.submit(state.published.published_among_now, ["k", "x"]).result()
        finally:
            await state.close()

    assert asyncio.run(test()) == {"k"}


def test_a_sqlite_uri_with_a_host_is_refused():
    for uri in ("sqlite://host/state.sqlite3", "file:///state.sqlite3"):
        with pytest.raises(ConfigError, match="needs a file path"):
            SqliteCrawlState.check_uri(uri)


def test_the_near_duplicate_index_lives_in_the_state_file(tmp_path):
    """`near_duplicates` hands out an index over the state's own connection and the given
    parameters: a repost is found, and the index's tables are in the state's file."""
    from aggregator.neardup.fingerprint import Fingerprinter
    from aggregator.neardup.index import IndexParams

    fingerprinter = Fingerprinter()
    params = IndexParams(128, 10, 3, 0.55, fingerprint=fingerprinter.spec)
    text = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(600))

    async def test():
        state = sqlite_state(tmp_path)
        await state.open()
        try:
            index = state.near_duplicates(params)
            await index.open()
            first = await index.check_and_add("a", fingerprinter.signature(f"<p>{text}</p>"), 1e9)
            copy = fingerprinter.signature(f"<p>{text}</p><p>广告</p>")
            return index.params, first, await index.check_and_add("b", copy, 1e9 + 60)
        finally:
            await state.close()

    used, first, match = asyncio.run(test())
    assert used == params and first is None and match is not None and match.key == "a"
    with contextlib.closing(sqlite3.connect(tmp_path / "state.sqlite3")) as conn:
        assert conn.execute("SELECT key FROM nd_article ORDER BY key").fetchall() == [("a",)]
