"""Articles that failed (their detail page, or the write of their post) are kept as pending in
the dedupe store with what is needed to fetch them again, and the next crawl of the same source
retries them first, even when its listing no longer shows them. Both spiders mix this in; they
differ only in which pending articles are theirs (`owns_pending`) and how a payload becomes a
request."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aggregator import stats as keys

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from twisted.python.failure import Failure

    from aggregator.state.sqlite import DedupeStore

__all__ = ["PendingArticles", "describe_failure"]

logger = logging.getLogger(__name__)


def describe_failure(failure: Failure) -> str:
    """`HTTP 503` for an HTTP error, else the exception: what an operator needs in the log."""
    response = getattr(failure.value, "response", None)
    if response is not None:
        return f"HTTP {response.status}"
    return f"{failure.type.__name__}: {failure.getErrorMessage()}"


class PendingArticles:
    """Mixin for a spider with `site`, `crawler`, a dedupe `store` and `payloads` (key -> what
    the spider needs to fetch the article again)."""

    site: str
    crawler: Crawler
    store: DedupeStore | None
    payloads: dict[str, dict[str, Any]]

    def owns_pending(self, payload: dict[str, Any]) -> bool:
        """Whether this crawl retries a pending article (e.g. one of its own channel or feed)."""
        raise NotImplementedError

    def pending_to_retry(self) -> list[tuple[str, dict[str, Any]]]:
        """This crawl's pending articles, oldest first; those published meanwhile (by another
        crawl) are cleared instead."""
        assert self.store is not None
        pending = [(k, p) for k, p in self.store.pending(self.site) if self.owns_pending(p)]
        published = self.store.published_among(key for key, _ in pending)
        for key in published:
            self.store.clear_pending(key)
        return [(key, payload) for key, payload in pending if key not in published]

    def retrying(self, key: str, url: str | None) -> None:
        logger.info("Retrying pending article %s <%s>", key, url)
        self.crawler.stats.inc_value(keys.ARTICLES_PENDING_RETRIED)

    def article_request_failed(self, failure: Failure) -> None:
        """Errback of an article's request: its key is in the request's cb_kwargs."""
        request = failure.request
        self.article_failed(request.cb_kwargs["key"], request.url, describe_failure(failure))

    def article_failed(self, key: str, url: str, reason: str) -> None:
        logger.error("Article %s <%s> failed: %s; it will be retried next run", key, url, reason)
        self.crawler.stats.inc_value(keys.ARTICLES_FAILED)
        self.remember_failed(key, reason)

    def remember_failed(self, key: str, reason: str) -> None:
        """Keep what is needed to make `key` again next run. Also called by the write pipeline
        when a post could not be stored."""
        payload = self.payloads.get(key)
        if payload is not None and self.store is not None:
            self.store.add_pending(self.site, key, payload, reason)
            self.crawler.stats.inc_value(keys.ARTICLES_PENDING)
