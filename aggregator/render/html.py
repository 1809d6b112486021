"""Article HTML normaliser: lazy images, absolute and proxied addresses, then sanitising.

The rewriting happens on an lxml tree and nh3 (ammonia) runs last, so whatever the rewrite
pass misses is still sanitised. Two things ammonia cannot do are done in the lxml pass:
``srcset`` is not parsed by ammonia, and ``data:`` has to be an allowed URL scheme for inline
images, so ``data:`` (and any other non-link scheme) is removed from links here instead.
"""

from __future__ import annotations

import copy
import html as html_lib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlsplit

import lxml.html
import nh3
from lxml import etree

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_PROXY = "https://cors.zfour.workers.dev/?"
LAZY_ATTRIBUTES = ("data-src", "data-original", "data-lazy-src")

_HTTP_SCHEMES = frozenset({"http", "https"})
# "" (a relative reference) is left only when the base URL itself is relative.
_LINK_SCHEMES = frozenset({"", "http", "https", "mailto"})
_LAZY_SET = frozenset(LAZY_ATTRIBUTES)
_LAZY_SRCSET = "data-srcset"

_PLACEHOLDER_RE = re.compile(r"(\{url\}|\{url_quoted\})")

# Elements dropped together with their content before serialising. They are either unsafe or
# parsed differently by libxml2 and html5ever (raw text, foreign content, "in select" mode);
# removing them up front means nh3 sees exactly the tree the rewrite pass checked.
_DROP_WITH_CONTENT = (
    "script",
    "style",
    "svg",
    "math",
    "noscript",
    "template",
    "iframe",
    "noembed",
    "noframes",
    "xmp",
    "plaintext",
    "textarea",
    "title",
    "select",
)

# libxml2 stops parsing at </html>, and </body> puts what follows outside the body; in a
# fragment both are noise. "</_" is not a valid end tag, so the parser reads a bogus comment,
# which nh3 strips with the other comments.
_ROOT_END_TAG_RE = re.compile(r"</(?=(?:html|body)\b)", re.IGNORECASE)

# data-* attributes are allowed generically, and both parsers accept names such as `data-a"b`
# or `data-<img`; they would survive nh3 and make the output fragile to post-process.
_ODD_DATA_ATTRIBUTES = etree.XPath(
    "descendant::*/@*[starts-with(name(), 'data-')"
    " and translate(name(), 'abcdefghijklmnopqrstuvwxyz0123456789-_.', '') != '']"
)

# HTML spec srcset parsing: candidates are separated by commas, a URL is a run of non-space
# characters (so proxied URLs and data: URLs may contain commas), and commas inside
# parentheses in descriptors do not split.
_SRCSET_SEPARATORS_RE = re.compile(r"[ \t\n\f\r,]*")
_SRCSET_URL_RE = re.compile(r"[^ \t\n\f\r]+")
_SRCSET_DESCRIPTORS_RE = re.compile(r"(?:[^,(]|\([^)]*\)?)*")

# nh3 serialises canonically (name="value", with <, >, " escaped in values, comments
# stripped), so "<img" only starts real tags and attributes can be consumed one by one.
_IMG_SRC_RE = re.compile(r'<img(?:\s(?!src=)[^\s=>]+="[^"]*")*\ssrc="([^"]*)"')


def _build_nh3_attributes() -> dict[str, set[str]]:
    attributes = copy.deepcopy(nh3.ALLOWED_ATTRIBUTES)
    extra = {
        "img": {"src", "srcset", "alt", "title", "width", "height", "referrerpolicy", "sizes"},
        "source": {"srcset", "type", "media", "sizes", "src"},
        "a": {"href", "title"},
        "video": {"poster", "src", "controls", "width", "height"},
    }
    for tag, names in extra.items():
        attributes.setdefault(tag, set()).update(names)
    return attributes


NH3_TAGS: frozenset[str] = frozenset(
    nh3.ALLOWED_TAGS
    | {"section", "figure", "figcaption", "picture", "source", "video", "tfoot", "span", "div"}
)
NH3_CLEAN_CONTENT_TAGS: frozenset[str] = frozenset(_DROP_WITH_CONTENT)
NH3_ATTRIBUTES: dict[str, set[str]] = _build_nh3_attributes()
NH3_URL_SCHEMES: frozenset[str] = frozenset({"http", "https", "mailto", "data"})
NH3_GENERIC_ATTRIBUTE_PREFIXES: frozenset[str] = frozenset({"data-"})

_FORBIDDEN_TAGS = {"svg", "math", "script", "style", "iframe", "object", "embed", "form"}
if _FORBIDDEN_TAGS & NH3_TAGS:
    raise RuntimeError(f"nh3 allow-list contains {sorted(_FORBIDDEN_TAGS & NH3_TAGS)}")

_CLEANER = nh3.Cleaner(
    tags=set(NH3_TAGS),
    clean_content_tags=set(NH3_CLEAN_CONTENT_TAGS),
    attributes=NH3_ATTRIBUTES,
    url_schemes=set(NH3_URL_SCHEMES),
    generic_attribute_prefixes=set(NH3_GENERIC_ATTRIBUTE_PREFIXES),
)


@dataclass(frozen=True)
class ImageProxy:
    """How image addresses are rewritten. template '' disables proxying.

    A template without ``{url}``/``{url_quoted}`` is a prefix the original URL is appended to,
    unchanged, because that is what the blog's existing posts (and the golden) use. ``hosts``
    exists for proxies that only serve, or are only needed for, some image hosts; a host
    matches itself and its subdomains.
    """

    template: str = DEFAULT_IMAGE_PROXY
    hosts: frozenset[str] = frozenset()
    _parts: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _prefix: str = field(init=False, repr=False, compare=False)
    _origin: tuple[str, str, str] | None = field(init=False, repr=False, compare=False)
    _host_suffixes: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A bare string would otherwise be read as a set of one-letter hosts.
        given = (self.hosts,) if isinstance(self.hosts, str) else self.hosts
        hosts = frozenset(h.strip().strip(".").lower() for h in given if h.strip(" ."))
        parts = tuple(_PLACEHOLDER_RE.split(self.template))
        # The literal text before the first placeholder (the whole template in prefix mode).
        prefix = parts[0]
        origin: tuple[str, str, str] | None = None
        if prefix:
            try:
                split = urlsplit(prefix)
            except ValueError:
                split = None
            if split is not None and split.scheme in _HTTP_SCHEMES and split.netloc:
                origin = (split.scheme, split.netloc.lower(), split.path or "/")
        object.__setattr__(self, "hosts", hosts)
        object.__setattr__(self, "_parts", parts)
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_origin", origin)
        object.__setattr__(self, "_host_suffixes", tuple("." + h for h in hosts))

    def apply(self, url: str) -> str:
        """Proxy an absolute image URL; anything that should not be proxied comes back as is."""
        if not self.template:
            return url
        try:
            split = urlsplit(url)
        except ValueError:
            return url
        if split.scheme not in _HTTP_SCHEMES:
            return url
        if self._prefix and url.startswith(self._prefix):
            return url
        if self._origin is not None and self._origin == (
            split.scheme,
            split.netloc.lower(),
            split.path or "/",
        ):
            return url
        if self.hosts:
            host = split.hostname or ""
            if host not in self.hosts and not host.endswith(self._host_suffixes):
                return url
        if len(self._parts) == 1:
            return self.template + url
        return "".join(
            url if part == "{url}" else quote(url, safe="") if part == "{url_quoted}" else part
            for part in self._parts
        )


@dataclass
class NormalisedHtml:
    """The body plus its images, so the post's cover can be the body's first image as is."""

    html: str  # sanitised body HTML
    images: list[str]  # final (proxied) address of every <img src>, in document order


def _resolve(raw: str, base_url: str) -> tuple[str, str] | None:
    raw = raw.strip()
    if not raw:
        # urljoin would turn "" into the article's own URL.
        return None
    try:
        url = urljoin(base_url, raw)
        return url, urlsplit(url).scheme
    except ValueError:
        return None


def _image_address(raw: str, base_url: str, proxy: ImageProxy) -> str | None:
    resolved = _resolve(raw, base_url)
    if resolved is None:
        return None
    url, scheme = resolved
    if scheme in _HTTP_SCHEMES:
        return proxy.apply(url)
    if scheme == "data":
        return url
    return None


def _media_address(raw: str, base_url: str) -> str | None:
    # Video streams are not images: absolute and http(s) only, never through the image proxy.
    resolved = _resolve(raw, base_url)
    if resolved is None or resolved[1] not in _HTTP_SCHEMES:
        return None
    return resolved[0]


def _split_srcset(value: str) -> list[tuple[str, str]]:
    candidates: list[tuple[str, str]] = []
    position, end = 0, len(value)
    while True:
        position = _SRCSET_SEPARATORS_RE.match(value, position).end()  # type: ignore[union-attr]
        if position >= end:
            return candidates
        url_match = _SRCSET_URL_RE.match(value, position)
        assert url_match is not None  # a non-separator character is there
        url, position = url_match.group(), url_match.end()
        if url.endswith(","):
            candidates.append((url.rstrip(","), ""))
            continue
        descriptors = _SRCSET_DESCRIPTORS_RE.match(value, position)
        assert descriptors is not None  # the pattern matches the empty string
        position = descriptors.end()
        candidates.append((url, " ".join(descriptors.group().split())))


def split_srcset(value: str) -> list[tuple[str, str]]:
    """A `srcset` as (URL, descriptors) candidates, parsed as the HTML spec does; image
    mirroring reads the normalised body's srcset values with it."""
    return _split_srcset(value)


def _rewrite_srcset(value: str, base_url: str, proxy: ImageProxy) -> str | None:
    rewritten = []
    for url, descriptors in _split_srcset(value):
        address = _image_address(url, base_url, proxy)
        if address is not None:
            rewritten.append(f"{address} {descriptors}" if descriptors else address)
    return ", ".join(rewritten) or None


def _rewrite_img(img: etree._Element, base_url: str, proxy: ImageProxy) -> None:
    attrib = img.attrib
    lazy = next((name for name in LAZY_ATTRIBUTES if attrib.get(name, "").strip()), None)
    has_src = "src" in attrib
    lazy_srcset = attrib.get(_LAZY_SRCSET, "").strip()
    has_srcset = "srcset" in attrib
    # The winning lazy attribute takes src's place only when there is no src to overwrite.
    src_slot = "src" if has_src or lazy is None else lazy
    srcset_slot = "srcset" if has_srcset or not lazy_srcset else _LAZY_SRCSET
    source = attrib[lazy] if lazy is not None else attrib.get("src")

    rebuilt: list[tuple[str, str]] = []
    has_policy = False
    for name, value in attrib.items():
        if name == src_slot:
            address = _image_address(source, base_url, proxy) if source is not None else None
            if address is not None:
                rebuilt.append(("src", address))
        elif name == srcset_slot:
            srcset = _rewrite_srcset(lazy_srcset or value, base_url, proxy)
            if srcset is not None:
                rebuilt.append(("srcset", srcset))
        elif name in _LAZY_SET or name == _LAZY_SRCSET or name in ("src", "srcset"):
            continue
        elif name == "referrerpolicy":
            rebuilt.append((name, "no-referrer"))
            has_policy = True
        else:
            rebuilt.append((name, value))
    if not has_policy:
        rebuilt.append(("referrerpolicy", "no-referrer"))
    attrib.clear()
    for name, value in rebuilt:
        attrib[name] = value


def _replace_attribute(
    attrib: etree._Attrib, name: str, rewrite: Callable[[str], str | None]
) -> None:
    """Set attribute `name` to `rewrite(value)`, or drop it when that is None (an address that
    must not reach the post)."""
    value = attrib.get(name)
    if value is None:
        return
    replacement = rewrite(value)
    if replacement is None:
        del attrib[name]
    else:
        attrib[name] = replacement


def _rewrite_source(source: etree._Element, base_url: str, proxy: ImageProxy) -> None:
    attrib = source.attrib
    lazy_srcset = attrib.pop(_LAZY_SRCSET, "").strip()
    srcset = lazy_srcset or attrib.get("srcset")
    if srcset is not None:
        rewritten = _rewrite_srcset(srcset, base_url, proxy)
        if rewritten is None:
            attrib.pop("srcset", None)
        else:
            attrib["srcset"] = rewritten
    _replace_attribute(attrib, "src", lambda value: _media_address(value, base_url))


def _rewrite_video(video: etree._Element, base_url: str, proxy: ImageProxy) -> None:
    attrib = video.attrib
    _replace_attribute(attrib, "poster", lambda value: _image_address(value, base_url, proxy))
    _replace_attribute(attrib, "src", lambda value: _media_address(value, base_url))


def _check_link(element: etree._Element, base_url: str, proxy: ImageProxy) -> None:
    # Resolved so that links still lead to the source once the post lives on the blog.
    attrib = element.attrib
    for name in ("href", "cite"):
        value = attrib.get(name)
        if value is None:
            continue
        resolved = _resolve(value, base_url)
        if resolved is None or resolved[1] not in _LINK_SCHEMES:
            del attrib[name]
        else:
            attrib[name] = resolved[0]


_REWRITERS = {
    "img": _rewrite_img,
    "source": _rewrite_source,
    "video": _rewrite_video,
    "a": _check_link,
    "blockquote": _check_link,
    "q": _check_link,
    "ins": _check_link,
    "del": _check_link,
}
_REWRITTEN_TAGS = tuple(_REWRITERS)


def _without_lone_surrogates(html: str) -> str:
    # JSON allows lone surrogates (a truncated emoji); libxml2 silently stops at one.
    try:
        html.encode("utf-8")
    except UnicodeEncodeError:
        return html.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return html


def _parse_body(html: str) -> etree._Element | None:
    html = _ROOT_END_TAG_RE.sub("</_", _without_lone_surrogates(html))
    try:
        document = lxml.html.document_fromstring("<html><body>" + html)
    except (etree.ParserError, ValueError):
        logger.warning("Article HTML could not be parsed", exc_info=True)
        return None
    return document.find("body")


def inner_html(element: etree._Element) -> str:
    """The HTML inside `element`, as a spider takes an article body out of a page. lxml hands
    the leading text over unescaped; it is escaped again so that `&lt;b&gt;` stays text."""
    return html_lib.escape(element.text or "", quote=False) + "".join(
        lxml.html.tostring(child, encoding="unicode") for child in element.iterchildren()
    )


def normalise_html(html: str, base_url: str, proxy: ImageProxy) -> NormalisedHtml:
    """Normalise one article body so every post renders the same way and safely.

    ``images`` is read back from the sanitised output rather than collected during the
    rewrite, because html5ever may still drop an image (or ammonia its ``src``) that lxml kept.
    """
    if not html or html.isspace():
        return NormalisedHtml(html="", images=[])
    body = _parse_body(html)
    if body is None:
        return NormalisedHtml(html="", images=[])

    etree.strip_elements(body, *_DROP_WITH_CONTENT, with_tail=False)
    for attribute in _ODD_DATA_ATTRIBUTES(body):
        del attribute.getparent().attrib[attribute.attrname]
    for element in body.iter(_REWRITTEN_TAGS):
        _REWRITERS[element.tag](element, base_url, proxy)

    body.attrib.clear()
    serialised = etree.tostring(body, encoding="unicode", method="html")
    inner = serialised[len("<body>") : -len("</body>")]
    cleaned = _CLEANER.clean(inner)
    if cleaned.isspace():
        return NormalisedHtml(html="", images=[])
    images = [html_lib.unescape(src) for src in _IMG_SRC_RE.findall(cleaned)]
    return NormalisedHtml(html=cleaned, images=images)
