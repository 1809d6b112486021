"""The crawl state's protocol: what the crawl remembers between runs (and, in a cluster, shares
between workers), split by job.

- `published`: which articles are published, with an atomic check-and-claim, so two crawls (two
  processes, two workers) can never both publish one article;
- `pending`: articles that failed and wait for a retry, with what is needed to fetch them again;
- `records`: small named values that must survive runs (a feed's validators, the S3 writer id).

Every method is a coroutine, so a network backend (Redis) serves it without blocking the reactor;
a local backend (SQLite) may simply do its work inside the coroutine. Backends are chosen by the
scheme of `DEDUPE_URI` (`DEDUPE_STORES`/`DEDUPE_STORES_BASE`) and built with Scrapy's
`build_from_crawler(cls, crawler, uri)`, so a backend reads whatever settings it needs.
Every backend must pass the contract suite in tests/test_state_contract.py.

Optional capability: a store that can keep the near-duplicate index (aggregator.neardup) has
`near_duplicates(params) -> NearDupIndex` (`NearDuplicateStore` below), so the index lives
where the rest of the crawl state does. `SqliteCrawlState` returns a `SqliteNearDupIndex` on its
own file and connection; a Redis store returns `RedisNearDupIndex(client, f"{prefix}:nd",
params)` with its own client and key prefix. With `NEAR_DUPLICATES` on, a store without it is a
configuration error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aggregator.neardup.index import IndexParams, NearDupIndex

__all__ = [
    "CrawlState",
    "NearDuplicateStore",
    "PendingArticle",
    "PendingArticles",
    "PublishedKeys",
    "PublishedRecord",
    "Records",
]


@dataclass(frozen=True)
class PublishedRecord:
    key: str
    location: str
    at: float  # Unix time it was marked


@dataclass(frozen=True)
class PendingArticle:
    key: str
    site: str
    payload: dict[str, Any]  # JSON-safe: what the spider needs to fetch the article again
    error: str
    attempts: int
    first_at: float
    last_at: float


class PublishedKeys(Protocol):
    async def published_among(self, keys: Sequence[str]) -> set[str]:
        """The subset of `keys` already published."""

    async def claim(self, keys: Sequence[str], owner: str, lease: float) -> set[str]:
        """Atomically claim, for `owner`, each key that is neither published nor held by a
        live claim (one younger than its lease, whoever holds it, `owner` included); return the
        keys claimed now. This is the one "already published?" decision: whatever is not
        returned is not fetched or written (a second listing of the same article in one crawl
        is a duplicate too). A claim left by a killed crawl is free again after its lease."""

    async def release(self, keys: Sequence[str], owner: str) -> None:
        """Give up `owner`'s claims (the article failed or was dropped before its write)."""

    async def mark_published(self, entries: Sequence[tuple[str, str]]) -> None:
        """Record (key, location) pairs as published and drop their claims and pending entries.
        Call only once the posts are durably written."""

    def scan(self) -> AsyncIterator[PublishedRecord]:
        """Every published key (for `state-copy`)."""

    async def copy_in(self, records: Sequence[PublishedRecord]) -> int:
        """Add published records kept elsewhere (their time included); return how many were new."""


class PendingArticles(Protocol):
    async def add(self, site: str, key: str, payload: dict[str, Any], error: str) -> None:
        """Remember (or count one more failure of) an article to fetch again next run."""

    async def list(self, site: str) -> list[PendingArticle]:
        """Pending articles of `site`, oldest first."""

    async def clear(self, keys: Sequence[str]) -> None: ...

    def scan(self) -> AsyncIterator[PendingArticle]:
        """Every pending article of every site (for `state-copy`)."""

    async def copy_in(self, articles: Sequence[PendingArticle]) -> int:
        """Add pending articles kept elsewhere, unless already pending here; return how many."""


class Records(Protocol):
    async def get(self, name: str) -> str | None: ...

    async def set(self, name: str, value: str | None) -> None:
        """Store `value` under `name`; None deletes it."""

    async def setdefault(self, name: str, value: str) -> str:
        """Store `value` unless `name` has one; return the value that is stored (atomic, so two
        workers agree on, e.g., one writer id)."""

    def scan(self, prefix: str = "") -> AsyncIterator[tuple[str, str]]:
        """Every (name, value) whose name starts with `prefix` (for `state-copy`)."""


class CrawlState(Protocol):
    """One crawl's state store; the crawler owns one (see aggregator.state.component)."""

    uri: str
    published: PublishedKeys
    pending: PendingArticles
    records: Records

    async def open(self) -> None:
        """Connect and check the store; raises StateUnavailable with a clear message. Idempotent."""

    async def close(self) -> None:
        """Flush what is buffered and disconnect."""


class NearDuplicateStore(Protocol):
    """A crawl state that also keeps the near-duplicate index (optional; see above)."""

    def near_duplicates(self, params: IndexParams) -> NearDupIndex:
        """The index, in this store, for signatures made with `params`; not opened yet (the
        caller awaits its `open()`, which refuses an index built with other parameters)."""
