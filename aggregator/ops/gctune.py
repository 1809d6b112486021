"""Keep Python's cyclic garbage collector from re-scanning the start-up heap during a crawl.

By the time a spider opens, the interpreter holds about a hundred thousand long-lived container
objects (modules, classes, functions of Scrapy, Twisted, lxml, ...). Every collection of the
oldest generation walks all of them, and a crawl triggers such collections over and over:
measured, they were about a tenth of a flat-out crawl's CPU per article. `gc.freeze()` moves
everything alive at that moment into a permanent generation the collector ignores; objects made
afterwards (requests, responses, items) are collected as before.

`GC_FREEZE` (default on) freezes when the spider opens and unfreezes when it closes, so what a
crawl leaves behind is collected as usual afterwards (`crawlall`'s next crawl freezes afresh).
`GC_THRESHOLD`, when set, replaces the collector's thresholds (`gc.set_threshold`) for the same
span.
"""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured

from aggregator.errors import ConfigError

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

__all__ = ["GcTuning", "check_gc_settings"]

logger = logging.getLogger(__name__)


def _threshold(value: Any) -> tuple[int, ...] | None:
    if value in (None, "", [], ()):
        return None
    if isinstance(value, str):
        value = value.strip("[]() ").split(",")
    try:
        numbers = tuple(int(part) for part in value)
    except (TypeError, ValueError):
        raise ConfigError(f"GC_THRESHOLD must be up to three integers, not {value!r}") from None
    if not 1 <= len(numbers) <= 3 or any(n < 0 for n in numbers):
        raise ConfigError(f"GC_THRESHOLD must be up to three integers >= 0, not {value!r}")
    return numbers


def check_gc_settings(settings: BaseSettings) -> None:
    """A malformed GC_THRESHOLD is a configuration error found before anything starts."""
    _threshold(settings.get("GC_THRESHOLD"))


class GcTuning:
    def __init__(self, freeze: bool, threshold: tuple[int, ...] | None):
        self.freeze = freeze
        self.threshold = threshold
        self._saved_threshold: tuple[int, ...] | None = None
        self._frozen = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> GcTuning:
        settings = crawler.settings
        freeze = settings.getbool("GC_FREEZE", True)
        threshold = _threshold(settings.get("GC_THRESHOLD"))
        if not freeze and threshold is None:
            raise NotConfigured("GC_FREEZE is off and GC_THRESHOLD unset")
        extension = cls(freeze, threshold)
        crawler.signals.connect(extension.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(extension.spider_closed, signal=signals.spider_closed)
        return extension

    def spider_opened(self, spider: Any) -> None:
        if self.threshold is not None:
            self._saved_threshold = gc.get_threshold()
            gc.set_threshold(*self.threshold)
        if self.freeze:
            # no gc.collect() first: a full collection of the start-up heap costs more than the
            # crawl's whole GC time now; what garbage there is stays frozen until close
            gc.freeze()
            self._frozen = True
            logger.debug("Froze %s objects of the start-up heap", gc.get_freeze_count())

    def spider_closed(self, spider: Any) -> None:
        if self._frozen:
            gc.unfreeze()
            self._frozen = False
        if self._saved_threshold is not None:
            gc.set_threshold(*self._saved_threshold)
            self._saved_threshold = None
