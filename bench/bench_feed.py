"""The feed spider end to end: a generated 2,000-entry RSS 2.0 feed crawled by `scrapy crawl
feed` (a subprocess, as cron runs it) from a local ReplayServer, through validate → normalise →
dedupe → write. Three runs share one state directory:

1. first run: every entry parsed, normalised and written (entries/s);
2. re-run with the feed unchanged: the conditional GET gets a 304 (requests, seconds);
3. re-run with the feed changed by one byte: a 200, parsed again, every entry already
   published (what the 304 saves).

Input is seeded so runs compare. Figures are printed, and the 304 re-run is compared with the
first run and with the changed-feed re-run.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator.devtools.replay import ReplayServer  # noqa: E402

HANZI = [chr(code) for code in range(0x4E00, 0x4E00 + 2_000)]
SETTINGS = {
    "AUTOTHROTTLE_ENABLED": "False",
    "LOG_LEVEL": "WARNING",
    "OUTPUT_FSYNC": "False",  # measure the pipeline, not the disk
}


def _paragraph(rng: random.Random) -> str:
    return "<p>" + "".join(rng.choice(HANZI) for _ in range(rng.randint(60, 200))) + "。</p>"


def make_feed(entries: int, seed: int = 5) -> str:
    """An RSSHub-style feed: CDATA bodies of ~2 KB with an image each, every other entry with
    content:encoded, pubDates one minute apart."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    items = []
    for index in range(entries):
        body = "".join(_paragraph(rng) for _ in range(rng.randint(3, 8)))
        image = f'<p><img src="http://img.example.cn/{index}/{rng.getrandbits(48):012x}.jpg"></p>'
        body = body[: len(body) // 2] + image + body[len(body) // 2 :]
        link = f"https://news.example.com/article/{index:06d}.html"
        text = "content:encoded" if index % 2 else "description"
        title = f"第{index}条：" + "".join(rng.choice(HANZI) for _ in range(16))
        items.append(
            "<item>"
            f"<title><![CDATA[{title}]]></title>"
            f"<{text}><![CDATA[{body}]]></{text}>"
            f"<pubDate>{format_datetime(start + timedelta(minutes=index), usegmt=True)}</pubDate>"
            f'<guid isPermaLink="false">{link}</guid><link>{link}</link>'
            "</item>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">'
        "<channel><title>bench</title><link>https://news.example.com/</link>"
        "<description>generated</description>" + "".join(items) + "</channel></rss>\n"
    )


def crawl(server: ReplayServer, workdir: Path, run: int) -> tuple[float, dict]:
    stats_file = workdir / f"stats-{run}.json"
    settings = {
        **SETTINGS,
        "STATE_DIR": str(workdir / "state"),
        "OUTPUT_URI": str(workdir / "output"),
        "STATS_FILE": str(stats_file),
    }
    cmd = [sys.executable, "-m", "scrapy", "crawl", "feed"]
    cmd += ["-a", f"url={server.base_url}/bench.rss", "-a", "categories=新媒体,Bench,feed"]
    cmd += ["-a", "author=Bench"]
    for name, value in settings.items():
        cmd += ["-s", f"{name}={value}"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"crawl {run} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, json.loads(stats_file.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        feed_dir = workdir / "feeds"
        feed_dir.mkdir()
        feed = feed_dir / "bench.rss"
        feed.write_text(make_feed(args.entries), encoding="utf-8")
        size = feed.stat().st_size
        with ReplayServer(feed_dir) as server:
            first_s, first = crawl(server, workdir, 1)
            written = first.get("aggregator/articles/new", 0)
            server.reset()
            cached_s, cached = crawl(server, workdir, 2)
            cached_requests = len(server.requests)
            feed.write_text(feed.read_text(encoding="utf-8") + " ", encoding="utf-8")
            server.reset()
            changed_s, changed = crawl(server, workdir, 3)
            changed_requests = len(server.requests)
        posts = len(list((workdir / "output").glob("*.md")))

    crawl_s = float(first.get("elapsed_time_seconds", first_s))
    print(f"feed: {args.entries} entries, {size / 1e6:.1f} MB")
    print(
        f"first run:    {written} posts written ({posts} files) in {first_s:.2f} s wall, "
        f"{crawl_s:.2f} s crawl -> {written / first_s:.0f} entries/s wall, "
        f"{written / crawl_s:.0f} entries/s crawl"
    )
    print(
        f"304 re-run:   {cached_requests} request(s), {cached_s:.2f} s wall, "
        f"{float(cached.get('elapsed_time_seconds', 0)):.2f} s crawl, "
        f"not_modified={cached.get('aggregator/feeds/not_modified', 0)}, "
        f"new={cached.get('aggregator/articles/new', 0)}"
    )
    print(
        f"200 re-run:   {changed_requests} request(s), {changed_s:.2f} s wall, "
        f"{float(changed.get('elapsed_time_seconds', 0)):.2f} s crawl, "
        f"{changed.get('aggregator/articles/duplicate', 0)} entries skipped as published, "
        f"new={changed.get('aggregator/articles/new', 0)}"
    )
    print(
        f"ratios: 304 re-run / first run = {cached_s / first_s:.2f}; "
        f"304 re-run / changed-feed re-run = {cached_s / changed_s:.2f}"
    )


if __name__ == "__main__":
    main()
