"""`scrapy demo` shows the whole pipeline on bundled data with no network."""

from __future__ import annotations

from pathlib import Path

from aggregator.render.post import parse_front_matter

EXPECTED = Path(__file__).resolve().parent / "fixtures" / "qutoutiao" / "expected" / "58837411.md"


def test_demo_writes_the_sample_posts_and_the_reference_post_exactly(crawler):
    result = crawler.command("demo")
    assert result.returncode == 0, result.stderr
    posts = result.posts()
    assert sorted(posts) == [
        "qutoutiao-58837411.md",
        "qutoutiao-90000001.md",
        "qutoutiao-90000002.md",
        "qutoutiao-90000003.md",
    ]
    assert posts["qutoutiao-58837411.md"] == EXPECTED.read_bytes()
    hostile = posts["qutoutiao-90000002.md"].decode()
    assert "<script" not in hostile and "onerror" not in hostile and "javascript:" not in hostile
    cover_only = parse_front_matter(posts["qutoutiao-90000003.md"].decode())
    assert cover_only["headimg"].endswith("?http://img.example.com/cover-90000003.jpg")
    assert '"aggregator/articles/new": 4' in result.stdout


def test_demo_runs_again_from_a_fresh_demo_store(crawler):
    crawler.command("demo")
    again = crawler.command("demo")
    assert again.returncode == 0, again.stderr
    assert '"aggregator/articles/new": 4' in again.stdout
    assert not (crawler.state / "dedupe.sqlite3").exists()  # the real store is never touched
