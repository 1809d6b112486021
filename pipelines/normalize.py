"""Turn untrusted article HTML into what the blog may show: lazy images made real, every image
routed through the image proxy, everything executable removed, written so that Hexo passes it
through unchanged (see aggregator.render.html).

An article whose HTML makes the normaliser fail (any exception) is not lost: it is logged with
its key and URL, counted as failed and kept as pending (aggregator.pipelines.failed)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from aggregator.pipelines.failed import article_failed
from scrapy.exceptions import DropItem

from aggregator import stats as keys
from aggregator.items import Article
from aggregator.render.html import ImageProxy, normalise_html

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)


class NormalizeHtmlPipeline:
    normalise = staticmethod(normalise_html)  # (html, base URL, proxy) -> NormalisedHtml

    def __init__(self, stats: StatsCollector, proxy: ImageProxy, crawler: Crawler | None = None):
        self.stats = stats
        self.proxy = proxy
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> NormalizeHtmlPipeline:
        settings = crawler.settings
        proxy = ImageProxy(
            template=settings.get("IMAGE_PROXY") or "",
            hosts=frozenset(h.lower() for h in settings.getlist("IMAGE_PROXY_HOSTS")),
        )
        return cls(crawler.stats, proxy, crawler)

    def process_item(self, item: Article) -> Article:
        try:
            result = self.normalise(item.body, item.base_url or item.url, self.proxy)
        except Exception as exc:
            reason = f"could not normalise its HTML: {exc!r}"
            logger.exception(
                "Article %s <%s> failed: %s; it will be retried next run",
                item.key,
                item.url,
                reason,
            )
            if self.crawler is None:
                raise
            raise article_failed(self.crawler, item, reason) from exc
        if not result.html.strip():
            self.stats.inc_value(keys.dropped("empty_after_sanitising"))
            raise DropItem("nothing left after sanitising", log_level="WARNING")
        item.body = result.html
        item.images = result.images
        item.headimg = self._headimg(item)
        return item

    def _headimg(self, item: Article) -> str | None:
        """The first real image of the article, else the listing's first usable cover.
        `data:` images are skipped: they are lazy-loading placeholders, not pictures."""
        for image in item.images:
            if not image.startswith("data:"):
                return image
        for cover in item.cover:
            if isinstance(cover, str) and cover.strip().lower().startswith(
                ("http://", "https://", "//")
            ):
                return self.proxy.apply(urljoin(item.url, cover.strip()))
        return None
