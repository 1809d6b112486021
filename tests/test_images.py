"""Image mirroring (IMAGES_MIRROR_URI): the helpers on their own, then real crawls that mirror
the fixture site's images (tests/fixtures/images) into a directory and into moto's S3 server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aggregator.pipelines.normalize import NormalizeHtmlPipeline
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from aggregator.errors import ConfigError
from aggregator.images.addresses import (
    SourceRecorder,
    image_addresses,
    rewrite_image_addresses,
)
from aggregator.images.paths import image_path, mirrored_address, source_digest, stem
from aggregator.images.referer import RefererPolicy
from aggregator.images.settings import MirrorSettings
from aggregator.images.sniff import AVIF, GIF, JPEG, PNG, WEBP, Refused, sniff
from aggregator.items import Article
from aggregator.render.html import DEFAULT_IMAGE_PROXY, ImageProxy, normalise_html

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
