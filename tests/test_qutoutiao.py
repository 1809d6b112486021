"""Real crawls of the qutoutiao spider over HTTP against the replay server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aggregator.pipelines.write import WritePipeline
from conftest import Crawler, CrawlResult
from scrapy.utils.test import get_crawler

from aggregator.devtools.replay import Reply
from aggregator.errors import ConfigError
from aggregator.render.post import parse_front_matter

REFERENCE = Path(__file__).resolve().parent / "fixtures" / "qutoutiao"
EXPECTED = (REFERENCE / "expected" / "58837411.md").read_bytes()
REFERENCE_POST = "qutoutiao-58837411.md"


def front(post: bytes) -> dict:
    return parse_front_matter(post.decode("utf-8"))


# --- the format contract -------------------------------------------------------------------
def test_reference_article_via_json_detail_matches_byte_for_byte(crawler, replay):
    result = crawler.crawl("qutoutiao", "cid=1")
    assert result.returncode == 0, result.stderr
    assert result.posts() == {REFERENCE_POST: EXPECTED}
    assert replay.hits("/detail_json/58837411.json") == 1
    assert replay.hits("/detail/58837411.html") == 0


def test_post_timezone_writes_the_date_as_the_blogs_wall_time(crawler, replay):
    result = crawler.crawl("qutoutiao", "cid=1", POST_TIMEZONE="Asia/Shanghai")
    assert result.returncode == 0, result.stderr
    post = result.posts()[REFERENCE_POST]
    # 08:08:41 GMT is 16:08:41 in Shanghai; nothing else in the post changes
    assert b"\ndate: '2022-02-02 16:08:41'\n" in post
    assert post.replace(b"'2022-02-02 16:08:41'", b"Wed, 02 Feb 2022 08:08:41 GMT") == EXPECTED


def test_reference_article_via_html_page_matches_byte_for_byte(crawler, replay):
    listing = json.loads((REFERENCE / "outList-cid-1-page-1.json").read_text())
    for entry in listing["data"]["data"]:
        del entry["detail_url"]
    body = json.dumps(listing).replace("__BASE__", replay.base_url).encode()
    replay.set_reply("/content/outList", Reply(body=body, content_type="application/json"))
    result = crawler.crawl("qutoutiao", "cid=1")
    assert result.returncode == 0, result.stderr
    assert result.posts() == {REFERENCE_POST: EXPECTED}
    assert replay.hits("/detail/58837411.html") == 1
    assert replay.hits("/detail_json/") == 0


# --- paging --------------------------------------------------------------------------------
def test_pagination_follows_has_more_until_the_last_page(crawler, replay):
    result = crawler.crawl("qutoutiao", "cid=10", "pages=5")
    assert result.returncode == 0, result.stderr
    assert sorted(result.posts()) == [f"qutoutiao-{i}.md" for i in range(1001, 1007)]
    assert result.stat("listings/pages") == 3
    assert replay.hits("/content/outList?cid=10&tn=1&page=4") == 0


def test_pages_argument_caps_the_listing_pages(crawler, replay):
    result = crawler.crawl("qutoutiao", "cid=10", "pages=2", "limit=2")
    assert result.returncode == 0, result.stderr
    assert sorted(result.posts()) == [f"qutoutiao-{i}.md" for i in range(1001, 1005)]
    assert replay.hits("/content/outList?cid=10&tn=1&page=2&limit=2") == 1
    assert replay.hits("/content/outList?cid=10&tn=1&page=3") == 0


def test_rerun_makes_no_detail_requests_writes_nothing_and_stops_paging(crawler, replay):
    first = crawler.crawl("qutoutiao", "cid=10")
    assert first.returncode == 0, first.stderr
    written = first.posts()
    mtimes = {p.name: p.stat().st_mtime_ns for p in crawler.output.glob("*.md")}
    replay.reset()
    second = crawler.crawl("qutoutiao", "cid=10")
    assert second.returncode == 0, second.stderr
    assert replay.hits("/detail") == 0
    assert replay.hits("/content/outList?cid=10&tn=1&page=2") == 0  # page 1 all published
    assert second.stat("articles/new") == 0
    assert second.stat("articles/duplicate") == 2
    assert second.posts() == written
    assert {p.name: p.stat().st_mtime_ns for p in crawler.output.glob("*.md")} == mtimes


# --- duplicates ----------------------------------------------------------------------------
def test_same_article_in_two_cids_with_tracking_params_is_written_once(crawler, replay):
    result = crawler.crawl("qutoutiao", "cid=10,11")
    assert result.returncode == 0, result.stderr
    assert replay.hits("/detail_json/1001.json") == 1
    assert "qutoutiao-1001.md" in result.posts()
    assert result.stat("articles/duplicate") == 1
    assert len(list(crawler.output.glob("qutoutiao-1001*"))) == 1


# --- failures ------------------------------------------------------------------------------
def test_broken_listings_are_counted_and_other_cids_go_on(crawler, replay):
    result = crawler.crawl("qutoutiao", "cid=12,13,14,15")
    assert result.returncode == 1
    assert result.stat("listings/failed") == 3
    assert sorted(result.posts()) == ["qutoutiao-1501.md", "qutoutiao-1502.md"]
    for cid in ("12", "13", "14"):
        assert f"cid={cid}&tn=1&page=1" in result.stderr  # the URL is named in the log
    assert "not JSON" in result.stderr and "code -1" in result.stderr


def test_listing_http_error_is_a_failed_listing(crawler, replay):
    replay.fail("/content/outList?cid=15&tn=1&page=1&limit=10", status=503)
    result = crawler.crawl("qutoutiao", "cid=15")
    assert result.returncode == 1
    assert result.stat("listings/failed") == 1
    assert result.posts() == {}


def test_failed_article_is_pending_and_written_next_run_even_if_unlisted(crawler, replay):
    replay.fail("/detail_json/1501.json", status=500)
    first = crawler.crawl("qutoutiao", "cid=15")
    assert first.returncode == 1
    assert first.stat("articles/failed") == 1
    assert sorted(first.posts()) == ["qutoutiao-1502.md"]
    assert "qutoutiao-1501" in first.stderr and "HTTP 500" in first.stderr

    replay.reset()
    # The next run crawls a listing that no longer shows article 1501.
    second = crawler.crawl("qutoutiao", "cid=10", "pages=1")
    assert second.returncode == 0, second.stderr
    assert second.stat("articles/pending_retried") == 1
    assert replay.hits("/detail_json/1501.json") == 1
    assert "qutoutiao-1501.md" in second.posts()

    replay.reset()
    third = crawler.crawl("qutoutiao", "cid=15")
    assert third.returncode == 0, third.stderr
    assert replay.hits("/detail") == 0


def test_bad_details_fail_and_blank_titles_are_dropped(crawler, replay):
    result = crawler.crawl("qutoutiao", "cid=16")
    assert result.returncode == 1
    assert result.stat("articles/failed") == 3  # bad JSON, empty detail, no div.content
    assert result.stat("articles/dropped/no_title") == 1
    assert sorted(result.posts()) == ["qutoutiao-1605.md"]
    for key in ("qutoutiao-1601", "qutoutiao-1602", "qutoutiao-1603"):
        assert key in result.stderr


def test_unknown_spider_exits_2_with_a_plain_message(crawler, replay):
    result = crawler.crawl("qutoutio")
    assert result.returncode == 2
    assert "scrapy crawl qutoutio: Spider not found: qutoutio\n" in result.stderr
    assert replay.hits("/") == 0


def test_misspelt_spider_argument_exits_2_before_crawling(crawler, replay):
    result = crawler.crawl("qutoutiao", "cdi=15")
    assert result.returncode == 2
    assert "unknown spider argument 'cdi'" in result.stderr
    assert replay.hits("/") == 0


def test_bad_spider_argument_exits_2_before_crawling(crawler, replay):
    result = crawler.crawl("qutoutiao", "pages=zero")
    assert result.returncode == 2
    assert "pages" in result.stderr
    assert replay.hits("/") == 0


# --- content -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cid11(tmp_path_factory, replay_server) -> CrawlResult:
    """One crawl of cid 11 (hostile HTML, an odd title, lazy images, covers, bad show_time)
    that the content tests below each read."""
    replay_server.reset()
    crawler = Crawler(tmp_path_factory.mktemp("cid11"), replay_server.base_url)
    result = crawler.crawl("qutoutiao", "cid=11")
    replay_server.reset()
    return result


def test_hostile_html_never_reaches_the_post(cid11):
    result = cid11
    post = result.posts()["qutoutiao-1101.md"].decode()
    lowered = post.lower()
    for bad in (
        "<script",
        "alert",
        "onclick",
        "onerror",
        "javascript:",
        "<iframe",
        "<svg",
        "<style",
    ):
        assert bad not in lowered, bad
    assert 'href="https://example.com/ok"' in post
    assert 'src="https://cors.zfour.workers.dev/?http://127.0.0.1' in post


def test_odd_title_round_trips_and_injects_no_key(cid11):
    result = cid11
    meta = front(result.posts()["qutoutiao-1102.md"])
    assert meta["title"] == 'NO: a #tag & "quotes" --- layout: x'
    assert "layout" not in meta
    assert list(meta) == ["title", "categories", "author", "comments", "date"]


def test_lazy_relative_and_protocol_relative_images_are_resolved_and_proxied(cid11, replay_server):
    result, replay = cid11, replay_server
    post = result.posts()["qutoutiao-1103.md"].decode()
    proxy = "https://cors.zfour.workers.dev/?"
    base = replay.base_url
    assert f'src="{proxy}{base}/img/1103a.jpg"' in post
    assert f'src="{proxy}http://cdn.example.com/1103b.jpg"' in post
    assert f'src="{proxy}{base}/detail/relative/1103c.png"' in post
    assert 'src="data:image/gif;base64,' in post
    assert "data-original" not in post and "data-lazy-src" not in post
    assert post.count('referrerpolicy="no-referrer"') == 4
    assert front(result.posts()["qutoutiao-1103.md"])["headimg"] == (f"{proxy}{base}/img/1103a.jpg")


def test_articles_without_images_use_the_cover_or_leave_headimg_out(cid11):
    result = cid11
    posts = result.posts()
    no_image = front(posts["qutoutiao-1104.md"])
    assert "headimg" not in no_image and "thumbnail" not in no_image
    cover = front(posts["qutoutiao-1105.md"])
    expected = "https://cors.zfour.workers.dev/?http://static.example.com/cover1105.png"
    assert cover["headimg"] == cover["thumbnail"] == expected


def test_missing_or_invalid_show_time_uses_the_crawl_time(cid11):
    result = cid11
    assert result.stat("articles/published_time_missing") == 2
    dates = {front(result.posts()[f"qutoutiao-{i}.md"])["date"] for i in (1106, 1107)}
    assert all(d.endswith(" GMT") for d in dates)
    assert front(result.posts()["qutoutiao-1104.md"])["date"] == "Tue, 14 Nov 2023 22:13:20 GMT"


def test_categories_and_author_arguments_reach_the_post(crawler, replay):
    result = crawler.crawl(
        "qutoutiao", "cid=15", "categories=新媒体,趣头条,科技", "author=趣头条科技"
    )
    meta = front(result.posts()["qutoutiao-1502.md"])
    assert meta["categories"] == ["新媒体", "趣头条", "科技"]
    assert meta["author"] == "趣头条科技"


def test_feed_export_keeps_working_with_the_normalised_item(crawler, replay, tmp_path):
    out = tmp_path / "items.jsonl"
    result = crawler.command("crawl", "qutoutiao", "-a", "cid=15", "-o", str(out))
    assert result.returncode == 0, result.stderr
    items = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(i["key"] for i in items) == ["qutoutiao-1501", "qutoutiao-1502"]
    assert all('referrerpolicy="no-referrer"' in i["body"] for i in items)
    assert all(i["images"][0].startswith("https://cors.zfour.workers.dev/?") for i in items)


def test_failed_write_is_not_marked_published_and_is_written_next_run(crawler, replay):
    # A directory squatting on the post's path makes the atomic rename fail.
    blocker = crawler.output / "qutoutiao-1502.md"
    blocker.mkdir(parents=True)
    first = crawler.crawl("qutoutiao", "cid=15")
    assert first.returncode == 1
    assert first.stat("articles/failed") == 1
    assert first.stat("articles/new") == 1
    assert "Could not write qutoutiao-1502" in first.stderr
    assert not list(crawler.output.glob(".qutoutiao-1502.*"))  # no temp file left behind

    blocker.rmdir()
    replay.reset()
    # Not marked published: the next run fetches it again, though no listing is crawled.
    second = crawler.crawl("qutoutiao", "cid=99")  # an empty listing
    assert second.returncode == 0, second.stderr
    assert replay.hits("/detail_json/1502.json") == 1
    assert (crawler.output / "qutoutiao-1502.md").is_file()
    assert second.stat("articles/new") == 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"OUTPUT_URI": ""}, "OUTPUT_URI is empty"),
        ({"OUTPUT_URI": "ftp://host/posts"}, "no storage for scheme 'ftp'"),
        ({"OUTPUT_URI": "s3://"}, "needs a bucket name"),
        ({"OUTPUT_URI": "s3://bucket/blog", "S3_MAX_UPLOADS": "0"}, "S3_MAX_UPLOADS"),
        ({"OUTPUT_URI": "s3://bucket/blog", "AWS_SESSION_TOKEN": "t"}, "AWS_ACCESS_KEY_ID and"),
        ({"OUTPUT_URI": "s3://bucket/blog", "AWS_ACCESS_KEY_ID": "k"}, "AWS_SECRET_ACCESS_KEY"),
        ({"POST_TIMEZONE": "Asia/Shangai"}, "POST_TIMEZONE='Asia/Shangai': expected an IANA"),
        ({"OUTPUT_BATCH_SIZE": "0"}, "OUTPUT_BATCH_SIZE must be 1 or more"),
        ({"OUTPUT_BATCH_DELAY": "soon"}, "OUTPUT_BATCH_SIZE / OUTPUT_BATCH_DELAY"),
        ({"OUTPUT_SYNC": "fdatasync"}, "OUTPUT_SYNC must be fsync or syncfs"),
    ],
)
def test_unusable_output_setting_exits_2_before_crawling(crawler, replay, settings, message):
    # Were the write pipeline merely disabled, the crawl would "succeed" and write nothing.
    result = crawler.crawl("qutoutiao", "cid=15", **settings)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert replay.hits("/") == 0


def test_write_pipeline_refuses_to_be_disabled_by_a_bad_output():
    crawler = get_crawler(settings_dict={"OUTPUT_URI": "ftp://host/posts"})
    with pytest.raises(ConfigError, match="no storage for scheme 'ftp'"):
        WritePipeline.from_crawler(crawler)
