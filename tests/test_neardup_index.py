"""The near-duplicate index stores, for real: in a SQLite crawl state's file (tmp_path), and on
the Redis server at 127.0.0.1:6379 (each test under its own key prefix, removed with SCAN + DEL
of that prefix). Atomicity: two workers adding copies of one story at the same moment, exactly
one is new."""

from __future__ import annotations

import asyncio
import multiprocessing
import struct
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from aggregator.neardup.fingerprint import Fingerprinter
from aggregator.neardup.index import (
    IndexParams,
    RedisNearDupIndex,
    SqliteNearDupIndex,
    band_buckets,
)
from aggregator.state.sqlite import SqliteCrawlState

redis_asyncio = pytest.importorskip("redis.asyncio")

FINGERPRINTER = Fingerprinter()
PARAMS = IndexParams(128, 10, 3, 0.55, fingerprint=FINGERPRINTER.spec)
DAY = 86400.0
ROUNDS = 40


def story(number: int) -> tuple[np.ndarray, np.ndarray]:
    """Signatures of a story and of a repost of it with an ad line (each story different)."""
    rng = np.random.default_rng(number)
    text = "".join(chr(0x4E00 + int(c)) for c in rng.integers(0, 20000, 600))
    return (
        FINGERPRINTER.signature(f"<p>{text}</p>"),
        FINGERPRINTER.signature(f"<p>{text}</p><p>下载趣头条APP，看新闻领红包！</p>"),
    )


async def sqlite_index(
    path: Path, params: IndexParams = PARAMS, **options: int
) -> SqliteNearDupIndex:
    state = SqliteCrawlState(f"sqlite:///{path}")
    await state.open()
    index = state.near_duplicates(params, **options)
    await index.open()
    return index


@pytest.fixture
def redis_prefix():
    prefix = f"aggregator-test:neardup:{uuid.uuid4().hex}"
    yield prefix

    async def clean():
        client = redis_asyncio.Redis(host="127.0.0.1", port=6379)
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()

    asyncio.run(clean())


async def redis_index(prefix: str, params: IndexParams = PARAMS) -> RedisNearDupIndex:
    index = RedisNearDupIndex(redis_asyncio.Redis(host="127.0.0.1", port=6379), prefix, params)
    await index.open()
    return index


def test_buckets_are_stable_47_bit_integers_one_per_band():
    signature = story(0)[0]
    buckets = band_buckets(signature, PARAMS.bands, PARAMS.rows)
    assert len(set(buckets)) == PARAMS.bands
    assert all(0 <= bucket < 2**47 for bucket in buckets)  # six bytes in SQLite
    assert band_buckets(signature.copy(), PARAMS.bands, PARAMS.rows) == buckets
    # a band is its number and its own values: change one value, one bucket changes
    changed = signature.copy()
    changed[PARAMS.rows] ^= 1  # the second band's first value
    after = band_buckets(changed, PARAMS.bands, PARAMS.rows)
    assert [a == b for a, b in zip(after, buckets, strict=True)] == [
        True,
        False,
        *[True] * (PARAMS.bands - 2),
    ]


# --- behaviour, both stores ------------------------------------------------------------------
async def _behaviour(index) -> None:
    now = time.time()
    first, copy = story(1)
    assert await index.check_and_add("qutoutiao-1", first, now) is None
    match = await index.check_and_add("feed-2", copy, now + 60)
    assert match is not None and match.key == "qutoutiao-1" and match.similarity >= 0.55
    assert match.published_at == pytest.approx(now)
    # re-checking a key never matches itself
    assert await index.check_and_add("qutoutiao-1", first, now + 120) is None
    # another story is new
    assert await index.check_and_add("feed-3", story(2)[0], now + 60) is None
    # outside the window the story is forgotten: a copy 31 days later is new
    assert await index.check_and_add("feed-4", copy, now + 31 * DAY) is None


def test_sqlite_behaviour(tmp_path):
    async def run():
        await _behaviour(await sqlite_index(tmp_path / "state.sqlite3"))

    asyncio.run(run())


def test_redis_behaviour(redis_prefix):
    async def run():
        index = await redis_index(redis_prefix)
        try:
            await _behaviour(index)
        finally:
            await index.redis.aclose()

    asyncio.run(run())


async def _claims(index) -> None:
    now = time.time()
    first, copy = story(3)
    assert await index.check_and_add("a", first, now, claim=True) is None
    # a claim counts while it is fresh
    assert (await index.check_and_add("b", copy, now + 10)).key == "a"
    await index.release("a")
    assert await index.check_and_add("c", copy, now + 20, claim=True) is None
    await index.confirm("c")
    # confirmed: counts past the claim lease
    assert (await index.check_and_add("d", first, now + 2 * 3600)).key == "c"
    # an unconfirmed claim (a dead writer) stops counting after the lease
    other, other_copy = story(4)
    assert await index.check_and_add("e", other, now, claim=True) is None
    assert await index.check_and_add("f", other_copy, now + 3601) is None


def test_sqlite_claims(tmp_path):
    async def run():
        await _claims(await sqlite_index(tmp_path / "state.sqlite3"))

    asyncio.run(run())


def test_redis_claims(redis_prefix):
    async def run():
        index = await redis_index(redis_prefix)
        try:
            await _claims(index)
        finally:
            await index.redis.aclose()

    asyncio.run(run())


def test_sqlite_index_lives_in_the_state_file_survives_reopening_and_expires(tmp_path):
    path = tmp_path / "state.sqlite3"
    now = time.time()

    async def run():
        index = await sqlite_index(path)
        for number in range(5):
            await index.check_and_add(f"old-{number}", story(10 + number)[0], now - 40 * DAY)
        await index.check_and_add("new", story(20)[0], now)
        assert index.merge_now() == 6  # every band entry in nd_band
        index = await sqlite_index(path)
        assert index.count() == 6
        assert (await index.check_and_add("copy", story(20)[1], now + 5)).key == "new"
        assert await index.expire(now) == 5
        assert index.count() == 1
        bands = index._db.query("SELECT count(*) FROM nd_band")[0][0]
        assert bands == PARAMS.bands  # the expired articles' band entries went with them
        with pytest.raises(ValueError, match="built with"):
            await sqlite_index(path, IndexParams(128, 8, 4, 0.55, fingerprint=PARAMS.fingerprint))

    asyncio.run(run())
    assert [p.name for p in tmp_path.glob("*.sqlite3")] == ["state.sqlite3"]


def _band_entries(index: SqliteNearDupIndex) -> tuple[int, int]:
    """(entries in nd_band, the id up to which articles are in it)."""
    return (
        index._db.query("SELECT count(*) FROM nd_band")[0][0],
        index._db.query("SELECT id FROM nd_banded")[0][0],
    )


def test_sqlite_new_articles_wait_in_the_tail_and_are_merged_in_batches(tmp_path):
    path = tmp_path / "state.sqlite3"
    now = time.time()

    async def run():
        index = await sqlite_index(path, merge_every=3)
        for number in range(2):
            assert await index.check_and_add(f"s-{number}", story(40 + number)[0], now) is None
        assert _band_entries(index) == (0, 0)  # only the article rows were written
        assert (await index.check_and_add("c-0", story(40)[1], now)).key == "s-0"
        # another connection (as another process) rebuilds the tail from the rows
        other = await sqlite_index(path, merge_every=3)
        assert (await other.check_and_add("c-1", story(41)[1], now)).key == "s-1"
        # the third new article fills the tail: all three go into nd_band at once
        assert await other.check_and_add("s-2", story(42)[0], now) is None
        assert _band_entries(index) == (3 * PARAMS.bands, 3)
        # the first connection sees the merge: its tail is dropped, nd_band answers
        for number in range(3):
            match = await index.check_and_add(f"d-{number}", story(40 + number)[1], now)
            assert match.key == f"s-{number}"
        assert index._tail.articles == 0
        # and appends after it go to the tail of both
        assert await index.check_and_add("s-3", story(43)[0], now) is None
        assert (await other.check_and_add("c-3", story(43)[1], now)).key == "s-3"
        assert _band_entries(other) == (3 * PARAMS.bands, 3)

    asyncio.run(run())


def test_sqlite_state_cuts_its_wal_back_after_a_merge(tmp_path):
    """A merge writes a WAL as large as the band pages it touches; the state's connection
    has SQLite cut the file back once it is checkpointed."""

    async def run():
        index = await sqlite_index(tmp_path / "state.sqlite3")
        assert index._db.query("PRAGMA journal_size_limit") == [(64 * 2**20,)]

    asyncio.run(run())


def test_sqlite_ids_are_never_reused_so_other_processes_see_every_article(tmp_path):
    """A process looks for rows after the last id it saw: if a released claim's or an
    expired article's id went to the next article, it would miss that article."""
    path = tmp_path / "state.sqlite3"
    now = time.time()

    async def run():
        one, two = await sqlite_index(path), await sqlite_index(path)
        assert await one.check_and_add("claim", story(50)[0], now, claim=True) is None
        assert (await two.check_and_add("seen", story(50)[1], now)).key == "claim"
        await one.release("claim")  # the newest row
        # a process that never saw the claim adds the next article
        assert await (await sqlite_index(path)).check_and_add("next", story(51)[0], now) is None
        assert (await two.check_and_add("copy", story(51)[1], now)).key == "next"
        # everything out of the window: the next id still follows the last one given
        later = now + 31 * DAY
        assert await one.expire(later) == 2
        assert one.count() == 0
        fresh = await sqlite_index(path)
        assert await fresh.check_and_add("fresh", story(52)[0], later) is None
        assert (await two.check_and_add("copy-2", story(52)[1], later)).key == "fresh"
        # a released claim never matches, in the tail or merged
        assert await one.check_and_add("gone", story(53)[0], later, claim=True) is None
        await one.release("gone")
        assert await two.check_and_add("copy-3", story(53)[1], later) is None
        assert one.merge_now() == 2  # fresh, copy-3: not the released claim
        assert _band_entries(one) == (2 * PARAMS.bands, 5)

    asyncio.run(run())


def test_sqlite_reads_an_index_written_before_the_tail(tmp_path):
    """A file from before the tail has no nd_banded: every article it holds is in nd_band."""
    path = tmp_path / "state.sqlite3"
    now = time.time()

    async def run():
        index = await sqlite_index(path)
        for number in range(3):
            await index.check_and_add(f"s-{number}", story(60 + number)[0], now)
        index.merge_now()
        index._db.query("DROP TABLE nd_banded")
        reopened = await sqlite_index(path)
        assert _band_entries(reopened) == (3 * PARAMS.bands, 3)
        assert (await reopened.check_and_add("c", story(61)[1], now)).key == "s-1"
        assert reopened._tail.articles == 0

    asyncio.run(run())


def test_redis_forgets_by_itself(redis_prefix):
    async def run():
        index = await redis_index(redis_prefix)
        client = index.redis
        try:
            now = time.time()
            first, _ = story(30)
            await index.check_and_add("k", first, now)
            ttl = await client.ttl(f"{redis_prefix}:r:k")
            assert 29 * DAY < ttl <= 30 * DAY + 2
            buckets = band_buckets(first, PARAMS.bands, PARAMS.rows)
            band = f"{redis_prefix}:b:{buckets[0]:x}"
            assert 29 * DAY < await client.ttl(band) <= 30 * DAY + 2
            # nothing pickled: the band set holds the plain key, the record is the time, the
            # state, the raw signature bytes and the buckets
            assert await client.zrange(band, 0, -1) == [b"k"]
            assert await client.get(f"{redis_prefix}:r:k") == (
                struct.pack("<d", now)
                + b"1"
                + first.tobytes()
                + ",".join(f"{bucket:x}" for bucket in buckets).encode()
            )
            # an article published more than the window ago has no key left at all
            await index.check_and_add("gone", story(31)[0], now - 31 * DAY)
            assert not await client.exists(f"{redis_prefix}:r:gone")
            # confirming a claim whose record is gone does not make one
            await index.confirm("gone")
            assert not await client.exists(f"{redis_prefix}:r:gone")
            with pytest.raises(ValueError, match="built with"):
                await redis_index(redis_prefix, IndexParams(128, 8, 4, 0.55))
        finally:
            await client.aclose()

    asyncio.run(run())


def test_redis_reads_and_replaces_records_written_before_the_packed_record(redis_prefix):
    """Indexes written before kept each article in a hash (at, state, sig, buckets): they are
    still found, and re-adding or releasing the key removes them."""

    async def run():
        index = await redis_index(redis_prefix)
        client = index.redis
        try:
            now = time.time()
            first, copy = story(32)
            buckets = [f"{b:x}" for b in band_buckets(first, PARAMS.bands, PARAMS.rows)]
            old = f"{redis_prefix}:a:old"
            await client.hset(
                old,
                mapping={"at": repr(now), "state": "1", "sig": first.tobytes()}
                | {"buckets": ",".join(buckets)},
            )
            for bucket in buckets:
                await client.zadd(f"{redis_prefix}:b:{bucket}", {"old": now})
            assert (await index.check_and_add("copy", copy, now + 5)).key == "old"
            # the same key added again (its copy gone): the hash makes way for a record
            assert await index.check_and_add("old", story(33)[0], now + 10) is None
            assert not await client.exists(old)
            assert await client.exists(f"{redis_prefix}:r:old")
            assert await client.zrange(f"{redis_prefix}:b:{buckets[0]}", 0, -1) == []
        finally:
            await client.aclose()

    asyncio.run(run())


# --- atomicity: two workers, one story, exactly one new -------------------------------------
def _sqlite_worker(path: str, name: str, barrier, results, merge_every: int) -> None:
    index = asyncio.run(sqlite_index(Path(path), merge_every=merge_every))
    now = time.time()
    mine = []
    for number in range(ROUNDS):
        first, copy = story(100 + number)
        barrier.wait()
        match = index.check_and_add_now(f"{name}-{number}", first if name == "a" else copy, now)
        mine.append(match is None)
    results[name] = mine


@pytest.mark.parametrize("merge_every", [20000, 3], ids=["tail", "merging"])
def test_sqlite_check_and_add_is_atomic_across_processes(tmp_path: Path, merge_every: int):
    path = str(tmp_path / "state.sqlite3")
    asyncio.run(sqlite_index(Path(path)))  # create the schema before the race
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    with context.Manager() as manager:
        results = manager.dict()
        workers = [
            context.Process(target=_sqlite_worker, args=(path, name, barrier, results, merge_every))
            for name in ("a", "b")
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        a, b = results["a"], results["b"]
    assert [x + y for x, y in zip(a, b, strict=True)] == [1] * ROUNDS


def test_redis_check_and_add_is_atomic(redis_prefix):
    async def run():
        one, two = await redis_index(redis_prefix), await redis_index(redis_prefix)
        try:
            now = time.time()
            winners = []
            for number in range(ROUNDS):
                first, copy = story(200 + number)
                results = await asyncio.gather(
                    one.check_and_add(f"a-{number}", first, now),
                    two.check_and_add(f"b-{number}", copy, now),
                )
                winners.append(sum(result is None for result in results))
            assert winners == [1] * ROUNDS
        finally:
            await one.redis.aclose()
            await two.redis.aclose()

    asyncio.run(run())
