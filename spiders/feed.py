"""RSS 2.0 / RSS 1.0 / Atom feeds (RSSHub routes included) → articles.

Any feed becomes the same `Article` items the other spiders make, so normalising, dedupe and the
writers serve every source. Every feed shares the site name "feed": an article is identified by
its guid (else its canonical link), so the same article carried by two feeds is one post.

Re-runs are cheap: the feed request is conditional (ETag / Last-Modified from the last clean
run, kept in the state store) and a 304 ends the feed at once. In full-text mode
(`fulltext=<CSS selector>`) entries already published are never fetched again, and an entry
whose page fails is kept as pending and fetched first thing next run.
"""

from __future__ import annotations

import calendar
import io
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from html import escape as html_escape
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import cssselect
import feedparser
import scrapy
from feedparser.encodings import convert_to_utf8
from feedparser.sanitizer import replace_doctype
from lxml import etree
from parsel.csstranslator import HTMLTranslator
from scrapy.exceptions import DownloadCancelledError, IgnoreRequest
from scrapy.http import Response, TextResponse
from scrapy.utils.response import get_base_url
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure

from aggregator import stats as keys
from aggregator.errors import ConfigError
from aggregator.items import Article, Channel
from aggregator.keys import article_key, canonical_url
from aggregator.render.html import inner_html
from aggregator.spiderargs import parse_categories, require_known
from aggregator.state.component import crawl_state
from aggregator.state.pending import (
    ArticleFailed,
    article_errback,
    article_meta,
    describe_failure,
    pending_to_retry,
)

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

__all__ = ["FeedSpider", "entry_key", "feed_stat", "legacy_entry_key", "rsshub_url"]

logger = logging.getLogger(__name__)

SITE = "feed"


def feed_stat(name: str) -> str:
    """Stats key for what happened to feeds (not articles): `aggregator/feeds/<name>`."""
    return f"{keys.PREFIX}/feeds/{name}"


FEEDS_FETCHED = feed_stat("fetched")
FEEDS_NOT_MODIFIED = feed_stat("not_modified")
FEEDS_MALFORMED = feed_stat("malformed")
FEEDS_NOT_A_FEED = feed_stat("not_a_feed")
FEEDS_HTML = feed_stat("html_not_feed")
FEEDS_EMPTY = feed_stat("empty")
FEEDS_TOO_BIG = feed_stat("too_big")
FEEDS_ENTITY_EXPANSION = feed_stat("entity_expansion")
FEEDS_UNREACHABLE = feed_stat("unreachable")
FEED_ENTRIES = feed_stat("entries")

# Accept what feeds are served as, feed types first; some servers answer HTML to */* alone.
FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.5"
)
_HTML_START_RE = re.compile(
    rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.I | re.S
)
# bozo exceptions about the HTTP headers, not the document: the feed itself parsed cleanly.
_HEADER_ONLY_BOZO = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)
# How much text the entities declared in a feed's DTD may add once expanded (bytes).
MAX_ENTITY_EXPANSION = 1024 * 1024


# --- arguments ---------------------------------------------------------------------------------
def _is_http_url(value: str) -> bool:
    split = urlsplit(value)
    return split.scheme in ("http", "https") and bool(split.netloc)


def _check_http_url(name: str, value: str) -> str:
    if not _is_http_url(value):
        raise ConfigError(f"spider argument {name}={value!r}: expected an http(s) URL")
    return value


def _check_selector(value: str) -> str:
    try:
        HTMLTranslator().css_to_xpath(value)
    except cssselect.SelectorError as exc:
        raise ConfigError(f"spider argument fulltext={value!r}: not a CSS selector: {exc}") from exc
    return value


def rsshub_url(base: str, route: str) -> str:
    """`route` (e.g. `/zaker/channel/13`) on the RSSHub instance at `base` (RSSHUB_BASE)."""
    if not _is_http_url(base or ""):
        raise ConfigError(f"setting RSSHUB_BASE={base!r}: expected an http(s) URL")
    return base.rstrip("/") + "/" + route.lstrip("/")


# --- entries -----------------------------------------------------------------------------------
def _struct_to_datetime(value: time.struct_time | None) -> datetime | None:
    """feedparser's `*_parsed` values are UTC struct_times; None when absent or unusable."""
    if not value:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _as_html(detail: dict[str, Any]) -> str:
    """A feed text construct as HTML: plain text is escaped, paragraphs kept."""
    value = detail.get("value") or ""
    if "html" in (detail.get("type") or "text/html"):
        return value
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", value) if p.strip()]
    return "".join(
        "<p>" + html_escape(p, quote=False).replace("\n", "<br>") + "</p>" for p in paragraphs
    )


def _body_detail(entry: dict[str, Any]) -> dict[str, Any] | None:
    """content (content:encoded, Atom content) before summary (description, Atom summary)."""
    for detail in entry.get("content") or []:
        if (detail.get("value") or "").strip():
            return detail
    summary = entry.get("summary_detail")
    if summary and (summary.get("value") or "").strip():
        return summary
    return None


def _declared_base(detail: dict[str, Any] | None, document_url: str) -> str | None:
    """The xml:base in force for a text construct, when the document declared one (feedparser
    is given no document URL, so the base it reports is only ever a declared one)."""
    base = ((detail or {}).get("base") or "").strip()
    return urljoin(document_url, base) if base else None


def _cover(entry: dict[str, Any], base: str) -> list[str]:
    """The entry's own images (media:thumbnail, media:content, image enclosures), for posts
    whose body has none; NormalizeHtmlPipeline sends them through the image proxy."""
    found: list[str] = []
    for thumb in entry.get("media_thumbnail") or []:
        found.append(thumb.get("url") or "")
    for media in entry.get("media_content") or []:
        if media.get("medium") == "image" or (media.get("type") or "").startswith("image/"):
            found.append(media.get("url") or "")
    for enclosure in entry.get("enclosures") or []:
        if (enclosure.get("type") or "").startswith("image/"):
            found.append(enclosure.get("href") or "")
    absolute = [urljoin(base, url.strip()) for url in found if url and url.strip()]
    return list(dict.fromkeys(absolute))


def _is_url_guid(guid: str | None) -> bool:
    return bool(guid) and urlsplit(guid).scheme in ("http", "https")


def entity_expansion(body: bytes, headers: dict[str, str], limit: int) -> int:
    """How many bytes the entity references in `body` add when feedparser expands them, or
    the first count past `limit` (the scan stops there).

    feedparser keeps only the general entities of the DTD's internal subset whose value is
    literal text or one character reference (no nesting: no billion laughs), and both its
    parsers expand them; but one 8 MB entity referenced 90 times is 720 MB of text, and GiBs
    once feedparser has copied it about. This mirrors what feedparser does with the document
    (its own encoding detection and DOCTYPE handling), so the count is of what it would
    expand; every reference counts, even one in CDATA (an overestimate)."""
    _, data, entities = replace_doctype(convert_to_utf8(dict(headers), body, {}))
    if not entities:
        return 0
    sizes = {name.encode(): len(value.encode()) for name, value in entities.items()}
    references = re.compile(b"&(" + b"|".join(re.escape(name) for name in sizes) + b");")
    total = 0
    for match in references.finditer(data):
        total += sizes[match.group(1)]
        if total > limit:
            break
    return total


def entry_key(
    guid: str | None, link: str | None, tracking_params: Iterable[str], *, permalink: bool = True
) -> str:
    """The guid identifies the article. A guid that is an http(s) URL is keyed as that URL
    (canonicalised), so it matches the same article in a feed that only gives the link.

    Its fragment is part of the key (`http://del.icio.us/user#2009-01-21` and `...#2009-01-18`
    are two entries of one page), unless the guid is the entry's permalink: `permalink` (its
    isPermaLink is true or absent) and the same URL as the entry's link, fragment included.
    Then it is keyed like a link, without the fragment, as it always was."""
    if _is_url_guid(guid):
        assert guid is not None
        if permalink and link and _same_url(guid, link, tracking_params):
            return article_key(SITE, None, guid, tracking_params)
        return article_key(SITE, None, guid, tracking_params, keep_fragments=True)
    return article_key(SITE, guid, link, tracking_params)


def legacy_entry_key(guid: str | None, tracking_params: Iterable[str]) -> str | None:
    """The key a URL guid had before fragments counted (the canonical URL without fragment):
    an entry whose old key is published was posted under it and is not posted again."""
    if _is_url_guid(guid):
        return article_key(SITE, None, guid, tracking_params)
    return None


def _same_url(a: str, b: str, tracking_params: Iterable[str]) -> bool:
    params = list(tracking_params)
    return canonical_url(a, params, keep_fragments=True) == canonical_url(
        b, params, keep_fragments=True
    )


def guids_not_permalinks(body: bytes) -> set[str]:
    """The RSS guids whose isPermaLink is not "true" (feedparser's reading), as feedparser
    reports them (stripped). feedparser keeps no trace of the attribute (its `guidislink` is
    false too when <link> comes before <guid>), so the document is read once more, by lxml,
    without entities, DTD or network."""
    parser = etree.XMLParser(
        recover=True, resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False
    )
    try:
        root = etree.fromstring(body, parser)
    except (etree.XMLSyntaxError, ValueError):
        return set()
    if root is None:
        return set()
    found: set[str] = set()
    for guid in root.iter("guid"):
        flag = next((v for k, v in guid.attrib.items() if k.lower() == "ispermalink"), None)
        if flag is not None and flag.strip().lower() != "true":
            found.add("".join(guid.itertext()).strip())
    return found


class FeedSpider(scrapy.Spider):
    """`scrapy crawl feed -a url=<feed> | -a route=<RSSHub route>
    -a categories=group,source,channel -a author=<name> [-a fulltext=<CSS selector>]`"""

    name = "feed"
    arguments = ("url", "route", "categories", "author", "fulltext")
    site = SITE
    # One feed response yields every entry as an item: let them go through the pipeline (and
    # wait for their writes) together, as Scrapy's default does. The project's 1 is for
    # callbacks that yield one item each.
    custom_settings = {"CONCURRENT_ITEMS": 100}

    def __init__(
        self,
        url: str | None = None,
        route: str | None = None,
        categories: str | None = None,
        author: str | None = None,
        fulltext: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        options = self.parse_arguments(
            url=url, route=route, categories=categories, author=author, fulltext=fulltext
        )
        self.url: str | None = options["url"]
        self.route: str | None = options["route"]
        group, source, channel = options["categories"]
        self.channel = Channel(SITE, group, source, channel, options["author"])
        self.fulltext: str | None = options["fulltext"]
        self.feed_url: str = self.url or ""
        self.validators: dict[str, str | None] | None = None
        self.tracking_params: list[str] = []

    @classmethod
    def parse_arguments(cls, **arguments: Any) -> dict[str, Any]:
        """Check `-a` arguments before anything is crawled (raises ConfigError)."""
        require_known(arguments, cls.arguments)
        url = (arguments.get("url") or "").strip() or None
        route = (arguments.get("route") or "").strip() or None
        if bool(url) == bool(route):
            raise ConfigError(
                "give exactly one spider argument: url=<feed URL> or route=<RSSHub route>"
            )
        if url:
            _check_http_url("url", url)
        if route and "://" in route:
            raise ConfigError(
                f"spider argument route={route!r}: a route is a path such as "
                "/zaker/channel/13; give a full address as url="
            )
        categories = arguments.get("categories")
        if not categories:
            raise ConfigError(
                "spider argument categories=group,source,channel is required "
                "(e.g. categories=新媒体,ZAKER,channel)"
            )
        author = (arguments.get("author") or "").strip()
        if not author:
            raise ConfigError("spider argument author=<name> is required (e.g. author=ZAKER)")
        fulltext = (arguments.get("fulltext") or "").strip() or None
        return {
            "url": url,
            "route": route,
            "categories": parse_categories(categories),
            "author": author,
            "fulltext": _check_selector(fulltext) if fulltext else None,
        }

    @classmethod
    def check_settings(cls, settings: BaseSettings, arguments: dict[str, Any]) -> None:
        """A route needs a usable RSSHUB_BASE; checked with the arguments, before any crawl."""
        route = (arguments.get("route") or "").strip()
        if route:
            rsshub_url(settings.get("RSSHUB_BASE"), route)

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> FeedSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        if spider.route:
            spider.feed_url = rsshub_url(crawler.settings.get("RSSHUB_BASE"), spider.route)
        spider.tracking_params = crawler.settings.getlist("TRACKING_QUERY_PARAMS")
        return spider

    # --- state -------------------------------------------------------------------------------
    def _validator_names(self) -> tuple[str, str]:
        return f"feed:etag:{self.feed_url}", f"feed:last-modified:{self.feed_url}"

    async def closed(self, reason: str) -> None:
        """Keep the validators of this run's 200 only when the run finished with no failure.

        Saved earlier, a run that died or failed part-way would make the next run get a 304
        for a feed whose entries were never all handled, and they would stay hidden as long
        as the feed does not change. Not saved, the next run downloads and parses the feed
        once more and skips the published entries: cheap."""
        if self.validators is None:
            return
        failures = keys.failures(self.crawler.stats.get_stats())
        if reason != "finished" or failures:
            logger.info(
                "Not saving the validators of %s: the run %s with %d failure(s); "
                "it will be fetched in full next time",
                self.feed_url,
                reason,
                failures,
            )
            return
        etag_name, modified_name = self._validator_names()
        # the state closes when the engine stops, after every spider_closed handler
        records = (await crawl_state(self.crawler).open()).records
        await records.set(etag_name, self.validators.get("etag"))
        await records.set(modified_name, self.validators.get("last_modified"))

    # --- requests ----------------------------------------------------------------------------
    async def start(self) -> AsyncIterator[Any]:
        for article in await pending_to_retry(self.crawler, self.site, self.owns_pending):
            logger.info(
                "Retrying pending article %s <%s>",
                article.key,
                article.payload["entry"].get("link"),
            )
            self.crawler.stats.inc_value(keys.ARTICLES_PENDING_RETRIED)
            output = self._entry_output(article.key, article.payload)
            if output is not None:
                yield output
        yield await self.feed_request()

    def owns_pending(self, payload: dict[str, Any]) -> bool:
        """Entries of this feed that failed last time (another feed's entries wait for it)."""
        return payload.get("feed") == self.feed_url

    async def feed_request(self) -> scrapy.Request:
        etag_name, modified_name = self._validator_names()
        headers = {"Accept": FEED_ACCEPT}
        records = (await crawl_state(self.crawler).open()).records
        etag, modified = await records.get(etag_name), await records.get(modified_name)
        if etag:
            headers["If-None-Match"] = etag
        if modified:
            headers["If-Modified-Since"] = modified
        return scrapy.Request(
            self.feed_url,
            headers=headers,
            callback=self.parse_feed,
            errback=self.feed_failed,
            dont_filter=True,
            meta={"handle_httpstatus_list": [304], "conditional": bool(etag or modified)},
        )

    def _entry_output(self, key: str, payload: dict[str, Any]) -> Any:
        """The article itself, or in full-text mode the request for its page."""
        entry = payload["entry"]
        if not self.fulltext:
            return self._article(key, payload, entry.get("body") or "", entry.get("base"))
        link = entry.get("link")
        if not link:
            logger.warning(
                "Entry %s of %s has no link to fetch the full text from: skipped",
                key,
                self.feed_url,
            )
            self.crawler.stats.inc_value(keys.dropped("no_link_for_fulltext"))
            return None
        # Not filtered: two entries may share a page (a live blog's updates), and the second
        # must get its body rather than vanish in the dupefilter. Each entry is requested at
        # most once per run, and published entries never.
        return scrapy.Request(
            link,
            callback=self.parse_fulltext,
            errback=self.article_failed,
            meta=article_meta(key, self.site, payload, aliases=payload.get("aliases", ())),
            dont_filter=True,
        )

    def article_failed(self, failure: Failure) -> None:
        """Errback of article requests (a method of the spider, so that a cluster queue can
        carry it by name): the failure becomes an ArticleFailed spider error."""
        article_errback(failure)

    # --- the feed ----------------------------------------------------------------------------
    def parse_feed(self, response: Response) -> Any:
        if response.status == 304:
            return self._not_modified(response)
        parsed = self._parse_document(response)
        if parsed is None:
            return None
        self.validators = {
            "etag": _header(response, b"ETag"),
            "last_modified": _header(response, b"Last-Modified"),
        }
        self.crawler.stats.inc_value(keys.LISTING_PAGES)
        self.crawler.stats.inc_value(FEEDS_FETCHED)
        return self._entries_output(parsed, response.url, response.body)

    def _not_modified(self, response: Response) -> None:
        if not response.meta.get("conditional"):
            self._feed_error(
                FEEDS_UNREACHABLE, response.url, "HTTP 304 to an unconditional request"
            )
            return
        logger.info("Feed %s is not modified since the last run", response.url)
        self.crawler.stats.inc_value(FEEDS_NOT_MODIFIED)

    def _parse_document(self, response: Response) -> Any:
        # No content-location: feedparser would resolve guids against it, and a guid is an
        # identifier (the same feed from two RSSHub instances must give the same keys).
        # Links and image addresses are resolved below instead.
        headers = {}
        content_type = _header(response, b"Content-Type")
        if content_type:
            headers["content-type"] = content_type
        try:
            expansion = entity_expansion(response.body, headers, MAX_ENTITY_EXPANSION)
        except Exception as exc:  # the same code feedparser.parse runs: its failure is a bad feed
            self._feed_error(FEEDS_NOT_A_FEED, response.url, f"feedparser failed: {exc!r}")
            return None
        if expansion > MAX_ENTITY_EXPANSION:
            reason = (
                "entity declarations in the DTD expand to more than "
                f"{MAX_ENTITY_EXPANSION} bytes: not parsed"
            )
            self._feed_error(FEEDS_ENTITY_EXPANSION, response.url, reason)
            return None
        try:
            parsed = feedparser.parse(
                io.BytesIO(response.body),
                response_headers=headers,
                resolve_relative_uris=False,  # the normaliser resolves against the entry link
                sanitize_html=False,  # NormalizeHtmlPipeline sanitises every body the same way
            )
        except Exception as exc:  # feedparser on untrusted bytes: any failure is a bad feed
            self._feed_error(FEEDS_NOT_A_FEED, response.url, f"feedparser failed: {exc!r}")
            return None
        entries = parsed.get("entries") or []
        version = parsed.get("version") or ""
        problem = parsed.get("bozo_exception") if parsed.get("bozo") else None
        if not entries:
            if version:
                self._feed_error(FEEDS_EMPTY, response.url, f"{version} feed without entries")
            elif _looks_like_html(response):
                self._feed_error(FEEDS_HTML, response.url, "an HTML page, not a feed")
            else:
                detail = f" ({problem})" if problem is not None else ""
                self._feed_error(FEEDS_NOT_A_FEED, response.url, f"not a feed{detail}")
            return None
        if problem is not None and not isinstance(problem, _HEADER_ONLY_BOZO):
            logger.warning(
                "Feed %s is malformed (%s); using the %d entries feedparser recovered",
                response.url,
                problem,
                len(entries),
            )
            self.crawler.stats.inc_value(FEEDS_MALFORMED)
        elif problem is not None:
            logger.info("Feed %s: %s", response.url, problem)
        logger.info(
            "Feed %s (%s, %r): %d entries",
            response.url,
            version or "unknown format",
            parsed.get("feed", {}).get("title", ""),
            len(entries),
        )
        return parsed

    def _entries_output(self, parsed: Any, document_url: str, body: bytes) -> list[Any]:
        keyed: list[tuple[str, dict[str, Any]]] = []
        self.crawler.stats.inc_value(FEED_ENTRIES, len(parsed.entries))
        # Only a URL guid with a fragment is keyed differently when it is no permalink.
        fragments = any(
            "#" in (guid := (entry.get("id") or "").strip().lower())
            and guid.startswith(("http://", "https://"))
            for entry in parsed.entries
        )
        not_permalinks = guids_not_permalinks(body) if fragments else set()
        for entry in parsed.entries:
            payload = self._entry_payload(entry, document_url, not_permalinks)
            if payload is None:
                continue
            keyed.append(payload)
            key, retry = payload
            old = legacy_entry_key(retry["entry"]["guid"], self.tracking_params)
            if old is not None and old != key:
                # published under its old key: the claim middleware counts it as published
                retry["aliases"] = [old]
        output = []
        for key, payload in keyed:
            result = self._entry_output(key, payload)
            if result is not None:
                output.append(result)
        return output

    def _entry_payload(
        self, entry: dict[str, Any], document_url: str, not_permalinks: set[str]
    ) -> tuple[str, dict[str, Any]] | None:
        """The key of an entry and what is needed to make it an article, now or next run."""
        guid = (entry.get("id") or "").strip() or None
        link = _http_url(document_url, entry.get("link") or "")
        try:
            permalink = guid not in not_permalinks
            key = entry_key(guid, link, self.tracking_params, permalink=permalink)
        except ValueError as exc:
            logger.warning(
                "Skipping an entry of %s: %s (%r)", document_url, exc, entry.get("title")
            )
            self.crawler.stats.inc_value(keys.dropped("bad_feed_entry"))
            return None
        detail = _body_detail(entry)
        published = _struct_to_datetime(entry.get("published_parsed")) or _struct_to_datetime(
            entry.get("updated_parsed")
        )
        base = _declared_base(detail, document_url)
        entry_payload = {
            "guid": guid,
            "link": link,
            "title": entry.get("title") or "",
            "body": _as_html(detail) if detail else "",
            "published": published.isoformat() if published else None,
            "cover": _cover(entry, base or document_url),
            "base": base,
        }
        return key, {"feed": self.feed_url, "entry": entry_payload}

    def _feed_error(self, stat: str, url: str, reason: str) -> None:
        logger.error("Bad feed %s: %s", url, reason)
        self.crawler.stats.inc_value(stat)
        self.crawler.stats.inc_value(keys.LISTING_FAILED)

    def feed_failed(self, failure: Failure) -> None:
        url = failure.request.url
        maxsize = failure.request.meta.get(
            "download_maxsize", self.crawler.settings.getint("DOWNLOAD_MAXSIZE")
        )
        if failure.check(DownloadCancelledError, CancelledError):
            reason = f"larger than DOWNLOAD_MAXSIZE ({maxsize} bytes): download cancelled"
            self._feed_error(FEEDS_TOO_BIG, url, reason)
        elif failure.check(IgnoreRequest) and _too_big_decompressed(failure.value):
            reason = f"larger than DOWNLOAD_MAXSIZE ({maxsize} bytes) once decompressed: dropped"
            self._feed_error(FEEDS_TOO_BIG, url, reason)
        else:
            self._feed_error(FEEDS_UNREACHABLE, url, describe_failure(failure))

    # --- articles ----------------------------------------------------------------------------
    def _article(self, key: str, retry: dict[str, Any], body: str, base: str | None) -> Article:
        entry = retry["entry"]
        url = entry.get("link") or self.feed_url
        published = entry.get("published")
        return self.channel.article(
            key=key,
            retry=retry,
            aliases=list(retry.get("aliases", ())),
            id=entry.get("guid"),
            url=url,
            title=entry.get("title") or "",
            body=body,
            published=datetime.fromisoformat(published) if published else None,
            cover=list(entry.get("cover") or []),
            # NormalizeHtmlPipeline resolves the body's addresses; against this base when the
            # body's own (xml:base, the full-text page) is not the entry link.
            base_url=base if base and base != url else None,
        )

    def parse_fulltext(self, response: Response) -> Article:
        assert self.fulltext is not None
        if not isinstance(response, TextResponse):
            raise ArticleFailed("the page is not text")
        nodes = response.css(self.fulltext)
        if not nodes:
            raise ArticleFailed(f"nothing matches {self.fulltext!r}")
        node = nodes[0].root
        if not hasattr(node, "iterchildren"):
            raise ArticleFailed(f"{self.fulltext!r} is not an element")
        body = inner_html(node)
        if not body.strip():
            raise ArticleFailed(f"{self.fulltext!r} is empty")
        meta = response.meta
        return self._article(
            meta["article_key"], meta["article_retry"], body, get_base_url(response)
        )


def _http_url(base: str, value: str) -> str | None:
    """`value` made absolute, when it is an http(s) address (an entry link may be relative;
    `javascript:` and the like are no article address)."""
    value = value.strip()
    if not value:
        return None
    try:
        url = urljoin(base, value)
        split = urlsplit(url)
    except ValueError:
        return None
    return url if split.scheme in ("http", "https") and split.netloc else None


def _too_big_decompressed(exc: BaseException) -> bool:
    """Whether Scrapy's HttpCompressionMiddleware dropped the response because its body grew
    past DOWNLOAD_MAXSIZE while being decompressed (a gzip bomb, or merely a big feed sent
    compressed). It raises IgnoreRequest from its own (private) exception, which carries the
    sizes; the message is the fallback."""
    cause = exc.__cause__
    if cause is not None and hasattr(cause, "decompressed_size") and hasattr(cause, "max_size"):
        return True
    return "DOWNLOAD_MAXSIZE" in str(exc) and "decompress" in str(exc)


def _header(response: Response, name: bytes) -> str | None:
    value = response.headers.get(name)
    if not value:
        return None
    return value.decode("latin-1").strip() or None


def _looks_like_html(response: Response) -> bool:
    content_type = (_header(response, b"Content-Type") or "").lower()
    return "html" in content_type or bool(_HTML_START_RE.match(response.body[:4096]))
