"""The crawl state in one SQLite file (`DEDUPE_URI=sqlite:///path`, the default under STATE_DIR).

WAL mode and a busy timeout let several crawlers (one process or several) share the file. Each
protocol call is one transaction, and the callers hand over batches (every key of a listing page
in one claim, the posts a write round finished in one `mark_published`), so a crawl commits a
handful of times per page rather than per article; nothing is marked published before the
caller says the post is written. The calls run on the reactor thread: a local SQLite
transaction costs tens of microseconds, less than a hand-off to a thread would.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator.errors import ConfigError, StateUnavailable
from aggregator.state.base import PendingArticle, PublishedRecord

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from aggregator.neardup.index import IndexParams, SqliteNearDupIndex

__all__ = ["SqliteCrawlState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS published (
    key TEXT PRIMARY KEY, location TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    key TEXT PRIMARY KEY, site TEXT NOT NULL, payload TEXT NOT NULL,
    error TEXT NOT NULL, attempts INTEGER NOT NULL, first_at REAL NOT NULL,
    last_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS pending_site ON pending (site, first_at);
CREATE TABLE IF NOT EXISTS kv (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY, owner TEXT NOT NULL, until REAL NOT NULL);
"""

_WAL_LIMIT = 64 * 2**20

# SQLite's default limit on host parameters in one statement is 999 (older builds) or 32766.
_CHUNK = 500


def path_from_uri(uri: str) -> Path:
    """sqlite:///relative/file and sqlite:////absolute/file, as SQLAlchemy spells them."""
    path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
    if not path:
        raise ConfigError(f"DEDUPE_URI {uri!r} needs a file path (sqlite:///path/file)")
    return Path(path)


def _chunks(keys: Iterable[str]) -> Iterable[list[str]]:
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), _CHUNK):
        yield unique[start : start + _CHUNK]


class _Db:
    """One connection, one lock: the store may be used from the reactor thread and, in
    commands and tests, from others."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def connect(self) -> None:
        if self._conn is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # a merge of the near-duplicate index's tail writes ~165 MiB of WAL with a million
            # articles indexed: once checkpointed, the file is cut back to this, not kept
            conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StateUnavailable(f"DEDUPE_URI sqlite:///{self.path}: {exc}") from exc
        self._conn = conn

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._connection().execute(sql, tuple(params)).fetchall()

    def transaction(self, work: Any) -> Any:
        """Run `work(conn)` in one write transaction (BEGIN IMMEDIATE: the write lock is taken
        first, so a check and the write that depends on it see the same state)."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.connect()
        assert self._conn is not None
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class SqlitePublished:
    def __init__(self, db: _Db):
        self._db = db

    async def published_among(self, keys: Sequence[str]) -> set[str]:
        return self.published_among_now(keys)

    def published_among_now(self, keys: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            rows = self._db.query(f"SELECT key FROM published WHERE key IN ({marks})", chunk)
            found.update(row[0] for row in rows)
        return found

    async def claim(self, keys: Sequence[str], owner: str, lease: float) -> set[str]:
        def work(conn: sqlite3.Connection) -> set[str]:
            now = time.time()
            held: set[str] = set()
            for chunk in _chunks(keys):
                marks = ",".join("?" * len(chunk))
                published = {
                    row[0]
                    for row in conn.execute(
                        f"SELECT key FROM published WHERE key IN ({marks})", chunk
                    )
                }
                taken = {
                    row[0]
                    for row in conn.execute(
                        f"SELECT key FROM claims WHERE key IN ({marks}) AND until > ?",
                        (*chunk, now),
                    )
                }
                mine = [key for key in chunk if key not in published and key not in taken]
                conn.executemany(
                    "INSERT OR REPLACE INTO claims (key, owner, until) VALUES (?, ?, ?)",
                    [(key, owner, now + lease) for key in mine],
                )
                held.update(mine)
            return held

        return self._db.transaction(work)

    async def release(self, keys: Sequence[str], owner: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "DELETE FROM claims WHERE key = ? AND owner = ?", [(k, owner) for k in keys]
            )

        self._db.transaction(work)

    async def mark_published(self, entries: Sequence[tuple[str, str]]) -> None:
        self._insert([(key, location, time.time()) for key, location in entries], replace=True)

    def _insert(self, rows: list[tuple[str, str, float]], *, replace: bool) -> int:
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"

        def work(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(f"{verb} INTO published (key, location, at) VALUES (?, ?, ?)", rows)
            added = conn.total_changes - before
            keys = [(row[0],) for row in rows]
            conn.executemany("DELETE FROM pending WHERE key = ?", keys)
            conn.executemany("DELETE FROM claims WHERE key = ?", keys)
            return added

        return self._db.transaction(work)

    async def scan(self) -> AsyncIterator[PublishedRecord]:
        for key, location, at in self._db.query("SELECT key, location, at FROM published"):
            yield PublishedRecord(key, location, at)

    async def copy_in(self, records: Sequence[PublishedRecord]) -> int:
        return self._insert([(r.key, r.location, r.at) for r in records], replace=False)


class SqlitePending:
    def __init__(self, db: _Db):
        self._db = db

    async def add(self, site: str, key: str, payload: dict[str, Any], error: str) -> None:
        now = time.time()
        self._db.query(
            """
            INSERT INTO pending (key, site, payload, error, attempts, first_at, last_at)
            VALUES (?, ?, ?, ?, 1, ?, ?)
            ON CONFLICT (key) DO UPDATE SET payload = excluded.payload, error = excluded.error,
                attempts = attempts + 1, last_at = excluded.last_at
            """,
            (key, site, json.dumps(payload, ensure_ascii=False), error, now, now),
        )

    _COLUMNS = "key, site, payload, error, attempts, first_at, last_at"

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[PendingArticle]:
        return [
            PendingArticle(key, site, json.loads(payload), error, attempts, first_at, last_at)
            for key, site, payload, error, attempts, first_at, last_at in self._db.query(
                sql, params
            )
        ]

    async def list(self, site: str) -> list[PendingArticle]:
        return self._rows(
            f"SELECT {self._COLUMNS} FROM pending WHERE site = ? ORDER BY first_at", (site,)
        )

    async def clear(self, keys: Sequence[str]) -> None:
        self._db.transaction(
            lambda conn: conn.executemany("DELETE FROM pending WHERE key = ?", [(k,) for k in keys])
        )

    async def scan(self) -> AsyncIterator[PendingArticle]:
        for article in self._rows(f"SELECT {self._COLUMNS} FROM pending ORDER BY first_at"):
            yield article

    async def copy_in(self, articles: Sequence[PendingArticle]) -> int:
        rows = [
            (
                a.key,
                a.site,
                json.dumps(a.payload, ensure_ascii=False),
                a.error,
                a.attempts,
                a.first_at,
                a.last_at,
            )
            for a in articles
        ]

        def work(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(
                f"INSERT OR IGNORE INTO pending ({self._COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return conn.total_changes - before

        return self._db.transaction(work)


class SqliteRecords:
    def __init__(self, db: _Db):
        self._db = db

    async def get(self, name: str) -> str | None:
        rows = self._db.query("SELECT value FROM kv WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    async def set(self, name: str, value: str | None) -> None:
        if value is None:
            self._db.query("DELETE FROM kv WHERE name = ?", (name,))
        else:
            self._db.query("INSERT OR REPLACE INTO kv (name, value) VALUES (?, ?)", (name, value))

    async def setdefault(self, name: str, value: str) -> str:
        def work(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT OR IGNORE INTO kv (name, value) VALUES (?, ?)", (name, value))
            return conn.execute("SELECT value FROM kv WHERE name = ?", (name,)).fetchone()[0]

        return self._db.transaction(work)

    async def scan(self, prefix: str = "") -> AsyncIterator[tuple[str, str]]:
        rows = self._db.query("SELECT name, value FROM kv ORDER BY name")
        for name, value in rows:
            if name.startswith(prefix):
                yield name, value


class SqliteCrawlState:
    """The crawl state in a SQLite file; see the module docstring."""

    def __init__(self, uri: str):
        self.uri = uri
        self.path = path_from_uri(uri)
        self._db = _Db(self.path)
        self.published = SqlitePublished(self._db)
        self.pending = SqlitePending(self._db)
        self.records = SqliteRecords(self._db)

    @classmethod
    def from_crawler(cls, crawler: Crawler, uri: str) -> SqliteCrawlState:
        return cls(uri)

    @classmethod
    def check_uri(cls, uri: str) -> None:
        """Commands call this before anything starts (a bad URI is exit status 2)."""
        path_from_uri(uri)

    def near_duplicates(self, params: IndexParams, **options: int) -> SqliteNearDupIndex:
        """The near-duplicate index kept with this state: `nd_*` tables in the same file,
        through the same connection and lock (see aggregator.neardup.index). `options`:
        `merge_every`, `expire_every` (tests and benchmarks)."""
        from aggregator.neardup.index import SqliteNearDupIndex

        return SqliteNearDupIndex(self._db, params, **options)

    async def open(self) -> None:
        self._db.connect()

    async def close(self) -> None:
        self._db.close()
