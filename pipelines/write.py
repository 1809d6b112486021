"""Render each article as a post and hand it to the storage OUTPUT_URI names. Only when the
storage reports the post durably written is the article marked published; a failed write is
counted, logged with its key and left for the next run."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import CloseSpider, DropItem, NotConfigured
from scrapy.utils.defer import maybe_deferred_to_future

from aggregator import stats as keys
from aggregator.errors import ConfigError
from aggregator.items import Article
from aggregator.render.post import PostFields, render_post
from aggregator.state.sqlite import dedupe_store_for
from aggregator.storage import PostRecord, StoreResult, build_post_storage

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


def post_fields(item: Article) -> PostFields:
    assert item.published is not None, "ValidatePipeline fills published"
    return PostFields(
        title=item.title,
        categories=(item.group, item.source, item.channel),
        author=item.author or item.source,
        date=item.published,
        body_html=item.body,
        headimg=item.headimg,
    )


class WritePipeline:
    def __init__(self, crawler: Crawler, storage: Any):
        self.crawler = crawler
        self.stats = crawler.stats
        self.storage = storage

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> WritePipeline:
        # Not NotConfigured: Scrapy would quietly disable this pipeline and the crawl would
        # "succeed" writing nothing. The commands check OUTPUT_URI first (exit status 2); this
        # covers crawls started any other way.
        try:
            storage = build_post_storage(crawler)
        except NotConfigured as exc:
            raise ConfigError(f"cannot write posts: {exc}") from exc
        return cls(crawler, storage)

    async def open_spider(self) -> None:
        # An unusable destination stops the run before any request is sent: one clear line,
        # and CloseSpider (a finish reason that makes `scrapy crawl` exit non-zero).
        try:
            opened = self.storage.open(self.crawler.spider)
            if opened is not None:
                await maybe_deferred_to_future(opened)
        except (ConfigError, NotConfigured) as exc:
            logger.error("Cannot write posts: %s", exc)
            raise CloseSpider("output_unavailable") from exc

    async def close_spider(self) -> None:
        closed = self.storage.close(self.crawler.spider)
        if closed is not None:
            await maybe_deferred_to_future(closed)

    async def process_item(self, item: Article) -> Article:
        record = PostRecord(
            key=item.key,
            site=item.site,
            title=item.title,
            url=item.url,
            published=item.published,
            data=render_post(post_fields(item)),
            images=tuple(item.mirrored_images),
        )
        try:
            result: StoreResult = await maybe_deferred_to_future(self.storage.persist(record))
        except Exception as exc:
            self._failed(item, exc)
            raise DropItem(f"write failed: {exc}", log_level="DEBUG") from exc
        store = dedupe_store_for(self.crawler)
        store.mark_published(item.key, result.location)
        if not result.created:
            self.stats.inc_value(keys.ARTICLES_DUPLICATE)
            raise DropItem(f"already stored at {result.location}", log_level="INFO")
        self.stats.inc_value(keys.ARTICLES_NEW)
        logger.debug("Wrote %s <%s> to %s", item.key, item.url, result.location)
        return item

    def _failed(self, item: Article, exc: Exception) -> None:
        logger.error("Could not write %s <%s>: %s", item.key, item.url, exc)
        self.stats.inc_value(keys.ARTICLES_FAILED)
        remember = getattr(self.crawler.spider, "remember_failed", None)
        if remember is not None:
            remember(item.key, f"write failed: {exc}")
