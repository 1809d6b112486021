"""The feed spider: real crawls (`scrapy crawl feed` in a subprocess) of RSS 2.0, RSS 1.0 and
Atom feeds served by the replay server, plus its argument checks in-process."""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

import pytest
from aggregator.pipelines.normalize import NormalizeHtmlPipeline
from aggregator.spiders.feed import (
    FeedSpider,
    entity_expansion,
    entry_key,
    legacy_entry_key,
    rsshub_url,
)
from scrapy.utils.test import get_crawler
from statereader import StateReader

from aggregator.devtools.replay import Reply
from aggregator.errors import ConfigError
from aggregator.items import Article
from aggregator.keys import article_key
from aggregator.render.html import ImageProxy
from aggregator.render.post import parse_front_matter
from aggregator.state.pending import ArticleFailed

FEEDS = Path(__file__).resolve().parent / "fixtures" / "feeds"
EXPECTED = FEEDS / "expected"
CATEGORIES = "categories=新媒体,ZAKER,channel"
AUTHOR = "author=ZAKER"

ZAKER_DESCRIPTION = "feed--url-9e1e68de847bb85a3442ae05ac87834d.md"  # guid article/...4c11
ZAKER_CONTENT = "feed--url-d746b4b74f5a1264109a255667a98dde.md"  # guid article/...4c22
ZAKER_NO_DATE = "feed--url-218f2b7cf4e27f2c86fa2cc6d0d11b38.md"  # guid article/...4c33
ATOM_HTML = "feed--id-9019ed9a60b89ec3803325558599a957.md"  # tag:...,2024:post-42
ATOM_SUMMARY = "feed--id-2b891ff8fe70dfe4a78c638f5a442e58.md"  # tag:...,2024:post-43
ATOM_XML_BASE = "feed--id-9476767e127f71000582b5cae78b43be.md"  # tag:...,2024:post-44
RSS1_CONTENT = "feed--url-b90c3ef6f2f9e9555535a63b8eabe2fa.md"  # notes/2023-11-03
RSS1_DESCRIPTION = "feed--url-e2cb763dad3f52db4bf096946f8c3685.md"  # notes/2023-10-27


def front(post: bytes) -> dict:
    return parse_front_matter(post.decode("utf-8"))


def golden(name: str) -> bytes:
    return (EXPECTED / name).read_bytes()


def crawl_feed(crawler, path: str, *args: str, **settings: str):
    return crawler.crawl(
        "feed", f"url={crawler.base_url}{path}", CATEGORIES, AUTHOR, *args, **settings
    )


def test_post_names_are_the_keys_of_the_guids():
    """The constants above are what entry_key makes of the fixtures' guids and links."""
    zaker = "http://www.myzaker.com/article/"
    assert entry_key(zaker + "6405f2a1b15ec0591f7d4c11", None, []) + ".md" == ZAKER_DESCRIPTION
    assert entry_key(zaker + "6405f3c8b15ec0591f7d4c22", None, []) + ".md" == ZAKER_CONTENT
    assert entry_key("tag:blog.example.com,2024:post-42", None, []) + ".md" == ATOM_HTML
    assert (
        entry_key("https://journal.example.org/notes/2023-11-03", None, []) + ".md" == RSS1_CONTENT
    )


# --- one golden post per feed type ---------------------------------------------------------
def test_rsshub_rss2_route_golden_posts(crawler, replay):
    """RSSHub-style RSS 2.0 reached through `route=` and RSSHUB_BASE: CDATA descriptions,
    content:encoded before description, `<img>` without a referrer policy."""
    result = crawler.crawl(
        "feed", "route=/rsshub-zaker.rss", CATEGORIES, AUTHOR, RSSHUB_BASE=replay.base_url + "/"
    )
    assert result.returncode == 0, result.stderr
    posts = result.posts()
    assert sorted(posts) == sorted([ZAKER_DESCRIPTION, ZAKER_CONTENT, ZAKER_NO_DATE])
    assert posts[ZAKER_DESCRIPTION] == golden(ZAKER_DESCRIPTION)
    assert posts[ZAKER_CONTENT] == golden(ZAKER_CONTENT)
    assert b"\xe6\x91\x98\xe8\xa6\x81" not in posts[ZAKER_CONTENT]  # "摘要": description lost
    # no pubDate: the crawl time, counted
    assert front(posts[ZAKER_NO_DATE])["date"].endswith(" GMT")
    assert result.stat("articles/published_time_missing") == 1
    assert result.stat("feeds/fetched") == 1
    assert result.stat("feeds/entries") == 3
    assert replay.hits("/rsshub-zaker.rss") == 1


def test_atom_golden_post_content_html_summary_and_xml_base(crawler, replay):
    result = crawl_feed(crawler, "/news.atom")
    assert result.returncode == 0, result.stderr
    posts = result.posts()
    assert sorted(posts) == sorted([ATOM_HTML, ATOM_SUMMARY, ATOM_XML_BASE])
    assert posts[ATOM_HTML] == golden(ATOM_HTML)
    assert b"Only a summary" not in posts[ATOM_HTML]
    # published (09:30+08:00) before updated
    assert front(posts[ATOM_HTML])["date"] == "Sat, 18 May 2024 01:30:00 GMT"
    # a summary-only entry: the summary is the body, the enclosure image the cover
    summary = posts[ATOM_SUMMARY].decode()
    assert "<p>Small fixes all round.</p>" in summary
    assert front(posts[ATOM_SUMMARY])["headimg"] == (
        "https://cors.zfour.workers.dev/?https://cdn.example.com/covers/release-notes.jpg"
    )
    # xml:base, when the feed declares one, is the base of relative addresses
    mirrored = posts[ATOM_XML_BASE].decode()
    assert "?https://static.example.net/mirror/pics/mirror.png" in mirrored
    assert 'href="https://static.example.net/mirror/notes.html"' in mirrored


def test_rss1_golden_post(crawler, replay):
    result = crawl_feed(crawler, "/rss1.rdf")
    assert result.returncode == 0, result.stderr
    posts = result.posts()
    assert sorted(posts) == sorted([RSS1_CONTENT, RSS1_DESCRIPTION])
    assert posts[RSS1_CONTENT] == golden(RSS1_CONTENT)
    assert "<p>读了三本书，记下几段话。</p>" in posts[RSS1_DESCRIPTION].decode()
    assert front(posts[RSS1_DESCRIPTION])["date"] == "Fri, 27 Oct 2023 09:00:00 GMT"


def test_relative_links_and_images_resolve_against_the_entry_link(crawler, replay):
    result = crawl_feed(crawler, "/relative.rss")
    assert result.returncode == 0, result.stderr
    base = replay.base_url
    post = result.posts()["feed-relative-post-1.md"].decode()
    # the entry link /blog/2024/relative-post.html is relative to the feed
    assert f'href="{base}/blog/2024/other.html"' in post
    assert f'href="{base}/about.html"' in post
    proxied = f"https://cors.zfour.workers.dev/?{base}/blog/images/"
    assert f'src="{proxied}pic.png"' in post
    assert f'srcset="{proxied}pic-2x.png 2x"' in post
    assert front(result.posts()["feed-relative-post-1.md"])["headimg"] == proxied + "pic.png"


# --- bad feeds -----------------------------------------------------------------------------
def test_malformed_but_readable_feed_is_used_and_reported(crawler, replay):
    result = crawl_feed(crawler, "/malformed.rss")
    assert result.returncode == 0, result.stderr
    assert result.stat("feeds/malformed") == 1
    assert result.stat("articles/new") == 2
    assert f"Feed {replay.base_url}/malformed.rss is malformed" in result.stderr
    titles = sorted(front(p)["title"] for p in result.posts().values())
    assert titles == ["Salt & pepper notes", "Second & last"]


@functools.cache
def _padded_feed_gzipped() -> bytes:
    feed = (FEEDS / "rsshub-zaker.rss").read_bytes()
    return gzip.compress(feed.replace(b"</channel>", b"<!--" + b" " * 200_000 + b"--></channel>"))


@functools.cache
def _gzip_bomb() -> bytes:
    """64 MiB of zeros in 64 KiB (compressed once, not for each case below); DOWNLOAD_MAXSIZE
    stays at the project's 16 MiB."""
    return gzip.compress(b"\0" * (64 << 20), compresslevel=9)


@pytest.mark.parametrize(
    ("path", "stat", "message", "settings"),
    [
        ("/not-a-feed.txt", "not_a_feed", "not a feed", {}),
        ("/page.html", "html_not_feed", "an HTML page, not a feed", {}),
        ("/empty.rss", "empty", "rss20 feed without entries", {}),
        (
            "/rsshub-zaker.rss",
            "too_big",
            "larger than DOWNLOAD_MAXSIZE (500 bytes)",
            {"DOWNLOAD_MAXSIZE": "500"},
        ),
        ("/missing.rss", "unreachable", "HTTP 404", {}),
        (
            "/gzipped.rss",
            "too_big",
            "larger than DOWNLOAD_MAXSIZE (100000 bytes) once decompressed",
            {"DOWNLOAD_MAXSIZE": "100000"},
        ),
        (
            "/gzip-bomb.rss",
            "too_big",
            "larger than DOWNLOAD_MAXSIZE (16777216 bytes) once decompressed",
            {},
        ),
    ],
)
def test_bad_feed_fails_the_run_with_a_clear_message(
    crawler, replay, path, stat, message, settings
):
    gzipped = {"Content-Encoding": "gzip"}
    replay.set_reply("/gzipped.rss", Reply(body=_padded_feed_gzipped(), headers=gzipped))
    replay.set_reply("/gzip-bomb.rss", Reply(body=_gzip_bomb(), headers=gzipped))
    result = crawl_feed(crawler, path, **settings)
    assert result.returncode == 1, result.stderr
    assert result.stat(f"feeds/{stat}") == 1
    assert result.stat("listings/failed") == 1
    assert f"Bad feed {replay.base_url}{path}: {message}" in result.stderr
    assert result.posts() == {}
    assert result.stat("feeds/unreachable") == (stat == "unreachable")


# --- re-runs -------------------------------------------------------------------------------
def test_second_run_gets_304_and_writes_nothing(crawler, replay):
    first = crawl_feed(crawler, "/rsshub-zaker.rss")
    assert first.returncode == 0, first.stderr
    written = first.posts()
    mtimes = {p.name: p.stat().st_mtime_ns for p in crawler.output.glob("*.md")}
    replay.reset()
    second = crawl_feed(crawler, "/rsshub-zaker.rss")
    assert second.returncode == 0, second.stderr
    assert replay.requests == ["/rsshub-zaker.rss"]
    assert second.stat("feeds/not_modified") == 1
    assert second.stat("feeds/entries") == 0  # not parsed
    assert second.stat("articles/new") == 0
    assert second.posts() == written
    assert {p.name: p.stat().st_mtime_ns for p in crawler.output.glob("*.md")} == mtimes


def test_same_guid_in_two_feeds_is_written_once(crawler, replay):
    first = crawl_feed(crawler, "/rsshub-zaker.rss")
    assert first.returncode == 0, first.stderr
    original = first.posts()[ZAKER_DESCRIPTION]
    second = crawl_feed(crawler, "/mirror.rss")
    assert second.returncode == 0, second.stderr
    # the same guid, and a link-only entry whose link is another feed's guid URL (+ tracking)
    assert second.stat("articles/duplicate") == 2
    assert second.stat("articles/new") == 1
    posts = second.posts()
    assert len(posts) == 4
    assert posts[ZAKER_DESCRIPTION] == original
    assert "feed-mirror-only-here.md" in posts


# --- full text -----------------------------------------------------------------------------
def test_fulltext_failure_is_pending_and_retried_by_the_same_feed_only(crawler, replay):
    selector = "fulltext=article.post-body"
    replay.fail("/pages/ft-2.html", 500)
    first = crawl_feed(crawler, "/summary.rss", selector)
    assert first.returncode == 1, first.stderr
    assert sorted(first.posts()) == ["feed-ft-1.md"]
    post = first.posts()["feed-ft-1.md"].decode()
    assert "Lead text &lt;kept as text&gt;<p>The whole first article." in post
    assert f"?{replay.base_url}/pages/figure-1.png" in post
    assert "Summary one" not in post and "Comments and share" not in post
    assert first.stat("articles/failed") == 1
    assert first.stat("articles/pending") == 1

    # another feed's run leaves the pending entry alone
    replay.reset()
    other = crawl_feed(crawler, "/rss1.rdf")
    assert other.returncode == 0, other.stderr
    assert replay.hits("/pages/") == 0
    assert other.stat("articles/pending_retried") == 0
    assert "feed-ft-2.md" not in other.posts()

    replay.reset()
    second = crawl_feed(crawler, "/summary.rss", selector)
    assert second.returncode == 0, second.stderr
    assert second.stat("articles/pending_retried") == 1
    assert second.stat("feeds/not_modified") == 0  # validators of a failed run were not kept
    assert replay.hits("/pages/ft-1.html") == 0  # published: never fetched again
    assert replay.hits("/pages/ft-2.html") == 1
    retried = second.posts()["feed-ft-2.md"].decode()
    assert f'<a href="{replay.base_url}/pages/ft-1.html"' in retried
    assert second.stat("articles/new") == 1


def test_fulltext_entries_sharing_a_page_each_get_their_post(crawler, replay):
    # This pins the request dupefilter (one page, two entries, two requests). The two posts have
    # the same text, so with near-duplicate detection on the second would be one story with the
    # first, as soon as the page were longer than NEAR_DUPLICATE_MIN_CHARS (this one is not):
    # the check is off here so the test says what it is about.
    result = crawl_feed(
        crawler, "/shared-link.rss", "fulltext=article.post-body", NEAR_DUPLICATES="off"
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.posts()) == ["feed-live-1.md", "feed-live-2.md"]
    assert replay.hits("/pages/ft-1.html") == 2
    assert result.stat("articles/new") == 2


# --- arguments -----------------------------------------------------------------------------
def test_missing_categories_exits_2_before_crawling(crawler, replay):
    result = crawler.crawl("feed", f"url={replay.base_url}/rss1.rdf", AUTHOR)
    assert result.returncode == 2
    assert "categories=group,source,channel is required" in result.stderr
    assert replay.hits("/") == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"categories": "a,b,c", "author": "x"}, "exactly one spider argument"),
        ({"url": "http://x/f", "route": "/r", "categories": "a,b,c", "author": "x"}, "exactly one"),
        ({"url": "ftp://x/f", "categories": "a,b,c", "author": "x"}, "http(s) URL"),
        ({"route": "https://rsshub.app/x", "categories": "a,b,c", "author": "x"}, "a route is"),
        ({"url": "http://x/f", "author": "x"}, "categories=group,source,channel"),
        ({"url": "http://x/f", "categories": "a,b", "author": "x"}, "three values"),
        ({"url": "http://x/f", "categories": "a,b,c"}, "author=<name> is required"),
        ({"url": "http://x/f", "categories": "a,b,c", "author": "x", "fulltext": "div["}, "CSS"),
    ],
)
def test_bad_arguments_raise_config_error(arguments, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FeedSpider.parse_arguments(**arguments)


def test_good_arguments_are_parsed():
    options = FeedSpider.parse_arguments(
        route="zaker/channel/13", categories="新媒体, ZAKER ,channel", author=" ZAKER "
    )
    assert options["categories"] == ("新媒体", "ZAKER", "channel")
    assert options["author"] == "ZAKER"
    assert options["fulltext"] is None


def test_route_is_expanded_against_rsshub_base():
    """(The RSS 2.0 golden test crawls through a route too.)"""
    expected = "https://rss.example.org/hub/zaker/channel/13"
    assert rsshub_url("https://rss.example.org/hub/", "/zaker/channel/13") == expected
    assert rsshub_url("https://rsshub.app", "woshipm/latest") == "https://rsshub.app/woshipm/latest"
    with pytest.raises(ConfigError, match="RSSHUB_BASE"):
        rsshub_url("rsshub.app", "/x")


def test_entry_key_prefers_the_guid_and_treats_url_guids_as_urls():
    link = "https://a.example/p/1"
    assert entry_key("abc-1", link, []) == "feed-abc-1"
    assert entry_key(link, "https://elsewhere.example/x", []) == article_key("feed", None, link)
    assert entry_key(None, link + "?utm_source=rss", ["utm_source"]) == entry_key(link, None, [])


def test_the_entry_base_is_the_base_of_every_address_in_the_body():
    # The body's base (xml:base, the full-text page) differs from the entry link.
    html = (
        '<img src="a.png" srcset="b.png 2x, c.png 3x"><img data-src="d.png">'
        '<a href="../e">e</a><blockquote cite="f.html">f</blockquote>'
    )
    item = Article(
        key="feed-x",
        site="feed",
        url="https://elsewhere.example/entry",
        title="t",
        body=html,
        base_url="https://h.example/x/y.html",
    )
    pipeline = NormalizeHtmlPipeline(get_crawler().stats, ImageProxy(template=""))
    out = pipeline.process_item(item).body
    assert 'src="https://h.example/x/a.png"' in out
    assert 'srcset="https://h.example/x/b.png 2x, https://h.example/x/c.png 3x"' in out
    assert 'src="https://h.example/x/d.png"' in out
    assert 'href="https://h.example/e"' in out
    assert 'cite="https://h.example/x/f.html"' in out
    assert "elsewhere.example" not in out


def test_failed_write_is_pending_and_written_from_the_saved_entry_next_run(crawler, replay):
    # A directory squatting on the post's path makes the atomic rename fail.
    blocker = crawler.output / RSS1_DESCRIPTION
    blocker.mkdir(parents=True)
    first = crawl_feed(crawler, "/rss1.rdf")
    assert first.returncode == 1
    assert first.stat("articles/failed") == 1
    assert first.stat("articles/pending") == 1
    assert f"Could not write {RSS1_DESCRIPTION[:-3]}" in first.stderr

    blocker.rmdir()
    replay.reset()
    second = crawl_feed(crawler, "/rss1.rdf")
    assert second.returncode == 0, second.stderr
    assert second.stat("articles/pending_retried") == 1
    assert second.stat("feeds/not_modified") == 0  # the failed run kept no validators
    assert second.stat("articles/new") == 1
    assert second.stat("articles/duplicate") == 2  # the feed lists both again
    assert "<p>读了三本书，记下几段话。</p>" in second.posts()[RSS1_DESCRIPTION].decode()


def test_route_with_unusable_rsshub_base_exits_2_before_crawling(crawler, replay):
    result = crawler.crawl(
        "feed", "route=/zaker/channel/13", CATEGORIES, AUTHOR, RSSHUB_BASE="ftp://nowhere"
    )
    assert result.returncode == 2, result.stderr
    assert "RSSHUB_BASE='ftp://nowhere'" in result.stderr
    assert "Traceback" not in result.stderr
    assert replay.hits("/") == 0


# --- an article the normaliser fails on ----------------------------------------------------
FAILING_PIPELINES = json.dumps(
    {
        "aggregator.pipelines.validate.ValidatePipeline": 100,
        "failing_normalize.FailingNormalizePipeline": 200,
        "aggregator.pipelines.write.WritePipeline": 400,
    }
)


def test_article_the_normaliser_fails_on_is_counted_kept_pending_and_retried(crawler, replay):
    extra = Path(__file__).resolve().parent / "fixtures" / "extra_pipelines"
    url = f"url={replay.base_url}/rss1.rdf"
    first = crawler.command(
        *["crawl", "feed", "-a", url, "-a", CATEGORIES, "-a", AUTHOR],
        env={"PYTHONPATH": str(extra)},
        ITEM_PIPELINES=FAILING_PIPELINES,
    )
    assert first.returncode == 1, first.stderr
    assert sorted(first.posts()) == [RSS1_CONTENT]
    assert first.stat("articles/failed") == 1
    assert first.stat("articles/pending") == 1
    key = RSS1_DESCRIPTION[: -len(".md")]
    assert (
        f"Article {key} <https://journal.example.org/notes/2023-10-27> failed: "
        "could not normalise its HTML: RuntimeError('normaliser bug')"
    ) in first.stderr

    replay.reset()
    second = crawl_feed(crawler, "/rss1.rdf")
    assert second.returncode == 0, second.stderr
    assert second.stat("articles/pending_retried") == 1
    assert second.stat("articles/new") == 1
    assert "<p>读了三本书，记下几段话。</p>" in second.posts()[RSS1_DESCRIPTION].decode()


def test_a_normaliser_failure_is_an_article_failure():
    """The pipeline raises ArticleFailed (the pending recorder keeps it: tests/test_components)."""
    crawler = get_crawler(FeedSpider)

    def broken(html, base_url, proxy):
        raise ValueError("All strings must be XML compatible")

    pipeline = NormalizeHtmlPipeline.from_crawler(crawler)
    pipeline.normalise = broken
    item = Article(key="feed-x", site="feed", url="https://h.example/x", title="t", body="<p>")
    with pytest.raises(ArticleFailed, match=r"^could not normalise its HTML: ValueError\(") as e:
        pipeline.process_item(item)
    assert isinstance(e.value.__cause__, ValueError)


# --- guids with fragments ------------------------------------------------------------------
DELICIOUS = "http://del.icio.us/user"
DAYS = ["2009-01-21", "2009-01-20", "2009-01-19", "2009-01-18", "2009-01-17"]


def test_guid_fragment_is_part_of_the_key_unless_the_guid_is_the_permalink():
    guids = [f"{DELICIOUS}#{day}" for day in DAYS]
    keys = {entry_key(guid, DELICIOUS, [], permalink=False) for guid in guids}
    assert len(keys) == 5
    # isPermaLink absent but not the entry's link: still the full value
    assert len({entry_key(guid, DELICIOUS, []) for guid in guids}) == 5
    # the permalink (isPermaLink true or absent, the entry's link): as a link, no fragment
    live = "https://blog.example.com/live#update-3"
    assert entry_key(live, live, []) == article_key("feed", None, "https://blog.example.com/live")
    assert entry_key(live, live, [], permalink=False) != entry_key(live, live, [])
    # no fragment: the key it always had, whatever isPermaLink says
    plain = "http://www.myzaker.com/article/6405f2a1b15ec0591f7d4c11"
    assert entry_key(plain, plain, [], permalink=False) == article_key("feed", None, plain)
    assert entry_key(plain + "#", plain, [], permalink=False) == article_key("feed", None, plain)
    assert legacy_entry_key(guids[0], []) == article_key("feed", None, DELICIOUS)
    assert legacy_entry_key("tag:x,2024:1", []) is None


def test_entries_differing_only_after_the_fragment_are_five_posts(crawler, replay):
    result = crawl_feed(crawler, "/fragments.rss")
    assert result.returncode == 0, result.stderr
    posts = result.posts()
    assert len(posts) == 7
    titles = sorted(front(p)["title"] for p in posts.values())
    assert [t for t in titles if t.startswith("Bookmarks")] == [
        f"Bookmarks of {d}" for d in sorted(DAYS)
    ]
    live = "https://blog.example.com/live"
    permalink = article_key("feed", None, live)
    assert front(posts[f"{permalink}.md"])["title"] == "A permalink with a fragment"
    # isPermaLink="false" (read from the document: feedparser does not keep it)
    not_permalink = article_key("feed", None, live + "#update-2", keep_fragments=True)
    assert front(posts[f"{not_permalink}.md"])["title"].startswith("Not a permalink")


def test_an_entry_published_under_its_old_key_is_not_posted_again(crawler, replay):
    # An earlier version keyed every one of these guids as the page without its fragment, so
    # one of them was published under that key; which one cannot be told, so none comes back.
    legacy = article_key("feed", None, DELICIOUS)
    crawler.state.mkdir(parents=True, exist_ok=True)
    store = StateReader(crawler.state / "dedupe.sqlite3")
    store.mark_published(legacy, str(crawler.output / f"{legacy}.md"))
    store.close()
    result = crawl_feed(crawler, "/fragments.rss")
    assert result.returncode == 0, result.stderr
    titles = sorted(front(p)["title"] for p in result.posts().values())
    assert [t for t in titles if t.startswith("Bookmarks")] == []
    assert len(titles) == 2
    assert result.stat("articles/duplicate") == 5


# --- entities declared in the DTD ----------------------------------------------------------
def _entity_bomb(size: int, references: int) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<!DOCTYPE rss [\n<!ENTITY big "{"A" * size}">\n]>\n'
        '<rss version="2.0"><channel><title>t</title><item><title>x</title><guid>bomb-1</guid>'
        f"<description>{'&big;' * references}</description></item></channel></rss>"
    ).encode()


def test_entity_expansion_is_what_feedparser_would_expand():
    assert entity_expansion(_entity_bomb(8 << 20, 90), {}, 1 << 20) > 1 << 20
    assert entity_expansion(_entity_bomb(100, 3), {}, 1 << 20) == 300
    # the same in any encoding feedparser reads
    utf16 = _entity_bomb(100, 3).decode().replace("UTF-8", "UTF-16").encode("utf-16")
    assert entity_expansion(utf16, {}, 1 << 20) == 300
    assert entity_expansion((FEEDS / "entities.rss").read_bytes(), {}, 1 << 20) == 6 + 3 * 11
    assert entity_expansion((FEEDS / "news.atom").read_bytes(), {}, 1 << 20) == 0


def test_a_few_small_entities_are_fine(crawler, replay):
    result = crawl_feed(crawler, "/entities.rss")
    assert result.returncode == 0, result.stderr
    (post,) = result.posts().values()
    assert front(post)["title"] == "News from Example Co."  # nbsp: whitespace in a title
    assert "<p>Example Co. says hello.</p>" in post.decode()


def test_entity_bomb_is_a_bad_feed_and_memory_stays_small(crawler, replay):
    """8 MB entity x 90 references: feedparser would expand 720 MB (under expat's 100x
    amplification limit); without the check this crawl reached 2.3 GiB of RSS and died at the
    3 GiB address-space limit set here. With it: about 140 MiB."""
    replay.set_reply("/bomb.rss", Reply(body=_entity_bomb(8 << 20, 90), content_type="text/xml"))
    url = f"url={replay.base_url}/bomb.rss"
    result = crawler.command(
        *["crawl", "feed", "-a", url, "-a", CATEGORIES, "-a", AUTHOR], memory_limit=3 << 30
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stat("feeds/entity_expansion") == 1
    assert result.stat("listings/failed") == 1
    assert (
        f"Bad feed {replay.base_url}/bomb.rss: entity declarations in the DTD expand to more "
        "than 1048576 bytes"
    ) in result.stderr
    assert result.posts() == {}
    assert result.peak_rss_kib is not None
    assert result.peak_rss_kib < 400 * 1024, result.peak_rss_kib
