"""S3 output against file output: the generated 2,000-article site (bench/sitegen.py) crawled by
`scrapy crawl qutoutiao` (a subprocess, as cron runs it) from a local ReplayServer, once to a
directory and once to a local S3 server (moto's standalone server, its own process), in one run.

Prints articles/s for both, the ratio S3/files (target >= 0.8: uploads run in worker threads,
so S3 should cost the crawl little) and the peak number of uploads in flight. Rates use the
crawl's own elapsed time (spider open to close, which includes waiting for the last uploads and
writing the manifest); wall time with process start-up is printed too. Files are written twice:
without fsync (the stricter comparison) and with it (OUTPUT_FSYNC's default). The CPU seconds
each crawl process used are printed as well: against a local source the crawl is CPU-bound, and
boto3's work for each upload shares the crawl process's interpreter lock.

Everything runs twice: with the source answering at once (flat out: the crawl, the replay
server and moto, all Python, share the machine's cores, so the ratio is mostly CPU per upload)
and with `--latency` (default 50 ms) per source answer, as a remote API answers.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402

from aggregator.devtools.replay import ReplayServer  # noqa: E402
from bench.crawlrun import crawl_site  # noqa: E402
from bench.sitegen import GeneratedSite, generate_site  # noqa: E402

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_REGION_NAME": "us-east-1",
}
BUCKET = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto's standalone server in its own process, so it does not share a GIL with the
    replay server that feeds the crawl."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, endpoint
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("moto server did not start") from None
            time.sleep(0.1)


def rate(stats: dict) -> float:
    return int(stats.get("aggregator/articles/new", 0)) / float(stats["elapsed_time_seconds"])


def describe(name: str, stats: dict, stored: int) -> str:
    written = int(stats.get("aggregator/articles/new", 0))
    return (
        f"{name:<14} {written} posts ({stored} stored) in {stats['elapsed_time_seconds']:6.2f} s "
        f"-> {rate(stats):4.0f} articles/s  (wall {stats['wall_seconds']:.2f} s, "
        f"crawl process CPU {stats['cpu_seconds']:.2f} s)"
    )


def count_objects(client: Any, prefix: str) -> int:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sum(page.get("KeyCount", 0) for page in pages)


def compare(
    site: GeneratedSite, workdir: Path, client: Any, endpoint: str, latency: float, uploads: int
) -> None:
    """Crawl `site` to files (without and with fsync) and to S3, with the source answering
    after `latency` seconds, and print the three rates and the ratio."""
    tag = f"{latency * 1000:.0f}ms"
    with ReplayServer(site.directory, latency=latency) as server:
        base = server.base_url
        files_dir, synced_dir = workdir / f"out-{tag}", workdir / f"out-fsync-{tag}"
        files = crawl_site(
            site, base, workdir, f"files-{tag}", OUTPUT_URI=str(files_dir), OUTPUT_FSYNC="0"
        )
        synced = crawl_site(site, base, workdir, f"fsync-{tag}", OUTPUT_URI=str(synced_dir))
        s3 = crawl_site(
            site,
            base,
            workdir,
            f"s3-{tag}",
            OUTPUT_URI=f"s3://{BUCKET}/{tag}",
            AWS_ENDPOINT_URL=endpoint,
            S3_MAX_UPLOADS=str(uploads),
            **CREDENTIALS,
        )
    objects = count_objects(client, f"{tag}/qutoutiao/")
    extra_cpu = (s3["cpu_seconds"] - files["cpu_seconds"]) / max(1, objects) * 1000
    print(f"source latency {latency * 1000:.0f} ms:")
    print(describe("files", files, len(list(files_dir.glob("*.md")))))
    print(describe("files + fsync", synced, len(list(synced_dir.glob("*.md")))))
    print(describe("s3 (moto)", s3, objects))
    print(
        f"  ratio S3/files: {rate(s3) / rate(files):.2f} (S3/files+fsync: "
        f"{rate(s3) / rate(synced):.2f}); target >= 0.8"
    )
    print(
        f"  peak uploads in flight: {s3.get('aggregator/s3/peak_in_flight', 0)} "
        f"(S3_MAX_UPLOADS={uploads}); manifests: {s3.get('aggregator/s3/manifests', 0)}; "
        f"crawl-process CPU per upload: {extra_cpu:.1f} ms more than a file write"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=2_000)
    parser.add_argument("--max-uploads", type=int, default=8, help="S3_MAX_UPLOADS")
    parser.add_argument("--latency", type=float, default=0.05, help="source seconds per answer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        site = generate_site(workdir / "site", args.articles)
        print(f"site: {site.articles} articles on {site.pages} listing pages, local replay server")
        moto, endpoint = start_moto()
        try:
            client = boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                region_name=CREDENTIALS["AWS_REGION_NAME"],
            )
            client.create_bucket(Bucket=BUCKET)
            for latency in (0.0, args.latency):
                compare(site, workdir, client, endpoint, latency, args.max_uploads)
        finally:
            moto.terminate()
            moto.wait(timeout=10)


if __name__ == "__main__":
    main()
