"""The dedupe store: which articles are published, which failed and wait for a retry, and small
per-source state (HTTP validators) that must survive between runs.

Backends sit behind one small protocol and are chosen by the scheme of `DEDUPE_URI`, the way
Scrapy picks feed storages: `DEDUPE_STORES` maps a scheme to a class path.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.misc import load_object

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

__all__ = [
    "DedupeStore",
    "SqliteDedupeStore",
    "dedupe_store_for",
    "dedupe_uri",
    "open_dedupe_store",
    "state_dir",
]

logger = logging.getLogger(__name__)


def state_dir(settings: BaseSettings) -> Path:
    """STATE_DIR: the dedupe store's default home, and where the run lock, last-run.json and
    S3 manifest journals live."""
    return Path(settings.get("STATE_DIR") or ".state")


class DedupeStore(Protocol):
    """What spiders and pipelines need to remember between runs."""

    def published_among(self, keys: Iterable[str]) -> set[str]:
        """The subset of `keys` already published."""

    def mark_published(self, key: str, location: str) -> None:
        """Record that the post for `key` was written at `location` (call only after the write)."""

    def add_pending(self, site: str, key: str, payload: dict[str, Any], error: str) -> None:
        """Remember an article whose detail failed, with what is needed to fetch it again."""

    def pending(self, site: str) -> list[tuple[str, dict[str, Any]]]:
        """Articles of `site` waiting for a retry, oldest first."""

    def clear_pending(self, key: str) -> None: ...

    def get_value(self, name: str) -> str | None:
        """Small named state, e.g. a feed's ETag."""

    def set_value(self, name: str, value: str | None) -> None: ...

    def close(self) -> None: ...


class SqliteDedupeStore:
    """SQLite file store. WAL mode and a busy timeout let several crawlers (one process or
    several) share the file; every write commits at once so nothing is lost on a crash."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS published (
                key TEXT PRIMARY KEY, location TEXT NOT NULL, at REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS pending (
                key TEXT PRIMARY KEY, site TEXT NOT NULL, payload TEXT NOT NULL,
                error TEXT NOT NULL, attempts INTEGER NOT NULL, first_at REAL NOT NULL,
                last_at REAL NOT NULL);
            CREATE INDEX IF NOT EXISTS pending_site ON pending (site, first_at);
            CREATE TABLE IF NOT EXISTS kv (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            """
        )

    @classmethod
    def from_uri(cls, uri: str) -> SqliteDedupeStore:
        # sqlite:///relative/file and sqlite:////absolute/file, as SQLAlchemy spells them
        path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        if not path:
            raise NotConfigured(f"DEDUPE_URI {uri!r} needs a file path (sqlite:///path/file)")
        return cls(path)

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def published_among(self, keys: Iterable[str]) -> set[str]:
        keys = list(dict.fromkeys(keys))
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._execute(f"SELECT key FROM published WHERE key IN ({marks})", chunk)
            found.update(row[0] for row in rows)
        return found

    def mark_published(self, key: str, location: str) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO published (key, location, at) VALUES (?, ?, ?)",
                    (key, location, time.time()),
                )
                self._db.execute("DELETE FROM pending WHERE key = ?", (key,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def add_pending(self, site: str, key: str, payload: dict[str, Any], error: str) -> None:
        now = time.time()
        self._execute(
            """
            INSERT INTO pending (key, site, payload, error, attempts, first_at, last_at)
            VALUES (?, ?, ?, ?, 1, ?, ?)
            ON CONFLICT (key) DO UPDATE SET payload = excluded.payload, error = excluded.error,
                attempts = attempts + 1, last_at = excluded.last_at
            """,
            (key, site, json.dumps(payload, ensure_ascii=False), error, now, now),
        )

    def pending(self, site: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self._execute(
            "SELECT key, payload FROM pending WHERE site = ? ORDER BY first_at", (site,)
        )
        return [(key, json.loads(payload)) for key, payload in rows]

    def clear_pending(self, key: str) -> None:
        self._execute("DELETE FROM pending WHERE key = ?", (key,))

    def get_value(self, name: str) -> str | None:
        rows = self._execute("SELECT value FROM kv WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    def set_value(self, name: str, value: str | None) -> None:
        if value is None:
            self._execute("DELETE FROM kv WHERE name = ?", (name,))
        else:
            self._execute("INSERT OR REPLACE INTO kv (name, value) VALUES (?, ?)", (name, value))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def dedupe_uri(settings: BaseSettings) -> str:
    """DEDUPE_URI, or the documented default under STATE_DIR."""
    uri = settings.get("DEDUPE_URI")
    if uri:
        return str(uri)
    return f"sqlite:///{state_dir(settings) / 'dedupe.sqlite3'}"


def open_dedupe_store(settings: BaseSettings) -> DedupeStore:
    uri = dedupe_uri(settings)
    scheme = urlparse(uri).scheme
    stores = settings.getdict("DEDUPE_STORES")
    if scheme not in stores:
        raise NotConfigured(
            f"DEDUPE_URI {uri!r}: no store for scheme {scheme!r} (known: {sorted(stores)})"
        )
    return load_object(stores[scheme]).from_uri(uri)


_stores: weakref.WeakKeyDictionary[Crawler, DedupeStore] = weakref.WeakKeyDictionary()


def dedupe_store_for(crawler: Crawler) -> DedupeStore:
    """The crawler's one store, shared by its spider and pipelines and closed with the spider,
    so a check in the spider and a mark in the writer see the same state."""
    store = _stores.get(crawler)
    if store is None:
        store = open_dedupe_store(crawler.settings)
        _stores[crawler] = store

        def _close(spider: Any) -> None:
            _stores.pop(crawler, None)
            store.close()

        # spider_closed fires after the pipelines' close_spider, so writers still flushing
        # uploads there can mark what they wrote
        crawler.signals.connect(_close, signal=signals.spider_closed, weak=False)
    return store
