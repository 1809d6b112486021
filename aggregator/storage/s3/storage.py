"""S3PostStorage, the reactor side of S3 output (`OUTPUT_URI=s3://bucket/prefix`): the
PostStorage the write pipeline drives. The blocking work lives in the package's other modules
(see its docstring) and runs in this storage's own thread pool, at most `S3_MAX_UPLOADS` uploads
at once, as Scrapy's BlockingFeedStorage and S3FilesStore keep boto3 off the reactor thread: the
crawl never waits on S3. Works with AWS and any S3-compatible store (MinIO, R2, ...).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from twisted.internet import defer
from twisted.python.failure import Failure

from aggregator import stats as stat_keys
from aggregator.state import state_dir
from aggregator.state.component import crawl_state
from aggregator.storage.s3.client import connect_objects, quiet_sdk_debug_logs
from aggregator.storage.s3.config import S3Config
from aggregator.storage.s3.manifests import (
    ManifestJournal,
    journal_dir,
    resend_leftover_manifests,
)
from aggregator.storage.s3.objects import (
    MANIFEST_DIR,
    ObjectLayout,
    S3Uploader,
    S3UploadError,
    Uploaded,
)
from aggregator.storage.s3.threads import S3Threads

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from pathlib import Path

    from scrapy import Spider
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings
    from scrapy.statscollectors import StatsCollector
    from twisted.internet.defer import Deferred

    from aggregator.state.base import Records
    from aggregator.storage import PostRecord, StoreResult

__all__ = ["S3PostStorage"]

logger = logging.getLogger(__name__)

WRITER_ID_NAME = "s3/writer_id"

# stats
_PREFIX = f"{stat_keys.PREFIX}/s3"
STAT_UPLOADED = f"{_PREFIX}/uploaded"
STAT_BYTES = f"{_PREFIX}/bytes"
STAT_ALREADY_OURS = f"{_PREFIX}/already_ours"
STAT_EXISTING = f"{_PREFIX}/existing"
STAT_CONFLICT_RETRIES = f"{_PREFIX}/conflict_retries"
STAT_FAILED = f"{_PREFIX}/failed"
STAT_PEAK_IN_FLIGHT = f"{_PREFIX}/peak_in_flight"
STAT_MANIFESTS = f"{_PREFIX}/manifests"
STAT_MANIFEST_LINES = f"{_PREFIX}/manifest_lines"
STAT_MANIFEST_FAILED = stat_keys.S3_MANIFEST_FAILED
STAT_MANIFESTS_RESENT = f"{_PREFIX}/manifests_resent"


class S3PostStorage:
    """PostStorage for `s3://bucket/prefix`: settings are read in `from_crawler` and passed in,
    as Scrapy's S3FeedStorage does.

    `open` connects (HeadBucket, then the per-post client's probe), claims this run's manifest
    journal and re-sends journals earlier runs left; `persist_batch` uploads a group of posts
    in the thread pool (`persist` one post, where no asyncio loop runs); `close` sends this
    run's manifest. Scrapy closes item pipelines only once no item is in progress, and the
    write pipeline awaits each batch in `process_item` (and what its group still holds in
    `close_spider`), so every upload has settled when `close` runs.
    """

    def __init__(
        self,
        config: S3Config,
        *,
        state_dir: str | Path = ".state",
        writer_id: str | None = None,
        records: Callable[[], Awaitable[Records]] | None = None,
        stats: StatsCollector | None = None,
        log_level: int | str = logging.DEBUG,
    ):
        self.config = config
        self.layout = ObjectLayout(config.bucket, config.prefix)
        self.writer_id = writer_id or uuid.uuid4().hex
        # where this installation's writer id is kept (the crawl state), read at open
        self._records = None if writer_id else records
        self.run_id = uuid.uuid4().hex[:16]
        self.stats = stats
        self.log_level = log_level
        self.journal_dir = journal_dir(state_dir, config.bucket, config.prefix)
        self.uploader: S3Uploader | None = None
        self._journal: ManifestJournal | None = None
        self._threads = S3Threads(config.max_uploads + 1, "s3-uploads")  # + the manifest
        self._slots = defer.DeferredSemaphore(config.max_uploads)
        self._in_flight = 0

    @classmethod
    def check_settings(cls, uri: str, settings: BaseSettings) -> None:
        """What can be checked without the network (the bucket is checked when the spider
        opens). Raises NotConfigured."""
        S3Config.from_settings(uri, settings)

    @classmethod
    def from_crawler(cls, crawler: Crawler, uri: str) -> S3PostStorage:
        settings = crawler.settings
        return cls(
            S3Config.from_settings(uri, settings),
            state_dir=state_dir(settings),
            records=_state_records(crawler),
            stats=crawler.stats,
            log_level=settings.get("LOG_LEVEL") or logging.DEBUG,
        )

    # --- open --------------------------------------------------------------------------------
    def open(self, spider: Spider) -> Deferred[None]:
        return deferred_from_coro(self._open(spider.name))

    async def _open(self, spider_name: str) -> None:
        quiet_sdk_debug_logs(self.log_level)
        self._threads.start()
        journal = self._journal = ManifestJournal(self.journal_dir, spider_name, self.run_id)
        await self._load_writer_id()
        client = await maybe_deferred_to_future(self._threads.run(connect_objects, self.config))
        self.uploader = S3Uploader.from_config(
            client, self.config, writer_id=self.writer_id, run_id=self.run_id
        )
        journal.claim()
        sent, failed = await maybe_deferred_to_future(
            self._threads.run(
                resend_leftover_manifests,
                self.journal_dir,
                self.uploader.put_manifest,
                skip=journal.path,
            )
        )
        for key in sent:
            logger.info(
                "Sent the manifest an earlier run left behind: %s", self.layout.location(key)
            )
            self._inc(STAT_MANIFESTS_RESENT)
        for problem in failed:
            logger.error(
                "Could not send the manifest an earlier run left behind (%s); kept for the next "
                "run",
                problem,
            )
            self._inc(STAT_MANIFEST_FAILED)
        logger.info(
            "Writing posts to s3://%s/%s (%s uploads at once, run %s)",
            self.config.bucket,
            self.config.prefix,
            self.config.max_uploads,
            self.run_id,
        )

    async def _load_writer_id(self) -> None:
        if self._records is not None:
            records = await self._records()
            self.writer_id = await records.setdefault(WRITER_ID_NAME, self.writer_id)

    # --- persist -----------------------------------------------------------------------------
    async def persist_batch(self, posts: Sequence[PostRecord]) -> list[StoreResult | Exception]:
        """Upload `posts`, at most S3_MAX_UPLOADS at once: that many pool jobs each take the
        next post of the batch until none is left, so the batch costs that many thread
        hand-offs, not one per post, and the write pipeline marks the batch published in one
        state call (GroupCommit). One outcome per post, in order: the StoreResult of a post
        S3 acknowledged (durable), or the exception that stopped it."""
        if self.uploader is None:
            return [S3UploadError(f"{post.key}: the S3 storage is not open") for post in posts]
        outcomes: list[Uploaded | Exception | None] = [None] * len(posts)
        waiting = deque(enumerate(posts))
        workers = min(self.config.max_uploads, len(posts))
        self._in_flight += workers
        if self.stats is not None:
            self.stats.max_value(STAT_PEAK_IN_FLIGHT, self._in_flight)
        try:
            await asyncio.gather(
                *(
                    maybe_deferred_to_future(
                        self._threads.run(_upload_each, self.uploader, waiting, outcomes)
                    )
                    for _ in range(workers)
                )
            )
        finally:
            self._in_flight -= workers
        entries: list[dict[str, Any]] = []
        settled = [self._settle(outcome, entries) for outcome in outcomes]
        if entries and self._journal is not None:
            self._journal.extend(entries)  # one write for the batch's manifest lines
        return settled

    def _settle(
        self, outcome: Uploaded | Exception | None, entries: list[dict[str, Any]]
    ) -> StoreResult | Exception:
        if outcome is None:  # a worker died before it took this post
            outcome = S3UploadError("the upload never ran")
        if isinstance(outcome, Exception):
            self._inc(STAT_FAILED)
            return outcome
        self._count(outcome)
        if outcome.entry is not None:
            entries.append(outcome.entry)
        return outcome.result

    def persist(self, post: PostRecord) -> Deferred[StoreResult]:
        if self.uploader is None:
            return defer.fail(S3UploadError(f"{post.key}: the S3 storage is not open"))
        return self._slots.run(self._upload, post)

    def _upload(self, post: PostRecord) -> Deferred[StoreResult]:
        assert self.uploader is not None
        self._in_flight += 1
        if self.stats is not None:
            self.stats.max_value(STAT_PEAK_IN_FLIGHT, self._in_flight)
        d = self._threads.run(self.uploader.upload, post)
        d.addBoth(self._one_done)
        return d

    def _one_done(self, outcome: Uploaded | Failure) -> StoreResult | Failure:
        self._in_flight -= 1
        if isinstance(outcome, Failure):
            self._inc(STAT_FAILED)
            return outcome
        self._count(outcome)
        if outcome.entry is not None and self._journal is not None:
            self._journal.append(outcome.entry)
        return outcome.result

    def _count(self, outcome: Uploaded) -> None:
        self._inc(STAT_CONFLICT_RETRIES, outcome.conflicts)
        if outcome.outcome == "existing":
            self._inc(STAT_EXISTING)
            # the writer pipeline logs the duplicate with the article's key
            logger.debug("%s is another writer's: not overwritten", outcome.result.location)
        else:
            self._inc(STAT_UPLOADED if outcome.outcome == "created" else STAT_ALREADY_OURS)
            self._inc(STAT_BYTES, outcome.size)

    # --- close -------------------------------------------------------------------------------
    def close(self, spider: Spider) -> Deferred[None]:
        """Write this run's manifest (also after failures: the objects that were written must
        reach consumers), then release the journal and stop the threads."""
        return deferred_from_coro(self._close())

    async def _close(self) -> None:
        try:
            await self._send_manifest()
        finally:
            self._shut_down()

    async def _send_manifest(self) -> None:
        journal = self._journal
        if journal is None or self.uploader is None or journal.lines == 0:
            return
        body = journal.finish()
        try:
            key = await maybe_deferred_to_future(
                self._threads.run(self.uploader.put_manifest, journal.spider, self.run_id, body)
            )
        except Exception as exc:
            self._inc(STAT_MANIFEST_FAILED)
            logger.error(
                "Could not write the manifest of run %s (%s posts) to %s: %s; kept in %s "
                "and sent by the next run",
                self.run_id,
                journal.lines,
                self.layout.location(self.layout.join(MANIFEST_DIR)),
                exc,
                journal.path,
            )
            return
        journal.discard()
        self._inc(STAT_MANIFESTS)
        self._inc(STAT_MANIFEST_LINES, journal.lines)
        logger.info("Wrote the manifest of %s posts: %s", journal.lines, self.layout.location(key))

    def _shut_down(self) -> None:
        if self._journal is not None:
            self._journal.release()
        self._threads.stop()
        if self.uploader is not None:
            self.uploader.client.close()  # its connections (ObjectCalls' or boto3's pool)

    def _inc(self, key: str, count: int = 1) -> None:
        if self.stats is not None and count:
            self.stats.inc_value(key, count)


def _upload_each(
    uploader: S3Uploader,
    waiting: deque[tuple[int, PostRecord]],
    outcomes: list[Uploaded | Exception | None],
) -> None:
    """In a pool thread: upload the batch's next post until none is left (`deque.popleft` is
    atomic, so the workers never take the same post), each outcome at its post's index."""
    while True:
        try:
            index, post = waiting.popleft()
        except IndexError:
            return
        try:
            outcomes[index] = uploader.upload(post)
        except Exception as exc:
            outcomes[index] = exc


def _state_records(crawler: Crawler) -> Callable[[], Awaitable[Records]]:
    """This installation's writer id is kept in the crawl state: it survives runs, so a PUT of
    an earlier run that landed unnoticed is still recognised as ours."""

    async def records() -> Records:
        return (await crawl_state(crawler).open()).records

    return records
