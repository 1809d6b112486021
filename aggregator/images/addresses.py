"""Image addresses in a normalised body: which there are, where each came from, and rewriting
them in place.

The normaliser (aggregator.render.html) turns every http(s) image URL into its final address
with `ImageProxy.apply`. `SourceRecorder` stands in for the proxy and remembers each original
URL with the address it became, so the mirror knows what to download for every address it finds
in the body.

Reading and rewriting work on the sanitiser's output, which is serialised canonically: comments
are gone, every `<` outside a tag is escaped (so `<img` only starts a real tag) and every
attribute is `name="value"` with `&`, `<`, `>` and `"` escaped. Only the `src`/`srcset` of
`<img>`, the `srcset` of `<source>` and the `poster` of `<video>` are touched; text, links and
every other byte stay as they are.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Iterator

from aggregator.render.html import ImageProxy, split_srcset

__all__ = ["SourceRecorder", "image_addresses", "rewrite_image_addresses"]

_HTTP = ("http://", "https://")
_IMAGE_ATTRIBUTES = {"img": ("src", "srcset"), "source": ("srcset",), "video": ("poster",)}
_MEDIA_TAG_RE = re.compile(r'<(img|source|video)((?:\s[^\s="/>]+="[^"]*")*)')
_ATTRIBUTE_RE = re.compile(r'(\s)([^\s="/>]+)="([^"]*)"')


class SourceRecorder:
    """An ImageProxy that also records `sources`: original URL -> the address it became (the
    proxied URL, or the URL itself when it is not proxied). An image already written as a
    proxied address (prefix proxies only) is recorded under the URL inside it."""

    def __init__(self, proxy: ImageProxy):
        self.proxy = proxy
        self.sources: dict[str, str] = {}
        template = proxy.template
        self._prefix = template if template and "{" not in template else ""

    def apply(self, url: str) -> str:
        address = self.proxy.apply(url)
        original = url
        if address == url and self._prefix and url.startswith(self._prefix):
            inner = url[len(self._prefix) :]
            if inner.startswith(_HTTP):
                original = inner
        self.sources.setdefault(original, address)
        return address


def _escape(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


def _image_attributes(body: str) -> Iterator[tuple[str, str, str]]:
    for tag in _MEDIA_TAG_RE.finditer(body):
        wanted = _IMAGE_ATTRIBUTES[tag.group(1)]
        for attribute in _ATTRIBUTE_RE.finditer(tag.group(2)):
            if attribute.group(2) in wanted:
                yield tag.group(1), attribute.group(2), html_lib.unescape(attribute.group(3))


def image_addresses(body: str) -> list[str]:
    """Every image address in `body` (img src and srcset, source srcset, video poster), in
    document order, each once."""
    found: dict[str, None] = {}
    for _, name, value in _image_attributes(body):
        if name == "srcset":
            for url, _descriptors in split_srcset(value):
                found.setdefault(url, None)
        else:
            found.setdefault(value, None)
    return list(found)


def _rewrite_srcset(value: str, replace: Callable[[str], str]) -> str:
    return ", ".join(
        f"{replace(url)} {descriptors}" if descriptors else replace(url)
        for url, descriptors in split_srcset(value)
    )


def rewrite_image_addresses(body: str, replace: Callable[[str], str]) -> str:
    """`body` with each image address `a` replaced by `replace(a)` (which returns `a` to keep
    it). Attributes whose addresses all stay are left byte for byte."""

    def attribute(match: re.Match[str], tag: str) -> str:
        space, name, raw = match.groups()
        if name not in _IMAGE_ATTRIBUTES[tag]:
            return match.group(0)
        value = html_lib.unescape(raw)
        if name == "srcset":
            rewritten = _rewrite_srcset(value, replace)
            if all(replace(url) == url for url, _ in split_srcset(value)):
                return match.group(0)
        else:
            rewritten = replace(value)
            if rewritten == value:
                return match.group(0)
        return f'{space}{name}="{_escape(rewritten)}"'

    def media_tag(match: re.Match[str]) -> str:
        tag = match.group(1)
        attributes = _ATTRIBUTE_RE.sub(lambda m: attribute(m, tag), match.group(2))
        return f"<{tag}{attributes}"

    return _MEDIA_TAG_RE.sub(media_tag, body)
