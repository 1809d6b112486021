"""The tests' crawl launcher (tests/crawlproc.py) gives a crawl what a new `python -m scrapy`
would have: its arguments, environment, settings read afresh, exit status, output; and a
crawl through it is the crawl a new interpreter runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import crawlproc
import pytest
from conftest import ROOT, Crawler

from aggregator.devtools.replay import Reply

SCRAPY = [sys.executable, "-m", "scrapy"]
CATEGORIES = "categories=新媒体,ZAKER,channel"


@pytest.fixture(scope="module")
def launcher():
    """A launcher of this module's own (the crawl helpers share one per test process)."""
    own = crawlproc.Launcher()
    yield own
    own.stop()


def env(**more: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **more}


def test_each_child_reads_its_own_environment_into_the_settings(launcher):
    """The settings module reads AGGREGATOR_STATE_DIR when imported: were it loaded once in the
    launcher, or the environment not the command's, both runs would print the same."""
    cmd = [*SCRAPY, "settings", "--get", "STATE_DIR"]
    for value in ("/tmp/state-one", "/tmp/state-two"):
        result = launcher.run(cmd, cwd=ROOT, env=env(AGGREGATOR_STATE_DIR=value), timeout=60)
        assert (result.returncode, result.stdout, result.stderr) == (0, value + "\n", "")


def test_exit_status_and_both_streams_come_back(launcher):
    result = launcher.run([*SCRAPY, "crawl", "no-such-spider"], cwd=ROOT, env=env(), timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Spider not found: no-such-spider" in result.stderr
    assert result.args == [*SCRAPY, "crawl", "no-such-spider"]


def scrapy(crawler: Crawler, *args: str) -> list[str]:
    cmd = [*SCRAPY, *args]
    for name, value in crawler.settings().items():
        cmd += ["-s", f"{name}={value}"]
    return cmd


PROBE = """
import scrapy
from aggregator.cluster import queue


class Probe(scrapy.Spider):
    name = "probe"

    async def start(self):
        print("INCARNATION", queue.INCARNATION)
        return
        yield
"""


def test_the_projects_modules_are_imported_by_each_child(launcher, tmp_path):
    """A value a project module makes when imported is each process's own: lease ids are
    unique per process because of it (a worker restarted under its old id must not take over
    its previous life's leases, tests/test_cluster.py)."""
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE, encoding="utf-8")
    cmd = scrapy(Crawler(tmp_path, "http://127.0.0.1:9"), "runspider", str(probe))
    seen = set()
    for _ in range(2):
        result = launcher.run(cmd, cwd=ROOT, env=env(), timeout=60)
        assert result.returncode == 0, result.stderr
        (line,) = [x for x in result.stdout.splitlines() if x.startswith("INCARNATION")]
        seen.add(line)
    assert len(seen) == 2


def test_a_crawl_past_its_timeout_is_killed(launcher, replay, tmp_path):
    replay.set_reply("/slow.rss", Reply(body=b"<rss/>", delay=30))
    crawler = Crawler(tmp_path, replay.base_url)
    url = f"url={replay.base_url}/slow.rss"
    cmd = scrapy(crawler, "crawl", "feed", "-a", url, "-a", CATEGORIES, "-a", "author=x")
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        launcher.run(cmd, cwd=ROOT, env=env(), timeout=3)
    assert "Spider opened" in expired.value.stderr  # it was crawling, not starting
    assert "Spider closed" not in expired.value.stderr  # and did not get to the end


def _log_lines(stderr: str) -> list[str]:
    """The log without what differs between any two runs (times, ports, pids, ids)."""
    lines = []
    for line in stderr.splitlines():
        line = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", "", line)
        line = re.sub(r"\b[0-9a-f]{32}\b", "ID", line)  # remote control's job id
        line = re.sub(r"\d+(\.\d+)?", "N", line)
        lines.append(line)
    return lines


def test_a_launched_crawl_is_the_crawl_a_new_interpreter_runs(replay, tmp_path, monkeypatch):
    def crawl(name: str):
        crawler = Crawler(tmp_path / name, replay.base_url)
        # every entry dated: no post carries the time of its crawl
        return crawler.crawl("feed", f"url={replay.base_url}/news.atom", CATEGORIES, "author=x")

    launched = crawl("launched")
    monkeypatch.setenv(crawlproc.FRESH_ENV, "1")
    fresh = crawl("fresh")
    assert launched.returncode == fresh.returncode == 0, launched.stderr
    assert launched.posts() == fresh.posts() and len(fresh.posts()) == 3
    volatile = ("time", "elapsed", "memusage", "per_minute")
    assert {k: v for k, v in launched.stats.items() if not any(w in k for w in volatile)} == {
        k: v for k, v in fresh.stats.items() if not any(w in k for w in volatile)
    }
    assert _log_lines(launched.stderr) == _log_lines(fresh.stderr)
    assert launched.stdout == fresh.stdout
