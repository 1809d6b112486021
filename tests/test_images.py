"""Image mirroring (IMAGES_MIRROR_URI): the helpers on their own, real crawls that mirror the
fixture site's images (tests/fixtures/images) into a directory and into moto's S3 server, then
the pipeline in-process (the mutation score's tests: mutmut only sees its own process)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from aggregator.pipelines.images import ImageMirrorPipeline, ImagesNotMirrored
from aggregator.pipelines.normalize import NormalizeHtmlPipeline
from scrapy import Spider
from scrapy.exceptions import CloseSpider, IgnoreRequest, NotConfigured
from scrapy.http import Request, Response
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler
from twisted.internet import defer
from twisted.internet import error as twisted_errors

from aggregator import settings as settings_module
from aggregator.devtools.replay import Reply
from aggregator.errors import ConfigError
from aggregator.images import STAT_ALREADY_STORED, STAT_BYTES, STAT_MIRRORED, failed_stat
from aggregator.images.addresses import (
    SourceRecorder,
    image_addresses,
    rewrite_image_addresses,
)
from aggregator.images.paths import image_path, mirrored_address, source_digest, stem
from aggregator.images.referer import RefererPolicy
from aggregator.images.settings import MirrorSettings
from aggregator.images.sniff import AVIF, GIF, JPEG, PNG, WEBP, Refused, sniff
from aggregator.images.stores import DirectoryImageStore, S3ImageStore
from aggregator.items import Article
from aggregator.render.html import DEFAULT_IMAGE_PROXY, ImageProxy, normalise_html
from aggregator.state.pending import ArticleFailed

FIXTURES = Path(__file__).resolve().parent / "fixtures"
IMAGES = FIXTURES / "images"
IMG = IMAGES / "img"
PX = DEFAULT_IMAGE_PROXY
BASE_URL = "/images/"
GOOD = {  # fixture file -> sniffed type
    "photo.jpg": JPEG,
    "chart.png": PNG,
    "anim.gif": GIF,
    "pic.webp": WEBP,
    "pic.avif": AVIF,
    "poster.jpg": JPEG,
    "hotlink.jpg": JPEG,
    "cover.png": PNG,
}


def fixture_bytes(name: str) -> bytes:
    return (IMG / name).read_bytes()


def stored_path(url: str, name: str) -> str:
    data = fixture_bytes(name)
    return image_path(url, data, GOOD[name])


# --- sniffing ------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "kind"), sorted(GOOD.items()))
def test_fixture_images_are_sniffed_from_their_bytes(name, kind):
    assert sniff(fixture_bytes(name)) == kind


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        ((IMG / "page.jpg").read_bytes(), "html"),
        (b"\xef\xbb\xbf  \n<html><body>x</body></html>", "html"),
        ((IMG / "logo.svg").read_bytes(), "svg"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>x()</script></svg>', "svg"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "unknown_type"),  # HEIC
        (b"BM\x00\x00 a bitmap", "unknown_type"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "unknown_type"),
    ],
)
def test_anything_but_the_five_raster_formats_is_refused_with_a_reason(data, reason):
    refused = sniff(data)
    assert isinstance(refused, Refused) and refused.reason == reason


def test_avif_is_recognised_by_a_compatible_brand_too():
    box = b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf"
    assert sniff(box + b"\x00" * 16) == AVIF


# --- paths ---------------------------------------------------------------------------------
def test_paths_come_from_the_canonical_url_and_the_bytes_with_the_sniffed_extension():
    url = "http://img.example.com/a/b.png?y=2&x=1#top"
    assert stem(url) == stem("http://img.example.com/a/b.png?x=1&y=2")
    assert stem(url) != stem("http://img.example.com/a/c.png?x=1&y=2")
    digest = source_digest(url)
    assert stem(url) == f"{digest[:2]}/{digest}" and len(digest) == 32
    jpeg = fixture_bytes("photo.jpg")
    path = image_path(url, jpeg, JPEG)  # a .png URL serving a JPEG is stored as .jpg
    assert re.fullmatch(rf"{digest[:2]}/{digest}-[0-9a-f]{{12}}\.jpg", path)
    assert image_path(url, jpeg + b"x", JPEG) != path  # other bytes, other name


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("/images/", "/images/ab/cd.jpg"),
        ("/images", "/images/ab/cd.jpg"),
        ("/", "/ab/cd.jpg"),
        ("https://img.example.com/", "https://img.example.com/ab/cd.jpg"),
        ("https://cdn.example.com/blog", "https://cdn.example.com/blog/ab/cd.jpg"),
    ],
)
def test_mirrored_address_is_the_base_url_and_the_path(base, expected):
    assert mirrored_address(base, "ab/cd.jpg") == expected


# --- which images, and rewriting them ------------------------------------------------------
ARTICLE = "https://news.example.com/a/1.html"


def test_the_recorder_proxies_as_the_proxy_does_and_remembers_each_original():
    body = (
        '<p><img data-src="/i/1.jpg" srcset="/i/1.jpg 1x, /i/2.jpg 2x"></p>'
        f'<p><img src="{PX}https://cdn.example.com/x.png"></p>'
        '<video poster="/i/p.jpg" src="/v.mp4"></video><img src="data:image/gif;base64,R0lG">'
    )
    recorder = SourceRecorder(ImageProxy())
    plain = normalise_html(body, ARTICLE, ImageProxy())
    recorded = normalise_html(body, ARTICLE, recorder)  # type: ignore[arg-type]
    assert recorded == plain
    site = "https://news.example.com"
    assert recorder.sources == {
        f"{site}/i/1.jpg": f"{PX}{site}/i/1.jpg",
        f"{site}/i/2.jpg": f"{PX}{site}/i/2.jpg",
        # already proxied in the source: recorded under the URL inside it
        "https://cdn.example.com/x.png": f"{PX}https://cdn.example.com/x.png",
        f"{site}/i/p.jpg": f"{PX}{site}/i/p.jpg",
    }
    assert image_addresses(recorded.html) == [
        f"{PX}{site}/i/1.jpg",
        f"{PX}{site}/i/2.jpg",
        f"{PX}https://cdn.example.com/x.png",
        f"{PX}{site}/i/p.jpg",
        "data:image/gif;base64,R0lG",
    ]


def test_without_a_proxy_the_original_is_its_own_address():
    recorder = SourceRecorder(ImageProxy(template=""))
    normalise_html('<img src="/i/1.jpg">', ARTICLE, recorder)  # type: ignore[arg-type]
    url = "https://news.example.com/i/1.jpg"
    assert recorder.sources == {url: url}


def test_rewriting_touches_image_attributes_only():
    a, b = f"{PX}http://x.cn/a.jpg?p=1&q=2", f"{PX}http://x.cn/b.webp"
    body = normalise_html(
        '<p><img src="http://x.cn/a.jpg?p=1&amp;q=2" alt="a" srcset="http://x.cn/a.jpg?p=1&amp;q=2'
        ' 1x, http://x.cn/b.webp 2x"></p><p>见 https://cors.zfour.workers.dev/?http://x.cn/b.webp'
        ' 和 <a href="http://x.cn/b.webp">原图</a></p><picture><source srcset="http://x.cn/b.webp">'
        '</picture><video poster="http://x.cn/a.jpg?p=1&amp;q=2"></video>',
        ARTICLE,
        ImageProxy(),
    ).html
    mirrored = {a: "/images/aa/a.jpg", b: "https://img.example.com/bb/b&c.webp"}
    rewritten = rewrite_image_addresses(body, lambda address: mirrored.get(address, address))
    expected = (
        body.replace(f'src="{a.replace("&", "&amp;")}"', 'src="/images/aa/a.jpg"')
        .replace(
            f'srcset="{a.replace("&", "&amp;")} 1x, {b} 2x"',
            'srcset="/images/aa/a.jpg 1x, https://img.example.com/bb/b&amp;c.webp 2x"',
        )
        .replace(
            f'<source srcset="{b}"', '<source srcset="https://img.example.com/bb/b&amp;c.webp"'
        )
        .replace(f'poster="{a.replace("&", "&amp;")}"', 'poster="/images/aa/a.jpg"')
    )
    assert rewritten == expected
    assert f"见 {b} 和" in rewritten  # text keeps the proxied address
    assert '<a href="http://x.cn/b.webp"' in rewritten
    assert rewrite_image_addresses(body, lambda address: address) == body


def test_normalise_pipeline_records_the_cover_behind_headimg():
    pipeline = NormalizeHtmlPipeline.from_crawler(get_crawler(settings_dict={"IMAGE_PROXY": PX}))
    item = Article(
        key="qutoutiao-1",
        site="qutoutiao",
        url=ARTICLE,
        title="t",
        body="<p>只有文字</p>",
        cover=["https://news.example.com/c.png"],
    )
    pipeline.process_item(item)
    cover = "https://news.example.com/c.png"
    assert item.headimg == PX + cover
    assert item.image_sources == {cover: PX + cover}


# --- referer policy and settings ----------------------------------------------------------
def test_referer_is_the_article_unless_the_host_says_otherwise():
    policy = RefererPolicy(
        {"example.com": "none", "img.example.com": "https://www.example.com/", "*": "article"}
    )
    article = "https://news.example.cn/1.html"
    assert policy.referer("https://other.cn/a.jpg", article) == article
    assert policy.referer("https://static.example.com/a.jpg", article) is None
    assert policy.referer("https://img.example.com/a.jpg", article) == "https://www.example.com/"
    assert RefererPolicy({"*": "none"}).referer("https://a.cn/x.jpg", article) is None
    with pytest.raises(ConfigError, match="expected 'article', 'none' or an http"):
        RefererPolicy({"a.cn": "sometimes"})


def mirror_settings(**values) -> Settings:
    settings = Settings()
    settings.setmodule("aggregator.settings")
    settings.update(values)
    return settings


def test_mirroring_is_off_unless_configured():
    with pytest.raises(NotConfigured) as caught:
        ImageMirrorPipeline.from_crawler(get_crawler(settings_dict={}))
    assert caught.value.args == ()  # Scrapy leaves it out without a word


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"IMAGES_MIRROR_URI": "img"}, "IMAGES_MIRROR_BASE_URL is not"),
        ({"IMAGES_MIRROR_URI": "img", "IMAGES_MIRROR_BASE_URL": "images/"}, "starting with /"),
        ({"IMAGES_MIRROR_URI": "ftp://h/img", "IMAGES_MIRROR_BASE_URL": "/i/"}, "scheme 'ftp'"),
        (
            {
                "IMAGES_MIRROR_URI": "img",
                "IMAGES_MIRROR_BASE_URL": "/i/",
                "IMAGES_MIRROR_EXPIRES": -1,
            },
            "IMAGES_MIRROR_EXPIRES",
        ),
        (
            {
                "IMAGES_MIRROR_URI": "img",
                "IMAGES_MIRROR_BASE_URL": "/i/",
                "IMAGES_MIRROR_REFERER": '{"a.cn": "never"}',
            },
            "IMAGES_MIRROR_REFERER",
        ),
    ],
)
def test_bad_mirror_settings_are_configuration_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        MirrorSettings.from_settings(mirror_settings(**values))


# --- the directory store -------------------------------------------------------------------
def test_directory_store_never_overwrites_and_finds_the_newest_version(tmp_path):
    store = DirectoryImageStore(str(tmp_path / "img"), fsync=False)
    store.open()
    url = "http://x.cn/a.jpg"
    first = image_path(url, b"\xff\xd8\xffone", JPEG)
    assert store.write(first, b"\xff\xd8\xffone") is True
    assert store.write(first, b"\xff\xd8\xffone") is False  # the name stands for its content
    assert store.lookup(stem(url))["path"] == first
    second = image_path(url, b"\xff\xd8\xfftwo", JPEG)
    assert store.write(second, b"\xff\xd8\xfftwo") is True
    os.utime(tmp_path / "img" / first, (1, 1))  # the first version is older
    assert store.lookup(stem(url))["path"] == second
    assert store.lookup(stem("http://x.cn/other.jpg")) == {}
    files = sorted(p.name for p in (tmp_path / "img").rglob("*") if p.is_file())
    assert files == sorted([first.split("/")[1], second.split("/")[1]])  # no temp files
    assert oct((tmp_path / "img" / first).stat().st_mode & 0o777) == "0o644"
    with pytest.raises(ValueError, match="refusing"):
        store.write("../escape.jpg", b"x")


# --- crawls into a directory ----------------------------------------------------------------
def front(post: bytes) -> dict:
    return yaml.safe_load(post.decode("utf-8").split("---\n")[1])


def mirror(crawler, **settings: str) -> dict[str, str]:
    return {
        "IMAGES_MIRROR_URI": str(crawler.workdir / "mirror"),
        "IMAGES_MIRROR_BASE_URL": BASE_URL,
        **settings,
    }


def image_url(replay, name: str) -> str:
    return f"{replay.base_url}/img/{name}"


def troublemakers(replay, maxsize: int) -> None:
    """An oversized image, a slow one and one that refuses requests without its Referer."""
    replay.set_reply("/img/huge.jpg", Reply(body=b"\xff\xd8\xff" + b"\0" * maxsize))
    replay.set_reply("/img/slow.jpg", Reply(body=fixture_bytes("photo.jpg"), delay=2.5))
    replay.set_reply(
        "/img/hotlink.jpg",
        Reply(
            body=fixture_bytes("hotlink.jpg"),
            content_type="image/jpeg",
            referer_prefix=f"{replay.base_url}/detail/4001.html",
        ),
    )


def test_images_are_mirrored_into_a_directory_and_a_rerun_downloads_none(crawler, replay):
    troublemakers(replay, maxsize=20_000)
    settings = mirror(crawler, IMAGES_MIRROR_MAXSIZE="20000", DOWNLOAD_TIMEOUT="1")
    first = crawler.crawl("qutoutiao", "cid=40", **settings)
    assert first.returncode == 0, first.stderr  # failed images never fail the post
    assert first.stat("articles/new") == 3
    assert first.stat("images/mirrored") == len(GOOD)
    assert first.stat("images/bytes") == sum(len(fixture_bytes(name)) for name in GOOD)
    for reason in ("http_404", "html", "svg", "too_big", "timeout"):
        assert first.stat(f"images/failed/{reason}") == 1, reason

    # stored once, byte for byte, at their content-addressed paths
    root = crawler.workdir / "mirror"
    stored = {name: stored_path(image_url(replay, name), name) for name in GOOD}
    for name, path in stored.items():
        assert (root / path).read_bytes() == fixture_bytes(name), name
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.*")) == sorted(
        stored.values()
    )
    assert replay.hits("/img/photo.jpg") == 1  # shared by two articles, fetched once
    assert replay.hits("/video/") == 0  # video streams are not images
    assert [ref for target, ref in replay.referers if target == "/img/hotlink.jpg"] == [
        f"{replay.base_url}/detail/4001.html?content_id=4001"
    ]
    assert "Image " + image_url(replay, "missing.jpg") + " of qutoutiao-4001 <" in first.stderr

    posts = first.posts()
    post = posts["qutoutiao-4001.md"].decode("utf-8")
    new = {name: BASE_URL + path for name, path in stored.items()}
    proxied = {name: PX + image_url(replay, name) for name in ("missing.jpg", "page.jpg")}
    assert front(posts["qutoutiao-4001.md"])["headimg"] == new["photo.jpg"]
    assert f'<img src="{new["photo.jpg"]}" data-size="48,32" referrerpolicy="no-referrer">' in post
    assert f'srcset="{new["chart.png"]} 1x, {new["pic.webp"]} 2x"' in post
    assert f'<img src="{new["anim.gif"]}" referrerpolicy="no-referrer">' in post
    assert f'<source srcset="{new["pic.avif"]}" type="image/avif">' in post
    assert f'poster="{new["poster.jpg"]}" src="{replay.base_url}/video/clip.mp4"' in post
    assert f'<img src="{new["hotlink.jpg"]}" referrerpolicy="no-referrer">' in post
    for name in ("missing.jpg", "page.jpg", "logo.svg", "huge.jpg", "slow.jpg"):
        assert f'<img src="{PX}{image_url(replay, name)}" referrerpolicy="no-referrer">' in post
    # text and links are not image addresses
    assert f"正文提到 {PX}{image_url(replay, 'photo.jpg')} 这个地址" in post
    assert f'<a href="{image_url(replay, "photo.jpg")}"' in post
    assert proxied["missing.jpg"] in post
    assert front(posts["qutoutiao-4003.md"])["thumbnail"] == new["cover.png"]
    assert new["photo.jpg"] in posts["qutoutiao-4002.md"].decode("utf-8")

    # A crawl with a fresh state (every article new again) finds every image stored.
    replay.reset()
    troublemakers(replay, maxsize=20_000)
    replay.fail("/img/slow.jpg", 404)  # the timeout was shown; do not wait for it again
    again = crawler.crawl("qutoutiao", "cid=40", STATE_DIR=str(crawler.workdir / "s2"), **settings)
    assert again.returncode == 0, again.stderr
    assert again.stat("articles/new") == 3
    assert again.stat("images/already_stored") == len(GOOD)
    assert again.stat("images/mirrored") == 0
    assert sum(replay.hits(f"/img/{name}") for name in GOOD) == 0
    assert again.posts() == posts  # the same posts, the same files


def test_the_reference_article_mirrored_differs_only_in_its_image_addresses(crawler, replay):
    # The reference image lives on static.1sapp.com; an HTTP proxy (the replay server, which
    # serves tests/fixtures/images/qupost/...) brings it home without touching the fixture.
    env = {
        "http_proxy": replay.base_url,
        "HTTP_PROXY": replay.base_url,
        "no_proxy": "127.0.0.1,localhost",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    result = crawler.command(
        "crawl", "qutoutiao", "-a", "cid=1", env=env, **mirror(crawler, OUTPUT_FSYNC="0")
    )
    assert result.returncode == 0, result.stderr
    source = "http://static.1sapp.com/qupost/img/2022/02/02/ce972ef3c4dcf839837636d30fbc5b5c.png"
    data = (IMAGES / "qupost/img/2022/02/02/ce972ef3c4dcf839837636d30fbc5b5c.png").read_bytes()
    path = image_path(source, data, PNG)
    assert (crawler.workdir / "mirror" / path).read_bytes() == data
    expected = (FIXTURES / "qutoutiao" / "expected" / "58837411.md").read_bytes()
    mirrored = result.posts()["qutoutiao-58837411.md"]
    assert mirrored != expected
    assert mirrored == expected.replace((PX + source).encode(), (BASE_URL + path).encode())
    assert replay.hits(source) == 1  # body image and cover: one download


def test_required_images_keep_the_article_pending_until_they_can_be_mirrored(crawler, replay):
    replay.fail("/img/later.jpg", 404)
    settings = mirror(crawler, IMAGES_MIRROR_REQUIRED="True")
    first = crawler.crawl("qutoutiao", "cid=41", **settings)
    assert first.returncode == 1
    assert first.stat("articles/failed") == 1
    assert first.stat("articles/pending") == 1
    assert first.stat("images/failed/http_404") == 1
    assert first.posts() == {}
    assert "Article qutoutiao-4101 <" in first.stderr  # the pending recorder's line
    assert "failed: 1 image(s) not mirrored: " + image_url(replay, "later.jpg") in first.stderr
    assert "<p>" not in first.stderr  # the item's body is not dumped into the log

    replay.reset()
    second = crawler.crawl("qutoutiao", "cid=99", **settings)  # pending articles come first
    assert second.returncode == 0, second.stderr
    assert second.stat("articles/pending_retried") == 1
    assert (second.stat("images/already_stored"), second.stat("images/mirrored")) == (1, 1)
    assert replay.hits("/img/chart.png") == 0
    post = second.posts()["qutoutiao-4101.md"].decode("utf-8")
    for name in ("chart.png", "later.jpg"):
        assert (
            BASE_URL
            + image_path(
                image_url(replay, name), fixture_bytes(name), JPEG if name.endswith(".jpg") else PNG
            )
            in post
        )


def test_mirroring_settings_are_checked_before_anything_is_crawled(crawler, replay):
    result = crawler.crawl("qutoutiao", "cid=40", IMAGES_MIRROR_URI="img")
    assert result.returncode == 2
    assert "IMAGES_MIRROR_BASE_URL is not" in result.stderr
    assert replay.hits("/") == 0


# --- S3 --------------------------------------------------------------------------------------
def test_images_are_mirrored_into_s3_and_listed_in_the_manifest(crawler, replay, s3_bucket):
    settings = {
        **s3_bucket.settings(),
        "IMAGES_MIRROR_URI": s3_bucket.uri("blog-images"),
        "IMAGES_MIRROR_BASE_URL": "https://img.example.com/",
    }
    replay.set_reply(
        "/img/hotlink.jpg", Reply(body=fixture_bytes("hotlink.jpg"), content_type="image/jpeg")
    )
    first = crawler.crawl("qutoutiao", "cid=40", **settings)
    assert first.returncode == 0, first.stderr
    keys = {name: "blog-images/" + stored_path(image_url(replay, name), name) for name in GOOD}
    assert s3_bucket.object_keys("blog-images/") == sorted(keys.values())
    for name, key in keys.items():
        head = s3_bucket.head(key)
        assert s3_bucket.body(key) == fixture_bytes(name)
        assert head["ContentType"] == GOOD[name].content_type
        assert head["CacheControl"] == "public, max-age=31536000, immutable"
        assert head["Metadata"]["source-url"] == image_url(replay, name)

    (manifest,) = s3_bucket.manifests().values()
    entries = {line["article_key"]: line for line in manifest}
    in_document_order = ["photo.jpg", "chart.png", "pic.webp", "anim.gif", "pic.avif"]
    in_document_order += ["poster.jpg", "hotlink.jpg"]
    assert entries["qutoutiao-4001"]["images"] == [keys[name] for name in in_document_order]
    assert entries["qutoutiao-4002"]["images"] == [keys["photo.jpg"]]
    assert entries["qutoutiao-4003"]["images"] == [keys["cover.png"]]
    post = s3_bucket.body("blog/qutoutiao/qutoutiao-4002.md").decode("utf-8")
    assert "https://img.example.com/" + keys["photo.jpg"].removeprefix("blog-images/") in post

    # a fresh state: every article is new, every image is found in the bucket
    replay.reset()
    again = crawler.crawl("qutoutiao", "cid=40", STATE_DIR=str(crawler.workdir / "s2"), **settings)
    assert again.returncode == 0, again.stderr
    assert again.stat("images/already_stored") == len(GOOD)
    assert sum(replay.hits(f"/img/{name}") for name in GOOD) == 0


def test_s3_image_store_writes_conditionally_and_finds_what_is_stored(s3_bucket, tmp_path):
    from s3fixtures import CREDENTIALS

    from aggregator.images.stores import S3ImageStore
    from aggregator.storage.s3.config import S3Config

    store = S3ImageStore(
        S3Config.for_uri(
            s3_bucket.uri("imgs"),
            access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_REGION_NAME"],
            endpoint_url=s3_bucket.endpoint_url,
        )
    )
    store.connect()
    url, data = "http://x.cn/a.gif", fixture_bytes("anim.gif")
    path = image_path(url, data, GIF)
    assert store.lookup(stem(url)) == {}
    assert store.put(path, data, "image/gif", url) is True
    etag = s3_bucket.head(f"imgs/{path}")["ETag"]
    assert store.put(path, data, "image/gif", url) is False  # 412: stored already
    assert s3_bucket.head(f"imgs/{path}")["ETag"] == etag
    found = store.lookup(stem(url))
    assert found["path"] == path and found["last_modified"] > 0
    assert json.loads(json.dumps(found))  # plain values


def test_an_unreachable_image_bucket_stops_the_crawl_before_it_starts(crawler, replay, s3_bucket):
    settings = {
        **s3_bucket.settings(),
        "IMAGES_MIRROR_URI": "s3://no-such-bucket-here/images",
        "IMAGES_MIRROR_BASE_URL": "/images/",
    }
    result = crawler.crawl("qutoutiao", "cid=40", **settings)
    assert result.returncode == 1
    assert "Cannot mirror images: IMAGES_MIRROR_URI s3://no-such-bucket-here/images" in (
        result.stderr
    )
    assert result.stats["finish_reason"] == "images_unavailable"


@pytest.mark.parametrize(
    ("expires", "age_days", "fresh"),
    [("0", 3650, True), ("7", 6, True), ("7", 8, False), ("0.5", 1, False), ("7", 7.00004, False)],
)
def test_a_stored_image_is_used_until_it_expires(tmp_path, expires, age_days, fresh):
    settings = {"IMAGES_MIRROR_URI": str(tmp_path), "IMAGES_MIRROR_BASE_URL": "/i/"}
    crawler = get_crawler(settings_dict={**settings, "IMAGES_MIRROR_EXPIRES": expires})
    pipeline = ImageMirrorPipeline.from_crawler(crawler)
    assert pipeline.is_fresh({"last_modified": time.time() - age_days * 86400}) is fresh


# --- the pipeline in-process: the hooks FilesPipeline calls, with the project's settings ------
class Downloader:
    """Stands in for the crawler's downloader (`crawler.engine.download_async`): serves the
    fixture images by file name and answers the names in `answers` with a status or an
    exception, recording every request it is given."""

    def __init__(self, answers: dict[str, Any] | None = None):
        self.answers = answers or {}
        self.requests: list[Request] = []

    async def download_async(self, request: Request) -> Response:
        self.requests.append(request)
        name = request.url.rsplit("/", 1)[1]
        answer = self.answers.get(name)
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, bytes):
            return Response(request.url, body=answer, request=request)
        if isinstance(answer, int):
            return Response(request.url, status=answer, body=b"gone", request=request)
        return Response(request.url, body=fixture_bytes(name), request=request)


class InlineDirectoryStore(DirectoryImageStore):
    """The directory store, its lookups and writes done inline: the real store hands them to
    the reactor's thread pool, which only runs under a reactor. It keeps the metadata each
    write was given, which the S3 store stores with the object."""

    def __init__(self, uri: str, *, fsync: bool = True):
        super().__init__(uri, fsync=fsync)
        self.given: dict[str, tuple[Any, Any]] = {}  # path -> (meta, headers)

    def stat_file(self, path: str, info: Any) -> Any:
        return defer.maybeDeferred(self.lookup, path)

    def persist_file(self, path: str, buf: Any, info: Any, meta=None, headers=None) -> Any:
        self.given[path] = (meta, headers)
        return defer.maybeDeferred(self.write, path, buf.getvalue())


ORIGIN = "http://img.example.cn/img/"
ARTICLE_URL = "http://news.example.cn/a/1.html"


def pipeline_crawler(tmp_path, downloader: Downloader, **values: Any):
    settings = {name: getattr(settings_module, name) for name in dir(settings_module)}
    settings = {name: value for name, value in settings.items() if name.isupper()}
    settings.update(
        STATE_DIR=str(tmp_path / "state"),
        IMAGES_MIRROR_URI=str(tmp_path / "mirror"),
        IMAGES_MIRROR_BASE_URL=BASE_URL,
        IMAGES_MIRROR_MAXSIZE=20_000,
    )
    settings.update(values)
    crawler = get_crawler(Spider, settings)
    crawler.spider = Spider("test")
    crawler.engine = downloader
    return crawler


async def opened_pipeline(crawler) -> ImageMirrorPipeline:
    pipeline = ImageMirrorPipeline.from_crawler(crawler)
    pipeline.store = InlineDirectoryStore(str(pipeline.store.directory), fsync=False)
    await pipeline.open_spider()
    return pipeline


def mirrored_item(names: list[str], *, head: str = "photo.jpg", extra: str = "") -> dict:
    """An article as the normaliser leaves it: proxied image addresses in the body and the
    cover, each recorded with its original."""
    sources = {ORIGIN + name: PX + ORIGIN + name for name in [*names, head]}
    body = "".join(f'<p><img src="{PX}{ORIGIN}{name}"></p>' for name in names) + extra
    return {
        "key": "feed-1",
        "url": ARTICLE_URL,
        "body": body,
        "headimg": PX + ORIGIN + head,
        "images": [PX + ORIGIN + head, PX + ORIGIN + names[-1]],
        "image_sources": sources,
    }


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


FAILING = {
    "missing.jpg": 404,
    "huge.jpg": b"\xff\xd8\xff" + b"\0" * 20_000,
    "empty.jpg": b"",
    "slow.jpg": twisted_errors.TimeoutError(),
    "cut.jpg": defer.CancelledError(
        "Cancelling download of x: expected response size (90000) larger than download max "
        "size (20000)."
    ),
    "filtered.jpg": IgnoreRequest("offsite"),
    "stopped.jpg": defer.CancelledError("the download was stopped"),
    "refused.jpg": ConnectionRefusedError("Connection was refused by other side"),
}
FAILED = {  # name -> (reason, detail)
    "missing.jpg": ("http_404", "HTTP 404"),
    "huge.jpg": ("too_big", "20003 bytes > IMAGES_MIRROR_MAXSIZE"),
    "empty.jpg": ("empty", "empty body"),
    "page.jpg": ("html", "an HTML page, not an image"),
    "logo.svg": ("svg", "an SVG image (it can carry script)"),
    "slow.jpg": ("timeout", f"TimeoutError: {twisted_errors.TimeoutError()}"),
    "cut.jpg": (
        "too_big",
        "Cancelling download of x: expected response size (90000) larger than download max "
        "size (20000).",
    ),
    "filtered.jpg": ("filtered", "IgnoreRequest: offsite"),
    "stopped.jpg": ("download_error", "CancelledError: the download was stopped"),
    "refused.jpg": (
        "download_error",
        "ConnectionRefusedError: Connection was refused by other side",
    ),
}


def test_the_pipeline_mirrors_each_image_once_and_rewrites_only_the_mirrored(tmp_path, caplog):
    downloader = Downloader(FAILING)
    crawler = pipeline_crawler(
        tmp_path, downloader, IMAGES_MIRROR_REFERER='{"noref.example.cn": "none"}'
    )
    good = ["photo.jpg", "chart.png"]
    names = [*good, "photo.jpg", *FAILED]
    other = "http://noref.example.cn/img/anim.gif"
    # an address with no original to mirror (data:) before one with
    extra = f'<p><img src="data:image/gif;base64,R0lGOD"><img src="{PX}{other}"></p>'
    item = mirrored_item(names, extra=extra)
    item["image_sources"].update(
        {
            other: PX + other,
            "data:image/gif;base64,R0lGOD": "data:image/gif;base64,R0lGOD",
            ORIGIN + "unused.jpg": PX + ORIGIN + "unused.jpg",
            "http://[::1/bad.jpg": PX + "http://[::1/bad.jpg",
        }
    )
    item["body"] = f'<img src="{PX}http://[::1/bad.jpg">' + item["body"]
    before = dict(item)

    async def scenario():
        pipeline = await opened_pipeline(crawler)
        assert await pipeline.process_item(item) is item
        pipeline.close_spider()
        return pipeline.store.given

    with caplog.at_level(logging.INFO):
        given = asyncio.run(scenario())
    assert f"Mirroring images to {tmp_path / 'mirror'}, served at {BASE_URL}" in caplog.messages

    # each original once, in document order (the cover is the body's first image), none twice
    requested = [r.url for r in downloader.requests]
    assert requested == [ORIGIN + n for n in [*good, *FAILED]] + [other]
    for request in downloader.requests:
        referer = request.headers.get("Referer")
        assert (referer.decode() if referer else None) == (
            None if request.url == other else ARTICLE_URL
        )
        assert request.meta["download_maxsize"] == 20_000
        assert request.meta["article_key"] == "feed-1"
        # redirects are followed: 3xx go to the redirect middleware, the rest come back here
        assert 302 not in request.meta["handle_httpstatus_list"]
        assert 404 in request.meta["handle_httpstatus_list"]

    paths = {name: stored_path(ORIGIN + name, name) for name in good}
    paths["anim.gif"] = stored_path(other, "anim.gif")
    for name, path in paths.items():
        assert (tmp_path / "mirror" / path).read_bytes() == fixture_bytes(name)
    # what the S3 store keeps with each object
    assert given == {
        path: (
            {"source-url": other if name == "anim.gif" else ORIGIN + name},
            {"Content-Type": GOOD[name].content_type},
        )
        for name, path in paths.items()
    }
    new = {PX + ORIGIN + n: BASE_URL + p for n, p in paths.items() if n != "anim.gif"}
    new[PX + other] = BASE_URL + paths["anim.gif"]
    expected_body = before["body"]
    for address, mirrored in new.items():
        expected_body = expected_body.replace(f'"{address}"', f'"{mirrored}"')
    assert item["body"] == expected_body
    assert item["headimg"] == new[PX + ORIGIN + "photo.jpg"]
    assert item["images"] == [new[PX + ORIGIN + "photo.jpg"], PX + ORIGIN + "refused.jpg"]
    assert item["mirrored_images"] == [paths["photo.jpg"], paths["chart.png"], paths["anim.gif"]]

    stats = crawler.stats.get_stats()
    assert stats[STAT_MIRRORED] == 3
    assert stats["file_status_count/downloaded"] == 3
    assert stats[STAT_BYTES] == sum(len(fixture_bytes(n)) for n in ["anim.gif", *good])
    reasons = Counter(reason for reason, _ in FAILED.values())
    reasons["bad_url"] = 1
    assert {k: v for k, v in stats.items() if "/images/failed/" in k} == {
        failed_stat(reason): count for reason, count in reasons.items()
    }
    lines = warnings_of(caplog)
    assert "Image http://[::1/bad.jpg of feed-1: bad URL (Invalid IPv6 URL)" in lines
    for name, (_, detail) in FAILED.items():
        assert (
            f"Image {ORIGIN}{name} of feed-1 <{ARTICLE_URL}> not mirrored: {detail}; "
            "it keeps its proxied address"
        ) in lines, name

    # the next run finds what is stored without downloading it, and writes the same post
    again_downloader = Downloader(FAILING)
    again = pipeline_crawler(
        tmp_path, again_downloader, IMAGES_MIRROR_REFERER='{"noref.example.cn": "none"}'
    )
    second = {**before, "image_sources": dict(item["image_sources"])}
    asyncio.run(_process(again, second))
    assert [r.url for r in again_downloader.requests] == [ORIGIN + n for n in FAILED]
    assert (second["body"], second["headimg"], second["images"]) == (
        item["body"],
        item["headimg"],
        item["images"],
    )
    assert second["mirrored_images"] == item["mirrored_images"]
    stats = again.stats.get_stats()
    assert stats[STAT_ALREADY_STORED] == 3
    assert stats["file_status_count/uptodate"] == 3
    assert STAT_MIRRORED not in stats


async def _process(crawler, item: dict) -> None:
    pipeline = await opened_pipeline(crawler)
    assert await pipeline.process_item(item) is item
    pipeline.close_spider()


def test_an_article_without_images_to_mirror_passes_untouched(tmp_path):
    downloader = Downloader()
    crawler = pipeline_crawler(tmp_path, downloader)
    item = {"key": "feed-1", "url": ARTICLE_URL, "body": "<p>文字</p>", "headimg": None}
    asyncio.run(_process(crawler, item))
    assert item == {"key": "feed-1", "url": ARTICLE_URL, "body": "<p>文字</p>", "headimg": None}
    assert downloader.requests == []


def test_required_images_fail_the_article_with_what_was_not_mirrored(tmp_path):
    downloader = Downloader({"missing.jpg": 404})
    crawler = pipeline_crawler(tmp_path, downloader, IMAGES_MIRROR_REQUIRED=True)
    item = mirrored_item(["photo.jpg", "missing.jpg", "logo.svg"])
    before = dict(item)
    with pytest.raises(ImagesNotMirrored) as failed:
        asyncio.run(_process(crawler, item))
    assert isinstance(failed.value, ArticleFailed)  # the pending recorder keeps it
    assert (failed.value.key, failed.value.url) == ("feed-1", ARTICLE_URL)
    assert failed.value.failures == [
        (ORIGIN + "missing.jpg", "http_404", "HTTP 404"),
        (ORIGIN + "logo.svg", "svg", "an SVG image (it can carry script)"),
    ]
    assert str(failed.value) == (
        f"2 image(s) not mirrored: {ORIGIN}missing.jpg (http_404), {ORIGIN}logo.svg (svg)"
    )
    assert item == before  # nothing rewritten


def test_a_broken_store_is_logged_and_the_image_keeps_its_address(tmp_path, caplog):
    """The mirror directory went away (a file in its place): looking up fails (logged, the
    image is downloaded all the same) and storing fails (counted as store_error)."""
    downloader = Downloader()
    crawler = pipeline_crawler(tmp_path, downloader)
    item = mirrored_item(["photo.jpg"])
    before = dict(item)

    async def scenario():
        pipeline = await opened_pipeline(crawler)
        shutil.rmtree(tmp_path / "mirror")
        (tmp_path / "mirror").write_text("")
        assert await pipeline.process_item(item) is item

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert item["body"] == before["body"] and item["mirrored_images"] == []
    assert crawler.stats.get_value(failed_stat("store_error")) == 1
    url = ORIGIN + "photo.jpg"
    lines = warnings_of(caplog)
    assert any(
        line.startswith(f"Could not look up {url} in the image store: [Errno 20] Not a directory")
        for line in lines
    ), lines
    path = stored_path(url, "photo.jpg")
    prefix = f"Image {url} of feed-1 <{ARTICLE_URL}> not mirrored: {tmp_path / 'mirror' / path}: "
    assert any(line.startswith(prefix) for line in lines), lines


def test_an_unusable_mirror_directory_stops_the_crawl(tmp_path, caplog):
    (tmp_path / "a-file").write_text("")
    crawler = pipeline_crawler(
        tmp_path, Downloader(), IMAGES_MIRROR_URI=str(tmp_path / "a-file" / "img")
    )
    pipeline = ImageMirrorPipeline.from_crawler(crawler)
    with caplog.at_level(logging.ERROR), pytest.raises(CloseSpider) as stopped:
        asyncio.run(pipeline.open_spider())
    assert stopped.value.reason == "images_unavailable"
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert line.startswith(f"Cannot mirror images: IMAGES_MIRROR_URI {tmp_path}/a-file/img: ")


def test_the_store_follows_the_uri_and_the_settings(tmp_path):
    crawler = pipeline_crawler(
        tmp_path,
        Downloader(),
        IMAGES_MIRROR_URI=f"file://{tmp_path}/m",
        IMAGES_MIRROR_EXPIRES=7,
        OUTPUT_FSYNC=False,
    )
    pipeline = ImageMirrorPipeline.from_crawler(crawler)
    assert type(pipeline.store) is DirectoryImageStore
    assert (pipeline.store.directory, pipeline.store.fsync) == (tmp_path / "m", False)
    assert pipeline.expires == 7
    s3 = pipeline_crawler(tmp_path, Downloader(), IMAGES_MIRROR_URI="s3://bucket/images")
    assert type(ImageMirrorPipeline.from_crawler(s3).store) is S3ImageStore


def test_the_cover_is_mirrored_on_its_own_and_keeps_its_address_when_it_fails(tmp_path):
    crawler = pipeline_crawler(tmp_path, Downloader({"missing.jpg": 404}))
    cover = mirrored_item(["photo.jpg"], head="cover.png")
    failed = {**mirrored_item(["photo.jpg"], head="missing.jpg"), "key": "feed-2"}
    for item in (cover, failed):
        asyncio.run(_process(crawler, item))
    assert cover["headimg"] == BASE_URL + stored_path(ORIGIN + "cover.png", "cover.png")
    assert failed["headimg"] == PX + ORIGIN + "missing.jpg"
    photo = BASE_URL + stored_path(ORIGIN + "photo.jpg", "photo.jpg")
    assert failed["images"] == [PX + ORIGIN + "missing.jpg", photo]


def test_an_image_of_exactly_maxsize_is_stored(tmp_path):
    edge = b"\xff\xd8\xff" + b"\0" * (20_000 - 3)
    crawler = pipeline_crawler(tmp_path, Downloader({"edge.jpg": edge}))
    item = mirrored_item(["edge.jpg"], head="edge.jpg")
    asyncio.run(_process(crawler, item))
    path = image_path(ORIGIN + "edge.jpg", edge, JPEG)
    assert item["mirrored_images"] == [path]
    assert (tmp_path / "mirror" / path).read_bytes() == edge


def test_an_expired_image_downloaded_again_unchanged_counts_as_already_stored(tmp_path):
    """IMAGES_MIRROR_EXPIRES: the stored copy is too old, so the image is downloaded again;
    the same bytes have the same name, which the store does not overwrite."""
    downloader = Downloader()
    crawler = pipeline_crawler(tmp_path, downloader, IMAGES_MIRROR_EXPIRES=1)
    path = stored_path(ORIGIN + "photo.jpg", "photo.jpg")
    target = tmp_path / "mirror" / path
    target.parent.mkdir(parents=True)
    target.write_bytes(fixture_bytes("photo.jpg"))
    os.utime(target, (time.time() - 2 * 86400,) * 2)
    item = mirrored_item(["photo.jpg"])
    asyncio.run(_process(crawler, item))
    assert [r.url for r in downloader.requests] == [ORIGIN + "photo.jpg"]
    assert item["headimg"] == BASE_URL + path
    assert crawler.stats.get_value(STAT_ALREADY_STORED) == 1
    assert crawler.stats.get_value(STAT_MIRRORED) is None
