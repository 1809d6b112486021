"""Where posts go. Backends sit behind one small protocol and are chosen by the scheme of
`OUTPUT_URI` through `POST_STORAGES`, as Scrapy chooses feed storages and FilesPipeline stores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from scrapy.exceptions import NotConfigured
from scrapy.utils.misc import load_object

from aggregator.errors import ConfigError

if TYPE_CHECKING:
    from scrapy import Spider
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings
    from twisted.internet.defer import Deferred

__all__ = [
    "PostRecord",
    "PostStorage",
    "StoreResult",
    "build_post_storage",
    "check_output_settings",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PostRecord:
    """A rendered post and what a backend may want to say about it. `images`: the mirrored
    image objects the post points at (keys in IMAGES_MIRROR_URI), for the S3 manifest."""

    key: str
    site: str
    title: str
    url: str
    published: datetime
    data: bytes
    images: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoreResult:
    """`created` is False when the post already existed (another writer got there first)."""

    location: str
    created: bool = True


class PostStorage(Protocol):
    """What every backend implements. A backend may also offer `async persist_batch(posts) ->
    list[StoreResult | Exception]` (one outcome per post, in order; the file storage does):
    the write pipeline then commits posts in groups (see pipelines/write.py, GroupCommit)."""

    def open(self, spider: Spider) -> Deferred[None] | None:
        """Check the destination before any request is sent, so a bad one fails at once."""

    def persist(self, post: PostRecord) -> Deferred[StoreResult]:
        """Write one post; fires when it is durably stored (or fails)."""

    def close(self, spider: Spider) -> Deferred[None] | None:
        """Finish the run's bookkeeping. The write pipeline awaits every write (and commits
        what its group commit still holds) before it closes the storage, so no write is in
        flight here."""


def _storage_class(settings: BaseSettings) -> tuple[str, Any]:
    """OUTPUT_URI and the backend class registered for its scheme in POST_STORAGES."""
    uri = str(settings.get("OUTPUT_URI") or "")
    if not uri:
        raise NotConfigured("OUTPUT_URI is empty: set a directory or s3://bucket/prefix")
    scheme = urlparse(uri).scheme
    if len(scheme) == 1:  # a Windows drive letter, not a scheme
        scheme = ""
    storages = settings.getdict("POST_STORAGES")
    if scheme not in storages:
        raise NotConfigured(
            f"OUTPUT_URI {uri!r}: no storage for scheme {scheme!r} (known: {sorted(storages)})"
        )
    return uri, load_object(storages[scheme])


def build_post_storage(crawler: Crawler) -> Any:
    """The storage OUTPUT_URI names, built from the backend registered for its scheme."""
    uri, storage_class = _storage_class(crawler.settings)
    return storage_class.from_crawler(crawler, uri)


def _check_batching(settings: BaseSettings) -> None:
    """OUTPUT_BATCH_SIZE must be a whole number >= 1, OUTPUT_BATCH_DELAY seconds >= 0,
    OUTPUT_SYNC fsync or syncfs."""
    try:
        size = settings.getint("OUTPUT_BATCH_SIZE", 100)
        delay = settings.getfloat("OUTPUT_BATCH_DELAY", 0.1)
    except ValueError as exc:
        raise ConfigError(f"OUTPUT_BATCH_SIZE / OUTPUT_BATCH_DELAY: {exc}") from exc
    if size < 1:
        raise ConfigError(f"OUTPUT_BATCH_SIZE must be 1 or more, not {size}")
    if not delay >= 0:  # NaN too
        raise ConfigError(f"OUTPUT_BATCH_DELAY must be 0 or more seconds, not {delay}")
    sync = settings.get("OUTPUT_SYNC", "syncfs")
    if sync not in ("fsync", "syncfs"):
        raise ConfigError(f"OUTPUT_SYNC must be fsync or syncfs, not {sync!r}")


def check_output_settings(settings: BaseSettings) -> None:
    """Raise ConfigError when OUTPUT_URI or its backend's settings cannot work, without touching
    the destination. Commands call it before anything starts, so a typo is exit status 2 rather
    than a crawl that fails (or, were the write pipeline disabled, writes nothing) later."""
    try:
        uri, storage_class = _storage_class(settings)
        check = getattr(storage_class, "check_settings", None)
        if check is not None:
            check(uri, settings)
    except NotConfigured as exc:
        raise ConfigError(str(exc)) from exc
    _check_batching(settings)
    # Mirrored images are output too (IMAGES_MIRROR_*; nothing to check when mirroring is off).
    from aggregator.images.settings import check_image_settings

    check_image_settings(settings)
