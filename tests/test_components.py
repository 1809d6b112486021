"""In-process tests of the crawl's components (no subprocess, no HTTP): the claim middleware, the
pending recorder and the pipelines, each built from a crawler with the project's settings, as
Scrapy builds them."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aggregator.pipelines.normalize import NormalizeHtmlPipeline
from aggregator.pipelines.validate import ValidatePipeline
from aggregator.pipelines.write import WritePipeline, post_fields
from itemadapter import ItemAdapter
from scrapy import Request, Spider, signals
from scrapy.exceptions import CloseSpider, DropItem, NotConfigured
from scrapy.http import HtmlResponse
from scrapy.logformatter import LogFormatter
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.test import get_crawler
from twisted.internet import defer
from twisted.internet.error import DNSLookupError
from twisted.python.failure import Failure

from aggregator import settings as settings_module
from aggregator import stats as keys
from aggregator.errors import ConfigError
from aggregator.items import Article, Channel
from aggregator.render.post import read_post, render_post
from aggregator.state.claims import (
    CLAIMED,
    NEXT_PAGE,
    RECHECK,
    ClaimMiddleware,
    aliases_of,
    article_key_of,
    claim_owner_of,
)
from aggregator.state.component import CrawlStateExtension, crawl_state
from aggregator.state.pending import (
    ArticleFailed,
    PostNotWritten,
    article_errback,
    article_meta,
    describe_failure,
    pending_to_retry,
)
from aggregator.storage import StoreResult
from aggregator.storage.files import FilePostStorage

CHANNEL = Channel("qutoutiao", "新媒体", "趣头条", "分类", "趣头条")


def raised(exc: BaseException) -> Failure:
    """A Failure of `exc` as an except block makes it: raised, with its traceback."""
    try:
        raise exc
    except BaseException:
        return Failure()


def project_crawler(tmp_path, **overrides: Any):
    """A crawler with the project's settings and its extensions built, as `scrapy crawl` has."""
    project = {name: getattr(settings_module, name) for name in dir(settings_module)}
    project = {name: value for name, value in project.items() if name.isupper()}
    crawler = get_crawler(Spider, {**project, "STATE_DIR": str(tmp_path / "state"), **overrides})
    crawler.spider = Spider("test")
    return crawler


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def collect(agen: Any) -> list[Any]:
    return [x async for x in agen]


async def aiter(items: list[Any]) -> Any:
    for item in items:
        yield item


def article(key: str = "qutoutiao-1", **fields: Any) -> Article:
    defaults = {
        "url": f"http://example.com/{key}",
        "title": "标题",
        "body": "<p>正文</p>",
        "published": datetime(2022, 2, 2, 8, 8, 41, tzinfo=UTC),
    }
    return CHANNEL.article(key=key, **{**defaults, **fields})


def detail_request(key: str, **meta: Any) -> Request:
    return Request(
        f"http://example.com/d/{key}", meta={**article_meta(key, "qutoutiao", {"n": key}), **meta}
    )


# --- the claim middleware: "already published?" ----------------------------------------------
def test_published_and_repeated_articles_are_dropped_and_counted(tmp_path):
    crawler = project_crawler(tmp_path)
    middleware = ClaimMiddleware.from_crawler(crawler)

    async def scenario():
        state = await crawl_state(crawler).open()
        await state.published.mark_published([("q-old", "out/q-old.md")])
        listing = HtmlResponse("http://example.com/list", body=b"")
        first = await collect(
            middleware.process_spider_output(
                listing, aiter([detail_request("q-old"), detail_request("q-new"), "other"])
            )
        )
        second = await collect(
            middleware.process_spider_output(listing, aiter([detail_request("q-new")]))
        )
        return first, second

    first, second = run(scenario())
    assert [getattr(x, "url", x) for x in first] == ["http://example.com/d/q-new", "other"]
    # the claim's owner travels with the request (a cluster worker serving it may not be ours)
    assert first[0].meta[CLAIMED] == crawl_state(crawler).owner
    assert second == []  # listed again in the same crawl: fetched once
    assert crawler.stats.get_value(keys.ARTICLES_DUPLICATE) == 2


def test_an_article_from_its_own_claimed_response_passes_and_feed_items_are_claimed(tmp_path):
    crawler = project_crawler(tmp_path)
    middleware = ClaimMiddleware.from_crawler(crawler)
    claimed = detail_request("q-1", **{CLAIMED: True})
    page = HtmlResponse(claimed.url, body=b"", request=claimed)
    feed = HtmlResponse("http://example.com/rss", body=b"", request=Request("http://x/rss"))

    async def scenario():
        own = await collect(middleware.process_spider_output(page, aiter([article("q-1")])))
        items = [article("f-1"), article("f-1"), {"key": "f-2", "title": "dict item"}]
        from_feed = await collect(middleware.process_spider_output(feed, aiter(items)))
        again = await collect(middleware.process_spider_output(feed, aiter([article("f-1")])))
        return own, from_feed, again

    own, from_feed, again = run(scenario())
    assert [a.key for a in own] == ["q-1"]
    assert [x["key"] if isinstance(x, dict) else x.key for x in from_feed] == ["f-1", "f-2"]
    assert again == []


def test_a_redone_request_keeps_its_claim_but_not_an_article_published_meanwhile(tmp_path):
    """A cluster worker died holding the request (maybe after writing the post): whoever does
    it again checks "published?" before the item goes on."""
    crawler = project_crawler(tmp_path)
    middleware = ClaimMiddleware.from_crawler(crawler)

    def redone(key):
        request = detail_request(key, **{CLAIMED: "dead-worker", RECHECK: True})
        return HtmlResponse(request.url, body=b"", request=request)

    async def scenario():
        state = await crawl_state(crawler).open()
        await state.published.mark_published([("q-done", "out/q-done.md")])
        done = await collect(
            middleware.process_spider_output(redone("q-done"), aiter([article("q-done")]))
        )
        todo = await collect(
            middleware.process_spider_output(redone("q-todo"), aiter([article("q-todo")]))
        )
        return done, todo

    done, todo = run(scenario())
    assert done == [] and [a.key for a in todo] == ["q-todo"]
    assert crawler.stats.get_value(keys.ARTICLES_DUPLICATE) == 1


def test_what_is_no_article_passes_in_place_around_the_articles(tmp_path):
    """Elements without an article key (and, on a redone request, what is not its item) pass
    as they are, wherever they stand in the batch."""
    crawler = project_crawler(tmp_path)
    middleware = ClaimMiddleware.from_crawler(crawler)
    listing = HtmlResponse("http://example.com/list", body=b"")
    request = detail_request("q-done", **{CLAIMED: "dead-worker", RECHECK: True})
    redone = HtmlResponse(request.url, body=b"", request=request)
    other = {"title": "no key"}

    async def scenario():
        state = await crawl_state(crawler).open()
        await state.published.mark_published([("q-done", "out/q-done.md")])
        passed = await collect(
            middleware.process_spider_output(listing, aiter(["first", detail_request("n-1")]))
        )
        kept = await collect(
            middleware.process_spider_output(
                redone, aiter([other, article("q-done"), article("n-2")])
            )
        )
        return passed, kept

    passed, kept = run(scenario())
    assert [getattr(x, "url", x) for x in passed] == ["first", "http://example.com/d/n-1"]
    assert kept[0] is other and [a.key for a in kept[1:]] == ["n-2"]


def test_a_listing_whose_articles_are_all_published_is_not_followed(tmp_path, caplog):
    crawler = project_crawler(tmp_path)
    middleware = ClaimMiddleware.from_crawler(crawler)
    listing = HtmlResponse("http://example.com/list?page=1", body=b"")
    next_page = Request("http://example.com/list?page=2", meta={NEXT_PAGE: True})

    async def scenario():
        state = await crawl_state(crawler).open()
        await state.published.mark_published([("a", "x"), ("b", "x")])
        stop = await collect(
            middleware.process_spider_output(
                listing, aiter([detail_request("a"), detail_request("b"), next_page])
            )
        )
        await state.published.claim(["c"], "another crawl", 60)
        go_on = await collect(
            middleware.process_spider_output(
                listing, aiter([detail_request("a"), detail_request("c"), next_page])
            )
        )
        return stop, go_on

    with caplog.at_level(logging.INFO):
        stop, go_on = run(scenario())
    assert stop == []
    assert "is published: stopping" in caplog.text
    assert go_on == [next_page]  # c is being fetched by another crawl, not published


def test_start_requests_are_claimed_too(tmp_path):
    crawler = project_crawler(tmp_path)
    middleware = ClaimMiddleware.from_crawler(crawler)

    async def scenario():
        state = await crawl_state(crawler).open()
        await state.published.mark_published([("p", "x")])
        return await collect(
            middleware.process_start(aiter([detail_request("p"), detail_request("n")]))
        )

    assert [r.meta["article_key"] for r in run(scenario())] == ["n"]


def test_an_article_published_under_an_older_key_is_a_duplicate(tmp_path):
    """Request meta `article_aliases` and an item's `aliases` name keys an article was
    published under before; only string aliases count."""
    crawler = project_crawler(tmp_path)
    middleware = ClaimMiddleware.from_crawler(crawler)
    listing = HtmlResponse("http://example.com/list", body=b"")
    feed = HtmlResponse("http://example.com/rss", body=b"", request=Request("http://x/rss"))
    renamed = Request(
        "http://example.com/d/new-1",
        meta={**article_meta("new-1", "qutoutiao", {}), "article_aliases": [7, "old-1"]},
    )

    async def scenario():
        state = await crawl_state(crawler).open()
        await state.published.mark_published([("old-1", "x"), ("old-2", "x")])
        requests = await collect(
            middleware.process_spider_output(
                listing, aiter([renamed, detail_request("new-3", article_aliases=["old-3"])])
            )
        )
        items = await collect(
            middleware.process_spider_output(
                feed, aiter([article("new-2", aliases=["old-2"]), article("new-4")])
            )
        )
        return requests, items, await state.published.published_among(["new-1", "new-2"])

    requests, items, published = run(scenario())
    assert [r.meta["article_key"] for r in requests] == ["new-3"]
    assert [a.key for a in items] == ["new-4"]
    assert crawler.stats.get_value(keys.ARTICLES_DUPLICATE) == 2
    assert published == set()  # dropped, not claimed: nothing new is published


def test_claim_owner_and_inherited_claim_need_a_named_owner():
    assert claim_owner_of(Request("http://x/", meta={CLAIMED: "w1"})) == "w1"
    for owner in ("", True, None):
        assert claim_owner_of(Request("http://x/", meta={CLAIMED: owner})) is None
    assert claim_owner_of(None) is None
    assert aliases_of("not an article") == [] and aliases_of(Request("http://x/")) == []
    assert article_key_of({"key": ""}) is None and article_key_of({"key": "k"}) == "k"


# --- the pending recorder ---------------------------------------------------------------------
def test_a_failed_article_request_is_kept_pending_counted_logged_and_released(tmp_path, caplog):
    crawler = project_crawler(tmp_path)
    component = crawl_state(crawler)
    request = detail_request("q-9")

    async def scenario():
        state = await component.open()
        assert await state.published.claim(["q-9"], component.owner, 60) == {"q-9"}
        failure = raised(ArticleFailed("detail is not JSON"))
        response = HtmlResponse(request.url, body=b"", request=request)
        crawler.signals.send_catch_log(
            signals.spider_error, failure=failure, response=response, spider=crawler.spider
        )
        await component.engine_stopped()
        await state.open()
        return await state.pending.list("qutoutiao"), await state.published.claim(
            ["q-9"], "next run", 60
        )

    with caplog.at_level(logging.ERROR):
        pending, claim = run(scenario())
    assert [(a.key, a.payload, a.error) for a in pending] == [
        ("q-9", {"n": "q-9"}, "detail is not JSON")
    ]
    assert claim == {"q-9"}  # released: the next run may fetch it
    assert crawler.stats.get_value(keys.ARTICLES_FAILED) == 1
    assert crawler.stats.get_value(keys.ARTICLES_PENDING) == 1
    assert "Article q-9 <http://example.com/d/q-9> failed: detail is not JSON" in caplog.text


def test_a_failed_request_releases_the_claim_it_carries_whoever_made_it(tmp_path):
    """In a cluster, worker A's listing claims the article and worker B fetches it: B's
    failure must release A's claim, not look for one of its own."""
    crawler = project_crawler(tmp_path, STATE_CLAIM_OWNER="worker-b")
    component = crawl_state(crawler)
    assert component.owner == "worker-b"
    request = detail_request("q-10", **{CLAIMED: "worker-a"})

    async def scenario():
        state = await component.open()
        assert await state.published.claim(["q-10"], "worker-a", 60) == {"q-10"}
        failure = raised(ArticleFailed("HTTP 503"))
        response = HtmlResponse(request.url, body=b"", request=request)
        crawler.signals.send_catch_log(
            signals.spider_error, failure=failure, response=response, spider=crawler.spider
        )
        await component.engine_stopped()
        await state.open()
        return await state.published.claim(["q-10"], "next run", 60)

    assert run(scenario()) == {"q-10"}


def test_a_post_that_could_not_be_written_is_kept_pending(tmp_path, caplog):
    crawler = project_crawler(tmp_path)
    component = crawl_state(crawler)
    item = article("q-5", retry={"entry": {"id": 5}})

    async def scenario():
        failure = raised(PostNotWritten("disk full"))
        crawler.signals.send_catch_log(
            signals.item_error, item=item, response=None, spider=crawler.spider, failure=failure
        )
        await component.engine_stopped()
        return await component.state.pending.list("qutoutiao")

    with caplog.at_level(logging.ERROR):
        pending = run(scenario())
    assert [(a.key, a.payload) for a in pending] == [("q-5", {"entry": {"id": 5}})]
    assert "Could not write q-5 <http://example.com/q-5>: disk full" in caplog.text


def test_errors_of_requests_that_are_no_article_are_not_recorded(tmp_path):
    crawler = project_crawler(tmp_path)
    listing = Request("http://example.com/list")
    failure = raised(ValueError("boom"))
    response = HtmlResponse(listing.url, body=b"", request=listing)
    crawler.signals.send_catch_log(
        signals.spider_error, failure=failure, response=response, spider=crawler.spider
    )
    assert crawler.stats.get_value(keys.ARTICLES_FAILED) is None


def test_an_item_without_a_retry_payload_is_counted_failed_but_not_kept_pending(tmp_path, caplog):
    """Any exception (not only ArticleFailed) is described in the log; only an item with both
    a site and a retry payload can be retried, so only such an item is kept pending."""
    crawler = project_crawler(tmp_path)
    component = crawl_state(crawler)
    items = [
        {"key": "d-1", "site": "qutoutiao", "url": "http://example.com/d-1"},
        {"key": "d-2", "retry": {"n": 2}, "url": "http://example.com/d-2"},
    ]

    async def scenario():
        failure = raised(ValueError("bad field"))
        for item in items:
            crawler.signals.send_catch_log(
                signals.item_error, item=item, response=None, spider=crawler.spider, failure=failure
            )
        await component.engine_stopped()
        return await component.state.pending.list("qutoutiao")

    with caplog.at_level(logging.ERROR):
        pending = run(scenario())
    assert pending == []
    assert crawler.stats.get_value(keys.ARTICLES_FAILED) == 2
    assert crawler.stats.get_value(keys.ARTICLES_PENDING) is None
    assert "Article d-1 <http://example.com/d-1> failed: ValueError: bad field" in caplog.text


def test_article_meta_lists_the_aliases_only_when_there_are_some():
    assert article_meta("k", "s", {"n": 1}) == {
        "article_key": "k",
        "article_site": "s",
        "article_retry": {"n": 1},
    }
    assert article_meta("k", "s", {}, aliases=("old",))["article_aliases"] == ["old"]


# --- pipelines --------------------------------------------------------------------------------
class Storage:
    """A storage that records what it was asked to keep (the pipeline is the subject)."""

    def __init__(self, fail=False, created=True, open_result=None, close_result=None):
        self.fail, self.created, self.persisted = fail, created, []
        self.open_result, self.close_result = open_result, close_result
        self.opened: list[Any] = []
        self.closed: list[Any] = []

    def open(self, spider):
        self.opened.append(spider)
        return self.open_result() if self.open_result else None

    def close(self, spider):
        self.closed.append(spider)
        return self.close_result() if self.close_result else None

    def persist(self, record):
        if self.fail:
            return defer.fail(OSError("disk full"))
        self.persisted.append(record)
        return defer.succeed(StoreResult(f"out/{record.key}.md", created=self.created))


def write_pipeline(tmp_path, storage: Storage) -> tuple[WritePipeline, Any]:
    crawler = project_crawler(tmp_path)
    pipeline = WritePipeline(crawler, storage)
    return pipeline, crawler


def test_the_write_pipeline_marks_published_only_after_the_post_is_stored(tmp_path):
    pipeline, crawler = write_pipeline(tmp_path, Storage())
    failing, _ = write_pipeline(tmp_path, Storage(fail=True))

    async def scenario():
        await pipeline.open_spider()
        await failing.open_spider()
        with pytest.raises(PostNotWritten, match="disk full"):
            await failing.process_item(article("q-2"))
        await pipeline.process_item(article("q-1"))
        return await pipeline.state.published.published_among(["q-1", "q-2"])

    assert run(scenario()) == {"q-1"}
    assert crawler.stats.get_value(keys.ARTICLES_NEW) == 1
    assert pipeline.storage.persisted[0].data.startswith(b"\n---\ntitle: ")


def test_the_write_pipeline_stores_the_post_the_item_describes(tmp_path):
    pipeline, _ = write_pipeline(tmp_path, Storage())
    item = {
        "key": "d-1",
        "site": "feed",
        "url": "http://example.com/d-1",
        "title": "标题",
        "body": "<p>正文</p>",
        "published": datetime(2022, 2, 2, 8, 8, 41, tzinfo=UTC),
        "group": "组",
        "source": "来源",
        "channel": "频道",
        "headimg": "http://example.com/h.png",
        "mirrored_images": ["img/a.png"],
    }

    async def scenario():
        await pipeline.open_spider()
        await pipeline.process_item(item)

    run(scenario())
    (record,) = pipeline.storage.persisted
    assert (record.key, record.site, record.url) == ("d-1", "feed", "http://example.com/d-1")
    assert record.title == "标题" and tuple(record.images) == ("img/a.png",)
    front, body = read_post(record.data.decode())
    assert front["title"] == "标题" and front["author"] == "来源"
    assert front["categories"] == ["组", "来源", "频道"]
    assert front["headimg"] == "http://example.com/h.png"
    assert "<p>正文</p>" in body


def test_the_write_pipeline_takes_dict_items_and_counts_another_writers_post(tmp_path):
    pipeline, crawler = write_pipeline(tmp_path, Storage(created=False))
    item = {
        "key": "feed-1",
        "site": "feed",
        "url": "http://example.com/1",
        "title": "t",
        "body": "<p>b</p>",
        "published": datetime(2022, 1, 1, tzinfo=UTC),
        "group": "g",
        "source": "s",
        "channel": "c",
    }

    async def scenario():
        await pipeline.open_spider()
        with pytest.raises(DropItem, match="already stored"):
            await pipeline.process_item(item)
        return await pipeline.state.published.published_among(["feed-1"])

    assert run(scenario()) == {"feed-1"}  # not ours, but published: never fetched again
    assert crawler.stats.get_value(keys.ARTICLES_DUPLICATE) == 1
    assert b"author: s\n" in pipeline.storage.persisted[0].data  # author falls back to source


# --- group commit: the write pipeline with the file storage, under plain asyncio.run ------------
class BatchRecordingStorage(FilePostStorage):
    """The real file storage, noting the keys of each batch it is handed."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.batches: list[list[str]] = []

    async def persist_batch(self, posts):
        self.batches.append([post.key for post in posts])
        return await super().persist_batch(posts)


def file_pipeline(tmp_path, **settings: Any) -> tuple[WritePipeline, BatchRecordingStorage]:
    crawler = project_crawler(tmp_path, OUTPUT_URI=str(tmp_path / "out"), **settings)
    storage = BatchRecordingStorage.from_crawler(crawler, str(tmp_path / "out"))
    return WritePipeline(crawler, storage), storage


def record_marks(pipeline: WritePipeline) -> list[list[str]]:
    """The keys of each mark_published call the pipeline makes from now on."""
    calls: list[list[str]] = []
    published = pipeline.state.published
    mark = published.mark_published

    async def recording(entries):
        calls.append([key for key, _ in entries])
        await mark(entries)

    published.mark_published = recording
    return calls


async def write_all(pipeline: WritePipeline, items: list[Any]) -> list[Any]:
    """process_item for every item at once (as Scrapy runs items of several responses); a
    batch that never goes fails the test rather than hanging it."""
    calls = (pipeline.process_item(item) for item in items)
    return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)


@pytest.mark.parametrize("sync", ["fsync", "syncfs"])
def test_posts_arriving_together_are_one_batch_marked_in_one_call_each_done_when_durable(
    tmp_path,
    sync,
):
    pipeline, storage = file_pipeline(tmp_path, OUTPUT_BATCH_DELAY=0.05, OUTPUT_SYNC=sync)
    assert storage.sync == sync
    items = [article(f"qutoutiao-{n}", title=f"标题 {n}") for n in range(5)]
    keys_ = [item.key for item in items]
    out = tmp_path / "out"

    async def scenario():
        await pipeline.open_spider()
        marks = record_marks(pipeline)

        async def write(item):  # what holds when this item's process_item returns
            await pipeline.process_item(item)
            published = await pipeline.state.published.published_among([item.key])
            return (out / f"{item.key}.md").exists(), published == {item.key}

        done = await asyncio.wait_for(asyncio.gather(*map(write, items)), 30)
        await pipeline.close_spider()
        return done, marks

    done, marks = run(scenario())
    assert done == [(True, True)] * 5  # durable and marked before process_item returned
    assert storage.batches == [keys_]  # the timer sent them together, under plain asyncio
    assert marks == [keys_]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{k}.md" for k in keys_)
    for item in items:  # byte for byte the post the item renders
        expected = render_post(post_fields(ItemAdapter(item)))
        assert (out / f"{item.key}.md").read_bytes() == expected


def test_a_full_batch_goes_at_once_without_waiting_for_the_delay(tmp_path):
    pipeline, storage = file_pipeline(tmp_path, OUTPUT_BATCH_SIZE=2, OUTPUT_BATCH_DELAY=3600)
    items = [article(f"qutoutiao-{n}") for n in range(4)]

    async def scenario():
        await pipeline.open_spider()
        marks = record_marks(pipeline)
        results = await write_all(pipeline, items)
        return results, marks

    results, marks = run(scenario())
    assert results == items
    assert (
        storage.batches == marks == [["qutoutiao-0", "qutoutiao-1"], ["qutoutiao-2", "qutoutiao-3"]]
    )


def test_close_commits_the_posts_still_waiting(tmp_path):
    pipeline, storage = file_pipeline(tmp_path, OUTPUT_BATCH_DELAY=3600)

    async def scenario():
        await pipeline.open_spider()
        writing = asyncio.ensure_future(pipeline.process_item(article("qutoutiao-1")))
        await asyncio.sleep(0)  # it renders the post and waits for its batch
        assert not writing.done()
        await pipeline.close_spider()
        assert writing.done()
        return await writing, await pipeline.state.published.published_among(["qutoutiao-1"])

    item, published = run(scenario())
    assert item.key == "qutoutiao-1" and published == {"qutoutiao-1"}
    assert storage.batches == [["qutoutiao-1"]]
    assert (tmp_path / "out" / "qutoutiao-1.md").is_file()


@pytest.mark.parametrize("sync", ["fsync", "syncfs"])
def test_a_post_that_fails_in_a_batch_fails_alone_and_is_not_marked(tmp_path, sync):
    pipeline, storage = file_pipeline(tmp_path, OUTPUT_SYNC=sync)
    items = [article("qutoutiao-1"), article("../escape"), article("qutoutiao-2")]

    async def scenario():
        await pipeline.open_spider()
        marks = record_marks(pipeline)
        results = await write_all(pipeline, items)
        keys_ = ["qutoutiao-1", "../escape", "qutoutiao-2"]
        return results, marks, await pipeline.state.published.published_among(keys_)

    results, marks, published = run(scenario())
    assert results[0] is items[0] and results[2] is items[2]
    assert isinstance(results[1], PostNotWritten) and "unsafe key" in str(results[1])
    assert storage.batches == [["qutoutiao-1", "../escape", "qutoutiao-2"]]
    assert marks == [["qutoutiao-1", "qutoutiao-2"]]
    assert published == {"qutoutiao-1", "qutoutiao-2"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "qutoutiao-1.md",
        "qutoutiao-2.md",
    ]


@pytest.mark.parametrize("sync", ["fsync", "syncfs"])
def test_a_batch_the_storage_cannot_vouch_for_fails_every_post_and_marks_none(tmp_path, sync):
    pipeline, storage = file_pipeline(tmp_path, OUTPUT_SYNC=sync)
    items = [article("qutoutiao-1"), article("qutoutiao-2")]

    async def scenario():
        await pipeline.open_spider()
        (tmp_path / "out").rmdir()  # the output directory went away under the crawl
        marks = record_marks(pipeline)
        results = await write_all(pipeline, items)
        published = await pipeline.state.published.published_among(["qutoutiao-1", "qutoutiao-2"])
        return results, marks, published

    results, marks, published = run(scenario())
    assert all(isinstance(r, PostNotWritten) for r in results), results
    assert "No such file or directory" in str(results[0])
    assert storage.batches == [["qutoutiao-1", "qutoutiao-2"]]
    assert marks == [] and published == set()


def test_posts_written_but_not_marked_fail_so_they_stay_pending(tmp_path):
    pipeline, _ = file_pipeline(tmp_path)
    items = [article("qutoutiao-1"), article("qutoutiao-2")]

    async def scenario():
        await pipeline.open_spider()
        other = sqlite3.connect(tmp_path / "state" / "dedupe.sqlite3")
        other.execute("DROP TABLE published")  # the store fails the mark
        other.close()
        return await write_all(pipeline, items)

    results = run(scenario())
    assert all(isinstance(r, ArticleFailed) for r in results), results
    assert not any(isinstance(r, PostNotWritten) for r in results)  # the write itself went
    assert "qutoutiao-1.md but not marked published: no such table: published" in str(results[0])


def test_a_failed_post_carries_the_storage_or_state_error_as_its_cause(tmp_path):
    """Scrapy's item-error traceback shows the storage's or the state's own error ("The above
    exception was the direct cause"), as the post-by-post path does (`raise ... from`)."""
    pipeline, _ = file_pipeline(tmp_path)

    async def scenario():
        await pipeline.open_spider()
        (unsafe,) = await write_all(pipeline, [article("../escape")])
        other = sqlite3.connect(tmp_path / "state" / "dedupe.sqlite3")
        other.execute("DROP TABLE published")  # the store fails the mark
        other.close()
        (unmarked,) = await write_all(pipeline, [article("qutoutiao-1")])
        return unsafe, unmarked

    unsafe, unmarked = run(scenario())
    assert isinstance(unsafe, PostNotWritten)
    assert isinstance(unsafe.__cause__, ValueError) and "unsafe key" in str(unsafe.__cause__)
    assert isinstance(unmarked, ArticleFailed)
    assert isinstance(unmarked.__cause__, sqlite3.OperationalError)
    assert "no such table: published" in str(unmarked.__cause__)


@pytest.mark.parametrize(
    ("settings", "batches"),
    [
        # each post alone: a batch of one goes at once, whatever the delay
        ({"OUTPUT_BATCH_SIZE": 1, "OUTPUT_BATCH_DELAY": 3600}, [["q-0"], ["q-1"], ["q-2"]]),
        # no delay: the first post goes at once, the others (come meanwhile) form the next
        ({"OUTPUT_BATCH_SIZE": 100, "OUTPUT_BATCH_DELAY": 0}, [["q-0"], ["q-1", "q-2"]]),
    ],
    ids=["size-1", "delay-0"],
)
def test_batch_size_and_delay_come_from_the_settings(tmp_path, settings, batches):
    pipeline, storage = file_pipeline(tmp_path, **settings)
    items = [article(f"q-{n}") for n in range(3)]

    async def scenario():
        await pipeline.open_spider()
        marks = record_marks(pipeline)
        return await write_all(pipeline, items), marks

    results, marks = run(scenario())
    assert results == items
    assert storage.batches == marks == batches


def test_without_the_project_settings_the_batch_defaults_are_the_documented_ones(tmp_path):
    """README: OUTPUT_BATCH_SIZE 100, OUTPUT_BATCH_DELAY 0.1 (a crawler built without the
    project's settings module, e.g. by another project reusing the pipeline)."""
    crawler = get_crawler(Spider, {"STATE_DIR": str(tmp_path / "state")})
    crawler.spider = Spider("test")
    storage = BatchRecordingStorage.from_crawler(crawler, str(tmp_path / "out"))
    pipeline = WritePipeline(crawler, storage)
    assert (pipeline.batch_size, pipeline.batch_delay) == (100, 0.1)


def test_without_an_asyncio_loop_the_pipeline_opens_and_closes_without_group_commit(tmp_path):
    """Under a non-asyncio reactor Scrapy drives the pipeline's coroutines through Deferreds and
    no asyncio loop runs: group commit (its timers need the loop) stays off, so closing does not
    look for a loop (test_groupcommit.py crawls under the epoll reactor)."""
    pipeline, _ = file_pipeline(tmp_path)
    for step in (pipeline.open_spider, pipeline.close_spider):
        outcome: list[Any] = []
        defer.Deferred.fromCoroutine(step()).addBoth(outcome.append)
        assert outcome == [None]  # done at once, without an error


class ShortAnsweringStorage(BatchRecordingStorage):
    """A storage that breaks the persist_batch contract: one outcome fewer than posts."""

    async def persist_batch(self, posts):
        return (await super().persist_batch(posts))[1:]


def test_a_storage_answering_for_fewer_posts_than_it_was_given_fails_them_all(tmp_path):
    crawler = project_crawler(tmp_path, OUTPUT_URI=str(tmp_path / "out"))
    pipeline = WritePipeline(
        crawler, ShortAnsweringStorage.from_crawler(crawler, str(tmp_path / "out"))
    )
    items = [article("qutoutiao-1"), article("qutoutiao-2")]

    async def scenario():
        await pipeline.open_spider()
        marks = record_marks(pipeline)
        return await write_all(pipeline, items), marks

    results, marks = run(scenario())
    assert all(isinstance(r, PostNotWritten) for r in results), results
    assert [str(r) for r in results] == ["the storage answered 1 of 2 posts"] * 2
    assert marks == []  # it vouched for none


class HeldStorage(BatchRecordingStorage):
    """The file storage, holding each batch until `release` is set."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.release = asyncio.Event()

    async def persist_batch(self, posts):
        self.batches.append([post.key for post in posts])
        await self.release.wait()
        return await FilePostStorage.persist_batch(self, posts)


def test_a_batch_cancelled_in_flight_fails_its_posts_and_the_next_batch_still_goes(tmp_path):
    """A batch that never finishes (its task cancelled) must not leave process_item waiting
    forever: its posts fail (kept pending), and the posts that came meanwhile are written."""
    crawler = project_crawler(tmp_path, OUTPUT_URI=str(tmp_path / "out"), OUTPUT_BATCH_DELAY=0)
    storage = HeldStorage.from_crawler(crawler, str(tmp_path / "out"))
    pipeline = WritePipeline(crawler, storage)

    async def scenario():
        await pipeline.open_spider()
        marks = record_marks(pipeline)
        first = asyncio.ensure_future(write_all(pipeline, [article("qutoutiao-1")]))
        while not storage.batches:
            await asyncio.sleep(0)
        second = asyncio.ensure_future(write_all(pipeline, [article("qutoutiao-2")]))
        await asyncio.sleep(0)
        pipeline.group._flushing.cancel()  # e.g. the loop shutting the batch down
        storage.release.set()
        return await first, await second, marks

    (first,), (second,), marks = run(scenario())
    assert isinstance(first, PostNotWritten)
    assert str(first) == "the batch it was in did not finish"
    assert second.key == "qutoutiao-2"
    assert storage.batches == [["qutoutiao-1"], ["qutoutiao-2"]]
    assert marks == [["qutoutiao-2"]]
    assert not (tmp_path / "out" / "qutoutiao-1.md").exists()


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        (datetime(2022, 2, 2, 8, 8, 41), datetime(2022, 2, 2, 8, 8, 41, tzinfo=UTC)),
        (
            datetime(2022, 2, 2, 16, 8, 41, tzinfo=timezone(timedelta(hours=8))),
            datetime(2022, 2, 2, 8, 8, 41, tzinfo=UTC),
        ),
    ],
    ids=["naive-is-utc", "aware-converted"],
)
def test_validate_puts_the_publish_time_in_utc(tmp_path, published, expected):
    pipeline = ValidatePipeline.from_crawler(project_crawler(tmp_path))
    item = pipeline.process_item(article(published=published))
    assert item.published == expected
    assert item.published.tzinfo is UTC


def test_validate_uses_the_crawl_time_when_there_is_none_and_tidies_dict_items(tmp_path):
    crawler = project_crawler(tmp_path)
    pipeline = ValidatePipeline.from_crawler(crawler)
    pipeline.open_spider()
    item = pipeline.process_item({"key": "k", "title": " a &amp;\n b ", "body": "<p>x</p>"})
    assert item["published"] == pipeline.crawl_time
    assert item["title"] == "a & b"
    assert crawler.stats.get_value(keys.ARTICLES_TIME_MISSING) == 1
    with pytest.raises(DropItem):
        pipeline.process_item({"key": "k", "title": None, "body": "<p>x</p>"})
    assert crawler.stats.get_value(keys.dropped("no_title")) == 1


def test_validate_drops_and_counts_items_without_title_or_body_and_takes_the_source_as_author(
    tmp_path,
):
    crawler = project_crawler(tmp_path)
    pipeline = ValidatePipeline.from_crawler(crawler)
    published = datetime(2022, 2, 2, 8, 8, 41, tzinfo=UTC)
    for item, reason in [
        ({"title": 5, "body": "<p>b</p>"}, "no title"),
        ({"title": "t", "body": "  "}, "no body"),
        ({"title": "t", "body": None}, "no body"),
    ]:
        with pytest.raises(DropItem, match=f"^{reason}$"):
            pipeline.process_item({**item, "published": published})
    assert crawler.stats.get_value(keys.dropped("no_title")) == 1
    assert crawler.stats.get_value(keys.dropped("no_body")) == 2
    item = pipeline.process_item(
        {"title": "t", "body": "<p>b</p>", "published": published, "source": "来源"}
    )
    assert item["author"] == "来源" and item["published"] == published


def test_normalize_takes_dict_items(tmp_path):
    pipeline = NormalizeHtmlPipeline.from_crawler(project_crawler(tmp_path))
    item = pipeline.process_item(
        {"url": "http://example.com/a", "body": '<p>x<img src="/i.png"><script>1</script></p>'}
    )
    assert item["headimg"] == "https://cors.zfour.workers.dev/?http://example.com/i.png"
    assert "script" not in item["body"]


def test_normalize_records_images_resolves_against_base_url_and_falls_back_to_the_cover(tmp_path):
    crawler = project_crawler(tmp_path, IMAGE_PROXY="", IMAGE_PROXY_HOSTS=[])
    pipeline = NormalizeHtmlPipeline.from_crawler(crawler)
    item = pipeline.process_item(
        {
            "url": "http://example.com/a/1",
            "base_url": "http://cdn.example.com/b/",
            "body": '<p>x<img src="i.png"></p>',
        }
    )
    assert item["images"] == ["http://cdn.example.com/b/i.png"]
    assert item["headimg"] == "http://cdn.example.com/b/i.png"
    assert item["image_sources"] == {
        "http://cdn.example.com/b/i.png": "http://cdn.example.com/b/i.png"
    }
    cover = pipeline.process_item(
        {
            "url": "http://example.com/a/2",
            "body": "<p>text</p>",
            "cover": [3, "/c.jpg", " //cdn.example.com/c.jpg"],
        }
    )
    assert cover["images"] == [] and cover["headimg"] == "http://cdn.example.com/c.jpg"
    with pytest.raises(DropItem, match=r"^nothing left after sanitising$"):
        pipeline.process_item({"url": "http://example.com/a/3", "body": "<script>1</script>"})
    assert crawler.stats.get_value(keys.dropped("empty_after_sanitising")) == 1


def test_the_crawl_state_is_one_component_the_crawler_owns(tmp_path):
    crawler = project_crawler(tmp_path)
    component = crawl_state(crawler)
    assert isinstance(component, CrawlStateExtension)
    assert crawl_state(crawler) is component
    assert component.state.uri == f"sqlite:///{tmp_path / 'state' / 'dedupe.sqlite3'}"


# --- the pipelines' edges: unusable state or output, logs, drop levels --------------------------
def drop_level(crawler, pipeline_call) -> int:
    """The level Scrapy logs a DropItem at (the exception's own log_level, else the project's
    DEFAULT_DROPITEM_LOG_LEVEL): what an operator sees of a dropped article."""
    with pytest.raises(DropItem) as dropped:
        pipeline_call()
    formatter = LogFormatter.from_crawler(crawler)
    return formatter.dropped({}, dropped.value, None, crawler.spider)["level"]


def test_an_unusable_crawl_state_stops_the_crawl_before_anything_is_written(tmp_path, caplog):
    (tmp_path / "a-file").write_text("")
    crawler = project_crawler(
        tmp_path, DEDUPE_URI=f"sqlite:///{tmp_path}/a-file/dedupe.sqlite3", OUTPUT_URI=""
    )
    storage = Storage()
    pipeline = WritePipeline(crawler, storage)
    with caplog.at_level(logging.ERROR), pytest.raises(CloseSpider) as stopped:
        run(pipeline.open_spider())
    assert stopped.value.reason == "state_unavailable"
    (message,) = [m for m in caplog.messages if "crawl state" in m]
    assert message.startswith(
        f"Cannot use the crawl state: DEDUPE_URI sqlite:///{tmp_path}/a-file/"
    )
    assert storage.opened == []  # the destination is not even opened


def test_an_unusable_output_directory_stops_the_crawl(tmp_path, caplog):
    (tmp_path / "a-file").write_text("")
    crawler = project_crawler(tmp_path, OUTPUT_URI=str(tmp_path / "a-file" / "posts"))
    pipeline = WritePipeline.from_crawler(crawler)
    with caplog.at_level(logging.ERROR), pytest.raises(CloseSpider) as stopped:
        run(pipeline.open_spider())
    assert stopped.value.reason == "output_unavailable"
    (message,) = [m for m in caplog.messages if "posts" in m]
    assert message.startswith(
        f"Cannot write posts: OUTPUT_URI {tmp_path}/a-file/posts: cannot create"
    )


def test_a_storage_that_opens_and_closes_later_is_waited_for(tmp_path, caplog):
    """A storage may answer open/close with a Deferred (S3 checks its bucket, flushes its
    manifest): a failure there must stop the crawl or reach the engine, not pass unseen."""
    crawler = project_crawler(tmp_path)
    refused = Storage(open_result=lambda: defer.fail(NotConfigured("bucket is gone")))
    with caplog.at_level(logging.ERROR), pytest.raises(CloseSpider) as stopped:
        run(WritePipeline(crawler, refused).open_spider())
    assert stopped.value.reason == "output_unavailable"
    assert "Cannot write posts: bucket is gone" in caplog.messages
    assert refused.opened == [crawler.spider]

    unflushed = Storage(close_result=lambda: defer.fail(OSError("manifest not flushed")))
    pipeline = WritePipeline(crawler, unflushed)
    with pytest.raises(OSError, match="manifest not flushed"):
        run(pipeline.close_spider())
    assert unflushed.closed == [crawler.spider]


def test_the_write_pipeline_is_built_for_output_uri_and_refuses_an_unknown_one(tmp_path):
    crawler = project_crawler(tmp_path, OUTPUT_URI=str(tmp_path / "posts"))
    pipeline = WritePipeline.from_crawler(crawler)
    assert pipeline.storage.directory == tmp_path / "posts"
    run(pipeline.open_spider())
    assert (tmp_path / "posts").is_dir()
    with pytest.raises(ConfigError, match=r"^cannot write posts: "):
        WritePipeline.from_crawler(project_crawler(tmp_path, OUTPUT_URI="ftp://host/posts"))


def test_the_write_pipeline_dates_posts_in_post_timezone_and_keeps_the_record_exact(
    tmp_path, caplog
):
    crawler = project_crawler(tmp_path, POST_TIMEZONE="Asia/Shanghai")
    storage = Storage()
    pipeline = WritePipeline(crawler, storage)
    published = datetime(2022, 2, 2, 8, 8, 41, tzinfo=UTC)
    item = {
        "key": "t-1",
        "site": "feed",
        "url": "http://example.com/t-1",
        "title": "t",
        "body": "<p>b</p>",
        "published": published,
        "author": "作者",
        "source": "来源",
    }

    async def scenario():
        await pipeline.open_spider()
        await pipeline.process_item(item)

    with caplog.at_level(logging.DEBUG):
        run(scenario())
    (record,) = storage.persisted
    assert record.published == published
    front, _ = read_post(record.data.decode())
    assert str(front["date"]) == "2022-02-02 16:08:41"  # Shanghai wall time
    assert front["author"] == "作者"  # the item's author wins over its source
    # no group or channel: empty categories, not a failed post
    assert front["categories"] == ["", "来源", ""]
    assert "Wrote t-1 <http://example.com/t-1> to out/t-1.md" in caplog.messages


def test_an_item_with_neither_author_nor_categories_still_becomes_a_post(tmp_path):
    storage = Storage()
    pipeline = WritePipeline(project_crawler(tmp_path), storage)
    item = {
        "key": "t-2",
        "site": "feed",
        "url": "http://example.com/t-2",
        "title": "t",
        "body": "<p>b</p>",
        "published": datetime(2022, 2, 2, tzinfo=UTC),
    }

    async def scenario():
        await pipeline.open_spider()
        await pipeline.process_item(item)

    run(scenario())
    front, _ = read_post(storage.persisted[0].data.decode())
    assert front["categories"] == ["", "", ""] and front["author"] == ""


def test_an_already_stored_post_is_dropped_at_info_and_bad_items_at_warning(tmp_path):
    """Another writer's copy is routine (INFO); an article without title or body, or with
    nothing left after sanitising, is worth a warning whatever the project's default."""
    crawler = project_crawler(tmp_path, DEFAULT_DROPITEM_LOG_LEVEL="DEBUG")
    pipeline = WritePipeline(crawler, Storage(created=False))
    run(pipeline.open_spider())
    assert drop_level(crawler, lambda: run(pipeline.process_item(article("q-1")))) == logging.INFO
    validate = ValidatePipeline.from_crawler(crawler)
    assert drop_level(crawler, lambda: validate.process_item({"title": "", "body": "x"})) == (
        logging.WARNING
    )
    normalize = NormalizeHtmlPipeline.from_crawler(crawler)
    empty = {"url": "http://example.com/a", "body": "<script>1</script>"}
    assert drop_level(crawler, lambda: normalize.process_item(empty)) == logging.WARNING


def test_validate_logs_a_missing_time_and_stamps_whole_seconds_in_utc(tmp_path, caplog):
    pipeline = ValidatePipeline.from_crawler(project_crawler(tmp_path))
    before_open = pipeline.process_item({"key": "k", "title": "t", "body": "b"})["published"]
    assert before_open.tzinfo is UTC  # usable even when open_spider was not called
    pipeline.open_spider()
    with caplog.at_level(logging.INFO):
        item = pipeline.process_item(
            {"key": "k-1", "url": "http://example.com/k-1", "title": "t", "body": "b"}
        )
    stamp = item["published"]
    assert stamp.tzinfo is UTC and stamp.microsecond == 0  # rendered dates have no fraction
    assert "No valid publish time for k-1 <http://example.com/k-1>: using the crawl time" in (
        caplog.messages
    )
    assert item["author"] == ""  # neither author nor source
    kept = pipeline.process_item({"title": "t", "body": "b", "author": "作者", "source": "来源"})
    assert kept["author"] == "作者"


def test_normalize_fails_the_article_it_cannot_read_and_proxies_only_the_listed_hosts(tmp_path):
    crawler = project_crawler(
        tmp_path, IMAGE_PROXY="https://proxy.example/?", IMAGE_PROXY_HOSTS=["cdn.example.com"]
    )
    pipeline = NormalizeHtmlPipeline.from_crawler(crawler)
    item = pipeline.process_item(
        {
            "url": "http://example.com/a",
            "body": '<img src="http://cdn.example.com/1.png"><img src="http://other.example/2.png">',
        }
    )
    assert item["images"] == [
        "https://proxy.example/?http://cdn.example.com/1.png",
        "http://other.example/2.png",
    ]
    with pytest.raises(ArticleFailed, match=r"^could not normalise its HTML: AttributeError\("):
        pipeline.process_item({"url": "http://example.com/b", "body": b"<p>bytes</p>"})


def test_the_post_image_skips_placeholders_and_takes_http_covers_in_any_case(tmp_path):
    crawler = project_crawler(tmp_path, IMAGE_PROXY="", IMAGE_PROXY_HOSTS=[])
    pipeline = NormalizeHtmlPipeline.from_crawler(crawler)
    placeholder = 'src="data:image/gif;base64,R0lGODlhAQABAAAAACw="'
    item = pipeline.process_item(
        {
            "url": "http://example.com/a",
            "body": f'<p>x<img {placeholder}><img src="http://example.com/real.png"></p>',
        }
    )
    assert item["headimg"] == "http://example.com/real.png"
    for cover in ("HTTP://cdn.example.com/c.jpg", "https://cdn.example.com/c.jpg"):
        item = pipeline.process_item(
            {"url": "http://example.com/b", "body": "<p>text</p>", "cover": [cover]}
        )
        assert item["headimg"] is not None and item["headimg"].lower() == cover.lower()


# --- the claim middleware's edges and the pending helpers ---------------------------------------
def test_the_article_its_listing_claimed_passes_and_an_unclaimed_response_is_checked(tmp_path):
    """The listing's claim covers the article's own page: its item is not claimed a second
    time (claims are not re-entrant, so that would drop it). A response whose request carries
    a key but no claim is no such page: its item is claimed like any other."""
    crawler = project_crawler(tmp_path)
    middleware = ClaimMiddleware.from_crawler(crawler)
    listing = HtmlResponse("http://example.com/list", body=b"")

    async def scenario():
        state = await crawl_state(crawler).open()
        (request,) = await collect(
            middleware.process_spider_output(listing, aiter([detail_request("q-1")]))
        )
        page = HtmlResponse(request.url, body=b"", request=request)
        own = await collect(middleware.process_spider_output(page, aiter([article("q-1")])))
        await state.published.mark_published([("q-2", "out/q-2.md")])
        unclaimed = HtmlResponse(
            "http://example.com/d/q-2", body=b"", request=detail_request("q-2")
        )
        published = await collect(
            middleware.process_spider_output(unclaimed, aiter([article("q-2")]))
        )
        return own, published

    own, published = run(scenario())
    assert [a.key for a in own] == ["q-1"]
    assert published == []
    assert crawler.stats.get_value(keys.ARTICLES_DUPLICATE) == 1


def test_what_holds_no_new_article_never_touches_the_state(tmp_path):
    """A listing page without articles, or an article page's own item, needs no claim: it
    goes through even when the crawl state could not be opened."""
    (tmp_path / "a-file").write_text("")
    crawler = project_crawler(tmp_path, DEDUPE_URI=f"sqlite:///{tmp_path}/a-file/x.sqlite3")
    middleware = ClaimMiddleware.from_crawler(crawler)
    listing = HtmlResponse("http://example.com/list", body=b"")
    claimed = detail_request("q-1", **{CLAIMED: "me"})
    page = HtmlResponse(claimed.url, body=b"", request=claimed)
    next_page = Request("http://example.com/list?page=2", meta={NEXT_PAGE: True})

    async def scenario():
        return (
            await collect(middleware.process_spider_output(listing, aiter([next_page, "x"]))),
            await collect(middleware.process_spider_output(page, aiter([article("q-1")]))),
        )

    links, own = run(scenario())
    assert links == [next_page, "x"] and [a.key for a in own] == ["q-1"]


def test_a_fully_published_listing_stops_with_its_other_output_kept(tmp_path, caplog):
    crawler = project_crawler(tmp_path)
    middleware = ClaimMiddleware.from_crawler(crawler)
    listing = HtmlResponse("http://example.com/list?page=1", body=b"")
    next_page = Request("http://example.com/list?page=2", meta={NEXT_PAGE: True})
    other = {"title": "no key"}

    async def scenario():
        state = await crawl_state(crawler).open()
        await state.published.mark_published([("a", "x")])
        return await collect(
            middleware.process_spider_output(
                listing, aiter([detail_request("a"), other, next_page])
            )
        )

    with caplog.at_level(logging.INFO):
        kept = run(scenario())
    assert kept == [other]
    assert (
        "Every article on the listing before http://example.com/list?page=2 is published: "
        "stopping" in caplog.messages
    )


def http_failure(status: int) -> Failure:
    response = HtmlResponse("http://example.com/d/1", status=status, body=b"")
    return Failure(HttpError(response, "Ignoring non-200 response"))


def test_a_download_failure_becomes_an_article_failure_described_for_the_log():
    with pytest.raises(ArticleFailed, match=r"^HTTP 503$") as failed:
        article_errback(http_failure(503))
    assert isinstance(failed.value.__cause__, HttpError)
    assert describe_failure(Failure(DNSLookupError("no such host"))) == (
        "DNSLookupError: DNS lookup failed: no such host."
    )
    with pytest.raises(ArticleFailed, match=r"^DNSLookupError: "):
        article_errback(Failure(DNSLookupError("no such host")))


def test_pending_to_retry_returns_the_sites_own_articles_oldest_first_and_clears_published(
    tmp_path,
):
    crawler = project_crawler(tmp_path)

    async def scenario():
        state = await crawl_state(crawler).open()
        for key, site, payload in [
            ("p-old", "feed", {"feed": "a"}),
            ("p-published", "feed", {"feed": "a"}),
            ("p-other-feed", "feed", {"feed": "b"}),
            ("p-other-site", "qutoutiao", {"feed": "a"}),
            ("p-new", "feed", {"feed": "a"}),
        ]:
            await state.pending.add(site, key, payload, "HTTP 503")
            await asyncio.sleep(0.01)  # first_at orders them
        await state.published.mark_published([("p-published", "out/p.md")])
        await state.pending.add("feed", "p-published", {"feed": "a"}, "HTTP 503")  # a stale entry
        retry = await pending_to_retry(crawler, "feed", lambda payload: payload["feed"] == "a")
        left = [a.key for a in await state.pending.list("feed")]
        return [a.key for a in retry], left

    retry, left = run(scenario())
    assert retry == ["p-old", "p-new"]
    assert left == ["p-old", "p-other-feed", "p-new"]  # the published one is cleared


def test_a_failure_that_cannot_be_kept_is_logged_with_its_key(tmp_path, caplog):
    (tmp_path / "a-file").write_text("")
    crawler = project_crawler(tmp_path, DEDUPE_URI=f"sqlite:///{tmp_path}/a-file/x.sqlite3")
    component = crawl_state(crawler)
    request = detail_request("q-7")

    async def scenario():
        failure = raised(ArticleFailed("HTTP 502"))
        response = HtmlResponse(request.url, body=b"", request=request)
        crawler.signals.send_catch_log(
            signals.spider_error, failure=failure, response=response, spider=crawler.spider
        )
        while component._background:
            await asyncio.gather(*component._background, return_exceptions=True)

    with caplog.at_level(logging.ERROR):
        run(scenario())
    assert (
        "Article q-7 <http://example.com/d/q-7> failed: HTTP 502; it will be retried next run"
        in caplog.messages
    )
    assert "Could not keep q-7 as pending" in caplog.messages
    assert "StateUnavailable" in caplog.text  # with the traceback
