"""Log lines for dropped items, and items a pipeline failed on, that name the article by key
and URL instead of dumping the whole item (its body is kilobytes of HTML)."""

from __future__ import annotations

import logging
from typing import Any

from scrapy.logformatter import LogFormatter

__all__ = ["ArticleLogFormatter"]


class ArticleLogFormatter(LogFormatter):
    def dropped(self, item: Any, exception: BaseException, response: Any, spider: Any) -> dict:
        level = (
            getattr(exception, "log_level", None)
            or spider.crawler.settings["DEFAULT_DROPITEM_LOG_LEVEL"]
        )
        if isinstance(level, str):
            level = getattr(logging, level)
        return {
            "level": level,
            "msg": "Dropped %(key)s <%(url)s>: %(exception)s",
            "args": {
                "key": getattr(item, "key", "?"),
                "url": getattr(item, "url", "?"),
                "exception": exception,
            },
        }

    def item_error(self, item: Any, exception: BaseException, response: Any, spider: Any) -> dict:
        # Scrapy adds the traceback; the item itself would be kilobytes of HTML.
        return {
            "level": logging.ERROR,
            "msg": "Error processing %(key)s <%(url)s>: %(exception)s",
            "args": {
                "key": getattr(item, "key", "?"),
                "url": getattr(item, "url", "?"),
                "exception": exception,
            },
        }
