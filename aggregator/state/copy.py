"""Copy a crawl state into another store (`scrapy state-copy`), through the protocol's
`scan`/`copy_in`: idempotent, what the destination has is kept. Stores are the ones crawls use:
chosen by the URI's scheme in DEDUPE_STORES(_BASE), built with `build_from_crawler`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.utils.misc import build_from_crawler

from aggregator.errors import ConfigError
from aggregator.state import state_class

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from aggregator.state.base import CrawlState

__all__ = ["build_state", "copy_state"]

BATCH = 500


def build_state(crawler: Crawler, uri: str, setting: str) -> CrawlState:
    """The store `uri` names, not yet opened; ConfigError (naming `setting`) for an unknown
    scheme or a malformed URI."""
    try:
        cls = state_class(crawler.settings, uri)
        check = getattr(cls, "check_uri", None)
        if check is not None:
            check(uri)
        return build_from_crawler(cls, crawler, uri)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("DEDUPE_URI", setting, 1)) from exc


async def copy_state(source: CrawlState, destination: CrawlState) -> dict[str, int]:
    """Copy everything from `source` into `destination`; how many of each kind were new."""
    counts = {"published": 0, "pending": 0, "records": 0, "seen": 0}
    batch = []
    async for record in source.published.scan():
        counts["seen"] += 1
        batch.append(record)
        if len(batch) >= BATCH:
            counts["published"] += await destination.published.copy_in(batch)
            batch = []
    counts["published"] += await destination.published.copy_in(batch)
    pending = [article async for article in source.pending.scan()]
    counts["pending"] = await destination.pending.copy_in(pending)
    async for name, value in source.records.scan():
        absent = await destination.records.get(name) is None
        if absent and await destination.records.setdefault(name, value) == value:
            counts["records"] += 1
    return counts
