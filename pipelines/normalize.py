"""Turn untrusted article HTML into what the blog may show: lazy images made real, every image
routed through the image proxy, everything executable removed, written so that Hexo passes it
through unchanged (see aggregator.render.html).

An article whose HTML makes the normaliser fail (any exception) is not lost: it raises
ArticleFailed, and the pending recorder (aggregator.state.pending) logs it with its key and URL,
counts it as failed and keeps it as pending."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from itemadapter import ItemAdapter
from scrapy.exceptions import DropItem

from aggregator import stats as keys
from aggregator.render.html import ImageProxy, normalise_html
from aggregator.state.pending import ArticleFailed

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)


class NormalizeHtmlPipeline:
    normalise = staticmethod(normalise_html)  # (html, base URL, proxy) -> NormalisedHtml

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

    def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        url = adapter["url"]
        try:
            result = self.normalise(adapter["body"], adapter.get("base_url") or url, self.proxy)
        except Exception as exc:
            # kept as pending and logged with its key by the pending recorder; the traceback
            # goes to the log at DEBUG (Scrapy's item_error line)
            raise ArticleFailed(f"could not normalise its HTML: {exc!r}") from exc
        if not result.html.strip():
            self.stats.inc_value(keys.dropped("empty_after_sanitising"))
            raise DropItem("nothing left after sanitising", log_level="WARNING")
        adapter["body"] = result.html
        adapter["images"] = result.images
        adapter["headimg"] = self._headimg(result.images, adapter.get("cover") or [], url)
        return item

    def _headimg(self, images: list[str], covers: list[Any], url: str) -> str | None:
        """The first real image of the article, else the listing's first usable cover.
        `data:` images are skipped: they are lazy-loading placeholders, not pictures."""
        for image in images:
            if not image.startswith("data:"):
                return image
        for cover in covers:
            if isinstance(cover, str) and cover.strip().lower().startswith(
                ("http://", "https://", "//")
            ):
                return self.proxy.apply(urljoin(url, cover.strip()))
        return None
