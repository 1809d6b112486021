"""The sources file: the packaged default, where the file comes from, and every kind of mistake
reported with the source and the key it is about."""

from __future__ import annotations

from pathlib import Path

import pytest
from scrapy.settings import Settings
from scrapy.spiderloader import get_spider_loader

from aggregator.errors import ConfigError
from aggregator.ops.sources import (
    DEFAULT_SOURCES_FILE,
    Source,
    load_sources,
    parse_names,
    parse_sources,
    select_sources,
    sources_file,
)

SPIDERS = get_spider_loader(Settings({"SPIDER_MODULES": ["aggregator.spiders"]}))

GOOD = """
[sources.tech]
spider = "qutoutiao"
args = { cid = "10", pages = "2" }
categories = ["新媒体", "趣头条", "科技"]
author = "趣头条科技"

[sources.hot]
spider = "qutoutiao"
categories = ["新媒体", "趣头条", "热点"]
author = "趣头条"
enabled = false
"""

# One source, every key right; each case below breaks one thing.
BASE = """[sources.news]
spider = "qutoutiao"
args = { cid = "1" }
categories = ["新媒体", "趣头条", "分类"]
author = "趣头条"
"""


def test_packaged_sources_file_is_valid_and_crawls_qutoutiao() -> None:
    sources = load_sources(DEFAULT_SOURCES_FILE, SPIDERS)
    enabled = [s for s in sources.values() if s.enabled]
    qutoutiao = [s for s in enabled if s.spider == "qutoutiao"]
    assert qutoutiao, "the packaged file has an enabled 趣头条 source"
    assert qutoutiao[0].author == "趣头条"
    assert qutoutiao[0].categories[:2] == ("新媒体", "趣头条")
    text = DEFAULT_SOURCES_FILE.read_text(encoding="utf-8")
    for key in ("spider", "args", "categories", "author", "enabled"):
        assert f"#   {key}" in text, f"the packaged file documents {key!r}"


@pytest.mark.parametrize(
    ("name", "route", "categories", "author"),
    [
        ("zaker", "/zaker/channel/13", ("新媒体", "ZAKER", "channel"), "ZAKER"),
        (
            "woshipm",
            "/woshipm/latest",
            ("新媒体", "人人都是产品经理", "最新文章"),
            "人人都是产品经理",
        ),
        ("dockone", "/dockone/weekly", ("编程", "Dockone", "周报"), "Dockone"),
    ],
)
def test_packaged_sources_file_has_the_blogs_feeds_disabled(
    name: str, route: str, categories: tuple[str, str, str], author: str
) -> None:
    source = load_sources(DEFAULT_SOURCES_FILE, SPIDERS)[name]
    assert (source.spider, source.args) == ("feed", {"route": route})
    assert (source.categories, source.author) == (categories, author)
    assert source.enabled is False, "a source that needs the network ships disabled"
    parsed = SPIDERS.load("feed").parse_arguments(**source.spider_arguments())
    assert parsed["route"] == route and parsed["categories"] == categories


def test_entries_become_sources_in_file_order_with_spider_arguments() -> None:
    sources = parse_sources(GOOD, SPIDERS)
    assert list(sources) == ["tech", "hot"]
    tech = sources["tech"]
    assert tech == Source(
        name="tech",
        spider="qutoutiao",
        args={"cid": "10", "pages": "2"},
        categories=("新媒体", "趣头条", "科技"),
        author="趣头条科技",
        enabled=True,
    )
    assert tech.spider_arguments() == {
        "cid": "10",
        "pages": "2",
        "categories": "新媒体,趣头条,科技",
        "author": "趣头条科技",
    }
    assert sources["hot"].args == {} and sources["hot"].enabled is False


def test_sources_file_setting_wins_over_environment_which_wins_over_default(
    monkeypatch, tmp_path
) -> None:
    monkeypatch.delenv("AGGREGATOR_SOURCES", raising=False)
    assert sources_file(Settings({"SOURCES_FILE": None})) == DEFAULT_SOURCES_FILE
    monkeypatch.setenv("AGGREGATOR_SOURCES", str(tmp_path / "env.toml"))
    assert sources_file(Settings({"SOURCES_FILE": None})) == tmp_path / "env.toml"
    setting = Settings({"SOURCES_FILE": str(tmp_path / "setting.toml")})
    assert sources_file(setting) == tmp_path / "setting.toml"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            BASE.replace('"qutoutiao"', '"qutoutio"'),
            ["[sources.news]", "'spider'", "'qutoutio'", "known: feed, qutoutiao"],
            id="unknown-spider",
        ),
        pytest.param(
            BASE.replace('author = "趣头条"\n', ""),
            ["[sources.news]", "missing key 'author'"],
            id="missing-key",
        ),
        pytest.param(
            BASE.replace('spider = "qutoutiao"\n', ""),
            ["[sources.news]", "missing key 'spider'"],
            id="missing-spider",
        ),
        pytest.param(
            BASE.replace('cid = "1"', "cid = 1"),
            ["[sources.news]", "'args.cid'", "expected a string", 'cid = "1"'],
            id="argument-not-a-string",
        ),
        pytest.param(
            BASE + 'enabled = "yes"\n',
            ["[sources.news]", "'enabled'", "expected true or false", "'yes'"],
            id="enabled-not-a-boolean",
        ),
        pytest.param(
            BASE.replace('["新媒体", "趣头条", "分类"]', '"新媒体,趣头条,分类"'),
            ["[sources.news]", "'categories'", "expected a list"],
            id="categories-not-a-list",
        ),
        pytest.param(
            BASE.replace('["新媒体", "趣头条", "分类"]', '["新媒体", "趣头条"]'),
            ["[sources.news]", "'categories'", "three values", "got 2"],
            id="two-categories",
        ),
        pytest.param(
            BASE.replace('"分类"', '"分类,科技"'),
            ["[sources.news]", "'categories[2]'", "comma"],
            id="comma-in-a-category",
        ),
        pytest.param(
            BASE.replace('author = "趣头条"', 'author = "  "'),
            ["[sources.news]", "'author'", "must not be empty"],
            id="blank-author",
        ),
        pytest.param(
            BASE + "\n" + BASE.replace('"1"', '"2"'),
            ["source 'news' is defined twice", "line 7"],
            id="duplicate-name",
        ),
        pytest.param(
            BASE + 'spider = "feed"\n',
            ["key 'spider' is set twice in [sources.news]", "line 6"],
            id="duplicate-key",
        ),
        pytest.param(
            BASE + "categroies = []\n",
            ["[sources.news]", "unknown key 'categroies'"],
            id="unknown-key",
        ),
        pytest.param(
            BASE.replace('cid = "1"', 'pages = "zero"'),
            ["[sources.news]", "'args'", "pages='zero'", "whole number"],
            id="argument-the-spider-rejects",
        ),
        pytest.param(
            BASE.replace('cid = "1"', 'cdi = "7"'),
            ["[sources.news]", "'args'", "unknown spider argument 'cdi'"],
            id="argument-the-spider-does-not-take",
        ),
        pytest.param(
            BASE.replace('cid = "1"', 'author = "别人"'),
            ["[sources.news]", "'args.author'", "key of the source"],
            id="channel-in-args",
        ),
        pytest.param(
            BASE.replace("[sources.news]", '[sources."news today"]'),
            ["source name 'news today'", "letters, digits"],
            id="name-with-a-space",
        ),
        pytest.param(
            BASE.replace('author = "趣头条"', "author = 趣头条"),
            ["not valid TOML in [sources.news]", "line 5"],
            id="toml-syntax",
        ),
        pytest.param("", ["no [sources.NAME] tables"], id="empty-file"),
        pytest.param("[sources]\n", ["no sources"], id="no-sources"),
        pytest.param(
            '[sources.zaker]\nspider = "feed"\ncategories = ["新媒体", "ZAKER", "科技"]\n'
            'author = "ZAKER"\n',
            ["[sources.zaker]", "spider 'feed'", "url=", "route="],
            id="feed-without-url-or-route",
        ),
    ],
)
def test_each_kind_of_mistake_names_the_source_and_the_key(text: str, expected: list) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_sources(text, SPIDERS, origin="/etc/aggregator/sources.toml")
    message = str(raised.value)
    assert message.startswith("sources file /etc/aggregator/sources.toml: ")
    for part in expected:
        assert part in message


def test_unreadable_sources_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read it"):
        load_sources(tmp_path / "missing.toml", SPIDERS)


def test_disabled_sources_are_not_selected_and_only_skip_choose_among_enabled() -> None:
    text = GOOD + BASE + BASE.replace("news", "sport").replace('"1"', '"3"')
    sources = parse_sources(text, SPIDERS)
    assert [s.name for s in select_sources(sources)] == ["tech", "news", "sport"]
    assert [s.name for s in select_sources(sources, only=["sport", "tech"])] == ["tech", "sport"]
    assert [s.name for s in select_sources(sources, skip=["news"])] == ["tech", "sport"]
    assert [s.name for s in select_sources(sources, ["tech", "news"], ["tech"])] == ["news"]
    with pytest.raises(ConfigError, match=r"no source named 'nope'.*known: tech, hot"):
        select_sources(sources, only=["nope"])
    with pytest.raises(ConfigError, match=r"no source named 'teck'"):
        select_sources(sources, skip=["teck"])
    with pytest.raises(ConfigError, match=r"'hot' is disabled"):
        select_sources(sources, only=["hot"])


def test_source_names_are_comma_separated() -> None:
    assert parse_names("--only", "a, b,,c") == ["a", "b", "c"]
    assert parse_names("--only", None) == []
    with pytest.raises(ConfigError, match="--skip"):
        parse_names("--skip", " , ")
