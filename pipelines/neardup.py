"""One post per story when several sources repost it: an article whose text is a near-duplicate
of one published within NEAR_DUPLICATE_DAYS is not published again.

Runs after the normaliser and before the write (ITEM_PIPELINES 300). It reads the item and
never changes it, so a published article's post is byte for byte what it would be without this
pipeline. The index of recent signatures lives with the crawl state (`near_duplicates()` of the
state DEDUPE_URI names; aggregator.neardup.index).

NEAR_DUPLICATES:
- `skip` (default): a near-duplicate is dropped, logged with both keys and the estimated
  similarity, counted (`aggregator/articles/near_duplicate`) and marked published in the crawl
  state at `near-duplicate-of:<key>`, so it is not fetched again;
- `log`: it is published all the same, counted and logged;
- `off`: the pipeline is disabled.

Claims: a new article is added to the index as a *claim* here, before the write, so the check
and the add stay one atomic step and two copies in flight cannot both pass. Scrapy's signals say
how the item ended, after the last pipeline: `item_scraped` (written) confirms the claim;
`item_dropped` and `item_error` confirm it if the crawl state marks the key published (the
write found the post already stored) and release it otherwise (the write failed: the next copy
may be published). A claim left behind by a dead process stops counting after
NEAR_DUPLICATE_CLAIM_TTL seconds. Texts with fewer than NEAR_DUPLICATE_MIN_CHARS letters and
digits are neither checked nor added.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy import signals
from scrapy.exceptions import CloseSpider, DropItem, NotConfigured

from aggregator import stats as keys
from aggregator.errors import ConfigError, StateUnavailable
from aggregator.neardup.fingerprint import Fingerprinter
from aggregator.neardup.index import DAY, IndexParams
from aggregator.state import dedupe_uri, state_class
from aggregator.state.component import crawl_state

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

    from aggregator.neardup.index import NearDupIndex

__all__ = ["MODES", "NearDuplicatePipeline", "check_near_duplicate_settings", "index_params"]

logger = logging.getLogger(__name__)

MODES = ("skip", "log", "off")


def fingerprinter_for(settings: BaseSettings) -> Fingerprinter:
    return Fingerprinter(
        hashes=settings.getint("NEAR_DUPLICATE_HASHES"),
        shingle_chars=settings.getint("NEAR_DUPLICATE_SHINGLE_CHARS"),
    )


def index_params(settings: BaseSettings, fingerprinter: Fingerprinter) -> IndexParams:
    return IndexParams(
        hashes=fingerprinter.hashes,
        bands=settings.getint("NEAR_DUPLICATE_BANDS"),
        rows=settings.getint("NEAR_DUPLICATE_ROWS"),
        threshold=settings.getfloat("NEAR_DUPLICATE_THRESHOLD"),
        window=settings.getfloat("NEAR_DUPLICATE_DAYS") * DAY,
        claim_ttl=settings.getfloat("NEAR_DUPLICATE_CLAIM_TTL"),
        fingerprint=fingerprinter.spec,
    )


def check_near_duplicate_settings(settings: BaseSettings) -> None:
    """Raise ConfigError for NEAR_DUPLICATE* settings that cannot work, before anything starts
    (the commands call it with the other settings checks: exit status 2)."""
    mode = settings.get("NEAR_DUPLICATES")
    if mode not in MODES:
        raise ConfigError(f"NEAR_DUPLICATES must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "off":
        return
    try:
        index_params(settings, fingerprinter_for(settings))
        for name in ("NEAR_DUPLICATE_DAYS", "NEAR_DUPLICATE_CLAIM_TTL"):
            if settings.getfloat(name) <= 0:
                raise ValueError(f"{name} must be positive")
    except ValueError as exc:
        raise ConfigError(f"near-duplicate settings: {exc}") from exc
    uri = dedupe_uri(settings)
    if not hasattr(state_class(settings, uri), "near_duplicates"):
        raise ConfigError(
            f"NEAR_DUPLICATES={mode} needs a crawl state that keeps the near-duplicate index; "
            f"the store for DEDUPE_URI {uri!r} does not (set NEAR_DUPLICATES=off)"
        )


class NearDuplicatePipeline:
    def __init__(self, crawler: Crawler, fingerprinter: Fingerprinter, params: IndexParams):
        settings = crawler.settings
        self.crawler = crawler
        self.stats = crawler.stats
        self.mode = settings.get("NEAR_DUPLICATES")
        self.min_chars = settings.getint("NEAR_DUPLICATE_MIN_CHARS")
        self.fingerprinter = fingerprinter
        self.params = params
        self.index: NearDupIndex | None = None
        # key -> the item whose claim this crawl holds in the index, until the item has ended
        self._claims: dict[str, Any] = {}
        self._settling: set[asyncio.Future[Any]] = set()
        crawler.signals.connect(self._written, signal=signals.item_scraped)
        crawler.signals.connect(self._ended, signal=signals.item_dropped)
        crawler.signals.connect(self._ended, signal=signals.item_error)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> NearDuplicatePipeline:
        check_near_duplicate_settings(crawler.settings)
        if crawler.settings.get("NEAR_DUPLICATES") == "off":
            raise NotConfigured("NEAR_DUPLICATES is off")
        fingerprinter = fingerprinter_for(crawler.settings)
        return cls(crawler, fingerprinter, index_params(crawler.settings, fingerprinter))

    async def open_spider(self) -> None:
        try:
            state = await crawl_state(self.crawler).open()
        except StateUnavailable as exc:
            logger.error("Cannot use the crawl state: %s", exc)
            raise CloseSpider("state_unavailable") from exc
        index = state.near_duplicates(self.params)
        try:
            await index.open()
        except ValueError as exc:
            logger.error("Cannot use the near-duplicate index: %s", exc)
            raise CloseSpider("near_duplicate_index_mismatch") from exc
        self.index = index
        expired = await index.expire(time.time())
        if expired:
            logger.info("Near-duplicate index: forgot %d articles older than the window", expired)

    async def close_spider(self) -> None:
        while self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        if self.index is None:
            return
        # items still claimed here never reached the end of the pipeline
        for key in list(self._claims):
            await self.index.release(key)
        self._claims.clear()
        await self.index.close()

    async def process_item(self, item: Any) -> Any:
        assert self.index is not None, "open_spider opens the index"
        adapter = ItemAdapter(item)
        key, body = adapter.get("key"), adapter.get("body")
        if not isinstance(key, str) or not isinstance(body, str):
            return item
        fingerprint = self.fingerprinter.fingerprint(body)
        if fingerprint.chars < self.min_chars:
            return item
        match = await self.index.check_and_add(key, fingerprint.hashvalues, time.time(), claim=True)
        if match is None:
            self._claims[key] = item
            return item
        self.stats.inc_value(keys.ARTICLES_NEAR_DUPLICATE)
        logger.info(
            "Near-duplicate %s <%s> of %s (similarity %.2f): %s",
            key,
            adapter.get("url"),
            match.key,
            match.similarity,
            "skipped" if self.mode == "skip" else "published anyway",
        )
        if self.mode == "log":
            return item
        state = await crawl_state(self.crawler).open()
        await state.published.mark_published([(key, f"near-duplicate-of:{match.key}")])
        raise DropItem(f"near-duplicate of {match.key}", log_level="DEBUG")

    # -- how the item ended (Scrapy's signals, after the last pipeline) ---------------------
    # The handlers only forward: Scrapy passes a handler the arguments its signature names,
    # which a mutated function's wrapper hides, so they are not mutated; _item_ended is.
    def _written(self, item: Any) -> None:  # pragma: no mutate block
        self._item_ended(item, written=True)

    def _ended(self, item: Any) -> None:  # pragma: no mutate block
        self._item_ended(item, written=False)

    def _item_ended(self, item: Any, *, written: bool) -> None:
        """Settle the claim `item` holds: confirmed if it was written, else as the state says."""
        key = self._claimed_key(item)
        if key is None:
            return
        self._settle(self._confirm(key) if written else self._confirm_if_published(key))

    def _claimed_key(self, item: Any) -> str | None:
        key = ItemAdapter(item).get("key")
        if not isinstance(key, str) or self._claims.get(key) is not item:
            return None
        del self._claims[key]
        return key

    def _settle(self, work: Any) -> None:
        future = asyncio.ensure_future(work)
        self._settling.add(future)
        future.add_done_callback(self._settling.discard)

    async def _confirm(self, key: str) -> None:
        assert self.index is not None
        try:
            await self.index.confirm(key)
        except Exception:
            logger.exception("Could not confirm %s in the near-duplicate index", key)

    async def _confirm_if_published(self, key: str) -> None:
        assert self.index is not None
        try:
            state = await crawl_state(self.crawler).open()
            if await state.published.published_among([key]):
                await self.index.confirm(key)
            else:
                await self.index.release(key)
        except Exception:
            logger.exception("Could not settle %s in the near-duplicate index", key)
