"""The crawler's one crawl-state store, as an extension: built from DEDUPE_URI when the crawler
starts, reached with `crawl_state(crawler)`, and closed when the engine stops: after the
pipelines' close_spider and every spider_closed handler, so writers flushing there can still mark
what they wrote, and after the background writes started with `in_background`."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.utils.misc import build_from_crawler

from aggregator.state import dedupe_uri, state_class

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from scrapy.crawler import Crawler

    from aggregator.state.base import CrawlState

__all__ = ["CrawlStateExtension", "crawl_state"]


class CrawlStateExtension:
    def __init__(self, crawler: Crawler):
        uri = dedupe_uri(crawler.settings)
        self.state: CrawlState = build_from_crawler(
            state_class(crawler.settings, uri), crawler, uri
        )
        # Who holds this crawl's claims: one id per crawl, so a claim left by a killed run
        # is somebody else's (it expires after STATE_CLAIM_LEASE). A cluster worker's crawls
        # claim in the worker's name (STATE_CLAIM_OWNER); claims are not re-entrant, so a
        # worker restarted under the same id cannot take what its previous life held either.
        self.owner = crawler.settings.get("STATE_CLAIM_OWNER") or uuid.uuid4().hex
        self.lease = crawler.settings.getfloat("STATE_CLAIM_LEASE")
        self._opened = False
        self._background: set[asyncio.Future[Any]] = set()
        crawler.signals.connect(self.engine_stopped, signal=signals.engine_stopped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> CrawlStateExtension:
        return cls(crawler)

    async def open(self) -> CrawlState:
        """The store, opened on first use (idempotent)."""
        if not self._opened:
            await self.state.open()
            self._opened = True
        return self.state

    def in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` (e.g. recording a failure from a signal handler, which cannot wait) and
        make sure it is done before the store closes."""
        future = asyncio.ensure_future(work)
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    async def engine_stopped(self) -> None:
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.state.close()


def crawl_state(crawler: Crawler) -> CrawlStateExtension:
    extension = crawler.get_extension(CrawlStateExtension)
    if extension is None:
        raise RuntimeError(
            "the crawl-state extension (aggregator.state.component.CrawlStateExtension) is "
            "disabled in EXTENSIONS; the spiders and pipelines need it"
        )
    return extension
