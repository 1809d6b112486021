"""Turn untrusted article HTML into what the blog may show: lazy images made real, every image
routed through the image proxy, everything executable removed (see aggregator.render.html)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from scrapy.exceptions import DropItem

from aggregator import stats as keys
from aggregator.images.addresses import SourceRecorder
from aggregator.items import Article
from aggregator.render.html import ImageProxy, normalise_html

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)


class NormalizeHtmlPipeline:
    def __init__(self, stats: StatsCollector, proxy: ImageProxy):
        self.stats = stats
        self.proxy = proxy

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> NormalizeHtmlPipeline:
        settings = crawler.settings
        proxy = ImageProxy(
            template=settings.get("IMAGE_PROXY") or "",
            hosts=frozenset(h.lower() for h in settings.getlist("IMAGE_PROXY_HOSTS")),
        )
        return cls(crawler.stats, proxy)

    def process_item(self, item: Article) -> Article:
        # The recorder proxies exactly as self.proxy does and remembers each image's original
        # URL, which the image mirror (pipelines/images.py) downloads.
        recorder = SourceRecorder(self.proxy)
        base_url = item.base_url or item.url
        result = normalise_html(item.body, base_url, recorder)  # type: ignore[arg-type]
        if not result.html.strip():
            self.stats.inc_value(keys.dropped("empty_after_sanitising"))
            raise DropItem("nothing left after sanitising", log_level="WARNING")
        item.body = result.html
        item.images = result.images
        item.headimg = self._headimg(item, recorder)
        item.image_sources = recorder.sources
        return item

    def _headimg(self, item: Article, proxy: SourceRecorder | ImageProxy) -> str | None:
        """The first real image of the article, else the listing's first usable cover.
        `data:` images are skipped: they are lazy-loading placeholders, not pictures."""
        for image in item.images:
            if not image.startswith("data:"):
                return image
        for cover in item.cover:
            if isinstance(cover, str) and cover.strip().lower().startswith(
                ("http://", "https://", "//")
            ):
                return proxy.apply(urljoin(item.url, cover.strip()))
        return None
