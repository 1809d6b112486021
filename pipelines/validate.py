"""First stop: refuse items that cannot become a post and tidy the fields every later step
relies on, so nothing downstream has to guess."""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy.exceptions import DropItem

from aggregator import stats as keys

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

    def _drop(self, reason: str) -> DropItem:
        self.stats.inc_value(keys.dropped(reason))
        return DropItem(reason.replace("_", " "), log_level="WARNING")

    def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        raw_title = adapter.get("title")
        title = clean_title(raw_title if isinstance(raw_title, str) else None)
        adapter["title"] = title
        if not title:
            raise self._drop("no_title")
        body = adapter.get("body")
        if not isinstance(body, str) or not body.strip():
            raise self._drop("no_body")
        published = adapter.get("published")
        if not isinstance(published, datetime):
            logger.info(
                "No valid publish time for %s <%s>: using the crawl time",
                adapter.get("key"),
                adapter.get("url"),
            )
            self.stats.inc_value(keys.ARTICLES_TIME_MISSING)
            adapter["published"] = self.crawl_time
        elif published.tzinfo is None:
            adapter["published"] = published.replace(tzinfo=UTC)
        else:
            adapter["published"] = published.astimezone(UTC)
        adapter["author"] = adapter.get("author") or adapter.get("source", "")
        return item
