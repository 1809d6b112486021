"""Drop articles that are already published, or already passed through in this run (the same
article listed in two channels). Spiders check the store before fetching details; this is the
guard for anything that slipped through, e.g. two listings in flight at once."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scrapy.exceptions import DropItem

from aggregator import stats as keys
from aggregator.items import Article
from aggregator.state.sqlite import dedupe_store_for

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class DedupePipeline:
    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.stats = crawler.stats
        self.seen: set[str] = set()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> DedupePipeline:
        return cls(crawler)

    def process_item(self, item: Article) -> Article:
        store = dedupe_store_for(self.crawler)
        if item.key in self.seen or store.published_among([item.key]):
            self.stats.inc_value(keys.ARTICLES_DUPLICATE)
            raise DropItem("already published", log_level="DEBUG")
        self.seen.add(item.key)
        return item
