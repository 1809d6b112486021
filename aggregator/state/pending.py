"""Articles that fail anywhere are kept as pending in the crawl state, with what is needed to
fetch them again, and the next crawl of the same source retries them first, even when its
listing no longer shows them.

Failures are recorded from Scrapy's own error signals, in one place:
- `spider_error`: a callback or errback of an article's request raised (the article's page failed
  to download, answered an HTTP error, or had no usable body: spiders raise `ArticleFailed`,
  and `article_errback` turns a download failure into one);
- `item_error`: a pipeline raised for an article item (the normaliser failed, the post could not
  be written: `PostNotWritten`).
A request for an article carries `meta["article_key"]`, `meta["article_site"]` and
`meta["article_retry"]` (JSON-safe: what its spider needs to make it again); an item carries
`key`, `site` and `retry`. Each failure is logged with the article's key and URL, counted as
`aggregator/articles/failed` (the run exits 1) and, when it can be retried,
`aggregator/articles/pending`; the crawl's claim on the article is released.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy import signals

from aggregator import stats as keys
from aggregator.state.claims import article_key_of, claim_owner_of
from aggregator.state.component import crawl_state

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from scrapy.crawler import Crawler
    from twisted.python.failure import Failure

    from aggregator.state.base import PendingArticle

__all__ = [
    "ArticleFailed",
    "PendingRecorder",
    "PostNotWritten",
    "article_errback",
    "article_meta",
    "describe_failure",
    "pending_to_retry",
]

logger = logging.getLogger(__name__)


class ArticleFailed(Exception):
    """An article could not be made now; it is kept as pending. The message is the reason."""


class PostNotWritten(ArticleFailed):
    """The article's post could not be stored."""


def describe_failure(failure: Failure) -> str:
    """`HTTP 503` for an HTTP error, else the exception: what an operator needs in the log."""
    response = getattr(failure.value, "response", None)
    if response is not None:
        return f"HTTP {response.status}"
    return f"{failure.type.__name__}: {failure.getErrorMessage()}"


def article_errback(failure: Failure) -> None:
    """Errback for article requests: the failure becomes an ArticleFailed spider error."""
    raise ArticleFailed(describe_failure(failure)) from failure.value


def article_meta(
    key: str, site: str, retry: dict[str, Any], aliases: Iterable[str] = ()
) -> dict[str, Any]:
    """The meta an article's request carries (see the module docstring; `aliases`: see
    aggregator.state.claims)."""
    meta = {"article_key": key, "article_site": site, "article_retry": retry}
    if aliases:
        meta["article_aliases"] = list(aliases)
    return meta


async def pending_to_retry(
    crawler: Crawler, site: str, owns: Callable[[dict[str, Any]], bool]
) -> list[PendingArticle]:
    """The pending articles of `site` that this crawl retries (`owns(payload)`), oldest first;
    those published meanwhile (by another crawl) are cleared instead."""
    state = await crawl_state(crawler).open()
    pending = [article for article in await state.pending.list(site) if owns(article.payload)]
    published = await state.published.published_among([a.key for a in pending])
    if published:
        await state.pending.clear(sorted(published))
    return [article for article in pending if article.key not in published]


class PendingRecorder:
    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.stats = crawler.stats
        crawler.signals.connect(self.spider_error, signal=signals.spider_error)
        crawler.signals.connect(self.item_error, signal=signals.item_error)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PendingRecorder:
        return cls(crawler)

    def spider_error(self, failure: Failure, response: Any) -> None:  # pragma: no mutate block
        request = getattr(response, "request", None)
        meta = getattr(request, "meta", None) or {}
        key = meta.get("article_key")
        if key is None:
            return
        self._failed(
            key,
            meta.get("article_site"),
            request.url,
            meta.get("article_retry"),
            failure,
            claim_owner_of(request),
        )

    def item_error(
        self, item: Any, response: Any, failure: Failure
    ) -> None:  # pragma: no mutate block
        adapter = ItemAdapter(item)
        key = adapter.get("key")
        if not isinstance(key, str):
            return
        request = getattr(response, "request", None)
        owner = claim_owner_of(request) if article_key_of(request) == key else None
        self._failed(
            key, adapter.get("site"), adapter.get("url"), adapter.get("retry"), failure, owner
        )

    def _failed(
        self, key: str, site: Any, url: Any, retry: Any, failure: Failure, owner: str | None
    ) -> None:
        reason = str(failure.value) if failure.check(ArticleFailed) else describe_failure(failure)
        what = "Could not write" if failure.check(PostNotWritten) else "Article"
        sep = ":" if failure.check(PostNotWritten) else " failed:"
        logger.error("%s %s <%s>%s %s; it will be retried next run", what, key, url, sep, reason)
        self.stats.inc_value(keys.ARTICLES_FAILED)
        keep = isinstance(site, str) and isinstance(retry, dict)
        if keep:
            self.stats.inc_value(keys.ARTICLES_PENDING)
        crawl_state(self.crawler).in_background(
            self._remember(key, site, retry, reason, keep, owner)
        )

    async def _remember(
        self, key: str, site: Any, retry: Any, reason: str, keep: bool, owner: str | None
    ) -> None:
        component = crawl_state(self.crawler)
        try:
            state = await component.open()
            if keep:
                await state.pending.add(site, key, retry, reason)
            # the claim is the request's (in a cluster, maybe another worker's), else ours
            await state.published.release([key], owner or component.owner)
        except Exception:
            logger.exception("Could not keep %s as pending", key)
