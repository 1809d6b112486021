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
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402

from aggregator.replay import ReplayServer  # noqa: E402
from bench.crawlrun import crawl_site  # noqa: E402
from bench.sitegen import generate_site  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=2_000)
    parser.add_argument("--max-uploads", type=int, default=8, help="S3_MAX_UPLOADS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        site = generate_site(workdir / "site", args.articles)
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
            with ReplayServer(site.directory) as server:
                base = server.base_url
                files = crawl_site(
                    site, base, workdir, "files", OUTPUT_URI=str(workdir / "out"), OUTPUT_FSYNC="0"
                )
                synced = crawl_site(
                    site, base, workdir, "fsync", OUTPUT_URI=str(workdir / "out-fsync")
                )
                s3 = crawl_site(
                    site,
                    base,
                    workdir,
                    "s3",
                    OUTPUT_URI=f"s3://{BUCKET}/blog",
                    AWS_ENDPOINT_URL=endpoint,
                    S3_MAX_UPLOADS=str(args.max_uploads),
                    **CREDENTIALS,
                )
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=BUCKET, Prefix="blog/qutoutiao/"
            )
            objects = sum(page.get("KeyCount", 0) for page in pages)
        finally:
            moto.terminate()
            moto.wait(timeout=10)
        files_written = len(list((workdir / "out").glob("*.md")))
        synced_written = len(list((workdir / "out-fsync").glob("*.md")))

    uploads = max(1, int(s3.get("aggregator/s3/uploaded", 0)))
    extra_cpu = (s3["cpu_seconds"] - files["cpu_seconds"]) / uploads * 1000
    print(f"site: {site.articles} articles on {site.pages} listing pages, local replay server")
    print(describe("files", files, files_written))
    print(describe("files + fsync", synced, synced_written))
    print(describe("s3 (moto)", s3, objects))
    print(
        f"ratio S3/files: {rate(s3) / rate(files):.2f} (S3/files+fsync: "
        f"{rate(s3) / rate(synced):.2f}); target >= 0.8"
    )
    print(
        f"peak uploads in flight: {s3.get('aggregator/s3/peak_in_flight', 0)} "
        f"(S3_MAX_UPLOADS={args.max_uploads}); manifests: {s3.get('aggregator/s3/manifests', 0)}; "
        f"crawl-process CPU per upload: {extra_cpu:.1f} ms more than a file write"
    )


if __name__ == "__main__":
    main()
