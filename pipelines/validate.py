"""First stop: refuse items that cannot become a post and tidy the fields every later step
relies on, so nothing downstream has to guess."""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from scrapy.exceptions import DropItem

from aggregator import stats as keys
from aggregator.items import Article

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)


def clean_title(raw: str | None) -> str:
    """Titles arrive HTML-escaped and with stray whitespace (newlines, U+3000, U+2028);
    a post title is one line."""
    return " ".join(html.unescape(raw or "").split())


class ValidatePipeline:
    def __init__(self, stats: StatsCollector):
        self.stats = stats
        self.crawl_time = datetime.now(UTC)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ValidatePipeline:
        return cls(crawler.stats)

    def open_spider(self) -> None:
        self.crawl_time = datetime.now(UTC).replace(microsecond=0)

    def _drop(self, item: Article, reason: str) -> DropItem:
        self.stats.inc_value(keys.dropped(reason))
        return DropItem(reason.replace("_", " "), log_level="WARNING")

    def process_item(self, item: Article) -> Article:
        item.title = clean_title(item.title)
        if not item.title:
            raise self._drop(item, "no_title")
        if not (item.body or "").strip():
            raise self._drop(item, "no_body")
        if item.published is None:
            logger.info(
                "No valid publish time for %s <%s>: using the crawl time", item.key, item.url
            )
            self.stats.inc_value(keys.ARTICLES_TIME_MISSING)
            item.published = self.crawl_time
        elif item.published.tzinfo is None:
            item.published = item.published.replace(tzinfo=UTC)
        else:
            item.published = item.published.astimezone(UTC)
        item.author = item.author or item.source
        return item
