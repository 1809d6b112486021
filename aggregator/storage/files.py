"""Posts as files in a directory (`OUTPUT_URI=path` or `file://path`)."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from scrapy.exceptions import NotConfigured
from twisted.internet import threads

from aggregator.atomicfile import (
    fsync_directory,
    remove_quietly,
    stage_file,
    syncfs,
    syncfs_available,
    write_atomically,
)
from aggregator.keys import is_safe_key
from aggregator.storage import PostRecord, StoreResult

if TYPE_CHECKING:
    from collections.abc import Sequence

    from scrapy import Spider
    from scrapy.crawler import Crawler
    from twisted.internet.defer import Deferred

__all__ = ["FilePostStorage"]

logger = logging.getLogger(__name__)


class FilePostStorage:
    """One file per post in a directory, `<key>.md`, written atomically: a temp file in the same
    directory, flushed and fsynced, then renamed over the target, so readers (Hexo, rsync) never
    see half a post and a crash never leaves one. Two writes of one key never overlap, since the
    claim middleware lets a key through once per run.

    The write pipeline hands posts over in batches (`persist_batch`, its group commit): one
    hand-off to this storage's writer thread per batch, each post staged and synced (the syncs
    overlapping, see `_stage_all`), all renamed, then the directory synced once. `persist` (one
    post, in the reactor's thread pool) serves callers without an asyncio loop."""

    # Threads that stage (write and fsync) a batch's posts side by side.
    STAGERS = 8

    def __init__(self, uri: str, *, fsync: bool = True, sync: str = "syncfs"):
        self.directory = Path(_path_from_uri(uri))
        self.fsync = fsync
        if sync == "syncfs" and not syncfs_available():
            logger.info("OUTPUT_SYNC=syncfs: syncfs needs Linux 5.8 or newer; using fsync")
            sync = "fsync"
        self.sync = sync
        self._writer: ThreadPoolExecutor | None = None
        self._stagers: ThreadPoolExecutor | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler, uri: str) -> FilePostStorage:
        settings = crawler.settings
        return cls(
            uri,
            fsync=settings.getbool("OUTPUT_FSYNC", True),
            sync=settings.get("OUTPUT_SYNC", "syncfs"),
        )

    def open(self, spider: Spider) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NotConfigured(f"OUTPUT_URI {self.directory}: cannot create it: {exc}") from exc
        if not os.access(self.directory, os.W_OK):
            raise NotConfigured(f"OUTPUT_URI {self.directory} is not writable")

    def path_for(self, key: str) -> Path:
        return Path(self._target(key))

    def _target(self, key: str) -> str:
        """The post's file name as a plain string: writes build no Path per post, since pathlib
        interns every part it parses (see atomicfile.stage_file)."""
        if not is_safe_key(key):
            raise ValueError(f"refusing to build a file name from unsafe key {key!r}")
        return os.path.join(self.directory, f"{key}.md")

    def persist(self, post: PostRecord) -> Deferred[StoreResult]:
        # In a worker thread: an fsync waits for the disk, and the reactor thread waiting with
        # it would stall every download in flight.
        return threads.deferToThread(self._write, post)

    def _write(self, post: PostRecord) -> StoreResult:
        target = self._target(post.key)
        write_atomically(target, post.data, fsync=self.fsync)
        if self.fsync:
            fsync_directory(self.directory)  # the rename is durable too
        return StoreResult(location=str(target))

    async def persist_batch(self, posts: Sequence[PostRecord]) -> list[StoreResult | Exception]:
        """Write `posts` in one hand-off to the writer thread (blocking I/O stays off the
        reactor thread); see `write_batch` for what each outcome vouches for."""
        if self._writer is None:
            # One thread: the pipeline commits one batch at a time, and a thread of its own
            # keeps batches off the pool that DNS look-ups and other blocking work share.
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="post-writer")
        return await asyncio.get_running_loop().run_in_executor(
            self._writer, self.write_batch, posts
        )

    def write_batch(self, posts: Sequence[PostRecord]) -> list[StoreResult | Exception]:
        """Write every post; return, in order, a StoreResult for each post that is durably in
        place or the exception that stopped it. Each post is staged (temp file written and,
        with fsync, synced), then the staged ones are renamed into place and the directory is
        synced once for all the renames. A post that fails is left out (no temp file stays);
        should the directory sync fail, no post of the batch is vouched for: each gets the
        error, though its file may be in place (the next run writes the same bytes again)."""
        outcomes: list[StoreResult | Exception] = []
        staged: list[tuple[int, str, str]] = []  # (index, temp file, target)
        renamed: list[int] = []
        attempted = 0
        try:
            for index, result in enumerate(self._stage_all(posts)):
                if isinstance(result, Exception):  # this post only; the others go on
                    outcomes.append(result)
                    continue
                tmp, target = result
                staged.append((index, tmp, target))
                outcomes.append(StoreResult(location=str(target)))
            for index, tmp, target in staged:
                attempted += 1
                try:
                    os.replace(tmp, target)
                except OSError as exc:
                    remove_quietly(tmp)
                    outcomes[index] = exc
                    continue
                renamed.append(index)
        finally:
            for _, tmp, _ in staged[attempted:]:  # an error escaped: leave no temp file behind
                remove_quietly(tmp)
        if renamed and self.fsync:
            try:
                fsync_directory(self.directory)
            except OSError as exc:
                for index in renamed:
                    outcomes[index] = exc
        return outcomes

    def _stage_all(self, posts: Sequence[PostRecord]) -> list[tuple[str, str] | Exception]:
        """(temp file, target) or the error, for each post. With fsync the posts are staged by
        several threads at once: concurrent fsyncs share the filesystem's journal commits,
        where one thread syncing file after file waits for a commit per post (a slow disk then
        made batches queue up faster than they were written)."""
        if not self.fsync or len(posts) < 2:
            return [self._stage(post, self.fsync) for post in posts]
        if self.sync == "syncfs":
            return self._stage_then_syncfs(posts)
        if self._stagers is None:
            self._stagers = ThreadPoolExecutor(self.STAGERS, thread_name_prefix="post-stager")
        return list(self._stagers.map(self._stage, posts, [True] * len(posts)))

    def _stage_then_syncfs(self, posts: Sequence[PostRecord]) -> list[tuple[str, str] | Exception]:
        """OUTPUT_SYNC=syncfs: write every temp file, then one syncfs makes them all durable
        (one writeback and journal commit for the batch instead of one fsync per post). The
        directory is opened first, so syncfs reports any writeback error since then; on error
        no post of the batch is vouched for and the temp files go."""
        fd = os.open(self.directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            results = [self._stage(post, False) for post in posts]
            try:
                syncfs(fd)
            except OSError as exc:
                for result in results:
                    if not isinstance(result, Exception):
                        remove_quietly(result[0])
                return [r if isinstance(r, Exception) else exc for r in results]
            return results
        finally:
            os.close(fd)

    def _stage(self, post: PostRecord, fsync: bool) -> tuple[str, str] | Exception:
        try:
            target = self._target(post.key)
            return stage_file(target, post.data, fsync=fsync), target
        except Exception as exc:
            return exc

    def close(self, spider: Spider) -> None:
        for pool in (self._writer, self._stagers):
            if pool is not None:
                pool.shutdown(wait=True)  # idle: the pipeline has awaited every batch
        self._writer = self._stagers = None


def _path_from_uri(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    return uri
