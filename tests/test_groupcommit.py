"""Kill-and-resume with group commit: a real `scrapy crawl` (file output, shipped batching, each
OUTPUT_SYNC) SIGKILLed at several moments of its writing. Whatever the moment, every article marked
published has its complete post, no partial or temporary file is visible as a post, and the
next run completes the rest, byte for byte what an uninterrupted crawl writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TEST_SETTINGS
from statereader import StateReader

from aggregator.devtools.replay import ReplayServer

sys.path.insert(0, str(ROOT / "bench"))
from sitegen import generate_site

ARTICLES = 60
# One listing page: the next run follows a listing's next page only while a page shows something
# unpublished (README, The pipeline), so with several pages the articles of pages the killed
# crawl never reached would wait for a later run.
PER_PAGE = ARTICLES
# Entries (posts or their temporary files) in the output directory when the crawl is killed:
# as the first batch is being staged, early in the crawl, past half of it.
KILL_AT = (1, 12, 35)
LEASE = 1  # seconds: a killed crawl's claims must lapse before the next run may take them


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("groupcommit")
    generated = generate_site(root / "site", ARTICLES, cid="910", per_page=PER_PAGE)
    # a little latency, as a remote API has: the crawl's writes spread over a second or more
    with ReplayServer([generated.directory], latency=0.02) as server:
        yield generated, server


def crawl_cmd(generated, server, workdir: Path) -> list[str]:
    settings = {
        **TEST_SETTINGS,
        "LOG_LEVEL": "WARNING",
        "QUTOUTIAO_API_BASE": server.base_url,
        "STATE_DIR": str(workdir / "state"),
        "OUTPUT_URI": str(workdir / "out"),
        "STATE_CLAIM_LEASE": str(LEASE),
    }
    cmd = [sys.executable, "-m", "scrapy", "crawl", "qutoutiao"]
    cmd += ["-a", "cid=910", "-a", f"pages={generated.pages}", "-a", f"limit={PER_PAGE}"]
    for name, value in settings.items():
        cmd += ["-s", f"{name}={value}"]
    return cmd


def run_to_end(generated, server, workdir: Path) -> None:
    proc = subprocess.run(
        crawl_cmd(generated, server, workdir), cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def keys_of(generated) -> list[str]:
    return [f"qutoutiao-{article_id}" for article_id in generated.ids]


@pytest.fixture(scope="module")
def reference(site, tmp_path_factory) -> dict[str, bytes]:
    """The posts an uninterrupted crawl writes."""
    generated, server = site
    workdir = tmp_path_factory.mktemp("reference")
    run_to_end(generated, server, workdir)
    posts = {p.name: p.read_bytes() for p in (workdir / "out").glob("*.md")}
    assert sorted(posts) == sorted(f"{key}.md" for key in keys_of(generated))
    return posts


def kill_when(proc: subprocess.Popen, out: Path, entries: int) -> None:
    """SIGKILL the crawl as soon as `out` holds `entries` names (posts or temporary files)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if len(os.listdir(out)) >= entries:
                break
        except FileNotFoundError:
            pass
        assert proc.poll() is None, "the crawl ended before the moment it was to be killed"
        time.sleep(0.002)
    else:
        pytest.fail(f"{out} never held {entries} entries")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.parametrize("sync", ["fsync", "syncfs"])
@pytest.mark.parametrize("entries", KILL_AT)
def test_a_crawl_killed_while_writing_loses_no_marked_post_and_the_next_run_completes_it(
    site, reference, tmp_path, entries, sync
):
    generated, server = site
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*crawl_cmd(generated, server, tmp_path), "-s", f"OUTPUT_SYNC={sync}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        kill_when(proc, out, entries)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    state = StateReader(tmp_path / "state" / "dedupe.sqlite3")
    try:
        marked = state.published_among(keys_of(generated))
    finally:
        state.close()
    visible = {p.name: p.read_bytes() for p in out.glob("*.md")}
    # every post marked published is there, complete
    assert {f"{key}.md" for key in marked} <= set(visible)
    # whatever looks like a post is a whole one; anything else is a hidden temporary file
    assert all(data == reference[name] for name, data in visible.items())
    others = [name for name in os.listdir(out) if name not in visible]
    assert all(name.startswith(".") and name.endswith(".tmp") for name in others), others
    assert len(marked) < ARTICLES  # killed before the end: there is a rest to complete

    time.sleep(LEASE + 0.5)  # the killed crawl's claims lapse
    run_to_end(generated, server, tmp_path)
    assert {p.name: p.read_bytes() for p in out.glob("*.md")} == reference
    state = StateReader(tmp_path / "state" / "dedupe.sqlite3")
    try:
        assert state.published_among(keys_of(generated)) == set(keys_of(generated))
    finally:
        state.close()


def test_under_a_reactor_without_asyncio_each_post_is_written_alone(crawler):
    """Group commit's timers need the asyncio loop; with another reactor the pipeline writes
    each post on its own, as before, and closes cleanly."""
    result = crawler.crawl(
        "qutoutiao", "cid=15", TWISTED_REACTOR="twisted.internet.epollreactor.EPollReactor"
    )
    assert result.returncode == 0, result.stderr
    assert "ERROR" not in result.stderr
    assert result.stat("articles/new") == 2 and len(result.posts()) == 2
