"""`scrapy crawlall` (and the lock `scrapy crawl` shares with it), run as cron runs it: real
subprocesses crawling the replay server over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import crawlproc
import pytest

from aggregator.devtools.replay import Reply
from aggregator.errors import ConfigError
from aggregator.ops.lock import OWNER_FILE, LockHeld, RunLock
from aggregator.render.post import parse_front_matter

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(__file__).resolve().parent / "fixtures" / "site"

TECH = ("新媒体", "趣头条", "科技")
HOT = ("新媒体", "趣头条", "热点")

# hot: cid 15 (articles 1501, 1502); tech: cid 10 (1001..1006 on three pages);
# odd: cid 11, disabled.
SOURCES = """
[sources.hot]
spider = "qutoutiao"
args = { cid = "15" }
categories = ["新媒体", "趣头条", "热点"]
author = "趣头条"

[sources.tech]
spider = "qutoutiao"
args = { cid = "10", pages = "5" }
categories = ["新媒体", "趣头条", "科技"]
author = "趣头条科技"

[sources.odd]
spider = "qutoutiao"
args = { cid = "11" }
categories = ["新媒体", "趣头条", "怪"]
author = "趣头条"
enabled = false
"""
HOT_POSTS = ["qutoutiao-1501.md", "qutoutiao-1502.md"]
TECH_POSTS = [f"qutoutiao-{i}.md" for i in range(1001, 1007)]


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(SOURCES, encoding="utf-8")
    return path


def channel(post: bytes) -> tuple[tuple[str, ...], str]:
    front = parse_front_matter(post.decode("utf-8"))
    return tuple(front["categories"]), front["author"]


def last_run(crawler) -> dict:
    return json.loads((crawler.state / "last-run.json").read_text(encoding="utf-8"))


def by_name(report: dict) -> dict[str, dict]:
    return {source["name"]: source for source in report["sources"]}


def start(crawler, *args: str, **settings: str) -> subprocess.Popen:
    """A crawlall in the background (the fixture's `command` waits for its run)."""
    cmd = [sys.executable, "-m", "scrapy", *args]
    for name, value in crawler.settings(**settings).items():
        cmd += ["-s", f"{name}={value}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return crawlproc.popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def slow_listing(replay, cid: str, delay: float) -> None:
    """Answer the cid's first listing page as usual, `delay` seconds late."""
    body = (SITE / f"outList-cid-{cid}-page-1.json").read_bytes()
    body = body.replace(b"__BASE__", replay.base_url.encode())
    target = f"/content/outList?cid={cid}&tn=1&page=1&limit=10"
    replay.set_reply(target, Reply(body=body, content_type="application/json", delay=delay))


# --- one run, several sources --------------------------------------------------------------
def test_every_enabled_source_is_crawled_with_its_own_channel(crawler, replay, sources):
    result = crawler.command("crawlall", env={"AGGREGATOR_SOURCES": str(sources)})
    assert result.returncode == 0, result.stderr
    posts = result.posts()
    assert sorted(posts) == sorted(HOT_POSTS + TECH_POSTS)
    for name in HOT_POSTS:
        assert channel(posts[name]) == (HOT, "趣头条")
    for name in TECH_POSTS:
        assert channel(posts[name]) == (TECH, "趣头条科技")
    assert replay.hits("/content/outList?cid=11") == 0  # odd is disabled

    report = last_run(crawler)
    assert report["status"] == "ok" and report["exit_status"] == 0
    assert report["sources_file"] == str(sources)
    assert report["started"] <= report["finished"]
    hot, tech = by_name(report)["hot"], by_name(report)["tech"]
    assert [s["name"] for s in report["sources"]] == ["hot", "tech"]
    assert hot["status"] == tech["status"] == "ok"
    assert hot["listings"] == {"pages": 1, "failed": 0}
    assert tech["listings"] == {"pages": 3, "failed": 0}
    assert hot["articles"] == {"new": 2, "already_published": 0, "dropped": 0, "failed": 0}
    assert tech["articles"] == {"new": 6, "already_published": 0, "dropped": 0, "failed": 0}
    assert hot["elapsed_seconds"] > 0 and tech["elapsed_seconds"] > 0

    table = result.stdout.splitlines()
    assert table[0].split()[:3] == ["source", "status", "pages"]
    rows = {line.split()[0]: line.split() for line in table if line.split()}
    assert rows["hot"][1:8] == ["ok", "1", "0", "2", "0", "0", "0"]
    assert rows["tech"][1:8] == ["ok", "3", "0", "6", "0", "0", "0"]
    assert rows["total"][1:8] == ["ok", "4", "0", "8", "0", "0", "0"]
    assert "odd" not in rows


def test_only_and_skip_choose_sources_and_the_setting_wins_over_the_environment(
    crawler, replay, sources, tmp_path
):
    broken = tmp_path / "broken.toml"
    broken.write_text("this is not TOML\n", encoding="utf-8")
    only = crawler.command(
        "crawlall", "--only", "tech", env={"AGGREGATOR_SOURCES": str(broken)},
        SOURCES_FILE=str(sources),
    )  # fmt: skip
    assert only.returncode == 0, only.stderr
    assert sorted(only.posts()) == TECH_POSTS
    assert replay.hits("/content/outList?cid=15") == 0
    assert [s["name"] for s in last_run(crawler)["sources"]] == ["tech"]

    skip = crawler.command("crawlall", "--skip", "tech", SOURCES_FILE=str(sources))
    assert skip.returncode == 0, skip.stderr
    assert sorted(skip.posts()) == sorted(HOT_POSTS + TECH_POSTS)
    assert replay.hits("/content/outList?cid=15") == 1
    assert replay.hits("/content/outList?cid=10&tn=1&page=1&") == 1  # --only's run, not this
    assert [s["name"] for s in last_run(crawler)["sources"]] == ["hot"]


# --- configuration errors ------------------------------------------------------------------
BROKEN_FILES = {
    "unknown-spider": (SOURCES.replace('spider = "qutoutiao"', 'spider = "qutoutio"', 1), "hot"),
    "missing-key": (SOURCES.replace('author = "趣头条科技"\n', ""), "missing key 'author'"),
    "wrong-type": (SOURCES.replace('pages = "5"', "pages = 5"), "'args.pages'"),
    "duplicate-name": (SOURCES + SOURCES[SOURCES.index("[sources.tech]") :], "'tech'"),
    "bad-spider-argument": (SOURCES.replace('pages = "5"', 'pages = "0"'), "pages='0'"),
}


@pytest.mark.parametrize("kind", [*BROKEN_FILES, "unknown-only-name"])
def test_a_configuration_error_exits_2_and_crawls_nothing(crawler, replay, sources, kind):
    args = ["crawlall"]
    if kind == "unknown-only-name":
        args += ["--only", "tech,sport"]
        expected = "no source named 'sport'"
    else:
        text, expected = BROKEN_FILES[kind]
        sources.write_text(text, encoding="utf-8")
    result = crawler.command(*args, env={"AGGREGATOR_SOURCES": str(sources)})
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and str(sources) in result.stderr
    assert replay.hits("/") == 0
    assert result.posts() == {}
    report = last_run(crawler)  # monitoring sees the broken run too
    assert report["status"] == "config_error" and report["exit_status"] == 2
    assert expected in report["error"] and report["sources"] == []


# --- failures ------------------------------------------------------------------------------
# A source whose crawl cannot start (its spider rejects a setting when it is built).
UNSTARTABLE = """
[sources.broken]
spider = "unstartable"
categories = ["新媒体", "坏", "坏"]
author = "坏"
"""
# Where the unstartable spider lives; every command reading a file that names it needs these.
EXTRA_SPIDERS = {
    "env": {"PYTHONPATH": str(Path(__file__).resolve().parent / "fixtures" / "extra_spiders")},
    "SPIDER_MODULES": "aggregator.spiders,broken_spiders",
}


def test_a_failed_article_exits_1_the_next_source_still_runs_and_retries_keep_the_channel(
    crawler, replay, sources
):
    sources.write_text(UNSTARTABLE + SOURCES, encoding="utf-8")
    replay.fail("/detail_json/1501.json", status=500)
    first = crawler.command("crawlall", SOURCES_FILE=str(sources), **EXTRA_SPIDERS)
    assert first.returncode == 1
    assert sorted(first.posts()) == sorted(["qutoutiao-1502.md", *TECH_POSTS])
    assert replay.hits("/detail_json/1501.json") == 2  # hot's try and retry; tech leaves it
    report = last_run(crawler)
    assert report["status"] == "failed" and report["exit_status"] == 1
    hot, tech = by_name(report)["hot"], by_name(report)["tech"]
    assert hot["status"] == "failed"
    assert hot["articles"] == {"new": 1, "already_published": 0, "dropped": 0, "failed": 1}
    assert tech["status"] == "ok" and tech["articles"]["new"] == 6
    broken = by_name(report)["broken"]
    assert broken["status"] == "error" and "cannot start" in broken["error"]
    rows = {line.split()[0]: line.split() for line in first.stdout.splitlines() if line.split()}
    assert rows["hot"][1] == "failed" and rows["hot"][7] == "1"
    assert rows["total"][1] == "failed"

    replay.reset()  # the article's source is back: hot retries it, as a 热点 post
    second = crawler.command(
        "crawlall", "--skip", "broken", SOURCES_FILE=str(sources), **EXTRA_SPIDERS
    )
    assert second.returncode == 0, second.stderr
    assert replay.hits("/detail_json/1501.json") == 1
    assert channel(second.posts()["qutoutiao-1501.md"]) == (HOT, "趣头条")
    assert by_name(last_run(crawler))["tech"]["articles"]["already_published"] == 2


# --- one run at a time ---------------------------------------------------------------------
def test_a_second_crawlall_exits_75_while_the_first_finishes_normally(
    crawler, replay, sources, tmp_path
):
    slow_listing(replay, "15", delay=1.5)
    log = tmp_path / "first.log"
    first = start(
        crawler, "crawlall", SOURCES_FILE=str(sources), LOG_FILE=str(log), LOGSTATS_INTERVAL="0.3"
    )
    owner = crawler.state / OWNER_FILE
    wait_for(owner.exists, first)
    # Hold the first run mid-crawl while the second tries: no race on how long either takes.
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = crawler.command("crawlall", SOURCES_FILE=str(sources))
    finally:
        os.kill(first.pid, signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=60)

    assert second.returncode == 75, second.stderr
    assert f"pid {first.pid}" in second.stderr and "scrapy crawlall" in second.stderr
    assert second.stdout == ""

    assert first.returncode == 0, log.read_text(encoding="utf-8")
    assert sorted(crawler.output.glob("*.md")) == sorted(
        crawler.output / name for name in HOT_POSTS + TECH_POSTS
    )
    report = last_run(crawler)
    assert report["pid"] == first.pid and report["status"] == "ok"
    assert replay.hits("/content/outList?cid=15") == 1  # the second run crawled nothing
    assert not owner.exists()  # the first run removed its record when it let go
    assert "hot" in stdout and "tech" in stdout  # the summary table
    # LOG_FILE takes the log, LogStats reports progress at LOGSTATS_INTERVAL.
    logged = log.read_text(encoding="utf-8")
    assert "Source hot: crawling" in logged and "Source hot" not in stderr
    assert logged.count("[scrapy.extensions.logstats] INFO: Crawled") >= 3


def test_a_lock_left_by_a_killed_run_does_not_block_the_next(crawler, replay, sources):
    slow_listing(replay, "15", delay=2)
    killed = start(crawler, "crawlall", SOURCES_FILE=str(sources))
    owner = crawler.state / OWNER_FILE
    wait_for(owner.exists, killed)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=30)
    assert json.loads(owner.read_text())["pid"] == killed.pid  # its record is left behind

    replay.reset()
    result = crawler.command("crawlall", SOURCES_FILE=str(sources))
    assert result.returncode == 0, result.stderr
    assert sorted(result.posts()) == sorted(HOT_POSTS + TECH_POSTS)
    assert last_run(crawler)["status"] == "ok"
    assert not owner.exists()


def test_scrapy_crawl_takes_the_same_lock(crawler, replay):
    with RunLock(crawler.state, "a test holding the lock"):
        result = crawler.crawl("qutoutiao", "cid=15")
    assert result.returncode == 75
    assert f"pid {os.getpid()}" in result.stderr and "a test holding the lock" in result.stderr
    assert replay.hits("/") == 0


def test_scrapy_crawl_takes_categories_and_author_like_a_source(crawler, replay):
    result = crawler.crawl(
        "qutoutiao", "cid=15", "categories=新媒体,趣头条,科技", "author=趣头条科技"
    )
    assert result.returncode == 0, result.stderr
    posts = result.posts()
    assert sorted(posts) == HOT_POSTS
    assert {channel(post) for post in posts.values()} == {(TECH, "趣头条科技")}
    assert not (crawler.state / "last-run.json").exists()  # that file is crawlall's


def test_run_lock_names_its_holder_and_an_unusable_state_dir_is_a_config_error(tmp_path):
    state = tmp_path / "state"
    with RunLock(state, "first holder"):
        with pytest.raises(LockHeld) as held:
            RunLock(state, "second").acquire()
        assert held.value.holder["pid"] == os.getpid()
        assert "first holder" in str(held.value) and str(state / "run.lock") in str(held.value)
    assert not (state / OWNER_FILE).exists()
    with RunLock(state, "second"):  # free again once released
        pass

    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"STATE_DIR=.*file/state.*run lock"):
        RunLock(tmp_path / "file" / "state", "third").acquire()


def test_unusable_output_setting_exits_2_and_crawls_nothing(crawler, replay, sources):
    result = crawler.command(
        "crawlall", env={"AGGREGATOR_SOURCES": str(sources)}, OUTPUT_URI="ftp://host/posts"
    )
    assert result.returncode == 2, result.stderr
    assert "no storage for scheme 'ftp'" in result.stderr
    assert replay.hits("/") == 0
    assert last_run(crawler)["status"] == "config_error"


def test_bad_post_timezone_exits_2_and_crawls_nothing(crawler, replay, sources):
    result = crawler.command(
        "crawlall", env={"AGGREGATOR_SOURCES": str(sources)}, POST_TIMEZONE="Mars/Olympus"
    )
    assert result.returncode == 2, result.stderr
    assert "POST_TIMEZONE='Mars/Olympus'" in result.stderr
    assert replay.hits("/") == 0
    assert last_run(crawler)["status"] == "config_error"


def test_feed_source_with_unusable_rsshub_base_exits_2_naming_the_source(crawler, replay, sources):
    sources.write_text(
        SOURCES
        + '\n[sources.zaker]\nspider = "feed"\nargs = { route = "/zaker/channel/13" }\n'
        + 'categories = ["新媒体", "ZAKER", "channel"]\nauthor = "ZAKER"\n',
        encoding="utf-8",
    )
    result = crawler.command(
        "crawlall", env={"AGGREGATOR_SOURCES": str(sources)}, RSSHUB_BASE="ftp://nowhere"
    )
    assert result.returncode == 2, result.stderr
    assert "source 'zaker'" in result.stderr and "RSSHUB_BASE" in result.stderr
    assert replay.hits("/") == 0
