"""The full item pipeline against bare Scrapy: the generated 2,000-article 趣头条 site
(bench/sitegen.py) crawled by `scrapy crawl qutoutiao` from a local ReplayServer, once with the
project's pipelines (validate -> normalise -> neardup -> write) and once with
`ITEM_PIPELINES={}`, in one run, plus the normaliser on its own (bench/bench_normalize.py).

Prints articles/s for each crawl and the ratio full/bare (target >= 0.9), and the normaliser's
articles/s on one core (target >= 1,000/s for 10 KB articles). Both crawls run twice:

* flat out: the server answers at once, so the crawl is bound by the crawl process's CPU and
  the ratio is the pipeline's CPU cost per article against Scrapy's own (the strict figure);
* with `--latency` (default 50 ms) per answer, as a remote API answers; the project's default
  concurrency, AutoThrottle off in both.

Rates use the crawl's own elapsed time (spider open to close, so interpreter start-up is left
out; wall time and the crawl process's CPU seconds are printed too). Crawls alternate,
`--rounds` times each, and the best of each kind is compared, so one hiccup of a noisy machine
does not decide a ratio. The full pipeline writes with OUTPUT_FSYNC on, as deployed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregator.devtools.replay import ReplayServer
from bench.bench_normalize import TARGET_PER_SECOND, measure
from bench.crawlrun import crawl_site
from bench.sitegen import GeneratedSite, generate_site

TARGET_RATIO = 0.9


def rate(stats: dict) -> float:
    return int(stats.get("item_scraped_count", 0)) / float(stats["elapsed_time_seconds"])


def describe(name: str, stats: dict) -> str:
    return (
        f"  {name:<14} {int(stats.get('item_scraped_count', 0))} items in "
        f"{stats['elapsed_time_seconds']:6.2f} s -> {rate(stats):5.0f} articles/s  "
        f"(wall {stats['wall_seconds']:.2f} s, crawl process CPU {stats['cpu_seconds']:.2f} s)"
    )


def compare(site: GeneratedSite, workdir: Path, latency: float, rounds: int) -> float:
    """Crawl `site` bare and in full `rounds` times each; print the best of each, return the
    ratio full/bare."""
    full_runs: list[dict] = []
    bare_runs: list[dict] = []
    tag = f"{latency * 1000:.0f}ms"
    with ReplayServer(site.directory, latency=latency) as server:
        for round_ in range(rounds):
            name = f"{tag}-{round_}"
            bare_runs.append(
                crawl_site(site, server.base_url, workdir, f"bare-{name}", ITEM_PIPELINES="{}")
            )
            out = workdir / f"out-{name}"
            full_runs.append(
                crawl_site(site, server.base_url, workdir, f"full-{name}", OUTPUT_URI=str(out))
            )
            written = len(list(out.glob("*.md")))
            if written != site.articles:
                raise SystemExit(f"full crawl wrote {written} posts, expected {site.articles}")
    full = max(full_runs, key=rate)
    bare = max(bare_runs, key=rate)
    ratio = rate(full) / rate(bare)
    print(f"server latency {latency * 1000:.0f} ms (best of {rounds}):")
    print(describe("bare Scrapy", bare))
    print(describe("full pipeline", full))
    print(f"  ratio full/bare: {ratio:.2f} (target >= {TARGET_RATIO})")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=2, help="crawls of each kind per regime")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per answer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        site = generate_site(workdir / "site", args.articles)
        print(f"site: {site.articles} articles on {site.pages} listing pages, local replay server")
        compare(site, workdir, 0.0, args.rounds)
        compare(site, workdir, args.latency, args.rounds)
    normaliser = measure()
    print(
        f"normaliser alone: {normaliser.per_second:,.0f} articles/s on one core "
        f"({normaliser.kilobytes / normaliser.articles:.1f} KB articles; "
        f"target >= {TARGET_PER_SECOND:,}/s)"
    )


if __name__ == "__main__":
    main()
