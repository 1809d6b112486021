"""S3 output against moto's standalone server over real HTTP: crawls in a subprocess (as cron
runs them), and the blocking pieces (client, uploader, manifest journal) called directly where a
fault must be injected."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import pytest
from s3fixtures import CREDENTIALS, Fault, MotoServer, S3Bucket, free_port
from scrapy.exceptions import NotConfigured
from statereader import StateReader

from aggregator.devtools.replay import Reply
from aggregator.errors import ConfigError
from aggregator.state.sqlite import SqliteCrawlState
from aggregator.storage import PostRecord
from aggregator.storage.s3.client import connect, connect_objects, quiet_sdk_debug_logs
from aggregator.storage.s3.config import S3Config, parse_s3_uri
from aggregator.storage.s3.manifests import (
    ManifestJournal,
    journal_dir,
    resend_leftover_manifests,
)
from aggregator.storage.s3.objects import ObjectLayout, S3Uploader, S3UploadError, post_metadata
from aggregator.storage.s3.storage import S3PostStorage

SITE = Path(__file__).resolve().parent / "fixtures" / "site"
CID10 = [f"qutoutiao-{i}" for i in range(1001, 1007)]
MANIFEST_NAME = re.compile(r"blog/_manifests/\d{8}T\d{6}Z-qutoutiao-([0-9a-f]{16})\.jsonl")


def post_keys(prefix: str = "blog") -> set[str]:
    return {f"{prefix}/qutoutiao/{key}.md" for key in CID10}


def listing_reply(replay, cid: int, page: int, delay: float) -> None:
    """Serve a listing page of the fixture site `delay` seconds late."""
    body = (SITE / f"outList-cid-{cid}-page-{page}.json").read_bytes()
    body = body.replace(b"__BASE__", replay.base_url.encode())
    target = f"/content/outList?cid={cid}&tn=1&page={page}&limit=10"
    replay.set_reply(target, Reply(body=body, content_type="application/json", delay=delay))


def manifest_article_keys(bucket: S3Bucket) -> list[str]:
    return sorted(line["article_key"] for lines in bucket.manifests().values() for line in lines)


def store(state: Path) -> StateReader:
    return StateReader(state / "dedupe.sqlite3")


# --- crawls --------------------------------------------------------------------------------
def test_posts_land_at_documented_keys_with_body_type_metadata_and_manifest(
    crawler, replay, s3_bucket, tmp_path
):
    files = crawler.crawl("qutoutiao", "cid=10", STATE_DIR=str(tmp_path / "files-state"))
    assert files.returncode == 0, files.stderr
    result = crawler.crawl("qutoutiao", "cid=10", **s3_bucket.settings())
    assert result.returncode == 0, result.stderr

    (manifest_key,) = s3_bucket.object_keys("blog/_manifests/")
    run_id = MANIFEST_NAME.fullmatch(manifest_key).group(1)
    assert set(s3_bucket.object_keys()) == post_keys() | {manifest_key}
    assert s3_bucket.posts() == files.posts()  # byte for byte what the file writer writes

    manifest = {line["article_key"]: line for line in s3_bucket.manifests()[manifest_key]}
    assert sorted(manifest) == CID10
    for key in CID10:
        object_key = f"blog/qutoutiao/{key}.md"
        head = s3_bucket.head(object_key)
        body = s3_bucket.body(object_key)
        number = key.rsplit("-", 1)[1]
        url = f"{replay.base_url}/detail/{number}.html?content_id={number}"
        published = datetime.fromtimestamp(1_700_000_000 + int(number), UTC)
        assert head["ContentType"] == "text/markdown; charset=utf-8"
        assert head["Metadata"]["source-url"] == url
        assert head["Metadata"]["article-key"] == key
        assert head["Metadata"]["published"] == published.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert head["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
        assert head["Metadata"]["run"] == run_id
        assert manifest[key] == {
            "key": object_key,
            "article_key": key,
            "title": f"分页文章{number}",
            "url": url,
            "published": head["Metadata"]["published"],
            "sha256": head["Metadata"]["sha256"],
            "size": len(body),
        }
    assert result.stat("articles/new") == 6
    assert result.stat("s3/uploaded") == 6
    assert result.stat("s3/manifests") == 1
    assert 1 <= result.stat("s3/peak_in_flight") <= 8
    assert store(crawler.state).published_among(CID10) == set(CID10)
    # the secret passed with -s is not in the log, although Scrapy logs overridden settings
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in result.stderr + result.stdout
    assert "'AWS_SECRET_ACCESS_KEY': '***'" in result.stderr


def test_rerun_writes_nothing_and_no_manifest(crawler, replay, s3_bucket):
    first = crawler.crawl("qutoutiao", "cid=10", **s3_bucket.settings())
    assert first.returncode == 0, first.stderr
    before = {key: s3_bucket.head(key)["ETag"] for key in s3_bucket.object_keys()}
    replay.reset()
    second = crawler.crawl("qutoutiao", "cid=10", **s3_bucket.settings())
    assert second.returncode == 0, second.stderr
    assert {key: s3_bucket.head(key)["ETag"] for key in s3_bucket.object_keys()} == before
    assert len(s3_bucket.manifests()) == 1
    assert second.stat("articles/new") == 0
    assert second.stat("s3/uploaded") == 0
    assert second.stat("s3/manifests") == 0
    assert replay.hits("/detail") == 0


def test_two_crawls_at_once_into_one_bucket_write_each_post_once(replay, s3_bucket, tmp_path):
    # both crawls wait on the first listing page, then fetch and upload the same articles
    # at the same moment
    listing_reply(replay, 10, 1, delay=1.0)
    crawlers = [another_crawler(tmp_path / name, replay.base_url) for name in ("a", "b")]
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(lambda c: c.crawl("qutoutiao", "cid=10", **s3_bucket.settings()), crawlers)
        )
    for result in results:
        assert result.returncode == 0, result.stderr
    assert set(s3_bucket.object_keys("blog/qutoutiao/")) == post_keys()
    assert sum(r.stat("articles/new") for r in results) == 6
    assert sum(r.stat("s3/existing") for r in results) == 6
    # consumers see each post once: in exactly one manifest, the one of the run that wrote it
    assert manifest_article_keys(s3_bucket) == CID10
    for manifest_key, lines in s3_bucket.manifests().items():
        run_id = MANIFEST_NAME.fullmatch(manifest_key).group(1)
        for line in lines:
            assert s3_bucket.head(line["key"])["Metadata"]["run"] == run_id
    # and each crawler marked every post published, its own and the other's
    for crawl in crawlers:
        assert store(crawl.state).published_among(CID10) == set(CID10)


def another_crawler(workdir: Path, base_url: str):
    """A crawl helper like the `crawler` fixture's, with its own state directory."""
    from conftest import Crawler

    workdir.mkdir()
    return Crawler(workdir, base_url)


@pytest.fixture
def stoppable_moto():
    """A moto server of this test's own, on a port it keeps across a stop and a start."""
    server = MotoServer(free_port()).start()
    servers = [server]
    yield servers
    servers[-1].stop()


def test_server_stopped_mid_crawl_then_next_run_completes_the_set(
    crawler, replay, stoppable_moto, tmp_path
):
    server = stoppable_moto[0]
    bucket = S3Bucket(server.endpoint_url).create()
    settings = {**bucket.settings(), "S3_MAX_ATTEMPTS": "2", "S3_TIMEOUT": "5"}
    listing_reply(replay, 10, 3, delay=3.0)  # 1005 and 1006 come after the outage began
    outcome = {}
    crawl = threading.Thread(
        target=lambda: outcome.update(first=crawler.crawl("qutoutiao", "cid=10", **settings))
    )
    crawl.start()
    bucket.wait_for(4, "blog/qutoutiao/")
    server.stop()
    crawl.join(timeout=60)
    first = outcome["first"]

    assert first.returncode == 1, first.stderr
    assert first.stat("articles/new") == 4
    assert first.stat("articles/failed") == 2
    assert first.stat("s3/failed") == 2
    assert first.stat("s3/manifest_failed") == 1
    assert "Could not write qutoutiao-1005" in first.stderr
    dedupe = store(crawler.state)
    assert dedupe.published_among(CID10) == set(CID10[:4])  # failed items are not marked
    assert sorted(key for key, _ in dedupe.pending("qutoutiao")) == CID10[4:]
    assert len(list((crawler.state / "s3-manifests").rglob("*.jsonl"))) == 1
    dedupe.close()

    stoppable_moto.append(MotoServer(server.port).start())
    replay.reset()
    second = crawler.crawl("qutoutiao", "cid=10", **settings)
    assert second.returncode == 0, second.stderr
    assert second.stat("articles/new") == 2
    assert second.stat("s3/manifests_resent") == 1
    assert second.stat("s3/manifests") == 1
    assert set(bucket.object_keys("blog/qutoutiao/")) == post_keys()
    assert manifest_article_keys(bucket) == CID10  # nothing missing, nothing doubled
    assert list((crawler.state / "s3-manifests").rglob("*.jsonl")) == []


def test_missing_bucket_fails_fast_with_a_readable_message(crawler, replay, moto_server):
    bucket = S3Bucket(moto_server.endpoint_url)  # never created
    result = crawler.crawl("qutoutiao", "cid=10", **bucket.settings())
    assert result.returncode == 1
    assert (
        f"Cannot write posts: OUTPUT_URI s3://{bucket.name}/blog: bucket '{bucket.name}' "
        f"does not exist at {moto_server.endpoint_url}"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stats["finish_reason"] == "output_unavailable"
    assert replay.requests == []  # not one request reached the source


def test_uploads_run_in_parallel_bounded_and_faults_are_resolved_in_a_crawl(
    crawler, replay, s3_bucket, fault_proxy
):
    fault_proxy.put_delay = 0.3
    fault_proxy.inject(
        "PUT", "/qutoutiao-1001.md", Fault(409, "ConditionalRequestConflict", times=1)
    )
    fault_proxy.inject("PUT", "/qutoutiao-1002.md", Fault(500, "InternalError", forward=True))
    settings = s3_bucket.settings(endpoint_url=fault_proxy.endpoint_url)
    result = crawler.crawl("qutoutiao", "cid=10", S3_MAX_UPLOADS="2", **settings)
    assert result.returncode == 0, result.stderr
    assert result.stat("s3/peak_in_flight") == 2
    assert fault_proxy.peak_in_flight("PUT") <= 2  # as the server saw them
    assert result.stat("s3/conflict_retries") == 1
    assert result.stat("s3/already_ours") == 1  # 1002: our PUT landed, its answer was lost
    assert result.stat("s3/uploaded") == 5
    assert result.stat("articles/new") == 6
    assert manifest_article_keys(s3_bucket) == CID10


def test_slow_uploads_all_land_in_the_bucket_and_the_manifest_before_the_run_ends(
    crawler, replay, s3_bucket, fault_proxy
):
    # Every post's PUT is answered late, the last article's much later: the crawl has run out
    # of requests long before the uploads are done. The run must still end with every post in
    # the bucket, in its manifest and in its stats, so nothing may let the storage close (send
    # the manifest, stop its threads) while an upload is in flight.
    fault_proxy.delay("PUT", ".md", 0.5)
    fault_proxy.delay("PUT", "/qutoutiao-1006.md", 1.5)
    settings = s3_bucket.settings(endpoint_url=fault_proxy.endpoint_url)
    result = crawler.crawl("qutoutiao", "cid=10", S3_MAX_UPLOADS="3", **settings)
    assert result.returncode == 0, result.stderr

    assert set(s3_bucket.object_keys("blog/qutoutiao/")) == post_keys()
    assert len(s3_bucket.manifests()) == 1
    assert manifest_article_keys(s3_bucket) == CID10
    assert result.stat("articles/new") == 6
    assert result.stat("s3/uploaded") == 6
    assert result.stat("s3/manifest_lines") == 6
    assert store(crawler.state).published_among(CID10) == set(CID10)
    # the manifest was sent after the last post's PUT was answered
    posts = [r for r in fault_proxy.relayed if r.method == "PUT" and r.path.endswith(".md")]
    (manifest,) = [r for r in fault_proxy.relayed if r.path.endswith(".jsonl")]
    assert len(posts) == 6
    assert manifest.arrived >= max(r.answered for r in posts)
    # uploads overlapped, never more than S3_MAX_UPLOADS at once, counted at the server's door
    assert 2 <= fault_proxy.peak_in_flight("PUT") <= 3
    assert 2 <= result.stat("s3/peak_in_flight") <= 3


# --- the blocking half, with injected faults -------------------------------------------------
def record(
    number: int = 1001, data: bytes = b"---\ntitle: t\n---\nbody\n", url: str = ""
) -> PostRecord:
    return PostRecord(
        key=f"qutoutiao-{number}",
        site="qutoutiao",
        title="标题",
        url=url or f"http://example.com/{number}.html",
        published=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        data=data,
    )


# the uploader's rules hold whichever client sends its calls (S3_CLIENT)
BOTH_CLIENTS = pytest.mark.parametrize("client", ["lean", "boto3"])


def uploader(
    bucket: S3Bucket, endpoint_url: str, *, writer_id: str = "writer-a", **options
) -> S3Uploader:
    """An uploader with a client (S3_CLIENT `client`, lean by default) connected to `bucket`
    through `endpoint_url`."""
    config = S3Config.for_uri(
        bucket.uri(),
        access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_REGION_NAME"],
        endpoint_url=endpoint_url,
        **{"conflict_backoff": 0.01, **options},
    )
    return S3Uploader.from_config(
        connect_objects(config), config, writer_id=writer_id, run_id="r" * 16
    )


@BOTH_CLIENTS
def test_conflict_409_is_retried_with_backoff_then_written(s3_bucket, fault_proxy, client):
    fault_proxy.inject(
        "PUT", "/qutoutiao-1001.md", Fault(409, "ConditionalRequestConflict", times=2)
    )
    uploaded = uploader(s3_bucket, fault_proxy.endpoint_url, client=client).upload(record())
    assert (uploaded.outcome, uploaded.conflicts, uploaded.result.created) == ("created", 2, True)
    assert fault_proxy.count("PUT", "/qutoutiao-1001.md") == 3
    assert s3_bucket.body("blog/qutoutiao/qutoutiao-1001.md") == record().data


@BOTH_CLIENTS
def test_conflicts_beyond_the_limit_fail_naming_the_object(s3_bucket, fault_proxy, client):
    fault_proxy.inject(
        "PUT", "/qutoutiao-1001.md", Fault(409, "ConditionalRequestConflict", times=9)
    )
    s3 = uploader(s3_bucket, fault_proxy.endpoint_url, conflict_retries=2, client=client)
    with pytest.raises(
        S3UploadError, match=r"qutoutiao-1001\.md: ConditionalRequestConflict after 2"
    ):
        s3.upload(record())
    assert s3_bucket.object_keys() == []


@BOTH_CLIENTS
def test_a_landed_put_whose_answer_was_lost_counts_as_ours(s3_bucket, fault_proxy, client):
    fault_proxy.inject("PUT", "/qutoutiao-1001.md", Fault(500, "InternalError", forward=True))
    uploaded = uploader(s3_bucket, fault_proxy.endpoint_url, client=client).upload(record())
    assert (uploaded.outcome, uploaded.result.created) == ("ours", True)
    assert uploaded.entry is not None and uploaded.entry["article_key"] == "qutoutiao-1001"
    assert fault_proxy.count("PUT", "/qutoutiao-1001.md") == 2  # the 500 was retried


@BOTH_CLIENTS
def test_another_writers_object_is_never_overwritten(s3_bucket, moto_server, client):
    theirs = uploader(s3_bucket, moto_server.endpoint_url, writer_id="writer-b")
    assert theirs.upload(record(data=b"their post")).result.created
    ours = uploader(s3_bucket, moto_server.endpoint_url, client=client)
    different = ours.upload(record(data=b"our post"))
    same_bytes = ours.upload(record(data=b"their post"))
    for uploaded in (different, same_bytes):
        assert (uploaded.outcome, uploaded.result.created, uploaded.entry) == (
            "existing",
            False,
            None,
        )
    assert s3_bucket.body("blog/qutoutiao/qutoutiao-1001.md") == b"their post"


def test_missing_credentials_are_a_clear_error(s3_bucket, tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    config = S3Config.for_uri(
        s3_bucket.uri(), endpoint_url=s3_bucket.endpoint_url, region_name="us-east-1"
    )
    with pytest.raises(
        ConfigError, match=r"OUTPUT_URI s3://.*: no AWS credentials found; set AWS_ACCESS_KEY_ID"
    ):
        connect(config)


def test_unreachable_endpoint_is_a_clear_error():
    endpoint = f"http://127.0.0.1:{free_port()}"
    config = S3Config.for_uri(
        "s3://somewhere/blog",
        endpoint_url=endpoint,
        max_attempts=1,
        access_key="a",
        secret_key="b",
        region_name="us-east-1",
    )
    with pytest.raises(ConfigError, match=r"check AWS_ENDPOINT_URL"):
        connect(config)


# --- layout and metadata -------------------------------------------------------------------
def test_metadata_is_ascii_and_the_source_url_decodes_back():
    url = "https://新闻.example.cn/文章/1.html?标题=你好&x=%20y"
    metadata = post_metadata(record(url=url), "ab" * 32, writer_id="w", run_id="r")
    assert all(value.isascii() for value in metadata.values())
    assert unquote(metadata["source-url"]) == unquote(url)
    assert metadata["published"] == "2024-05-06T07:08:09Z"
    assert (metadata["writer"], metadata["run"]) == ("w", "r")
    layout = ObjectLayout(*parse_s3_uri("s3://bucket/a/b/"))
    assert layout.post_key(record()) == "a/b/qutoutiao/qutoutiao-1001.md"


def test_a_very_long_source_url_is_cut_and_flagged_in_metadata():
    long_url = "https://example.com/" + "文" * 1000
    metadata = post_metadata(record(url=long_url), "0" * 64, writer_id="w", run_id="r")
    assert len(metadata["source-url"]) <= 1500
    assert re.search(r"%[0-9A-F]{2}$", metadata["source-url"])  # no escape cut in half
    assert metadata["source-url-truncated"] == "true"
    assert ObjectLayout("bucket").post_key(record()) == "qutoutiao/qutoutiao-1001.md"


def test_object_keys_come_only_from_safe_article_keys():
    unsafe = PostRecord("../etc", "qutoutiao", "t", "http://x", datetime.now(UTC), b"")
    with pytest.raises(ValueError, match="refusing"):
        ObjectLayout("bucket", "blog").post_key(unsafe)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3:///prefix", "needs a bucket name"),
        ("s3://key:secret@bucket/prefix", "must not carry credentials"),
    ],
)
def test_bad_output_uris_say_what_is_wrong(uri, message):
    with pytest.raises(NotConfigured, match=message) as caught:
        parse_s3_uri(uri)
    assert "secret" not in str(caught.value).replace("AWS_SECRET_ACCESS_KEY", "")


def test_uri_prefix_is_normalised():
    assert parse_s3_uri("s3://bucket//a//b/") == ("bucket", "a/b")
    assert parse_s3_uri("s3://bucket") == ("bucket", "")


# --- configuration and the local manifest journal ------------------------------------------
def project_crawler(**settings: str):
    """A crawler with the project's settings plus `settings`, never started."""
    from scrapy import Spider
    from scrapy.crawler import Crawler
    from scrapy.settings import Settings
    from scrapy.statscollectors import MemoryStatsCollector

    project = Settings()
    project.setmodule("aggregator.settings")
    project.update(settings)
    crawler = Crawler(Spider, project)
    crawler.stats = MemoryStatsCollector(crawler)
    return crawler


def test_settings_reach_the_storage_and_size_the_connection_pool(s3_bucket, tmp_path):
    crawler = project_crawler(
        **s3_bucket.settings(),
        AWS_USE_SSL="False",
        AWS_VERIFY="false",
        S3_MAX_UPLOADS="3",
        S3_MAX_ATTEMPTS="7",
        STATE_DIR=str(tmp_path),
    )
    config = S3PostStorage.from_crawler(crawler, s3_bucket.uri()).config
    assert (config.use_ssl, config.verify, config.max_uploads) == (False, False, 3)
    assert config.endpoint_url == s3_bucket.endpoint_url
    client = connect(config)
    assert client.meta.config.max_pool_connections == 4  # uploads + the manifest
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 7}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"S3_MAX_UPLOADS": "0"}, "S3_MAX_UPLOADS must be at least 1, not 0"),
        ({"S3_MAX_ATTEMPTS": "0"}, "S3_MAX_ATTEMPTS must be at least 1, not 0"),
        ({"AWS_ACCESS_KEY_ID": "k"}, "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY together"),
        ({"AWS_SESSION_TOKEN": "t"}, "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY together"),
        ({"S3_CLIENT": "curl"}, "S3_CLIENT must be one of lean, boto3, not 'curl'"),
    ],
)
def test_settings_are_checked_alike_before_a_crawl_and_when_the_storage_is_built(settings, message):
    crawler = project_crawler(**settings)
    with pytest.raises(NotConfigured, match=message):
        S3PostStorage.check_settings("s3://bucket/blog", crawler.settings)
    with pytest.raises(NotConfigured, match=message):
        S3PostStorage.from_crawler(crawler, "s3://bucket/blog")


def test_a_config_never_shows_its_secrets():
    config = S3Config.for_uri(
        "s3://bucket/blog", access_key="key-id", secret_key="s3cr3t-key", session_token="t0ken"
    )
    assert (config.bucket, config.prefix, config.access_key) == ("bucket", "blog", "key-id")
    assert "s3cr3t-key" not in repr(config) and "t0ken" not in repr(config)


def test_the_writer_id_is_kept_in_the_crawl_state(tmp_path):
    state = SqliteCrawlState(f"sqlite:///{tmp_path}/state.sqlite3")

    async def records():
        return state.records

    config = S3Config.for_uri("s3://b")
    first, again = (S3PostStorage(config, records=records) for _ in range(2))
    assert first.writer_id != again.writer_id  # fresh until the state is read at open
    asyncio.run(first._load_writer_id())
    asyncio.run(again._load_writer_id())
    assert again.writer_id == first.writer_id  # the next run is the same writer
    assert asyncio.run(state.records.get("s3/writer_id")) == first.writer_id


def test_a_journal_left_behind_is_sent_once_and_never_while_its_run_lives(tmp_path):
    live = ManifestJournal(tmp_path, "qutoutiao", "a" * 16)
    live.claim()
    live.append({"key": "blog/qutoutiao/qutoutiao-1001.md"})
    sent = []

    def send(spider: str, run_id: str, body: bytes) -> str:
        sent.append((spider, run_id, body))
        return f"blog/_manifests/x-{spider}-{run_id}.jsonl"

    assert ManifestJournal.resend(live.path, send) is None  # its run still holds it
    live.release()  # the run ended without sending it
    key = ManifestJournal.resend(live.path, send)
    assert key == "blog/_manifests/x-qutoutiao-aaaaaaaaaaaaaaaa.jsonl"
    assert sent == [("qutoutiao", "a" * 16, b'{"key": "blog/qutoutiao/qutoutiao-1001.md"}\n')]
    assert list(tmp_path.iterdir()) == []
    assert ManifestJournal.resend(live.path, send) is None


def test_a_leftover_manifest_that_cannot_be_sent_stays_and_the_run_goes_on(
    s3_bucket, fault_proxy, tmp_path
):
    s3 = uploader(s3_bucket, fault_proxy.endpoint_url, max_attempts=1)
    directory = journal_dir(tmp_path, s3_bucket.name, "blog")
    left = ManifestJournal(directory, "qutoutiao", "b" * 16)
    left.claim()
    left.append({"key": "blog/qutoutiao/qutoutiao-1001.md"})
    left.release()  # its run died before sending it
    fault_proxy.inject("PUT", ".jsonl", Fault(503, "SlowDown", times=1))

    sent, failed = resend_leftover_manifests(directory, s3.put_manifest)  # the run goes on
    assert sent == [] and len(failed) == 1 and str(left.path) in failed[0]
    assert left.path.exists()  # kept for the next run

    sent, failed = resend_leftover_manifests(directory, s3.put_manifest)  # answers again
    assert failed == [] and len(sent) == 1
    assert not left.path.exists()
    assert s3_bucket.manifests() == {sent[0]: [{"key": "blog/qutoutiao/qutoutiao-1001.md"}]}


def test_sdk_debug_records_are_not_built_unless_log_level_is_debug():
    botocore, urllib3 = logging.getLogger("botocore"), logging.getLogger("urllib3")
    saved = botocore.level, urllib3.level
    try:
        botocore.setLevel(logging.NOTSET)
        urllib3.setLevel(logging.ERROR)  # configured by someone: left alone
        quiet_sdk_debug_logs("DEBUG")
        assert botocore.level == logging.NOTSET
        quiet_sdk_debug_logs("INFO")
        assert (botocore.level, urllib3.level) == (logging.INFO, logging.ERROR)
    finally:
        botocore.setLevel(saved[0])
        urllib3.setLevel(saved[1])


def test_puts_go_without_expect_continue_or_parameter_checks(s3_bucket, moto_server):
    s3 = uploader(s3_bucket, moto_server.endpoint_url, client="boto3")
    sent: list[dict] = []
    s3.client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers))
    )
    assert s3.upload(record(1101)).result.created
    assert len(sent) == 1
    assert "Expect" not in sent[0]  # a few-KB body is sent at once, no interim round trip
    assert sent[0]["x-amz-checksum-sha256"]  # ours: botocore computes none of its own
    from botocore.validate import ParamValidationDecorator

    assert not isinstance(s3.client._serializer, ParamValidationDecorator)
