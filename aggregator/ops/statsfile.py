"""Write a crawl's final stats as JSON (STATS_FILE), for monitoring and for the tests that run
crawls in a subprocess and need to read what happened."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured

from aggregator.atomicfile import write_atomically

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

__all__ = ["StatsFile"]

logger = logging.getLogger(__name__)


class StatsFile:
    def __init__(self, crawler: Crawler, path: Path):
        self.crawler = crawler
        self.path = path

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StatsFile:
        path = crawler.settings.get("STATS_FILE")
        if not path:
            raise NotConfigured("STATS_FILE is not set")
        extension = cls(crawler, Path(path))
        crawler.signals.connect(extension.spider_closed, signal=signals.spider_closed)
        return extension

    def spider_closed(self, spider: Any, reason: str) -> None:
        stats = dict(self.crawler.stats.get_stats())
        stats.setdefault("finish_reason", reason)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(stats, default=str, ensure_ascii=False, indent=1, sort_keys=True)
        write_atomically(self.path, text.encode("utf-8"))
