"""The body encoding (aggregator.render.html.inert_html): a post body means the same to a
browser reading it as HTML and to Hexo, which runs Nunjucks and Markdown over it first.

Markdown is checked with markdown-it-py, a port of markdown-it (hexo-renderer-markdown-it; the
CommonMark HTML-block rule it follows is marked's too): the whole post content must come out as
one HTML block, byte for byte."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import lxml.html
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lxml import etree
from markdown_it import MarkdownIt

from aggregator.render.html import ImageProxy, inert_html, normalise_html, sanitise_html
from aggregator.render.post import PostFields, render_post

BASE = "https://news.example.com/a/b/1.html"
NO_PROXY = ImageProxy(template="")
MARKDOWN = MarkdownIt("commonmark", {"html": True})
HEXO_LINE_ENDS = re.compile("[\n\r\u2028\u2029]")


def encode(html: str) -> str:
    return normalise_html(html, BASE, NO_PROXY).html


def post_content(body: str) -> str:
    """What Hexo hands its Markdown renderer: the post without its front matter."""
    post = render_post(
        PostFields(
            title="t",
            categories=("a", "b", "c"),
            author="x",
            date=datetime(2024, 1, 1, tzinfo=UTC),
            body_html=body,
        )
    ).decode("utf-8")
    return post.split("\n---\n", 2)[2]


def assert_one_html_block(body: str) -> None:
    """markdown-it reads the post content as one HTML block and passes it through as is."""
    content = post_content(body)
    tokens = MARKDOWN.parse(content)
    assert [t.type for t in tokens] == ["html_block"], tokens
    assert MARKDOWN.render(content) == "<div>   \n" + body + "  \n</div>\n"


def reading(html: str, *, serialised_dom: bool = False) -> list[tuple]:
    """What a reader gets from `html` (parsed by lxml): elements with their attributes, and
    text, whitespace runs collapsed as a browser does except inside <pre>; leading and
    trailing whitespace of the whole body left out (a browser drops it at a block's edges).

    A browser drops a line feed right after a <pre>'s start tag; libxml2 does not, so it is
    dropped here. With `serialised_dom`, `html` is read as the tree its serialiser wrote it
    from instead: nh3 (html5ever) writes a <pre> text's leading line feed bare, which a browser
    would then drop, so its output is compared with what nh3 had, not with what it shows."""
    root = etree.fromstring(f"<html><body><div>{html}</div>", etree.HTMLParser()).find("body/div")
    out: list[tuple] = []
    last_text_in_pre = False

    def text(value: str | None, pre: bool) -> None:
        nonlocal last_text_in_pre
        if value:
            out.append(("text", value if pre else re.sub(r"[ \t\n\r\f]+", " ", value)))
            last_text_in_pre = pre

    def walk(element, pre: bool) -> None:
        pre = pre or element.tag == "pre"
        out.append(("element", element.tag, sorted(element.attrib.items())))
        first = element.text
        if not serialised_dom and element.tag in ("pre", "textarea", "listing") and first:
            first = first.removeprefix("\n")
        text(first, pre)
        for child in element:
            walk(child, pre)
            text(child.tail, pre)

    walk(root, False)
    merged: list[tuple] = []
    for part in out:
        if merged and part[0] == merged[-1][0] == "text":
            merged[-1] = ("text", merged[-1][1] + part[1])
        else:
            merged.append(part)
    if len(merged) > 1 and merged[1][0] == "text":
        merged[1] = ("text", merged[1][1].lstrip(" \t\n\r\f"))
    if merged[-1][0] == "text" and not last_text_in_pre:
        # the end of the block's last line, in whichever inline element it stands
        merged[-1] = ("text", merged[-1][1].rstrip(" \t\n\r\f"))
    return [p for p in merged if p != ("text", "")]


# --- what Hexo found in real posts ------------------------------------------------------------


NUNJUCKS = [
    "{{ range.constructor(\"return process.mainModule.require('child_process')\")() }}",
    "{{ full_source }}",
    "{% iframe javascript:alert(1) %}",
    "{% link click javascript:alert(1) %}",
    "{# a comment #}",
    "image: {{ .Values.image.repository }}:{{ .Values.image.tag }}",
    "{%- raw -%}",
]


@pytest.mark.parametrize("text", NUNJUCKS)
def test_no_nunjucks_syntax_reaches_hexo(text: str) -> None:
    for html in (f"<p>{text}</p>", f'<a href="/x?q={text}" title="{text}">l</a>', text):
        body = encode(html)
        assert "{" not in body and "}" not in body
        assert reading(body) == reading(sanitise_html(html, BASE, NO_PROXY), serialised_dom=True)
    # A reader still sees the braces.
    assert lxml.html.fragment_fromstring(encode(f"<p>{text}</p>")).text_content() == text


MARKDOWN_LOOKALIKES = [
    "<p>a</p>\n\n[x](javascript:alert(1))",
    "<p>a</p>\n\n[x][1]\n\n[1]: javascript:alert(1)",
    "<p>a</p>\n\n<http://evil.example/>",
    "<p>a</p>\n\n<javascript:alert(1)>",
    "<p>run __init__.py and *x* or **y**</p>",
    "<p>a</p>\n\n    indented code\n    more",
    "<pre>line 1\n\nline 3\n\n    indented</pre>",
    "<p>a</p>\n\n# heading\n\n> quote\n\n- item\n\n1. item",
    "<p>a</p>\n\n```\nfenced\n```",
    "<p>a</p>\n\n---\n\nlayout: x",
    "  \n\n   leading blank lines\n\n<p>x</p>",
    "<p>a\r\nb\rc\u2028d\u2029e\x0cf</p>",
    "text first\n\n    then indented",
]


@pytest.mark.parametrize("html", MARKDOWN_LOOKALIKES)
def test_markdown_lookalikes_stay_literal_html(html: str) -> None:
    body = encode(html)
    assert not HEXO_LINE_ENDS.search(body)
    assert body == body.lstrip(" \t")
    assert_one_html_block(body)
    assert reading(body) == reading(sanitise_html(html, BASE, NO_PROXY), serialised_dom=True)


def test_blank_lines_in_pre_are_kept_as_character_references() -> None:
    body = encode("<pre>def f():\n\n    return {}\n</pre>")
    assert body == "<pre>def f():&#10;&#10;    return &#123;&#125;&#10;</pre>"
    (pre,) = lxml.html.fragment_fromstring(body, create_parent="div")
    assert pre.text == "def f():\n\n    return {}\n"


def test_whitespace_elsewhere_is_collapsed_as_a_browser_does() -> None:
    assert encode("<p>a\n  b</p>\n\n<p>c\t\n d</p>") == "<p>a b</p> <p>c d</p>"
    assert encode("<p>a  b\tc</p>") == "<p>a  b\tc</p>"  # no line break: left alone
    assert encode("\n\n  <p>x</p>\n") == "<p>x</p>"
    assert encode("  text") == "text"


def test_line_breaks_in_attribute_values_are_character_references() -> None:
    body = encode('<img alt="line 1\nline 2" src="/a.png"><a title="a\r\nb" href="/x">l</a>')
    assert "\n" not in body and "\r" not in body
    assert 'alt="line 1&#10;line 2"' in body
    root = lxml.html.fragment_fromstring(body, create_parent="div")
    assert root[0].get("alt") == "line 1\nline 2"


def test_a_pre_starting_with_a_blank_line_keeps_it() -> None:
    """An HTML parser drops the line feed right after `<pre>`, character reference or not;
    html5ever keeps the first blank line of `<pre>\n\ncode` as the text's leading line feed
    and serialises it bare, so the post must write two for a browser to show one."""
    assert encode("<pre>\n\ncode</pre>") == "<pre>&#10;&#10;code</pre>"
    assert encode("<pre>\ncode</pre>") == "<pre>code</pre>"  # the dropped one stays dropped
    assert encode("<pre><code>\n\ncode</code></pre>") == "<pre><code>&#10;&#10;code</code></pre>"
    twice = normalise_html(encode("<pre>\n\n\ncode</pre>"), BASE, NO_PROXY).html
    assert twice == encode("<pre>\n\n\ncode</pre>") == "<pre>&#10;&#10;&#10;code</pre>"


def test_code_outside_pre_collapses_and_inside_pre_keeps() -> None:
    body = encode("<p><code>a\n  b</code></p><pre><code>a\n  b</code></pre>")
    assert body == "<p><code>a b</code></p><pre><code>a&#10;  b</code></pre>"


def test_nested_pre_is_counted() -> None:
    body = encode("<pre>a\n<pre>b\n</pre>c\n</pre>d\ne")
    assert body == "<pre>a&#10;<pre>b&#10;</pre>c&#10;</pre>d e"


def test_inert_html_is_idempotent_and_leaves_one_line_html_alone() -> None:
    once = encode("<p>{x}\n\ny</p><pre>\n\na</pre>")
    assert inert_html(once) == once
    assert inert_html("<p>plain</p>") == "<p>plain</p>"


def test_the_reference_body_is_already_inert() -> None:
    from pathlib import Path

    post = Path(__file__).parent / "fixtures" / "qutoutiao" / "expected" / "58837411.md"
    text = post.read_text(encoding="utf-8")
    body = text[text.index("<div>   \n") + len("<div>   \n") : -len("  \n</div>\n" + " " * 12)]
    assert inert_html(body) == body
    assert_one_html_block(body)


@pytest.mark.parametrize(
    "first",
    ["plain text", "# heading", "> quote", "- item", "1. item", "```", "[x]: /y", "=====", "***"],
)
def test_a_body_starting_with_text_stays_inside_the_html_block(first: str) -> None:
    body = encode(f"{first}\n\n<p>after</p>\n\n    indented")
    assert body.startswith(first.replace(">", "&gt;")[:1])
    assert_one_html_block(body)


# --- properties -------------------------------------------------------------------------------

CHARS = st.sampled_from(
    [
        *"ab z{}<>&\"'*_[]()#!`~=-+|:;.,/\\%",
        *["\n", "\r", "\r\n", "\t", "\x0c", "\u2028", "\u2029", "\xa0", "\u3000", "中", "😀"],
        *["{{", "{%", "{#", "}}", "%}", "#}", "\n\n", "\n    ", "&#123;", "&#10;", "&lt;", "&amp;"],
    ]
)
TEXT = st.lists(CHARS, max_size=12).map("".join)
TAGS = st.sampled_from(
    ["p", "pre", "code", "b", "i", "span", "div", "li", "td", "blockquote", "h2", "root", "mi"]
)


@st.composite
def fragments(draw, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["text", "element", "img", "a"] if depth < 3 else ["text"]))
        if kind == "text":
            parts.append(draw(TEXT))
        elif kind == "img":
            parts.append(f'<img alt="{draw(TEXT)}" src="/i/{draw(TEXT)}.png">')
        elif kind == "a":
            parts.append(f'<a href="/p?q={draw(TEXT)}" title="{draw(TEXT)}">{draw(TEXT)}</a>')
        else:
            tag = draw(TAGS)
            parts.append(f"<{tag}>{draw(fragments(depth + 1))}</{tag}>")
    return "".join(parts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(TEXT, fragments()))
@example("<pre>\n\nx</pre>")  # a <pre> starting with a blank line: the browser drops one LF
def test_encoded_body_is_inert_and_reads_the_same(html: str) -> None:
    plain = sanitise_html(html, BASE, NO_PROXY)
    body = inert_html(plain)
    assert normalise_html(html, BASE, NO_PROXY).html == body
    if not plain:
        assert body == ""
        return
    # Nothing for Nunjucks, nothing that ends a line for Markdown or JavaScript.
    assert "{" not in body and "}" not in body
    assert not HEXO_LINE_ENDS.search(body)
    lines = body.splitlines()
    assert len(lines) == 1
    assert all(line.strip() for line in lines)  # no blank line
    assert all(not line[:1].isspace() or line[:1] in "\xa0\u3000" for line in lines)
    assert body[:1] not in " \t\n\r\x0c"
    # A browser (lxml here) reads the same document.
    assert reading(body) == reading(plain, serialised_dom=True)
    # markdown-it passes the whole post content through as one HTML block.
    assert_one_html_block(body)
