"""Render one blog post (Hexo front matter + HTML body) as bytes.

The layout is fixed by the reference post ``tests/fixtures/qutoutiao/expected/58837411.md``::

    \\n
    ---
    title: '...'
    categories:\\x20
     - group
     - source
     - channel
    headimg: '...'
    author: ...
    comments: false
    date: Wed, 02 Feb 2022 08:08:41 GMT      (or '2022-02-02 16:08:41' with POST_TIMEZONE)
    thumbnail: '...'
    ---
    \\n
    <div>   \\n{body}  \\n</div>\\n            (twelve spaces, no final newline)

The surrounding text is a fixed template, but no value is ever pasted into it raw: every
scalar is emitted by PyYAML's own emitter (which decides quoting and escaping) and must come
out as one line, so no value can add a key, end the front matter or change the type that a
YAML 1.1 reader (PyYAML) or a YAML 1.2 reader (Hexo's js-yaml, ruamel.yaml) gives it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from email.utils import format_datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from frontmatter.default_handlers import YAMLHandler

from aggregator.errors import ConfigError

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

__all__ = [
    "PostFields",
    "parse_front_matter",
    "post_timezone",
    "read_post",
    "render_front_matter",
    "render_post",
    "rfc1123",
    "wall_time",
]

_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"

# Characters that are line breaks for at least one YAML version (1.1 counts NEL, LS, PS).
_LINE_BREAKS = frozenset("\n\r\x85\u2028\u2029")
# Characters a line of the emitted document must never contain raw: any of them could end
# the line for some reader (str.splitlines() is the widest notion of a line break).
_NOT_IN_A_LINE = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")

# Plain scalars PyYAML leaves plain but the YAML 1.1 spec's bool type lists: quote them too.
_YAML11_SHORT_BOOLS = frozenset({"y", "Y", "n", "N"})

_BODY_OPEN = "<div>   \n"
_BODY_CLOSE = "  \n</div>\n" + " " * 12


@dataclass(frozen=True)
class PostFields:
    title: str
    categories: tuple[str, ...]  # [group, source, channel]
    author: str
    date: datetime  # aware, any tz; rendered in GMT, or as wall time in `timezone`
    body_html: str
    headimg: str | None = None  # when None, both headimg and thumbnail keys are left out
    comments: bool = False
    timezone: tzinfo | None = None  # POST_TIMEZONE: the blog's time zone

    def __post_init__(self) -> None:
        if not isinstance(self.categories, tuple):
            # Accept any iterable of strings (e.g. a list), keep the dataclass hashable.
            object.__setattr__(self, "categories", tuple(self.categories))
        for name in ("title", "author", "body_html"):
            _require_str(name, getattr(self, name))
        for item in self.categories:
            _require_str("categories item", item)
        if self.headimg is not None:
            _require_str("headimg", self.headimg)
        if not isinstance(self.comments, bool):
            raise TypeError(f"comments must be a bool, got {type(self.comments).__name__}")
        if self.timezone is not None and not isinstance(self.timezone, tzinfo):
            raise TypeError(f"timezone must be a tzinfo, got {type(self.timezone).__name__}")
        _require_aware(self.date)


def _require_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")


def _require_aware(dt: object) -> None:
    if not isinstance(dt, datetime):
        raise TypeError(f"date must be a datetime, got {type(dt).__name__}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("date must be timezone-aware")


def rfc1123(dt: datetime) -> str:
    """``'Wed, 02 Feb 2022 08:08:41 GMT'``: *dt* converted to UTC, English names whatever
    the locale. *dt* must be aware."""
    _require_aware(dt)
    return format_datetime(dt.astimezone(UTC), usegmt=True)


def wall_time(dt: datetime, zone: tzinfo) -> str:
    """``'2022-02-02 16:08:41'``: the wall-clock time of *dt* (aware) in *zone*.

    Hexo reads a front-matter date as wall time in the site's ``timezone`` setting: it
    ignores ``GMT``/``Z`` (an absolute date is moved by the difference between the build
    machine's zone and the site's), but this form, quoted (a string for js-yaml) or not (a
    YAML timestamp), is read as the site's wall time in every zone the build runs in, so
    ``post.date`` is *dt*. In the hour a daylight-saving change repeats, Hexo may pick the
    other of the two instants."""
    _require_aware(dt)
    t = dt.astimezone(zone)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d} {t.hour:02d}:{t.minute:02d}:{t.second:02d}"


def post_timezone(settings: BaseSettings) -> ZoneInfo | None:
    """The POST_TIMEZONE setting: None when unset or empty (dates in GMT, the reference
    format), else the IANA zone it names. A bad name raises ConfigError."""
    name = settings.get("POST_TIMEZONE")
    if name is None or (isinstance(name, str) and not name.strip()):
        return None
    problem = (
        f"setting POST_TIMEZONE={name!r}: expected an IANA time zone name such as Asia/Shanghai"
    )
    if not isinstance(name, str):
        raise ConfigError(problem)
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ConfigError(problem) from exc


# A scalar the fast path may write: one line of characters PyYAML prints as they are
# (printable ASCII, and with allow_unicode the printable non-ASCII ranges), so neither a line
# break (\x85, U+2028, U+2029 included) nor a character PyYAML escapes (controls, tab, DEL,
# C1, surrogates, BOM, U+FFFE/U+FFFF, U+10FFFF). Everything else goes to PyYAML itself.
_PRINTABLE_LINE = re.compile(
    "[\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010fffe]+"
)
# What makes PyYAML's analysis (Emitter.analyze_scalar) refuse a block plain scalar, for values
# _PRINTABLE_LINE accepts (the only whitespace there is the space): a document marker at the
# start, a leading indicator, "?", ":" or "-" followed by a space or the end, ": " or a final
# ":" later on, " #", or a leading or trailing space.
_NOT_BLOCK_PLAIN = re.compile(
    r"^(?:---|\.\.\.|[#,\[\]{}&*!|>'\"%@`]|[?:\-](?: |$))|.:(?: |$)| #|^ | $"
)
# PyYAML's own implicit resolvers (bool, int, float, null, timestamp, merge, value, ...), looked
# up exactly as BaseResolver.resolve does: a plain scalar must read back as a string.
_RESOLVERS = yaml.SafeDumper.yaml_implicit_resolvers


def _resolves_to_str(value: str) -> bool:
    candidates = _RESOLVERS.get(value[0], []) + _RESOLVERS.get(None, [])
    return not any(regexp.match(value) for _, regexp in candidates)


def _fast_scalar(value: str, style: str | None) -> str | None:
    """What PyYAML emits for *value* (style None or "'") as a block-mapping value, computed
    directly when *value* is one printable line; None when it is not (ask PyYAML).

    For such a value PyYAML's rules come down to: plain (the value itself) when the style is
    None, the analysis allows a block plain scalar and the value resolves to a string; else
    single-quoted, quotes doubled. No folding: the emitter's width is 2**31. Equality with
    PyYAML is checked by tests/test_post.py (a property test and a large corpus)."""
    if not _PRINTABLE_LINE.fullmatch(value):
        return None
    if style is None and not _NOT_BLOCK_PLAIN.search(value) and _resolves_to_str(value):
        return value
    return "'" + value.replace("'", "''") + "'"


def _emit_value(value: str, style: str | None) -> str:
    """The scalar text PyYAML emits for *value* with the requested *style* as a block-mapping
    value (the context it has in the post): a single line.

    Most values (titles, names, addresses) are one printable line, whose scalar is computed
    directly (_fast_scalar); the rest go through PyYAML's emitter."""
    if style != '"':
        scalar = _fast_scalar(value, style)
        if scalar is not None:
            return scalar
    return _emit_with_pyyaml(value, style)


# Only values outside the fast path reach PyYAML, and only short ones are kept: a cache of
# whole hostile titles would hold megabytes for a crawl's lifetime.
_CACHED_LENGTH = 256


def _emit_with_pyyaml(value: str, style: str | None) -> str:
    if len(value) <= _CACHED_LENGTH:
        return _emit_with_pyyaml_cached(value, style)
    return _pyyaml_scalar(value, style)


def _pyyaml_scalar(value: str, style: str | None) -> str:
    """Let PyYAML emit *value* as a block-mapping value with the requested *style*, and return
    the scalar text, which must be a single line."""
    node = yaml.MappingNode(
        _MAP_TAG, [(yaml.ScalarNode(_STR_TAG, "k"), yaml.ScalarNode(_STR_TAG, value, style=style))]
    )
    out = yaml.serialize(
        node,
        Dumper=yaml.SafeDumper,
        allow_unicode=True,
        width=2**31,
        explicit_start=False,
        explicit_end=False,
    )
    prefix = "k: "
    if not (out.startswith(prefix) and out.endswith("\n")):
        raise ValueError(f"unexpected YAML emitted for {value!r}: {out!r}")
    scalar = out[len(prefix) : -1]
    if not scalar or not _NOT_IN_A_LINE.isdisjoint(scalar):
        raise ValueError(f"YAML scalar for {value!r} is not a single line: {out!r}")
    return scalar


_emit_with_pyyaml_cached = lru_cache(maxsize=512)(_pyyaml_scalar)


def _has_line_break(value: str) -> bool:
    return not _LINE_BREAKS.isdisjoint(value)


def _quoted(value: str) -> str:
    """Always quoted: single-quoted when PyYAML allows it, else double-quoted (escaped).

    A value holding a line break is double-quoted up front: a single-quoted scalar would fold
    it onto several lines, while double quotes escape it (``\\n``, ``\\N``, ``\\L``, ``\\P``)."""
    scalar = _emit_value(value, '"' if _has_line_break(value) else "'")
    if scalar[0] not in "'\"":
        raise ValueError(f"expected a quoted scalar for {value!r}, got {scalar!r}")
    return scalar


def _plain_if_portable(value: str) -> str:
    """Plain when YAML 1.1 and 1.2 are sure to read it back as this same string, else quoted.

    Plain is only offered for a value starting with a letter; PyYAML then still quotes it
    when its 1.1 resolver would read it as something else (``No``, ``true``, ``null``, ...),
    which covers every letter-first 1.2 non-string (true/false/null variants), or when its
    analysis forbids plain (``: ``, `` #``, trailing space, control characters, ...).
    ``y``/``n`` (bools for the 1.1 spec, not for PyYAML) are quoted as well."""
    if value[:1].isalpha() and not _has_line_break(value) and value not in _YAML11_SHORT_BOOLS:
        return _emit_value(value, None)
    return _quoted(value)


def render_front_matter(fields: PostFields) -> str:
    """The front matter block, from the opening ``---`` line to the closing ``---\\n``."""
    lines = ["---", f"title: {_quoted(fields.title)}"]
    if fields.categories:
        lines.append("categories: ")
        lines.extend(f" - {_plain_if_portable(item)}" for item in fields.categories)
    else:
        lines.append("categories: []")
    if fields.headimg is not None:
        lines.append(f"headimg: {_quoted(fields.headimg)}")
    lines.append(f"author: {_plain_if_portable(fields.author)}")
    lines.append(f"comments: {'true' if fields.comments else 'false'}")
    if fields.timezone is None:
        date = rfc1123(fields.date)
    else:
        date = wall_time(fields.date, fields.timezone)
    lines.append(f"date: {_plain_if_portable(date)}")
    if fields.headimg is not None:
        lines.append(f"thumbnail: {_quoted(fields.headimg)}")
    lines.append("---")
    return "\n".join(lines) + "\n"


def render_post(fields: PostFields) -> bytes:
    """The whole post, UTF-8: an empty line, the front matter, an empty line, the body."""
    text = "\n" + render_front_matter(fields) + "\n" + _BODY_OPEN + fields.body_html + _BODY_CLOSE
    return text.encode("utf-8")


def read_post(text: str) -> tuple[dict[str, Any], str]:
    """A post read back the way downstream tools read it (python-frontmatter, YAML safe-loaded):
    its front matter and its body. The tests and any consumer code share this reader. Raises
    ValueError when there is no front matter or it is not a mapping (python-frontmatter itself
    would quietly treat either as a post without metadata)."""
    handler = YAMLHandler()
    stripped = text.strip()
    if not handler.detect(stripped):
        raise ValueError("no front matter: fewer than two '---' lines")
    try:
        front, body = handler.split(stripped)
    except ValueError as exc:
        raise ValueError("no front matter: fewer than two '---' lines") from exc
    data = handler.load(front)
    if data is None:
        return {}, body
    if not isinstance(data, dict):
        raise ValueError(f"front matter is not a mapping: {type(data).__name__}")
    return data, body


def parse_front_matter(text: str) -> dict[str, Any]:
    """The front matter of a post (see read_post)."""
    return read_post(text)[0]
