"""Posts as files in a directory (`OUTPUT_URI=path` or `file://path`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from scrapy.exceptions import NotConfigured
from twisted.internet import threads

from aggregator.atomicfile import write_atomically
from aggregator.keys import is_safe_key
from aggregator.storage import PostRecord, StoreResult

if TYPE_CHECKING:
    from scrapy import Spider
    from scrapy.crawler import Crawler
    from twisted.internet.defer import Deferred

__all__ = ["FilePostStorage"]


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
