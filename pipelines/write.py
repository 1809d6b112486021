"""Render each article as a post and hand it to the storage OUTPUT_URI names. Only when the
storage reports the post durably written is the article marked published in the crawl state; a
failed write raises PostNotWritten, which the pending recorder (aggregator.state.pending) logs
with the key, counts and keeps for the next run."""

from __future__ import annotations

import logging
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy.exceptions import CloseSpider, DropItem, NotConfigured
from scrapy.utils.defer import maybe_deferred_to_future

from aggregator import stats as keys
from aggregator.errors import ConfigError, StateUnavailable
from aggregator.render.post import PostFields, post_timezone, render_post
from aggregator.state.component import crawl_state
from aggregator.state.pending import PostNotWritten
from aggregator.storage import PostRecord, StoreResult, build_post_storage

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from aggregator.state.base import CrawlState

logger = logging.getLogger(__name__)


def post_fields(item: ItemAdapter, timezone: tzinfo | None = None) -> PostFields:
    assert item.get("published") is not None, "ValidatePipeline fills published"
    return PostFields(
        title=item["title"],
        categories=(item.get("group", ""), item.get("source", ""), item.get("channel", "")),
        author=item.get("author") or item.get("source", ""),
        date=item["published"],
        body_html=item["body"],
        headimg=item.get("headimg"),
        timezone=timezone,
    )


class WritePipeline:
    def __init__(self, crawler: Crawler, storage: Any):
        self.crawler = crawler
        self.stats = crawler.stats
        self.storage = storage
        self.state: CrawlState | None = None
        self.timezone = post_timezone(crawler.settings)  # checked by the commands first

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
        # An unusable state store or destination stops the run before any request is sent:
        # one clear line, and CloseSpider (a finish reason that makes `scrapy crawl` exit
        # non-zero).
        try:
            self.state = await crawl_state(self.crawler).open()
        except StateUnavailable as exc:
            logger.error("Cannot use the crawl state: %s", exc)
            raise CloseSpider("state_unavailable") from exc
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

    async def process_item(self, item: Any) -> Any:
        assert self.state is not None, "open_spider opens the state"
        adapter = ItemAdapter(item)
        key = adapter["key"]
        record = PostRecord(
            key=key,
            site=adapter["site"],
            title=adapter["title"],
            url=adapter["url"],
            published=adapter["published"],
            data=render_post(post_fields(adapter, self.timezone)),
        )
        try:
            result: StoreResult = await maybe_deferred_to_future(self.storage.persist(record))
        except Exception as exc:
            raise PostNotWritten(str(exc)) from exc
        await self.state.published.mark_published([(key, result.location)])
        if not result.created:
            self.stats.inc_value(keys.ARTICLES_DUPLICATE)
            raise DropItem(f"already stored at {result.location}", log_level="INFO")
        self.stats.inc_value(keys.ARTICLES_NEW)
        logger.debug("Wrote %s <%s> to %s", key, adapter["url"], result.location)
        return item
