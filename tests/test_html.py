from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import lxml.html
import pytest
from aggregator.pipelines.normalize import NormalizeHtmlPipeline
from hypothesis import given, settings
from hypothesis import strategies as st
from scrapy.utils.test import get_crawler

from aggregator.items import Article
from aggregator.render import html as html_module
from aggregator.render.html import (
    DEFAULT_IMAGE_PROXY,
    LAZY_ATTRIBUTES,
    NH3_CLEAN_CONTENT_TAGS,
    NH3_TAGS,
    ImageProxy,
    NormalisedHtml,
    UnsafeHtml,
    inert_html,
    inner_html,
    normalise_html,
    sanitise_html,
    split_srcset,
)

FIXTURES = Path(__file__).parent / "fixtures" / "qutoutiao"
ARTICLE_ID = "58837411"
ARTICLE_URL = f"http://127.0.0.1:1/detail/{ARTICLE_ID}.html?content_id={ARTICLE_ID}"
SITE = "https://news.example.com"
BASE = f"{SITE}/a/b/1.html"
PX = DEFAULT_IMAGE_PROXY
NO_PROXY = ImageProxy(template="")
POLICY = 'referrerpolicy="no-referrer"'
BODY_HEAD = "<div>   \n"
BODY_TAIL = "  \n</div>\n            "


def norm(html: str, base: str = BASE, proxy: ImageProxy | None = None) -> NormalisedHtml:
    return normalise_html(html, base, ImageProxy() if proxy is None else proxy)


def img_attributes(html: str) -> list[dict[str, str]]:
    """Attributes of every <img> in the output, read back with a real parser."""
    root = lxml.html.fragment_fromstring(html, create_parent="div")
    return [dict(img.attrib) for img in root.iter("img")]


def img_attribute_names(html: str) -> list[list[str]]:
    root = lxml.html.fragment_fromstring(html, create_parent="div")
    return [list(img.attrib) for img in root.iter("img")]


# --- golden -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def expected_body() -> str:
    post = (FIXTURES / "expected" / f"{ARTICLE_ID}.md").read_text(encoding="utf-8")
    start = post.index(BODY_HEAD) + len(BODY_HEAD)
    assert post.endswith(BODY_TAIL)
    return post[start : -len(BODY_TAIL)]


def _detail_from_json() -> str:
    data = json.loads((FIXTURES / "detail_json" / f"{ARTICLE_ID}.json").read_text("utf-8"))
    return data["detail"]


def _detail_from_html() -> str:
    page = (FIXTURES / "detail" / f"{ARTICLE_ID}.html").read_text(encoding="utf-8")
    document = lxml.html.document_fromstring(page)
    (content,) = document.xpath(
        "//div[contains(concat(' ', normalize-space(@class), ' '), ' content ')]"
    )
    return (content.text or "") + "".join(
        lxml.html.tostring(child, encoding="unicode") for child in content
    )


@pytest.mark.parametrize("load", [_detail_from_json, _detail_from_html], ids=["json", "html"])
def test_golden_body_is_byte_for_byte(load, expected_body: str) -> None:
    result = normalise_html(load(), ARTICLE_URL, ImageProxy())
    assert result.html == expected_body
    assert result.images == [
        PX + "http://static.1sapp.com/qupost/img/2022/02/02/ce972ef3c4dcf839837636d30fbc5b5c.png"
    ]


def test_golden_image_keeps_attribute_order(expected_body: str) -> None:
    assert img_attribute_names(expected_body) == [["src", "data-size", "referrerpolicy"]]


# --- lazy images ----------------------------------------------------------------------------


@pytest.mark.parametrize("lazy", LAZY_ATTRIBUTES)
def test_lazy_attribute_becomes_src_in_its_place(lazy: str) -> None:
    html = f'<p><img alt="a" {lazy}="http://img.example.cn/x.png" width="10"></p>'
    assert norm(html).html == (
        f'<p><img alt="a" src="{PX}http://img.example.cn/x.png" width="10" {POLICY}></p>'
    )


@pytest.mark.parametrize("lazy", LAZY_ATTRIBUTES)
def test_lazy_attribute_overwrites_existing_src_in_src_place(lazy: str) -> None:
    html = f'<img src="/placeholder.gif" alt="a" {lazy}="http://img.example.cn/x.png">'
    result = norm(html)
    assert result.html == f'<img src="{PX}http://img.example.cn/x.png" alt="a" {POLICY}>'
    assert result.images == [f"{PX}http://img.example.cn/x.png"]


def test_first_non_empty_lazy_attribute_wins_and_all_go() -> None:
    html = (
        '<img data-lazy-src="http://h/lazy.png" data-src="  " '
        'data-original="http://h/original.png">'
    )
    result = norm(html, proxy=NO_PROXY)
    (attributes,) = img_attributes(result.html)
    assert attributes == {"src": "http://h/original.png", "referrerpolicy": "no-referrer"}
    # The winner was data-original, so src sits where data-original was... after the others
    # were removed, which makes it first.
    assert img_attribute_names(result.html) == [["src", "referrerpolicy"]]


def test_data_srcset_is_treated_like_a_lazy_srcset() -> None:
    html = '<img data-src="/a.png" data-srcset="/a.png 1x, /a@2x.png 2x">'
    (attributes,) = img_attributes(norm(html, proxy=NO_PROXY).html)
    assert attributes == {
        "src": "https://news.example.com/a.png",
        "srcset": "https://news.example.com/a.png 1x, https://news.example.com/a@2x.png 2x",
        "referrerpolicy": "no-referrer",
    }


# --- address resolution ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "src", "absolute"),
    [
        ("http://news.example.com/a/b/1.html", "x.png", "http://news.example.com/a/b/x.png"),
        ("https://news.example.com/a/b/1.html", "../x.png", "https://news.example.com/a/x.png"),
        ("https://news.example.com/a/b/1.html", "/img/x.png", "https://news.example.com/img/x.png"),
        (
            "http://news.example.com/a/b/1.html",
            "//cdn.example.net/x.png",
            "http://cdn.example.net/x.png",
        ),
        (
            "https://news.example.com/a/b/1.html",
            "//cdn.example.net/x.png",
            "https://cdn.example.net/x.png",
        ),
        ("https://news.example.com/a/", "  \n /img/x.png\t ", "https://news.example.com/img/x.png"),
    ],
)
def test_addresses_are_made_absolute_then_proxied(base: str, src: str, absolute: str) -> None:
    result = norm(f'<img src="{src}">', base=base)
    assert result.images == [PX + absolute]
    unproxied = norm(f'<img src="{src}">', base=base, proxy=NO_PROXY)
    assert unproxied.images == [absolute]


def test_uppercase_scheme_is_still_an_http_image() -> None:
    (image,) = norm('<img src="HTTP://CDN.example.net/X.png">').images
    assert image.startswith(PX)
    assert image.lower().endswith("http://cdn.example.net/x.png")


def test_space_and_non_ascii_in_src_are_percent_escaped_consistently() -> None:
    # libxml2 escapes them when serialising src; images must match what the HTML says.
    result = norm('<img src="http://h.example/图 1.png">', proxy=NO_PROXY)
    assert result.images == ["http://h.example/%E5%9B%BE%201.png"]
    assert img_attributes(result.html)[0]["src"] == result.images[0]


def test_ampersands_are_escaped_in_html_but_not_in_images() -> None:
    result = norm('<img src="http://h/a.png?x=1&amp;y=2">', proxy=NO_PROXY)
    assert result.html == f'<img src="http://h/a.png?x=1&amp;y=2" {POLICY}>'
    assert result.images == ["http://h/a.png?x=1&y=2"]


# --- proxy ----------------------------------------------------------------------------------


def test_proxy_prefix_is_applied_once() -> None:
    already = f"{PX}http://img.example.cn/x.png"
    result = norm(f'<img src="{already}"><img data-src="{already}">')
    assert result.images == [already, already]
    assert ImageProxy().apply(ImageProxy().apply("http://h/x.png")) == PX + "http://h/x.png"


def test_url_template_is_filled_with_the_url_as_is() -> None:
    proxy = ImageProxy(template="https://img.proxy.example/fetch/{url}")
    result = norm('<img src="//cdn.example.net/a.png?w=1">', proxy=proxy)
    assert result.images == ["https://img.proxy.example/fetch/https://cdn.example.net/a.png?w=1"]


def test_url_quoted_template_quotes_everything() -> None:
    proxy = ImageProxy(template="https://wsrv.nl/?url={url_quoted}&w=300")
    result = norm('<img src="http://cdn.example.net/a b.png?x=1&amp;y=2">', proxy=proxy)
    assert result.images == [
        "https://wsrv.nl/?url=http%3A%2F%2Fcdn.example.net%2Fa%20b.png%3Fx%3D1%26y%3D2&w=300"
    ]
    assert result.html == (
        '<img src="https://wsrv.nl/?url=http%3A%2F%2Fcdn.example.net%2Fa%20b.png'
        f'%3Fx%3D1%26y%3D2&amp;w=300" {POLICY}>'
    )


@pytest.mark.parametrize(
    "already",
    [
        "https://wsrv.nl/?url=http%3A%2F%2Fh%2Fx.png",
        "https://wsrv.nl/?w=300&url=http%3A%2F%2Fh%2Fx.png",
        "https://WSRV.nl/?url=x",
    ],
)
def test_template_proxy_is_not_applied_to_its_own_addresses(already: str) -> None:
    proxy = ImageProxy(template="https://wsrv.nl/?url={url_quoted}")
    assert proxy.apply(already) == already


def test_path_template_is_not_applied_to_its_own_addresses() -> None:
    proxy = ImageProxy(template="https://p.example/img/{url}")
    already = "https://p.example/img/http://h/x.png"
    assert proxy.apply(already) == already
    assert proxy.apply("http://h/x.png") == already


def test_template_placeholders_in_the_url_are_not_expanded() -> None:
    proxy = ImageProxy(template="https://p.example/?a={url}&b={url_quoted}")
    url = "http://h/{url_quoted}.png"
    assert proxy.apply(url) == (
        "https://p.example/?a=http://h/{url_quoted}.png&b=http%3A%2F%2Fh%2F%7Burl_quoted%7D.png"
    )


def test_empty_template_disables_proxying() -> None:
    result = norm('<img data-src="//cdn.example.net/a.png">', proxy=NO_PROXY)
    assert result.html == f'<img src="https://cdn.example.net/a.png" {POLICY}>'
    assert NO_PROXY.apply("http://h/x.png") == "http://h/x.png"


def test_hosts_given_as_a_string_or_set_are_normalised() -> None:
    assert ImageProxy(hosts="1sapp.com") == ImageProxy(hosts=frozenset({".1SAPP.com "}))  # type: ignore[arg-type]
    assert ImageProxy(hosts={"a.cn"}).hosts == frozenset({"a.cn"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "proxied"),
    [
        ("http://1sapp.com/a.png", True),
        ("http://static.1sapp.com/a.png", True),
        ("http://STATIC.1SAPP.COM:8080/a.png", True),
        ("http://not1sapp.com/a.png", False),
        ("http://1sapp.com.evil.example/a.png", False),
        ("https://img.example.cn/a.png", False),
    ],
)
def test_hosts_limit_proxying_to_those_image_hosts(url: str, proxied: bool) -> None:
    proxy = ImageProxy(hosts=frozenset({"1SAPP.com"}))
    assert proxy.apply(url) == (PX + url if proxied else url)
    assert norm(f'<img src="{url}">', proxy=proxy).images == [proxy.apply(url)]


@pytest.mark.parametrize(
    "url", ["data:image/png;base64,iVBORw0KGgo=", "mailto:a@b.c", "ftp://h/x.png", "/rel.png"]
)
def test_apply_leaves_non_http_addresses_alone(url: str) -> None:
    assert ImageProxy().apply(url) == url


def test_data_image_is_left_alone() -> None:
    data = "data:image/gif;base64,R0lGODlhAQABAAAAACw="
    result = norm(f'<img src="{data}" alt="dot">')
    assert result.html == f'<img src="{data}" alt="dot" {POLICY}>'
    assert result.images == [data]


@pytest.mark.parametrize(
    "src",
    [
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "jav&#x61;script:alert(1)",
        "java&#9;script:alert(1)",
        "  javascript:alert(1)",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
        "",
        "   ",
    ],
)
def test_unsafe_or_empty_image_src_is_removed(src: str) -> None:
    result = norm(f'<p><img src="{src}" alt="x"></p>')
    assert result.html == f'<p><img alt="x" {POLICY}></p>'
    assert result.images == []


def test_unsafe_lazy_address_does_not_fall_back_to_anything() -> None:
    result = norm('<img src="http://h/placeholder.gif" data-src="javascript:alert(1)">')
    assert result.html == f"<img {POLICY}>"
    assert result.images == []


# --- srcset, picture, video ---------------------------------------------------------------


def test_img_srcset_is_resolved_proxied_and_javascript_dropped() -> None:
    html = '<img src="a.png" srcset="a.png 1x, javascript:alert(1) 2x,//cdn.example.net/b.png 3x">'
    (attributes,) = img_attributes(norm(html).html)
    assert attributes["srcset"] == (
        f"{PX}https://news.example.com/a/b/a.png 1x, {PX}https://cdn.example.net/b.png 3x"
    )
    assert "javascript" not in norm(html).html


def test_picture_source_srcset_is_rewritten() -> None:
    html = (
        '<picture><source srcset="/w.webp 1x, JavaScript:alert(1) 2x" type="image/webp" '
        'media="(min-width: 600px)"><img src="/f.png" alt="f"></picture>'
    )
    result = norm(html)
    assert result.html == (
        f'<picture><source srcset="{PX}https://news.example.com/w.webp 1x" type="image/webp" '
        f'media="(min-width: 600px)"><img src="{PX}https://news.example.com/f.png" alt="f" '
        f"{POLICY}></picture>"
    )
    assert result.images == [f"{PX}https://news.example.com/f.png"]


@pytest.mark.parametrize("tag", ["img", "source"])
def test_srcset_with_only_unsafe_candidates_is_dropped(tag: str) -> None:
    html = f'<picture><{tag} srcset="javascript:alert(1) 1x, vbscript:x 2x"></picture>'
    out = norm(html).html
    assert "srcset" not in out
    assert "script" not in out


@pytest.mark.parametrize(
    ("srcset", "expected"),
    [
        # Commas inside a URL do not split it; only a trailing comma ends the candidate.
        ("/a,b.png 1x,/c.png 2x", f"{SITE}/a,b.png 1x, {SITE}/c.png 2x"),
        # No space after the comma: per spec that is one URL, as browsers read it.
        ("/a.png,/b.png 2x", f"{SITE}/a.png,/b.png 2x"),
        (
            "data:image/png;base64,AA,BB 1x, /c.png 2x",
            f"data:image/png;base64,AA,BB 1x, {SITE}/c.png 2x",
        ),
        ("  ,, /a.png   100w ,\n/b.png 200w,,", f"{SITE}/a.png 100w, {SITE}/b.png 200w"),
        ("/a.png (x, y) 1x, /b.png", f"{SITE}/a.png (x, y) 1x, {SITE}/b.png"),
    ],
)
def test_srcset_parsing_follows_the_html_spec(srcset: str, expected: str) -> None:
    (attributes,) = img_attributes(norm(f'<img srcset="{srcset}">', proxy=NO_PROXY).html)
    assert attributes["srcset"] == expected


def test_proxied_srcset_keeps_candidates_apart() -> None:
    (attributes,) = img_attributes(norm('<img srcset="/a,1.png 1x, /b.png 2x">').html)
    assert attributes["srcset"] == (
        f"{PX}https://news.example.com/a,1.png 1x, {PX}https://news.example.com/b.png 2x"
    )


_srcset_paths = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.,=", min_size=1)
_srcset_candidates = st.lists(
    st.tuples(
        _srcset_paths.filter(lambda p: not p.endswith(",")),
        st.sampled_from(["", "1x", "2x", "1.5x", "320w", "640w"]),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(_srcset_candidates)
def test_srcset_round_trips_any_candidate_list(candidates: list[tuple[str, str]]) -> None:
    # A candidate without descriptor needs a comma right after its URL to end it.
    srcset = ", ".join(
        f"/i/p{path} {descriptor}" if descriptor else f"/i/p{path},"
        for path, descriptor in candidates
    )
    (attributes,) = img_attributes(norm(f'<img srcset="{srcset}">', proxy=NO_PROXY).html)
    assert attributes["srcset"] == ", ".join(
        f"https://news.example.com/i/p{path}" + (f" {descriptor}" if descriptor else "")
        for path, descriptor in candidates
    )


def test_video_poster_is_proxied_and_src_made_absolute() -> None:
    html = '<video poster="/p.jpg" src="/v.mp4" controls width="640" height="360"></video>'
    assert norm(html).html == (
        f'<video poster="{PX}https://news.example.com/p.jpg" src="https://news.example.com/v.mp4" '
        'controls="" width="640" height="360"></video>'
    )


@pytest.mark.parametrize("src", ["javascript:alert(1)", "data:video/mp4;base64,AAAA"])
def test_video_src_must_be_http(src: str) -> None:
    out = norm(f'<video src="{src}" poster="javascript:x"><source src="{src}"></video>').html
    assert out == "<video><source></video>"


# --- hostile HTML ---------------------------------------------------------------------------


HOSTILE = [
    ("<p>a</p><script>alert(1)</script><p>b</p>", "<script alert"),
    ("<style>body{display:none}</style><p>x</p>", "<style display"),
    ('<iframe src="https://evil.example/"></iframe><p>x</p>', "<iframe evil"),
    ('<object data="x.swf"><param name="m" value="x"></object>', "<object <param"),
    ('<embed src="x.swf" type="application/x-shockwave-flash">', "<embed swf"),
    (
        '<form action="https://evil.example/"><input name="q"><button>go</button></form>',
        "<form <input <button evil",
    ),
    ('<img src="/x.png" onerror="alert(1)">', "onerror alert"),
    ('<p onclick="alert(1)" onmouseover="alert(2)">x</p>', "onclick onmouseover alert"),
    # 2026 ammonia SVG/MathML advisories and classic namespace-confusion mXSS payloads.
    (
        '<svg><a><set attributeName="href" to="javascript:alert(1)"></set><text>x</text></a></svg>',
        "<svg <set javascript <a",
    ),
    (
        '<math><annotation-xml encoding="text/html"><img src=x onerror=alert(1)>'
        "</annotation-xml></math>",
        "<math annotation onerror alert <img",
    ),
    (
        "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style>"
        "</mglyph></table></mtext></math>",
        "<math <style onerror <img",
    ),
    (
        '<svg><style><img srcset="javascript:alert(1) 1x" src=x onerror=alert(1)></style></svg>',
        "<svg javascript onerror <img",
    ),
    ('<svg><![CDATA[<a href="javascript:alert(1)">x</a>]]></svg>', "<svg javascript <a"),
    ("<noscript><img src=x onerror=alert(1)></noscript>", "noscript onerror &lt;img"),
    ('<template><a href="javascript:alert(1)">x</a></template>', "template javascript"),
    ('<xmp><a href="javascript:alert(1)">x</a></xmp>', "xmp javascript"),
    ("<textarea><img src=x onerror=alert(1)></textarea>", "textarea onerror"),
    ("<select><option><img src=x onerror=alert(1)></option></select>", "select onerror"),
    (
        '<p style="background:url(javascript:alert(1))" class="x" id="y">t</p>',
        "style javascript class id=",
    ),
    ('<blockquote cite="javascript:alert(1)">q</blockquote>', "javascript"),
    (
        '<base href="https://evil.example/">'
        '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
        "<base <meta evil",
    ),
    ("<!-- <img src=x onerror=alert(1)> --><p>x</p>", "<!-- onerror"),
]


@pytest.mark.parametrize(("payload", "forbidden"), HOSTILE)
def test_hostile_markup_never_survives(payload: str, forbidden: str) -> None:
    out = norm(payload).html
    for needle in forbidden.split():
        assert needle not in out.lower(), (needle, out)


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "jav&#x61;script:alert(1)",
        "&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;:alert(1)",
        "java&#x09;script:alert(1)",
        " \n javascript:alert(1)",
        "vbscript:msgbox(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "tel:+861234",
    ],
)
def test_unsafe_link_loses_its_href(href: str) -> None:
    assert norm(f'<a href="{href}" title="t">x</a>').html == (
        '<a title="t" rel="noopener noreferrer">x</a>'
    )


@pytest.mark.parametrize(
    "href", ["mailto:editor@example.com", "https://example.com/a?b=1", "http://x.cn/"]
)
def test_safe_link_is_kept_with_rel(href: str) -> None:
    assert norm(f'<a href="{href}">x</a>').html == (
        f'<a href="{href}" rel="noopener noreferrer">x</a>'
    )


@pytest.mark.parametrize(
    ("href", "absolute"),
    [
        ("/rel", f"{SITE}/rel"),
        ("../c.html", f"{SITE}/a/c.html"),
        ("//cdn.example.org/x", "https://cdn.example.org/x"),
        ("#note", f"{BASE}#note"),
    ],
)
def test_relative_links_are_resolved_against_the_article(href: str, absolute: str) -> None:
    assert norm(f'<a href="{href}">x</a>').html == (
        f'<a href="{absolute}" rel="noopener noreferrer">x</a>'
    )


def test_escaped_markup_in_leading_text_stays_text() -> None:
    out = norm("&lt;script&gt;alert(1)&lt;/script&gt; <b>x</b>").html
    assert out == "&lt;script&gt;alert(1)&lt;/script&gt; <b>x</b>"


def test_odd_data_attribute_names_are_dropped() -> None:
    out = norm('<p data-a"b="1" data-<img="2" data-size="561,352" data-x_y.z="3">t</p>').html
    assert out == '<p data-size="561,352" data-x_y.z="3">t</p>'


# --- structure and referrer policy -------------------------------------------------------


def test_every_img_gets_no_referrer_policy() -> None:
    html = (
        '<img src="/a.png"><img data-src="/b.png" referrerpolicy="origin" alt="b">'
        '<img alt="no src"><img src="javascript:x">'
    )
    out = norm(html).html
    assert out.count("<img") == 4
    assert [a.get("referrerpolicy") for a in img_attributes(out)] == ["no-referrer"] * 4
    # An existing policy is overwritten where it was, not moved to the end.
    assert img_attribute_names(out)[1] == ["src", "referrerpolicy", "alt"]


def test_article_structure_is_kept() -> None:
    html = (
        '<h1>T</h1><h2>S</h2><ul><li>a</li></ul><ol start="2"><li>b</li></ol>'
        '<figure><img src="/f.png" alt="f" width="10" height="20" title="t">'
        "<figcaption>cap</figcaption></figure>"
        '<table><thead><tr><th>h</th></tr></thead><tbody><tr><td colspan="2">c</td></tr></tbody>'
        "<tfoot><tr><td>f</td></tr></tfoot></table>"
        "<blockquote>q</blockquote><pre><code>x &lt; y</code></pre><p>a<br>b</p><hr>"
        "<section><div><span>s</span></div></section>"
    )
    expected = html.replace(
        '<img src="/f.png" alt="f" width="10" height="20" title="t">',
        '<img src="https://news.example.com/f.png" alt="f" width="10" height="20" title="t" '
        f"{POLICY}>",
    )
    assert norm(html, proxy=NO_PROXY).html == expected


def test_images_are_listed_in_document_order() -> None:
    html = (
        '<p>lead <img data-src="/1.png"></p>'
        '<img srcset="/srcset-only.png 2x">'
        '<table><tr><td><img src="//cdn.example.net/2.png"></td></tr></table>'
        '<img src="javascript:alert(1)">'
        '<a href="/x"><img data-original="data:image/gif;base64,R0lGOD=="></a>'
        '<figure><img src="https://h.example/4.png"></figure>'
    )
    assert norm(html).images == [
        f"{PX}https://news.example.com/1.png",
        f"{PX}https://cdn.example.net/2.png",
        "data:image/gif;base64,R0lGOD==",
        f"{PX}https://h.example/4.png",
    ]


def test_images_come_from_the_sanitised_output() -> None:
    # html5ever drops <img> inside <select> and ammonia drops a src it cannot parse as a URL;
    # in both cases the image must not be listed.
    result = norm('<img src="http://exa mple.com/x.png"><p>x</p>', proxy=NO_PROXY)
    assert "src=" not in result.html
    assert result.images == []


def test_src_attribute_text_in_other_attributes_is_not_an_image() -> None:
    result = norm('<img alt="x src=" title=" src=&quot;http://fake/&quot;" src="/real.png">')
    assert result.images == [f"{PX}https://news.example.com/real.png"]


# --- odd inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("html", ["", " ", "\n\t  \r\n", "<script>alert(1)</script>", "<!-- c -->"])
def test_empty_results(html: str) -> None:
    assert norm(html) == NormalisedHtml(html="", images=[])


def test_leading_text_is_kept() -> None:
    assert norm('前言 <img src="/a.png"> 后记', proxy=NO_PROXY).html == (
        f'前言 <img src="https://news.example.com/a.png" {POLICY}> 后记'
    )


def test_lone_surrogate_does_not_truncate_the_article() -> None:
    assert norm("<p>a\ud83db</p><p>c</p>").html == "<p>a\ufffdb</p><p>c</p>"


@pytest.mark.parametrize("end_tag", ["</html>", "</body>", "</BODY >", "</body></html>"])
def test_stray_document_end_tags_do_not_lose_content(end_tag: str) -> None:
    assert norm(f"<p>a</p>{end_tag}<p>b</p>").html == "<p>a</p><p>b</p>"


def test_full_document_input_keeps_only_body_content() -> None:
    html = "<!DOCTYPE html><html><head><title>t</title></head><body><p>x</p></body></html>"
    assert norm(html).html == "<p>x</p>"


def test_output_never_contains_raw_tag_in_attribute_values() -> None:
    out = norm('<img alt="<b>bold</b>" src="/a.png">').html
    assert re.findall(r"<[a-z]+", out) == ["<img"]


# --- everything a parser makes an image -----------------------------------------------------


def _unproxied_image_addresses(html: str) -> list[str]:
    """Image addresses in the output that neither go through the proxy nor are data: URLs."""
    root = lxml.html.fragment_fromstring(html, create_parent="div")
    found = []
    for element in root.iter("img", "source", "video"):
        addresses = [element.get("poster" if element.tag == "video" else "src")]
        if element.tag == "source":
            addresses = []
        addresses += [c.split()[0] for c in (element.get("srcset") or "").split(", ") if c]
        found += [a for a in addresses if a and not a.startswith((PX, "data:"))]
    return found


IMAGE_MAKERS = [
    '<image src="http://img.example.cn/a.png">',
    '<IMAGE SRC="//img.example.cn/a.png" alt="a">',
    '<image data-src="/a.png" srcset="/a.png 1x, /b.png 2x">',
    '<p><image src="/a.png">after</image> tail</p>',
    '<input type="image" src="http://img.example.cn/a.png">',
    '<picture><source srcset="http://img.example.cn/a.webp"><img src="/a.png"></picture>',
    '<svg><image href="http://img.example.cn/a.png"/><image xlink:href="/b.png"/></svg>',
    '<video poster="http://img.example.cn/p.jpg" src="/v.mp4"></video>',
    '<math><mtext><img src="http://img.example.cn/a.png"></mtext></math>',
    '<table background="http://img.example.cn/a.png"><tr><td>x</td></tr></table>',
    '<object data="http://img.example.cn/a.png" type="image/png"></object>',
]


@pytest.mark.parametrize("html", IMAGE_MAKERS)
def test_every_image_an_html_parser_makes_is_proxied_or_dropped(html: str) -> None:
    result = norm(html)
    assert _unproxied_image_addresses(result.html) == []
    assert all(a.get("referrerpolicy") == "no-referrer" for a in img_attributes(result.html))
    assert all(image.startswith(PX) for image in result.images)
    assert "img.example.cn" not in re.sub(
        re.escape(PX) + "https?://img.example.cn", "", result.html
    )


def test_image_element_is_an_img_and_what_follows_it_stays() -> None:
    result = norm('<p><image src="/a.png" alt="a">after <b>bold</b></image> tail</p>')
    assert result.html == (
        f'<p><img src="{PX}https://news.example.com/a.png" alt="a" {POLICY}>'
        "after <b>bold</b> tail</p>"
    )
    assert result.images == [f"{PX}https://news.example.com/a.png"]


def test_image_element_becomes_the_proxied_cover() -> None:
    item = Article(
        key="feed-x", site="feed", url=BASE, title="t", body='<image src="http://h.example/c.png">'
    )
    out = NormalizeHtmlPipeline(get_crawler().stats, ImageProxy()).process_item(item)
    assert out.headimg == PX + "http://h.example/c.png"


def test_an_image_the_rewrite_pass_misses_is_fixed_by_a_second_pass(monkeypatch, caplog) -> None:
    # Without the renaming, libxml2 keeps <image> while html5ever (nh3) makes it an <img>.
    monkeypatch.setattr(html_module, "_RENAMED", {})
    monkeypatch.setattr(html_module, "_KEPT_TAGS", html_module._KEPT_TAGS | {"image"})
    result = norm('<image src="http://img.example.cn/a.png">')
    assert result.html == f'<img src="{PX}http://img.example.cn/a.png" {POLICY}>'
    assert "An image escaped the rewrite pass; sanitising the article again" in caplog.messages


def test_an_image_that_stays_unproxied_fails_the_article(monkeypatch) -> None:
    rewriters = {k: v for k, v in html_module._REWRITERS.items() if k != "img"}
    monkeypatch.setattr(html_module, "_REWRITERS", rewriters)
    monkeypatch.setattr(html_module, "_REWRITTEN_TAGS", tuple(rewriters))
    with pytest.raises(UnsafeHtml, match=r"^an image is not proxied or has no referrer policy"):
        norm('<img src="http://img.example.cn/a.png">')
    with pytest.raises(UnsafeHtml):  # proxied, but without its referrer policy
        norm(f'<img src="{PX}http://img.example.cn/a.png">')


# --- unknown elements ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<root>text in root</root><p>x</p>", "text in root"),
        ("<template>from a <b>template</b></template>", "from a template"),
        ("<custom-card><h3>Title</h3>body</custom-card>", "Titlebody"),
        ("<foo:bar>namespaced</foo:bar>", "namespaced"),
        ("<p>a<mi>b</mi><text>c</text><desc>d</desc>e</p>", "abcde"),
        ("<font color=red>old</font> <blink>school</blink>", "old school"),
        ("<form><label>name</label><button>go</button></form>", "namego"),
    ],
)
def test_unknown_elements_are_unwrapped_and_keep_their_text(html: str, text: str) -> None:
    out = norm(html).html
    root = lxml.html.fragment_fromstring(out, create_parent="div")
    assert text in root.text_content()
    assert not {e.tag for e in root.iter()} - NH3_TAGS - {"div"}


def test_mathml_is_flattened_to_its_text_without_annotations() -> None:
    html = (
        "<p>so <math><semantics><mrow><mi>x</mi><mo>+</mo><mn>1</mn></mrow>"
        '<annotation encoding="application/x-tex">x+1</annotation></semantics></math> holds</p>'
    )
    assert norm(html).html == "<p>so x+1 holds</p>"


@pytest.mark.parametrize(
    "html",
    [
        "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style>",
        "<math><mi><a href='javascript:alert(1)'>x</a></mi><mtext><img src=x></mtext></math>",
    ],
)
def test_nothing_inside_math_stays_an_element(html: str) -> None:
    out = norm(html).html
    assert "<" not in out
    assert "onerror" not in out and "javascript" not in out


def test_script_and_style_content_is_still_removed() -> None:
    assert {"script", "style"} <= NH3_CLEAN_CONTENT_TAGS
    # nh3 on its own (the lxml pass removes them first), as its defaults would.
    assert html_module._CLEANER.clean("a<script>alert(1)</script><style>p{}</style>b") == "ab"
    assert norm("<root><script>alert(1)</script><style>p{}</style>kept</root>").html == "kept"


# --- control characters -------------------------------------------------------------------


@pytest.mark.parametrize(
    "html",
    [
        '<a href="\x01java\x03script:alert(1)">x</a>',
        '<a href="java&#1;script:alert(1)">x</a>',
        '<img src="\x01java\x03script:alert(1)" alt="x">',
        '<img data-src="\x00http://h/a.png">',
        '<img srcset="/a.png 2\x01x, \x02/b.png 3x">',
        '<video poster="/p\x7f.jpg" src="/v\x1f.mp4"></video>',
        '<blockquote cite="http://h/\x08q">q</blockquote>',
        '<img alt="a\x01b&#2;c\x0cd" title="\x1ft" src="/a.png">',
        "<p>a\x01b&#11;c&#x1c;d\x85e&#127;f</p>",
    ],
)
def test_control_characters_never_raise_and_never_reach_the_post(html: str) -> None:
    out = norm(html).html
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", out)
    assert "javascript" not in out


@pytest.mark.parametrize(
    "src", ["\x01java\x03script:alert(1)", "http://h/a\x01.png", "/a\x7f.png", "java&#3;script:x"]
)
def test_url_with_control_characters_is_dropped(src: str) -> None:
    result = norm(f'<img src="{src}" alt="x"><a href="{src}">l</a>')
    assert result.html == f'<img alt="x" {POLICY}><a rel="noopener noreferrer">l</a>'
    assert result.images == []


def test_leading_and_trailing_controls_and_spaces_are_stripped_like_a_browser() -> None:
    result = norm('<img src="\x01 \x1fhttp://h/a.png\t\n\x02">', proxy=NO_PROXY)
    assert result.images == ["http://h/a.png"]


# --- alt and title ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "<img src=x onerror=alert(1)>",
        "&lt;img src=x onerror=alert(1)&gt;",
        'x" onmouseover="alert(1)',
        "</span><script>alert(1)</script>",
        "a<b>c",
    ],
)
def test_alt_and_title_cannot_carry_markup(value: str) -> None:
    quoted = value.replace('"', "&quot;")
    out = norm(f'<img alt="{quoted}" title="{quoted}" src="/a.png"><a title="{quoted}">x</a>')
    root = lxml.html.fragment_fromstring(out.html, create_parent="div")
    values = [e.get(name) for e in root.iter("img", "a") for name in ("alt", "title")]
    assert len(values) == 4
    for caption in filter(None, values):
        assert not set(caption) & set('<>"')
        # What Hexo's landscape theme does with an image's alt:
        themed = f'<span class="caption">{caption}</span><a data-caption="{caption}"></a>'
        tree = lxml.html.fragment_fromstring(themed, create_parent="div")
        assert [e.tag for e in tree.iter()] == ["div", "span", "a"]
        assert list(tree.find("a").attrib) == ["data-caption"]


def test_alt_and_title_keep_their_text() -> None:
    out = norm(
        '<img alt="Fig. 1: a < b, &quot;quoted&quot; &amp; more" title="it\'s" src="/a.png">'
    )
    (attributes,) = img_attributes(out.html)
    assert attributes["alt"] == "Fig. 1: a  b, quoted & more"
    assert attributes["title"] == "it's"


def test_markup_like_text_in_other_attributes_or_text_is_untouched() -> None:
    out = norm('<p data-x="&lt;b&gt;">alt="&lt;b&gt;" title="&quot;"</p>').html
    assert out == '<p data-x="&lt;b&gt;">alt="&lt;b&gt;" title="""</p>'


@pytest.mark.parametrize(
    "html",
    ['<img alt="" src="/i/"{{.png">', '<img {x}="1" src="/a.png">', '<img src="/a.png" {="">'],
    ids=["after-src", "braces", "lone-brace"],
)
def test_odd_attribute_names_on_images_never_raise(html: str) -> None:
    result = norm(html)
    assert result.images == [f"{PX}https://news.example.com/a.png"] or result.images == [
        f"{PX}https://news.example.com/i/"
    ]
    assert "{" not in result.html


# --- what the allow-list keeps, the spiders' inner_html, the proxy's edges ------------------------
def test_the_attributes_added_to_nh3s_allow_list_are_kept() -> None:
    """Image sizing and captions, picture sources, link titles and video controls are the
    article's presentation: they survive sanitising (nh3 alone would drop them)."""
    result = norm(
        '<img src="/a.png" title="t" sizes="50vw" srcset="/a.png 1x" referrerpolicy="origin">'
        '<picture><source srcset="/b.png" type="image/png" media="(min-width: 1px)" '
        'sizes="10vw" src="/b.mp4"></picture><a href="/x" title="link">x</a>'
        '<video poster="/p.png" src="/v.mp4" controls width="2" height="3"></video>',
        proxy=NO_PROXY,
    )
    root = lxml.html.fragment_fromstring(result.html, create_parent="div")
    assert set(root.find(".//img").attrib) == {"src", "title", "sizes", "srcset", "referrerpolicy"}
    assert set(root.find(".//source").attrib) == {"srcset", "type", "media", "sizes", "src"}
    assert root.find(".//a").get("title") == "link"
    assert set(root.find(".//video").attrib) == {"poster", "src", "controls", "width", "height"}


def test_inner_html_keeps_escaped_text_and_the_children_as_html() -> None:
    element = lxml.html.fromstring('<div>&lt;b&gt; say "hi" <p class="c">y</p>tail<br></div>')
    assert inner_html(element) == '&lt;b&gt; say "hi" <p class="c">y</p>tail<br>'
    assert inner_html(lxml.html.fromstring("<div><p>x</p></div>")) == "<p>x</p>"


def test_split_srcset_is_public_for_the_image_mirror() -> None:
    assert split_srcset(" a.png 1x,b.png  2x , c.png,") == [
        ("a.png", "1x"),
        ("b.png", "2x"),
        ("c.png", ""),
    ]


def test_controls_in_attribute_values_and_breaks_in_addresses_are_removed() -> None:
    result = norm('<img src="/a.png" alt="a\x01b"><a href="/x\ty\nz">l</a>', proxy=NO_PROXY)
    assert 'alt="ab"' in result.html
    assert f'href="{SITE}/xyz"' in result.html


def test_hosts_are_trimmed_of_spaces_and_dots_and_blank_ones_ignored() -> None:
    proxy = ImageProxy(hosts=[" . ", "XN--FIQS8S.CN. ", ""])
    assert proxy.hosts == frozenset({"xn--fiqs8s.cn"})
    assert proxy.apply("http://img.xn--fiqs8s.cn/a.png") == f"{PX}http://img.xn--fiqs8s.cn/a.png"
    assert proxy.apply("http://other.cn/a.png") == "http://other.cn/a.png"


@pytest.mark.parametrize(
    ("template", "own"),
    [
        ("https://proxy.example/p?url=", "https://proxy.example/p"),
        ("https://proxy.example?url=", "https://proxy.example"),
        ("https://proxy.example?url=", "https://proxy.example/"),
    ],
    ids=["path", "no-path", "root"],
)
def test_the_proxys_own_address_is_not_proxied_whatever_its_path(template: str, own: str) -> None:
    assert ImageProxy(template=template).apply(own) == own


def test_a_template_that_is_no_valid_url_still_prefixes() -> None:
    proxy = ImageProxy(template="http://[bad/?")
    assert proxy.apply("http://h/a.png") == "http://[bad/?http://h/a.png"


# --- lazy sources next to real ones, hoisted content, what is left of nothing ------------------
def test_a_lazy_srcset_takes_the_place_of_the_real_one_and_leaves_no_trace() -> None:
    html = '<img srcset="/small.png 1x" src="/a.png" data-srcset="/big.png 2x" alt="x">'
    assert img_attribute_names(norm(html, proxy=NO_PROXY).html) == [
        ["srcset", "src", "alt", "referrerpolicy"]
    ]
    (attributes,) = img_attributes(norm(html, proxy=NO_PROXY).html)
    assert attributes["srcset"] == f"{SITE}/big.png 2x"


def test_a_picture_sources_lazy_srcset_is_used_and_an_unsafe_one_dropped() -> None:
    result = norm(
        '<picture><source data-srcset="/b.png 2x"><source data-srcset="javascript:x">'
        '<source src="/v.mp4"></picture>',
        proxy=NO_PROXY,
    )
    assert result.html == (
        f'<picture><source srcset="{SITE}/b.png 2x"><source><source src="{SITE}/v.mp4"></picture>'
    )


def test_what_an_image_element_held_follows_it_in_order() -> None:
    result = norm(
        '<p><image src="/a.png">t<b>x</b><u>y</u></image><i>after</i></p>', proxy=NO_PROXY
    )
    assert result.html == (f'<p><img src="{SITE}/a.png" {POLICY}>t<b>x</b><u>y</u><i>after</i></p>')
    bare = norm('<p><image src="/a.png"><b>x</b></image></p>', proxy=NO_PROXY)
    assert bare.html == f'<p><img src="{SITE}/a.png" {POLICY}><b>x</b></p>'


def test_text_after_a_math_annotation_is_kept() -> None:
    result = norm(
        "<p><math><semantics><mi>x</mi><annotation>TeX</annotation>+1</semantics></math></p>"
    )
    assert result.html == "<p>x+1</p>"


def test_only_whitespace_left_is_nothing_and_control_references_go() -> None:
    assert norm("<script>1</script> \n ").html == ""
    assert sanitise_html("<script>1</script> \n ", BASE, ImageProxy()) == ""
    assert norm("<p>a&#1;b</p>").html == "<p>ab</p>"


@pytest.mark.parametrize("value", ["a<b", "a>b", 'a"b'], ids=["lt", "gt", "quot"])
def test_one_markup_character_alone_is_taken_out_of_alt(value: str) -> None:
    quoted = value.replace('"', "&quot;")
    (attributes,) = img_attributes(norm(f'<img alt="{quoted}" src="/a.png">').html)
    assert attributes["alt"] == "ab"


def test_an_ordinary_article_is_sanitised_once_without_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        norm('<p>x<img src="/a.png"></p>')
    assert caplog.text == ""


def test_a_carriage_return_alone_is_a_line_break_too() -> None:
    assert inert_html("<p>a\rb</p>\r") == "<p>a b</p>"


def test_the_safety_net_checks_every_image_address(monkeypatch) -> None:
    """Should the rewrite pass ever leave an image address alone (here: it only sets the
    policy), the check after nh3 still refuses an unproxied src or srcset candidate and
    lets through what needs no proxy."""

    def policy_only(img, base_url, proxy) -> None:
        img.set("referrerpolicy", "no-referrer")

    rewriters = {**html_module._REWRITERS, "img": policy_only}
    monkeypatch.setattr(html_module, "_REWRITERS", rewriters)
    for html in [
        '<img src="http://img.example.cn/a.png">',
        f'<img src="{PX}http://a.cn/1.png" srcset="http://img.example.cn/b.png 2x">',
    ]:
        with pytest.raises(UnsafeHtml):
            norm(html)
    data = "data:image/png;base64,AAAA"
    assert norm(f'<img src="{data}">').images == [data]
    assert norm(f'<img src="{PX}http://a.cn/1.png">').images == [f"{PX}http://a.cn/1.png"]
    unproxied = "http://img.example.cn/a.png"
    assert norm(f'<img src="{unproxied}">', proxy=NO_PROXY).images == [unproxied]
