"""Image mirroring against no mirroring: a generated site (bench/sitegen.py) with three images
per article, served by a local ReplayServer that answers every request after `--latency`
(default 50 ms), crawled by `scrapy crawl qutoutiao` (a subprocess, as cron runs it), in one run:

1. without mirroring (IMAGES_MIRROR_URI unset): the reference rate;
2. mirroring into an empty directory: the first-run cost (every image is downloaded, sniffed
   and written);
3. mirroring with a fresh state directory into the store run 2 filled: every article is new
   but its images are stored already, so each costs a look-up and no download
   (target >= 0.8 of run 1's articles/s);
4. run 3 again on its own state (a re-run: nothing new): image requests (target zero).

Images are served from `localhost` and the API from `127.0.0.1`, the same server under two host
names, so that images get a downloader slot of their own as a CDN host would. Runs 1 and 3
alternate `--rounds` times and the best of each is compared. Rates are posts written per second
of the crawl's own elapsed time; image requests are counted at the server.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregator.devtools.replay import ReplayServer
from bench.crawlrun import crawl_site
from bench.sitegen import generate_site

TARGET_RATIO = 0.8
IMAGES_PER_ARTICLE = 3


def rate(stats: dict) -> float:
    return int(stats.get("aggregator/articles/new", 0)) / float(stats["elapsed_time_seconds"])


def describe(name: str, stats: dict, image_requests: int) -> str:
    return (
        f"  {name:<30} {int(stats.get('aggregator/articles/new', 0)):5} posts in "
        f"{stats['elapsed_time_seconds']:6.2f} s -> {rate(stats):5.0f} articles/s; "
        f"{image_requests:5} image requests, {int(stats.get('aggregator/images/mirrored', 0)):5} "
        f"mirrored, {int(stats.get('aggregator/images/already_stored', 0)):5} already stored  "
        f"(wall {stats['wall_seconds']:.1f} s, CPU {stats['cpu_seconds']:.1f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=500)
    parser.add_argument("--image-bytes", type=int, default=20_000, help="size of each image")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per answer")
    parser.add_argument("--rounds", type=int, default=2, help="runs 1 and 3 each, best kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        site_dir = work / "site"
        site_dir.mkdir()
        with ReplayServer(site_dir, latency=args.latency) as server:
            site = generate_site(
                site_dir,
                args.articles,
                images_per_article=IMAGES_PER_ARTICLE,
                image_base=server.base_url.replace("127.0.0.1", "localhost") + "/img",
                image_bytes=args.image_bytes,
            )
            images = site.articles * IMAGES_PER_ARTICLE
            print(
                f"site: {site.articles} articles, {images} images of {args.image_bytes:,} bytes, "
                f"{args.latency * 1000:.0f} ms per answer"
            )
            base, store = server.base_url, work / "mirror"
            mirror = {"IMAGES_MIRROR_URI": str(store), "IMAGES_MIRROR_BASE_URL": "/images/"}

            def run(name: str, **settings: str) -> tuple[dict, int]:
                server.reset()
                out = work / f"out-{name}"
                stats = crawl_site(site, base, work, name, OUTPUT_URI=str(out), **settings)
                return stats, server.hits("/img/")

            first, first_requests = run("mirror-first-run", **mirror)
            plain_runs, stored_runs = [], []
            for round_ in range(args.rounds):
                plain_runs.append(run(f"plain-{round_}"))
                stored_runs.append(run(f"mirror-stored-{round_}", **mirror))
            rerun, rerun_requests = run(f"mirror-stored-{args.rounds - 1}", **mirror)

    plain, plain_requests = max(plain_runs, key=lambda r: rate(r[0]))
    stored, stored_requests = max(stored_runs, key=lambda r: rate(r[0]))
    print(f"best of {args.rounds} for runs 1 and 3:")
    print(describe("1 no mirroring", plain, plain_requests))
    print(describe("2 mirroring, first run", first, first_requests))
    print(describe("3 mirroring, images stored", stored, stored_requests))
    print(describe("4 re-run of 3", rerun, rerun_requests))
    print(
        f"  images stored / no mirroring: {rate(stored) / rate(plain):.2f} "
        f"(target >= {TARGET_RATIO}); first run / no mirroring: "
        f"{rate(first) / rate(plain):.2f}; image requests on the re-run: {rerun_requests} "
        "(target 0)"
    )


if __name__ == "__main__":
    main()
