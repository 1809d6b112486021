"""Mirror every image of an article into the blog's own storage (IMAGES_MIRROR_URI), then point
the post at the stored copies (IMAGES_MIRROR_BASE_URL + path). Off unless IMAGES_MIRROR_URI is
set: the pipeline raises NotConfigured and nothing changes.

Built on Scrapy's FilesPipeline: images are requested through the crawler's own downloader
(its concurrency, AutoThrottle, retries, proxies and stats), each URL once per run, a stored one
is looked up with the store's `stat_file` before any download (`media_to_download`), and the
store is chosen by the URI's scheme. What it changes:

- the path (`file_path`) is a digest of the source URL and of the bytes, with the extension of
  the type sniffed from the bytes (aggregator.images.paths, aggregator.images.sniff);
- only JPEG, PNG, GIF, WebP and AVIF are stored, byte for byte; anything else, an empty body,
  an HTTP error or a file over IMAGES_MIRROR_MAXSIZE is refused;
- stores are built from the crawler's settings (aggregator.images.stores) instead of through
  FilesPipeline's class attributes, and never overwrite;
- IMAGES_MIRROR_EXPIRES replaces FILES_EXPIRES (0, the default: a stored image never expires);
- redirects are followed (image CDNs redirect), and each request carries the Referer
  IMAGES_MIRROR_REFERER asks for (by default the article's URL);
- an image that cannot be mirrored is no error: it keeps its proxied address, is counted under
  `aggregator/images/failed/<reason>` and logged with the article's key. With
  IMAGES_MIRROR_REQUIRED the article fails instead (ImagesNotMirrored) and is kept pending.

Which images: the normaliser records every image URL with the address it wrote
(`Article.image_sources`, see pipelines/normalize.py); this pipeline finds the addresses in the
sanitised body and in `headimg`, downloads their originals, and rewrites those attributes.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING, Any, ClassVar

import scrapy.exceptions as scrapy_exceptions
from itemadapter import ItemAdapter
from scrapy.exceptions import CloseSpider, IgnoreRequest, NotConfigured
from scrapy.http import Request
from scrapy.http.request import NO_CALLBACK
from scrapy.pipelines.files import FilesPipeline
from scrapy.utils.datatypes import SequenceExclude
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import defer
from twisted.internet import error as twisted_errors

from aggregator.errors import ConfigError
from aggregator.images import STAT_ALREADY_STORED, STAT_BYTES, STAT_MIRRORED, failed_stat
from aggregator.images.addresses import image_addresses, rewrite_image_addresses
from aggregator.images.paths import image_path, mirrored_address, stem
from aggregator.images.settings import MirrorSettings, store_scheme
from aggregator.images.sniff import Refused, sniff
from aggregator.images.stores import DirectoryImageStore, S3ImageStore
from aggregator.state.pending import ArticleFailed

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.pipelines.media import FileInfo, FileInfoOrError, MediaPipeline
    from twisted.python.failure import Failure

__all__ = ["ImageMirrorPipeline", "ImagesNotMirrored"]

logger = logging.getLogger(__name__)

_HTTP = ("http://", "https://")
_TIMEOUTS: tuple[type[BaseException], ...] = tuple(
    t
    for t in (
        twisted_errors.TimeoutError,
        twisted_errors.TCPTimedOutError,
        getattr(scrapy_exceptions, "DownloadTimeoutError", None),  # Scrapy >= 2.14,
    )
    if t is not None
)
_CANCELLED: tuple[type[BaseException], ...] = tuple(
    t
    for t in (
        defer.CancelledError,
        getattr(scrapy_exceptions, "DownloadCancelledError", None),
    )
    if t is not None
)


class ImagesNotMirrored(ArticleFailed):
    """IMAGES_MIRROR_REQUIRED is set and some images of the article could not be mirrored: the
    item errors instead of being published, and the pending recorder keeps it for a retry."""

    def __init__(self, key: str, url: str, failures: list[tuple[str, str, str]]):
        self.key = key
        self.url = url
        self.failures = failures  # (image URL, reason, detail)
        listed = ", ".join(f"{image} ({reason})" for image, reason, _ in failures)
        super().__init__(f"{len(failures)} image(s) not mirrored: {listed}")


def _classify(exc: BaseException | None) -> tuple[str, str]:
    """(reason, detail) of a download that raised instead of answering."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, IgnoreRequest):
        return "filtered", text
    if isinstance(exc, _TIMEOUTS):
        return "timeout", text
    if isinstance(exc, _CANCELLED) and "max size" in str(exc):
        return "too_big", str(exc)
    return "download_error", text


@dataclass
class _Plan:
    """The images of one article: (original URL, its address in the post, its request)."""

    entries: list[tuple[str, str, Request]] = field(default_factory=list)


class ImageMirrorPipeline(FilesPipeline):
    MEDIA_NAME = "image"
    STORE_SCHEMES: ClassVar[dict[str, Any]] = {
        "": DirectoryImageStore,
        "file": DirectoryImageStore,
        "s3": S3ImageStore,
    }

    def __init__(
        self,
        store_uri: str,
        download_func: None = None,
        *,
        crawler: Crawler,
        mirror: MirrorSettings | None = None,
    ):
        self.mirror = mirror or MirrorSettings.from_settings(crawler.settings)
        self._crawler_for_store = crawler  # _get_store runs inside FilesPipeline.__init__
        super().__init__(store_uri, crawler=crawler)
        # IMAGES_MIRROR_EXPIRES, not FILES_EXPIRES: days; 0 means never
        self.expires = self.mirror.expires_days  # type: ignore[assignment]
        # image hosts redirect (http -> https, CDNs); FilesPipeline would fail on a 3xx
        self.allow_redirects = True
        self.handle_httpstatus_list = SequenceExclude(range(300, 400))
        self.stats = crawler.stats
        self._plans: dict[int, _Plan] = {}
        self._failures: dict[str, tuple[str, str]] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ImageMirrorPipeline:
        # NotConfigured without arguments when IMAGES_MIRROR_URI is unset: Scrapy leaves the
        # pipeline out silently. No FilesPipeline._update_stores: stores read the settings.
        mirror = MirrorSettings.from_settings(crawler.settings)
        return cls(mirror.uri, crawler=crawler, mirror=mirror)

    def _get_store(self, uri: str) -> Any:
        store_class = self.STORE_SCHEMES[store_scheme(uri)]
        return store_class.from_crawler(self._crawler_for_store, uri)

    # --- lifecycle ---------------------------------------------------------------------------
    async def open_spider(self) -> None:
        super().open_spider()
        try:
            opened = self.store.open()
            if opened is not None:
                await maybe_deferred_to_future(opened)
        except (ConfigError, NotConfigured) as exc:
            logger.error("Cannot mirror images: %s", exc)
            raise CloseSpider("images_unavailable") from exc
        logger.info("Mirroring images to %s, served at %s", self.mirror.uri, self.mirror.base_url)

    def close_spider(self) -> None:
        self.store.close()

    # --- which images ------------------------------------------------------------------------
    def _plan(self, item: ItemAdapter) -> _Plan:
        """The originals behind the image addresses in the body and headimg, once each."""
        originals: dict[str, str] = {}  # address -> original
        for original, address in (item.get("image_sources") or {}).items():
            if original.startswith(_HTTP):
                originals.setdefault(address, original)
        plan = _Plan()
        wanted = image_addresses(item["body"])
        if item.get("headimg"):
            wanted.append(item["headimg"])
        seen: set[str] = set()
        for address in wanted:
            original = originals.get(address)
            if original is None or original in seen:
                continue
            seen.add(original)
            try:
                request = self._request(original, item)
            except ValueError as exc:
                logger.warning("Image %s of %s: bad URL (%s)", original, item["key"], exc)
                self.stats.inc_value(failed_stat("bad_url"))
                continue
            plan.entries.append((original, address, request))
        return plan

    def _request(self, url: str, item: ItemAdapter) -> Request:
        headers = {}
        referer = self.mirror.referer.referer(url, item["url"])
        if referer:
            headers["Referer"] = referer
        return Request(
            url,
            callback=NO_CALLBACK,
            headers=headers,
            # cancelled as soon as the announced (or received) size is over the limit
            meta={"download_maxsize": self.mirror.maxsize, "article_key": item["key"]},
        )

    async def process_item(self, item: Any) -> Any:  # type: ignore[override]
        plan = self._plan(ItemAdapter(item))
        if not plan.entries:
            return item
        self._plans[id(item)] = plan
        try:
            return await super().process_item(item)
        finally:
            del self._plans[id(item)]

    def get_media_requests(self, item: Any, info: MediaPipeline.SpiderInfo) -> list[Request]:
        return [request for _, _, request in self._plans[id(item)].entries]

    # --- stored already? ---------------------------------------------------------------------
    def file_path(
        self,
        request: Request,
        response: Response | None = None,
        info: MediaPipeline.SpiderInfo | None = None,
        *,
        item: Any = None,
    ) -> str:
        """With the response: `{u[:2]}/{u}-{c}.{ext}` (see aggregator.images.paths). Without
        it: the stem `{u[:2]}/{u}` every version of this URL is stored under."""
        if response is None:
            return stem(request.url)
        kind = sniff(response.body)
        if isinstance(kind, Refused):
            raise ValueError(f"{request.url}: {kind.detail}")
        return image_path(request.url, response.body, kind)

    async def media_to_download(  # type: ignore[override]
        self, request: Request, info: MediaPipeline.SpiderInfo, *, item: Any = None
    ) -> FileInfo | None:
        try:
            found = await maybe_deferred_to_future(
                self.store.stat_file(self.file_path(request, info=info), info)
            )
        except Exception as exc:
            logger.warning("Could not look up %s in the image store: %s", request.url, exc)
            return None  # download it; storing will tell
        if not found or not self.is_fresh(found):
            return None  # downloaded (again: changed bytes get a name of their own)
        self.inc_stats("uptodate")
        self.stats.inc_value(STAT_ALREADY_STORED)
        return {
            "url": request.url,
            "path": found["path"],
            "checksum": found.get("checksum"),
            "status": "uptodate",
        }

    def is_fresh(self, stored: dict[str, Any]) -> bool:
        """A stored image is used as it is, unless IMAGES_MIRROR_EXPIRES (days) is set and it
        was stored longer ago than that."""
        age = time.time() - float(stored.get("last_modified") or 0)
        return not self.expires or age <= self.expires * 86400

    # --- downloaded: check and store ---------------------------------------------------------
    def _failed(self, request: Request, reason: str, detail: str) -> None:
        """Remember why `request` gave no image; item_completed reports it per article. The
        result is None, not an exception: MediaPipeline would log each with a traceback."""
        self._failures[request.url] = (reason, detail)

    async def media_downloaded(  # type: ignore[override]
        self,
        response: Response,
        request: Request,
        info: MediaPipeline.SpiderInfo,
        *,
        item: Any = None,
    ) -> FileInfo | None:
        if response.status != 200:
            self._failed(request, f"http_{response.status}", f"HTTP {response.status}")
            return None
        body = response.body
        if len(body) > self.mirror.maxsize:
            self._failed(request, "too_big", f"{len(body)} bytes > IMAGES_MIRROR_MAXSIZE")
            return None
        kind = sniff(body)
        if isinstance(kind, Refused):
            self._failed(request, kind.reason, kind.detail)
            return None
        self.inc_stats("downloaded")
        path = self.file_path(request, response, info, item=item)
        try:
            created = await maybe_deferred_to_future(
                self.store.persist_file(
                    path,
                    BytesIO(body),
                    info,
                    meta={"source-url": request.url},
                    headers={"Content-Type": kind.content_type},
                )
            )
        except Exception as exc:
            self._failed(request, "store_error", f"{self.store.location(path)}: {exc}")
            return None
        if created:
            self.stats.inc_value(STAT_MIRRORED)
            self.stats.inc_value(STAT_BYTES, len(body))
        else:
            self.stats.inc_value(STAT_ALREADY_STORED)
        return {
            "url": request.url,
            "path": path,
            "checksum": hashlib.sha256(body).hexdigest(),
            "status": "downloaded",
        }

    def media_failed(  # type: ignore[override]
        self, failure: Failure, request: Request, info: MediaPipeline.SpiderInfo
    ) -> None:
        self._failed(request, *_classify(failure.value))

    # --- the post ----------------------------------------------------------------------------
    def item_completed(
        self, results: list[FileInfoOrError], item: Any, info: MediaPipeline.SpiderInfo
    ) -> Any:
        plan = self._plans[id(item)]
        adapter = ItemAdapter(item)
        mirrored: dict[str, str] = {}  # address in the post -> mirrored address
        stored: list[str] = []
        failures: list[tuple[str, str, str]] = []
        for (original, address, request), (ok, value) in zip(plan.entries, results, strict=True):
            if ok and value and value.get("path"):
                mirrored[address] = mirrored_address(self.mirror.base_url, value["path"])
                stored.append(self.store.object_key(value["path"]))
                continue
            if ok:
                reason, detail = self._failures.get(request.url, ("download_error", "no answer"))
            else:
                reason, detail = _classify(getattr(value, "value", None))
            failures.append((original, reason, detail))
            self.stats.inc_value(failed_stat(reason))
            logger.warning(
                "Image %s of %s <%s> not mirrored: %s; it keeps its proxied address",
                original,
                adapter["key"],
                adapter["url"],
                detail,
            )
        if failures and self.mirror.required:
            raise ImagesNotMirrored(adapter["key"], adapter["url"], failures)
        if mirrored:
            adapter["body"] = rewrite_image_addresses(adapter["body"], lambda a: mirrored.get(a, a))
            adapter["images"] = [mirrored.get(a, a) for a in adapter.get("images") or []]
            if adapter.get("headimg"):
                adapter["headimg"] = mirrored.get(adapter["headimg"], adapter["headimg"])
        adapter["mirrored_images"] = list(dict.fromkeys(stored))
        return item
