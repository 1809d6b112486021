"""CPU per S3 upload in the uploading thread: boto3 as botocore configures it by default, the boto3
client the S3 storage builds (`build_client`: no per-call parameter validation, no `Expect:
100-continue`; `S3_CLIENT=boto3`) and what the storage ships (`connect_objects`: ObjectCalls,
`S3_CLIENT=lean`), the same PutObject (a ~2.5 KB post, our metadata, ChecksumSHA256, IfNoneMatch)
against a local moto server in its own process. Rounds alternate the clients; min and median per
upload are printed (thread CPU time, time.thread_time), then where the CPU of the boto3 client and
of the shipped one goes (cProfile, by stage; the profiler's own overhead inflates every figure
alike).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402

from aggregator.storage import PostRecord  # noqa: E402
from aggregator.storage.s3.client import build_client, connect_objects  # noqa: E402
from aggregator.storage.s3.config import S3Config  # noqa: E402
from aggregator.storage.s3.objects import S3Uploader  # noqa: E402
from bench.bench_s3 import BUCKET, CREDENTIALS, start_moto  # noqa: E402

POST = ("第1篇：" + "涵养源头活水夯实民生底盘" * 60).encode()  # ~2.5 KB

# cumulative time of these functions (file name, function), per upload, in the profiles
STAGES = {
    "boto3 (S3_CLIENT=boto3)": {
        "SigV4 signing": ("signers.py", "sign"),
        "event hooks (all handlers, signing included)": ("hooks.py", "emit"),
        "endpoint ruleset resolution": ("client.py", "_resolve_endpoint_ruleset"),
        "request serialisation": ("client.py", "_convert_to_request_dict"),
        "HTTP send and receive (urllib3)": ("httpsession.py", "send"),
        "response parsing": ("parsers.py", "parse"),
    },
    "as shipped (lean)": {
        "SigV4 signing (sigv4.py)": ("sigv4.py", "sign"),
        "connect (moto closes every connection)": ("http1.py", "_connect"),
        "write the request (http1.py)": ("http1.py", "_request"),
        "read the answer (http1.py, httptools)": ("http1.py", "_read"),
    },
}
CLIENTS = ("botocore defaults", "boto3 (S3_CLIENT=boto3)", "as shipped (lean)")


def record(number: int) -> PostRecord:
    return PostRecord(
        key=f"qutoutiao-{number}",
        site="qutoutiao",
        title="标题",
        url=f"http://example.com/{number}.html",
        published=datetime(2024, 5, 6, tzinfo=UTC),
        data=POST,
    )


def default_client(endpoint: str) -> Any:
    from botocore.config import Config

    return boto3.session.Session(
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_REGION_NAME"],
    ).client(
        "s3",
        endpoint_url=endpoint,
        config=Config(retries={"mode": "standard", "total_max_attempts": 5}),
    )


def profile_stages(
    storage: S3Uploader, name: str, stages: dict[str, tuple[str, str]], numbers: Any, uploads: int
) -> None:
    profile = cProfile.Profile(time.thread_time)
    profile.enable()
    for _ in range(uploads):
        storage.upload(record(next(numbers)))
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in stats.values())
    print(f"{name}, profiled ({total / uploads * 1e3:.2f} ms per upload):")
    for label, (file_name, function) in stages.items():
        cumulative = sum(
            entry[3]
            for (file, _line, func), entry in stats.items()
            if Path(file).name == file_name and func == function
        )
        print(f"  {label:<46} {cumulative / uploads * 1e3:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=200, help="per client per round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    moto, endpoint = start_moto()
    try:
        default_client(endpoint).create_bucket(Bucket=BUCKET)
        storages = {}
        for number, name in enumerate(CLIENTS):
            config = S3Config.for_uri(
                f"s3://{BUCKET}/client-{number}",
                access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                region_name=CREDENTIALS["AWS_REGION_NAME"],
                endpoint_url=endpoint,
            )
            if name == "botocore defaults":
                client = default_client(endpoint)
            elif name == "as shipped (lean)":
                client = connect_objects(config)
            else:
                client = build_client(config)
            storages[name] = S3Uploader.from_config(
                client, config, writer_id="bench", run_id="bench"
            )
        numbers = iter(range(10**9))
        for storage in storages.values():  # warm up: connections, caches
            for _ in range(20):
                storage.upload(record(next(numbers)))
        per_upload: dict[str, list[float]] = {name: [] for name in storages}
        for round_ in range(args.rounds):
            order = list(storages.items())
            for name, storage in order if round_ % 2 == 0 else order[::-1]:
                started = time.thread_time()
                for _ in range(args.uploads):
                    storage.upload(record(next(numbers)))
                per_upload[name].append((time.thread_time() - started) / args.uploads * 1e3)
        print(f"CPU per upload (uploading thread), ms, min / median of {args.rounds} rounds:")
        for name, values in per_upload.items():
            print(f"  {name:<24} {min(values):.2f} / {statistics.median(values):.2f}")
        for name, stages in STAGES.items():
            profile_stages(storages[name], name, stages, numbers, args.uploads)
    finally:
        moto.terminate()
        moto.wait(timeout=10)


if __name__ == "__main__":
    main()
