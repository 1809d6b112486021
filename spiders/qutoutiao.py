"""趣头条 category listings → articles.

The listing API gives title, time, cover and where the article body lives: a JSON detail
(`detail_url`, body in its `detail` field) or the article page (`url`, body in `div.content`).
The spider only maps the API to requests and `Article`s: each detail request carries its
`article_key`, so the claim middleware (aggregator.state.claims) drops what is already published
before it is fetched, and an article whose detail fails raises `ArticleFailed`, which the pending
recorder keeps for the next crawl of the same channel (categories and author) to fetch first,
even when no listing shows it any more.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import scrapy
from scrapy.http import Response
from twisted.python.failure import Failure

from aggregator import stats as keys
from aggregator.items import Article, Channel
from aggregator.keys import article_key
from aggregator.render.html import inner_html
from aggregator.spiderargs import parse_categories, parse_list, parse_positive_int, require_known
from aggregator.state.claims import NEXT_PAGE
from aggregator.state.pending import (
    ArticleFailed,
    article_errback,
    article_meta,
    describe_failure,
    pending_to_retry,
)

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

# Unix times outside this range are junk, not dates (2000-01-01 .. 2100-01-01).
_MIN_TS, _MAX_TS = 946_684_800, 4_102_444_800


def parse_show_time(value: Any) -> datetime | None:
    """`show_time` is Unix seconds, usually as a string, sometimes missing or garbage."""
    if value is None or isinstance(value, bool):
        return None
    try:
        seconds = float(str(value).strip())
    except ValueError:
        return None
    if not _MIN_TS <= seconds < _MAX_TS:
        return None
    return datetime.fromtimestamp(int(seconds), UTC)


class QutoutiaoSpider(scrapy.Spider):
    name = "qutoutiao"
    arguments = ("cid", "pages", "limit", "categories", "author")
    site = "qutoutiao"
    default_categories = ("新媒体", "趣头条", "分类")
    default_author = "趣头条"

    def __init__(
        self,
        cid: str = "1",
        pages: str = "5",
        limit: str = "10",
        categories: str | None = None,
        author: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        options = self.parse_arguments(
            cid=cid, pages=pages, limit=limit, categories=categories, author=author
        )
        self.cids: list[str] = options["cid"]
        self.pages: int = options["pages"]
        self.limit: int = options["limit"]
        group, source, channel = options["categories"]
        self.channel = Channel(self.site, group, source, channel, options["author"])

    @classmethod
    def parse_arguments(cls, **arguments: Any) -> dict[str, Any]:
        """Check `-a` arguments before anything is crawled (raises ConfigError)."""
        require_known(arguments, cls.arguments)
        categories = arguments.get("categories")
        return {
            "cid": parse_list("cid", arguments.get("cid") or "1"),
            "pages": parse_positive_int("pages", arguments.get("pages") or 5),
            "limit": parse_positive_int("limit", arguments.get("limit") or 10),
            "categories": parse_categories(categories) if categories else cls.default_categories,
            "author": (arguments.get("author") or "").strip() or cls.default_author,
        }

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> QutoutiaoSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.api_base = crawler.settings.get("QUTOUTIAO_API_BASE").rstrip("/")
        spider.tracking_params = crawler.settings.getlist("TRACKING_QUERY_PARAMS")
        return spider

    # --- requests ----------------------------------------------------------------------------
    def listing_url(self, cid: str, page: int) -> str:
        query = urlencode({"cid": cid, "tn": 1, "page": page, "limit": self.limit})
        return f"{self.api_base}/content/outList?{query}"

    def listing_request(self, cid: str, page: int) -> scrapy.Request:
        return scrapy.Request(
            self.listing_url(cid, page),
            callback=self.parse_listing,
            errback=self.listing_failed,
            cb_kwargs={"cid": cid, "page": page},
            meta={NEXT_PAGE: page > 1},
        )

    async def start(self) -> AsyncIterator[Any]:
        for article in await pending_to_retry(self.crawler, self.site, self.channel.owns):
            request = self.detail_request(article.key, article.payload)
            logger.info("Retrying pending article %s <%s>", article.key, request.url)
            self.crawler.stats.inc_value(keys.ARTICLES_PENDING_RETRIED)
            yield request
        for cid in self.cids:
            yield self.listing_request(cid, 1)

    def detail_request(self, key: str, retry: dict[str, Any]) -> scrapy.Request:
        """The request for an article's body: its JSON detail if it has one, else its page.
        `retry` ({cid, entry, categories, author}) is what makes it again next run."""
        entry = retry["entry"]
        detail_url = (entry.get("detail_url") or "").strip()
        if detail_url:
            url, callback = detail_url, self.parse_detail_json
        else:
            url, callback = (entry.get("url") or "").strip(), self.parse_detail_html
        return scrapy.Request(
            url,
            callback=callback,
            errback=self.article_failed,
            meta=article_meta(key, self.site, retry),
        )

    # --- listings ----------------------------------------------------------------------------
    def parse_listing(self, response: Response, cid: str, page: int) -> Any:
        entries, has_more = self._listing_entries(response)
        if entries is None:
            return
        self.crawler.stats.inc_value(keys.LISTING_PAGES)
        if not entries:
            logger.info("Listing cid=%s page=%s is empty: %s", cid, page, response.url)
            return
        for key, entry in self._keyed_entries(entries, response.url):
            yield self.detail_request(
                key, {"cid": cid, "entry": entry, **self.channel.retry_fields()}
            )
        if has_more and page < self.pages:
            # followed only while this page shows something new (see aggregator.state.claims)
            yield self.listing_request(cid, page + 1)

    def _listing_entries(self, response: Response) -> tuple[list[Any] | None, bool]:
        try:
            document = json.loads(response.text)
        except (ValueError, AttributeError):
            self._listing_error(response.url, "not JSON")
            return None, False
        if not isinstance(document, dict) or document.get("code") != 0:
            code = document.get("code") if isinstance(document, dict) else None
            self._listing_error(response.url, f"code {code!r}")
            return None, False
        data = document.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("data", []), list):
            self._listing_error(response.url, "no data")
            return None, False
        return data.get("data") or [], bool(data.get("has_more"))

    def _keyed_entries(self, entries: list[Any], listing_url: str) -> list[tuple[str, dict]]:
        keyed = []
        for entry in entries:
            if not isinstance(entry, dict) or not (entry.get("url") or entry.get("detail_url")):
                logger.warning("Skipping a listing entry with no URL on %s: %r", listing_url, entry)
                self.crawler.stats.inc_value(keys.dropped("bad_listing_entry"))
                continue
            try:
                key = article_key(
                    self.site, entry.get("id"), entry.get("url"), self.tracking_params
                )
            except ValueError as exc:
                logger.warning("Skipping a listing entry on %s: %s", listing_url, exc)
                self.crawler.stats.inc_value(keys.dropped("bad_listing_entry"))
                continue
            keyed.append((key, entry))
        return keyed

    def _listing_error(self, url: str, reason: str) -> None:
        logger.error("Bad listing %s: %s", url, reason)
        self.crawler.stats.inc_value(keys.LISTING_FAILED)

    def listing_failed(self, failure: Failure) -> None:
        self._listing_error(failure.request.url, describe_failure(failure))

    def article_failed(self, failure: Failure) -> None:
        """Errback of article requests (a method of the spider, so that a cluster queue can
        carry it by name): the failure becomes an ArticleFailed spider error."""
        article_errback(failure)

    # --- details -----------------------------------------------------------------------------
    def parse_detail_json(self, response: Response) -> Article:
        try:
            document = json.loads(response.text)
        except (ValueError, AttributeError):
            raise ArticleFailed("detail is not JSON") from None
        body = document.get("detail") if isinstance(document, dict) else None
        if not isinstance(body, str) or not body.strip():
            raise ArticleFailed("detail has no body")
        return self._article(response, body)

    def parse_detail_html(self, response: Response) -> Article:
        content = response.css("div.content") if hasattr(response, "css") else []
        if not content:
            raise ArticleFailed("page has no div.content")
        body = inner_html(content[0].root)
        if not body.strip():
            raise ArticleFailed("div.content is empty")
        return self._article(response, body)

    def _article(self, response: Response, body: str) -> Article:
        retry = response.meta["article_retry"]
        entry = retry["entry"]
        cover = entry.get("cover")
        return self.channel.article(
            key=response.meta["article_key"],
            id=str(entry["id"]) if entry.get("id") is not None else None,
            url=(entry.get("url") or entry.get("detail_url") or "").strip(),
            title=entry.get("title") or "",
            body=body,
            published=parse_show_time(entry.get("show_time")),
            cover=[c for c in cover if isinstance(c, str)] if isinstance(cover, list) else [],
            retry=retry,
        )
