"""Near-duplicates: the fingerprint's folding, the cases built from the reference article
(tests/neardupcases.py: its reposts and hard negatives), and the pipeline in-process with the
project's settings and crawl state (skip / log / off, stats, log line, claims after the write)."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import shutil
from typing import Any

import numpy as np
import pytest
from aggregator.pipelines.neardup import NearDuplicatePipeline, check_near_duplicate_settings
from neardupcases import negatives, original, positives, reference_article
from scrapy import Spider, signals
from scrapy.exceptions import CloseSpider, DropItem, NotConfigured
from scrapy.logformatter import LogFormatter
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler
from twisted.python.failure import Failure

from aggregator import settings as settings_module
from aggregator import stats as keys
from aggregator.devtools.reposts import repost
from aggregator.errors import ConfigError
from aggregator.items import Article
from aggregator.neardup.fingerprint import (
    Fingerprinter,
    _fold_slow,
    fold_text,
    shingle_hashes,
    visible_text,
)
from aggregator.neardup.index import (
    CLAIMED,
    DAY,
    PUBLISHED,
    RELEASED,
    IndexParams,
    band_buckets,
    similarity,
)
from aggregator.state.component import crawl_state


def project_settings(**overrides: Any) -> dict[str, Any]:
    project = {name: getattr(settings_module, name) for name in dir(settings_module)}
    return {**{k: v for k, v in project.items() if k.isupper()}, **overrides}


PROJECT = Settings(project_settings())
THRESHOLD = PROJECT.getfloat("NEAR_DUPLICATE_THRESHOLD")
BANDS, ROWS = PROJECT.getint("NEAR_DUPLICATE_BANDS"), PROJECT.getint("NEAR_DUPLICATE_ROWS")
MIN_CHARS = PROJECT.getint("NEAR_DUPLICATE_MIN_CHARS")


def project_fingerprinter() -> Fingerprinter:
    return Fingerprinter(
        hashes=PROJECT.getint("NEAR_DUPLICATE_HASHES"),
        shingle_chars=PROJECT.getint("NEAR_DUPLICATE_SHINGLE_CHARS"),
    )


# --- the fingerprint ----------------------------------------------------------------------
def test_fold_removes_what_reposts_change():
    plain = fold_text("新华社北京6月12日电（记者ABC）今天，公安机关销毁10余万非法枪支。")
    assert plain == "新华社北京6月12日电记者abc今天公安机关销毁10余万非法枪支"
    # full width letters, digits, punctuation and the ideographic space fold to the same text
    assert (
        fold_text("新华社北京６月１２日电（记者ＡＢＣ）今天，　公安机关销毁１０余万非法枪支。")
        == plain
    )
    # half-width punctuation, other spacing, line breaks
    assert fold_text("新华社北京6月12日电(记者 abc) 今天,\n公安机关销毁10余万非法枪支.") == plain
    # written-out addresses go
    assert fold_text("原文链接：https://news.example.cn/a/1.html?x=1 完") == "原文链接完"
    assert fold_text("详见www.example.com/page。") == "详见"


def test_the_fold_table_gives_what_the_string_functions_give():
    """The per-character table (with characters that expand, lie outside the BMP or combine
    with their neighbours) folds exactly as NFKC + casefold + letters and digits does."""
    pool = [chr(c) for c in range(0x20, 0x250)] + [chr(c) for c in range(0x300, 0x370)]
    pool += [chr(c) for c in range(0x1100, 0x1200)] + [chr(c) for c in range(0x2000, 0x2200)]
    pool += [chr(c) for c in range(0x3000, 0x3400)] + [chr(c) for c in range(0xAC00, 0xAC20)]
    pool += [chr(c) for c in range(0xFB00, 0xFB50)] + [chr(c) for c in range(0xFF00, 0xFFEF)]
    pool += ["😀", "𠀀", "𝐀", "\U0001d165", "\u3099", "㎡", "㈱", "ﬁ", "ü", "ど"]
    pool += list("辽宁日报记者今天就业民生") * 30
    rng = random.Random(13)
    for _ in range(3000):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(1, 40)))
        assert fold_text(text) == _fold_slow(text), repr(text)
    article = reference_article()["text"]
    assert fold_text(article) == _fold_slow(article)


def test_visible_text_ignores_markup_addresses_and_scripts():
    body = (
        '<div class="wrap"><p>第一段<img src="https://img.a.cn/1.jpg" alt="x">文字</p>'
        "<!-- 注释 --><script>var a = '脚本';</script><style>p{}</style>"
        '<p><a href="https://b.cn/x">链接文字</a>&amp;实体&nbsp;</p></div>'
    )
    text = fold_text(visible_text(body))
    assert text == "第一段文字链接文字实体"
    other = body.replace("https://img.a.cn/1.jpg", "https://proxy/?u=https://c.cn/2.webp")
    other = "<section>" + other.replace('class="wrap"', 'class="other"') + "</section>"
    assert fold_text(visible_text(other)) == text


def test_signatures_estimate_the_jaccard_similarity_of_the_shingle_sets():
    """One-permutation MinHash: the share of equal values tracks the exact Jaccard similarity
    of the 7-character shingle sets, over every case built from the reference article."""
    fingerprinter = project_fingerprinter()
    errors = []
    for case in positives() + negatives():
        a, b = fingerprinter.text(case.a), fingerprinter.text(case.b)
        k = fingerprinter.shingle_chars
        sa = {a[i : i + k] for i in range(len(a) - k + 1)}
        sb = {b[i : i + k] for i in range(len(b) - k + 1)}
        exact = len(sa & sb) / len(sa | sb)
        estimate = similarity(fingerprinter.signature(case.a), fingerprinter.signature(case.b))
        errors.append(abs(estimate - exact))
    # 128 values: a standard error of at most sqrt(0.25 / 128) = 0.044 on one pair
    assert max(errors) < 0.2
    assert sum(errors) / len(errors) < 0.06


def test_signatures_are_stable_and_short_texts_fill_every_bin():
    """The index keeps signatures across runs and machines: the scheme must not drift (a change
    is a new `spec`, which an index built before refuses)."""
    fingerprinter = project_fingerprinter()
    assert fingerprinter.spec == "oph seed=13 shingles=7"
    signature = fingerprinter.signature(original())
    assert signature.dtype == np.uint32 and signature.size == fingerprinter.hashes
    assert signature[:4].tolist() == PINNED
    assert np.array_equal(signature, project_fingerprinter().signature(original()))
    # 60 characters: most bins get no shingle and borrow a neighbour's value
    short = fingerprinter.signature(
        "<p>" + "就业是最大的民生，一边连着发展大局，一边连着民生冷暖。" * 2 + "</p>"
    )
    assert (short != 0xFFFFFFFF).all()
    assert similarity(short, short) == 1.0
    assert (fingerprinter.signature("") == 0xFFFFFFFF).all()


PINNED = [337595409, 11441159, 35954305, 389268255]


def test_shingle_hashes_are_one_per_position_and_order_sensitive():
    hashes = shingle_hashes("abcdefgh", 7)
    assert hashes.size == 2
    assert shingle_hashes("abcdefg", 7)[0] == hashes[0]
    assert shingle_hashes("bacdefg", 7)[0] != hashes[0]


# --- the cases -----------------------------------------------------------------------------
def called_duplicate(fingerprinter: Fingerprinter, a: str, b: str) -> tuple[bool, float, int]:
    """The pipeline's test with the project's settings: a band in common, then the estimated
    similarity against the threshold; texts under the minimum are never duplicates."""
    fa, fb = fingerprinter.fingerprint(a), fingerprinter.fingerprint(b)
    score = similarity(fa.hashvalues, fb.hashvalues)
    shared = set(band_buckets(fa.hashvalues, BANDS, ROWS)) & set(
        band_buckets(fb.hashvalues, BANDS, ROWS)
    )
    long_enough = min(fa.chars, fb.chars) >= MIN_CHARS
    return long_enough and bool(shared) and score >= THRESHOLD, score, min(fa.chars, fb.chars)


def test_reposts_of_the_reference_article_are_near_duplicates():
    """An ad line, a 来源 footer, an editor's note, punctuation and width changes, a trimmed
    ending, other image addresses, other wrapper HTML, copy-editing, alone and combined."""
    fingerprinter = project_fingerprinter()
    missed = []
    for case in positives():
        called, score, _ = called_duplicate(fingerprinter, case.a, case.b)
        if not called:
            missed.append((case.kind, score))
    assert missed == []
    assert len(positives()) >= 15


def test_look_alike_different_stories_are_not():
    """The first half of the story followed by other text; bulletins from one template with
    other figures; two short texts under one long boilerplate footer."""
    fingerprinter = project_fingerprinter()
    wrong = []
    for case in negatives():
        called, score, chars = called_duplicate(fingerprinter, case.a, case.b)
        assert chars >= MIN_CHARS, case.kind  # each is compared, not waved through as short
        if called:
            wrong.append((case.kind, score))
    assert wrong == []


# --- the pipeline --------------------------------------------------------------------------
def project_crawler(tmp_path, **overrides: Any):
    crawler = get_crawler(Spider, project_settings(STATE_DIR=str(tmp_path / "state"), **overrides))
    crawler.spider = Spider("test")
    return crawler


def article(key: str, body: str) -> Article:
    return Article(
        key=key, site=key.split("-")[0], url=f"http://example.com/{key}", title="t", body=body
    )


async def opened(crawler) -> NearDuplicatePipeline:
    pipeline = NearDuplicatePipeline.from_crawler(crawler)
    await pipeline.open_spider()
    return pipeline


async def finish(crawler, pipeline, item, *, written: bool) -> None:
    """What the write pipeline and Scrapy do after this pipeline: mark the article published,
    then `item_scraped`; or (the write failed) `item_error` without a mark."""
    if written:
        state = await crawl_state(crawler).open()
        await state.published.mark_published([(item.key, f"out/{item.key}.md")])
        await crawler.signals.send_catch_log_async(
            signal=signals.item_scraped, item=item, response=None, spider=crawler.spider
        )
    else:
        await crawler.signals.send_catch_log_async(
            signal=signals.item_error,
            item=item,
            response=None,
            spider=crawler.spider,
            failure=None,
        )
    while pipeline._settling:
        await asyncio.gather(*pipeline._settling)


def story() -> tuple[str, str]:
    """The reference as 趣头条 serves it and a feed's copy with another wrapper, footer and
    images."""
    copy = repost(reference_article(), ("footer", "images", "wrapper"), random.Random(1))
    return original(), copy


def test_skip_mode_drops_the_second_copy_logs_counts_and_marks_it(tmp_path, caplog):
    crawler = project_crawler(tmp_path)

    async def scenario():
        pipeline = await opened(crawler)
        body, copy = story()
        first, second = article("qutoutiao-58837411", body), article("feed-2", copy)
        assert await pipeline.process_item(first) is first
        assert first.body == body  # the post bytes are not touched
        await finish(crawler, pipeline, first, written=True)
        with caplog.at_level(logging.INFO), pytest.raises(DropItem, match="qutoutiao-58837411"):
            await pipeline.process_item(second)
        state = await crawl_state(crawler).open()
        # marked so that it is not fetched again, and where it went
        assert await state.published.published_among(["feed-2"]) == {"feed-2"}
        records = {r.key: r.location async for r in state.published.scan()}
        assert records["feed-2"] == "near-duplicate-of:qutoutiao-58837411"
        await pipeline.close_spider()

    asyncio.run(scenario())
    assert crawler.stats.get_value(keys.ARTICLES_NEAR_DUPLICATE) == 1
    line = next(r.getMessage() for r in caplog.records if "Near-duplicate" in r.getMessage())
    assert re.fullmatch(
        r"Near-duplicate feed-2 <http://example.com/feed-2> of qutoutiao-58837411 "
        r"\(similarity (0\.[5-9]\d|1\.00)\): skipped",
        line,
    )


def test_log_mode_publishes_the_copy_but_counts_and_logs_it(tmp_path, caplog):
    crawler = project_crawler(tmp_path, NEAR_DUPLICATES="log")

    async def scenario():
        pipeline = await opened(crawler)
        body, copy = story()
        first, second = article("qutoutiao-1", body), article("feed-2", copy)
        await pipeline.process_item(first)
        await finish(crawler, pipeline, first, written=True)
        with caplog.at_level(logging.INFO):
            assert await pipeline.process_item(second) is second
        state = await crawl_state(crawler).open()
        assert await state.published.published_among(["feed-2"]) == set()
        await pipeline.close_spider()

    asyncio.run(scenario())
    assert crawler.stats.get_value(keys.ARTICLES_NEAR_DUPLICATE) == 1
    line = next(r.getMessage() for r in caplog.records if "Near-duplicate" in r.getMessage())
    assert re.fullmatch(
        r"Near-duplicate feed-2 <http://example\.com/feed-2> of qutoutiao-1 "
        r"\(similarity (0\.[5-9]\d|1\.00)\): published anyway",
        line,
    )


def test_off_disables_the_pipeline_and_bad_settings_are_config_errors(tmp_path):
    with pytest.raises(NotConfigured, match=r"^NEAR_DUPLICATES is off$"):
        NearDuplicatePipeline.from_crawler(project_crawler(tmp_path, NEAR_DUPLICATES="off"))
    bad = [
        ({"NEAR_DUPLICATES": "sometimes"}, "must be one of skip, log, off"),
        ({"NEAR_DUPLICATE_BANDS": 50}, "at most hashes"),
        ({"NEAR_DUPLICATE_THRESHOLD": 1.5}, "threshold"),
        ({"NEAR_DUPLICATE_DAYS": 0}, "NEAR_DUPLICATE_DAYS must be positive"),
        ({"NEAR_DUPLICATE_CLAIM_TTL": -1}, "NEAR_DUPLICATE_CLAIM_TTL must be positive"),
        (
            {"DEDUPE_URI": "memo://x", "DEDUPE_STORES": {"memo": "builtins.object"}},
            "keeps the near-duplicate index",
        ),
    ]
    for overrides, message in bad:
        with pytest.raises(ConfigError, match=message):
            check_near_duplicate_settings(Settings(project_settings(**overrides)))
    # a window of half a day and a claim that counts for a second are fine
    check_near_duplicate_settings(
        Settings(project_settings(NEAR_DUPLICATE_DAYS=0.5, NEAR_DUPLICATE_CLAIM_TTL=1))
    )
    # with the check off, a store without the index is fine
    check_near_duplicate_settings(
        Settings(
            project_settings(
                NEAR_DUPLICATES="off", DEDUPE_URI="memo://x", DEDUPE_STORES={"memo": "x.Y"}
            )
        )
    )


def test_different_stories_and_short_texts_pass(tmp_path):
    crawler = project_crawler(tmp_path)
    short = "<p>" + "今天沈阳晴，最高气温二十度。" * 5 + "</p>"

    async def scenario():
        pipeline = await opened(crawler)
        items = [article(f"feed-{n}", case.b) for n, case in enumerate(negatives())]
        items.append(article("qutoutiao-58837411", original()))
        items += [article("feed-s1", short), article("feed-s2", short)]
        for item in items:
            assert await pipeline.process_item(item) is item
            await finish(crawler, pipeline, item, written=True)
        await pipeline.close_spider()

    asyncio.run(scenario())
    assert crawler.stats.get_value(keys.ARTICLES_NEAR_DUPLICATE) is None


def test_a_failed_write_leaves_no_claim_behind(tmp_path):
    """The first copy's write fails: its claim is released, so the next copy is published;
    then the story is taken and a third copy is dropped."""
    crawler = project_crawler(tmp_path)

    async def scenario():
        pipeline = await opened(crawler)
        body, copy = story()
        first = article("qutoutiao-58837411", body)
        await pipeline.process_item(first)
        await finish(crawler, pipeline, first, written=False)
        second = article("feed-2", copy)
        assert await pipeline.process_item(second) is second
        await finish(crawler, pipeline, second, written=True)
        with pytest.raises(DropItem, match="feed-2"):
            await pipeline.process_item(article("feed-3", body))
        await pipeline.close_spider()

    asyncio.run(scenario())


def test_the_index_is_kept_with_the_crawl_state_across_runs(tmp_path):
    body, copy = story()

    async def first_run():
        crawler = project_crawler(tmp_path)
        pipeline = await opened(crawler)
        item = article("qutoutiao-58837411", body)
        await pipeline.process_item(item)
        await finish(crawler, pipeline, item, written=True)
        await pipeline.close_spider()
        await crawl_state(crawler).engine_stopped()

    async def second_run():
        crawler = project_crawler(tmp_path)
        pipeline = await opened(crawler)
        with pytest.raises(DropItem, match="qutoutiao-58837411"):
            await pipeline.process_item(article("feed-2", copy))
        state = await crawl_state(crawler).open()
        tables = state._db.query("SELECT name FROM sqlite_master WHERE name LIKE 'nd_%'")
        assert {"nd_article", "nd_band", "nd_meta"} <= {row[0] for row in tables}
        await pipeline.close_spider()
        await crawl_state(crawler).engine_stopped()

    asyncio.run(first_run())
    asyncio.run(second_run())
    # the state file is the one DEDUPE_URI names: no other file beside it
    assert sorted(p.name for p in (tmp_path / "state").glob("*.sqlite3")) == ["dedupe.sqlite3"]


def test_an_index_built_with_other_parameters_stops_the_crawl(tmp_path, caplog):
    async def run(**overrides):
        crawler = project_crawler(tmp_path, **overrides)
        try:
            await opened(crawler)
        finally:
            await crawl_state(crawler).engine_stopped()

    asyncio.run(run())
    with pytest.raises(CloseSpider) as stopped:
        asyncio.run(run(NEAR_DUPLICATE_SHINGLE_CHARS=5))
    assert stopped.value.reason == "near_duplicate_index_mismatch"
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert line.startswith("Cannot use the near-duplicate index: ")
    assert "was built with" in line


def test_a_crawl_starts_by_forgetting_what_fell_out_of_the_window(tmp_path, caplog):
    body, copy = story()

    async def first_run():
        crawler = project_crawler(tmp_path)
        pipeline = await opened(crawler)
        item = article("qutoutiao-58837411", body)
        await pipeline.process_item(item)
        await finish(crawler, pipeline, item, written=True)
        await pipeline.close_spider()
        state = await crawl_state(crawler).open()
        # as if that article had been published 31 days ago
        state._db.query("UPDATE nd_article SET at = at - 31 * 86400")
        await crawl_state(crawler).engine_stopped()

    async def second_run():
        crawler = project_crawler(tmp_path)
        with caplog.at_level(logging.INFO):
            pipeline = await opened(crawler)
        item = article("feed-2", copy)
        assert await pipeline.process_item(item) is item
        await pipeline.close_spider()
        await crawl_state(crawler).engine_stopped()

    asyncio.run(first_run())
    asyncio.run(second_run())
    assert "Near-duplicate index: forgot 1 articles older than the window" in caplog.messages


# --- settings, claims and how items end -------------------------------------------------------
async def states_of(crawler) -> dict[str, int]:
    """key -> CLAIMED / PUBLISHED / RELEASED in the index, as the next check reads them."""
    state = await crawl_state(crawler).open()
    return dict(state._db.query("SELECT key, state FROM nd_article"))


async def age_index(crawler, seconds: float) -> None:
    """As if every article in the index had been checked `seconds` earlier."""
    state = await crawl_state(crawler).open()
    state._db.query("UPDATE nd_article SET at = at - ?", (seconds,))


async def end(crawler, item: Any, signal: object, *, published: bool = False) -> None:
    """Scrapy's end of `item`; the pipeline's settling of the claim is left running (the
    handlers only start it), for close_spider to wait for."""
    if published:
        state = await crawl_state(crawler).open()
        await state.published.mark_published([(item.key, f"out/{item.key}.md")])
    crawler.signals.send_catch_log(
        signal=signal,
        item=item,
        response=None,
        spider=crawler.spider,
        failure=Failure(RuntimeError("the write failed")),
        exception=DropItem("stored already"),
    )


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def handler_errors(caplog) -> list[str]:
    """Errors of the signal handlers and of settling claims (not the pending recorder's line
    about a failed article)."""
    return [m for m in errors(caplog) if "signal handler" in m or "near-duplicate index" in m]


def test_the_settings_reach_the_fingerprint_and_the_index(tmp_path):
    crawler = project_crawler(
        tmp_path,
        NEAR_DUPLICATE_HASHES=64,
        NEAR_DUPLICATE_SHINGLE_CHARS=5,
        NEAR_DUPLICATE_BANDS=8,
        NEAR_DUPLICATE_ROWS=4,
        NEAR_DUPLICATE_THRESHOLD=0.7,
        NEAR_DUPLICATE_DAYS=2,
        NEAR_DUPLICATE_CLAIM_TTL=60,
        NEAR_DUPLICATE_MIN_CHARS=50,
    )
    pipeline = NearDuplicatePipeline.from_crawler(crawler)
    assert (pipeline.fingerprinter.hashes, pipeline.fingerprinter.shingle_chars) == (64, 5)
    assert pipeline.params == IndexParams(
        hashes=64,
        bands=8,
        rows=4,
        threshold=0.7,
        window=2 * DAY,
        claim_ttl=60,
        fingerprint="oph seed=13 shingles=5",
    )
    assert (pipeline.mode, pipeline.min_chars) == ("skip", 50)


def test_a_claim_nobody_settles_counts_for_claim_ttl_only(tmp_path):
    """The process holding a claim died before its item ended: the claim holds back copies for
    NEAR_DUPLICATE_CLAIM_TTL seconds, then the next copy is published."""
    crawler = project_crawler(tmp_path, NEAR_DUPLICATE_CLAIM_TTL=60)
    body, copy = story()

    async def scenario():
        pipeline = await opened(crawler)
        await pipeline.process_item(article("qutoutiao-1", body))
        await age_index(crawler, 30)
        with pytest.raises(DropItem, match="qutoutiao-1"):
            await pipeline.process_item(article("feed-2", copy))
        await age_index(crawler, 90)
        later = article("feed-3", copy)
        assert await pipeline.process_item(later) is later
        await pipeline.close_spider()

    asyncio.run(scenario())


def test_how_an_item_ended_settles_its_claim_before_close(tmp_path, caplog):
    """item_scraped confirms the claim (the post was written), item_dropped and item_error
    confirm it if the crawl state has the article published (the write found it stored) and
    release it otherwise; close_spider waits for that. A confirmed article counts for the
    whole window, a released one no more."""
    crawler = project_crawler(tmp_path, NEAR_DUPLICATE_CLAIM_TTL=60)
    body, copy = story()
    others = [case.b for case in negatives()[:2]]

    async def scenario():
        pipeline = await opened(crawler)
        written, found = article("qutoutiao-1", body), article("feed-2", others[0])
        failed = article("feed-3", others[1])
        for item in (written, found, failed):
            assert await pipeline.process_item(item) is item
        await end(crawler, written, signals.item_scraped)
        await end(crawler, found, signals.item_dropped, published=True)
        await end(crawler, failed, signals.item_error)
        await pipeline.close_spider()
        assert await states_of(crawler) == {
            "qutoutiao-1": PUBLISHED,
            "feed-2": PUBLISHED,
            "feed-3": RELEASED,
        }
        await age_index(crawler, 3600)
        pipeline = await opened(crawler)
        with pytest.raises(DropItem, match="qutoutiao-1"):
            await pipeline.process_item(article("feed-4", copy))
        again = article("feed-5", others[1])
        assert await pipeline.process_item(again) is again
        await pipeline.close_spider()

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    assert handler_errors(caplog) == []


def test_claims_still_held_at_close_are_released(tmp_path):
    crawler = project_crawler(tmp_path)
    body, copy = story()

    async def scenario():
        pipeline = await opened(crawler)
        await pipeline.process_item(article("qutoutiao-1", body))
        await pipeline.close_spider()
        assert await states_of(crawler) == {"qutoutiao-1": RELEASED}
        pipeline = await opened(crawler)
        second = article("feed-2", copy)
        assert await pipeline.process_item(second) is second
        await pipeline.close_spider()

    asyncio.run(scenario())


def test_only_the_item_that_holds_a_claim_settles_it(tmp_path, caplog):
    """Items that hold no claim here end too (dropped before this pipeline, another object with
    the same key, no key at all): they leave the claims alone and log no error."""
    crawler = project_crawler(tmp_path)
    body = original()

    async def scenario():
        pipeline = await opened(crawler)
        holder = article("qutoutiao-1", body)
        await pipeline.process_item(holder)
        await end(crawler, article("qutoutiao-1", body), signals.item_dropped)
        await end(crawler, article("feed-9", "<p>短</p>"), signals.item_dropped)
        await end(crawler, {"title": "t"}, signals.item_dropped)
        assert await states_of(crawler) == {"qutoutiao-1": CLAIMED}
        await end(crawler, holder, signals.item_scraped)
        await pipeline.close_spider()
        assert await states_of(crawler) == {"qutoutiao-1": PUBLISHED}

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert handler_errors(caplog) == []


def test_what_is_no_article_text_passes_untouched(tmp_path):
    crawler = project_crawler(tmp_path)

    async def scenario():
        pipeline = await opened(crawler)
        for item in ({"body": original()}, {"key": "feed-1", "body": None}):
            assert await pipeline.process_item(item) is item
            assert await pipeline.process_item(item) is item
        assert await states_of(crawler) == {}
        await pipeline.close_spider()

    asyncio.run(scenario())


def test_a_text_of_exactly_min_chars_is_checked(tmp_path):
    fingerprinter = project_fingerprinter()
    text = fingerprinter.text(original())
    crawler = project_crawler(tmp_path)

    async def scenario():
        pipeline = await opened(crawler)
        for n, size in enumerate((MIN_CHARS - 1, MIN_CHARS)):
            body = f"<p>{text[:size]}</p>"
            assert fingerprinter.fingerprint(body).chars == size
            first = article(f"feed-{n}a", body)
            assert await pipeline.process_item(first) is first
            second = article(f"feed-{n}b", body)
            if size < MIN_CHARS:
                assert await pipeline.process_item(second) is second
            else:
                with pytest.raises(DropItem) as dropped:
                    await pipeline.process_item(second)
        await pipeline.close_spider()
        return dropped.value

    drop = asyncio.run(scenario())
    # the pipeline logged the near-duplicate at INFO; Scrapy's own line stays at DEBUG
    level = LogFormatter.from_crawler(crawler).dropped({}, drop, None, crawler.spider)["level"]
    assert level == logging.DEBUG


def test_a_claim_that_cannot_be_settled_is_logged_with_its_key(tmp_path, caplog):
    crawler = project_crawler(tmp_path)
    others = [case.b for case in negatives()[:1]]

    async def scenario():
        pipeline = await opened(crawler)
        written, dropped = article("qutoutiao-1", original()), article("feed-2", others[0])
        for item in (written, dropped):
            await pipeline.process_item(item)
        # the state's directory is gone, a file in its place: the index cannot be reopened
        await crawl_state(crawler).engine_stopped()
        shutil.rmtree(tmp_path / "state")
        (tmp_path / "state").write_text("")
        await end(crawler, written, signals.item_scraped)
        await end(crawler, dropped, signals.item_dropped)
        await pipeline.close_spider()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    failures = {
        r.getMessage(): r.exc_info is not None
        for r in caplog.records
        if "near-duplicate index" in r.getMessage()
    }
    assert failures == {
        "Could not confirm qutoutiao-1 in the near-duplicate index": True,
        "Could not settle feed-2 in the near-duplicate index": True,
    }


def test_an_unusable_crawl_state_stops_the_crawl_and_closing_is_quiet(tmp_path, caplog):
    (tmp_path / "a-file").write_text("")
    crawler = project_crawler(tmp_path, DEDUPE_URI=f"sqlite:///{tmp_path}/a-file/dedupe.sqlite3")
    pipeline = NearDuplicatePipeline.from_crawler(crawler)
    with caplog.at_level(logging.ERROR), pytest.raises(CloseSpider) as stopped:
        asyncio.run(pipeline.open_spider())
    assert stopped.value.reason == "state_unavailable"
    (line,) = errors(caplog)
    assert line.startswith(f"Cannot use the crawl state: DEDUPE_URI sqlite:///{tmp_path}/a-file/")
    asyncio.run(pipeline.close_spider())  # Scrapy closes what it opened, failed or not
