"""Where posts go. Backends sit behind one small protocol and are chosen by the scheme of
`OUTPUT_URI` through `POST_STORAGES`, as Scrapy chooses feed storages and FilesPipeline stores.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse

from scrapy.exceptions import NotConfigured
from scrapy.utils.misc import load_object
from twisted.internet import threads

from aggregator.atomicfile import write_atomically
from aggregator.errors import ConfigError
from aggregator.keys import is_safe_key

if TYPE_CHECKING:
    from scrapy import Spider
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings
    from twisted.internet.defer import Deferred

__all__ = [
    "FilePostStorage",
    "PostRecord",
    "PostStorage",
    "StoreResult",
    "build_post_storage",
    "check_output_settings",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PostRecord:
    """A rendered post and what a backend may want to say about it."""

    key: str
    site: str
    title: str
    url: str
    published: datetime
    data: bytes


@dataclass(frozen=True)
class StoreResult:
    """`created` is False when the post already existed (another writer got there first)."""

    location: str
    created: bool = True


class PostStorage(Protocol):
    def open(self, spider: Spider) -> Deferred[None] | None:
        """Check the destination before any request is sent, so a bad one fails at once."""

    def persist(self, post: PostRecord) -> Deferred[StoreResult]:
        """Write one post; fires when it is durably stored (or fails)."""

    def close(self, spider: Spider) -> Deferred[None] | None:
        """Wait for writes in flight and finish the run's bookkeeping."""


class FilePostStorage:
    """One file per post in a directory, `<key>.md`, written atomically: a temp file in the same
    directory, flushed and fsynced, then renamed over the target, so readers (Hexo, rsync) never
    see half a post and a crash never leaves one. Writes run in the reactor's thread pool
    (REACTOR_THREADPOOL_MAXSIZE bounds them); two writes of one key never overlap, since the
    dedupe pipeline lets a key through once per run."""

    def __init__(self, uri: str, *, fsync: bool = True):
        self.directory = Path(_path_from_uri(uri))
        self.fsync = fsync

    @classmethod
    def from_crawler(cls, crawler: Crawler, uri: str) -> FilePostStorage:
        return cls(uri, fsync=crawler.settings.getbool("OUTPUT_FSYNC", True))

    def open(self, spider: Spider) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NotConfigured(f"OUTPUT_URI {self.directory}: cannot create it: {exc}") from exc
        if not os.access(self.directory, os.W_OK):
            raise NotConfigured(f"OUTPUT_URI {self.directory} is not writable")

    def path_for(self, key: str) -> Path:
        if not is_safe_key(key):
            raise ValueError(f"refusing to build a file name from unsafe key {key!r}")
        return self.directory / f"{key}.md"

    def persist(self, post: PostRecord) -> Deferred[StoreResult]:
        # In a worker thread: an fsync waits for the disk, and the reactor thread waiting with
        # it would stall every download in flight.
        return threads.deferToThread(self._write, post)

    def _write(self, post: PostRecord) -> StoreResult:
        target = self.path_for(post.key)
        write_atomically(target, post.data, fsync=self.fsync)
        return StoreResult(location=str(target))

    def close(self, spider: Spider) -> None:
        return None


def _path_from_uri(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    return uri


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
