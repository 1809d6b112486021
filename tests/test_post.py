"""Post rendering: the reference post byte for byte, and front matter that any title, author
or category survives unchanged for a YAML 1.1 reader (PyYAML) and a YAML 1.2 reader (ruamel,
standing in for Hexo's js-yaml)."""

from __future__ import annotations

import email.utils
import locale
import random
import re
import time
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from scrapy.settings import Settings

from aggregator.errors import ConfigError
from aggregator.render import post as post_module
from aggregator.render.post import (
    PostFields,
    parse_front_matter,
    post_timezone,
    read_post,
    render_front_matter,
    render_post,
    rfc1123,
    wall_time,
)

EXPECTED = Path(__file__).resolve().parent / "fixtures" / "qutoutiao" / "expected" / "58837411.md"
HEADIMG = (
    "https://cors.zfour.workers.dev/?http://static.1sapp.com/qupost/img/2022/02/02/"
    "ce972ef3c4dcf839837636d30fbc5b5c.png"
)
BODY_OPEN = "\n---\n\n<div>   \n"
BODY_CLOSE = "  \n</div>\n" + " " * 12
DATE = datetime.fromtimestamp(1643789321, UTC)

ALL_KEYS = {"title", "categories", "headimg", "author", "comments", "date", "thumbnail"}
NO_IMAGE_KEYS = ALL_KEYS - {"headimg", "thumbnail"}

ODD = [
    "it's",
    'say "hi"',
    "'both' \"quotes\"",
    "a: b",
    "a:b",
    "ends with colon:",
    "a #x",
    "#x",
    "a#x",
    *[c + "x" for c in "-[]*&!%@>|{}?,`'\"#=<~:."],
    "- item",
    "? key",
    "NO",
    "No",
    "no",
    "yes",
    "Y",
    "n",
    "on",
    "OFF",
    "null",
    "Null",
    "NULL",
    "~",
    "true",
    "True",
    "FALSE",
    "2024-01-01",
    "2001-12-14t21:59:43.10-05:00",
    "1e5",
    "0o17",
    "0x1F",
    "0b101",
    "017",
    "1_000",
    "12:30:45",
    "+1",
    ".inf",
    "-.INF",
    ".nan",
    "<<",
    "=",
    "---",
    "...",
    "--- x",
    "x\n---\ny",
    "x\nlayout: x",
    "x\r\nlayout: x",
    "x\rlayout: x",
    "a\tb",
    "\tlead tab",
    "a\u2028b",
    "a\u2029b",
    "a\x85b",
    "\ufeffbom",
    "bom\ufeff",
    "nul\x00",
    "esc\x1b",
    "del\x7f",
    "c1\x9f",
    "\x0b\x0c\x1c\x1d\x1e",
    "emoji 😀",
    "😀",
    "\U0010ffff",
    "\ufffe\uffff",
    " lead",
    "trail ",
    "  ",
    "",
    "a\xa0",
    "全角\u3000",
    "\n",
    "a \nb",
    "a\n b",
    "x\n\n",
    "!!python/object:os.system",
    "&anchor *alias",
    "{a: 1}",
    "[1, 2]",
    "%YAML 1.1",
    "涵养源头活水夯实民生底盘",
]

# Node ids a shell and mutmut can pass back to pytest: the value's ASCII form, letters and
# digits only, numbered so that every id is unique.
ODD_IDS = [f"{i}-{re.sub('[^0-9A-Za-z]+', '-', ascii(v))[:30]}" for i, v in enumerate(ODD)]
_RUAMEL = YAML(typ="safe", pure=True)


def _fields(**overrides) -> PostFields:
    values = dict(
        title="涵养源头活水夯实民生底盘",
        categories=("新媒体", "趣头条", "分类"),
        author="趣头条",
        date=DATE,
        body_html="<p>body</p>",
        headimg=HEADIMG,
    )
    values.update(overrides)
    return PostFields(**values)


def _block(text: str) -> str:
    """The text between the first two '---' lines, found independently of the module."""
    lines = text.split("\n")
    marks = [i for i, line in enumerate(lines) if line == "---"]
    return "\n".join(lines[marks[0] + 1 : marks[1]])


def _read_both(fields: PostFields) -> tuple[dict, dict]:
    text = render_post(fields).decode("utf-8")
    return parse_front_matter(text), _RUAMEL.load(_block(text))


def _expected_meta(fields: PostFields) -> dict:
    meta = {
        "title": fields.title,
        "categories": list(fields.categories),
        "author": fields.author,
        "comments": fields.comments,
        "date": rfc1123(fields.date),
    }
    if fields.headimg is not None:
        meta["headimg"] = meta["thumbnail"] = fields.headimg
    return meta


def _assert_round_trip(fields: PostFields) -> None:
    expected = _expected_meta(fields)
    py, ru = _read_both(fields)
    assert py == expected
    assert ru == expected
    assert set(py) == set(ru) == (ALL_KEYS if fields.headimg is not None else NO_IMAGE_KEYS)
    for meta in (py, ru):
        assert meta["comments"] is fields.comments
        assert all(type(v) is str for k, v in meta.items() if k not in ("categories", "comments"))
        assert all(type(c) is str for c in meta["categories"])


# --- the reference post ---------------------------------------------------------------


def test_golden_post_is_byte_identical():
    expected = EXPECTED.read_bytes()
    text = expected.decode("utf-8")
    assert text.endswith(BODY_CLOSE)
    start = text.index(BODY_OPEN) + len(BODY_OPEN)
    body = text[start : -len(BODY_CLOSE)]
    fields = PostFields(
        title="涵养源头活水夯实民生底盘",
        categories=("新媒体", "趣头条", "分类"),
        author="趣头条",
        date=datetime.fromtimestamp(1643789321, UTC),
        body_html=body,
        headimg=HEADIMG,
    )
    assert render_post(fields) == expected


def test_golden_front_matter_parses_to_expected_metadata():
    meta = parse_front_matter(EXPECTED.read_text(encoding="utf-8"))
    assert meta == {
        "title": "涵养源头活水夯实民生底盘",
        "categories": ["新媒体", "趣头条", "分类"],
        "headimg": HEADIMG,
        "author": "趣头条",
        "comments": False,
        "date": "Wed, 02 Feb 2022 08:08:41 GMT",
        "thumbnail": HEADIMG,
    }
    assert list(meta) == [
        "title",
        "categories",
        "headimg",
        "author",
        "comments",
        "date",
        "thumbnail",
    ]


def test_front_matter_block_shape():
    fm = render_front_matter(_fields())
    assert fm.startswith("---\n")
    assert fm.endswith("\n---\n")
    assert "categories: \n - 新媒体\n - 趣头条\n - 分类\n" in fm
    assert "comments: false\n" in fm
    assert render_post(_fields()).startswith(b"\n" + fm.encode("utf-8") + b"\n<div>   \n")


# --- dates ----------------------------------------------------------------------------


def test_rfc1123_utc():
    assert rfc1123(DATE) == "Wed, 02 Feb 2022 08:08:41 GMT"


def test_rfc1123_converts_other_zones_to_gmt():
    shanghai = timezone(timedelta(hours=8))
    dt = datetime(2022, 2, 2, 16, 8, 41, tzinfo=shanghai)
    assert rfc1123(dt) == "Wed, 02 Feb 2022 08:08:41 GMT"
    # crossing a day, month and year boundary backwards
    dt = datetime(2023, 1, 1, 3, 0, 5, tzinfo=shanghai)
    assert rfc1123(dt) == "Sat, 31 Dec 2022 19:00:05 GMT"
    west = timezone(timedelta(hours=-5, minutes=-30))
    assert rfc1123(datetime(2020, 2, 29, 20, 0, 0, tzinfo=west)) == "Sun, 01 Mar 2020 01:30:00 GMT"


def test_rfc1123_rejects_naive():
    with pytest.raises(ValueError):
        rfc1123(datetime(2022, 2, 2, 8, 8, 41))
    with pytest.raises(ValueError):
        _fields(date=datetime(2022, 2, 2, 8, 8, 41))


def test_rfc1123_is_locale_independent():
    names = ["de_DE.UTF-8", "fr_FR.UTF-8", "zh_CN.UTF-8", "ja_JP.UTF-8", "C.UTF-8", "C"]
    saved = locale.setlocale(locale.LC_TIME)
    tried = 0
    try:
        for name in names:
            try:
                locale.setlocale(locale.LC_TIME, name)
            except locale.Error:
                continue
            tried += 1
            assert rfc1123(DATE) == "Wed, 02 Feb 2022 08:08:41 GMT"
            assert rfc1123(datetime(2021, 12, 5, tzinfo=UTC)).startswith("Sun, 05 Dec")
    finally:
        locale.setlocale(locale.LC_TIME, saved)
    assert tried


def test_all_month_and_day_names():
    months = [rfc1123(datetime(2021, m, 1, tzinfo=UTC)).split()[2] for m in range(1, 13)]
    assert months == [
        "Jan",
        "Feb",
        "Mar",
        "Apr",
        "May",
        "Jun",
        "Jul",
        "Aug",
        "Sep",
        "Oct",
        "Nov",
        "Dec",
    ]
    days = [rfc1123(datetime(2024, 1, d, tzinfo=UTC))[:3] for d in range(1, 8)]
    assert days == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]  # 2024-01-01 was a Monday


# --- optional keys and fields ---------------------------------------------------------


def test_no_headimg_leaves_out_headimg_and_thumbnail():
    fields = _fields(headimg=None)
    text = render_post(fields).decode("utf-8")
    assert "headimg" not in text
    assert "thumbnail" not in text
    assert set(parse_front_matter(text)) == NO_IMAGE_KEYS
    _assert_round_trip(fields)


def test_comments_true():
    fields = _fields(comments=True)
    assert "\ncomments: true\n" in render_front_matter(fields)
    _assert_round_trip(fields)


def test_categories_list_is_accepted_and_empty_is_a_list():
    assert _fields(categories=["a", "b"]).categories == ("a", "b")
    _assert_round_trip(_fields(categories=()))


def test_body_is_kept_verbatim():
    body = "---\nlayout: x\n---\n<p>\r\n\u2028😀</p>"
    data = render_post(_fields(body_html=body))
    assert data.endswith((body + BODY_CLOSE).encode("utf-8"))
    assert set(parse_front_matter(data.decode("utf-8"))) == ALL_KEYS


def test_parse_front_matter_needs_two_delimiters():
    with pytest.raises(ValueError):
        parse_front_matter("no front matter here")
    with pytest.raises(ValueError):
        parse_front_matter("---\n- a list\n---\n")
    assert parse_front_matter("---\n---\n") == {}


def test_multiline_emitter_output_is_refused(monkeypatch):
    monkeypatch.setattr(post_module.yaml, "serialize", lambda *a, **k: "k: 'a\n  b'\n")
    post_module._emit_with_pyyaml_cached.cache_clear()  # earlier tests' values are cached
    with pytest.raises(ValueError, match=r"^YAML scalar for 'a tab.*is not a single line: "):
        render_front_matter(_fields(title="a tab\tgoes to PyYAML"))


# --- YAML safety ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ODD, ids=ODD_IDS)
def test_odd_title_round_trips(value):
    _assert_round_trip(_fields(title=value))


@pytest.mark.parametrize("value", ODD, ids=ODD_IDS)
def test_odd_author_round_trips(value):
    _assert_round_trip(_fields(author=value))


@pytest.mark.parametrize("value", ODD, ids=ODD_IDS)
def test_odd_category_round_trips(value):
    _assert_round_trip(_fields(categories=(value, "趣头条", value)))


@pytest.mark.parametrize("value", ODD, ids=ODD_IDS)
def test_odd_headimg_round_trips(value):
    _assert_round_trip(_fields(headimg=value))


@pytest.mark.parametrize("value", ["x\nlayout: x", "x\r\nlayout: x", "a\u2028layout: b"])
def test_line_break_cannot_inject_a_key(value):
    fields = _fields(title=value, author=value, categories=(value,) * 3, headimg=value)
    front_matter = render_front_matter(fields)
    assert all(
        line in ("---", "categories: ") or line.split(":", 1)[0] in ALL_KEYS or line[:3] == " - "
        for line in front_matter.split("\n")[:-1]
    )
    _assert_round_trip(fields)


def test_every_line_of_front_matter_is_one_line_for_any_reader():
    fields = _fields(title="\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\r\n", author="a\x1cb")
    front_matter = render_front_matter(fields)
    assert front_matter.splitlines() == front_matter.split("\n")[:-1]


def test_plain_only_when_portable():
    fm = render_front_matter(_fields(author="NO", categories=("y", "Yes", "abc def"), headimg=None))
    assert "\nauthor: 'NO'\n" in fm
    assert "\n - 'y'\n - 'Yes'\n - abc def\n" in fm
    assert "\ndate: Wed, 02 Feb 2022 08:08:41 GMT\n" in fm


def test_line_breaks_are_double_quoted_escapes():
    fm = render_front_matter(_fields(title="a\nb\u2028c\x85d\u2029e"))
    assert '\ntitle: "a\\nb\\Lc\\Nd\\Pe"\n' in fm


ANY_CHAR = st.characters(exclude_categories=("Cs",))
TRICKY = st.sampled_from(
    [
        "\n",
        "\r",
        "\t",
        " ",
        ": ",
        " #",
        "'",
        '"',
        "---",
        "...",
        "- ",
        "layout: x",
        "\u2028",
        "\u2029",
        "\x85",
        "\ufeff",
        "\x00",
        "😀",
        "NO",
        "null",
        "~",
        "true",
        "1e5",
        "0o17",
        ".inf",
        "2024-01-01",
        "&",
        "*",
        "!",
        "|",
        ">",
        "%",
        "@",
        "`",
        "{",
        "[",
        "?",
        ",",
    ]
)
TEXT = st.one_of(
    st.text(),
    st.text(alphabet=ANY_CHAR),
    st.lists(st.one_of(TRICKY, st.text(alphabet=ANY_CHAR, max_size=3)), max_size=6).map("".join),
)


@settings(max_examples=300, deadline=None)
@given(title=TEXT, author=TEXT, categories=st.tuples(TEXT, TEXT, TEXT))
def test_any_text_round_trips(title, author, categories):
    _assert_round_trip(_fields(title=title, author=author, categories=categories))


@settings(max_examples=100, deadline=None)
@given(headimg=st.one_of(st.none(), TEXT), comments=st.booleans())
def test_any_headimg_round_trips(headimg, comments):
    _assert_round_trip(_fields(headimg=headimg, comments=comments))


# --- python-frontmatter (what downstream tools use) -----------------------------------


@pytest.mark.parametrize("value", ["涵养源头活水", "a: b\nlayout: x", "NO", "\ufeff😀", " '\" "])
def test_python_frontmatter_reads_the_same_metadata(value):
    frontmatter = pytest.importorskip("frontmatter")
    fields = _fields(title=value, author=value, categories=(value, "b", "c"))
    text = render_post(fields).decode("utf-8")
    parsed = frontmatter.loads(text)
    assert dict(parsed.metadata) == parse_front_matter(text) == _expected_meta(fields)
    assert parsed.content.startswith("<div>")


def test_yaml_readers_agree_on_the_reference_file():
    block = _block(EXPECTED.read_text(encoding="utf-8"))
    assert yaml.safe_load(block) == _RUAMEL.load(block)


# --- POST_TIMEZONE ----------------------------------------------------------------------------

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_rfc1123_is_the_stdlib_form():
    for dt in (DATE, datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(9, 1, 2, tzinfo=UTC)):
        assert rfc1123(dt) == email.utils.format_datetime(dt, usegmt=True)
    assert rfc1123(datetime(9, 1, 2, tzinfo=UTC)) == "Fri, 02 Jan 0009 00:00:00 GMT"


def test_wall_time_in_the_blogs_zone():
    assert wall_time(DATE, SHANGHAI) == "2022-02-02 16:08:41"
    assert wall_time(datetime(2022, 12, 31, 20, 0, tzinfo=UTC), SHANGHAI) == "2023-01-01 04:00:00"
    new_york = ZoneInfo("America/New_York")
    assert wall_time(datetime(2024, 7, 1, 12, 0, tzinfo=UTC), new_york) == "2024-07-01 08:00:00"
    assert wall_time(datetime(2024, 1, 1, 12, 0, tzinfo=UTC), new_york) == "2024-01-01 07:00:00"
    assert wall_time(DATE, ZoneInfo("UTC")) == "2022-02-02 08:08:41"


def test_date_is_the_quoted_wall_time_when_a_timezone_is_set():
    fields = _fields(timezone=SHANGHAI)
    front_matter = render_front_matter(fields)
    assert "\ndate: '2022-02-02 16:08:41'\n" in front_matter
    # a string for both YAML versions (Hexo parses it as the site's wall time)
    py, ru = _read_both(fields)
    assert py["date"] == ru["date"] == "2022-02-02 16:08:41"
    # nothing else changes
    assert render_post(fields).replace(b"'2022-02-02 16:08:41'", b"X") == render_post(
        _fields()
    ).replace(b"Wed, 02 Feb 2022 08:08:41 GMT", b"X")


def test_without_a_timezone_the_date_is_rfc1123_gmt():
    assert "\ndate: Wed, 02 Feb 2022 08:08:41 GMT\n" in render_front_matter(_fields())
    with pytest.raises(TypeError):
        _fields(timezone="Asia/Shanghai")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("  ", None), ("Asia/Shanghai", SHANGHAI), ("UTC", ZoneInfo("UTC"))],
)
def test_post_timezone_setting(value, expected):
    assert post_timezone(Settings({"POST_TIMEZONE": value})) == expected


@pytest.mark.parametrize(
    "value",
    ["Asia/Shangai", "asia/shanghai", "GMT+8", "+08:00", "../etc/passwd", "/etc/localtime", 8],
)
def test_bad_post_timezone_is_a_config_error(value):
    with pytest.raises(ConfigError, match="POST_TIMEZONE"):
        post_timezone(Settings({"POST_TIMEZONE": value}))


# --- the fast path: PyYAML's output without PyYAML's emitter ----------------------------------

_STYLES = (None, "'")


def _pyyaml(value: str, style: str | None) -> str:
    return post_module._pyyaml_scalar(value, style)  # uncached, PyYAML itself


def _assert_fast_path_equals_pyyaml(value: str) -> bool:
    """True when the fast path took `value` (and then it matched PyYAML for both styles)."""
    taken = False
    for style in _STYLES:
        fast = post_module._fast_scalar(value, style)
        if fast is not None:
            taken = True
            assert fast == _pyyaml(value, style), (value, style)
    return taken


# Characters that decide quoting: indicators, whitespace, quotes, digits, the letters of YAML
# 1.1 bools and nulls, characters just inside and outside the printable ranges, CJK, emoji.
_EDGE_ALPHABET = (
    " -?:,[]{}#&*!|>'\"%@`.=<~+_0123456789eExXoObB"
    "yYnNtTfFlLuUsSaA\t\r\n\x00\x1f\x7e\x7f\x80\x85\x9f\xa0\xff"
    "\u2027\u2028\u2029\u202a\ud7ff\ue000\ufefe\ufeff\uff00\ufffd\ufffe\uffff"
    "\U00010000\U0010fffe\U0010ffff趣头条😀\u3000"
)
_WORDS = [
    "yes", "No", "ON", "off", "null", "Null", "~", "true", "False", "y", "n", "<<", "=",
    "0x1F", "0o17", "1_000", "12:30:45", "1e5", "-.inf", ".NaN", "2024-01-01",
    "2001-12-14t21:59:43.10-05:00", "---", "...", "- ", "? ", ": ", " #", "#", "''", "趣头条",
]  # fmt: skip


def _corpus(count: int, seed: int = 14) -> list[str]:
    rng = random.Random(seed)
    values = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.3:
                parts.append(rng.choice(_WORDS))
            else:
                parts.append("".join(rng.choices(_EDGE_ALPHABET, k=rng.randint(1, 6))))
        values.append("".join(parts))
    return values


@settings(max_examples=3000, deadline=None)
@given(value=st.text(min_size=1))
def test_fast_path_equals_pyyaml_for_any_text(value):
    _assert_fast_path_equals_pyyaml(value)


@settings(max_examples=2000, deadline=None)
@given(value=st.text(alphabet=_EDGE_ALPHABET, min_size=1, max_size=12))
def test_fast_path_equals_pyyaml_for_edge_characters(value):
    _assert_fast_path_equals_pyyaml(value)


def test_fast_path_equals_pyyaml_on_a_large_corpus():
    corpus = _corpus(40_000) + ODD + [w + t for w in _WORDS for t in ("", " ", ":", "x", " #x")]
    taken = sum(_assert_fast_path_equals_pyyaml(value) for value in corpus if value)
    # the corpus is built to be hard, yet most of it must still be on the fast path
    assert taken > len(corpus) // 3


@pytest.mark.parametrize("value", ["涵养源头活水夯实民生底盘", HEADIMG, "趣头条", "a: b", "yes"])
def test_fast_path_takes_ordinary_values(value):
    assert post_module._fast_scalar(value, None) is not None
    assert post_module._fast_scalar(value, "'") is not None


@pytest.mark.parametrize(
    "value", ["", "a\tb", "a\nb", "a\u2028b", "nul\x00", "\ufeffbom", "\ud800"]
)
def test_fast_path_leaves_the_rest_to_pyyaml(value):
    assert post_module._fast_scalar(value, None) is None
    assert post_module._fast_scalar(value, "'") is None


def test_ordinary_post_is_rendered_without_the_pyyaml_emitter(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("PyYAML's emitter was used")

    monkeypatch.setattr(post_module.yaml, "serialize", refuse)
    post_module._emit_with_pyyaml_cached.cache_clear()
    render_post(_fields(title='第1篇：it\'s a "title" #1: yes', author="趣头条 author"))


def test_pyyaml_cache_is_bounded_and_skips_long_values():
    post_module._emit_with_pyyaml_cached.cache_clear()
    long_value = "\t" + "x" * 1000
    render_front_matter(_fields(title=long_value))
    info = post_module._emit_with_pyyaml_cached.cache_info()
    assert info.maxsize is not None and info.maxsize <= 1024
    assert info.currsize == 0
    render_front_matter(_fields(title="\tshort"))
    assert post_module._emit_with_pyyaml_cached.cache_info().currsize == 1


# --- what a caller is told, and the machine's own time zone -----------------------------------
class _NoOffset(tzinfo):
    def utcoffset(self, dt):
        return None


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"title": 1}, TypeError, "title must be a str, got int"),
        ({"categories": ["a", None]}, TypeError, "categories item must be a str, got NoneType"),
        ({"headimg": b"x"}, TypeError, "headimg must be a str, got bytes"),
        ({"comments": 0}, TypeError, "comments must be a bool, got int"),
        ({"timezone": "Asia/Shanghai"}, TypeError, "timezone must be a tzinfo, got str"),
        ({"date": "2022-02-02"}, TypeError, "date must be a datetime, got str"),
        ({"date": datetime(2022, 2, 2)}, ValueError, "date must be timezone-aware"),
        (
            {"date": datetime(2022, 2, 2, tzinfo=_NoOffset())},
            ValueError,
            "date must be timezone-aware",
        ),
    ],
    ids=["title", "category", "headimg", "comments", "timezone", "date", "naive", "no-offset"],
)
def test_a_bad_field_is_named_in_the_error(overrides, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        _fields(**overrides)


def test_what_is_no_post_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"^no front matter: fewer than two '---' lines$"):
        read_post("no front matter here")
    with pytest.raises(ValueError, match=r"^no front matter: fewer than two '---' lines$"):
        read_post("---\ntitle: x\n")
    with pytest.raises(ValueError, match=r"^front matter is not a mapping: list$"):
        read_post("---\n- a list\n---\n")


def test_rfc1123_does_not_depend_on_the_machines_time_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        assert rfc1123(DATE) == "Wed, 02 Feb 2022 08:08:41 GMT"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_long_value_with_a_line_break_stays_one_double_quoted_line():
    title = "x" * 300 + "\nlayout: x"
    front = render_front_matter(_fields(title=title))
    assert front.splitlines()[1] == 'title: "' + "x" * 300 + '\\nlayout: x"'
    assert parse_front_matter(render_post(_fields(title=title)).decode())["title"] == title


def test_a_letter_first_value_with_digits_stays_plain():
    assert "\nauthor: v2\n" in render_front_matter(_fields(author="v2"))
