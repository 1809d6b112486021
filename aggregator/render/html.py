"""Article HTML normaliser: lazy images, absolute and proxied addresses, sanitising, then an
encoding that keeps the body inert in a Hexo post.

The rewriting happens on an lxml tree and nh3 (ammonia) sanitises what the rewrite pass
serialised, so whatever that pass misses is still sanitised. Two things ammonia cannot do are
done in the lxml pass: ``srcset`` is not parsed by ammonia, and ``data:`` has to be an allowed
URL scheme for inline images, so ``data:`` (and any other non-link scheme) is removed from links
here instead. The lxml pass also gives nh3 a tree both parsers read alike: elements an HTML
parser turns into others (``<image>`` is ``<img>``) are renamed, elements nh3 does not know are
unwrapped (their text kept), MathML is flattened to its text, comments go.

nh3's output is then checked (every ``<img>`` proxied, with its referrer policy) and finished
(control characters out, ``alt``/``title`` without markup), and :func:`inert_html` writes it so
that Hexo's Nunjucks and Markdown passes leave it as it is (see there).
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
# removing them up front means nh3 sees exactly the tree the rewrite pass checked. Every other
# element nh3 does not allow is unwrapped in the lxml pass, its text kept (ammonia itself drops
# the content of elements named like SVG or MathML ones: `<root>`, `<mi>`, `<text>`, ...).
_DROP_WITH_CONTENT = (
    "script",
    "style",
    "svg",
    "noscript",
    "iframe",
    "noembed",
    "noframes",
    "xmp",
    "plaintext",
    "textarea",
    "title",
    "select",
)
# MathML is flattened to its text (`x+1`), without the annotations (TeX source and the like)
# a browser does not show either; no element inside <math> survives.
_MATH_HIDDEN = ("annotation", "annotation-xml")
# Elements HTML parsers read as others: `<image>` is an `<img>` (void: what libxml2 put inside
# it follows it), `<listing>` is a `<pre>`.
_RENAMED = {"image": "img", "listing": "pre"}
_VOID_AFTER_RENAMING = frozenset({"img"})

# C0 controls other than HTML whitespace, DEL and C1 controls: never text a reader sees, and
# (VT, FS, GS, RS, NEL) line breaks for some readers. Removed from the output.
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
# What lxml refuses in an attribute value (XML 1.0: C0 controls but tab and newlines, FF
# included, and U+FFFE/U+FFFF); removed from the values the lxml pass sets.
_NOT_XML_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
# In a URL: a browser strips leading and trailing C0 controls and spaces and removes tabs and
# newlines anywhere; any other control left makes the address unusable here (dropped), rather
# than guessing what a browser would do with `java\x03script:`.
_URL_STRIP = "".join(chr(c) for c in range(0x21))
_URL_TAB_NEWLINE_RE = re.compile("[\t\n\r]")
_URL_CONTROL_RE = re.compile("[\x00-\x1f\x7f]")

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

# Attribute names worth keeping when an element's attributes are rebuilt (nh3 allows no other).
_PLAIN_NAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9_.:-]*")

_NESTED_MATH = etree.XPath("descendant::math[not(ancestor::math)]")

# `alt` and `title` are text, but themes write them out as HTML: Hexo's landscape theme puts
# an image's alt into a caption element and into a double-quoted attribute. In the sanitised
# output (canonical: `name="value"`, `<`, `>`, `"` escaped in values, never raw) these are the
# start tags holding an alt or title with one of those characters; they lose it (see
# _attribute_without_markup).
_CAPTION_TAG_RE = re.compile(
    r'<[a-z][a-z0-9]*(?:\s[^\s=>]+="[^"]*")*?\s(?:alt|title)="[^"]*&(?:lt|gt|quot);[^>]*>'
)
_CAPTION_MARKUP_RE = re.compile("&(?:lt|gt|quot);")
# The same canonical form: attributes one by one from the start of a tag, so a match never
# starts inside a value.
_ATTRIBUTE_RE = re.compile(r'(\s)([^\s=>]+)="([^"]*)"')
_IMAGE_TAG_RE = re.compile(r"<(img|source|video)(?:\s[^>]*)?>")
_IMAGE_ADDRESSES = {"img": ("src",), "source": (), "video": ("poster",)}  # and srcset

# inert_html
_HTML_SPACE = " \t\n\r\x0c"
_LINE_BREAK_RE = re.compile("[\n\r\x0c]")
_COLLAPSIBLE_RE = re.compile("[ \t\n\r\x0c]*[\n\r\x0c][ \t\n\r\x0c]*")
_ENCODED_BREAKS = str.maketrans({"\n": "&#10;", "\r": "&#13;", "\x0c": "&#12;"})
_TAG_SPLIT_RE = re.compile(r"(<[^>]*>)")
_TAG_NAME_RE = re.compile(r"<(/?)([a-zA-Z][^\s/>]*)")
_PREFORMATTED = frozenset({"pre", "textarea", "listing", "xmp", "plaintext"})

# HTML spec srcset parsing: candidates are separated by commas, a URL is a run of non-space
# characters (so proxied URLs and data: URLs may contain commas), and commas inside
# parentheses in descriptors do not split.
_SRCSET_SEPARATORS_RE = re.compile(r"[ \t\n\f\r,]*")
_SRCSET_URL_RE = re.compile(r"[^ \t\n\f\r]+")
_SRCSET_DESCRIPTORS_RE = re.compile(r"(?:[^,(]|\([^)]*\)?)*")

# nh3 serialises canonically (name="value", with <, >, " escaped in values, comments
# stripped), so "<img" only starts real tags and attributes can be consumed one by one.
_IMG_SRC_RE = re.compile(r'<img(?:\s(?!src=)[^\s=>]+="[^"]*")*\ssrc="([^"]*)"')


# Runs once, at import: mutmut's forked runner cannot see a mutant of it (every child inherits
# the allow-list the parent built), so it is not mutated; test_html.py pins what it adds.
def _build_nh3_attributes() -> dict[str, set[str]]:  # pragma: no mutate block
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
# What nh3 removes with its content. The lxml pass already dropped, flattened or unwrapped all
# of these; they are here for whatever html5ever sees that libxml2 did not. Given explicitly, the
# set replaces nh3's default ({"script", "style"}), so those two must stay in it.
NH3_CLEAN_CONTENT_TAGS: frozenset[str] = frozenset(_DROP_WITH_CONTENT) | {"math", "template"}
NH3_ATTRIBUTES: dict[str, set[str]] = _build_nh3_attributes()
NH3_URL_SCHEMES: frozenset[str] = frozenset({"http", "https", "mailto", "data"})
NH3_GENERIC_ATTRIBUTE_PREFIXES: frozenset[str] = frozenset({"data-"})

_FORBIDDEN_TAGS = {"svg", "math", "script", "style", "iframe", "object", "embed", "form"}
if _FORBIDDEN_TAGS & NH3_TAGS:
    raise RuntimeError(f"nh3 allow-list contains {sorted(_FORBIDDEN_TAGS & NH3_TAGS)}")
if not {"script", "style"} <= NH3_CLEAN_CONTENT_TAGS:
    raise RuntimeError("nh3 would keep the text of <script> and <style>")
# Elements the lxml pass keeps as they are: what nh3 allows (the rest is unwrapped or dropped).
_KEPT_TAGS = NH3_TAGS | {"body"}

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

    html: str  # sanitised body HTML, encoded by inert_html
    images: list[str]  # final (proxied) address of every <img src>, in document order


class UnsafeHtml(ValueError):
    """The sanitised HTML breaks an invariant the normaliser guarantees (an image that is not
    proxied, or without its referrer policy) even after a second pass: the article must fail
    rather than be published."""


def _xml_safe(value: str) -> str:
    """`value` without the characters lxml refuses in an attribute value."""
    return _NOT_XML_RE.sub("", value) if _NOT_XML_RE.search(value) else value


def _resolve(raw: str, base_url: str) -> tuple[str, str] | None:
    raw = _URL_TAB_NEWLINE_RE.sub("", raw.strip().strip(_URL_STRIP))
    if not raw or _URL_CONTROL_RE.search(raw):
        # urljoin would turn "" into the article's own URL; control characters make no address.
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
        elif _PLAIN_NAME_RE.fullmatch(name):
            rebuilt.append((name, value))
        # else: a name such as `{{.png"` (from `src="a"{{.png"`), which lxml refuses to set
        # (a leading `{` reads as a namespace) and nh3 would drop anyway.
    if not has_policy:
        rebuilt.append(("referrerpolicy", "no-referrer"))
    attrib.clear()
    for name, value in rebuilt:
        attrib[name] = _xml_safe(value)


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
        attrib[name] = _xml_safe(replacement)


def _rewrite_source(source: etree._Element, base_url: str, proxy: ImageProxy) -> None:
    attrib = source.attrib
    lazy_srcset = attrib.pop(_LAZY_SRCSET, "").strip()
    srcset = lazy_srcset or attrib.get("srcset")
    if srcset is not None:
        rewritten = _rewrite_srcset(srcset, base_url, proxy)
        if rewritten is None:
            attrib.pop("srcset", None)
        else:
            attrib["srcset"] = _xml_safe(rewritten)
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
        document = etree.fromstring("<html><body>" + html, _PARSER)
    except (etree.ParserError, ValueError):
        logger.warning("Article HTML could not be parsed", exc_info=True)
        return None
    return document.find("body")


# libxml2's HTML parser, with plain elements (lxml.html's element classes make every element
# visited from Python dearer) and without comments and processing instructions: nh3 would strip
# them anyway, and their text is where libxml2 and html5ever could disagree.
_PARSER = etree.HTMLParser(remove_comments=True, remove_pis=True)


def _hoist_content(element: etree._Element) -> None:
    """Move what libxml2 put inside `element` (now a void element) right after it, where an
    HTML parser puts it."""
    parent = element.getparent()
    assert parent is not None  # never the body itself
    children = list(element)
    text, tail = element.text, element.tail
    element.text = None
    element.tail = text
    position = parent.index(element) + 1
    for offset, child in enumerate(children):
        parent.insert(position + offset, child)  # moves the child and its tail
    last = children[-1] if children else element
    last.tail = ((last.tail or "") + (tail or "")) or None


def _prepare_tree(body: etree._Element) -> None:
    """Leave only what both parsers read alike: dropped, flattened, renamed, unwrapped."""
    tags = {element.tag for element in body.iter()}  # one walk from Python: the dear part
    dropped = tags.intersection(_DROP_WITH_CONTENT)
    if dropped:
        etree.strip_elements(body, *dropped, with_tail=False)
    if "math" in tags:
        for math in _NESTED_MATH(body):
            etree.strip_elements(math, *_MATH_HIDDEN, with_tail=False)
            etree.strip_tags(math, "*")
    for old, new in _RENAMED.items():
        if old in tags:
            for element in list(body.iter(old)):
                element.tag = new
                if new in _VOID_AFTER_RENAMING:
                    _hoist_content(element)
    unknown = tags - _KEPT_TAGS - dropped
    if unknown:
        etree.strip_tags(body, *unknown)


def _sanitise_once(html: str, base_url: str, proxy: ImageProxy) -> str:
    body = _parse_body(html)
    if body is None:
        return ""
    _prepare_tree(body)
    for attribute in _ODD_DATA_ATTRIBUTES(body):
        del attribute.getparent().attrib[attribute.attrname]
    for element in body.iter(_REWRITTEN_TAGS):
        _REWRITERS[element.tag](element, base_url, proxy)

    body.attrib.clear()
    serialised = etree.tostring(body, encoding="unicode", method="html")
    inner = serialised[len("<body>") : -len("</body>")]
    cleaned = _finish(_CLEANER.clean(inner))
    return "" if cleaned.isspace() else cleaned


def _finish(cleaned: str) -> str:
    """Control characters out; alt and title without markup (see _CAPTION_TAG_RE)."""
    if _CONTROL_RE.search(cleaned):
        cleaned = _CONTROL_RE.sub("", cleaned)
    if "&lt;" in cleaned or "&gt;" in cleaned or "&quot;" in cleaned:
        cleaned = _CAPTION_TAG_RE.sub(_caption_tag_without_markup, cleaned)
    return cleaned


def _caption_tag_without_markup(match: re.Match[str]) -> str:
    return _ATTRIBUTE_RE.sub(_attribute_without_markup, match.group())


def _attribute_without_markup(match: re.Match[str]) -> str:
    """`alt`/`title` lose `<`, `>` and `"`: a theme writing them into HTML (as landscape does,
    as element content and inside a double-quoted attribute) cannot be given a tag or break
    out of the attribute. The rest of the text stays."""
    if match.group(2) not in ("alt", "title"):
        return match.group()
    return f'{match.group(1)}{match.group(2)}="{_CAPTION_MARKUP_RE.sub("", match.group(3))}"'


def _images_are_safe(cleaned: str, proxy: ImageProxy) -> bool:
    """Every `<img>` has the no-referrer policy, and every image address in the output (img
    src and srcset, source srcset, video poster) is proxied, or data:, or one the proxy leaves
    alone. The rewrite pass guarantees it when libxml2 and html5ever read the input alike."""
    for match in _IMAGE_TAG_RE.finditer(cleaned):
        tag = match.group(1)
        values = {
            name: html_lib.unescape(value) for _, name, value in _ATTRIBUTE_RE.findall(match[0])
        }
        if tag == "img" and values.get("referrerpolicy") != "no-referrer":
            return False
        addresses = [values[name] for name in _IMAGE_ADDRESSES[tag] if name in values]
        if "srcset" in values:
            addresses.extend(url for url, _ in _split_srcset(values["srcset"]))
        if not all(_is_final_image_address(address, proxy) for address in addresses):
            return False
    return True


def _is_final_image_address(url: str, proxy: ImageProxy) -> bool:
    if (proxy._prefix and url.startswith(proxy._prefix)) or url[:5].lower() == "data:":
        return True  # the common cases, without parsing the URL
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return False
    if scheme == "data":
        return True
    return scheme in _HTTP_SCHEMES and proxy.apply(url) == url


def sanitise_html(html: str, base_url: str, proxy: ImageProxy) -> str:
    """The sanitised body, before :func:`inert_html`; "" when nothing is left.

    Should an image come out of nh3 unproxied or without its referrer policy (html5ever read
    something as an image that libxml2 did not), the output goes through the whole pass once
    more, this time parsed from nh3's canonical serialisation; if that does not fix it, the
    article fails (UnsafeHtml) rather than be published."""
    if not html or html.isspace():
        return ""
    cleaned = _sanitise_once(html, base_url, proxy)
    if cleaned and not _images_are_safe(cleaned, proxy):
        logger.warning("An image escaped the rewrite pass; sanitising the article again")
        cleaned = _sanitise_once(cleaned, base_url, proxy)
        if cleaned and not _images_are_safe(cleaned, proxy):
            raise UnsafeHtml("an image is not proxied or has no referrer policy after sanitising")
    return cleaned


def inert_html(html: str) -> str:
    """Write sanitised HTML so that Hexo passes it through unchanged and a browser reads the
    same document: one line, no `{` or `}`, not starting with whitespace.

    Hexo renders a post body with Nunjucks (`{{ }}`, `{% %}`, `{# #}`; Hexo 5 and later hide
    them from the Markdown renderer and run Nunjucks after it, older Hexo before it) and with
    Markdown (hexo-renderer-marked or hexo-renderer-markdown-it). The post format writes the
    body between a `<div>   ` line and a `</div>` line. For both Markdown renderers (CommonMark's
    rules) a line starting with `<div` opens an HTML block (CommonMark's kind 6) whose lines
    are passed through verbatim up to the first blank line, a line that is empty or holds
    only spaces and tabs; the kind of block is decided by that first line alone. Hence:

    - No line break at all in the body (LF, CR, and U+2028/U+2029, which JavaScript's
      multiline `^` takes for line ends too): the block spans the whole body, and nothing in
      it is read as Markdown (no emphasis in `__init__.py`, no `[x](javascript:…)` links,
      reference definitions or `<http://x>` autolinks, no indented code, no `<pre>` cut at
      its blank lines). Line breaks that matter, in `<pre>` (the one element left where
      whitespace is kept; `<textarea>`, `<listing>`, `<xmp>` and `<plaintext>` are counted
      too, should the allow-list ever let them through) and in attribute values, are written
      as `&#10;` (CR `&#13;`, FF `&#12;`); elsewhere a whitespace run holding one becomes a
      single space, which is how a browser reads it (`a\n  b` is `a b`). A `<pre>` text that
      starts with a line break gets one `&#10;` more: tree construction drops a line feed
      right after the start tag, and nh3 (html5ever) serialises without the extra one. A
      `style` attribute never survives sanitising, so no `white-space: pre` can make other
      whitespace matter.
    - The body's only line cannot be blank, so it cannot end the block `<div>` opened,
      whatever it starts with (text, `#`, `>`, `- `, a fence, `[x]: y`): the normaliser never
      returns an empty body, and leading and trailing whitespace, which a browser drops at the
      edges of a block, is removed.
    - No `{` or `}`: written as `&#123;` / `&#125;`, nothing is left for Nunjucks, whichever
      order a Hexo version runs the two passes in. Inside an HTML block a Markdown renderer
      leaves character references alone (in a paragraph it would decode them, which is one
      more reason the block must never end early).

    This is a final pass over nh3's serialisation, which is canonical: the only markup is tags
    (`<name attr="value" ...>`, `</name>`; no comments, no doctype), `<` and `>` never occur
    raw in text or attribute values nor `"` raw in a value, and tag and attribute names come
    from the allow-lists (`data-*` names only with `[a-z0-9_.-]`). So braces, U+2028/U+2029
    and line breaks can only be in text or in attribute values, where a character reference
    means the same character, and splitting at `<...>` separates tags from text exactly.
    """
    if "\n" in html or "\r" in html or "\x0c" in html:
        html = _on_one_line(html)
    html = html.strip(_HTML_SPACE)
    if "{" in html or "}" in html:
        html = html.replace("{", "&#123;").replace("}", "&#125;")
    if "\u2028" in html or "\u2029" in html:
        html = html.replace("\u2028", "&#8232;").replace("\u2029", "&#8233;")
    return html


def _on_one_line(html: str) -> str:
    parts = _TAG_SPLIT_RE.split(html)  # text, tag, text, tag, ..., text
    preformatted = 0
    after_pre_start = False
    for index, part in enumerate(parts):
        if index % 2:
            name = _TAG_NAME_RE.match(part)
            after_pre_start = False
            if name is not None and name.group(2).lower() in _PREFORMATTED:
                preformatted += -1 if name.group(1) else 1
                after_pre_start = not name.group(1)
            if _LINE_BREAK_RE.search(part):
                parts[index] = part.translate(_ENCODED_BREAKS)  # in attribute values
        elif _LINE_BREAK_RE.search(part):
            if preformatted > 0:
                parts[index] = part.translate(_ENCODED_BREAKS)
                if after_pre_start and part.startswith("\n"):
                    # A parser drops the line feed right after <pre>'s start tag (HTML's
                    # tree construction rules; a `&#10;` is no exception), so a text that
                    # really starts with one needs a second, as the spec's serialiser writes
                    # it and html5ever's (nh3's) does not.
                    parts[index] = "&#10;" + parts[index]
            else:
                parts[index] = _COLLAPSIBLE_RE.sub(" ", part)
    return "".join(parts)


def inner_html(element: etree._Element) -> str:
    """The HTML inside `element`, as a spider takes an article body out of a page. lxml hands
    the leading text over unescaped; it is escaped again so that `&lt;b&gt;` stays text."""
    return html_lib.escape(element.text or "", quote=False) + "".join(
        lxml.html.tostring(child, encoding="unicode") for child in element.iterchildren()
    )


def normalise_html(html: str, base_url: str, proxy: ImageProxy) -> NormalisedHtml:
    """Normalise one article body so every post renders the same way and safely: sanitised
    (:func:`sanitise_html`), then encoded for Hexo (:func:`inert_html`).

    ``images`` is read back from the sanitised output rather than collected during the
    rewrite, because html5ever may still drop an image (or ammonia its ``src``) that lxml kept.
    """
    cleaned = sanitise_html(html, base_url, proxy)
    if not cleaned:
        return NormalisedHtml(html="", images=[])
    images = [html_lib.unescape(src) for src in _IMG_SRC_RE.findall(cleaned)]
    return NormalisedHtml(html=inert_html(cleaned), images=images)
