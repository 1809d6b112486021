"""Log lines that name an article by key and URL instead of dumping the whole item (its body is
kilobytes of HTML), and no second, noisier line for a failure the pending recorder
(aggregator.state.pending) already logs as one line with the article's key."""

from __future__ import annotations

import logging
from typing import Any

from scrapy.logformatter import LogFormatter

from aggregator.state.pending import ArticleFailed

__all__ = ["ArticleLogFormatter"]


def _quiet(result: dict[str, Any]) -> dict[str, Any]:
    return {**result, "level": logging.DEBUG}


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
        if isinstance(exception, ArticleFailed):
            return _quiet(super().item_error(item, exception, response, spider))
        return {
            "level": logging.ERROR,
            "msg": "Error processing %(key)s <%(url)s>",
            "args": {"key": getattr(item, "key", "?"), "url": getattr(item, "url", "?")},
        }

    def spider_error(self, failure: Any, request: Any, response: Any, spider: Any) -> dict:
        result = super().spider_error(failure, request, response, spider)
        return _quiet(result) if failure.check(ArticleFailed) else result

    def download_error(
        self, failure: Any, request: Any, spider: Any, errmsg: str | None = None
    ) -> dict:
        result = super().download_error(failure, request, spider, errmsg)
        return _quiet(result) if "article_key" in request.meta else result
