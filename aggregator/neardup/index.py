"""The near-duplicate index: MinHash signatures of recently published articles, behind one small
async protocol. The index lives with the crawl state (see aggregator.state.base): a state that
can keep one has `near_duplicates(params)`, which returns the index in its own storage, so one
`DEDUPE_URI` says where everything a crawl remembers is kept.

- `SqliteNearDupIndex`: `nd_*` tables in the SQLite state's own file, through the state's
  connection and lock (`SqliteCrawlState.near_duplicates`).
- `RedisNearDupIndex`: keys under a prefix on a `redis.asyncio` client; a Redis crawl state
  provides it with its own client and prefix (`RedisCrawlState.near_duplicates(params)`
  returning `RedisNearDupIndex(self.client, f"{self.prefix}:nd", params)`).

The one operation that matters is `check_and_add`: find an article published within the window
whose estimated similarity reaches the threshold; if there is none, remember this one. It is
atomic per store (SQLite: one `BEGIN IMMEDIATE` transaction; Redis: one Lua script), so when two
workers crawl two copies of one story at once exactly one of them is told "new", the other gets
the first one's key: the first copy wins, whichever process it is in.

LSH: each signature is cut into `bands` bands of `rows` hash values; an article is a candidate
when one band equals one of a stored article's. Candidates are then verified on the stored
signatures: the share of equal hash values is the estimated Jaccard similarity, logged with the
match. Bands cost writes (one index entry each per article), the signature's length costs only
CPU, so the two are chosen apart: a 128-value signature for the verification, 10 bands of 3 for
the lookup (README "Near-duplicates" has the measurements).

Claims and ghosts: the pipeline adds an article *before* it is written (that is what makes the
check-and-add atomic) as a claim, and confirms it once the post is written or releases it when
the write fails. A claim that is neither confirmed nor released (the process died in between)
stops counting after `claim_ttl` seconds, so a crash cannot suppress the next copy for long.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from aggregator.state.sqlite import _Db

__all__ = [
    "IndexParams",
    "NearDupIndex",
    "NearDuplicate",
    "RedisNearDupIndex",
    "SqliteNearDupIndex",
    "band_buckets",
    "similarity",
]

DAY = 86400.0
CLAIMED, PUBLISHED, RELEASED = 0, 1, 2


@dataclass(frozen=True)
class NearDuplicate:
    """The published (or claimed) article that a new one duplicates."""

    key: str
    published_at: float
    similarity: float  # estimated Jaccard similarity of the two texts


@dataclass(frozen=True)
class IndexParams:
    """What an index is built with. `fingerprint` names how signatures are made (seed, shingle
    length): signatures made another way are not comparable, so an index refuses them."""

    hashes: int
    bands: int
    rows: int
    threshold: float
    window: float = 30 * DAY  # seconds an article is remembered
    claim_ttl: float = 3600.0  # seconds an unconfirmed claim counts
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.hashes:
            raise ValueError(
                f"{self.bands} bands of {self.rows} rows need at most hashes "
                f"({self.hashes}) hash values"
            )
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold {self.threshold} is not in (0, 1]")

    def stored(self) -> dict[str, str]:
        """What the index records about itself and checks on every open."""
        return {
            "hashes": str(self.hashes),
            "bands": str(self.bands),
            "rows": str(self.rows),
            "fingerprint": self.fingerprint,
        }


# Buckets are 47-bit: SQLite stores them in 6 bytes (a 63-bit value takes 8). With a million
# articles of 10 bands in the index, a chance collision of two unrelated bands happens about
# once in 10^7 lookups and only costs one signature comparison. Each is the BLAKE2b digest of
# the band's number and its hash values (little-endian): the same on every machine, and ten of
# them cost less than the numpy calls of a vectorised mix would for one signature.
_BUCKET_BITS = 47


def _bucket(band: int, values: bytes) -> int:
    digest = hashlib.blake2b(band.to_bytes(2, "little") + values, digest_size=8).digest()
    return int.from_bytes(digest, "little") >> (64 - _BUCKET_BITS)


def band_buckets(signature: np.ndarray, bands: int, rows: int) -> list[int]:
    """The bucket ids of one signature, one per band."""
    raw = np.ascontiguousarray(signature, dtype="<u4").tobytes()
    width = 4 * rows
    return [_bucket(band, raw[band * width : (band + 1) * width]) for band in range(bands)]


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity: the share of equal hash values."""
    return float(np.count_nonzero(a == b)) / float(a.size)


class NearDupIndex(Protocol):
    """What the pipeline needs from a store. Times are Unix seconds; `published_at` is when the
    article is published here (the crawl), which is also the "now" the window is counted back
    from. Confirm and release take the keys of claims made through the same object."""

    params: IndexParams

    async def open(self) -> None:
        """Create what the index needs and refuse one built with other parameters (ValueError
        naming both). Idempotent."""

    async def check_and_add(
        self, key: str, signature: np.ndarray, published_at: float, *, claim: bool = False
    ) -> NearDuplicate | None:
        """The best match within the window (similarity ≥ threshold), or None after adding
        `key` (as a claim when `claim`, else as published). An article never matches an entry
        of its own key."""

    async def confirm(self, key: str) -> None:
        """Turn the claim on `key` into a published entry (call after the post is written)."""

    async def release(self, key: str) -> None:
        """Forget the claim on `key` (its post was not written)."""

    async def expire(self, now: float) -> int:
        """Forget every article older than the window; returns how many."""

    async def close(self) -> None: ...


def _meta_mismatch(where: str, have: dict[str, str], want: dict[str, str]) -> ValueError:
    return ValueError(
        f"near-duplicate index {where} was built with {have}, not {want}: use the same "
        "NEAR_DUPLICATE_* settings, or another state store"
    )


class _Tail:
    """Band buckets of the articles appended since the last merge, in this process's memory:
    bucket -> article id (a tuple of ids for the rare bucket that several share). Rebuilt
    from the article rows, which are the truth, whenever the store changed elsewhere."""

    def __init__(self) -> None:
        self.ids: dict[int, int | tuple[int, ...]] = {}
        self.articles = 0

    def add(self, article_id: int, buckets: list[int]) -> None:
        ids = self.ids
        for bucket in buckets:
            have = ids.get(bucket)
            if have is None:
                ids[bucket] = article_id
            elif isinstance(have, tuple):
                ids[bucket] = (*have, article_id)
            else:
                ids[bucket] = (have, article_id)
        self.articles += 1

    def candidates(self, buckets: list[int]) -> set[int]:
        found: set[int] = set()
        for bucket in buckets:
            have = self.ids.get(bucket)
            if have is None:
                continue
            if isinstance(have, tuple):
                found.update(have)
            else:
                found.add(have)
        return found

    def entries(self) -> list[tuple[int, int]]:
        """(bucket, article id) pairs, sorted: the order of the band table's key."""
        pairs = []
        for bucket, have in self.ids.items():
            if isinstance(have, tuple):
                pairs += [(bucket, article_id) for article_id in have]
            else:
                pairs.append((bucket, have))
        pairs.sort()
        return pairs

    def clear(self) -> None:
        self.ids.clear()
        self.articles = 0


class SqliteNearDupIndex:
    """Signatures in the SQLite crawl state's file, through its connection and lock:

    - `nd_article`: one row per article (rowid, key, time, claimed/published/released, the
      signature as raw little-endian uint32 bytes), appended in time order (so expiry needs no
      time index). Ids are never reused: each is one more than the highest given (the
      newest row's or, when expiry removed every row, `nd_banded`'s), and a released claim
      stays as a tombstone until it expires;
    - `nd_band`: (bucket, article rowid), a `WITHOUT ROWID` primary key, so a candidate lookup
      is one index seek per band; the buckets are not stored twice (they are recomputed from
      the signature when an article is deleted);
    - `nd_banded`: one row, the id up to which articles have their entries in `nd_band`;
    - `nd_meta`: the parameters the index was built with.

    Why a tail: an entry in `nd_band` lands on a random page of its B-tree, so an article
    written with its ten entries dirties ~11 pages, which every commit writes to the WAL and
    every checkpoint copies back: that was two thirds of the index's CPU time. So a new
    article is only appended to `nd_article` (one page, the last), and its buckets go to an
    in-memory `_Tail`; once the tail holds `merge_every` articles, their entries go into
    `nd_band` in one transaction, sorted, which writes each touched page once for many
    entries. The rows are the truth: every process rebuilds its tail from the rows after
    `nd_banded` (on open, and whenever another process appended or merged: checked at the
    start of each transaction with one query), so a crash loses nothing and every process's
    check sees every article.

    Each `check_and_add` is one `BEGIN IMMEDIATE` transaction: the tail caught up, candidates
    read, verified and the new row written under the database's write lock, so concurrent
    writers (threads or processes on the same file) are serialised. Runs synchronously inside
    the coroutine: local SQLite work of tens of microseconds, like the state's own calls (a
    merge, once every `merge_every` new articles, takes about 0.16 s with a million articles
    in the index, as an expiry batch does). `merge_every` is 2,000: a tail of 20,000 made the
    index ~20 % cheaper but held ~0.9 KB per article of a crawl in memory until its merge.
    """

    _EXPIRE_BATCH = 5000

    def __init__(
        self, db: _Db, params: IndexParams, *, expire_every: int = 10000, merge_every: int = 2000
    ):
        self._db = db
        self.params = params
        self._expire_every = expire_every
        self._since_expire = 0
        self._merge_every = merge_every
        self._tail = _Tail()
        self._banded = -1  # nd_banded as last read (-1: never, so the first call catches up)
        self._last = 0  # the highest article id in the tail or banded
        # rowid of each claim this object made, so confirm and release need no key index
        self._claims: dict[str, int] = {}
        marks = ",".join("?" * params.bands)
        self._select = (
            "SELECT a.id, a.key, a.at, a.state, a.sig FROM nd_band b JOIN nd_article a "
            f"ON a.id = b.id WHERE b.bucket IN ({marks})"
        )
        self._opened = False

    async def open(self) -> None:
        if self._opened:
            return

        def create(conn: sqlite3.Connection) -> dict[str, str]:
            conn.execute("CREATE TABLE IF NOT EXISTS nd_meta (name TEXT PRIMARY KEY, value TEXT)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS nd_article (id INTEGER PRIMARY KEY, key TEXT NOT NULL,"
                " at REAL NOT NULL, state INTEGER NOT NULL, sig BLOB NOT NULL)"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS nd_band (bucket INTEGER NOT NULL, id INTEGER NOT NULL,"
                " PRIMARY KEY (bucket, id)) WITHOUT ROWID"
            )
            # an index written before the tail existed has every article in nd_band
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'nd_banded'"
            ).fetchone():
                conn.execute("CREATE TABLE nd_banded (id INTEGER NOT NULL)")
                conn.execute(
                    "INSERT INTO nd_banded (id) SELECT coalesce(max(id), 0) FROM nd_article"
                )
            have = dict(conn.execute("SELECT name, value FROM nd_meta").fetchall())
            if not have:
                conn.executemany(
                    "INSERT INTO nd_meta (name, value) VALUES (?, ?)", self.params.stored().items()
                )
                return self.params.stored()
            return have

        have = self._db.transaction(create)
        if have != self.params.stored():
            raise _meta_mismatch(str(self._db.path), have, self.params.stored())
        self._opened = True

    # -- the tail ------------------------------------------------------------------------------
    def _catch_up(self, conn: sqlite3.Connection) -> None:
        """Make the tail hold the buckets of exactly the articles after `nd_banded` (inside a
        write transaction, so nobody appends meanwhile). Another process's merge clears it;
        rows appended since the last look are added (ids only grow: see the class notes)."""
        banded, newest = conn.execute(
            "SELECT (SELECT id FROM nd_banded), (SELECT max(id) FROM nd_article)"
        ).fetchone()
        if banded != self._banded:
            self._tail.clear()
            self._banded = banded
            self._last = banded
        if newest is not None and newest > self._last:
            rows = conn.execute(
                "SELECT id, sig FROM nd_article WHERE id > ? ORDER BY id", (self._last,)
            )
            for article_id, blob in rows:
                self._add_to_tail(article_id, np.frombuffer(blob, dtype="<u4"))

    def _add_to_tail(self, article_id: int, signature: np.ndarray) -> None:
        self._tail.add(article_id, band_buckets(signature, self.params.bands, self.params.rows))
        self._last = article_id

    def merge_now(self, *, at_least: int = 1) -> int:
        """Write the tail's band entries into `nd_band` (sorted, one transaction) if it holds
        `at_least` articles; returns how many articles' entries were written (the released
        and the deleted have none)."""

        def merge(conn: sqlite3.Connection) -> int:
            self._catch_up(conn)  # another process may have merged, or appended
            if self._tail.articles < max(1, at_least):
                return 0
            # rows gone since (expired) or released are left out: nothing would delete them
            live = {
                row[0]
                for row in conn.execute(
                    "SELECT id FROM nd_article WHERE id > ? AND state != ?",
                    (self._banded, RELEASED),
                )
            }
            conn.executemany(
                "INSERT OR IGNORE INTO nd_band (bucket, id) VALUES (?, ?)",
                [pair for pair in self._tail.entries() if pair[1] in live],
            )
            conn.execute("UPDATE nd_banded SET id = ?", (self._last,))
            self._tail.clear()
            self._banded = self._last
            return len(live)

        return self._db.transaction(merge)

    # -- the atomic operation ------------------------------------------------------------
    async def check_and_add(
        self, key: str, signature: np.ndarray, published_at: float, *, claim: bool = False
    ) -> NearDuplicate | None:
        return self.check_and_add_now(key, signature, published_at, claim=claim)

    def check_and_add_now(
        self, key: str, signature: np.ndarray, published_at: float, *, claim: bool = False
    ) -> NearDuplicate | None:
        """`check_and_add` without the coroutine (benchmarks, other threads)."""
        signature = np.ascontiguousarray(signature, dtype="<u4")
        buckets = band_buckets(signature, self.params.bands, self.params.rows)
        state = CLAIMED if claim else PUBLISHED

        def work(conn: sqlite3.Connection) -> tuple[NearDuplicate | None, int]:
            self._catch_up(conn)
            rows = conn.execute(self._select, buckets).fetchall()
            recent = self._tail.candidates(buckets)
            if recent:
                marks = ",".join("?" * len(recent))
                rows += conn.execute(
                    f"SELECT id, key, at, state, sig FROM nd_article WHERE id IN ({marks})",
                    list(recent),
                ).fetchall()
            best = self._best(key, signature, published_at, rows)
            if best is not None:
                return best, 0
            article_id = self._last + 1  # after every id given, even if since deleted
            conn.execute(
                "INSERT INTO nd_article (id, key, at, state, sig) VALUES (?, ?, ?, ?, ?)",
                (article_id, key, published_at, state, signature.tobytes()),
            )
            self._tail.add(article_id, buckets)
            self._last = article_id
            return None, article_id

        try:
            best, article_id = self._db.transaction(work)
        except BaseException:
            self._banded = -1  # rolled back: the tail may hold a row that is not there
            raise
        if best is None:
            if claim:
                self._claims[key] = article_id
            if self._tail.articles >= self._merge_every:
                self.merge_now(at_least=self._merge_every)
            self._since_expire += 1
            if self._since_expire >= self._expire_every:
                self.expire_now(published_at)
        return best

    def _best(
        self, key: str, signature: np.ndarray, published_at: float, rows: Any
    ) -> NearDuplicate | None:
        oldest = published_at - self.params.window
        claims_from = published_at - self.params.claim_ttl
        best: NearDuplicate | None = None
        seen: set[int] = set()
        for article_id, other, at, state, blob in rows:
            if article_id in seen or other == key or at < oldest or state == RELEASED:
                continue
            seen.add(article_id)
            if state != PUBLISHED and at < claims_from:
                continue  # a claim nobody confirmed in time: its writer died
            score = similarity(signature, np.frombuffer(blob, dtype="<u4"))
            if score >= self.params.threshold and (
                best is None
                or score > best.similarity
                or (score == best.similarity and (at, other) < (best.published_at, best.key))
            ):
                best = NearDuplicate(other, at, score)
        return best

    # -- the rest of the protocol ----------------------------------------------------------
    async def confirm(self, key: str) -> None:
        article_id = self._claims.pop(key, None)
        if article_id is not None:
            self._db.query("UPDATE nd_article SET state = ? WHERE id = ?", (PUBLISHED, article_id))

    async def release(self, key: str) -> None:
        """The claim's row stays, marked released (it never matches), until it expires: a
        deleted row's id could be given to the next article, which processes that saw the
        first one would then not look for."""
        article_id = self._claims.pop(key, None)
        if article_id is not None:
            self._db.query("UPDATE nd_article SET state = ? WHERE id = ?", (RELEASED, article_id))

    def _delete(self, conn: sqlite3.Connection, ids: list[int]) -> int:
        rows = []
        for start in range(0, len(ids), 500):  # within any SQLite build's parameter limit
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows += conn.execute(f"SELECT id, sig FROM nd_article WHERE id IN ({marks})", chunk)
        if not rows:
            return 0
        conn.executemany(
            "DELETE FROM nd_band WHERE bucket = ? AND id = ?",
            sorted(  # in key order: each page of the B-tree visited once
                (bucket, article_id)
                for article_id, blob in rows
                for bucket in band_buckets(
                    np.frombuffer(blob, dtype="<u4"), self.params.bands, self.params.rows
                )
            ),
        )
        conn.executemany("DELETE FROM nd_article WHERE id = ?", [(row[0],) for row in rows])
        return len(rows)

    async def expire(self, now: float) -> int:
        return self.expire_now(now)

    def expire_now(self, now: float) -> int:
        """Delete what fell out of the window (claims of dead writers included), a batch per
        transaction so other writers are not held up for long. Articles are appended in time
        order, so the oldest are the first rows: no index on the time is kept up to date for
        this (it would be one more page written per article). One appended out of order (a
        slower clock) goes when the rows before it have; it stopped matching already. When
        the newest row goes, `nd_banded` moves up to its id: the next article's id follows it,
        so no process that saw it mistakes the next one for it."""
        self._since_expire = 0
        cutoff = now - self.params.window
        removed = 0
        while True:

            def batch(conn: sqlite3.Connection) -> tuple[int, bool]:
                rows = conn.execute(
                    "SELECT id, at FROM nd_article ORDER BY id LIMIT ?", (self._EXPIRE_BATCH,)
                ).fetchall()
                old = []
                for article_id, at in rows:
                    if at >= cutoff:
                        break
                    old.append(article_id)
                newest = conn.execute("SELECT max(id) FROM nd_article").fetchone()[0]
                if old and old[-1] == newest:
                    # the newest row goes too: the next id must still follow it
                    conn.execute("UPDATE nd_banded SET id = max(id, ?)", (newest,))
                return self._delete(conn, old), len(old) < len(rows) or not rows

            done, reached_the_window = self._db.transaction(batch)
            removed += done
            if reached_the_window or not done:
                return removed

    def count(self) -> int:
        return self._db.query("SELECT count(*) FROM nd_article")[0][0]

    async def close(self) -> None:
        """The connection is the crawl state's, closed with it; claims never confirmed stay
        until their lease runs out. The tail needs no writing: its rows are in the file."""
        self._claims.clear()
        self._tail.clear()
        self._banded = -1


# The Redis store. Keys (all under the prefix):
#   <p>:meta              hash: hashes, bands, rows, fingerprint (refuses another configuration)
#   <p>:r:<key>           string, the article's record: its time (8 bytes, a little-endian
#                         double), its state (one byte, "0" claimed, "1" published), the
#                         signature (raw uint32 bytes), its buckets (hex, comma-separated)
#   <p>:b:<bucket>        sorted set: article keys scored by their time
# Records expire at their time + the window (EXPIREAT), band sets at the newest member's
# time + the window, and members older than the window are trimmed from a band set whenever
# it is read, so the index forgets on its own. Nothing is pickled: keys are the article keys
# as UTF-8, signatures raw bytes. Why one string: the signature (512 bytes) is too long for
# a hash's compact encoding, and a hash in a table costs ~450 bytes more per article.
# Indexes written before kept a hash per article at <p>:a:<key> (fields at, state, sig,
# buckets); the scripts still read those, until they expire.
_RECORD = """
local function record(prefix, other, hashes)
  local packed = redis.call('GET', prefix .. ':r:' .. other)
  if packed then
    local at = struct.unpack('<d', packed)
    return at, string.sub(packed, 9, 9), string.sub(packed, 10, 9 + hashes * 4),
      string.sub(packed, 11 + hashes * 4)
  end
  local fields = redis.call('HMGET', prefix .. ':a:' .. other, 'at', 'state', 'sig', 'buckets')
  return tonumber(fields[1]), fields[2], fields[3], fields[4]
end
local function forget(prefix, key, hashes)
  local at, state, sig, buckets = record(prefix, key, hashes)
  if buckets then
    for bucket in string.gmatch(buckets, '[^,]+') do
      redis.call('ZREM', prefix .. ':b:' .. bucket, key)
    end
  end
  return redis.call('DEL', prefix .. ':r:' .. key, prefix .. ':a:' .. key)
end
"""

_CHECK_AND_ADD = (
    _RECORD
    + """
local prefix, key, at = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cutoff, claim_cutoff = tonumber(ARGV[4]), tonumber(ARGV[5])
local threshold, hashes = tonumber(ARGV[6]), tonumber(ARGV[7])
local state, sig, expire_at = ARGV[8], ARGV[9], tonumber(ARGV[10])
local buckets = ARGV[11]
local seen, best_key, best_at, best_score = {}, false, 0, -1
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. cutoff)
  local members = redis.call('ZRANGE', KEYS[i], 0, -1)
  for _, other in ipairs(members) do
    if other ~= key and not seen[other] then
      seen[other] = true
      local oat, ostate, osig = record(prefix, other, hashes)
      if oat and oat >= cutoff and (ostate == '1' or oat >= claim_cutoff) then
        local equal = 0
        for j = 1, hashes * 4, 4 do
          if string.sub(osig, j, j + 3) == string.sub(sig, j, j + 3) then equal = equal + 1 end
        end
        local score = equal / hashes
        if score >= threshold and (score > best_score or (score == best_score and
            (oat < best_at or (oat == best_at and other < best_key)))) then
          best_key, best_at, best_score = other, oat, score
        end
      end
    end
  end
end
if best_key then
  return {best_key, tostring(best_at), tostring(best_score)}
end
forget(prefix, key, hashes)
redis.call('SET', prefix .. ':r:' .. key, struct.pack('<d', at) .. state .. sig .. buckets,
  'EXAT', expire_at)
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], at, key)
  local ttl = redis.call('EXPIRETIME', KEYS[i])
  if ttl < expire_at then redis.call('EXPIREAT', KEYS[i], expire_at) end
end
return false
"""
)

_CONFIRM = """
local rkey = ARGV[1] .. ':r:' .. ARGV[2]
if redis.call('EXISTS', rkey) == 1 then
  return redis.call('SETRANGE', rkey, 8, '1')
end
return 0
"""

_RELEASE = _RECORD + "\nreturn forget(ARGV[1], ARGV[2], tonumber(ARGV[3]))\n"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisNearDupIndex:
    """Signatures in Redis (any server of version 7 or newer), shared by every crawler that
    uses the same prefix. `check_and_add` is one Lua script, so Redis runs the lookup,
    verification and insert of one article with nothing in between: two crawlers adding
    copies of one story at once get exactly one "new". `redis_client` is a
    `redis.asyncio.Redis` (the crawl state's: this index never closes it); every call is
    awaited, so the reactor never blocks on the network.

    The script reads article hashes it finds in band sets (keys it is not given), which Redis
    Cluster only allows within one slot: on a cluster, put a hash tag in the prefix
    (`{aggregator}:nd`)."""

    def __init__(self, redis_client: Any, prefix: str, params: IndexParams):
        if not prefix:
            raise ValueError("a Redis key prefix is required")
        self.redis = redis_client
        self.prefix = prefix
        self.params = params
        self._check_and_add = redis_client.register_script(_CHECK_AND_ADD)
        self._release = redis_client.register_script(_RELEASE)
        self._confirm = redis_client.register_script(_CONFIRM)
        self._opened = False

    async def open(self) -> None:
        if self._opened:
            return
        want = self.params.stored()
        meta = f"{self.prefix}:meta"
        for name, value in want.items():
            await self.redis.hsetnx(meta, name, value)
        have = {_text(k): _text(v) for k, v in (await self.redis.hgetall(meta)).items()}
        if have != want:
            raise _meta_mismatch(repr(self.prefix), have, want)
        self._opened = True

    async def check_and_add(
        self, key: str, signature: np.ndarray, published_at: float, *, claim: bool = False
    ) -> NearDuplicate | None:
        await self.open()
        signature = np.ascontiguousarray(signature, dtype="<u4")
        buckets = [
            format(b, "x") for b in band_buckets(signature, self.params.bands, self.params.rows)
        ]
        result = await self._check_and_add(
            keys=[f"{self.prefix}:b:{bucket}" for bucket in buckets],
            args=[
                self.prefix,
                key,
                repr(float(published_at)),
                repr(published_at - self.params.window),
                repr(published_at - self.params.claim_ttl),
                repr(self.params.threshold),
                self.params.hashes,
                str(CLAIMED if claim else PUBLISHED),
                signature.tobytes(),
                int(published_at + self.params.window) + 1,
                ",".join(buckets),
            ],
        )
        if not result:
            return None
        other, at, score = (_text(v) for v in result)
        return NearDuplicate(other, float(at), float(score))

    async def confirm(self, key: str) -> None:
        """The state byte set in place (SETRANGE keeps the expiry), if the record is still
        there: SETRANGE alone would make a record of a missing key."""
        await self._confirm(keys=[], args=[self.prefix, key])

    async def release(self, key: str) -> None:
        await self._release(keys=[], args=[self.prefix, key, self.params.hashes])

    async def expire(self, now: float) -> int:
        """Nothing to do: keys expire by themselves (see the notes above)."""
        return 0

    async def close(self) -> None:
        """The client belongs to the crawl state, which closes it."""
