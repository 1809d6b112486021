"""Render each article as a post and hand it to the storage OUTPUT_URI names. Only when the
storage reports the post durably written is the article marked published in the crawl state; a
failed write raises PostNotWritten, which the pending recorder (aggregator.state.pending) logs
with the key, counts and keeps for the next run.

With a storage that writes batches (`persist_batch`: the file storage) posts are committed in
groups (`GroupCommit`): posts arriving within OUTPUT_BATCH_DELAY of each other, up to
OUTPUT_BATCH_SIZE, go to the storage in one hand-off and are marked published in one state
call; each item's process_item returns once its own post is durable and marked."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy.exceptions import CloseSpider, DropItem, NotConfigured
from scrapy.utils.defer import maybe_deferred_to_future

from aggregator import stats as keys
from aggregator.errors import ConfigError, StateUnavailable
from aggregator.render.post import PostFields, post_timezone, render_post
from aggregator.state.component import crawl_state
from aggregator.state.pending import ArticleFailed, PostNotWritten
from aggregator.storage import PostRecord, StoreResult, build_post_storage

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from aggregator.state.base import CrawlState, PublishedKeys

logger = logging.getLogger(__name__)


def post_fields(item: ItemAdapter, timezone: tzinfo | None = None) -> PostFields:
    assert item.get("published") is not None, "ValidatePipeline fills published"
    return PostFields(
        title=item["title"],
        categories=(item.get("group", ""), item.get("source", ""), item.get("channel", "")),
        author=item.get("author") or item.get("source", ""),
        date=item["published"],
        body_html=item["body"],
        headimg=item.get("headimg"),
        timezone=timezone,
    )


@dataclass
class _Waiting:
    record: PostRecord
    done: asyncio.Future[StoreResult]
    since: float  # loop time it arrived


class GroupCommit:
    """Commit posts in groups: write a batch in one call to the storage, then mark what it
    wrote published in one state call. Per post, a write means a thread hand-off and a file
    created, synced and renamed, and a mark means a state transaction; in a group the hand-off,
    the directory sync and the transaction are paid once.

    A batch goes when it holds `size` posts or its oldest post has waited `delay` seconds,
    whichever comes first; one batch is in flight at a time, and posts arriving meanwhile form
    the next (so a slow disk makes batches larger rather than queueing threads). Timers are
    the running asyncio loop's: Scrapy's default reactor runs on it, and so do tests that drive
    pipelines under plain `asyncio.run`. `close` commits whatever still waits."""

    def __init__(self, storage: Any, published: PublishedKeys, *, size: int, delay: float):
        self.storage = storage
        self.published = published
        self.size = max(1, size)
        self.delay = max(0.0, delay)
        self._waiting: list[_Waiting] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None

    async def commit(self, record: PostRecord) -> StoreResult:
        """Return once `record` is durably stored and marked published; raise PostNotWritten
        when the storage could not vouch for it, ArticleFailed when it could not be marked."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[StoreResult] = loop.create_future()
        self._waiting.append(_Waiting(record, done, loop.time()))
        self._kick(loop)
        return await done

    async def close(self) -> None:
        """Commit every post still waiting and wait for the batch in flight."""
        loop = asyncio.get_running_loop()
        while self._flushing is not None or self._waiting:
            if self._flushing is None:
                self._kick(loop, due=True)
            assert self._flushing is not None
            await asyncio.shield(self._flushing)  # it clears _flushing as it ends

    def _kick(self, loop: asyncio.AbstractEventLoop, *, due: bool = False) -> None:
        """Start the next batch if one is due, else make sure a timer will start it."""
        if self._flushing is not None or not self._waiting:
            return  # the batch in flight kicks again when it is done
        due_at = self._waiting[0].since + self.delay
        if due or len(self._waiting) >= self.size or loop.time() >= due_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            batch, self._waiting = self._waiting[: self.size], self._waiting[self.size :]
            self._flushing = loop.create_task(self._flush(batch, loop))
        elif self._timer is None:
            self._timer = loop.call_at(due_at, self._due, loop)

    def _due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._kick(loop, due=True)

    async def _flush(self, batch: list[_Waiting], loop: asyncio.AbstractEventLoop) -> None:
        try:
            await self._commit(batch)
        finally:
            for waiting in batch:  # anything unforeseen (or cancelled): never left hanging
                _fail(waiting, PostNotWritten("the batch it was in did not finish"), None)
            self._flushing = None
            self._kick(loop)  # the posts that came meanwhile

    async def _commit(self, batch: list[_Waiting]) -> None:
        """Write the batch, mark what was written published in one call, settle each post."""
        outcomes = await self._write(batch)
        written = [
            (waiting, outcome)
            for waiting, outcome in zip(batch, outcomes, strict=True)
            if isinstance(outcome, StoreResult)
        ]
        if written:
            try:
                await self.published.mark_published(
                    [(w.record.key, r.location) for w, r in written]
                )
            except Exception as exc:  # written, but never marked: kept pending, written again
                for waiting, result in written:
                    _fail(waiting, ArticleFailed(_not_marked(result, exc)), exc)
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, StoreResult):
                _succeed(waiting, outcome)
            else:
                _fail(waiting, PostNotWritten(str(outcome)), outcome)

    async def _write(self, batch: list[_Waiting]) -> list[StoreResult | Exception]:
        """One outcome per post; a storage that fails as a whole fails every post of the
        batch, since it vouches for none."""
        try:
            outcomes = list(await self.storage.persist_batch([w.record for w in batch]))
        except Exception as exc:
            return [exc] * len(batch)
        if len(outcomes) != len(batch):
            error = RuntimeError(f"the storage answered {len(outcomes)} of {len(batch)} posts")
            return [error] * len(batch)
        return outcomes


def _not_marked(result: StoreResult, exc: Exception) -> str:
    return f"written to {result.location} but not marked published: {exc}"


def _succeed(waiting: _Waiting, result: StoreResult) -> None:
    if not waiting.done.done():
        waiting.done.set_result(result)


def _fail(waiting: _Waiting, error: Exception, cause: BaseException | None) -> None:
    if not waiting.done.done():
        error.__cause__ = cause
        waiting.done.set_exception(error)


class WritePipeline:
    def __init__(self, crawler: Crawler, storage: Any):
        self.crawler = crawler
        self.stats = crawler.stats
        self.storage = storage
        self.state: CrawlState | None = None
        self.timezone = post_timezone(crawler.settings)  # checked by the commands first
        self.batch_size = crawler.settings.getint("OUTPUT_BATCH_SIZE", 100)
        self.batch_delay = crawler.settings.getfloat("OUTPUT_BATCH_DELAY", 0.1)
        self.group: GroupCommit | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> WritePipeline:
        # Not NotConfigured: Scrapy would quietly disable this pipeline and the crawl would
        # "succeed" writing nothing. The commands check OUTPUT_URI first (exit status 2); this
        # covers crawls started any other way.
        try:
            storage = build_post_storage(crawler)
        except NotConfigured as exc:
            raise ConfigError(f"cannot write posts: {exc}") from exc
        return cls(crawler, storage)

    async def open_spider(self) -> None:
        # An unusable state store or destination stops the run before any request is sent:
        # one clear line, and CloseSpider (a finish reason that makes `scrapy crawl` exit
        # non-zero).
        try:
            self.state = await crawl_state(self.crawler).open()
        except StateUnavailable as exc:
            logger.error("Cannot use the crawl state: %s", exc)
            raise CloseSpider("state_unavailable") from exc
        if hasattr(self.storage, "persist_batch") and _asyncio_loop_running():
            self.group = GroupCommit(
                self.storage, self.state.published, size=self.batch_size, delay=self.batch_delay
            )
        try:
            opened = self.storage.open(self.crawler.spider)
            if opened is not None:
                await maybe_deferred_to_future(opened)
        except (ConfigError, NotConfigured) as exc:
            logger.error("Cannot write posts: %s", exc)
            raise CloseSpider("output_unavailable") from exc

    async def close_spider(self) -> None:
        if self.group is not None:
            await self.group.close()
        closed = self.storage.close(self.crawler.spider)
        if closed is not None:
            await maybe_deferred_to_future(closed)

    async def process_item(self, item: Any) -> Any:
        assert self.state is not None, "open_spider opens the state"
        adapter = ItemAdapter(item)
        key = adapter["key"]
        record = PostRecord(
            key=key,
            site=adapter["site"],
            title=adapter["title"],
            url=adapter["url"],
            published=adapter["published"],
            data=render_post(post_fields(adapter, self.timezone)),
            images=tuple(adapter.get("mirrored_images") or ()),
        )
        result = await self._commit(record)
        if not result.created:
            self.stats.inc_value(keys.ARTICLES_DUPLICATE)
            raise DropItem(f"already stored at {result.location}", log_level="INFO")
        self.stats.inc_value(keys.ARTICLES_NEW)
        logger.debug("Wrote %s <%s> to %s", key, adapter["url"], result.location)
        return item

    async def _commit(self, record: PostRecord) -> StoreResult:
        """Store the post, then mark it published: in a group when the storage writes batches
        and an asyncio loop runs (Scrapy's default reactor; see open_spider), else alone."""
        assert self.state is not None, "open_spider opens the state"
        if self.group is not None:
            return await self.group.commit(record)
        try:
            result: StoreResult = await maybe_deferred_to_future(self.storage.persist(record))
        except Exception as exc:
            raise PostNotWritten(str(exc)) from exc
        await self.state.published.mark_published([(record.key, result.location)])
        return result


def _asyncio_loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
