"""Near-duplicates end to end: real crawls (`scrapy crawl` in a subprocess) against the replay
server. The 趣头条 reference article (qutoutiao 58837411, a 辽宁日报 story) and another
aggregator's feed carrying the same story (tests/fixtures/feeds/repost.rss, full text on
pages/liaoning.html: its own wrapper, editor's note, ad line, 来源 footer and images) give one
post."""

from __future__ import annotations

import re
from pathlib import Path

from aggregator.devtools.replay import Reply

REFERENCE = Path(__file__).resolve().parent / "fixtures" / "qutoutiao"
EXPECTED = (REFERENCE / "expected" / "58837411.md").read_bytes()
FEED = "/repost.rss"
FEED_KEY = "feed-liaoning-20220202"
PAGE = "/pages/liaoning.html"


def crawl_repost_feed(crawler, **settings: str):
    return crawler.crawl(
        "feed",
        f"url={crawler.base_url}{FEED}",
        "categories=新媒体,新闻转载,民生",
        "author=新闻转载",
        "fulltext=article.post-body",
        **settings,
    )


def test_one_story_from_two_sources_is_one_post_and_neither_is_fetched_again(crawler, replay):
    first = crawler.crawl("qutoutiao", "cid=1")
    assert first.returncode == 0, first.stderr
    assert first.posts() == {"qutoutiao-58837411.md": EXPECTED}  # byte for byte, as without

    second = crawl_repost_feed(crawler)
    assert second.returncode == 0, second.stderr
    assert replay.hits(PAGE) == 1
    assert second.stat("articles/near_duplicate") == 1
    assert second.stat("articles/new") == 0
    assert second.posts() == {"qutoutiao-58837411.md": EXPECTED}
    line = re.search(
        rf"Near-duplicate {FEED_KEY} <{re.escape(crawler.base_url + PAGE)}> of "
        r"qutoutiao-58837411 \(similarity (\d\.\d\d)\): skipped",
        second.stderr,
    )
    assert line, second.stderr
    assert 0.55 <= float(line.group(1)) <= 1.0

    # Re-runs: the 趣头条 detail is not requested (published), and the feed, downloaded again
    # because it changed (no 304), lists the copy as published: its page is not fetched.
    replay.reset()
    again = crawler.crawl("qutoutiao", "cid=1")
    assert again.returncode == 0, again.stderr
    assert replay.hits("/detail") == 0
    feed = (Path(__file__).resolve().parent / "fixtures" / "feeds" / "repost.rss").read_text()
    changed = feed.replace("<title>新闻转载 - 民生</title>", "<title>新闻转载 - 民生频道</title>")
    replay.set_reply(
        FEED,
        Reply(
            body=changed.replace("__BASE__", crawler.base_url).encode(),
            content_type="application/rss+xml",
        ),
    )
    feed_again = crawl_repost_feed(crawler)
    assert feed_again.returncode == 0, feed_again.stderr
    assert feed_again.stat("feeds/not_modified") == 0
    assert feed_again.stat("feeds/entries") == 1
    assert feed_again.stat("articles/duplicate") == 1
    assert replay.hits(PAGE) == 0
    assert feed_again.stat("articles/near_duplicate") == 0
    assert feed_again.posts() == {"qutoutiao-58837411.md": EXPECTED}


def test_with_the_check_off_both_copies_are_posted(crawler, replay):
    assert crawler.crawl("qutoutiao", "cid=1", NEAR_DUPLICATES="off").returncode == 0
    result = crawl_repost_feed(crawler, NEAR_DUPLICATES="off")
    assert result.returncode == 0, result.stderr
    assert sorted(result.posts()) == [f"{FEED_KEY}.md", "qutoutiao-58837411.md"]
    assert result.stat("articles/near_duplicate") == 0


def test_a_bad_near_duplicate_setting_exits_2_before_crawling(crawler, replay):
    result = crawler.crawl("qutoutiao", "cid=1", NEAR_DUPLICATES="maybe")
    assert result.returncode == 2
    assert "NEAR_DUPLICATES must be one of skip, log, off, not 'maybe'" in result.stderr
    assert replay.hits("/") == 0
