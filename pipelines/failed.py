"""What becomes of an article that fails inside the item pipeline (its HTML could not be
normalised, its post could not be written): counted under `aggregator/articles/failed`, which
makes the run exit 1, and kept as pending, so the next run of its source makes it again.
The caller logs it with its key and URL, saying what failed.

Both pipelines go through `article_failed` and drop the item with the ArticleFailed it returns,
so how a failure is recorded lives in one place: today the spider's `remember_failed` keeps the
pending article; a recorder listening to signals can replace that body, or listen for
`item_dropped` with an ArticleFailed (its `reason` says why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.exceptions import DropItem

from aggregator import stats as keys

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from aggregator.items import Article

__all__ = ["ArticleFailed", "article_failed"]


class ArticleFailed(DropItem):
    """The item is dropped because its article failed (counted, kept pending, logged by the
    pipeline that raised it): not a duplicate or an empty article."""

    def __init__(self, reason: str):
        # Already logged at ERROR with the key and URL; the "Dropped" line is for debugging.
        super().__init__(reason, log_level="DEBUG")
        self.reason = reason


def article_failed(crawler: Crawler, item: Article, reason: str) -> ArticleFailed:
    """Count `item` as failed and keep it pending; raise the returned exception to drop it."""
    crawler.stats.inc_value(keys.ARTICLES_FAILED)
    remember = getattr(crawler.spider, "remember_failed", None)
    if remember is not None:
        remember(item.key, reason)
    return ArticleFailed(reason)
