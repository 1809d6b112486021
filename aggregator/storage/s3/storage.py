"""Posts as S3 objects (`OUTPUT_URI=s3://bucket/prefix`), for downstream programs that read the
blog from a bucket. Works with AWS and any S3-compatible store (MinIO, R2, ...).

Layout, all derived from the article key, never the title:

- `{prefix}/{site}/{article key}.md`: the post, byte for byte what the file writer writes;
- `{prefix}/_manifests/{UTC timestamp}-{spider}-{run id}.jsonl`: one JSON line per object a run
  wrote, so a consumer finds new posts by listing `_manifests/` after the last one it read.

Exactly once, also with several crawlers on one bucket: every post is a conditional PutObject
(`IfNoneMatch="*"`), so an existing object is never overwritten. A 412 means the object exists;
it counts as ours (written) only when its stored SHA-256 and writer id equal ours, i.e. a PUT of
ours landed although we never saw the answer. A 409 `ConditionalRequestConflict` (a concurrent
conditional write) is retried here with backoff, since no botocore retry mode does.

boto3 is blocking, so every call runs in this storage's own thread pool, at most
`S3_MAX_UPLOADS` uploads at once; the reactor, and with it the crawl, never waits on S3.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

import boto3.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from filelock import FileLock, Timeout
from scrapy.exceptions import NotConfigured
from twisted.internet import defer, threads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from aggregator import stats as stat_keys
from aggregator.errors import ConfigError
from aggregator.keys import is_safe_key
from aggregator.ops.logredact import redact_secrets
from aggregator.state.sqlite import dedupe_store_for, state_dir
from aggregator.storage import PostRecord, StoreResult

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy import Spider
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings
    from scrapy.statscollectors import StatsCollector
    from twisted.internet.defer import Deferred

__all__ = [
    "MANIFEST_DIR",
    "POST_CONTENT_TYPE",
    "S3PostStorage",
    "S3UploadError",
    "Uploaded",
    "parse_s3_uri",
]

logger = logging.getLogger(__name__)

POST_CONTENT_TYPE = "text/markdown; charset=utf-8"
MANIFEST_CONTENT_TYPE = "application/x-ndjson; charset=utf-8"
MANIFEST_DIR = "_manifests"  # never a site name: those start with [a-z0-9]
# S3 allows 2 KB of user metadata in all; a longer source URL is cut (and flagged) there, and
# kept whole in the manifest, rather than failing the PUT on every run.
MAX_URL_METADATA = 1500
CONFLICT_BACKOFF_CAP = 5.0
WRITER_ID_NAME = "s3/writer_id"

# Characters RFC 3986 allows unescaped in a URL, plus "%" so existing escapes stay as they are.
_URL_SAFE = "!#$&'()*+,/:;=?@[]~%-._"
_SITE = re.compile(r"[a-z0-9][a-z0-9_]{0,31}")
_SPIDER_CHARS = re.compile(r"[^A-Za-z0-9_.]")

# stats
_PREFIX = f"{stat_keys.PREFIX}/s3"
STAT_UPLOADED = f"{_PREFIX}/uploaded"
STAT_BYTES = f"{_PREFIX}/bytes"
STAT_ALREADY_OURS = f"{_PREFIX}/already_ours"
STAT_EXISTING = f"{_PREFIX}/existing"
STAT_CONFLICT_RETRIES = f"{_PREFIX}/conflict_retries"
STAT_FAILED = f"{_PREFIX}/failed"
STAT_PEAK_IN_FLIGHT = f"{_PREFIX}/peak_in_flight"
STAT_MANIFESTS = f"{_PREFIX}/manifests"
STAT_MANIFEST_LINES = f"{_PREFIX}/manifest_lines"
STAT_MANIFEST_FAILED = stat_keys.S3_MANIFEST_FAILED
STAT_MANIFESTS_RESENT = f"{_PREFIX}/manifests_resent"


class S3UploadError(Exception):
    """A PUT that still failed after botocore's retries (or ours, for 409 conflicts)."""


@dataclass(frozen=True)
class Uploaded:
    """What one upload did. `outcome` is "created" (our PUT made the object), "ours" (it
    existed: an earlier PUT of ours had landed) or "existing" (another writer's object)."""

    result: StoreResult
    outcome: str
    conflicts: int
    size: int
    entry: dict[str, Any] | None  # the manifest line, when the object counts as ours


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Bucket and key prefix (no leading or trailing "/") of `s3://bucket/prefix`."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        raise NotConfigured(f"OUTPUT_URI {uri!r} is not an s3:// URI")
    if parsed.username or parsed.password:
        # never echo the URI: it holds a secret
        raise NotConfigured(
            "OUTPUT_URI must not carry credentials: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (environment or settings) instead"
        )
    if not parsed.hostname:
        raise NotConfigured(f"OUTPUT_URI {uri!r} needs a bucket name (s3://bucket/prefix)")
    prefix = "/".join(part for part in parsed.path.split("/") if part)
    return parsed.netloc, prefix


def _utc_iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _url_metadata(url: str) -> dict[str, str]:
    """The source URL as ASCII; user metadata travels in HTTP headers."""
    encoded = quote(url, safe=_URL_SAFE)
    if len(encoded) <= MAX_URL_METADATA:
        return {"source-url": encoded}
    cut = re.sub(r"%[0-9A-Fa-f]?$", "", encoded[:MAX_URL_METADATA])
    return {"source-url": cut, "source-url-truncated": "true"}


def _check_limits(max_uploads: int, max_attempts: int) -> None:
    if max_uploads < 1:
        raise NotConfigured(f"S3_MAX_UPLOADS must be at least 1, not {max_uploads}")
    if max_attempts < 1:
        raise NotConfigured(f"S3_MAX_ATTEMPTS must be at least 1, not {max_attempts}")


def _check_credentials(
    access_key: str | None, secret_key: str | None, session_token: str | None
) -> None:
    """Credentials given in settings replace boto3's whole chain, so half a set would not be
    completed from the environment: it would fail at the first request, obscurely."""
    if bool(access_key) != bool(secret_key) or (session_token and not access_key):
        raise NotConfigured(
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY together (and AWS_SESSION_TOKEN "
            "only with them), or none of them to use boto3's credential chain"
        )


def _parse_verify(value: Any) -> bool | str | None:
    """AWS_VERIFY: unset, a boolean (also as -s text), or the path of a CA bundle."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in {"1", "true", "yes", "on"}:
        return True
    if text.lower() in {"0", "false", "no", "off"}:
        return False
    return text or None


def _optional_bool(settings: BaseSettings, name: str) -> bool | None:
    return None if settings.get(name) is None else settings.getbool(name)


def _error_of(exc: Any) -> tuple[int, str]:
    response = getattr(exc, "response", None) or {}
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    code = str(response.get("Error", {}).get("Code") or "")
    return status, code


class S3PostStorage:
    """PostStorage for `s3://bucket/prefix`. See the module docstring for the layout and the
    exactly-once rules; settings are read in `from_crawler` and passed in, as Scrapy's
    S3FeedStorage does."""

    def __init__(
        self,
        uri: str,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        use_ssl: bool | None = None,
        verify: bool | str | None = None,
        max_uploads: int = 8,
        max_attempts: int = 5,
        conflict_retries: int = 5,
        conflict_backoff: float = 0.2,
        timeout: float = 30.0,
        state_dir: str | Path = ".state",
        writer_id: str | None = None,
        stats: StatsCollector | None = None,
        log_level: int | str = logging.DEBUG,
    ):
        _check_limits(max_uploads, max_attempts)
        _check_credentials(access_key, secret_key, session_token)
        self.uri = uri
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.access_key = access_key
        self.secret_key = secret_key
        self.session_token = session_token
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self.use_ssl = use_ssl
        self.verify = verify
        self.max_uploads = max_uploads
        self.max_attempts = max_attempts
        self.conflict_retries = max(0, conflict_retries)
        self.conflict_backoff = max(0.0, conflict_backoff)
        self.timeout = timeout
        self.writer_id = writer_id or uuid.uuid4().hex
        self.run_id = uuid.uuid4().hex[:16]
        self.stats = stats
        self.log_level = log_level
        self.journal_dir = (
            Path(state_dir) / "s3-manifests" / self.bucket / (quote(self.prefix, safe="") or "_")
        )
        self.client: Any = None
        self._pool = ThreadPool(minthreads=0, maxthreads=max_uploads + 1, name="s3-uploads")
        self._pool_trigger: Any = None
        self._slots = defer.DeferredSemaphore(max_uploads)
        self._in_flight = 0
        self._outstanding = 0
        self._idle_waiters: list[Deferred[None]] = []
        self._journal: ManifestJournal | None = None

    @classmethod
    def check_settings(cls, uri: str, settings: BaseSettings) -> None:
        """What can be checked without the network (the bucket is checked when the spider
        opens): the URI's shape and the limits. Raises NotConfigured."""
        parse_s3_uri(uri)
        _check_limits(settings.getint("S3_MAX_UPLOADS", 8), settings.getint("S3_MAX_ATTEMPTS", 5))
        _check_credentials(
            settings.get("AWS_ACCESS_KEY_ID") or None,
            settings.get("AWS_SECRET_ACCESS_KEY") or None,
            settings.get("AWS_SESSION_TOKEN") or None,
        )

    @classmethod
    def from_crawler(cls, crawler: Crawler, uri: str) -> S3PostStorage:
        settings = crawler.settings
        return cls(
            uri,
            access_key=settings.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=settings.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=settings.get("AWS_SESSION_TOKEN") or None,
            endpoint_url=settings.get("AWS_ENDPOINT_URL") or None,
            region_name=settings.get("AWS_REGION_NAME") or None,
            use_ssl=_optional_bool(settings, "AWS_USE_SSL"),
            verify=_parse_verify(settings.get("AWS_VERIFY")),
            max_uploads=settings.getint("S3_MAX_UPLOADS", 8),
            max_attempts=settings.getint("S3_MAX_ATTEMPTS", 5),
            conflict_retries=settings.getint("S3_CONFLICT_RETRIES", 5),
            conflict_backoff=settings.getfloat("S3_CONFLICT_BACKOFF", 0.2),
            timeout=settings.getfloat("S3_TIMEOUT", 30.0),
            state_dir=state_dir(settings),
            writer_id=_writer_id(crawler),
            stats=crawler.stats,
            log_level=settings.get("LOG_LEVEL") or logging.DEBUG,
        )

    # --- layout ------------------------------------------------------------------------------
    def _join(self, *parts: str) -> str:
        return "/".join(part for part in (self.prefix, *parts) if part)

    def object_key(self, post: PostRecord) -> str:
        """`{prefix}/{site}/{article key}.md`, from the article key only."""
        if not _SITE.fullmatch(post.site) or not is_safe_key(post.key):
            raise ValueError(f"refusing to build an object key from {post.site!r}/{post.key!r}")
        return self._join(post.site, f"{post.key}.md")

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def metadata(self, post: PostRecord, sha256: str) -> dict[str, str]:
        """User metadata (all ASCII): where the post comes from and what its body hashes to,
        plus who wrote it, which tells our own landed retries from another writer's object."""
        return {
            **_url_metadata(post.url),
            "article-key": post.key,
            "published": _utc_iso(post.published),
            "sha256": sha256,
            "writer": self.writer_id,
            "run": self.run_id,
        }

    # --- blocking side: runs in worker threads -----------------------------------------------
    def connect(self) -> None:
        """Build the client and check the bucket (HeadBucket), so a missing bucket, bad
        credentials or an unreachable endpoint stop the run before anything is crawled."""
        session = boto3.session.Session(
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            aws_session_token=self.session_token,
            region_name=self.region_name,
        )
        credentials = session.get_credentials()
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            redact_secrets(frozen.secret_key, frozen.token)
        config = Config(
            max_pool_connections=self.max_uploads + 1,
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
        )
        options: dict[str, Any] = {}
        if self.use_ssl is not None:
            options["use_ssl"] = self.use_ssl
        if self.verify is not None:
            options["verify"] = self.verify
        client = session.client("s3", endpoint_url=self.endpoint_url, config=config, **options)
        self._check_bucket(client)
        self.client = client

    def _check_bucket(self, client: Any) -> None:
        where = f"OUTPUT_URI {self.uri}"
        endpoint = client.meta.endpoint_url
        try:
            client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError as exc:
            raise ConfigError(
                f"{where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (environment or settings) or configure a boto3 profile"
            ) from exc
        except ClientError as exc:
            status, code = _error_of(exc)
            if status == 404 or code in {"404", "NoSuchBucket"}:
                reason = f"bucket {self.bucket!r} does not exist at {endpoint}"
            elif status == 403:
                reason = (
                    f"access to bucket {self.bucket!r} at {endpoint} is denied; check "
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the boto3 profile) and "
                    "the bucket policy"
                )
            elif status == 301:
                reason = f"bucket {self.bucket!r} is in another region; set AWS_REGION_NAME"
            else:
                reason = f"HeadBucket {self.bucket!r} at {endpoint} failed: {code or status}"
            raise ConfigError(f"{where}: {reason}") from exc
        except BotoCoreError as exc:
            raise ConfigError(
                f"{where}: cannot use bucket {self.bucket!r} at {endpoint} "
                f"(check AWS_ENDPOINT_URL): {exc}"
            ) from exc

    def upload(self, post: PostRecord) -> Uploaded:
        """One conditional PUT of `post`, with the 412 and 409 rules of the module docstring.
        Blocking: call it from a worker thread (persist does)."""
        key = self.object_key(post)
        location = self.location(key)
        digest = hashlib.sha256(post.data).digest()
        sha256 = digest.hex()
        metadata = self.metadata(post, sha256)
        # S3 checks the body against this (end-to-end integrity), and botocore need not
        # compute a checksum of its own
        checksum = base64.b64encode(digest).decode("ascii")
        conflicts = 0
        while True:
            try:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=post.data,
                    ContentType=POST_CONTENT_TYPE,
                    Metadata=metadata,
                    ChecksumSHA256=checksum,
                    IfNoneMatch="*",
                )
            except ClientError as exc:
                status, code = _error_of(exc)
                if status == 412:
                    existing = self._head_metadata(key)
                    if existing is not None:
                        ours = existing.get("sha256") == sha256 and (
                            existing.get("writer") == self.writer_id
                        )
                        return self._uploaded(post, key, sha256, conflicts, ours=ours, new=False)
                    # deleted between our PUT and our HEAD: try again, like a conflict
                elif not (status == 409 and code == "ConditionalRequestConflict"):
                    raise S3UploadError(f"PUT {location}: {code or status}") from exc
                if conflicts >= self.conflict_retries:
                    raise S3UploadError(
                        f"PUT {location}: {code or status} after {conflicts} retries"
                    ) from exc
                conflicts += 1
                time.sleep(self._backoff(conflicts))
                continue
            except BotoCoreError as exc:
                raise S3UploadError(f"PUT {location}: {exc}") from exc
            return self._uploaded(post, key, sha256, conflicts, ours=True, new=True)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: concurrent writers retrying a conflict should not collide again."""
        return random.uniform(0, min(CONFLICT_BACKOFF_CAP, self.conflict_backoff * 2**attempt))

    def _head_metadata(self, key: str) -> dict[str, str] | None:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_of(exc)[0] == 404:
                return None
            raise S3UploadError(f"HEAD {self.location(key)}: {_error_of(exc)[1]}") from exc
        return {name.lower(): value for name, value in response.get("Metadata", {}).items()}

    def _uploaded(
        self, post: PostRecord, key: str, sha256: str, conflicts: int, *, ours: bool, new: bool
    ) -> Uploaded:
        entry = None
        if ours:
            entry = {
                "key": key,
                "article_key": post.key,
                "title": post.title,
                "url": post.url,
                "published": _utc_iso(post.published),
                "sha256": sha256,
                "size": len(post.data),
            }
            if post.images:
                entry["images"] = list(post.images)
        outcome = "created" if new else ("ours" if ours else "existing")
        return Uploaded(
            StoreResult(self.location(key), created=ours), outcome, conflicts, len(post.data), entry
        )

    def put_manifest(self, spider_name: str, run_id: str, body: bytes) -> str:
        """Upload a manifest named by the time it is written, so it sorts after every manifest
        written before it. Returns its key."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        key = self._join(MANIFEST_DIR, f"{stamp}-{spider_name}-{run_id}.jsonl")
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType=MANIFEST_CONTENT_TYPE,
            Metadata={"writer": self.writer_id, "run": run_id},
            IfNoneMatch="*",
        )
        return key

    def resend_leftover_manifests(self) -> tuple[list[str], list[str]]:
        """Upload the manifests earlier runs kept locally (they died, or the bucket was out of
        reach at close), skipping those of runs still going (their journal is locked).

        Returns the keys sent and a message per journal that could not be sent: that one stays
        for the next run, and this run goes on, since its own posts should not wait for it."""
        sent: list[str] = []
        failed: list[str] = []
        for path in sorted(self.journal_dir.glob("*.jsonl")):
            if self._journal is not None and path == self._journal.path:
                continue
            try:
                key = ManifestJournal.resend(path, self.put_manifest)
            except (BotoCoreError, ClientError) as exc:
                failed.append(f"{path}: {exc}")
                continue
            if key is not None:
                sent.append(key)
        return sent, failed

    # --- reactor side ------------------------------------------------------------------------
    def _in_thread(self, func: Callable[..., Any], *args: Any) -> Deferred[Any]:
        from twisted.internet import reactor  # the one Scrapy installed; not at import time

        return threads.deferToThreadPool(reactor, self._pool, func, *args)

    def open(self, spider: Spider) -> Deferred[None]:
        from twisted.internet import reactor

        quiet_sdk_debug_logs(self.log_level)
        self._pool.start()
        self._pool_trigger = reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        spider_name = _SPIDER_CHARS.sub("_", spider.name)
        self._journal = ManifestJournal(self.journal_dir, spider_name, self.run_id)
        d = self._in_thread(self.connect)
        d.addCallback(lambda _: self._journal.claim())
        d.addCallback(lambda _: self._in_thread(self.resend_leftover_manifests))
        d.addCallback(self._resent)
        return d

    def _resent(self, outcome: tuple[list[str], list[str]]) -> None:
        sent, failed = outcome
        for key in sent:
            logger.info("Sent the manifest an earlier run left behind: %s", self.location(key))
            self._inc(STAT_MANIFESTS_RESENT)
        for problem in failed:
            logger.error(
                "Could not send the manifest an earlier run left behind (%s); kept for the next "
                "run",
                problem,
            )
            self._inc(STAT_MANIFEST_FAILED)
        logger.info(
            "Writing posts to s3://%s/%s (%s uploads at once, run %s)",
            self.bucket,
            self.prefix,
            self.max_uploads,
            self.run_id,
        )

    def persist(self, post: PostRecord) -> Deferred[StoreResult]:
        if self.client is None:
            return defer.fail(S3UploadError(f"{post.key}: the S3 storage is not open"))
        self._outstanding += 1
        d = self._slots.run(self._start_upload, post)
        d.addBoth(self._settled)
        return d

    def _start_upload(self, post: PostRecord) -> Deferred[StoreResult]:
        self._in_flight += 1
        if self.stats is not None:
            self.stats.max_value(STAT_PEAK_IN_FLIGHT, self._in_flight)
        d = self._in_thread(self.upload, post)
        d.addBoth(self._upload_done)
        return d

    def _upload_done(self, outcome: Uploaded | Failure) -> StoreResult | Failure:
        self._in_flight -= 1
        if isinstance(outcome, Failure):
            self._inc(STAT_FAILED)
            return outcome
        self._inc(STAT_CONFLICT_RETRIES, outcome.conflicts)
        if outcome.outcome == "existing":
            self._inc(STAT_EXISTING)
            # the writer pipeline logs the duplicate with the article's key
            logger.debug("%s is another writer's: not overwritten", outcome.result.location)
        else:
            self._inc(STAT_UPLOADED if outcome.outcome == "created" else STAT_ALREADY_OURS)
            self._inc(STAT_BYTES, outcome.size)
        if outcome.entry is not None and self._journal is not None:
            self._journal.append(outcome.entry)
        return outcome.result

    def _settled(self, result: Any) -> Any:
        self._outstanding -= 1
        if self._outstanding == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)
        return result

    def _when_idle(self) -> Deferred[None]:
        if self._outstanding == 0:
            return defer.succeed(None)
        waiter: Deferred[None] = defer.Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def close(self, spider: Spider) -> Deferred[None]:
        """Wait for uploads in flight, then write this run's manifest (also after failures:
        the objects that were written must reach consumers)."""
        d = self._when_idle()
        d.addCallback(lambda _: self._send_manifest())
        d.addBoth(self._shut_down)
        return d

    def _send_manifest(self) -> Deferred[None] | None:
        journal = self._journal
        if journal is None or self.client is None or journal.lines == 0:
            return None
        body = journal.finish()
        d = self._in_thread(self.put_manifest, journal.spider, self.run_id, body)
        d.addCallbacks(
            self._manifest_sent,
            self._manifest_failed,
            callbackArgs=(journal,),
            errbackArgs=(journal,),
        )
        return d

    def _manifest_sent(self, key: str, journal: ManifestJournal) -> None:
        journal.discard()
        self._inc(STAT_MANIFESTS)
        self._inc(STAT_MANIFEST_LINES, journal.lines)
        logger.info("Wrote the manifest of %s posts: %s", journal.lines, self.location(key))

    def _manifest_failed(self, failure: Failure, journal: ManifestJournal) -> None:
        self._inc(STAT_MANIFEST_FAILED)
        logger.error(
            "Could not write the manifest of run %s (%s posts) to s3://%s/%s: %s; kept in %s "
            "and sent by the next run",
            self.run_id,
            journal.lines,
            self.bucket,
            self._join(MANIFEST_DIR),
            failure.getErrorMessage(),
            journal.path,
        )

    def _shut_down(self, result: Any) -> Any:
        from twisted.internet import reactor

        if self._journal is not None:
            self._journal.release()
        if self._pool_trigger is not None:
            reactor.removeSystemEventTrigger(self._pool_trigger)
            self._pool_trigger = None
            self._pool.stop()
        return result

    def _inc(self, key: str, count: int = 1) -> None:
        if self.stats is not None and count:
            self.stats.inc_value(key, count)


class ManifestJournal:
    """A run's manifest lines, appended to a local file as objects are written and locked
    while the run lives. A run that dies, or cannot reach the bucket at close, leaves the file;
    the next run on this state directory sends it, so no written post escapes the manifests."""

    def __init__(self, directory: Path, spider: str, run_id: str):
        self.spider = spider
        self.path = directory / f"{spider}-{run_id}.jsonl"
        self.lines = 0
        self._lock = FileLock(f"{self.path}.lock", thread_local=False)
        self._handle: Any = None

    def claim(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire(timeout=0)

    def append(self, entry: dict[str, Any]) -> None:
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        line = json.dumps(entry, ensure_ascii=False, sort_keys=True)
        self._handle.write(line + "\n")
        self._handle.flush()
        self.lines += 1

    def _close_file(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def finish(self) -> bytes:
        """The lines written so far, as the manifest body."""
        self._close_file()
        return self.path.read_bytes()

    def discard(self) -> None:
        """Forget the lines: the manifest is in the bucket."""
        self._close_file()
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        """Let the next run send what is left (nothing, unless sending failed)."""
        self._close_file()
        if self._lock.is_locked:
            if self.lines == 0:
                self.path.unlink(missing_ok=True)
            self._lock.release()
            if not self.path.exists():
                Path(self._lock.lock_file).unlink(missing_ok=True)

    @staticmethod
    def resend(path: Path, send: Callable[[str, str, bytes], str]) -> str | None:
        """Send a leftover journal with `send(spider, run_id, body)` unless its run still holds
        it; remove it once sent. Returns the manifest key, or None when skipped or empty."""
        lock = FileLock(f"{path}.lock", thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return None
        try:
            if not path.exists():
                return None
            body = path.read_bytes()
            spider, _, run_id = path.stem.rpartition("-")
            key = send(spider, run_id, body) if body.strip() else None
            path.unlink()
            return key
        finally:
            lock.release()
            Path(lock.lock_file).unlink(missing_ok=True)


SDK_LOGGERS = ("botocore", "boto3", "urllib3")


def quiet_sdk_debug_logs(log_level: int | str) -> None:
    """Raise the SDK's loggers to LOG_LEVEL, unless configured otherwise. Scrapy sets the root
    logger to NOTSET and drops records by level in its handler, so botocore's debug records
    (dozens per request) would each be built and then dropped: measured, about a quarter of
    the CPU an upload costs the crawl's interpreter. Output is the same."""
    level = logging.getLevelName(log_level) if isinstance(log_level, str) else log_level
    if not isinstance(level, int) or level <= logging.DEBUG:
        return
    for name in SDK_LOGGERS:
        target = logging.getLogger(name)
        if target.level == logging.NOTSET:
            target.setLevel(level)


def _writer_id(crawler: Crawler) -> str:
    """This installation's writer id, kept with the dedupe store: it survives runs, so a PUT of
    an earlier run that landed unnoticed is still recognised as ours."""
    store = dedupe_store_for(crawler)
    writer = store.get_value(WRITER_ID_NAME)
    if not writer:
        writer = uuid.uuid4().hex
        store.set_value(WRITER_ID_NAME, writer)
    return writer
